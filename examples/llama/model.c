/*
 * The LLaMa decoder of llama.h: forward pass, cross-entropy loss and the
 * backward pass, in f32 on the CPU. Every matrix product goes through
 * cblas_sgemm (OpenBLAS threads those); everything else is a plain loop.
 *
 * The semantics are Hugging Face's LlamaForCausalLM (LLaMa-2):
 *
 *   x_0     = embed[tokens]
 *   h_l     = x_l + wo . attention(rope(wq . a), rope(wk . a), wv . a),
 *             a = rmsnorm(x_l) * rms_att
 *   x_{l+1} = h_l + w_down . (silu(w_gate . f) * (w_up . f)),
 *             f = rmsnorm(h_l) * rms_ffn
 *   logits  = head . (rmsnorm(x_L) * rms_final)
 *   loss    = mean over positions with target >= 0 of
 *             logsumexp(logits) - logits[target]
 *
 * Activations are laid out token-major: a [B*T x n] matrix per quantity and
 * layer, row b*T + t. The backward pass reads the activations the forward
 * pass kept in struct llama_acts; attention (scores, softmax and their
 * gradients) lives in attention.c.
 */
#include "llama.h"
#include "model_internal.h"

#include <cblas.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>

/* ------------------------------------------------------------------ */
/* Configuration and parameter layout                                  */
/* ------------------------------------------------------------------ */

int llama_config_check(const llama_config *c, char *err, size_t errlen)
{
    if (!c) {
        snprintf(err, errlen, "config is NULL");
        return -1;
    }
    if (c->dim <= 0 || c->hidden_dim <= 0 || c->n_layers <= 0 ||
        c->n_heads <= 0 || c->n_kv_heads <= 0 || c->vocab_size <= 0 ||
        c->seq_len <= 0) {
        snprintf(err, errlen,
                 "config sizes must be positive: dim %d, hidden_dim %d, "
                 "n_layers %d, n_heads %d, n_kv_heads %d, vocab_size %d, "
                 "seq_len %d",
                 c->dim, c->hidden_dim, c->n_layers, c->n_heads,
                 c->n_kv_heads, c->vocab_size, c->seq_len);
        return -1;
    }
    if (c->dim % c->n_heads != 0) {
        snprintf(err, errlen, "dim %d is not a multiple of n_heads %d",
                 c->dim, c->n_heads);
        return -1;
    }
    if ((c->dim / c->n_heads) % 2 != 0) {
        /* RoPE rotates pairs of coordinates within a head. */
        snprintf(err, errlen, "head_dim %d (dim %d / n_heads %d) must be even",
                 c->dim / c->n_heads, c->dim, c->n_heads);
        return -1;
    }
    if (c->n_heads % c->n_kv_heads != 0) {
        snprintf(err, errlen, "n_heads %d is not a multiple of n_kv_heads %d",
                 c->n_heads, c->n_kv_heads);
        return -1;
    }
    if (!(c->rope_theta > 0.0f) || !isfinite(c->rope_theta)) {
        snprintf(err, errlen, "rope_theta must be finite and > 0, got %g",
                 (double)c->rope_theta);
        return -1;
    }
    if (!(c->norm_eps > 0.0f) || !isfinite(c->norm_eps)) {
        snprintf(err, errlen, "norm_eps must be finite and > 0, got %g",
                 (double)c->norm_eps);
        return -1;
    }
    if (c->tied != 0 && c->tied != 1) {
        snprintf(err, errlen, "tied must be 0 or 1, got %d", c->tied);
        return -1;
    }
    return 0;
}

/* Sizes are products of configuration values up to INT_MAX, which can
 * exceed 64 bits: every one is computed through these, which set *ovf
 * (and return 0) instead of wrapping. */
static size_t mul_sz(size_t a, size_t b, int *ovf)
{
    if (a != 0 && b > SIZE_MAX / a) {
        *ovf = 1;
        return 0;
    }
    return a * b;
}

static size_t add_sz(size_t a, size_t b, int *ovf)
{
    if (b > SIZE_MAX - a) {
        *ovf = 1;
        return 0;
    }
    return a + b;
}

static size_t mul3_sz(size_t a, size_t b, size_t c, int *ovf)
{
    return mul_sz(mul_sz(a, b, ovf), c, ovf);
}

/* Floats in one decoder layer. */
static size_t layer_floats(const llama_config *c, int *ovf)
{
    size_t dim = (size_t)c->dim, hid = (size_t)c->hidden_dim;
    size_t hd = dim / (size_t)c->n_heads;
    size_t qdim = hd * (size_t)c->n_heads, kvdim = hd * (size_t)c->n_kv_heads;
    size_t n = 2 * dim;                                  /* rms_att, rms_ffn */
    n = add_sz(n, mul_sz(qdim, dim, ovf), ovf);          /* wq */
    n = add_sz(n, mul3_sz(2, kvdim, dim, ovf), ovf);     /* wk, wv */
    n = add_sz(n, mul_sz(dim, qdim, ovf), ovf);          /* wo */
    n = add_sz(n, mul3_sz(3, hid, dim, ovf), ovf);       /* gate, up, down */
    return n;
}

/* The parameter count, or 0 with *ovf set when it does not fit. */
static size_t param_count(const llama_config *c, int *ovf)
{
    size_t emb = mul_sz((size_t)c->vocab_size, (size_t)c->dim, ovf);
    size_t n = add_sz(emb, mul_sz((size_t)c->n_layers, layer_floats(c, ovf),
                                  ovf), ovf);
    n = add_sz(n, (size_t)c->dim, ovf);
    n = add_sz(n, c->tied ? 0 : emb, ovf);
    return *ovf ? 0 : n;
}

