/* AdamW: full-rank and fused GaLore low-rank steps.
 *
 * Both steps are one pass over the moments in chunks small enough for L1:
 * convert what is not f32, update m and v, form the normalised step N, and
 * (full rank) apply it to the weight in the same pass. The low-rank step
 * writes N over the projected gradient and fuses the weight update into the
 * back-projection GEMM. Every loop is split by rows across the context's
 * threads, and nothing depends on the split: stochastic rounding draws its
 * bits from (seed, step, element index). */
#include "galore_internal.h"
#include "dtype.h"

#include <limits.h>
#include <math.h>
#include <string.h>
#if defined(__SSE2__)
#include <immintrin.h>
#elif defined(__ARM_NEON) && defined(__aarch64__)
#include <arm_neon.h>
#endif

/* Elements per inner chunk: the stack buffers stay in L1. */
#define CHUNK 256
/* Elements per thread chunk at least, so small steps stay single-threaded. */
#define GRAIN_ELEMS 32768

static const owl_adamw_options adamw_defaults = {
    .struct_size = sizeof(owl_adamw_options),
    .beta1 = 0.9,
    .beta2 = 0.999,
    .eps = 1e-6,
    .weight_decay = 0.0,
    .semantics = OWL_ADAMW_GALORE,
    .moment_dtype = OWL_DTYPE_F32,
    .on_refresh = OWL_MOMENTS_KEEP,
    .rounding = OWL_ROUND_NEAREST,
    .seed = 0,
};

owl_status owl_adamw_options_init(owl_adamw_options *opts, uint64_t struct_size)
{
    return owl__init_options(opts, struct_size, &adamw_defaults,
                             sizeof adamw_defaults);
}

static owl_status validate_options(owl_context *ctx, const owl_adamw_options *o)
{
    if (!(o->beta1 >= 0 && o->beta1 < 1))
        return owl__fail(ctx, OWL_ERR_INVALID_ARGUMENT,
                         "owl_adamw_options.beta1 is %g; it must be in [0, 1)",
                         o->beta1);
    if (!(o->beta2 >= 0 && o->beta2 < 1))
        return owl__fail(ctx, OWL_ERR_INVALID_ARGUMENT,
                         "owl_adamw_options.beta2 is %g; it must be in [0, 1)",
                         o->beta2);
    if (!isfinite(o->eps) || !((float)o->eps > 0) || !isfinite((float)o->eps))
        return owl__fail(ctx, OWL_ERR_INVALID_ARGUMENT,
                         "owl_adamw_options.eps is %g; it must be > 0 and "
                         "finite in f32",
                         o->eps);
    if (!isfinite(o->weight_decay) || !(o->weight_decay >= 0))
        return owl__fail(ctx, OWL_ERR_INVALID_ARGUMENT,
                         "owl_adamw_options.weight_decay is %g; it must be "
                         "finite and >= 0",
                         o->weight_decay);
    if (o->semantics != OWL_ADAMW_GALORE && o->semantics != OWL_ADAMW_TORCH)
        return owl__fail(ctx, OWL_ERR_INVALID_ARGUMENT,
                         "owl_adamw_options.semantics is %d; expected "
                         "OWL_ADAMW_GALORE or OWL_ADAMW_TORCH",
                         (int)o->semantics);
    if (o->moment_dtype != OWL_DTYPE_F32 && o->moment_dtype != OWL_DTYPE_BF16)
        return owl__fail(ctx, OWL_ERR_DTYPE,
                         "owl_adamw_options.moment_dtype is %s (%d); expected "
                         "f32 or bf16",
                         owl__dtype_name(o->moment_dtype),
                         (int)o->moment_dtype);
    if (o->on_refresh != OWL_MOMENTS_KEEP && o->on_refresh != OWL_MOMENTS_RESET)
        return owl__fail(ctx, OWL_ERR_INVALID_ARGUMENT,
                         "owl_adamw_options.on_refresh is %d; expected "
                         "OWL_MOMENTS_KEEP or OWL_MOMENTS_RESET",
                         (int)o->on_refresh);
    if (o->rounding != OWL_ROUND_NEAREST && o->rounding != OWL_ROUND_STOCHASTIC)
        return owl__fail(ctx, OWL_ERR_INVALID_ARGUMENT,
                         "owl_adamw_options.rounding is %d; expected "
                         "OWL_ROUND_NEAREST or OWL_ROUND_STOCHASTIC",
                         (int)o->rounding);
    return OWL_OK;
}

