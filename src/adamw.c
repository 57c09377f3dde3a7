/* AdamW: full-rank and fused GaLore low-rank steps.
 *
 * Both steps are one pass over the moments: read m, v (f32 or bf16) and G,
 * update m and v, form the normalised step N and (full rank) apply it to
 * the weight, all in registers, converting what is not f32 on the way in
 * and out (f16 or stochastically rounded weights go through L1-sized
 * chunks instead). The low-rank step writes N over the projected gradient
 * and fuses the weight update into the back-projection GEMM. Every loop is split by rows across the context's
 * threads, and nothing depends on the split: stochastic rounding draws its
 * bits from (seed, step, element index). */
#include "galore_internal.h"
#include "dtype.h"
#ifdef OWL_HAVE_CUDA
#include "cuda_adamw_lod.h"
#include "cuda_galore.h"
#endif

#include <limits.h>
#include <math.h>
#include <string.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

/* The per-element kernels are portable C, written so compilers vectorise
 * them for the baseline the build targets (SSE2 on x86-64). On x86-64 the
 * range functions also exist in an AVX2 build, picked at run time when the
 * CPU has AVX2, whose hottest loops are written with intrinsics (the bf16
 * conversions, which compilers vectorise poorly). Every variant does the
 * same f32 operations in the same order; nothing enables FMA and ISO C
 * mode contracts nothing, so all variants round identically. */
#define OWL_KERNEL static inline __attribute__((always_inline))
#if defined(__GNUC__) && defined(__x86_64__) && !defined(OWL_PORTABLE_ONLY)
#define OWL_X86_AVX2 1
#define OWL_AVX2_KERNEL                                                       \
    static inline __attribute__((always_inline, target("avx2")))
#endif

#ifdef OWL_X86_AVX2
/* A range function `name` from `name##_body`, plus its AVX2 twin; the
 * body's last argument says which one it is compiled into. */
#define OWL_RANGE_FN(name)                                                    \
    static void name(void *arg, int64_t begin, int64_t end)                   \
    {                                                                         \
        name##_body(arg, begin, end, false);                                  \
    }                                                                         \
    __attribute__((target("avx2"))) static void name##_avx2(                  \
        void *arg, int64_t begin, int64_t end)                                \
    {                                                                         \
        name##_body(arg, begin, end, true);                                   \
    }
#define OWL_PICK(name) (cpu_has_avx2() ? name##_avx2 : name)
static bool cpu_has_avx2(void)
{
#ifdef __AVX2__
    return true;
#else
    __builtin_cpu_init(); /* idempotent; cheap after the first call */
    return __builtin_cpu_supports("avx2");
#endif
}
#else
#define OWL_RANGE_FN(name)                                                    \
    static void name(void *arg, int64_t begin, int64_t end)                   \
    {                                                                         \
        name##_body(arg, begin, end, false);                                  \
    }
#define OWL_PICK(name) (name)
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

/* One set of rules for AdamW's options, shared by owl_adamw_create, the
 * optimizer and the memory planner. `prefix` names the struct in messages
 * ("owl_adamw_options." or "owl_optimizer_options.adamw->"). */
owl_status owl__adamw_check_options(owl_context *ctx,
                                    const owl_adamw_options *o,
                                    const char *prefix)
{
    if (!(o->beta1 >= 0 && o->beta1 < 1))
        return owl__fail(ctx, OWL_ERR_INVALID_ARGUMENT,
                         "%sbeta1 is %g; it must be in [0, 1)",
                         prefix, o->beta1);
    if (!(o->beta2 >= 0 && o->beta2 < 1))
        return owl__fail(ctx, OWL_ERR_INVALID_ARGUMENT,
                         "%sbeta2 is %g; it must be in [0, 1)",
                         prefix, o->beta2);
    if (!isfinite(o->eps) || !((float)o->eps > 0) || !isfinite((float)o->eps))
        return owl__fail(ctx, OWL_ERR_INVALID_ARGUMENT,
                         "%seps is %g; it must be > 0 and "
                         "finite in f32",
                         prefix, o->eps);
    if (!isfinite(o->weight_decay) || !(o->weight_decay >= 0))
        return owl__fail(ctx, OWL_ERR_INVALID_ARGUMENT,
                         "%sweight_decay is %g; it must be "
                         "finite and >= 0",
                         prefix, o->weight_decay);
    if (o->semantics != OWL_ADAMW_GALORE && o->semantics != OWL_ADAMW_TORCH)
        return owl__fail(ctx, OWL_ERR_INVALID_ARGUMENT,
                         "%ssemantics is %d; expected "
                         "OWL_ADAMW_GALORE or OWL_ADAMW_TORCH",
                         prefix, (int)o->semantics);
    if (o->moment_dtype != OWL_DTYPE_F32 && o->moment_dtype != OWL_DTYPE_BF16)
        return owl__fail(ctx, OWL_ERR_DTYPE,
                         "%smoment_dtype is %s (%d); expected "
                         "f32 or bf16",
                         prefix, owl__dtype_name(o->moment_dtype),
                         (int)o->moment_dtype);
    if (o->on_refresh != OWL_MOMENTS_KEEP && o->on_refresh != OWL_MOMENTS_RESET)
        return owl__fail(ctx, OWL_ERR_INVALID_ARGUMENT,
                         "%son_refresh is %d; expected "
                         "OWL_MOMENTS_KEEP or OWL_MOMENTS_RESET",
                         prefix, (int)o->on_refresh);
    if (o->rounding != OWL_ROUND_NEAREST && o->rounding != OWL_ROUND_STOCHASTIC)
        return owl__fail(ctx, OWL_ERR_INVALID_ARGUMENT,
                         "%srounding is %d; expected "
                         "OWL_ROUND_NEAREST or OWL_ROUND_STOCHASTIC",
                         prefix, (int)o->rounding);
    return OWL_OK;
}

