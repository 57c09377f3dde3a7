/*
 * The backward pass of the device model (model.c's llama_backward on the
 * device). The residual stream's gradient d_res is f32; where it feeds a
 * GEMM it is cast to bf16 first (GEMM operands are bf16). Input gradients
 * of the linear layers land in f32 (d_norm, beta 0 then 1), the norms'
 * backward adds into d_res, and weight gradients are written (bf16) only
 * for the trainable tensors: the layers the trainer set, each in its pool
 * slot, the embeddings and head as created. Norm gains and the embedding
 * accumulate in f32 and are converted once.
 *
 * A frozen layer only passes d_res down; the pass stops below the lowest
 * trainable layer when the embedding does not train. A tied head is one
 * tensor with two uses: its gradient is the head GEMM's plus the lookup's.
 */
#include "llama_gpu_internal.h"

#include <string.h>

/* d_gain's f32 accumulation converted into the bf16 gradient. */
static int gain_to_grad(llama_gpu *m, lk_bf16 *grad)
{
    LG_LK(m, "lk_f32_to_bf16 (norm gain gradient)",
          lk_f32_to_bf16(gd_stream(m->dev), grad, m->gain_acc, m->cfg.dim));
    return 0;
}

/* lk_rmsnorm_backward with, when grad is not NULL, the gain's gradient
 * accumulated from zero in f32 and written into grad. */
static int norm_backward(llama_gpu *m, const float *x, const float *rstd,
                         const lk_bf16 *gain, lk_bf16 *grad, int n,
                         const char *what)
{
    int dim = m->cfg.dim;
    void *s = gd_stream(m->dev);
    if (grad)
        LG_TRY(m, gd_memset(m->dev, m->gain_acc, 0, (size_t)dim * sizeof(float)));
    LG_LK(m, what,
          lk_rmsnorm_backward(s, m->d_res, grad ? m->gain_acc : NULL,
                              m->d_norm, x, rstd, gain, n, dim));
    return grad ? gain_to_grad(m, grad) : 0;
}

/* d_res (f32) cast to bf16 for the GEMMs that read it. */
static int d_res_to_bf16(llama_gpu *m, int n)
{
    LG_LK(m, "lk_f32_to_bf16 (residual gradient)",
          lk_f32_to_bf16(gd_stream(m->dev), m->d_res_b, m->d_res,
                         (int64_t)n * m->cfg.dim));
    return 0;
}

/* One decoder layer: on entry d_res = dL/dx_{l+1}, on return dL/dx_l. */
static int layer_backward(llama_gpu *m, int l, int B, int T)
{
    const llama_config *c = &m->cfg;
    const lg_layer *W = &m->w[l];
    const lg_layer *G = m->trainable[l] ? &m->g[l] : NULL;
    void *s = gd_stream(m->dev);
    int n = B * T, dim = c->dim, hid = c->hidden_dim;
    int q = m->qdim, kv = m->kvdim, hd = m->head_dim;

    /* With recomputation only x_l was kept: rebuild the layer's
     * activations (the top layer's are still in the set from the forward
     * pass). */
    if (m->act_sets == 1 && l != c->n_layers - 1 &&
        lg_layer_forward(m, l, B, T, 0) != 0)
        return -1;
    lg_acts *a = lg_layer_acts(m, l);
    const float *x = lg_x(m, l);

    /* x_{l+1} = h + mid . w_down^T */
    if (d_res_to_bf16(m, n))
        return -1;
    lk_bf16 *d_mid = m->d_gate; /* d_gate is written in place of d_mid */
    if (lg_linear_d_in_bf16(m, d_mid, m->d_res_b, W->w_down, n, hid, dim))
        return -1;
    if (G && lg_linear_d_w(m, G->w_down, GD_BF16, m->d_res_b, a->mid, n, hid,
                           dim))
        return -1;
    LG_LK(m, "lk_swiglu_backward",
          lk_swiglu_backward(s, m->d_gate, m->d_up, d_mid, a->gate, a->up,
                             (int64_t)n * hid));
    if (lg_linear_d_in(m, m->d_norm, 0.0f, m->d_gate, W->w_gate, n, dim, hid) ||
        lg_linear_d_in(m, m->d_norm, 1.0f, m->d_up, W->w_up, n, dim, hid))
        return -1;
    if (G && (lg_linear_d_w(m, G->w_gate, GD_BF16, m->d_gate, a->xn_ffn, n,
                            dim, hid) ||
              lg_linear_d_w(m, G->w_up, GD_BF16, m->d_up, a->xn_ffn, n, dim,
                            hid)))
        return -1;
    if (norm_backward(m, a->h, a->rstd_ffn, W->rms_ffn, G ? G->rms_ffn : NULL,
                      n, "lk_rmsnorm_backward (MLP)"))
        return -1;

    /* d_res = dL/dh now; h = x + o . wo^T */
    if (d_res_to_bf16(m, n))
        return -1;
    if (lg_linear_d_in_bf16(m, m->d_o, m->d_res_b, W->wo, n, q, dim))
        return -1;
    if (G && lg_linear_d_w(m, G->wo, GD_BF16, m->d_res_b, a->o, n, q, dim))
        return -1;
    LG_LK(m, "lk_attention_backward",
          lk_attention_backward(s, m->d_q, m->d_k, m->d_v, m->delta, m->d_o,
                                a->q, a->k, a->v, a->o, a->lse, B, T,
                                c->n_heads, c->n_kv_heads, hd));
    LG_LK(m, "lk_rope (d_q, inverse)",
          lk_rope(s, m->d_q, m->rope_cos, m->rope_sin, n, T, c->n_heads, hd,
                  1));
    LG_LK(m, "lk_rope (d_k, inverse)",
          lk_rope(s, m->d_k, m->rope_cos, m->rope_sin, n, T, c->n_kv_heads,
                  hd, 1));
    if (lg_linear_d_in(m, m->d_norm, 0.0f, m->d_q, W->wq, n, dim, q) ||
        lg_linear_d_in(m, m->d_norm, 1.0f, m->d_k, W->wk, n, dim, kv) ||
        lg_linear_d_in(m, m->d_norm, 1.0f, m->d_v, W->wv, n, dim, kv))
        return -1;
    if (G && (lg_linear_d_w(m, G->wq, GD_BF16, m->d_q, a->xn_att, n, dim, q) ||
              lg_linear_d_w(m, G->wk, GD_BF16, m->d_k, a->xn_att, n, dim,
                            kv) ||
              lg_linear_d_w(m, G->wv, GD_BF16, m->d_v, a->xn_att, n, dim,
                            kv)))
        return -1;
    return norm_backward(m, x, a->rstd_att, W->rms_att,
                         G ? G->rms_att : NULL, n,
                         "lk_rmsnorm_backward (attention)");
}