size_t llama_param_count(const llama_config *c)
{
    int ovf = 0;
    return param_count(c, &ovf);
}

/* Points p's views into p->base (already holding count floats), in the
 * order embed, layers (rms_att wq wk wv wo rms_ffn gate up down),
 * rms_final, head. A tied head is the embedding itself. */
static void params_layout(llama_params *p, const llama_config *c)
{
    size_t dim = (size_t)c->dim, hid = (size_t)c->hidden_dim;
    size_t hd = dim / (size_t)c->n_heads;
    size_t qdim = hd * (size_t)c->n_heads, kvdim = hd * (size_t)c->n_kv_heads;
    float *at = p->base;
    p->embed = at;
    at += (size_t)c->vocab_size * dim;
    for (int l = 0; l < c->n_layers; l++) {
        llama_layer *L = &p->layers[l];
        L->rms_att = at;  at += dim;
        L->wq = at;       at += qdim * dim;
        L->wk = at;       at += kvdim * dim;
        L->wv = at;       at += kvdim * dim;
        L->wo = at;       at += dim * qdim;
        L->rms_ffn = at;  at += dim;
        L->w_gate = at;   at += hid * dim;
        L->w_up = at;     at += hid * dim;
        L->w_down = at;   at += dim * hid;
    }
    p->rms_final = at;
    at += dim;
    if (c->tied) {
        p->head = p->embed;
    } else {
        p->head = at;
        at += (size_t)c->vocab_size * dim;
    }
}

static int params_alloc(llama_params *p, const llama_config *c)
{
    p->count = llama_param_count(c); /* llama_memory_plan checked it fits */
    p->base = calloc(p->count, sizeof(float));
    p->layers = calloc((size_t)c->n_layers, sizeof(llama_layer));
    if (!p->base || !p->layers)
        return -1;
    params_layout(p, c);
    return 0;
}

static void params_free(llama_params *p)
{
    free(p->base);
    free(p->layers);
    memset(p, 0, sizeof *p);
}

/* ------------------------------------------------------------------ */
/* Creation                                                            */
/* ------------------------------------------------------------------ */

/* What a buffer of llama_acts holds, for the memory plan. */
enum { KEPT, SCRATCH };

/* Every buffer of llama_acts, with its size in floats and its kind (kept
 * for the backward pass, or scratch), so that allocation, release and the
 * memory plan are one loop each. Sizes that do not fit in size_t set
 * *ovf. */
static void acts_buffers(struct llama_acts *a, const llama_config *c,
                         size_t bt, size_t max_b, float ***ptr, size_t *len,
                         int *kind, int *count, int *ovf)
{
    size_t L = (size_t)c->n_layers, dim = (size_t)c->dim;
    size_t hid = (size_t)c->hidden_dim, hd = dim / (size_t)c->n_heads;
    size_t qdim = hd * (size_t)c->n_heads, kvdim = hd * (size_t)c->n_kv_heads;
    size_t T = (size_t)c->seq_len, V = (size_t)c->vocab_size;
    size_t heads = (size_t)c->n_heads;
    int n = 0;
#define BUF(field, size, k) \
    (ptr[n] = &a->field, len[n] = (size), kind[n] = (k), n++)
    BUF(x, mul3_sz(L + 1, bt, dim, ovf), KEPT);
    BUF(h, mul3_sz(L, bt, dim, ovf), KEPT);
    BUF(rstd_att, mul_sz(L, bt, ovf), KEPT);
    BUF(xn_att, mul3_sz(L, bt, dim, ovf), KEPT);
    BUF(q, mul3_sz(L, bt, qdim, ovf), KEPT);
    BUF(k, mul3_sz(L, bt, kvdim, ovf), KEPT);
    BUF(v, mul3_sz(L, bt, kvdim, ovf), KEPT);
    BUF(probs_att, mul3_sz(mul_sz(L, max_b, ovf), heads, mul_sz(T, T, ovf),
                           ovf), KEPT);
    BUF(att_out, mul3_sz(L, bt, qdim, ovf), KEPT);
    BUF(rstd_ffn, mul_sz(L, bt, ovf), KEPT);
    BUF(xn_ffn, mul3_sz(L, bt, dim, ovf), KEPT);
    BUF(gate, mul3_sz(L, bt, hid, ovf), KEPT);
    BUF(up, mul3_sz(L, bt, hid, ovf), KEPT);
    BUF(mid, mul3_sz(L, bt, hid, ovf), KEPT);
    BUF(rstd_final, bt, KEPT);
    BUF(xn_final, mul_sz(bt, dim, ovf), KEPT);
    BUF(probs, mul_sz(bt, V, ovf), KEPT);
    BUF(rope_cos, mul_sz(T, hd / 2, ovf), SCRATCH);
    BUF(rope_sin, mul_sz(T, hd / 2, ovf), SCRATCH);
    BUF(d_res, mul_sz(bt, dim, ovf), SCRATCH);
    BUF(d_norm, mul_sz(bt, dim, ovf), SCRATCH);
    BUF(d_q, mul_sz(bt, qdim, ovf), SCRATCH);
    BUF(d_k, mul_sz(bt, kvdim, ovf), SCRATCH);
    BUF(d_v, mul_sz(bt, kvdim, ovf), SCRATCH);
    BUF(d_att_out, mul_sz(bt, qdim, ovf), SCRATCH);
    BUF(d_gate, mul_sz(bt, hid, ovf), SCRATCH);
    BUF(d_up, mul_sz(bt, hid, ovf), SCRATCH);
    BUF(d_scores, mul_sz(T, T, ovf), SCRATCH);
#undef BUF
    *count = n;
}

