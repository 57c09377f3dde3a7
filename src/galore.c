/* The GaLore projector handle: subspace, refresh schedule, projections.
 * The handle holds only the r-row bases and the low-rank scratch; the
 * gradient copy, SVD workspace and output blocks are borrowed from the
 * context's shared scratch for the duration of a call (galore_internal.h).
 *
 * The basis is kept as r rows of length d ("vectors as rows"): P^T (r x m)
 * for a left projection, Q (r x n) for a right one, so both sides share the
 * SVD code and every product below is a single sgemm on row-major data. */
#include "galore_internal.h"
#ifdef OWL_HAVE_CUDA
#include "cuda_galore.h"
#endif

#include <cblas.h>
#include <limits.h>
#include <math.h>
#include <string.h>

/* At most this many power iterations: more never helps and a garbage
 * value would hang the first project. */
#define OWL_MAX_POWER_ITERS 100
/* Target size (floats) of a block of the blocked back-projection: 8 MiB,
 * large enough to amortise what each GEMM call costs (repacking the basis,
 * waking BLAS's threads) and small enough to stay in a last-level cache
 * until the rows are stored. It lives in the context scratch, inside the
 * gradient copy's room, so its size costs no memory. */
#define OWL_BLOCK_FLOATS (1 << 21)

static const owl_galore_options galore_defaults = {
    .struct_size = sizeof(owl_galore_options),
    .rows = 0,
    .cols = 0,
    .rank = 128,
    .update_gap = 200,
    .scale = 1.0,
    .proj_type = OWL_PROJ_STD,
    .svd_method = OWL_SVD_EXACT,
    .oversample = 8,
    .power_iters = 2,
    .seed = 0,
};

owl_status owl_galore_options_init(owl_galore_options *opts, uint64_t struct_size)
{
    return owl__init_options(opts, struct_size, &galore_defaults,
                             sizeof galore_defaults);
}

static const char *proj_type_name(owl_proj_type t)
{
    switch (t) {
    case OWL_PROJ_STD: return "STD";
    case OWL_PROJ_REVERSE_STD: return "REVERSE_STD";
    case OWL_PROJ_LEFT: return "LEFT";
    case OWL_PROJ_RIGHT: return "RIGHT";
    default: return "unknown";
    }
}

/* One set of rules for a projector's options, shared by owl_galore_create,
 * the optimizer and the memory planner so they accept the same values.
 * `prefix` names the struct in messages ("owl_galore_options." or
 * "owl_optimizer_options.galore->"). Without check_shape, rows and cols are
 * not known yet: only rank >= 1 is checked, and the caller checks
 * rank <= min(m, n) per matrix. */
owl_status owl__galore_check_options(owl_context *ctx,
                                     const owl_galore_options *o,
                                     const char *prefix, bool check_shape)
{
    if (check_shape && (o->rows < 1 || o->cols < 1))
        return owl__fail(ctx, OWL_ERR_INVALID_ARGUMENT,
                         "%srows x cols is %llux%llu; both must be >= 1",
                         prefix, (unsigned long long)o->rows,
                         (unsigned long long)o->cols);
    if (check_shape && (o->rows > INT32_MAX || o->cols > INT32_MAX))
        return owl__fail(ctx, OWL_ERR_UNSUPPORTED,
                         "%srows x cols is %llux%llu; each must be < 2^31 for "
                         "BLAS/LAPACK",
                         prefix, (unsigned long long)o->rows,
                         (unsigned long long)o->cols);
    uint64_t mn = o->rows < o->cols ? o->rows : o->cols;
    if (o->rank < 1)
        return owl__fail(ctx, OWL_ERR_INVALID_ARGUMENT,
                         "%srank is 0; it must be >= 1", prefix);
    if (check_shape && o->rank > mn)
        return owl__fail(ctx, OWL_ERR_INVALID_ARGUMENT,
                         "%srank is %llu; it must be in [1, min(rows, cols)] "
                         "= [1, %llu] for a %llux%llu weight",
                         prefix, (unsigned long long)o->rank,
                         (unsigned long long)mn, (unsigned long long)o->rows,
                         (unsigned long long)o->cols);
    if (o->update_gap < 1)
        return owl__fail(ctx, OWL_ERR_INVALID_ARGUMENT,
                         "%supdate_gap is 0; it must be >= 1", prefix);
    if (!isfinite(o->scale) || !(o->scale > 0) || !isfinite((float)o->scale) ||
        !((float)o->scale > 0))
        return owl__fail(ctx, OWL_ERR_INVALID_ARGUMENT,
                         "%sscale is %g; it must be a finite value > 0 "
                         "(representable in f32)",
                         prefix, o->scale);
    if (o->proj_type < OWL_PROJ_STD || o->proj_type > OWL_PROJ_RIGHT)
        return owl__fail(ctx, OWL_ERR_INVALID_ARGUMENT,
                         "%sproj_type is %d; expected OWL_PROJ_STD, "
                         "_REVERSE_STD, _LEFT or _RIGHT",
                         prefix, (int)o->proj_type);
    if (o->svd_method != OWL_SVD_EXACT && o->svd_method != OWL_SVD_RANDOMIZED)
        return owl__fail(ctx, OWL_ERR_INVALID_ARGUMENT,
                         "%ssvd_method is %d; expected OWL_SVD_EXACT or "
                         "OWL_SVD_RANDOMIZED",
                         prefix, (int)o->svd_method);
    if (o->power_iters > OWL_MAX_POWER_ITERS)
        return owl__fail(ctx, OWL_ERR_INVALID_ARGUMENT,
                         "%spower_iters is %llu; at most %d are allowed",
                         prefix, (unsigned long long)o->power_iters,
                         OWL_MAX_POWER_ITERS);
    return OWL_OK;
}

