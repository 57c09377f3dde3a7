/*
 * The forward pass of the device model and its loss, the data flow of
 * model.c on the device:
 *
 *   xn = rmsnorm(x_l) * g (bf16, rstd f32)
 *   q, k, v = xn W^T (bf16 GEMM, f32 compute), RoPE on q and k
 *   o, lse = attention(q, k, v)
 *   h = x_l + o Wo^T          (f32: copy x_l, GEMM with beta 1)
 *   f = rmsnorm(h) * g2; gate, up = f W^T; mid = silu(gate) * up
 *   x_{l+1} = h + mid Wd^T    (f32, beta 1)
 *   logits = rmsnorm(x_L) * g_final . head^T (bf16), cross-entropy in place
 *
 * The residual stream stays f32 throughout; what feeds a GEMM is bf16.
 */
#include "llama_gpu_internal.h"

#include <stdio.h>
#include <string.h>

/* ------------------------------------------------------------------ */
/* Linear layers through the device GEMM (row-major terms)             */
/* ------------------------------------------------------------------ */

int lg_linear(llama_gpu *m, void *out, gd_dtype out_type, float beta,
              const lk_bf16 *in, const lk_bf16 *W, int n, int in_dim,
              int out_dim)
{
    /* out[n x out] = in[n x in] . W[out x in]^T */
    LG_TRY(m, gd_gemm(m->dev, 0, 1, n, out_dim, in_dim, 1.0f, in, in_dim, W,
                       in_dim, GD_BF16, beta, out, out_dim, out_type));
    return 0;
}

int lg_linear_d_in(llama_gpu *m, float *d_in, float beta,
                   const lk_bf16 *d_out, const lk_bf16 *W, int n, int in_dim,
                   int out_dim)
{
    /* d_in[n x in] = d_out[n x out] . W[out x in] */
    LG_TRY(m, gd_gemm(m->dev, 0, 0, n, in_dim, out_dim, 1.0f, d_out, out_dim,
                       W, in_dim, GD_BF16, beta, d_in, in_dim, GD_F32));
    return 0;
}

int lg_linear_d_in_bf16(llama_gpu *m, lk_bf16 *d_in, const lk_bf16 *d_out,
                        const lk_bf16 *W, int n, int in_dim, int out_dim)
{
    /* As lg_linear_d_in, into bf16 (the input of a kernel, not a norm). */
    LG_TRY(m, gd_gemm(m->dev, 0, 0, n, in_dim, out_dim, 1.0f, d_out, out_dim,
                       W, in_dim, GD_BF16, 0.0f, d_in, in_dim, GD_BF16));
    return 0;
}

int lg_linear_d_w(llama_gpu *m, void *d_w, gd_dtype d_w_type,
                  const lk_bf16 *d_out, const lk_bf16 *in, int n, int in_dim,
                  int out_dim)
{
    /* d_w[out x in] = d_out[n x out]^T . in[n x in] */
    LG_TRY(m, gd_gemm(m->dev, 1, 0, out_dim, in_dim, n, 1.0f, d_out, out_dim,
                       in, in_dim, GD_BF16, 0.0f, d_w, in_dim, d_w_type));
    return 0;
}

/* ------------------------------------------------------------------ */
/* One decoder layer                                                   */
/* ------------------------------------------------------------------ */

int lg_layer_forward(llama_gpu *m, int l, int B, int T, int write_next)
{
    const llama_config *c = &m->cfg;
    const lg_layer *W = &m->w[l];
    lg_acts *a = lg_layer_acts(m, l);
    void *s = gd_stream(m->dev);
    int n = B * T, dim = c->dim, hid = c->hidden_dim;
    int q = m->qdim, kv = m->kvdim, hd = m->head_dim;
    const float *x = lg_x(m, l);
    size_t nd = (size_t)n * dim;

    /* Attention block. */
    LG_LK(m, "lk_rmsnorm_forward (attention)",
          lk_rmsnorm_forward(s, a->xn_att, a->rstd_att, x, W->rms_att, n, dim,
                             c->norm_eps));
    if (lg_linear(m, a->q, GD_BF16, 0.0f, a->xn_att, W->wq, n, dim, q) ||
        lg_linear(m, a->k, GD_BF16, 0.0f, a->xn_att, W->wk, n, dim, kv) ||
        lg_linear(m, a->v, GD_BF16, 0.0f, a->xn_att, W->wv, n, dim, kv))
        return -1;
    LG_LK(m, "lk_rope (q)", lk_rope(s, a->q, m->rope_cos, m->rope_sin, n, T,
                                    c->n_heads, hd, 0));
    LG_LK(m, "lk_rope (k)", lk_rope(s, a->k, m->rope_cos, m->rope_sin, n, T,
                                    c->n_kv_heads, hd, 0));
    LG_LK(m, "lk_attention_forward",
          lk_attention_forward(s, a->o, a->lse, a->q, a->k, a->v, B, T,
                               c->n_heads, c->n_kv_heads, hd));
    LG_TRY(m, gd_copy(m->dev, a->h, x, nd * sizeof(float)));
    if (lg_linear(m, a->h, GD_F32, 1.0f, a->o, W->wo, n, q, dim))
        return -1;

    /* MLP block. */
    LG_LK(m, "lk_rmsnorm_forward (MLP)",
          lk_rmsnorm_forward(s, a->xn_ffn, a->rstd_ffn, a->h, W->rms_ffn, n,
                             dim, c->norm_eps));
    if (lg_linear(m, a->gate, GD_BF16, 0.0f, a->xn_ffn, W->w_gate, n, dim,
                  hid) ||
        lg_linear(m, a->up, GD_BF16, 0.0f, a->xn_ffn, W->w_up, n, dim, hid))
        return -1;
    LG_LK(m, "lk_swiglu_forward",
          lk_swiglu_forward(s, a->mid, a->gate, a->up, (int64_t)n * hid));
    if (!write_next)
        return 0;
    float *x_next = lg_x(m, l + 1);
    LG_TRY(m, gd_copy(m->dev, x_next, a->h, nd * sizeof(float)));
    return lg_linear(m, x_next, GD_F32, 1.0f, a->mid, W->w_down, n, hid,
                     dim);
}