enum { ACTS_MAX_BUFFERS = 32 };

static void acts_free(struct llama_acts *a, const llama_config *c)
{
    if (!a)
        return;
    float **ptr[ACTS_MAX_BUFFERS];
    size_t len[ACTS_MAX_BUFFERS];
    int kind[ACTS_MAX_BUFFERS], n, ovf = 0;
    acts_buffers(a, c, 0, 0, ptr, len, kind, &n, &ovf);
    for (int i = 0; i < n; i++)
        free(*ptr[i]);
    free(a->tokens);
    free(a->targets);
    free(a);
}

/* The RoPE table of Hugging Face's LlamaRotaryEmbedding: for position t
 * and frequency i < head_dim/2, angle t * theta^(-2i/head_dim). Computed in
 * double once, so the forward pass only reads it. */
static void rope_table(struct llama_acts *a, const llama_config *c)
{
    int half = c->dim / c->n_heads / 2;
    for (int t = 0; t < c->seq_len; t++)
        for (int i = 0; i < half; i++) {
            double inv_freq = pow((double)c->rope_theta, -(double)i / half);
            double angle = (double)t * inv_freq;
            a->rope_cos[(size_t)t * half + i] = (float)cos(angle);
            a->rope_sin[(size_t)t * half + i] = (float)sin(angle);
        }
}

static struct llama_acts *acts_alloc(const llama_config *c, int max_batch)
{
    struct llama_acts *a = calloc(1, sizeof *a);
    if (!a)
        return NULL;
    size_t bt = (size_t)max_batch * (size_t)c->seq_len;
    a->max_batch = max_batch;
    float **ptr[ACTS_MAX_BUFFERS];
    size_t len[ACTS_MAX_BUFFERS];
    int kind[ACTS_MAX_BUFFERS], n, ovf = 0;
    /* The sizes were checked by llama_memory_plan. */
    acts_buffers(a, c, bt, (size_t)max_batch, ptr, len, kind, &n, &ovf);
    int ok = 1;
    for (int i = 0; i < n; i++) {
        *ptr[i] = malloc(len[i] * sizeof(float));
        ok = ok && *ptr[i];
    }
    a->tokens = malloc(bt * sizeof(int32_t));
    a->targets = malloc(bt * sizeof(int32_t));
    if (!ok || !a->tokens || !a->targets) {
        acts_free(a, c);
        return NULL;
    }
    rope_table(a, c);
    return a;
}

int llama_memory_plan(const llama_config *c, int max_batch,
                      llama_memory *out, char *err, size_t errlen)
{
    if (!out) {
        snprintf(err, errlen, "llama_memory_plan: out is NULL");
        return -1;
    }
    memset(out, 0, sizeof *out);
    if (llama_config_check(c, err, errlen) != 0)
        return -1;
    if (max_batch <= 0) {
        snprintf(err, errlen, "max_batch must be > 0, got %d", max_batch);
        return -1;
    }
    /* The forward pass indexes the B*T rows of a batch with an int. */
    if ((uint64_t)max_batch * (uint64_t)c->seq_len > INT_MAX) {
        snprintf(err, errlen, "%d x %d tokens is more than the %d rows a "
                 "batch can have", max_batch, c->seq_len, INT_MAX);
        return -1;
    }
    int ovf = 0;
    size_t params = param_count(c, &ovf);
    size_t weights = add_sz(mul_sz(params, sizeof(float), &ovf),
                            mul_sz((size_t)c->n_layers, sizeof(llama_layer),
                                   &ovf), &ovf);
    struct llama_acts shape;
    float **ptr[ACTS_MAX_BUFFERS];
    size_t len[ACTS_MAX_BUFFERS];
    int kind[ACTS_MAX_BUFFERS], n;
    size_t bt = (size_t)max_batch * (size_t)c->seq_len;
    acts_buffers(&shape, c, bt, (size_t)max_batch, ptr, len, kind, &n, &ovf);
    /* tokens and targets, int32 each */
    size_t kept = mul3_sz(2, bt, sizeof(int32_t), &ovf), scratch = 0;
    for (int i = 0; i < n; i++) {
        size_t bytes = mul_sz(len[i], sizeof(float), &ovf);
        if (kind[i] == KEPT)
            kept = add_sz(kept, bytes, &ovf);
        else
            scratch = add_sz(scratch, bytes, &ovf);
    }
    size_t total = add_sz(add_sz(weights, weights, &ovf),
                          add_sz(kept, scratch, &ovf), &ovf);
    if (ovf) {
        snprintf(err, errlen, "a model of this configuration (dim %d, "
                 "hidden_dim %d, %d layers, %d heads, vocab %d) for %d x %d "
                 "tokens needs more bytes than a size_t can count",
                 c->dim, c->hidden_dim, c->n_layers, c->n_heads,
                 c->vocab_size, max_batch, c->seq_len);
        return -1;
    }
    out->weights = weights;
    out->gradients = weights; /* the same layout */
    out->activations = kept;
    out->workspace = scratch;
    out->total = total;
    return 0;
}

/* MemAvailable of /proc/meminfo (the kernel's estimate of the memory that
 * can be allocated without swapping), in bytes; 0 when it cannot be read
 * (another system, or an old kernel): then nothing is checked. */