static size_t moment_bytes(const owl_adamw *a)
{
    return (size_t)a->rows * (size_t)a->cols *
           owl__dtype_size(a->opts.moment_dtype);
}

#ifdef OWL_HAVE_CUDA
/* true when the handle's state lives on a CUDA device. */
static bool on_cuda(const owl_adamw *a)
{
    return a->ctx->backend == OWL_BACKEND_CUDA;
}
#endif

void owl_adamw_free(owl_adamw *a)
{
    if (a == NULL)
        return;
#ifdef OWL_HAVE_CUDA
    if (on_cuda(a)) {
        owl__cuda_adamw_release(a);
        owl__free(a);
        return;
    }
#endif
    owl__free(a->m);
    owl__free(a->v);
    owl__free(a);
}

owl_status owl_adamw_create(owl_context *ctx, const owl_adamw_options *opts,
                            uint64_t rows, uint64_t cols, owl_adamw **out)
{
    if (out != NULL)
        *out = NULL; /* also when ctx is NULL: no stale handle escapes */
    owl_adamw_options o = adamw_defaults;
    owl_status s = owl__create_begin(ctx, out != NULL, opts, &o, sizeof o,
                                     "owl_adamw_options");
    if (s != OWL_OK)
        return s;
    if ((s = owl__adamw_check_options(ctx, &o, "owl_adamw_options.")) !=
        OWL_OK)
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
#ifdef OWL_HAVE_CUDA
    if (on_cuda(a)) {
        if ((s = owl__cuda_adamw_alloc(a)) != OWL_OK) {
            owl__free(a);
            return s;
        }
        *out = a;
        return OWL_OK;
    }
#endif
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
    if (a == NULL)
        return 0;
#ifdef OWL_HAVE_CUDA
    /* The device knows which steps it skipped: ask it (this waits). A
     * failed download leaves its message on the context and returns the
     * count of calls. */
    uint64_t t;
    if (on_cuda(a) && owl__cuda_adamw_bias_step(a, &t) == OWL_OK)
        return t;
#endif
    return a->bias_step;
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
#ifdef OWL_HAVE_CUDA
    if (on_cuda(a))
        return owl__cuda_adamw_reset(a);
#endif
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
#ifdef OWL_HAVE_CUDA
    if (on_cuda(a))
        return owl__cuda_adamw_get_moment(a, which, out);
#endif
    owl_tensor src;
    owl_tensor_init(&src, which == 0 ? a->m : a->v, a->opts.moment_dtype,
                    a->rows, a->cols);
    for (int64_t i = 0; i < a->rows; i++)
        owl__load_row_f32(&src, i, (float *)owl__row_ptr(out, i));
    return OWL_OK;
}

/* ---- the per-element arithmetic -------------------------------------- */

/* How the first moment is updated: GALORE's EMA, or torch's lerp, whose
 * formula depends on the weight (see moments_pass). */
enum { FORM_GALORE, FORM_LERP_SMALL, FORM_LERP_LARGE };

