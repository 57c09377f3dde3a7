/*
 * The device model of llama_gpu.h: creation (every buffer reserved up
 * front), weights to and from the host, the trainable set and its
 * gradient pool, the tensor table for an optimizer, and the memory
 * report. The passes are in llama_gpu_forward.c and llama_gpu_backward.c.
 */
#include "llama_gpu_internal.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ */
/* Errors                                                              */
/* ------------------------------------------------------------------ */

int lg_fail(llama_gpu *m, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(m->err, sizeof m->err, fmt, ap);
    va_end(ap);
    return -1;
}

int lg_fail_dev(llama_gpu *m)
{
    snprintf(m->err, sizeof m->err, "%s", gd_error(m->dev));
    return -1;
}

const char *llama_gpu_error(const llama_gpu *m)
{
    return m ? m->err : "model is NULL";
}

void *llama_gpu_stream(const llama_gpu *m)
{
    return m ? gd_stream(m->dev) : NULL;
}

const llama_config *llama_gpu_config(const llama_gpu *m)
{
    return m ? &m->cfg : NULL;
}

/* ------------------------------------------------------------------ */
/* Creation                                                            */
/* ------------------------------------------------------------------ */

void llama_gpu_options_default(llama_gpu_options *o, const llama_config *cfg)
{
    memset(o, 0, sizeof *o);
    o->device = 0;
    o->stream = NULL;
    o->max_batch = 1;
    o->max_trainable_layers = cfg ? cfg->n_layers : 1;
    o->train_embeddings = 1;
    o->train_head = 1;
    o->recompute = 0;
}

/* A device buffer of `count` elements of `size` bytes, remembered for
 * destroy. */
static int reserve(llama_gpu *m, void *pp, size_t count, size_t size,
                   gd_mem_cat cat, const char *what)
{
    void **p = pp;
    *p = NULL;
    if (m->nbufs == LG_MAX_BUFFERS)
        return lg_fail(m, "internal: more than %d device buffers",
                       LG_MAX_BUFFERS);
    size_t bytes = count * size;
    if (gd_alloc(m->dev, p, bytes, cat, what) != 0)
        return lg_fail_dev(m);
    m->bufs[m->nbufs].p = *p;
    m->bufs[m->nbufs].bytes = bytes;
    m->bufs[m->nbufs].cat = cat;
    m->nbufs++;
    return 0;
}

/* Elements of one decoder layer's nine tensors. */
static size_t layer_elems(const llama_gpu *m)
{
    size_t dim = (size_t)m->cfg.dim, hid = (size_t)m->cfg.hidden_dim;
    size_t q = (size_t)m->qdim, kv = (size_t)m->kvdim;
    return 2 * dim + q * dim + 2 * kv * dim + dim * q + 3 * hid * dim;
}

/* Points L's tensors at consecutive places of `at` (layer order of
 * llama_layer); returns the elements used. */
static size_t layer_views(lg_layer *L, lk_bf16 *at, const llama_gpu *m)
{
    size_t dim = (size_t)m->cfg.dim, hid = (size_t)m->cfg.hidden_dim;
    size_t q = (size_t)m->qdim, kv = (size_t)m->kvdim;
    lk_bf16 *start = at;
    L->rms_att = at;  at += dim;
    L->wq = at;       at += q * dim;
    L->wk = at;       at += kv * dim;
    L->wv = at;       at += kv * dim;
    L->wo = at;       at += dim * q;
    L->rms_ffn = at;  at += dim;
    L->w_gate = at;   at += hid * dim;
    L->w_up = at;     at += hid * dim;
    L->w_down = at;   at += dim * hid;
    return (size_t)(at - start);
}