static uint64_t mem_available(void)
{
    FILE *f = fopen("/proc/meminfo", "r");
    if (!f)
        return 0;
    char line[256];
    uint64_t bytes = 0;
    while (fgets(line, sizeof line, f)) {
        unsigned long long kb;
        if (sscanf(line, "MemAvailable: %llu kB", &kb) == 1) {
            bytes = kb <= UINT64_MAX / 1024 ? (uint64_t)kb * 1024 : 0;
            break;
        }
    }
    fclose(f);
    return bytes;
}

/* "9.3 GB", "412.5 MB", "12.0 kB" (decimal units, as free(1) -H prints). */
static void format_bytes(char *buf, size_t len, uint64_t b)
{
    if (b >= 1000000000u)
        snprintf(buf, len, "%.1f GB", (double)b / 1e9);
    else if (b >= 1000000u)
        snprintf(buf, len, "%.1f MB", (double)b / 1e6);
    else
        snprintf(buf, len, "%.1f kB", (double)b / 1e3);
}

int llama_memory_check(const llama_config *cfg, int max_batch, char *err,
                       size_t errlen)
{
    llama_memory plan;
    if (llama_memory_plan(cfg, max_batch, &plan, err, errlen) != 0)
        return -1;
    uint64_t avail = mem_available();
    if (avail && plan.total > avail) {
        char need[32], have[32], w[32], g[32], a[32], s[32];
        format_bytes(need, sizeof need, plan.total);
        format_bytes(have, sizeof have, avail);
        format_bytes(w, sizeof w, plan.weights);
        format_bytes(g, sizeof g, plan.gradients);
        format_bytes(a, sizeof a, plan.activations);
        format_bytes(s, sizeof s, plan.workspace);
        snprintf(err, errlen, "needs %s for %d x %d tokens (weights %s, "
                 "gradients %s, activations %s, workspace %s), %s available: "
                 "lower --seq or --batch", need, max_batch, cfg->seq_len, w,
                 g, a, s, have);
        return -1;
    }
    return 0;
}

int llama_create(llama_model *m, const llama_config *cfg, int max_batch,
                 char *err, size_t errlen)
{
    if (!m) {
        snprintf(err, errlen, "model is NULL");
        return -1;
    }
    memset(m, 0, sizeof *m);
    /* Refuse before allocating: the buffers are only touched by the first
     * steps, so a model that does not fit would otherwise be found out by
     * the kernel's OOM killer or by swapping, well into the run. */
    if (llama_memory_check(cfg, max_batch, err, errlen) != 0)
        return -1;
    m->cfg = *cfg;
    m->head_dim = cfg->dim / cfg->n_heads;
    m->context_len = cfg->seq_len;
    if (params_alloc(&m->w, cfg) != 0 || params_alloc(&m->g, cfg) != 0 ||
        !(m->acts = acts_alloc(cfg, max_batch))) {
        llama_destroy(m);
        snprintf(err, errlen,
                 "out of memory for a model of %zu parameters with "
                 "activations for %d x %d tokens",
                 llama_param_count(cfg), max_batch, cfg->seq_len);
        return -1;
    }
    return 0;
}

void llama_destroy(llama_model *m)
{
    if (!m)
        return;
    acts_free(m->acts, &m->cfg);
    params_free(&m->w);
    params_free(&m->g);
    memset(m, 0, sizeof *m);
}

/* splitmix64: a small, good generator so the initial weights depend on the
 * seed alone. */