void owl_galore_free(owl_galore *p)
{
    if (p == NULL)
        return;
#ifdef OWL_HAVE_CUDA
    if (p->ctx->backend == OWL_BACKEND_CUDA) {
        owl__cuda_galore_free(p);
        owl__free(p);
        return;
    }
#endif
    owl__free(p->basis);
    owl__free(p->next_basis);
    owl__free(p->lowrank);
    owl__free(p);
}

owl_status owl_galore_create(owl_context *ctx, const owl_galore_options *opts,
                             owl_galore **out)
{
    if (out != NULL)
        *out = NULL; /* also when ctx is NULL: no stale handle escapes */
    owl_galore_options o = galore_defaults;
    owl_status s = owl__create_begin(ctx, out != NULL, opts, &o, sizeof o,
                                     "owl_galore_options");
    if (s != OWL_OK)
        return s;
    if ((s = owl__galore_check_options(ctx, &o, "owl_galore_options.",
                                       true)) != OWL_OK)
        return s;

    owl_galore *p = owl__alloc(ctx, 1, sizeof *p, "owl_galore");
    if (p == NULL)
        return OWL_ERR_OUT_OF_MEMORY;
    p->ctx = ctx;
    p->opts = o;
    p->m = (int64_t)o.rows;
    p->n = (int64_t)o.cols;
    p->r = (int64_t)o.rank;
    p->left = owl__galore_projects_left(o.proj_type, o.rows, o.cols);
    p->d = p->left ? p->m : p->n;
    p->lr_rows = p->left ? p->r : p->m;
    p->lr_cols = p->left ? p->n : p->r;
    p->scale = (float)o.scale;
    p->block_rows = OWL_BLOCK_FLOATS / p->n;
    if (p->block_rows < 16)
        p->block_rows = 16;
    if (p->block_rows > p->m)
        p->block_rows = p->m;

#ifdef OWL_HAVE_CUDA
    if (ctx->backend == OWL_BACKEND_CUDA) {
        /* Device basis, low-rank buffer and SVD plan (src/cuda_galore.c). */
        s = owl__cuda_galore_create(p);
        if (s != OWL_OK) {
            owl_galore_free(p);
            return s;
        }
        *out = p;
        return OWL_OK;
    }
#endif
    p->basis = owl__alloc(ctx, (size_t)(p->r * p->d), sizeof(float), "basis");
    p->next_basis = owl__alloc(ctx, (size_t)(p->r * p->d), sizeof(float),
                               "basis");
    p->lowrank = owl__alloc(ctx, (size_t)(p->lr_rows * p->lr_cols),
                            sizeof(float), "low-rank scratch");
    if (!p->basis || !p->next_basis || !p->lowrank) {
        owl_galore_free(p);
        return OWL_ERR_OUT_OF_MEMORY;
    }
    s = owl__svd_init(ctx, &p->svd, o.svd_method, p->m, p->n, p->r, p->left,
                      o.oversample, o.power_iters, o.seed);
    /* The gradient copy (which the back-projection block fits inside, as
     * block_rows <= m), then the SVD workspace at the next 64 bytes. */
    size_t g32_bytes = 0, need = 0;
    if (s == OWL_OK &&
        (owl__mul_overflows((size_t)(p->m * p->n), sizeof(float),
                            &g32_bytes) ||
         __builtin_add_overflow((g32_bytes + 63u) & ~(size_t)63u,
                                p->svd.bytes, &need)))
        s = owl__fail(ctx, OWL_ERR_OUT_OF_MEMORY,
                      "workspace for a %lldx%lld projector: size overflows",
                      (long long)p->m, (long long)p->n);
    if (s == OWL_OK) {
        p->svd_offset = (g32_bytes + 63u) & ~(size_t)63u;
        /* Last, so a failed create leaves the context as it was. */
        s = owl__context_reserve(ctx, need);
    }
    if (s != OWL_OK) {
        owl_galore_free(p);
        return s;
    }
    *out = p;
    return OWL_OK;
}