int llama_gpu_backward(llama_gpu *m)
{
    if (!m)
        return -1;
    if (!m->valid)
        return lg_fail(m, "no forward pass with targets to differentiate");
    m->valid = 0; /* the logits hold dL/dlogits now and are spent */
    const llama_config *c = &m->cfg;
    int B = m->B, T = m->T, n = B * T, dim = c->dim, V = c->vocab_size;
    int L = c->n_layers;
    void *s = gd_stream(m->dev);
    LG_TRY(m, gd_activate(m->dev));

    /* How far down the pass goes (model.c's plan_backward). */
    int lowest = L;
    if (m->grad_embed) {
        lowest = 0;
    } else {
        for (int l = 0; l < L; l++)
            if (m->trainable[l]) {
                lowest = l;
                break;
            }
    }
    int need_below = lowest < L;
    if (!m->grad_head && !m->grad_embed && !need_below)
        return 0;

    /* The head: d_norm = dlogits . head; the head matrix's gradient is
     * dlogits^T . xn_final, into the f32 embedding accumulator when tied
     * (the lookup's share is added below), else straight into g_head. */
    int need_d_norm = need_below || m->grad_head;
    if (need_d_norm &&
        lg_linear_d_in(m, m->d_norm, 0.0f, m->logits, m->head, n, dim, V))
        return -1;
    if (c->tied && m->grad_embed) {
        if (lg_linear_d_w(m, m->d_embed_acc, GD_F32, m->logits, m->xn_final,
                          n, dim, V))
            return -1;
    } else if (!c->tied && m->grad_head) {
        if (lg_linear_d_w(m, m->g_head, GD_BF16, m->logits, m->xn_final, n,
                          dim, V))
            return -1;
    }
    if (need_d_norm) {
        /* Nothing but the final norm adds to the top of the stream. */
        LG_TRY(m, gd_memset(m->dev, m->d_res, 0,
                             (size_t)n * dim * sizeof(float)));
        if (norm_backward(m, lg_x(m, L), m->rstd_final, m->rms_final,
                          m->grad_head ? m->g_rms_final : NULL, n,
                          "lk_rmsnorm_backward (final)"))
            return -1;
    }

    for (int l = L - 1; l >= lowest; l--)
        if (layer_backward(m, l, B, T) != 0)
            return -1;

    if (m->grad_embed) {
        size_t ve = (size_t)V * dim;
        if (!c->tied)
            LG_TRY(m, gd_memset(m->dev, m->d_embed_acc, 0, ve * sizeof(float)));
        LG_LK(m, "lk_embed_backward",
              lk_embed_backward(s, m->d_embed_acc, m->d_res, m->tokens, n, dim));
        LG_LK(m, "lk_f32_to_bf16 (embedding gradient)",
              lk_f32_to_bf16(s, m->g_embed, m->d_embed_acc, (int64_t)ve));
    }
    return 0;
}