static size_t moment_bytes(const owl_adamw *a)
{
    return (size_t)a->rows * (size_t)a->cols *
           owl__dtype_size(a->opts.moment_dtype);
}

void owl_adamw_free(owl_adamw *a)
{
    if (a == NULL)
        return;
    owl__free(a->m);
    owl__free(a->v);
    owl__free(a);
}

owl_status owl_adamw_create(owl_context *ctx, const owl_adamw_options *opts,
                            uint64_t rows, uint64_t cols, owl_adamw **out)
{
    if (ctx == NULL)
        return OWL_ERR_NULL_POINTER;
    owl__clear_error(ctx);
    OWL_REQUIRE_PTR(ctx, out);
    *out = NULL;
    OWL_REQUIRE_PTR(ctx, opts);
    owl_adamw_options o = adamw_defaults;
    owl_status s = owl__read_options(ctx, &o, sizeof o, opts,
                                     "owl_adamw_options");
    if (s != OWL_OK)
        return s;
    if ((s = validate_options(ctx, &o)) != OWL_OK)
        return s;
    size_t count;
    if (rows < 1 || cols < 1 || rows > INT64_MAX || cols > INT64_MAX ||
        owl__mul_overflows((size_t)rows, (size_t)cols, &count) ||
        count > (size_t)INT64_MAX / 4)
        return owl__fail(ctx, OWL_ERR_INVALID_ARGUMENT,
                         "the moment shape is %llux%llu; both must be >= 1 "
                         "and the product addressable",
                         (unsigned long long)rows, (unsigned long long)cols);

    owl_adamw *a = owl__alloc(ctx, 1, sizeof *a, "owl_adamw");
    if (a == NULL)
        return OWL_ERR_OUT_OF_MEMORY;
    a->ctx = ctx;
    a->opts = o;
    a->rows = (int64_t)rows;
    a->cols = (int64_t)cols;
    size_t elem = owl__dtype_size(o.moment_dtype);
    a->m = owl__alloc(ctx, count, elem, "first moment");
    a->v = owl__alloc(ctx, count, elem, "second moment");
    if (a->m == NULL || a->v == NULL) {
        owl_adamw_free(a);
        return OWL_ERR_OUT_OF_MEMORY;
    }
    *out = a;
    return OWL_OK;
}

uint64_t owl_adamw_step_count(const owl_adamw *a)
{
    return a ? a->step_count : 0;
}

uint64_t owl_adamw_bias_step(const owl_adamw *a)
{
    return a ? a->bias_step : 0;
}

static void zero_moments(owl_adamw *a)
{
    memset(a->m, 0, moment_bytes(a));
    memset(a->v, 0, moment_bytes(a));
    a->bias_step = 0;
}

owl_status owl_adamw_reset(owl_adamw *a)
{
    if (a == NULL)
        return OWL_ERR_NULL_POINTER;
    owl__clear_error(a->ctx);
    zero_moments(a);
    return OWL_OK;
}