owl_status owl_galore_lowrank_shape(const owl_galore *p, uint64_t *rows,
                                    uint64_t *cols)
{
    if (p == NULL)
        return OWL_ERR_NULL_POINTER;
    owl__clear_error(p->ctx);
    OWL_REQUIRE_PTR(p->ctx, rows);
    OWL_REQUIRE_PTR(p->ctx, cols);
    *rows = (uint64_t)p->lr_rows;
    *cols = (uint64_t)p->lr_cols;
    return OWL_OK;
}

int32_t owl_galore_is_left(const owl_galore *p)
{
    return p != NULL && p->left ? 1 : 0;
}

uint64_t owl_galore_refresh_count(const owl_galore *p)
{
    return p ? p->refresh_count : 0;
}

/* ---- gradient access ------------------------------------------------- */

/* An f32 tensor BLAS can read in place (its stride fits BLAS's int). */
static bool blas_readable(const owl_tensor *t)
{
    return t->dtype == OWL_DTYPE_F32 && t->row_stride <= INT_MAX;
}

typedef struct {
    const owl_tensor *t;
    float *dst;
    int64_t ld;
    bool check;
    int bad; /* written only as 0 -> 1; read after the join */
} convert_job;

static void convert_range(void *arg, int64_t begin, int64_t end)
{
    convert_job *job = arg;
    bool bad = false;
    for (int64_t i = begin; i < end; i++) {
        float *d = job->dst + i * job->ld;
        owl__load_row_f32(job->t, i, d);
        /* the row is still in L1/L2: checking it here saves a pass over G */
        if (job->check)
            bad |= owl__f32_outside_step(d, job->t->cols);
    }
    if (bad)
        __atomic_store_n(&job->bad, 1, __ATOMIC_RELAXED);
}

/* dst (rows x cols, stride ld) = t as f32, rows split across threads.
 * With `check`, returns false when a value is outside the step range
 * (NaN, Inf or |x| >= OWL_STEP_LIMIT; every row is still converted);
 * otherwise true. */
static bool convert_to_f32(owl_context *ctx, const owl_tensor *t, float *dst,
                           int64_t ld, bool check)
{
    convert_job job = {t, dst, ld, check, 0};
    int64_t grain = t->cols >= 32768 ? 1 : 32768 / t->cols;
    owl__parallel_for(ctx, t->rows, grain, convert_range, &job);
    return __atomic_load_n(&job.bad, __ATOMIC_RELAXED) == 0;
}

static void copy_to_f32(owl_context *ctx, const owl_tensor *t, float *dst,
                        int64_t ld)
{
    convert_to_f32(ctx, t, dst, ld, false);
}

/* Recomputes the subspace from G. *g32_holds_grad says whether the
 * scratch's gradient copy holds G as f32, on entry and on return (gesdd
 * destroys it; a conversion made here fills it). Only a success changes
 * the projector. */