typedef struct {
    bool torch;
    int form;
    float b1, b2, omb1, omb2, eps;
    float keep1;    /* 1 - omb1, as f32 */
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
    mc->keep1 = 1.0f - mc->omb1;
    mc->bc2_sqrt = (float)sqrt(bc2);
    mc->form = !mc->torch ? FORM_GALORE
               : mc->omb1 < 0.5f ? FORM_LERP_SMALL
                                 : FORM_LERP_LARGE;
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

/* owl_f32_to_bf16 without its branch, so loops storing bf16 vectorise:
 * round to nearest even, and a NaN keeps its top bits with the quiet bit
 * set ((u | 2^22) >> 16 == (u >> 16) | 0x40). The NaN test is a float
 * compare and the choice a mask, which keeps compilers in 32-bit lanes. */
OWL_KERNEL uint16_t bf16_nearest(float f)
{
    uint32_t u = owl__f32_bits(f);
    uint32_t rounded = u + 0x7fffu + ((u >> 16) & 1u);
    uint32_t quiet = u | 0x00400000u;
    uint32_t nan = 0u - (uint32_t)(f != f);
    uint32_t r = (rounded & ~nan) | (quiet & nan);
    return (uint16_t)(r >> 16);
}

/* Element k of an f32 array, or of a bf16 one when `half`, as f32. */
OWL_KERNEL float elem_at(const void *base, int64_t k, bool half)
{
    return half ? owl_bf16_to_f32(((const uint16_t *)base)[k])
                : ((const float *)base)[k];
}

/* Stores x there, rounded to nearest even for bf16. */
OWL_KERNEL void elem_put(void *base, int64_t k, float x, bool half)
{
    if (half)
        ((uint16_t *)base)[k] = bf16_nearest(x);
    else
        ((float *)base)[k] = x;
}

/* One element of the AdamW update: m and v from g, and the normalised
 * step returned. The TORCH first moment is torch's lerp, branch for
 * branch, so results match torch.optim.AdamW as closely as f32 allows. */
OWL_KERNEL float adam_element(const moment_coeffs *c, float g, float *m,
                              float *v, const int form)
{
    float mk = *m, vk = *v;
    if (form == FORM_GALORE)
        mk = c->b1 * mk + c->omb1 * g;
    else if (form == FORM_LERP_SMALL)
        mk = mk + c->omb1 * (g - mk);
    else
        mk = g - (g - mk) * c->keep1;
    vk = c->b2 * vk + c->omb2 * (g * g);
    float root = sqrtf(vk);
    *m = mk;
    *v = vk;
    return form == FORM_GALORE ? mk / (root + c->eps)
                               : mk / (root / c->bc2_sqrt + c->eps);
}

/* Updates `count` moments at m, v (f32, or bf16 when `half`) from g and
 * writes the normalised step to n, or over g when n is NULL. One pass with
 * everything in registers; `form` and `half` are constants at every call
 * (see update_moments), so each combination is its own branch-free loop
 * that vectorises (sqrtf too, under -fno-math-errno). */
OWL_KERNEL void moments_pass(const moment_coeffs *c, void *m, void *v,
                             const float *g, float *n, int64_t count,
                             const int form, const bool half)
{
    const moment_coeffs cc = *c;
    float *out = n != NULL ? n : (float *)g;
    for (int64_t k = 0; k < count; k++) {
        float mk = elem_at(m, k, half), vk = elem_at(v, k, half);
        out[k] = adam_element(&cc, g[k], &mk, &vk, form);
        elem_put(m, k, mk, half);
        elem_put(v, k, vk, half);
    }
}

#define MOMENTS_FORMS(half, in_place)                                         \
    switch (c->form) {                                                        \
    case FORM_GALORE:                                                         \
        moments_pass(c, m, v, g, in_place ? NULL : n, count, FORM_GALORE,     \
                     half);                                                   \
        break;                                                                \
    case FORM_LERP_SMALL:                                                     \
        moments_pass(c, m, v, g, in_place ? NULL : n, count,                  \
                     FORM_LERP_SMALL, half);                                  \
        break;                                                                \
    default:                                                                  \
        moments_pass(c, m, v, g, in_place ? NULL : n, count,                  \
                     FORM_LERP_LARGE, half);                                  \
        break;                                                                \
    }

/* Moments of elements [off, off+count): updated from g, with the step
 * written to n, or over g when n == g (the low-rank step). */
OWL_KERNEL void update_moments(const owl_adamw *a, const moment_coeffs *c,
                               size_t off, const float *g, float *n,
                               int64_t count)
{
    bool in_place = n == g;
    if (a->opts.moment_dtype == OWL_DTYPE_BF16) {
        uint16_t *m = (uint16_t *)a->m + off, *v = (uint16_t *)a->v + off;
        if (in_place) {
            MOMENTS_FORMS(true, true)
        } else {
            MOMENTS_FORMS(true, false)
        }
    } else {
        float *m = (float *)a->m + off, *v = (float *)a->v + off;
        if (in_place) {
            MOMENTS_FORMS(false, true)
        } else {
            MOMENTS_FORMS(false, false)
        }
    }
}

/* Element (i, j0..) of t as f32: the data itself for f32, else converted. */
OWL_KERNEL const float *load_chunk(const owl_tensor *t, int64_t i, int64_t j0,
                               int64_t count, float *buf)
{
    if (t->dtype == OWL_DTYPE_F32)
        return (const float *)owl__row_ptr(t, i) + j0;
    owl__load_span_f32(t, i, j0, count, buf);
    return buf;
}

typedef struct {
    bool stochastic; /* bf16 weights only */
    uint64_t seed, draw;
} rounding;

/* Writes count f32 values to weight elements (i, j0..). Stochastic bf16
 * rounding takes 16 random bits per element from one 64-bit hash per four
 * consecutive flat indices i*cols + j: a pure function of (seed, step,
 * index), so any thread split gives the same bits. */
OWL_KERNEL void store_chunk(const owl_tensor *t, int64_t i, int64_t j0,
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
    s = owl__check_disjoint(ctx, weight, "weight", grad, "grad");
    if (s != OWL_OK)
        return s;
    if (!isfinite(lr) || !(lr >= 0))
        return owl__fail(ctx, OWL_ERR_INVALID_ARGUMENT,
                         "lr is %g; it must be finite and >= 0", lr);
    return OWL_OK;
}

static owl_status nonfinite_grad(owl_adamw *a, const owl_tensor *grad)
{
    a->ctx->nonfinite_skips++;
    return owl__fail(a->ctx, OWL_ERR_NONFINITE,
                     "grad (%lldx%lld) contains NaN, Inf or an entry of "
                     "magnitude 2^48 or more (its square could overflow the "
                     "f32 moments); the step was skipped and nothing "
                     "changed",
                     (long long)grad->rows, (long long)grad->cols);
}

/* ---- full rank ------------------------------------------------------- */

/* The full step's unit of work: a span of at most SPAN elements of one
 * row, so a single long row (a 1 x n parameter) still splits across the
 * threads. Each element's arithmetic is independent of the others, so the
 * split changes no result. */
#define SPAN 16384 /* a multiple of CHUNK and of the AVX2 loops' 16 */

typedef struct {
    int64_t cols, per_row; /* spans per row */
} spans;

typedef struct {
    int64_t row, j0, count;
} span;

static spans spans_for(int64_t cols)
{
    spans s = {cols, (cols + SPAN - 1) / SPAN};
    return s;
}

static inline span span_of(const spans *s, int64_t u)
{
    span sp;
    sp.row = u / s->per_row;
    sp.j0 = (u % s->per_row) * SPAN;
    sp.count = s->cols - sp.j0 < SPAN ? s->cols - sp.j0 : SPAN;
    return sp;
}

/* Units of spans_for(cols) per thread chunk, at least: GRAIN_ELEMS. */
static int64_t span_grain(int64_t cols)
{
    int64_t per_unit = cols < SPAN ? cols : SPAN;
    return per_unit >= GRAIN_ELEMS ? 1 : GRAIN_ELEMS / per_unit;
}

typedef struct {
    const owl_tensor *t;
    spans sp;
    int bad; /* written only as 0 -> 1; read after the join */
} finite_job;

/* Outside the step range (owl__grad_in_range): NaN, Inf or a magnitude of
 * OWL_STEP_LIMIT or more, per storage format (f16's largest finite value
 * is below the limit: only its Inf and NaN are out). */
static void finite_range(void *arg, int64_t begin, int64_t end)
{
    finite_job *job = arg;
    const owl_tensor *t = job->t;
    bool bad = false;
    for (int64_t u = begin; u < end; u++) {
        span sp = span_of(&job->sp, u);
        if (t->dtype == OWL_DTYPE_F32) {
            bad |= owl__f32_outside_step(
                (const float *)owl__row_ptr(t, sp.row) + sp.j0, sp.count);
            continue;
        }
        const uint16_t *h = (const uint16_t *)owl__row_ptr(t, sp.row) + sp.j0;
        unsigned acc = 0;
        if (t->dtype == OWL_DTYPE_BF16)
            for (int64_t k = 0; k < sp.count; k++)
                acc |= (h[k] & 0x7fffu) >= 0x5780u;
        else
            for (int64_t k = 0; k < sp.count; k++)
                acc |= (h[k] & 0x7c00u) == 0x7c00u;
        bad |= acc != 0;
    }
    if (bad)
        __atomic_store_n(&job->bad, 1, __ATOMIC_RELAXED);
}

/* owl__grad_in_range, split into row spans like the full step. */
static bool grad_all_finite(owl_context *ctx, const owl_tensor *g)
{
    finite_job job = {g, spans_for(g->cols), 0};
    owl__parallel_for(ctx, g->rows * job.sp.per_row, span_grain(g->cols),
                      finite_range, &job);
    return __atomic_load_n(&job.bad, __ATOMIC_RELAXED) == 0;
}

typedef struct {
    owl_adamw *a;
    const owl_tensor *w;
    const owl_tensor *g;
    moment_coeffs mc;
    weight_coeffs wc;
    rounding rd;
    spans sp;
} full_job;

/* The whole update of `count` elements in one pass: G and W f32 or bf16
 * (half_g, half_w; W rounded to nearest), moments f32 or bf16 (half_m).
 * All flags are constants at each call (full_row), so every combination
 * is its own vectorised loop. Per element this is exactly the arithmetic
 * of the chunked path below, in the same order. */
OWL_KERNEL void full_pass(const moment_coeffs *c, weight_coeffs wc,
                          const void *g, void *w, void *m, void *v,
                          int64_t count, const int form, const bool half_m,
                          const bool half_g, const bool half_w)
{
    const moment_coeffs cc = *c;
    for (int64_t k = 0; k < count; k++) {
        float mk = elem_at(m, k, half_m), vk = elem_at(v, k, half_m);
        float n = adam_element(&cc, elem_at(g, k, half_g), &mk, &vk, form);
        elem_put(m, k, mk, half_m);
        elem_put(v, k, vk, half_m);
        float x = elem_at(w, k, half_w) * wc.pre;
        x = x + wc.step * n;
        elem_put(w, k, x + wc.post * x, half_w);
    }
}

/* Calls pass(c, wc, g, w, m, v, count, form, half_m, half_g, half_w) with
 * the form and the three dtype flags as constants. */
#define FULL_PASS_W(pass, form, hm, hg)                                       \
    if (half_w)                                                               \
        pass(c, wc, g, w, m, v, count, form, hm, hg, true);                   \
    else                                                                      \
        pass(c, wc, g, w, m, v, count, form, hm, hg, false);
#define FULL_PASS_G(pass, form, hm)                                           \
    if (half_g) {                                                             \
        FULL_PASS_W(pass, form, hm, true)                                     \
    } else {                                                                  \
        FULL_PASS_W(pass, form, hm, false)                                    \
    }
#define FULL_PASS_M(pass, form)                                               \
    if (half_m) {                                                             \
        FULL_PASS_G(pass, form, true)                                         \
    } else {                                                                  \
        FULL_PASS_G(pass, form, false)                                        \
    }
#define FULL_PASS_SWITCH(pass)                                                \
    switch (c->form) {                                                        \
    case FORM_GALORE:                                                         \
        FULL_PASS_M(pass, FORM_GALORE)                                        \
        break;                                                                \
    case FORM_LERP_SMALL:                                                     \
        FULL_PASS_M(pass, FORM_LERP_SMALL)                                    \
        break;                                                                \
    default:                                                                  \
        FULL_PASS_M(pass, FORM_LERP_LARGE)                                    \
        break;                                                                \
    }

/* full_pass over one row, with the dtypes and form made constants. */
OWL_KERNEL void full_row(const moment_coeffs *c, weight_coeffs wc,
                         const void *g, void *w, void *m, void *v,
                         int64_t count, bool half_m, bool half_g, bool half_w)
{
    FULL_PASS_SWITCH(full_pass)
}

#ifdef OWL_X86_AVX2
/* ---- AVX2: eight elements at a time ---------------------------------- */

/* The coefficients broadcast to all lanes. */
typedef struct {
    __m256 b1, b2, omb1, omb2, keep1, eps, bc2_sqrt, pre, step, post;
} coeffs8;

OWL_AVX2_KERNEL coeffs8 broadcast_coeffs(const moment_coeffs *c,
                                         weight_coeffs wc)
{
    coeffs8 v = {_mm256_set1_ps(c->b1),    _mm256_set1_ps(c->b2),
                 _mm256_set1_ps(c->omb1),  _mm256_set1_ps(c->omb2),
                 _mm256_set1_ps(c->keep1), _mm256_set1_ps(c->eps),
                 _mm256_set1_ps(c->bc2_sqrt), _mm256_set1_ps(wc.pre),
                 _mm256_set1_ps(wc.step),  _mm256_set1_ps(wc.post)};
    return v;
}

/* adam_element on eight lanes, operation for operation. */
OWL_AVX2_KERNEL __m256 adam8(const coeffs8 *c, __m256 g, __m256 *m,
                             __m256 *v, const int form)
{
    __m256 mk = *m;
    if (form == FORM_GALORE)
        mk = _mm256_add_ps(_mm256_mul_ps(c->b1, mk), _mm256_mul_ps(c->omb1, g));
    else if (form == FORM_LERP_SMALL)
        mk = _mm256_add_ps(mk, _mm256_mul_ps(c->omb1, _mm256_sub_ps(g, mk)));
    else
        mk = _mm256_sub_ps(g, _mm256_mul_ps(_mm256_sub_ps(g, mk), c->keep1));
    __m256 vk = _mm256_add_ps(_mm256_mul_ps(c->b2, *v),
                              _mm256_mul_ps(c->omb2, _mm256_mul_ps(g, g)));
    __m256 root = _mm256_sqrt_ps(vk);
    *m = mk;
    *v = vk;
    if (form == FORM_GALORE)
        return _mm256_div_ps(mk, _mm256_add_ps(root, c->eps));
    return _mm256_div_ps(
        mk, _mm256_add_ps(_mm256_div_ps(root, c->bc2_sqrt), c->eps));
}

OWL_AVX2_KERNEL const void *skip(const void *base, int64_t k, bool half)
{
    return (const char *)base + (size_t)k * (half ? 2u : 4u);
}

/* Sixteen elements as two vectors in "lane order": lo holds elements 0-3
 * and 8-11, hi 4-7 and 12-15. That is the order in which AVX2 unpacks and
 * packs 16-bit values within its 128-bit lanes, so a bf16 array loads with
 * one unpack per vector and stores with one pack per two; f32 arrays are
 * permuted into the same order. Lanes are independent, so the order does
 * not matter as long as every array uses it. */
OWL_AVX2_KERNEL void load16(const void *base, int64_t k, const bool half,
                            __m256 *lo, __m256 *hi)
{
    if (half) {
        __m256i x = _mm256_loadu_si256(
            (const __m256i *)((const uint16_t *)base + k));
        __m256i zero = _mm256_setzero_si256();
        *lo = _mm256_castsi256_ps(_mm256_unpacklo_epi16(zero, x));
        *hi = _mm256_castsi256_ps(_mm256_unpackhi_epi16(zero, x));
        return;
    }
    __m256 a = _mm256_loadu_ps((const float *)base + k);
    __m256 b = _mm256_loadu_ps((const float *)base + k + 8);
    *lo = _mm256_permute2f128_ps(a, b, 0x20);
    *hi = _mm256_permute2f128_ps(a, b, 0x31);
}

/* bf16_nearest on eight lanes, left in the low 16 bits of each lane. */
OWL_AVX2_KERNEL __m256i bf16_nearest_lanes(__m256 x)
{
    __m256i u = _mm256_castps_si256(x);
    __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16),
                                   _mm256_set1_epi32(1));
    __m256i rounded = _mm256_add_epi32(
        _mm256_add_epi32(u, _mm256_set1_epi32(0x7fff)), lsb);
    __m256i quiet = _mm256_or_si256(u, _mm256_set1_epi32(0x00400000));
    __m256 nan = _mm256_cmp_ps(x, x, _CMP_UNORD_Q);
    __m256i r = _mm256_castps_si256(
        _mm256_blendv_ps(_mm256_castsi256_ps(rounded),
                         _mm256_castsi256_ps(quiet), nan));
    return _mm256_srli_epi32(r, 16); /* 0..0xffff: a pack cannot saturate */
}