static int check_options(const llama_config *cfg, const llama_gpu_options *o,
                         char *err, size_t errlen)
{
    if (llama_config_check(cfg, err, errlen) != 0)
        return -1;
    if (!o) {
        snprintf(err, errlen, "options is NULL");
        return -1;
    }
    int hd = cfg->dim / cfg->n_heads;
    if (hd > LK_MAX_HEAD_DIM) {
        snprintf(err, errlen, "head_dim %d is above the kernels' limit %d",
                 hd, LK_MAX_HEAD_DIM);
        return -1;
    }
    if (o->device < 0 || o->max_batch < 1) {
        snprintf(err, errlen, "device %d must be >= 0 and max_batch %d >= 1",
                 o->device, o->max_batch);
        return -1;
    }
    if (o->max_trainable_layers < 0 ||
        o->max_trainable_layers > cfg->n_layers) {
        snprintf(err, errlen, "max_trainable_layers %d is outside [0, %d]",
                 o->max_trainable_layers, cfg->n_layers);
        return -1;
    }
    if ((o->train_embeddings != 0 && o->train_embeddings != 1) ||
        (o->train_head != 0 && o->train_head != 1) ||
        (o->recompute != 0 && o->recompute != 1)) {
        snprintf(err, errlen, "train_embeddings %d, train_head %d and "
                 "recompute %d must be 0 or 1", o->train_embeddings,
                 o->train_head, o->recompute);
        return -1;
    }
    /* GEMM dimensions are ints: the token count and every width. */
    double bt = (double)o->max_batch * cfg->seq_len;
    if (bt * cfg->vocab_size > 9.0e18 || bt > 2147483647.0) {
        snprintf(err, errlen, "max_batch %d x seq_len %d tokens is too many",
                 o->max_batch, cfg->seq_len);
        return -1;
    }
    return 0;
}

/* The RoPE tables of model.c (Hugging Face's convention), in double, then
 * uploaded once. */
static int rope_tables(llama_gpu *m)
{
    int half = m->head_dim / 2, T = m->cfg.seq_len;
    size_t n = (size_t)T * half;
    float *c = malloc(n * sizeof *c), *s = malloc(n * sizeof *s);
    if (!c || !s) {
        free(c);
        free(s);
        return lg_fail(m, "out of host memory for the RoPE tables");
    }
    for (int t = 0; t < T; t++)
        for (int i = 0; i < half; i++) {
            double inv_freq = pow((double)m->cfg.rope_theta, -(double)i / half);
            double angle = (double)t * inv_freq;
            c[(size_t)t * half + i] = (float)cos(angle);
            s[(size_t)t * half + i] = (float)sin(angle);
        }
    int rc = gd_upload(m->dev, m->rope_cos, c, n * sizeof *c) ||
             gd_upload(m->dev, m->rope_sin, s, n * sizeof *s) ||
             gd_sync(m->dev);
    free(c);
    free(s);
    return rc ? lg_fail_dev(m) : 0;
}