static owl_status compute_subspace(owl_galore *p, const owl_tensor *grad,
                                   bool *g32_holds_grad)
{
    owl_status s;
    float *g32 = owl__galore_g32(p);
    if (p->opts.svd_method == OWL_SVD_EXACT) {
        /* gesdd destroys its input, so even an f32 G is copied. */
        if (!*g32_holds_grad)
            copy_to_f32(p->ctx, grad, g32, p->n);
        *g32_holds_grad = false;
        s = owl__svd_exact(p->ctx, &p->svd, g32, p->next_basis,
                           owl__galore_svd_scratch(p));
    } else {
        const float *g = g32;
        int64_t ldg = p->n;
        if (blas_readable(grad)) {
            g = grad->data;
            ldg = grad->row_stride;
        } else if (!*g32_holds_grad) {
            copy_to_f32(p->ctx, grad, g32, p->n);
            *g32_holds_grad = true;
        }
        /* G at the ends of f32's range: the range finder works on an
         * exactly rescaled copy (svd.h), which no longer holds G. */
        const int shift = owl__svd_safe_shift(g, ldg, p->m, p->n);
        if (shift != 0) {
            if (g != g32)
                copy_to_f32(p->ctx, grad, g32, p->n);
            owl__svd_scale(g32, p->m * p->n, shift);
            *g32_holds_grad = false;
            g = g32;
            ldg = p->n;
        }
        s = owl__svd_randomized(p->ctx, &p->svd, g, ldg, p->refresh_count,
                                p->next_basis, owl__galore_svd_scratch(p));
    }
    if (s != OWL_OK)
        return s;
    if (owl__f32_has_nonfinite(p->next_basis, p->r * p->d))
        return owl__fail(p->ctx, OWL_ERR_NUMERICAL,
                         "the SVD of the %lldx%lld gradient produced "
                         "non-finite vectors",
                         (long long)p->m, (long long)p->n);
    float *t = p->basis;
    p->basis = p->next_basis;
    p->next_basis = t;
    p->has_basis = true;
    p->stale = false;
    p->refresh_count++;
    return OWL_OK;
}

/* R = P^T G (r x n) or G Q^T (m x r). */
static void project_into(const owl_galore *p, const float *g, int64_t ldg,
                         float *dst, int64_t ldd)
{
    int m = (int)p->m, n = (int)p->n, r = (int)p->r;
    if (owl__galore_streams(p))
        owl__galore_stream_project(p, g, ldg, dst, ldd);
    else if (p->left)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, r, n, m, 1.0f,
                    p->basis, m, g, (int)ldg, 0.0f, dst, (int)ldd);
    else
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, r, n, 1.0f, g,
                    (int)ldg, p->basis, n, 0.0f, dst, (int)ldd);
}

/* The streaming projection of an f32 G with its range check in the same
 * pass: a NaN or Inf in G makes R non-finite, so only an R outside the step
 * range makes G scanned (R may also be large from G in range: at most
 * 2^15.5 times G's largest, which AdamW's moments still hold). An entry of
 * G past OWL_STEP_LIMIT that the subspace does not see is taken, unlike on
 * the paths that scan G: the step is safe either way. R goes to the
 * projector's scratch first, so a refused G leaves dst untouched. */
static owl_status stream_project_checked(owl_galore *p, const owl_tensor *grad,
                                         float *dst, int64_t ldd,
                                         bool *refreshed)
{
    owl__galore_stream_project(p, grad->data, grad->row_stride, p->lowrank,
                               p->lr_cols);
    if (owl__f32_outside_step(p->lowrank, p->lr_rows * p->lr_cols) &&
        !owl__grad_in_range(p->ctx, grad))
        return OWL_ERR_NONFINITE;
    if (dst != p->lowrank)
        for (int64_t i = 0; i < p->lr_rows; i++)
            memcpy(dst + i * ldd, p->lowrank + i * p->lr_cols,
                   (size_t)p->lr_cols * sizeof(float));
    *refreshed = false;
    return OWL_OK;
}

owl_status owl__galore_project_f32(owl_galore *p, uint64_t iter,
                                   const owl_tensor *grad, float *dst,
                                   int64_t ldd, bool *refreshed)
{
    bool due = !p->has_basis || p->stale || iter % p->opts.update_gap == 0;
    bool blas = blas_readable(grad);
    float *g32 = owl__galore_g32(p);
    bool held = false; /* g32 holds G */
    if (blas && !due && owl__galore_streams(p))
        return stream_project_checked(p, grad, dst, ldd, refreshed);
    if (blas) {
        /* read in place by BLAS: only the scan */
        if (!owl__grad_in_range(p->ctx, grad))
            return OWL_ERR_NONFINITE;
    } else {
        /* one pass converts G to f32 and checks it */
        if (!convert_to_f32(p->ctx, grad, g32, p->n, true))
            return OWL_ERR_NONFINITE;
        held = true;
    }
    if (due) {
        owl_status s = compute_subspace(p, grad, &held);
        if (s != OWL_OK)
            return s;
    }
    if (blas) {
        project_into(p, grad->data, grad->row_stride, dst, ldd);
    } else {
        if (!held) /* an exact refresh consumed it */
            copy_to_f32(p->ctx, grad, g32, p->n);
        project_into(p, g32, p->n, dst, ldd);
    }
    *refreshed = due;
    return OWL_OK;
}