OWL_AVX2_KERNEL void store16(void *base, int64_t k, __m256 lo, __m256 hi,
                             const bool half)
{
    if (half) {
        __m256i h = _mm256_packus_epi32(bf16_nearest_lanes(lo),
                                        bf16_nearest_lanes(hi));
        _mm256_storeu_si256((__m256i *)((uint16_t *)base + k), h);
        return;
    }
    _mm256_storeu_ps((float *)base + k, _mm256_permute2f128_ps(lo, hi, 0x20));
    _mm256_storeu_ps((float *)base + k + 8,
                     _mm256_permute2f128_ps(lo, hi, 0x31));
}

/* One vector of eight elements of full_pass, operation for operation. */
OWL_AVX2_KERNEL __m256 full_step8(const coeffs8 *c, __m256 g, __m256 w,
                                  __m256 *m, __m256 *v, const int form)
{
    __m256 n = adam8(c, g, m, v, form);
    __m256 x = _mm256_mul_ps(w, c->pre);
    x = _mm256_add_ps(x, _mm256_mul_ps(c->step, n));
    return _mm256_add_ps(x, _mm256_mul_ps(c->post, x));
}

/* full_pass with AVX2: eight elements at a time when everything is f32,
 * sixteen in lane order when anything is bf16; the tail by full_pass. */