/* Every buffer, by category. */
static int reserve_all(llama_gpu *m)
{
    const llama_config *c = &m->cfg;
    size_t L = (size_t)c->n_layers, dim = (size_t)c->dim;
    size_t hid = (size_t)c->hidden_dim, V = (size_t)c->vocab_size;
    size_t q = (size_t)m->qdim, kv = (size_t)m->kvdim, bt = m->bt_max;
    size_t heads_bt = (size_t)c->n_heads * bt, b2 = sizeof(lk_bf16);
    size_t f4 = sizeof(float);

    /* Weights: embedding, layers, final norm, untied head. */
    m->layer_elems = layer_elems(m);
    size_t w_elems = V * dim + L * m->layer_elems + dim + (c->tied ? 0 : V * dim);
    lk_bf16 *wb;
    if (reserve(m, &wb, w_elems, b2, GD_MEM_WEIGHTS, "weights"))
        return -1;
    lk_bf16 *at = wb;
    m->embed = at;
    at += V * dim;
    for (size_t l = 0; l < L; l++)
        at += layer_views(&m->w[l], at, m);
    m->rms_final = at;
    at += dim;
    m->head = c->tied ? m->embed : at;

    /* Gradients: the embedding (a tied head is the same tensor), the final
     * norm and untied head, and the pool of layer slots. */
    m->grad_head = m->opt.train_head;
    m->grad_embed = m->opt.train_embeddings || (c->tied && m->opt.train_head);
    if (m->grad_embed &&
        reserve(m, &m->g_embed, V * dim, b2, GD_MEM_GRADS, "embedding grad"))
        return -1;
    if (m->grad_head) {
        if (reserve(m, &m->g_rms_final, dim, b2, GD_MEM_GRADS,
                    "final norm grad"))
            return -1;
        if (!c->tied && reserve(m, &m->g_head, V * dim, b2, GD_MEM_GRADS,
                                "head grad"))
            return -1;
    }
    if (reserve(m, &m->pool, (size_t)m->opt.max_trainable_layers *
                                 m->layer_elems, b2, GD_MEM_GRADS,
                "layer gradient pool"))
        return -1;

    /* Activations. */
    size_t S = (size_t)m->act_sets;
    float *h, *rstd_att, *rstd_ffn, *lse;
    lk_bf16 *xn_att, *qb, *kb, *vb, *ob, *xn_ffn, *gate, *up, *mid;
    if (reserve(m, &m->x, (L + 1) * bt * dim, f4, GD_MEM_ACTIVATIONS, "x") ||
        reserve(m, &h, S * bt * dim, f4, GD_MEM_ACTIVATIONS, "h") ||
        reserve(m, &rstd_att, S * bt, f4, GD_MEM_ACTIVATIONS, "rstd_att") ||
        reserve(m, &rstd_ffn, S * bt, f4, GD_MEM_ACTIVATIONS, "rstd_ffn") ||
        reserve(m, &lse, S * heads_bt, f4, GD_MEM_ACTIVATIONS, "lse") ||
        reserve(m, &xn_att, S * bt * dim, b2, GD_MEM_ACTIVATIONS, "xn_att") ||
        reserve(m, &qb, S * bt * q, b2, GD_MEM_ACTIVATIONS, "q") ||
        reserve(m, &kb, S * bt * kv, b2, GD_MEM_ACTIVATIONS, "k") ||
        reserve(m, &vb, S * bt * kv, b2, GD_MEM_ACTIVATIONS, "v") ||
        reserve(m, &ob, S * bt * q, b2, GD_MEM_ACTIVATIONS, "o") ||
        reserve(m, &xn_ffn, S * bt * dim, b2, GD_MEM_ACTIVATIONS, "xn_ffn") ||
        reserve(m, &gate, S * bt * hid, b2, GD_MEM_ACTIVATIONS, "gate") ||
        reserve(m, &up, S * bt * hid, b2, GD_MEM_ACTIVATIONS, "up") ||
        reserve(m, &mid, S * bt * hid, b2, GD_MEM_ACTIVATIONS, "mid") ||
        reserve(m, &m->rstd_final, bt, f4, GD_MEM_ACTIVATIONS, "rstd_final") ||
        reserve(m, &m->xn_final, bt * dim, b2, GD_MEM_ACTIVATIONS,
                "xn_final") ||
        reserve(m, &m->logits, bt * V, b2, GD_MEM_ACTIVATIONS, "logits") ||
        reserve(m, &m->row_loss, bt, f4, GD_MEM_ACTIVATIONS, "row_loss") ||
        reserve(m, &m->tokens, bt, sizeof(int32_t), GD_MEM_ACTIVATIONS,
                "tokens") ||
        reserve(m, &m->targets, bt, sizeof(int32_t), GD_MEM_ACTIVATIONS,
                "targets"))
        return -1;
    for (size_t s = 0; s < S; s++) {
        lg_acts *a = &m->acts[s];
        a->h = h + s * bt * dim;
        a->rstd_att = rstd_att + s * bt;
        a->rstd_ffn = rstd_ffn + s * bt;
        a->lse = lse + s * heads_bt;
        a->xn_att = xn_att + s * bt * dim;
        a->q = qb + s * bt * q;
        a->k = kb + s * bt * kv;
        a->v = vb + s * bt * kv;
        a->o = ob + s * bt * q;
        a->xn_ffn = xn_ffn + s * bt * dim;
        a->gate = gate + s * bt * hid;
        a->up = up + s * bt * hid;
        a->mid = mid + s * bt * hid;
    }

    /* Workspace of the backward pass (and the RoPE tables). */
    size_t half = (size_t)m->head_dim / 2;
    if (reserve(m, &m->rope_cos, (size_t)c->seq_len * half, f4,
                GD_MEM_WORKSPACE, "rope_cos") ||
        reserve(m, &m->rope_sin, (size_t)c->seq_len * half, f4,
                GD_MEM_WORKSPACE, "rope_sin") ||
        reserve(m, &m->d_res, bt * dim, f4, GD_MEM_WORKSPACE, "d_res") ||
        reserve(m, &m->d_norm, bt * dim, f4, GD_MEM_WORKSPACE, "d_norm") ||
        reserve(m, &m->d_res_b, bt * dim, b2, GD_MEM_WORKSPACE, "d_res_b") ||
        reserve(m, &m->d_gate, bt * hid, b2, GD_MEM_WORKSPACE, "d_gate") ||
        reserve(m, &m->d_up, bt * hid, b2, GD_MEM_WORKSPACE, "d_up") ||
        reserve(m, &m->d_o, bt * q, b2, GD_MEM_WORKSPACE, "d_o") ||
        reserve(m, &m->d_q, bt * q, b2, GD_MEM_WORKSPACE, "d_q") ||
        reserve(m, &m->d_k, bt * kv, b2, GD_MEM_WORKSPACE, "d_k") ||
        reserve(m, &m->d_v, bt * kv, b2, GD_MEM_WORKSPACE, "d_v") ||
        reserve(m, &m->delta, heads_bt, f4, GD_MEM_WORKSPACE, "delta") ||
        reserve(m, &m->gain_acc, dim, f4, GD_MEM_WORKSPACE, "gain_acc"))
        return -1;
    if (m->grad_embed && reserve(m, &m->d_embed_acc, V * dim, f4,
                                 GD_MEM_WORKSPACE, "embedding grad (f32)"))
        return -1;
    return 0;
}