void owl__galore_back_rows(const owl_galore *p, const float *low, int64_t ldl,
                           int64_t row0, int64_t rows, float alpha, float beta,
                           float *c, int64_t ldc)
{
    int n = (int)p->n, r = (int)p->r;
    if (p->left) /* rows of P R: P[row0.., :] is column block of P^T */
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)rows, n, r,
                    alpha, p->basis + row0, (int)p->m, low, (int)ldl, beta, c,
                    (int)ldc);
    else /* rows of R Q */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)rows, n, r,
                    alpha, low + row0 * ldl, (int)ldl, p->basis, n, beta, c,
                    (int)ldc);
}

/* ---- public projections ---------------------------------------------- */

static owl_status check_grad_tensor(owl_galore *p, const owl_tensor *grad)
{
    owl_status s = owl__check_tensor(p->ctx, grad, "grad", OWL_DT_FLOATS);
    if (s == OWL_OK)
        s = owl__check_shape(p->ctx, grad, "grad", p->m, p->n);
    return s;
}

static owl_status nonfinite_grad(owl_galore *p)
{
    return owl__fail(p->ctx, OWL_ERR_NONFINITE,
                     "grad (%lldx%lld) contains NaN or Inf (or, to project for "
                     "a step, an entry of magnitude 2^48 or more); nothing "
                     "was changed",
                     (long long)p->m, (long long)p->n);
}

owl_status owl_galore_project(owl_galore *p, uint64_t iter,
                              const owl_tensor *grad, owl_tensor *out,
                              int32_t *refreshed)
{
    if (p == NULL)
        return OWL_ERR_NULL_POINTER;
    owl__clear_error(p->ctx);
    owl_status s = owl__check_tensor(p->ctx, out, "out",
                                     OWL_DT_BIT(OWL_DTYPE_F32));
    if (s == OWL_OK)
        s = owl__check_shape(p->ctx, out, "out (the low-rank shape)",
                             p->lr_rows, p->lr_cols);
    if (s == OWL_OK && out->row_stride > INT_MAX)
        s = owl__fail(p->ctx, OWL_ERR_UNSUPPORTED,
                      "out->row_stride %lld exceeds BLAS's int",
                      (long long)out->row_stride);
    if (s == OWL_OK)
        s = check_grad_tensor(p, grad);
    if (s == OWL_OK)
        s = owl__check_disjoint(p->ctx, out, "out", grad, "grad");
    if (s != OWL_OK)
        return s;
#ifdef OWL_HAVE_CUDA
    /* A non-finite G is caught on the device: OWL_OK, nothing written
     * (src/cuda_galore.c, docs/cuda.md). */
    if (p->ctx->backend == OWL_BACKEND_CUDA)
        return owl__cuda_galore_project(p, iter, grad, out, refreshed);
#endif
    bool rf = false;
    s = owl__galore_project_f32(p, iter, grad, out->data, out->row_stride,
                                &rf);
    if (s == OWL_ERR_NONFINITE)
        return nonfinite_grad(p);
    if (s == OWL_OK && refreshed != NULL)
        *refreshed = rf ? 1 : 0;
    return s;
}

typedef struct {
    const owl_tensor *t;
    const float *src; /* rows of the block, stride t->cols */
    int64_t row0;
} store_job;

static void store_range(void *arg, int64_t begin, int64_t end)
{
    const store_job *job = arg;
    for (int64_t i = begin; i < end; i++)
        owl__store_row_f32(job->t, job->row0 + i, job->src + i * job->t->cols);
}