OWL_AVX2_KERNEL void full_pass8(const moment_coeffs *c, weight_coeffs wc,
                                const void *g, void *w, void *m, void *v,
                                int64_t count, const int form,
                                const bool half_m, const bool half_g,
                                const bool half_w)
{
    const coeffs8 c8 = broadcast_coeffs(c, wc);
    int64_t k = 0;
    if (half_m || half_g || half_w) {
        for (; k + 16 <= count; k += 16) {
            __m256 g0, g1, w0, w1, m0, m1, v0, v1;
            load16(g, k, half_g, &g0, &g1);
            load16(m, k, half_m, &m0, &m1);
            load16(v, k, half_m, &v0, &v1);
            load16(w, k, half_w, &w0, &w1);
            w0 = full_step8(&c8, g0, w0, &m0, &v0, form);
            w1 = full_step8(&c8, g1, w1, &m1, &v1, form);
            store16(m, k, m0, m1, half_m);
            store16(v, k, v0, v1, half_m);
            store16(w, k, w0, w1, half_w);
        }
    } else {
        for (; k + 8 <= count; k += 8) {
            __m256 mk = _mm256_loadu_ps((const float *)m + k);
            __m256 vk = _mm256_loadu_ps((const float *)v + k);
            __m256 x = full_step8(&c8, _mm256_loadu_ps((const float *)g + k),
                                  _mm256_loadu_ps((const float *)w + k), &mk,
                                  &vk, form);
            _mm256_storeu_ps((float *)m + k, mk);
            _mm256_storeu_ps((float *)v + k, vk);
            _mm256_storeu_ps((float *)w + k, x);
        }
    }
    if (k < count)
        full_pass(c, wc, skip(g, k, half_g), (void *)skip(w, k, half_w),
                  (void *)skip(m, k, half_m), (void *)skip(v, k, half_m),
                  count - k, form, half_m, half_g, half_w);
}