owl_status owl_adamw_get_moment(const owl_adamw *a, int32_t which,
                                owl_tensor *out)
{
    if (a == NULL)
        return OWL_ERR_NULL_POINTER;
    owl__clear_error(a->ctx);
    if (which != 0 && which != 1)
        return owl__fail(a->ctx, OWL_ERR_INVALID_ARGUMENT,
                         "which is %d; expected 0 (m) or 1 (v)", (int)which);
    owl_status s = owl__check_tensor(a->ctx, out, "out",
                                     OWL_DT_BIT(OWL_DTYPE_F32));
    if (s == OWL_OK)
        s = owl__check_shape(a->ctx, out, "out (the moment shape)", a->rows,
                             a->cols);
    if (s != OWL_OK)
        return s;
    owl_tensor src;
    owl_tensor_init(&src, which == 0 ? a->m : a->v, a->opts.moment_dtype,
                    a->rows, a->cols);
    for (int64_t i = 0; i < a->rows; i++)
        owl__load_row_f32(&src, i, (float *)owl__row_ptr(out, i));
    return OWL_OK;
}

/* ---- the per-element arithmetic -------------------------------------- */

typedef struct {
    bool torch;
    float b1, b2, omb1, omb2, eps;
    float bc2_sqrt; /* TORCH: sqrt(1 - b2^t) divides sqrt(v) */
} moment_coeffs;

/* How the normalised step n reaches a weight w (f32, in this order):
 * w = w * pre; w = w + step * n; w = w + post * w.
 * GALORE: pre 1, step -eta, post -lr*wd (decay after the update).
 * TORCH:  pre 1 - lr*wd (decay first), step -lr/(1-b1^t), post 0. */
typedef struct {
    float pre, step, post;
} weight_coeffs;

static void set_coeffs(const owl_adamw *a, double lr, moment_coeffs *mc,
                       weight_coeffs *wc)
{
    const owl_adamw_options *o = &a->opts;
    double t = (double)a->bias_step;
    double bc1 = 1.0 - pow(o->beta1, t);
    double bc2 = 1.0 - pow(o->beta2, t);
    mc->torch = o->semantics == OWL_ADAMW_TORCH;
    mc->b1 = (float)o->beta1;
    mc->b2 = (float)o->beta2;
    mc->omb1 = (float)(1.0 - o->beta1);
    mc->omb2 = (float)(1.0 - o->beta2);
    mc->eps = (float)o->eps;
    mc->bc2_sqrt = (float)sqrt(bc2);
    if (mc->torch) {
        wc->pre = (float)(1.0 - lr * o->weight_decay);
        wc->step = (float)(-lr / bc1);
        wc->post = 0.0f;
    } else {
        wc->pre = 1.0f;
        wc->step = (float)(-lr * sqrt(bc2) / bc1);
        wc->post = (float)(-lr * o->weight_decay);
    }
}

/* s[k] = sqrt(v[k]) for v >= 0. sqrtf() keeps an errno path for negative
 * inputs that stops compilers from vectorising any loop calling it; the
 * SIMD square roots are correctly rounded, so the results are the same. */
static void sqrt_chunk(float *s, const float *v, int64_t count)
{
    int64_t k = 0;
#if defined(__SSE2__)
    for (; k + 4 <= count; k += 4)
        _mm_storeu_ps(s + k, _mm_sqrt_ps(_mm_loadu_ps(v + k)));
#elif defined(__ARM_NEON) && defined(__aarch64__)
    for (; k + 4 <= count; k += 4)
        vst1q_f32(s + k, vsqrtq_f32(vld1q_f32(v + k)));
#endif
    for (; k < count; k++)
        s[k] = sqrtf(v[k]);
}

/* Updates `count` (<= CHUNK) moments from g and writes the normalised step
 * to n (which may alias g). The TORCH first moment is torch's lerp, branch
 * for branch, so results match torch.optim.AdamW as closely as f32 allows.
 * Each loop is branch-free so it vectorises. */