static uint64_t splitmix64(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* Uniform in (0, 1]: never 0, so log() below is finite. */
static double uniform01(uint64_t *s)
{
    return ((double)(splitmix64(s) >> 11) + 1.0) * (1.0 / 9007199254740992.0);
}

static void fill_normal(float *x, size_t n, float std, uint64_t *s)
{
    for (size_t i = 0; i < n; i += 2) {
        /* Box-Muller: two independent normals from two uniforms. */
        double r = sqrt(-2.0 * log(uniform01(s)));
        double phi = 6.283185307179586 * uniform01(s);
        x[i] = (float)(std * r * cos(phi));
        if (i + 1 < n)
            x[i + 1] = (float)(std * r * sin(phi));
    }
}

static void fill_ones(float *x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        x[i] = 1.0f;
}

void llama_init_random(llama_model *m, uint64_t seed, float std)
{
    const llama_config *c = &m->cfg;
    size_t dim = (size_t)c->dim, hid = (size_t)c->hidden_dim;
    size_t qdim = (size_t)m->head_dim * (size_t)c->n_heads;
    size_t kvdim = (size_t)m->head_dim * (size_t)c->n_kv_heads;
    uint64_t s = seed;
    fill_normal(m->w.embed, (size_t)c->vocab_size * dim, std, &s);
    for (int l = 0; l < c->n_layers; l++) {
        llama_layer *L = &m->w.layers[l];
        fill_ones(L->rms_att, dim);
        fill_normal(L->wq, qdim * dim, std, &s);
        fill_normal(L->wk, kvdim * dim, std, &s);
        fill_normal(L->wv, kvdim * dim, std, &s);
        fill_normal(L->wo, dim * qdim, std, &s);
        fill_ones(L->rms_ffn, dim);
        fill_normal(L->w_gate, hid * dim, std, &s);
        fill_normal(L->w_up, hid * dim, std, &s);
        fill_normal(L->w_down, dim * hid, std, &s);
    }
    fill_ones(m->w.rms_final, dim);
    if (!c->tied)
        fill_normal(m->w.head, (size_t)c->vocab_size * dim, std, &s);
}

/* ------------------------------------------------------------------ */
/* Where each layer's activations are                                  */
/* ------------------------------------------------------------------ */

void llama_layer_acts_get(const llama_model *m, int l, llama_layer_acts *la)
{
    const llama_config *c = &m->cfg;
    const struct llama_acts *a = m->acts;
    /* Blocks are packed for the current B x T, layer after layer. */
    size_t n = (size_t)m->batch * m->seq, L = (size_t)l;
    size_t dim = (size_t)c->dim, hid = (size_t)c->hidden_dim;
    size_t qdim = (size_t)m->head_dim * c->n_heads;
    size_t kvdim = (size_t)m->head_dim * c->n_kv_heads;
    la->x = a->x + L * n * dim;
    la->x_next = a->x + (L + 1) * n * dim;
    la->h = a->h + L * n * dim;
    la->rstd_att = a->rstd_att + L * n;
    la->xn_att = a->xn_att + L * n * dim;
    la->q = a->q + L * n * qdim;
    la->k = a->k + L * n * kvdim;
    la->v = a->v + L * n * kvdim;
    la->probs_att = a->probs_att + L * n * c->n_heads * (size_t)m->seq;
    la->att_out = a->att_out + L * n * qdim;
    la->rstd_ffn = a->rstd_ffn + L * n;
    la->xn_ffn = a->xn_ffn + L * n * dim;
    la->gate = a->gate + L * n * hid;
    la->up = a->up + L * n * hid;
    la->mid = a->mid + L * n * hid;
}

float *llama_last_x(const llama_model *m)
{
    return m->acts->x +
           (size_t)m->cfg.n_layers * m->batch * m->seq * m->cfg.dim;
}

/* ------------------------------------------------------------------ */
/* Building blocks                                                     */
/* ------------------------------------------------------------------ */

/* out[n x M] = in[n x K] . w[M x K]^T (+ out when accumulate): a linear
 * layer on n tokens with a PyTorch-layout weight. */
void llama_linear(float *out, const float *in, const float *w, int n, int K,
                  int M, int accumulate)
{
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, M, K, 1.0f, in,
                K, w, K, accumulate ? 1.0f : 0.0f, out, M);
}

/* Backward of llama_linear. d_in[n x K] (+)= d_out[n x M] . w[M x K], when
 * d_in is not NULL; d_w[M x K] = d_out^T . in, when d_w is not NULL (the
 * weight gradient is written, not accumulated: each weight is used once). */
void llama_linear_backward(float *d_in, float *d_w, const float *d_out,
                           const float *in, const float *w, int n, int K,
                           int M, int accumulate_d_in)
{
    if (d_in)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, K, M, 1.0f,
                    d_out, M, w, K, accumulate_d_in ? 1.0f : 0.0f, d_in, K);
    if (d_w)
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, M, K, n, 1.0f,
                    d_out, M, in, K, 0.0f, d_w, K);
}

/* out = x / sqrt(mean(x^2) + eps) * gain per row; rstd keeps the
 * 1/sqrt(...) of each row for the backward pass. The mean is accumulated in
 * double: it is cheap and keeps long rows exact. */
static void rmsnorm_forward(float *out, float *rstd, const float *x,
                            const float *gain, int n, int dim, float eps)
{
    for (int t = 0; t < n; t++) {
        const float *xr = x + (size_t)t * dim;
        float *yr = out + (size_t)t * dim;
        double ss = 0.0;
        for (int i = 0; i < dim; i++)
            ss += (double)xr[i] * xr[i];
        float r = (float)(1.0 / sqrt(ss / dim + eps));
        rstd[t] = r;
        for (int i = 0; i < dim; i++)
            yr[i] = xr[i] * r * gain[i];
    }
}

/* Backward of rmsnorm_forward given d_out, the gradient of its output.
 * With y_i = g_i x_i r and r = (mean(x^2) + eps)^(-1/2):
 *   dL/dg_i = sum over rows of d_out_i x_i r       (into d_gain if not NULL)
 *   dL/dx_i = r u_i - r^3 x_i mean_j(u_j x_j),  u = g * d_out
 * (the second term is the path through r). dL/dx is added into d_x when
 * d_x is not NULL: the norm's input is a residual stream whose gradient
 * already holds the skip connection's share. */
static void rmsnorm_backward(float *d_x, float *d_gain, const float *d_out,
                             const float *x, const float *rstd,
                             const float *gain, int n, int dim)
{
    if (d_gain)
        memset(d_gain, 0, (size_t)dim * sizeof(float));
    for (int t = 0; t < n; t++) {
        const float *xr = x + (size_t)t * dim;
        const float *dy = d_out + (size_t)t * dim;
        float r = rstd[t];
        if (d_gain)
            for (int i = 0; i < dim; i++)
                d_gain[i] += dy[i] * xr[i] * r;
        if (!d_x)
            continue;
        double dot = 0.0;
        for (int i = 0; i < dim; i++)
            dot += (double)gain[i] * dy[i] * xr[i];
        float c = (float)(dot / dim) * r * r * r;
        float *dx = d_x + (size_t)t * dim;
        for (int i = 0; i < dim; i++)
            dx[i] += r * gain[i] * dy[i] - c * xr[i];
    }
}

static float sigmoidf(float x) { return 1.0f / (1.0f + expf(-x)); }

/* mid = silu(gate) * up, SwiGLU's gating. */
static void swiglu_forward(float *mid, const float *gate, const float *up,
                           size_t n)
{
    for (size_t i = 0; i < n; i++)
        mid[i] = gate[i] * sigmoidf(gate[i]) * up[i];
}