__attribute__((target("avx2"))) static void
full_row_avx2(const moment_coeffs *c, weight_coeffs wc, const void *g,
              void *w, void *m, void *v, int64_t count, bool half_m,
              bool half_g, bool half_w)
{
    FULL_PASS_SWITCH(full_pass8)
}
#endif /* OWL_X86_AVX2 */

/* One pass does it all when G is f32/bf16 and W f32/bf16 rounded to
 * nearest; f16 or stochastically rounded weights go through L1-sized
 * chunks converted on the way in and out. */
static bool full_fusable(const full_job *job)
{
    owl_dtype gd = job->g->dtype, wd = job->w->dtype;
    return (gd == OWL_DTYPE_F32 || gd == OWL_DTYPE_BF16) &&
           (wd == OWL_DTYPE_F32 || wd == OWL_DTYPE_BF16) && !job->rd.stochastic;
}

OWL_KERNEL void full_range_body(void *arg, int64_t begin, int64_t end,
                              const bool avx2)
{
    const full_job *job = arg;
    const owl_tensor *wt = job->w;
    const int64_t cols = wt->cols;
    const weight_coeffs wc = job->wc;
    const bool half_m = job->a->opts.moment_dtype == OWL_DTYPE_BF16;
    const size_t msize = half_m ? 2 : 4;
    if (full_fusable(job)) {
        const bool half_g = job->g->dtype == OWL_DTYPE_BF16;
        const bool half_w = wt->dtype == OWL_DTYPE_BF16;
        const size_t gsize = half_g ? 2 : 4, wsize = half_w ? 2 : 4;
        for (int64_t u = begin; u < end; u++) {
            span sp = span_of(&job->sp, u);
            size_t off = ((size_t)sp.row * (size_t)cols + (size_t)sp.j0) *
                         msize;
            const void *g = (const char *)owl__row_ptr(job->g, sp.row) +
                            (size_t)sp.j0 * gsize;
            void *w = (char *)owl__row_ptr(wt, sp.row) + (size_t)sp.j0 * wsize;
            void *m = (char *)job->a->m + off, *v = (char *)job->a->v + off;
#ifdef OWL_X86_AVX2
            if (avx2) {
                full_row_avx2(&job->mc, wc, g, w, m, v, sp.count, half_m,
                              half_g, half_w);
                continue;
            }
#endif
            full_row(&job->mc, wc, g, w, m, v, sp.count, half_m, half_g,
                     half_w);
        }
        return;
    }
    float gb[CHUNK], wb[CHUNK], nb[CHUNK];
    for (int64_t u = begin; u < end; u++) {
        span sp = span_of(&job->sp, u);
        const int64_t i = sp.row, j1 = sp.j0 + sp.count;
        for (int64_t j0 = sp.j0; j0 < j1; j0 += CHUNK) {
            int64_t cnt = j1 - j0 < CHUNK ? j1 - j0 : CHUNK;
            size_t off = (size_t)i * (size_t)cols + (size_t)j0;
            const float *g = load_chunk(job->g, i, j0, cnt, gb);
            update_moments(job->a, &job->mc, off, g, nb, cnt);
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
OWL_RANGE_FN(full_range)

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
#ifdef OWL_HAVE_CUDA
    /* On the device, a non-finite G skips the step there (no wait). */
    if (on_cuda(a))
        return owl__cuda_adamw_full(a, weight, grad, lr);
#endif
    if (!grad_all_finite(a->ctx, grad))
        return nonfinite_grad(a, grad);

    uint64_t draw = a->step_count;
    a->step_count++;
    a->bias_step++;
    full_job job = {.a = a, .w = weight, .g = grad,
                    .rd = rounding_for(a, weight, draw),
                    .sp = spans_for(weight->cols)};
    set_coeffs(a, lr, &job.mc, &job.wc);
    owl__parallel_for(a->ctx, weight->rows * job.sp.per_row,
                      span_grain(weight->cols), OWL_PICK(full_range), &job);
    return OWL_OK;
}

/* ---- low rank -------------------------------------------------------- */

typedef struct {
    owl_adamw *a;
    float *r; /* R in, N out: dense rows x cols */
    moment_coeffs mc;
} lowrank_job;

OWL_KERNEL void lowrank_range_body(void *arg, int64_t begin, int64_t end,
                              const bool avx2)
{
    const lowrank_job *job = arg;
    const int64_t cols = job->a->cols;
    for (int64_t i = begin; i < end; i++) {
        for (int64_t j0 = 0; j0 < cols; j0 += CHUNK) {
            int64_t cnt = cols - j0 < CHUNK ? cols - j0 : CHUNK;
            size_t off = (size_t)i * (size_t)cols + (size_t)j0;
            float *x = job->r + off;
            update_moments(job->a, &job->mc, off, x, x, cnt);
        }
    }
}
OWL_RANGE_FN(lowrank_range)

typedef struct {
    const owl_tensor *w;
    const float *s; /* step * alpha * back(N) for the block, stride cols */
    int64_t row0;
    weight_coeffs wc;
    rounding rd;
} apply_job;

/* W = pre*W + s, then W += post*W, over `count` elements: W f32 or bf16
 * rounded to nearest (half_w, a constant at each call). */
OWL_KERNEL void apply_pass(weight_coeffs wc, void *w, const float *s,
                           int64_t count, const bool half_w)
{
    for (int64_t k = 0; k < count; k++) {
        float x = elem_at(w, k, half_w) * wc.pre;
        x = x + s[k];
        elem_put(w, k, x + wc.post * x, half_w);
    }
}

#ifdef OWL_X86_AVX2
/* apply_pass with AVX2, sixteen elements at a time in lane order. */
__attribute__((target("avx2"))) static void
apply_row_avx2(weight_coeffs wc, void *w, const float *s, int64_t count,
               bool half_w)
{
    const __m256 pre = _mm256_set1_ps(wc.pre), post = _mm256_set1_ps(wc.post);
    int64_t k = 0;
    if (half_w) {
        for (; k + 16 <= count; k += 16) {
            __m256 w0, w1, s0, s1;
            load16(w, k, true, &w0, &w1);
            load16(s, k, false, &s0, &s1);
            w0 = _mm256_add_ps(_mm256_mul_ps(w0, pre), s0);
            w1 = _mm256_add_ps(_mm256_mul_ps(w1, pre), s1);
            store16(w, k, _mm256_add_ps(w0, _mm256_mul_ps(post, w0)),
                    _mm256_add_ps(w1, _mm256_mul_ps(post, w1)), true);
        }
        apply_pass(wc, (uint16_t *)w + k, s + k, count - k, true);
    } else {
        apply_pass(wc, w, s, count, false);
    }
}
#endif

OWL_KERNEL void apply_range_body(void *arg, int64_t begin, int64_t end,
                                 const bool avx2)
{
    const apply_job *job = arg;
    const owl_tensor *wt = job->w;
    const int64_t cols = wt->cols;
    const weight_coeffs wc = job->wc;
    if ((wt->dtype == OWL_DTYPE_BF16 && !job->rd.stochastic) ||
        wt->dtype == OWL_DTYPE_F32) {
        /* one pass per row, in registers */
        const bool half_w = wt->dtype == OWL_DTYPE_BF16;
        for (int64_t i = begin; i < end; i++) {
            void *w = owl__row_ptr(wt, job->row0 + i);
            const float *s = job->s + i * cols;
#ifdef OWL_X86_AVX2
            if (avx2) {
                apply_row_avx2(wc, w, s, cols, half_w);
                continue;
            }
#endif
            if (half_w)
                apply_pass(wc, w, s, cols, true);
            else
                apply_pass(wc, w, s, cols, false);
        }
        return;
    }
    float wb[CHUNK];
    for (int64_t i = begin; i < end; i++) {
        int64_t row = job->row0 + i;
        for (int64_t j0 = 0; j0 < cols; j0 += CHUNK) {
            int64_t cnt = cols - j0 < CHUNK ? cols - j0 : CHUNK;
            const float *s = job->s + i * cols + j0;
            float *w = (float *)load_chunk(wt, row, j0, cnt, wb);
            for (int64_t k = 0; k < cnt; k++) {
                float x = w[k] * wc.pre;
                x = x + s[k];
                w[k] = x + wc.post * x;
            }
            store_chunk(wt, row, j0, cnt, w, &job->rd);
        }
    }
}
OWL_RANGE_FN(apply_range)

/* Small ranks: each row of W is read and written once, its back-projected
 * step formed chunk by chunk in L1 (lowrank_stream.c) and applied with the
 * arithmetic of apply_range: x = pre*W + s, W = x + post*x. */
typedef struct {
    const owl_galore *p;
    const owl_tensor *w;
    const float *low; /* N, low-rank shape, stride ldl */
    int64_t ldl;
    float alpha; /* step * scale */
    weight_coeffs wc;
    rounding rd;
    owl_stream_combine_fn combine;
    const float *packed; /* owl__galore_stream_pack_back */
} stream_apply_job;

OWL_KERNEL void stream_apply_range_body(void *arg, int64_t begin, int64_t end,
                                        const bool avx2)
{
    const stream_apply_job *job = arg;
    const owl_tensor *wt = job->w;
    const int64_t cols = wt->cols, r = job->p->r;
    const weight_coeffs wc = job->wc;
    const bool half_w = wt->dtype == OWL_DTYPE_BF16;
    const bool fused = wt->dtype == OWL_DTYPE_F32 ||
                       (half_w && !job->rd.stochastic);
    const size_t wsize = owl__dtype_size(wt->dtype);
    float coef[OWL_STREAM_MAX_RANK], sb[CHUNK], wb[CHUNK];
    for (int64_t i = begin; i < end; i++) {
        owl__galore_stream_coefs(job->p, job->low, job->ldl, i, job->alpha,
                                 coef);
        for (int64_t j0 = 0; j0 < cols; j0 += CHUNK) {
            int64_t cnt = cols - j0 < CHUNK ? cols - j0 : CHUNK;
            /* The combine below is compute; ask for W a few chunks ahead
             * meanwhile, so its stream keeps enough misses in flight. */
            if (j0 + 4 * CHUNK < cols) {
                const char *ahead = (const char *)owl__row_ptr(wt, i) +
                                    (size_t)(j0 + 4 * CHUNK) * wsize;
                for (size_t b = 0; b < (size_t)CHUNK * wsize; b += 64)
                    __builtin_prefetch(ahead + b, 1);
            }
            /* whole groups of eight: sb has room for the padding */
            job->combine(coef, r, job->packed + j0 * r, (cnt + 7) / 8, sb);
            if (fused) {
                void *w = (char *)owl__row_ptr(wt, i) + (size_t)j0 * wsize;
#ifdef OWL_X86_AVX2
                if (avx2) {
                    apply_row_avx2(wc, w, sb, cnt, half_w);
                    continue;
                }
#endif
                if (half_w)
                    apply_pass(wc, w, sb, cnt, true);
                else
                    apply_pass(wc, w, sb, cnt, false);
                continue;
            }
            float *w = (float *)load_chunk(wt, i, j0, cnt, wb);
            for (int64_t k = 0; k < cnt; k++) {
                float x = w[k] * wc.pre;
                x = x + sb[k];
                w[k] = x + wc.post * x;
            }
            store_chunk(wt, i, j0, cnt, w, &job->rd);
        }
    }
}
OWL_RANGE_FN(stream_apply_range)

/* W = pre*W + step*alpha*back(N), then the GALORE decay. */
static void apply_lowrank(owl_adamw *a, owl_galore *p, owl_tensor *weight,
                          weight_coeffs wc, uint64_t draw)
{
    const float *n = p->lowrank;
    const int64_t ldn = p->lr_cols;
    if (owl__galore_streams(p)) {
        stream_apply_job job = {
            p, weight, n, ldn, (float)((double)wc.step * (double)p->scale),
            wc, rounding_for(a, weight, draw), owl__stream_combine_fn(),
            owl__galore_stream_pack_back(p, n, ldn)};
        owl__parallel_for(a->ctx, p->m, row_grain(p->n),
                          OWL_PICK(stream_apply_range), &job);
        return;
    }
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
        owl__parallel_for(a->ctx, rows, row_grain(p->n), OWL_PICK(apply_range),
                          &job);
    }
}

owl_status owl_adamw_lowrank(owl_adamw *a, owl_galore *p, owl_tensor *weight,
                             const owl_tensor *grad, double lr)
{
    if (a == NULL)
        return OWL_ERR_NULL_POINTER;
    owl_context *ctx = a->ctx;
    owl__clear_error(ctx);
    if (p == NULL) /* named as in the header */
        return owl__fail(ctx, OWL_ERR_NULL_POINTER, "proj is NULL");
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
#ifdef OWL_HAVE_CUDA
    /* Device step; a non-finite G is skipped on the device (OWL_OK). */
    if (ctx->backend == OWL_BACKEND_CUDA)
        return owl__cuda_adamw_lowrank(a, p, weight, grad, lr);
#endif

    /* R = project(G) into the projector's scratch, refreshing the subspace
     * when due, with G checked for NaN/Inf on the way: the last thing that
     * can fail, and it changes nothing when it does. */
    uint64_t iter = a->step_count;
    bool refreshed = false;
    s = owl__galore_project_f32(p, iter, grad, p->lowrank, p->lr_cols,
                                &refreshed);
    if (s == OWL_ERR_NONFINITE)
        return nonfinite_grad(a, grad);
    if (s != OWL_OK)
        return s;
    if (refreshed && a->opts.on_refresh == OWL_MOMENTS_RESET)
        zero_moments(a);
    a->step_count++;
    a->bias_step++;

    lowrank_job job = {.a = a, .r = p->lowrank};
    weight_coeffs wc;
    set_coeffs(a, lr, &job.mc, &wc);
    owl__parallel_for(ctx, a->rows, row_grain(a->cols),
                      OWL_PICK(lowrank_range), &job);
    apply_lowrank(a, p, weight, wc, iter);
    return OWL_OK;
}