static void moments_chunk(const moment_coeffs *c, const float *g, float *m,
                          float *v, float *n, int64_t count)
{
    float root[CHUNK];
    const float b1 = c->b1, b2 = c->b2, omb1 = c->omb1, omb2 = c->omb2;
    if (!c->torch)
        for (int64_t k = 0; k < count; k++)
            m[k] = b1 * m[k] + omb1 * g[k];
    else if (omb1 < 0.5f)
        for (int64_t k = 0; k < count; k++)
            m[k] = m[k] + omb1 * (g[k] - m[k]);
    else
        for (int64_t k = 0; k < count; k++)
            m[k] = g[k] - (g[k] - m[k]) * (1.0f - omb1);
    for (int64_t k = 0; k < count; k++)
        v[k] = b2 * v[k] + omb2 * (g[k] * g[k]);
    sqrt_chunk(root, v, count);
    const float eps = c->eps, bc2_sqrt = c->bc2_sqrt;
    if (c->torch)
        for (int64_t k = 0; k < count; k++)
            n[k] = m[k] / (root[k] / bc2_sqrt + eps);
    else
        for (int64_t k = 0; k < count; k++)
            n[k] = m[k] / (root[k] + eps);
}

/* The moments of elements [off, off+count) as f32: in place for f32
 * moments, converted into the buffers for bf16 ones. */
static void load_moments(const owl_adamw *a, size_t off, int64_t count,
                         float *mb, float *vb, float **m, float **v)
{
    if (a->opts.moment_dtype == OWL_DTYPE_F32) {
        *m = (float *)a->m + off;
        *v = (float *)a->v + off;
        return;
    }
    const uint16_t *hm = (const uint16_t *)a->m + off;
    const uint16_t *hv = (const uint16_t *)a->v + off;
    for (int64_t k = 0; k < count; k++) {
        mb[k] = owl_bf16_to_f32(hm[k]);
        vb[k] = owl_bf16_to_f32(hv[k]);
    }
    *m = mb;
    *v = vb;
}

static void store_moments(owl_adamw *a, size_t off, int64_t count,
                          const float *m, const float *v)
{
    if (a->opts.moment_dtype == OWL_DTYPE_F32)
        return; /* updated in place */
    uint16_t *hm = (uint16_t *)a->m + off;
    uint16_t *hv = (uint16_t *)a->v + off;
    for (int64_t k = 0; k < count; k++) {
        hm[k] = owl_f32_to_bf16(m[k]);
        hv[k] = owl_f32_to_bf16(v[k]);
    }
}

/* Element (i, j0..) of t as f32: the data itself for f32, else converted. */
static const float *load_chunk(const owl_tensor *t, int64_t i, int64_t j0,
                               int64_t count, float *buf)
{
    const void *row = owl__row_ptr(t, i);
    switch (t->dtype) {
    case OWL_DTYPE_F32:
        return (const float *)row + j0;
    case OWL_DTYPE_BF16: {
        const uint16_t *h = (const uint16_t *)row + j0;
        for (int64_t k = 0; k < count; k++)
            buf[k] = owl_bf16_to_f32(h[k]);
        return buf;
    }
    default: {
        const uint16_t *h = (const uint16_t *)row + j0;
        for (int64_t k = 0; k < count; k++)
            buf[k] = owl_f16_to_f32(h[k]);
        return buf;
    }
    }
}

typedef struct {
    bool stochastic; /* bf16 weights only */
    uint64_t seed, draw;
} rounding;

/* Writes count f32 values to weight elements (i, j0..). Stochastic bf16
 * rounding takes 16 random bits per element from one 64-bit hash per four
 * consecutive flat indices i*cols + j: a pure function of (seed, step,
 * index), so any thread split gives the same bits. */