/* With s = sigmoid(g): d silu(g)/dg = s (1 + g (1 - s)). */
static void swiglu_backward(float *d_gate, float *d_up, const float *d_mid,
                            const float *gate, const float *up, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        float s = sigmoidf(gate[i]);
        float silu = gate[i] * s;
        d_up[i] = d_mid[i] * silu;
        d_gate[i] = d_mid[i] * up[i] * s * (1.0f + gate[i] * (1.0f - s));
    }
}

/* sumsq += column sums of squares of x [n x cols], through the public
 * libowlore call. 0 on success; prints the library's message otherwise. */
static int stats_accumulate(const llama_act_stats *stats, const float *x,
                            int n, int cols, owl_tensor *sumsq,
                            const char *what, int layer)
{
    owl_tensor xt;
    owl_tensor_init(&xt, (void *)x, OWL_DTYPE_F32, n, cols);
    owl_status s = owl_act_norm_accumulate(stats->ctx, &xt, sumsq);
    if (s == OWL_OK)
        return 0;
    fprintf(stderr, "llama_forward: activation statistics of layer %d (%s): "
                    "%s: %s\n",
            layer, what, owl_status_name(s),
            owl_context_last_error(stats->ctx));
    return -1;
}

/* ------------------------------------------------------------------ */
/* Forward                                                             */
/* ------------------------------------------------------------------ */

/* Checks the arguments of llama_forward; prints why and returns -1 when
 * they are unusable. */
static int forward_check(const llama_model *m, const int32_t *tokens,
                         const int32_t *targets, int B, int T,
                         const llama_act_stats *stats)
{
    const llama_config *c = &m->cfg;
    if (!m->acts || !tokens) {
        fprintf(stderr, "llama_forward: %s is NULL\n",
                !m->acts ? "the model (not created)" : "tokens");
        return -1;
    }
    if (B < 1 || B > m->acts->max_batch || T < 1 || T > c->seq_len) {
        fprintf(stderr,
                "llama_forward: batch %d x %d tokens, the model takes "
                "1..%d x 1..%d\n",
                B, T, m->acts->max_batch, c->seq_len);
        return -1;
    }
    for (size_t i = 0; i < (size_t)B * T; i++) {
        if (tokens[i] < 0 || tokens[i] >= c->vocab_size) {
            fprintf(stderr, "llama_forward: token %zu is %d, vocab is %d\n",
                    i, tokens[i], c->vocab_size);
            return -1;
        }
        if (targets && targets[i] >= c->vocab_size) {
            fprintf(stderr, "llama_forward: target %zu is %d, vocab is %d\n",
                    i, targets[i], c->vocab_size);
            return -1;
        }
    }
    if (stats && (!stats->ctx || !stats->attn_in || !stats->attn_out ||
                  !stats->mlp_in || !stats->mlp_mid)) {
        fprintf(stderr, "llama_forward: stats has a NULL member\n");
        return -1;
    }
    return 0;
}

/* One decoder layer: x_l -> h_l -> x_{l+1}, keeping what backward needs.
 * Returns -1 when the statistics hook failed. */
static int layer_forward(llama_model *m, int l, int B, int T,
                         const llama_act_stats *stats)
{
    const llama_config *c = &m->cfg;
    const llama_layer *W = &m->w.layers[l];
    int n = B * T, dim = c->dim, hid = c->hidden_dim;
    int qdim = m->head_dim * c->n_heads, kvdim = m->head_dim * c->n_kv_heads;
    llama_layer_acts la;
    llama_layer_acts_get(m, l, &la);

    /* Attention block. */
    rmsnorm_forward(la.xn_att, la.rstd_att, la.x, W->rms_att, n, dim,
                    c->norm_eps);
    if (stats && stats_accumulate(stats, la.xn_att, n, dim,
                                  &stats->attn_in[l], "attn_in", l))
        return -1;
    llama_linear(la.q, la.xn_att, W->wq, n, dim, qdim, 0);
    llama_linear(la.k, la.xn_att, W->wk, n, dim, kvdim, 0);
    llama_linear(la.v, la.xn_att, W->wv, n, dim, kvdim, 0);
    llama_rope(m, la.q, n, T, c->n_heads, 0);
    llama_rope(m, la.k, n, T, c->n_kv_heads, 0);
    llama_attention_forward(m, &la, B, T);
    if (stats && stats_accumulate(stats, la.att_out, n, qdim,
                                  &stats->attn_out[l], "attn_out", l))
        return -1;
    /* h = x + wo . att_out: copy the residual, then accumulate into it. */
    memcpy(la.h, la.x, (size_t)n * dim * sizeof(float));
    llama_linear(la.h, la.att_out, W->wo, n, qdim, dim, 1);

    /* MLP block. */
    rmsnorm_forward(la.xn_ffn, la.rstd_ffn, la.h, W->rms_ffn, n, dim,
                    c->norm_eps);
    if (stats && stats_accumulate(stats, la.xn_ffn, n, dim,
                                  &stats->mlp_in[l], "mlp_in", l))
        return -1;
    llama_linear(la.gate, la.xn_ffn, W->w_gate, n, dim, hid, 0);
    llama_linear(la.up, la.xn_ffn, W->w_up, n, dim, hid, 0);
    swiglu_forward(la.mid, la.gate, la.up, (size_t)n * hid);
    if (stats && stats_accumulate(stats, la.mid, n, hid, &stats->mlp_mid[l],
                                  "mlp_mid", l))
        return -1;
    memcpy(la.x_next, la.h, (size_t)n * dim * sizeof(float));
    llama_linear(la.x_next, la.mid, W->w_down, n, hid, dim, 1);
    return 0;
}