owl_status owl_galore_project_back(owl_galore *p, const owl_tensor *lowrank,
                                   owl_tensor *out)
{
    if (p == NULL)
        return OWL_ERR_NULL_POINTER;
    owl__clear_error(p->ctx);
    owl_status s = owl__check_tensor(p->ctx, lowrank, "lowrank", OWL_DT_FLOATS);
    if (s == OWL_OK)
        s = owl__check_shape(p->ctx, lowrank, "lowrank", p->lr_rows,
                             p->lr_cols);
    if (s == OWL_OK)
        s = owl__check_tensor(p->ctx, out, "out", OWL_DT_FLOATS);
    if (s == OWL_OK)
        s = owl__check_shape(p->ctx, out, "out", p->m, p->n);
    if (s == OWL_OK)
        s = owl__check_disjoint(p->ctx, out, "out", lowrank, "lowrank");
    if (s != OWL_OK)
        return s;
    if (!p->has_basis)
        return owl__fail(p->ctx, OWL_ERR_STATE,
                         "the projector has no subspace yet: call "
                         "owl_galore_project or owl_galore_refresh first");
#ifdef OWL_HAVE_CUDA
    if (p->ctx->backend == OWL_BACKEND_CUDA)
        return owl__cuda_galore_project_back(p, lowrank, out);
#endif

    const float *low = p->lowrank;
    int64_t ldl = p->lr_cols;
    if (blas_readable(lowrank)) {
        low = lowrank->data;
        ldl = lowrank->row_stride;
    } else {
        copy_to_f32(p->ctx, lowrank, p->lowrank, p->lr_cols);
    }
    if (blas_readable(out)) {
        owl__galore_back_rows(p, low, ldl, 0, p->m, p->scale, 0.0f, out->data,
                              out->row_stride);
        return OWL_OK;
    }
    /* Half (or oddly strided) output: one cache-sized block of rows at a
     * time through the f32 scratch, stored with rounding to nearest. */
    int64_t grain = p->n >= 16384 ? 1 : 16384 / p->n;
    float *block = owl__galore_block(p);
    for (int64_t row0 = 0; row0 < p->m; row0 += p->block_rows) {
        int64_t rows = p->m - row0 < p->block_rows ? p->m - row0 : p->block_rows;
        owl__galore_back_rows(p, low, ldl, row0, rows, p->scale, 0.0f, block,
                              p->n);
        store_job job = {out, block, row0};
        owl__parallel_for(p->ctx, rows, grain, store_range, &job);
    }
    return OWL_OK;
}

owl_status owl_galore_refresh(owl_galore *p, const owl_tensor *grad)
{
    if (p == NULL)
        return OWL_ERR_NULL_POINTER;
    owl__clear_error(p->ctx);
    owl_status s = check_grad_tensor(p, grad);
    if (s != OWL_OK)
        return s;
#ifdef OWL_HAVE_CUDA
    /* A non-finite G keeps the basis, checked on the device. */
    if (p->ctx->backend == OWL_BACKEND_CUDA)
        return owl__cuda_galore_refresh(p, grad);
#endif
    if (!owl__all_finite(p->ctx, grad))
        return nonfinite_grad(p);
    bool held = false;
    return compute_subspace(p, grad, &held);
}

owl_status owl_galore_invalidate(owl_galore *p)
{
    if (p == NULL)
        return OWL_ERR_NULL_POINTER;
    owl__clear_error(p->ctx);
    p->stale = true;
    return OWL_OK;
}

owl_status owl_galore_get_basis(const owl_galore *p, owl_tensor *out)
{
    if (p == NULL)
        return OWL_ERR_NULL_POINTER;
    owl__clear_error(p->ctx);
    int64_t rows = p->left ? p->m : p->r;
    int64_t cols = p->left ? p->r : p->n;
    owl_status s = owl__check_tensor(p->ctx, out, "out",
                                     OWL_DT_BIT(OWL_DTYPE_F32));
    if (s == OWL_OK)
        s = owl__check_shape(p->ctx, out,
                             p->left ? "out (P, m x r)" : "out (Q, r x n)",
                             rows, cols);
    if (s != OWL_OK)
        return s;
    if (!p->has_basis)
        return owl__fail(p->ctx, OWL_ERR_STATE,
                         "the projector (%s, %lldx%lld, r %lld) has no "
                         "subspace yet",
                         proj_type_name(p->opts.proj_type), (long long)p->m,
                         (long long)p->n, (long long)p->r);
#ifdef OWL_HAVE_CUDA
    if (p->ctx->backend == OWL_BACKEND_CUDA)
        return owl__cuda_galore_get_basis(p, out);
#endif
    for (int64_t i = 0; i < rows; i++) {
        float *dst = (float *)owl__row_ptr(out, i);
        if (p->left)
            for (int64_t j = 0; j < cols; j++)
                dst[j] = p->basis[j * p->m + i];
        else
            memcpy(dst, p->basis + i * p->n, (size_t)cols * sizeof(float));
    }
    return OWL_OK;
}