static void store_chunk(const owl_tensor *t, int64_t i, int64_t j0,
                        int64_t count, const float *x, const rounding *rd)
{
    void *row = owl__row_ptr(t, i);
    switch (t->dtype) {
    case OWL_DTYPE_F32: {
        float *f = (float *)row + j0;
        if (f != x)
            memcpy(f, x, (size_t)count * sizeof(float));
        break;
    }
    case OWL_DTYPE_BF16: {
        uint16_t *h = (uint16_t *)row + j0;
        if (!rd->stochastic) {
            for (int64_t k = 0; k < count; k++)
                h[k] = owl_f32_to_bf16(x[k]);
            break;
        }
        uint64_t idx = (uint64_t)i * (uint64_t)t->cols + (uint64_t)j0;
        uint64_t word = owl__hash3(rd->seed, rd->draw, idx >> 2);
        for (int64_t k = 0; k < count; k++, idx++) {
            if (k > 0 && (idx & 3u) == 0)
                word = owl__hash3(rd->seed, rd->draw, idx >> 2);
            uint32_t bits = (uint32_t)(word >> (16u * (unsigned)(idx & 3u)));
            h[k] = owl_f32_to_bf16_stochastic(x[k], bits & 0xffffu);
        }
        break;
    }
    default: {
        uint16_t *h = (uint16_t *)row + j0;
        for (int64_t k = 0; k < count; k++)
            h[k] = owl_f32_to_f16(x[k]);
        break;
    }
    }
}

static int64_t row_grain(int64_t cols)
{
    return cols >= GRAIN_ELEMS ? 1 : GRAIN_ELEMS / cols;
}

/* ---- validation shared by both steps --------------------------------- */

static owl_status check_step_args(owl_adamw *a, owl_tensor *weight,
                                  const owl_tensor *grad, double lr)
{
    owl_context *ctx = a->ctx;
    owl_status s = owl__check_tensor(ctx, weight, "weight", OWL_DT_FLOATS);
    if (s == OWL_OK)
        s = owl__check_tensor(ctx, grad, "grad", OWL_DT_FLOATS);
    if (s != OWL_OK)
        return s;
    if (grad->rows != weight->rows || grad->cols != weight->cols)
        return owl__fail(ctx, OWL_ERR_SHAPE, "grad is %lldx%lld, weight is "
                                             "%lldx%lld",
                         (long long)grad->rows, (long long)grad->cols,
                         (long long)weight->rows, (long long)weight->cols);
    if (!isfinite(lr) || !(lr >= 0))
        return owl__fail(ctx, OWL_ERR_INVALID_ARGUMENT,
                         "lr is %g; it must be finite and >= 0", lr);
    return OWL_OK;
}

static owl_status check_grad_finite(owl_adamw *a, const owl_tensor *grad)
{
    if (owl__all_finite(a->ctx, grad))
        return OWL_OK;
    return owl__fail(a->ctx, OWL_ERR_NONFINITE,
                     "grad (%lldx%lld) contains NaN or Inf; the step was "
                     "skipped and nothing changed",
                     (long long)grad->rows, (long long)grad->cols);
}

/* ---- full rank ------------------------------------------------------- */

typedef struct {
    owl_adamw *a;
    const owl_tensor *w;
    const owl_tensor *g;
    moment_coeffs mc;
    weight_coeffs wc;
    rounding rd;
} full_job;

static void full_range(void *arg, int64_t begin, int64_t end)
{
    const full_job *job = arg;
    const owl_tensor *wt = job->w;
    const int64_t cols = wt->cols;
    const weight_coeffs wc = job->wc;
    float gb[CHUNK], wb[CHUNK], mb[CHUNK], vb[CHUNK], nb[CHUNK];
    for (int64_t i = begin; i < end; i++) {
        for (int64_t j0 = 0; j0 < cols; j0 += CHUNK) {
            int64_t cnt = cols - j0 < CHUNK ? cols - j0 : CHUNK;
            size_t off = (size_t)i * (size_t)cols + (size_t)j0;
            const float *g = load_chunk(job->g, i, j0, cnt, gb);
            float *m, *v;
            load_moments(job->a, off, cnt, mb, vb, &m, &v);
            moments_chunk(&job->mc, g, m, v, nb, cnt);
            store_moments(job->a, off, cnt, m, v);
            float *w = (float *)load_chunk(wt, i, j0, cnt, wb);
            for (int64_t k = 0; k < cnt; k++) {
                float x = w[k] * wc.pre;
                x = x + wc.step * nb[k];
                w[k] = x + wc.post * x;
            }
            store_chunk(wt, i, j0, cnt, w, &job->rd);
        }
    }
}