/* Turns each row of logits into softmax probabilities in place and returns
 * the summed cross-entropy of the rows whose target is >= 0 (in double);
 * *counted gets their number. The probabilities are what the backward pass
 * needs: dL/dlogits = (p - onehot(target)) / counted. */
static double softmax_cross_entropy(float *probs, const int32_t *targets,
                                    int n, int V, int *counted)
{
    double total = 0.0;
    *counted = 0;
    for (int t = 0; t < n; t++) {
        float *p = probs + (size_t)t * V;
        float mx = p[0];
        for (int i = 1; i < V; i++)
            mx = p[i] > mx ? p[i] : mx;
        double sum = 0.0;
        float target_logit = targets && targets[t] >= 0 ? p[targets[t]] : 0.f;
        for (int i = 0; i < V; i++) {
            p[i] = expf(p[i] - mx);
            sum += p[i];
        }
        float inv = (float)(1.0 / sum);
        for (int i = 0; i < V; i++)
            p[i] *= inv;
        if (targets && targets[t] >= 0) {
            /* -log softmax = logsumexp - logit, without log(p) underflow. */
            total += log(sum) + mx - target_logit;
            (*counted)++;
        }
    }
    return total;
}

/* Errors (an argument out of range, or the statistics hook failing) are
 * printed to stderr and reported as a NaN loss: llama.h returns a float,
 * and a trainer already treats a non-finite loss as a failed step. After a
 * failure there is nothing for llama_backward to differentiate; statistics
 * of the layers before a failing hook call have been accumulated. */
float llama_forward(llama_model *m, const int32_t *tokens,
                    const int32_t *targets, int B, int T, float *logits,
                    const llama_act_stats *stats)
{
    if (!m || forward_check(m, tokens, targets, B, T, stats) != 0) {
        if (!m)
            fprintf(stderr, "llama_forward: model is NULL\n");
        if (m && m->acts)
            m->acts->valid = 0;
        return NAN;
    }
    const llama_config *c = &m->cfg;
    struct llama_acts *a = m->acts;
    int n = B * T, dim = c->dim, V = c->vocab_size;
    a->valid = 0;
    m->batch = B;
    m->seq = T;
    memcpy(a->tokens, tokens, (size_t)n * sizeof(int32_t));

    for (int t = 0; t < n; t++)
        memcpy(a->x + (size_t)t * dim, m->w.embed + (size_t)tokens[t] * dim,
               (size_t)dim * sizeof(float));
    for (int l = 0; l < c->n_layers; l++)
        if (layer_forward(m, l, B, T, stats) != 0)
            return NAN;

    rmsnorm_forward(a->xn_final, a->rstd_final, llama_last_x(m), m->w.rms_final, n,
                    dim, c->norm_eps);
    llama_linear(a->probs, a->xn_final, m->w.head, n, dim, V, 0);
    if (logits)
        memcpy(logits, a->probs, (size_t)n * V * sizeof(float));
    if (!targets)
        return 0.0f;

    memcpy(a->targets, targets, (size_t)n * sizeof(int32_t));
    double total = softmax_cross_entropy(a->probs, targets, n, V,
                                         &a->counted);
    a->valid = 1;
    /* No counted position: the mean is 0/0; report 0 with a zero gradient
     * (backward scales by 1/max(counted, 1)). */
    return a->counted ? (float)(total / a->counted) : 0.0f;
}

/* ------------------------------------------------------------------ */
/* Backward                                                            */
/* ------------------------------------------------------------------ */

/*
 * Which tensors get gradients, and how far down the pass must go.
 *
 * A tied head is one tensor with two uses. Its gradient is the full
 * gradient of that tensor (the head's use plus the embedding's lookup), as
 * autograd gives for a shared parameter, and it is computed when either
 * role is trainable: training "the head" or "the embeddings" means training
 * that one matrix. Consequently, with a tied head that is trainable, the
 * pass goes down to the embedding lookup even when tr->embeddings is 0.
 */
typedef struct backward_plan {
    int embed;   /* the embedding matrix gets a gradient */
    int head;    /* rms_final (and the untied head) get gradients */
    int lowest;  /* lowest layer the pass goes through (n_layers: none) */
} backward_plan;

static int layer_trainable(const llama_trainable *tr, int l)
{
    return !tr->layers || tr->layers[l];
}

static backward_plan plan_backward(const llama_config *c,
                                   const llama_trainable *tr)
{
    backward_plan p;
    p.head = tr->head != 0;
    p.embed = tr->embeddings || (c->tied && tr->head);
    p.lowest = c->n_layers;
    if (p.embed) {
        p.lowest = 0;
    } else {
        for (int l = 0; l < c->n_layers; l++)
            if (layer_trainable(tr, l)) {
                p.lowest = l;
                break;
            }
    }
    return p;
}

/* The gradient of one decoder layer. On entry a->d_res holds dL/dx_{l+1};
 * on return it holds dL/dx_l when need_d_x, else its contents are
 * undefined. Weight gradients are written only when `train`. */