int llama_gpu_create(llama_gpu **out, const llama_config *cfg,
                     const llama_gpu_options *o, char *err, size_t errlen)
{
    if (!out) {
        snprintf(err, errlen, "out is NULL");
        return -1;
    }
    *out = NULL;
    if (check_options(cfg, o, err, errlen) != 0)
        return -1;
    llama_gpu *m = calloc(1, sizeof *m);
    if (!m) {
        snprintf(err, errlen, "out of host memory");
        return -1;
    }
    m->cfg = *cfg;
    m->opt = *o;
    m->head_dim = cfg->dim / cfg->n_heads;
    m->qdim = m->head_dim * cfg->n_heads;
    m->kvdim = m->head_dim * cfg->n_kv_heads;
    m->bt_max = (size_t)o->max_batch * (size_t)cfg->seq_len;
    m->act_sets = o->recompute ? 1 : cfg->n_layers;
    size_t L = (size_t)cfg->n_layers;
    int64_t nt = llama_gpu_num_tensors(m);
    m->w = calloc(L, sizeof *m->w);
    m->g = calloc(L, sizeof *m->g);
    m->trainable = calloc(L, 1);
    m->acts = calloc((size_t)m->act_sets, sizeof *m->acts);
    m->host_loss = malloc(m->bt_max * sizeof *m->host_loss);
    m->opt_index = malloc((size_t)nt * sizeof *m->opt_index);
    m->names = malloc((size_t)nt * sizeof *m->names);
    if (!m->w || !m->g || !m->trainable || !m->acts || !m->host_loss ||
        !m->opt_index || !m->names) {
        llama_gpu_destroy(m);
        snprintf(err, errlen, "out of host memory");
        return -1;
    }
    for (int64_t i = 0; i < nt; i++)
        m->opt_index[i] = UINT64_MAX;
    if (gd_create(&m->dev, o->device, o->stream, err, errlen) != 0) {
        llama_gpu_destroy(m);
        return -1;
    }
    if (reserve_all(m) != 0 || rope_tables(m) != 0) {
        snprintf(err, errlen, "%s", m->err);
        llama_gpu_destroy(m);
        return -1;
    }
    *out = m;
    return 0;
}