static rounding rounding_for(const owl_adamw *a, const owl_tensor *weight,
                             uint64_t draw)
{
    rounding rd = {a->opts.rounding == OWL_ROUND_STOCHASTIC &&
                       weight->dtype == OWL_DTYPE_BF16,
                   a->opts.seed, draw};
    return rd;
}

owl_status owl_adamw_full(owl_adamw *a, owl_tensor *weight,
                          const owl_tensor *grad, double lr)
{
    if (a == NULL)
        return OWL_ERR_NULL_POINTER;
    owl__clear_error(a->ctx);
    owl_status s = check_step_args(a, weight, grad, lr);
    if (s != OWL_OK)
        return s;
    if (weight->rows != a->rows || weight->cols != a->cols)
        return owl__fail(a->ctx, OWL_ERR_MISMATCH,
                         "weight is %lldx%lld but the optimizer's moments are "
                         "%lldx%lld",
                         (long long)weight->rows, (long long)weight->cols,
                         (long long)a->rows, (long long)a->cols);
    if ((s = check_grad_finite(a, grad)) != OWL_OK)
        return s;

    uint64_t draw = a->step_count;
    a->step_count++;
    a->bias_step++;
    full_job job = {.a = a, .w = weight, .g = grad,
                    .rd = rounding_for(a, weight, draw)};
    set_coeffs(a, lr, &job.mc, &job.wc);
    owl__parallel_for(a->ctx, weight->rows, row_grain(weight->cols),
                      full_range, &job);
    return OWL_OK;
}

/* ---- low rank -------------------------------------------------------- */

typedef struct {
    owl_adamw *a;
    float *r; /* R in, N out: dense rows x cols */
    moment_coeffs mc;
} lowrank_job;

static void lowrank_range(void *arg, int64_t begin, int64_t end)
{
    const lowrank_job *job = arg;
    const int64_t cols = job->a->cols;
    float mb[CHUNK], vb[CHUNK];
    for (int64_t i = begin; i < end; i++) {
        for (int64_t j0 = 0; j0 < cols; j0 += CHUNK) {
            int64_t cnt = cols - j0 < CHUNK ? cols - j0 : CHUNK;
            size_t off = (size_t)i * (size_t)cols + (size_t)j0;
            float *x = job->r + off;
            float *m, *v;
            load_moments(job->a, off, cnt, mb, vb, &m, &v);
            moments_chunk(&job->mc, x, m, v, x, cnt);
            store_moments(job->a, off, cnt, m, v);
        }
    }
}

typedef struct {
    const owl_tensor *w;
    const float *s; /* step * alpha * back(N) for the block, stride cols */
    int64_t row0;
    weight_coeffs wc;
    rounding rd;
} apply_job;

static void apply_range(void *arg, int64_t begin, int64_t end)
{
    const apply_job *job = arg;
    const int64_t cols = job->w->cols;
    const weight_coeffs wc = job->wc;
    float wb[CHUNK];
    for (int64_t i = begin; i < end; i++) {
        int64_t row = job->row0 + i;
        for (int64_t j0 = 0; j0 < cols; j0 += CHUNK) {
            int64_t cnt = cols - j0 < CHUNK ? cols - j0 : CHUNK;
            const float *s = job->s + i * cols + j0;
            float *w = (float *)load_chunk(job->w, row, j0, cnt, wb);
            for (int64_t k = 0; k < cnt; k++) {
                float x = w[k] * wc.pre;
                x = x + s[k];
                w[k] = x + wc.post * x;
            }
            store_chunk(job->w, row, j0, cnt, w, &job->rd);
        }
    }
}