static void layer_backward(llama_model *m, int l, int B, int T, int train,
                           int need_d_x)
{
    const llama_config *c = &m->cfg;
    struct llama_acts *a = m->acts;
    const llama_layer *W = &m->w.layers[l];
    llama_layer *G = train ? &m->g.layers[l] : NULL;
    int n = B * T, dim = c->dim, hid = c->hidden_dim;
    int qdim = m->head_dim * c->n_heads, kvdim = m->head_dim * c->n_kv_heads;
    llama_layer_acts la;
    llama_layer_acts_get(m, l, &la);
    float *d_res = a->d_res;

    /* x_{l+1} = h + w_down . mid: the skip passes d_res on unchanged (it
     * becomes dL/dh once the MLP's share is added below). */
    float *d_mid = a->d_gate; /* reused: d_mid is consumed before d_gate */
    llama_linear_backward(d_mid, G ? G->w_down : NULL, d_res, la.mid,
                          W->w_down, n, hid, dim, 0);
    /* d_mid and d_gate share memory; swiglu_backward reads d_mid[i] before
     * writing d_gate[i], element by element. */
    swiglu_backward(a->d_gate, a->d_up, d_mid, la.gate, la.up,
                    (size_t)n * hid);
    llama_linear_backward(a->d_norm, G ? G->w_gate : NULL, a->d_gate,
                          la.xn_ffn, W->w_gate, n, dim, hid, 0);
    llama_linear_backward(a->d_norm, G ? G->w_up : NULL, a->d_up, la.xn_ffn,
                          W->w_up, n, dim, hid, 1);
    rmsnorm_backward(d_res, G ? G->rms_ffn : NULL, a->d_norm, la.h,
                     la.rstd_ffn, W->rms_ffn, n, dim);
    /* d_res is now dL/dh. h = x + wo . att_out. */
    llama_linear_backward(a->d_att_out, G ? G->wo : NULL, d_res, la.att_out,
                          W->wo, n, qdim, dim, 0);
    llama_attention_backward(m, &la, B, T);
    llama_rope(m, a->d_q, n, T, c->n_heads, 1);
    llama_rope(m, a->d_k, n, T, c->n_kv_heads, 1);
    llama_linear_backward(a->d_norm, G ? G->wq : NULL, a->d_q, la.xn_att,
                          W->wq, n, dim, qdim, 0);
    llama_linear_backward(a->d_norm, G ? G->wk : NULL, a->d_k, la.xn_att,
                          W->wk, n, dim, kvdim, 1);
    llama_linear_backward(a->d_norm, G ? G->wv : NULL, a->d_v, la.xn_att,
                          W->wv, n, dim, kvdim, 1);
    rmsnorm_backward(need_d_x ? d_res : NULL, G ? G->rms_att : NULL,
                     a->d_norm, la.x, la.rstd_att, W->rms_att, n, dim);
}

void llama_backward(llama_model *m, const llama_trainable *tr)
{
    if (!m || !tr || !m->acts || !m->acts->valid) {
        fprintf(stderr, "llama_backward: %s\n",
                !m || !tr ? "model or trainable is NULL"
                          : "no forward pass with targets to differentiate");
        return;
    }
    const llama_config *c = &m->cfg;
    struct llama_acts *a = m->acts;
    int B = m->batch, T = m->seq, n = B * T, dim = c->dim, V = c->vocab_size;
    backward_plan plan = plan_backward(c, tr);
    if (!plan.head && !plan.embed && plan.lowest == c->n_layers)
        return; /* nothing trainable */

    /* dL/dlogits = (p - onehot(target)) / counted, rows without a target
     * zero; built in place of the probabilities (a forward must precede
     * every backward, so they are not needed again). */
    float scale = 1.0f / (float)(a->counted > 0 ? a->counted : 1);
    for (int t = 0; t < n; t++) {
        float *p = a->probs + (size_t)t * V;
        if (a->targets[t] < 0) {
            memset(p, 0, (size_t)V * sizeof(float));
            continue;
        }
        p[a->targets[t]] -= 1.0f;
        for (int i = 0; i < V; i++)
            p[i] *= scale;
    }
    a->valid = 0;

    /* Head. The head matrix gets its gradient when its tensor is
     * trainable: plan.head for an untied head, plan.embed for a tied one
     * (whose lookup share is added at the end). The gradient of the final
     * norm's output is needed for rms_final and for everything below. */
    int head_grad = c->tied ? plan.embed : plan.head;
    int need_below = plan.lowest < c->n_layers;
    int need_d_norm = need_below || plan.head;
    llama_linear_backward(need_d_norm ? a->d_norm : NULL,
                          head_grad ? m->g.head : NULL, a->probs,
                          a->xn_final, m->w.head, n, dim, V, 0);
    if (need_d_norm) {
        /* Nothing is added to the top of the residual stream but this. */
        memset(a->d_res, 0, (size_t)n * dim * sizeof(float));
        rmsnorm_backward(need_below ? a->d_res : NULL,
                         plan.head ? m->g.rms_final : NULL, a->d_norm,
                         llama_last_x(m), a->rstd_final, m->w.rms_final, n,
                         dim);
    }

    for (int l = c->n_layers - 1; l >= plan.lowest; l--)
        layer_backward(m, l, B, T, layer_trainable(tr, l),
                       l > plan.lowest || plan.embed);

    if (plan.embed) {
        /* The lookup's gradient: each token's row of dL/dx_0 adds into its
         * embedding row. A tied matrix already holds the head's share. */
        if (!c->tied)
            memset(m->g.embed, 0, (size_t)V * dim * sizeof(float));
        for (int t = 0; t < n; t++) {
            float *ge = m->g.embed + (size_t)a->tokens[t] * dim;
            const float *d = a->d_res + (size_t)t * dim;
            for (int i = 0; i < dim; i++)
                ge[i] += d[i];
        }
    }
}