void llama_gpu_destroy(llama_gpu *m)
{
    if (!m)
        return;
    if (m->dev) {
        gd_activate(m->dev);
        gd_sync(m->dev);
        for (int i = m->nbufs - 1; i >= 0; i--)
            gd_free(m->dev, m->bufs[i].p, m->bufs[i].bytes, m->bufs[i].cat);
        gd_destroy(m->dev);
    }
    free(m->w);
    free(m->g);
    free(m->trainable);
    free(m->acts);
    free(m->host_loss);
    free(m->opt_index);
    free(m->names);
    free(m);
}

/* ------------------------------------------------------------------ */
/* Weights                                                             */
/* ------------------------------------------------------------------ */

/* The host tensors of p and the matching device tensors, in one order:
 * embedding, each layer's nine, final norm, untied head. */
typedef struct host_dev_pair {
    float *host;
    lk_bf16 *dev;
    size_t n;
} host_dev_pair;

static int pairs(llama_gpu *m, const llama_params *p, host_dev_pair *out)
{
    const llama_config *c = &m->cfg;
    size_t dim = (size_t)c->dim, hid = (size_t)c->hidden_dim;
    size_t V = (size_t)c->vocab_size, q = (size_t)m->qdim;
    size_t kv = (size_t)m->kvdim;
    int n = 0;
    out[n++] = (host_dev_pair){p->embed, m->embed, V * dim};
    for (int l = 0; l < c->n_layers; l++) {
        const llama_layer *h = &p->layers[l];
        const lg_layer *d = &m->w[l];
        out[n++] = (host_dev_pair){h->rms_att, d->rms_att, dim};
        out[n++] = (host_dev_pair){h->wq, d->wq, q * dim};
        out[n++] = (host_dev_pair){h->wk, d->wk, kv * dim};
        out[n++] = (host_dev_pair){h->wv, d->wv, kv * dim};
        out[n++] = (host_dev_pair){h->wo, d->wo, dim * q};
        out[n++] = (host_dev_pair){h->rms_ffn, d->rms_ffn, dim};
        out[n++] = (host_dev_pair){h->w_gate, d->w_gate, hid * dim};
        out[n++] = (host_dev_pair){h->w_up, d->w_up, hid * dim};
        out[n++] = (host_dev_pair){h->w_down, d->w_down, dim * hid};
    }
    out[n++] = (host_dev_pair){p->rms_final, m->rms_final, dim};
    if (!c->tied)
        out[n++] = (host_dev_pair){p->head, m->head, V * dim};
    return n;
}

static size_t largest_tensor(const llama_gpu *m)
{
    size_t dim = (size_t)m->cfg.dim;
    size_t big = (size_t)m->cfg.vocab_size * dim;
    size_t mlp = (size_t)m->cfg.hidden_dim * dim;
    size_t att = (size_t)(m->qdim > m->kvdim ? m->qdim : m->kvdim) * dim;
    big = mlp > big ? mlp : big;
    return att > big ? att : big;
}

static int params_check(llama_gpu *m, const llama_params *w)
{
    if (!w || !w->embed || !w->layers || !w->rms_final || !w->head)
        return lg_fail(m, "params (or one of its arrays) is NULL");
    return 0;
}

int llama_gpu_upload(llama_gpu *m, const llama_params *w)
{
    if (!m)
        return -1;
    if (params_check(m, w) != 0)
        return -1;
    host_dev_pair *pr = malloc((size_t)llama_gpu_num_tensors(m) * sizeof *pr);
    lk_bf16 *stage = malloc(largest_tensor(m) * sizeof *stage);
    int rc = 0;
    if (!pr || !stage) {
        rc = lg_fail(m, "out of host memory for the upload");
    } else {
        rc = gd_activate(m->dev) ? lg_fail_dev(m) : 0;
        int n = rc ? 0 : pairs(m, w, pr);
        for (int i = 0; i < n && !rc; i++) {
            for (size_t j = 0; j < pr[i].n; j++)
                stage[j] = gd_f32_to_bf16(pr[i].host[j]);
            /* upload returns once stage is staged: reuse it at once. */
            if (gd_upload(m->dev, pr[i].dev, stage,
                           pr[i].n * sizeof *stage) != 0)
                rc = lg_fail_dev(m);
        }
        if (!rc && gd_sync(m->dev) != 0)
            rc = lg_fail_dev(m);
    }
    free(pr);
    free(stage);
    return rc;
}