/* W = pre*W + step*alpha*back(N), then the GALORE decay. */
static void apply_lowrank(owl_adamw *a, owl_galore *p, owl_tensor *weight,
                          weight_coeffs wc, uint64_t draw)
{
    const float *n = p->lowrank;
    const int64_t ldn = p->lr_cols;
    if (weight->dtype == OWL_DTYPE_F32 && weight->row_stride <= INT_MAX) {
        /* One GEMM updates W in place: both decays fold into beta,
         * W' = (pre*W + s)(1 + post) = beta*W + alpha*back(N). */
        double keep = (double)wc.pre * (1.0 + (double)wc.post);
        double alpha = (double)wc.step * (double)p->scale * (1.0 + wc.post);
        owl__galore_back_rows(p, n, ldn, 0, p->m, (float)alpha, (float)keep,
                              weight->data, weight->row_stride);
        return;
    }
    /* Half weights: a cache-sized block of rows at a time through the f32
     * scratch, then one fused read-modify-round-write of those rows. */
    float alpha = (float)((double)wc.step * (double)p->scale);
    float *block = owl__galore_block(p);
    for (int64_t row0 = 0; row0 < p->m; row0 += p->block_rows) {
        int64_t rows = p->m - row0 < p->block_rows ? p->m - row0
                                                   : p->block_rows;
        owl__galore_back_rows(p, n, ldn, row0, rows, alpha, 0.0f, block,
                              p->n);
        apply_job job = {weight, block, row0, wc,
                         rounding_for(a, weight, draw)};
        owl__parallel_for(a->ctx, rows, row_grain(p->n), apply_range, &job);
    }
}

owl_status owl_adamw_lowrank(owl_adamw *a, owl_galore *p, owl_tensor *weight,
                             const owl_tensor *grad, double lr)
{
    if (a == NULL)
        return OWL_ERR_NULL_POINTER;
    owl_context *ctx = a->ctx;
    owl__clear_error(ctx);
    OWL_REQUIRE_PTR(ctx, p);
    if (p->ctx != ctx)
        return owl__fail(ctx, OWL_ERR_MISMATCH,
                         "the projector and the optimizer belong to different "
                         "contexts");
    if (a->rows != p->lr_rows || a->cols != p->lr_cols)
        return owl__fail(ctx, OWL_ERR_MISMATCH,
                         "the optimizer's moments are %lldx%lld but the "
                         "projector's low-rank shape is %lldx%lld (%s, "
                         "%lldx%lld weight, rank %lld)",
                         (long long)a->rows, (long long)a->cols,
                         (long long)p->lr_rows, (long long)p->lr_cols,
                         p->left ? "left" : "right", (long long)p->m,
                         (long long)p->n, (long long)p->r);
    owl_status s = check_step_args(a, weight, grad, lr);
    if (s != OWL_OK)
        return s;
    if (weight->rows != p->m || weight->cols != p->n)
        return owl__fail(ctx, OWL_ERR_SHAPE,
                         "weight is %lldx%lld, the projector is for %lldx%lld",
                         (long long)weight->rows, (long long)weight->cols,
                         (long long)p->m, (long long)p->n);
    if ((s = check_grad_finite(a, grad)) != OWL_OK)
        return s;

    /* R = project(G), refreshing the subspace when due: the last thing that
     * can fail, and it changes nothing when it does. */
    uint64_t iter = a->step_count;
    bool refreshed = false;
    s = owl__galore_project_f32(p, iter, grad, p->lowrank, p->lr_cols,
                                &refreshed);
    if (s != OWL_OK)
        return s;
    if (refreshed && a->opts.on_refresh == OWL_MOMENTS_RESET)
        zero_moments(a);
    a->step_count++;
    a->bias_step++;

    lowrank_job job = {.a = a, .r = p->lowrank};
    weight_coeffs wc;
    set_coeffs(a, lr, &job.mc, &wc);
    owl__parallel_for(ctx, a->rows, row_grain(a->cols), lowrank_range, &job);
    apply_lowrank(a, p, weight, wc, iter);
    return OWL_OK;
}