/* ------------------------------------------------------------------ */
/* The whole forward pass and the loss                                 */
/* ------------------------------------------------------------------ */

static int forward_check(llama_gpu *m, const int32_t *tokens,
                         const int32_t *targets, int B, int T)
{
    const llama_config *c = &m->cfg;
    if (!tokens)
        return lg_fail(m, "tokens is NULL");
    if (B < 1 || B > m->opt.max_batch || T < 1 || T > c->seq_len)
        return lg_fail(m, "batch %d x %d tokens; the model takes 1..%d x "
                       "1..%d", B, T, m->opt.max_batch, c->seq_len);
    for (size_t i = 0; i < (size_t)B * T; i++) {
        if (tokens[i] < 0 || tokens[i] >= c->vocab_size)
            return lg_fail(m, "token %zu is %d, vocab is %d", i, tokens[i],
                           c->vocab_size);
        if (targets && targets[i] >= c->vocab_size)
            return lg_fail(m, "target %zu is %d, vocab is %d", i, targets[i],
                           c->vocab_size);
    }
    return 0;
}

int llama_gpu_forward(llama_gpu *m, const int32_t *tokens,
                      const int32_t *targets, int B, int T, double *loss)
{
    if (!m)
        return -1;
    m->valid = 0;
    if (loss)
        *loss = 0.0;
    if (forward_check(m, tokens, targets, B, T) != 0)
        return -1;
    const llama_config *c = &m->cfg;
    void *s = gd_stream(m->dev);
    int n = B * T, dim = c->dim, V = c->vocab_size;
    LG_TRY(m, gd_activate(m->dev));
    m->B = B;
    m->T = T;
    LG_TRY(m, gd_upload(m->dev, m->tokens, tokens, (size_t)n * sizeof *tokens));
    LG_LK(m, "lk_embed_forward",
          lk_embed_forward(s, lg_x(m, 0), m->embed, m->tokens, n, dim));
    for (int l = 0; l < c->n_layers; l++)
        if (lg_layer_forward(m, l, B, T, 1) != 0)
            return -1;
    LG_LK(m, "lk_rmsnorm_forward (final)",
          lk_rmsnorm_forward(s, m->xn_final, m->rstd_final,
                             lg_x(m, c->n_layers), m->rms_final, n, dim,
                             c->norm_eps));
    if (lg_linear(m, m->logits, GD_BF16, 0.0f, m->xn_final, m->head, n, dim,
                  V))
        return -1;
    if (!targets)
        return gd_sync(m->dev) ? lg_fail_dev(m) : 0;

    int counted = 0;
    for (int i = 0; i < n; i++)
        counted += targets[i] >= 0;
    LG_TRY(m, gd_upload(m->dev, m->targets, targets,
                         (size_t)n * sizeof *targets));
    /* The logits become dL/dlogits of the mean loss; with no counted
     * position the loss is 0 with a zero gradient, as in model.c. */
    float scale = 1.0f / (float)(counted > 0 ? counted : 1);
    LG_LK(m, "lk_cross_entropy",
          lk_cross_entropy(s, m->logits, m->row_loss, m->targets, n, V,
                           scale));
    LG_TRY(m, gd_download(m->dev, m->host_loss, m->row_loss,
                           (size_t)n * sizeof(float)));
    double total = 0.0;
    for (int i = 0; i < n; i++)
        if (targets[i] >= 0)
            total += m->host_loss[i];
    m->counted = counted;
    m->valid = 1;
    if (loss)
        *loss = counted ? total / counted : 0.0;
    return 0;
}