int llama_gpu_download(llama_gpu *m, llama_params *w)
{
    if (!m)
        return -1;
    if (params_check(m, w) != 0)
        return -1;
    host_dev_pair *pr = malloc((size_t)llama_gpu_num_tensors(m) * sizeof *pr);
    lk_bf16 *stage = malloc(largest_tensor(m) * sizeof *stage);
    int rc = 0;
    if (!pr || !stage) {
        rc = lg_fail(m, "out of host memory for the download");
    } else {
        rc = gd_activate(m->dev) ? lg_fail_dev(m) : 0;
        int n = rc ? 0 : pairs(m, w, pr);
        for (int i = 0; i < n && !rc; i++) {
            if (gd_download(m->dev, stage, pr[i].dev,
                             pr[i].n * sizeof *stage) != 0) {
                rc = lg_fail_dev(m);
                break;
            }
            for (size_t j = 0; j < pr[i].n; j++)
                pr[i].host[j] = gd_bf16_to_f32(stage[j]);
        }
    }
    free(pr);
    free(stage);
    return rc;
}

/* splitmix64 and Box-Muller, as model.c draws its weights. */
static uint64_t splitmix64(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static double uniform01(uint64_t *s)
{
    return ((double)(splitmix64(s) >> 11) + 1.0) * (1.0 / 9007199254740992.0);
}

typedef struct init_item {
    lk_bf16 *p;
    size_t n;
    int ones;
} init_item;

int llama_gpu_init_random(llama_gpu *m, uint64_t seed, float std)
{
    if (!m)
        return -1;
    if (!(std >= 0.0f) || !isfinite(std))
        return lg_fail(m, "std must be finite and >= 0, got %g", (double)std);
    /* The draws are made on the host one tensor at a time (lk.h has no
     * random kernel) and uploaded through one tensor-sized buffer, so the
     * host never holds the whole model. */
    lk_bf16 *stage = malloc(largest_tensor(m) * sizeof *stage);
    if (!stage)
        return lg_fail(m, "out of host memory for the initialisation");
    if (gd_activate(m->dev) != 0) {
        free(stage);
        return lg_fail_dev(m);
    }
    const llama_config *c = &m->cfg;
    size_t dim = (size_t)c->dim, hid = (size_t)c->hidden_dim;
    size_t V = (size_t)c->vocab_size, q = (size_t)m->qdim;
    size_t kv = (size_t)m->kvdim;
    uint64_t s = seed;
    int rc = 0;
    /* (device tensor, elements, 1 = a norm gain of ones) */
    init_item t[9];
    for (int l = -1; l <= c->n_layers && !rc; l++) {
        int n = 0;
        if (l == -1) {
            t[n++] = (init_item){m->embed, V * dim, 0};
        } else if (l == c->n_layers) {
            t[n++] = (init_item){m->rms_final, dim, 1};
            if (!c->tied)
                t[n++] = (init_item){m->head, V * dim, 0};
        } else {
            const lg_layer *w = &m->w[l];
            t[n++] = (init_item){w->rms_att, dim, 1};
            t[n++] = (init_item){w->wq, q * dim, 0};
            t[n++] = (init_item){w->wk, kv * dim, 0};
            t[n++] = (init_item){w->wv, kv * dim, 0};
            t[n++] = (init_item){w->wo, dim * q, 0};
            t[n++] = (init_item){w->rms_ffn, dim, 1};
            t[n++] = (init_item){w->w_gate, hid * dim, 0};
            t[n++] = (init_item){w->w_up, hid * dim, 0};
            t[n++] = (init_item){w->w_down, dim * hid, 0};
        }
        for (int i = 0; i < n && !rc; i++) {
            for (size_t j = 0; j < t[i].n; j += 2) {
                if (t[i].ones) {
                    stage[j] = gd_f32_to_bf16(1.0f);
                    if (j + 1 < t[i].n)
                        stage[j + 1] = stage[j];
                    continue;
                }
                double r = sqrt(-2.0 * log(uniform01(&s)));
                double phi = 6.283185307179586 * uniform01(&s);
                stage[j] = gd_f32_to_bf16((float)(std * r * cos(phi)));
                if (j + 1 < t[i].n)
                    stage[j + 1] = gd_f32_to_bf16((float)(std * r * sin(phi)));
            }
            if (gd_upload(m->dev, t[i].p, stage, t[i].n * sizeof *stage))
                rc = lg_fail_dev(m);
        }
    }
    if (!rc && gd_sync(m->dev) != 0)
        rc = lg_fail_dev(m);
    free(stage);
    return rc;
}

/* ------------------------------------------------------------------ */
/* The trainable layers and the gradient pool                          */
/* ------------------------------------------------------------------ */

int llama_gpu_set_trainable(llama_gpu *m, const uint8_t *mask)
{
    if (!m)
        return -1;
    int L = m->cfg.n_layers, count = 0;
    for (int l = 0; mask && l < L; l++) {
        if (mask[l] > 1)
            return lg_fail(m, "mask[%d] is %d; expected 0 or 1", l, mask[l]);
        count += mask[l];
    }
    if (count > m->opt.max_trainable_layers)
        return lg_fail(m, "%d layers are trainable; the gradient pool holds "
                       "%d (max_trainable_layers)", count,
                       m->opt.max_trainable_layers);
    /* Slots in layer order: a layer's gradient buffer is its rank among
     * the trainable layers. */
    int slot = 0;
    for (int l = 0; l < L; l++) {
        m->trainable[l] = mask ? mask[l] : 0;
        if (m->trainable[l])
            layer_views(&m->g[l], m->pool + (size_t)slot++ * m->layer_elems,
                        m);
        else
            memset(&m->g[l], 0, sizeof m->g[l]);
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* Tensors                                                             */
/* ------------------------------------------------------------------ */

int64_t llama_gpu_num_tensors(const llama_gpu *m)
{
    if (!m)
        return 0;
    return 1 + 9 * (int64_t)m->cfg.n_layers + 1 + (m->cfg.tied ? 0 : 1);
}

static const char *const layer_names[9] = {
    "rms_att", "wq", "wk", "wv", "wo", "rms_ffn", "w_gate", "w_up", "w_down"};

int llama_gpu_tensor_get(const llama_gpu *m, int64_t i, llama_gpu_tensor *t)
{
    if (!m || !t)
        return -1;
    int64_t n = llama_gpu_num_tensors(m);
    if (i < 0 || i >= n)
        return lg_fail((llama_gpu *)m, "tensor %lld: the model has %lld",
                       (long long)i, (long long)n);
    char *name = m->names[i];
    const llama_config *c = &m->cfg;
    int64_t dim = c->dim, hid = c->hidden_dim, V = c->vocab_size;
    int64_t q = m->qdim, kv = m->kvdim;
    lk_bf16 *w = NULL, *g = NULL;
    memset(t, 0, sizeof *t);
    if (i == 0) {
        snprintf(name, LG_NAME_LEN, "embed");
        t->layer = -1, t->rows = V, t->cols = dim;
        w = m->embed, g = m->g_embed;
    } else if (i <= 9 * (int64_t)c->n_layers) {
        int64_t l = (i - 1) / 9, k = (i - 1) % 9;
        const lg_layer *W = &m->w[l], *G = &m->g[l];
        lk_bf16 *const wl[9] = {W->rms_att, W->wq, W->wk, W->wv, W->wo,
                                W->rms_ffn, W->w_gate, W->w_up, W->w_down};
        lk_bf16 *const gl[9] = {G->rms_att, G->wq, G->wk, G->wv, G->wo,
                                G->rms_ffn, G->w_gate, G->w_up, G->w_down};
        const int64_t rows[9] = {1, q, kv, kv, dim, 1, hid, hid, dim};
        const int64_t cols[9] = {dim, dim, dim, dim, q, dim, dim, dim, hid};
        snprintf(name, LG_NAME_LEN, "layers.%lld.%s", (long long)l,
                 layer_names[k]);
        t->layer = l, t->rows = rows[k], t->cols = cols[k];
        t->matrix = k != 0 && k != 5;
        w = wl[k], g = gl[k];
    } else if (i == 9 * (int64_t)c->n_layers + 1) {
        snprintf(name, LG_NAME_LEN, "rms_final");
        t->layer = -1, t->rows = 1, t->cols = dim;
        w = m->rms_final, g = m->g_rms_final;
    } else {
        snprintf(name, LG_NAME_LEN, "head");
        t->layer = -1, t->rows = V, t->cols = dim;
        w = m->head, g = m->g_head;
    }
    t->name = name;
    owl_tensor_init(&t->weight, w, OWL_DTYPE_BF16, t->rows, t->cols);
    owl_tensor_init(&t->grad, g, OWL_DTYPE_BF16, t->rows, t->cols);
    return 0;
}

int llama_gpu_register(llama_gpu *m, owl_optimizer *opt)
{
    if (!m)
        return -1;
    if (!opt)
        return lg_fail(m, "optimizer is NULL");
    int64_t n = llama_gpu_num_tensors(m);
    for (int64_t i = 0; i < n; i++) {
        llama_gpu_tensor t;
        llama_gpu_tensor_get(m, i, &t);
        const owl_tensor *g = t.grad.data ? &t.grad : NULL;
        /* A tensor outside the layers that has no gradient buffer never
         * trains: it is not registered (an always-trained parameter needs
         * a gradient at every step). */
        if (t.layer < 0 && !g) {
            m->opt_index[i] = UINT64_MAX;
            continue;
        }
        uint64_t layer = t.layer < 0 ? OWL_LAYER_ALWAYS : (uint64_t)t.layer;
        owl_status s = owl_optimizer_add_param(opt, layer, &t.weight, g,
                                               t.matrix, &m->opt_index[i]);
        if (s != OWL_OK)
            return lg_fail(m, "owl_optimizer_add_param (%s): %s (the "
                           "context's last error says why)", t.name,
                           owl_status_name(s));
    }
    m->optimizer = opt;
    return 0;
}

int llama_gpu_bind_grads(llama_gpu *m, owl_optimizer *opt)
{
    if (!m)
        return -1;
    if (!opt || opt != m->optimizer)
        return lg_fail(m, "the optimizer is %s", !opt ? "NULL" :
                       "not the one the tensors were registered with");
    int64_t n = llama_gpu_num_tensors(m);
    for (int64_t i = 0; i < n; i++) {
        llama_gpu_tensor t;
        llama_gpu_tensor_get(m, i, &t);
        /* A frozen layer keeps its last binding: the optimizer reads the
         * gradients of active layers only. */
        if (!t.grad.data || m->opt_index[i] == UINT64_MAX)
            continue;
        owl_status s = owl_optimizer_set_grad(opt, m->opt_index[i], &t.grad);
        if (s != OWL_OK)
            return lg_fail(m, "owl_optimizer_set_grad (%s): %s (the "
                           "context's last error says why)", t.name,
                           owl_status_name(s));
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* Memory                                                              */
/* ------------------------------------------------------------------ */

void llama_gpu_memory_get(const llama_gpu *m, llama_gpu_memory *mem)
{
    if (!mem)
        return;
    memset(mem, 0, sizeof *mem);
    if (!m)
        return;
    uint64_t now[GD_MEM_NUM_CATS], peak[GD_MEM_NUM_CATS];
    gd_mem_usage(m->dev, now, peak, &mem->peak_total);
    mem->weights = now[GD_MEM_WEIGHTS];
    mem->grads = now[GD_MEM_GRADS];
    mem->activations = peak[GD_MEM_ACTIVATIONS];
    mem->workspace = peak[GD_MEM_WORKSPACE];
}
