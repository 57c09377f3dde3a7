/* The GaLore projector and the fused low-rank AdamW step on CUDA.
 *
 * Everything mirrors src/galore.c, src/svd.c and src/adamw.c: the same
 * refresh rule, the same products in the same orientation, the same
 * randomized range finder (its Gaussian sketch drawn from the same
 * counter-based hash, so both backends sketch identically), the same
 * canonical signs and the same AdamW arithmetic. What differs is when
 * things are known: a step never waits for the device, so a non-finite
 * gradient (or a failed factorisation) is detected on the device, where it
 * sets the context's step flag; every kernel that writes state reads the
 * flag and leaves its state alone (src/cuda_internal.h). In particular the
 * new basis is computed into next_basis and copied over the basis by a
 * guarded kernel, since the host cannot know whether to swap pointers.
 *
 * Row-major and cuBLAS. Every product here is written as the cblas
 * RowMajor call of the CPU backend and goes through rm_sgemm, which maps
 * it to column-major cuBLAS: a row-major X (p x q, leading dimension ld) is
 * byte for byte the column-major X^T (q x p, same ld), so
 *   C = op(A) op(B)   (row-major, C: M x N)
 * is the column-major
 *   C^T = op(B)^T op(A)^T,
 * i.e. cublasSgemm(opB, opA, N, M, K, B, ldb, A, lda, C, ldc): the operands
 * swap places, M and N swap, and each operand keeps its own transpose flag
 * (the column-major view of B is B^T, and N on it gives B^T = op(B)^T when
 * op(B) = B; T on it gives B = op(B)^T when op(B) = B^T). */
#include "cuda_galore.h"

#include "cuda_internal.h"
#include "../kernels/kernels.h"

#include <cublas_v2.h>
#include <cuda_runtime_api.h>
/* cusolverDn.h declares one function with () rather than (void). */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wstrict-prototypes"
#include <cusolverDn.h>
#pragma GCC diagnostic pop
#include <limits.h>
#include <string.h>

static cudaStream_t stream_of(const owl_galore *p)
{
    return (cudaStream_t)owl__cuda_stream(p->ctx);
}

static cublasHandle_t blas_of(const owl_galore *p)
{
    return (cublasHandle_t)p->ctx->cuda->cublas;
}

static cusolverDnHandle_t solver_of(const owl_galore *p)
{
    return (cusolverDnHandle_t)p->ctx->cuda->cusolver;
}

static char *scratch_of(const owl_galore *p)
{
    return (char *)owl__cuda_scratch(p->ctx);
}

static float *scratch_f32(const owl_galore *p, size_t off)
{
    return (float *)(void *)(scratch_of(p) + off);
}

static owl_status kernel_ok(owl_context *ctx, int e, const char *what)
{
    return e == 0 ? OWL_OK : owl__cuda_fail(ctx, e, what);
}

/* Row-major C (M x N) = alpha op(A) op(B) + beta C, arguments as cblas
 * RowMajor takes them (see the comment at the top). dev_scalars: alpha and
 * beta point to device memory (computed by a kernel of this step). */
static owl_status rm_sgemm(owl_galore *p, bool ta, bool tb, int64_t M,
                           int64_t N, int64_t K, const float *alpha,
                           const float *A, int64_t lda, const float *B,
                           int64_t ldb, const float *beta, float *C,
                           int64_t ldc, bool dev_scalars)
{
    cublasHandle_t h = blas_of(p);
    cublasStatus_t st = cublasSetPointerMode(
        h, dev_scalars ? CUBLAS_POINTER_MODE_DEVICE : CUBLAS_POINTER_MODE_HOST);
    if (st == CUBLAS_STATUS_SUCCESS)
        st = cublasSgemm(h, tb ? CUBLAS_OP_T : CUBLAS_OP_N,
                         ta ? CUBLAS_OP_T : CUBLAS_OP_N, (int)N, (int)M,
                         (int)K, alpha, B, (int)ldb, A, (int)lda, beta, C,
                         (int)ldc);
    if (dev_scalars) /* leave the shared handle in its default mode */
        cublasSetPointerMode(h, CUBLAS_POINTER_MODE_HOST);
    return st == CUBLAS_STATUS_SUCCESS ? OWL_OK
                                       : owl__cublas_fail(p->ctx, st,
                                                          "cublasSgemm");
}

static const float one_f = 1.0f, zero_f = 0.0f;

/* ---- plan ------------------------------------------------------------- */

/* Xgesvd's workspace for a column-major rows x cols f32 matrix. */
static owl_status gesvd_query(owl_galore *p, signed char jobu,
                              signed char jobvt, int64_t rows, int64_t cols,
                              int64_t ldu, int64_t ldvt, size_t *dev_bytes,
                              size_t *host_bytes)
{
    owl_galore_cuda *c = p->cuda;
    cusolverStatus_t st = cusolverDnXgesvd_bufferSize(
        solver_of(p), (cusolverDnParams_t)c->params, jobu, jobvt, rows, cols,
        CUDA_R_32F, NULL, rows, CUDA_R_32F, NULL, CUDA_R_32F, NULL, ldu,
        CUDA_R_32F, NULL, ldvt, CUDA_R_32F, dev_bytes, host_bytes);
    return st == CUSOLVER_STATUS_SUCCESS
               ? OWL_OK
               : owl__cusolver_fail(p->ctx, st, "cusolverDnXgesvd_bufferSize");
}

/* The larger of geqrf's and orgqr's workspace (floats) on rows x k. */
static owl_status qr_query(owl_galore *p, int64_t rows, int64_t k, int *lwork)
{
    int a = 0, b = 0;
    cusolverStatus_t st = cusolverDnSgeqrf_bufferSize(
        solver_of(p), (int)rows, (int)k, NULL, (int)rows, &a);
    if (st == CUSOLVER_STATUS_SUCCESS)
        st = cusolverDnSorgqr_bufferSize(solver_of(p), (int)rows, (int)k,
                                         (int)k, NULL, (int)rows, NULL, &b);
    if (st != CUSOLVER_STATUS_SUCCESS)
        return owl__cusolver_fail(p->ctx, st, "geqrf/orgqr workspace query");
    *lwork = a > b ? a : b;
    return OWL_OK;
}

static owl_status plan(owl_galore *p)
{
    owl_galore_cuda *c = p->cuda;
    const int64_t m = p->m, n = p->n, r = p->r, d = p->d;
    const int64_t e = p->left ? n : m;
    const int64_t mn = m < n ? m : n;
    size_t end = 0;
    bool ok = owl__place(&end, m * n, sizeof(float), &c->off_g32);
    owl_status s;
    if (p->opts.svd_method == OWL_SVD_EXACT) {
        c->k = mn;
        bool gt = n >= m; /* factor G^T (n x m) or G (m x n) */
        c->svd_rows = gt ? n : m;
        c->svd_cols = gt ? m : n;
        /* U of G^T is V of G; U of G is U of G. */
        c->need_u = gt ? !p->left : p->left;
        const int64_t R = c->svd_rows, C = c->svd_cols;
        size_t host = 0;
        s = gesvd_query(p, c->need_u ? 'S' : 'N', c->need_u ? 'N' : 'S', R,
                        C, c->need_u ? R : 1, c->need_u ? 1 : C,
                        &c->dev_work_bytes, &host);
        if (s != OWL_OK)
            return s;
        c->host_work_bytes = host;
        ok = ok && owl__place(&end, m * n, sizeof(float), &c->off_a) &&
             owl__place(&end, C, sizeof(float), &c->off_s);
        if (c->need_u)
            ok = ok && owl__place(&end, R * C, sizeof(float), &c->off_u);
        else
            ok = ok && owl__place(&end, C * C, sizeof(float), &c->off_vt);
        ok = ok && owl__place(&end, (int64_t)c->dev_work_bytes, 1,
                              &c->off_work);
    } else {
        uint64_t room = (uint64_t)(mn - r);
        c->k = r + (int64_t)(p->opts.oversample < room ? p->opts.oversample
                                                       : room);
        const int64_t k = c->k;
        if (k * (d > e ? d : e) > INT32_MAX)
            return owl__fail(p->ctx, OWL_ERR_UNSUPPORTED,
                             "a %lldx%lld randomized SVD of width %lld "
                             "exceeds cuSOLVER's 32-bit QR sizes",
                             (long long)m, (long long)n, (long long)k);
        int q1 = 0, q2 = 0;
        if ((s = qr_query(p, d, k, &q1)) != OWL_OK ||
            (s = qr_query(p, e, k, &q2)) != OWL_OK)
            return s;
        c->qr_lwork = q1 > q2 ? q1 : q2;
        size_t host = 0;
        /* B^T, e x k (e >= k): only its V^T (= U_B, k x k) is kept. */
        s = gesvd_query(p, 'N', 'S', e, k, 1, k, &c->dev_work_bytes, &host);
        if (s != OWL_OK)
            return s;
        c->host_work_bytes = host;
        ok = ok && owl__place(&end, k * d, sizeof(float), &c->off_range) &&
             owl__place(&end, k * e, sizeof(float), &c->off_sketch) &&
             owl__place(&end, k, sizeof(float), &c->off_tau) &&
             owl__place(&end, c->qr_lwork, sizeof(float), &c->off_qr) &&
             owl__place(&end, k, sizeof(float), &c->off_s) &&
             owl__place(&end, k * k, sizeof(float), &c->off_vt) &&
             owl__place(&end, (int64_t)c->dev_work_bytes, 1, &c->off_work);
    }
    if (!ok)
        return owl__fail(p->ctx, OWL_ERR_OUT_OF_MEMORY,
                         "device workspace for a %lldx%lld projector: size "
                         "overflows",
                         (long long)m, (long long)n);
    c->bytes = end;
    return OWL_OK;
}

owl_status owl__cuda_galore_create(owl_galore *p)
{
    owl_context *ctx = p->ctx;
    owl_cuda_guard g;
    owl_status s = owl__cuda_enter(ctx, &g);
    if (s != OWL_OK)
        return s;
    owl_galore_cuda *c = owl__alloc(ctx, 1, sizeof *c, "CUDA projector");
    if (c == NULL) {
        owl__cuda_leave(&g);
        return OWL_ERR_OUT_OF_MEMORY;
    }
    p->cuda = c;
    const size_t basis_bytes = (size_t)(p->r * p->d) * sizeof(float);
    void *state = NULL;
    s = owl__cuda_alloc(ctx, basis_bytes, (void **)&p->basis, "basis");
    if (s == OWL_OK)
        s = owl__cuda_alloc(ctx, basis_bytes, (void **)&p->next_basis,
                            "basis");
    if (s == OWL_OK)
        s = owl__cuda_alloc(ctx,
                            (size_t)(p->lr_rows * p->lr_cols) * sizeof(float),
                            (void **)&p->lowrank, "low-rank buffer");
    if (s == OWL_OK)
        s = owl__cuda_alloc(ctx,
                            OWL_GSTATE_WORDS * sizeof(int32_t) +
                                sizeof(owl_lowrank_coeffs),
                            &state, "projector state");
    if (s == OWL_OK) {
        c->state = state;
        c->coeffs = (owl_lowrank_coeffs *)(void *)((char *)state +
                                                   OWL_GSTATE_WORDS *
                                                       sizeof(int32_t));
        cusolverDnParams_t params = NULL;
        cusolverStatus_t st = cusolverDnCreateParams(&params);
        if (st != CUSOLVER_STATUS_SUCCESS)
            s = owl__cusolver_fail(ctx, st, "cusolverDnCreateParams");
        else
            c->params = params;
    }
    if (s == OWL_OK)
        s = plan(p);
    if (s == OWL_OK && c->host_work_bytes > 0) {
        c->host_work = owl__alloc(ctx, c->host_work_bytes, 1,
                                  "SVD host workspace");
        if (c->host_work == NULL)
            s = OWL_ERR_OUT_OF_MEMORY;
    }
    /* Last, so a failed create leaves the context's scratch as it was. */
    if (s == OWL_OK)
        s = owl__cuda_reserve(ctx, c->bytes);
    owl__cuda_leave(&g);
    return s;
}

void owl__cuda_galore_free(owl_galore *p)
{
    owl_galore_cuda *c = p->cuda;
    owl_cuda_guard g;
    bool entered = owl__cuda_enter(p->ctx, &g) == OWL_OK;
    /* cudaFree waits for work still using the memory. */
    owl__cuda_free(p->ctx, p->basis);
    owl__cuda_free(p->ctx, p->next_basis);
    owl__cuda_free(p->ctx, p->lowrank);
    p->basis = p->next_basis = p->lowrank = NULL;
    if (c != NULL) {
        owl__cuda_free(p->ctx, c->state);
        if (c->params != NULL)
            cusolverDnDestroyParams((cusolverDnParams_t)c->params);
        owl__free(c->host_work);
        owl__free(c);
        p->cuda = NULL;
    }
    if (entered)
        owl__cuda_leave(&g);
}

/* ---- gradient access and subspace ------------------------------------- */

/* Checks G for NaN/Inf into the step flag and gives an f32 view cuBLAS can
 * read: G itself when it is f32 with an int-sized stride, else its copy in
 * the scratch (converted and checked in one pass). */
static owl_status prepare_grad(owl_galore *p, const owl_tensor *grad,
                               const float **g, int64_t *ldg)
{
    int32_t *flag = owl__cuda_flag(p->ctx);
    if (grad->dtype == OWL_DTYPE_F32 && grad->row_stride <= INT_MAX) {
        *g = grad->data;
        *ldg = grad->row_stride;
        return kernel_ok(p->ctx,
                         owl__k_flag_nonfinite(stream_of(p), grad->data,
                                               grad->dtype, p->m, p->n,
                                               grad->row_stride, flag),
                         "non-finite check of grad");
    }
    float *g32 = scratch_f32(p, p->cuda->off_g32);
    *g = g32;
    *ldg = p->n;
    return kernel_ok(p->ctx,
                     owl__k_to_f32(stream_of(p), grad->data, grad->dtype, p->m,
                                   p->n, grad->row_stride, g32, p->n, flag),
                     "conversion of grad to f32");
}

static owl_status exact_into_next(owl_galore *p, const float *g, int64_t ldg)
{
    owl_galore_cuda *c = p->cuda;
    const int64_t m = p->m, n = p->n, r = p->r;
    const int64_t R = c->svd_rows, C = c->svd_cols;
    float *a = scratch_f32(p, c->off_a);
    int32_t *flag = owl__cuda_flag(p->ctx);
    /* Zeros instead of a gradient the step flag rejected (see
     * owl__k_copy_or_zero). */
    owl_status s;
    if (R == n) {
        /* G^T, column-major n x m with ld n, is G row-major and dense. */
        s = kernel_ok(p->ctx,
                      owl__k_copy_or_zero(stream_of(p), flag, g, ldg, a, n, m,
                                          n),
                      "copy of grad for the SVD");
    } else {
        /* G, column-major m x n with ld m, is G^T row-major. */
        s = kernel_ok(p->ctx,
                      owl__k_transpose_f32(stream_of(p), g, m, n, ldg, a, m,
                                           flag),
                      "transpose of grad for the SVD");
    }
    if (s != OWL_OK)
        return s;
    float *sv = scratch_f32(p, c->off_s);
    float *u = c->need_u ? scratch_f32(p, c->off_u) : NULL;
    float *vt = c->need_u ? NULL : scratch_f32(p, c->off_vt);
    cusolverStatus_t st = cusolverDnXgesvd(
        solver_of(p), (cusolverDnParams_t)c->params, c->need_u ? 'S' : 'N',
        c->need_u ? 'N' : 'S', R, C, CUDA_R_32F, a, R, CUDA_R_32F, sv,
        CUDA_R_32F, u, c->need_u ? R : 1, CUDA_R_32F, vt, c->need_u ? 1 : C,
        CUDA_R_32F, scratch_of(p) + c->off_work, c->dev_work_bytes,
        c->host_work, c->host_work_bytes, c->state + OWL_GSTATE_SVD_INFO);
    if (st != CUSOLVER_STATUS_SUCCESS)
        return owl__cusolver_fail(p->ctx, st, "cusolverDnXgesvd");
    if (c->need_u) {
        /* Column j of U (R = d floats) is basis vector j. */
        cudaError_t e = cudaMemcpyAsync(
            p->next_basis, u, (size_t)(r * R) * sizeof(float),
            cudaMemcpyDeviceToDevice, stream_of(p));
        return e == cudaSuccess ? OWL_OK
                                : owl__cuda_fail(p->ctx, e, "basis copy");
    }
    /* Row j of V^T (C x C, column-major: VT(j, i) at vt[j + i C]) is basis
     * vector j. Read row-major, vt is a C x C matrix whose element (i, j)
     * is VT(j, i), so the basis (r x C) is the transpose of its first r
     * columns. */
    return kernel_ok(p->ctx,
                     owl__k_transpose_f32(stream_of(p), vt, C, r, C,
                                          p->next_basis, C, NULL),
                     "basis transpose");
}

/* Orthonormalises k vectors stored as rows of length len (column-major
 * len x k for cuSOLVER). */
static owl_status orthonormalise(owl_galore *p, float *x, int64_t len)
{
    owl_galore_cuda *c = p->cuda;
    float *tau = scratch_f32(p, c->off_tau), *work = scratch_f32(p, c->off_qr);
    int *info = c->state + OWL_GSTATE_QR_INFO;
    int k = (int)c->k;
    cusolverStatus_t st = cusolverDnSgeqrf(solver_of(p), (int)len, k, x,
                                           (int)len, tau, work, c->qr_lwork,
                                           info);
    if (st == CUSOLVER_STATUS_SUCCESS)
        st = cusolverDnSorgqr(solver_of(p), (int)len, k, k, x, (int)len, tau,
                              work, c->qr_lwork, info);
    return st == CUSOLVER_STATUS_SUCCESS
               ? OWL_OK
               : owl__cusolver_fail(p->ctx, st, "QR of the sketch");
}

/* With A = G (left) or G^T (right), d x e: range (k x d) = x A^T. */
static owl_status to_range(owl_galore *p, const float *g, int64_t ldg,
                           const float *x, float *out)
{
    const int64_t m = p->m, n = p->n, k = p->cuda->k;
    if (p->left) /* (k x n) * G^T */
        return rm_sgemm(p, false, true, k, m, n, &one_f, x, n, g, ldg,
                        &zero_f, out, m, false);
    /* (k x m) * G */
    return rm_sgemm(p, false, false, k, n, m, &one_f, x, m, g, ldg, &zero_f,
                    out, n, false);
}

/* sketch (k x e) = range (k x d) A. */
static owl_status to_sketch(owl_galore *p, const float *g, int64_t ldg,
                            const float *range, float *out)
{
    const int64_t m = p->m, n = p->n, k = p->cuda->k;
    if (p->left) /* (k x m) * G */
        return rm_sgemm(p, false, false, k, n, m, &one_f, range, m, g, ldg,
                        &zero_f, out, n, false);
    /* (k x n) * G^T */
    return rm_sgemm(p, false, true, k, m, n, &one_f, range, n, g, ldg,
                    &zero_f, out, m, false);
}

static owl_status randomized_into_next(owl_galore *p, const float *g,
                                       int64_t ldg)
{
    owl_galore_cuda *c = p->cuda;
    const int64_t k = c->k, r = p->r, d = p->d;
    const int64_t e = p->left ? p->n : p->m;
    float *range = scratch_f32(p, c->off_range);
    float *sketch = scratch_f32(p, c->off_sketch);
    /* The range finder reads G from the scratch copy, zeroed when the step
     * flag rejected it (see owl__k_copy_or_zero); G read in place by the
     * projection is copied there first (one pass, per refresh only). */
    float *g32 = scratch_f32(p, c->off_g32);
    owl_status s = kernel_ok(p->ctx,
                             owl__k_copy_or_zero(stream_of(p),
                                                 owl__cuda_flag(p->ctx), g,
                                                 ldg, g32, p->n, p->m, p->n),
                             "copy of grad for the SVD");
    g = g32;
    ldg = p->n;
    if (s == OWL_OK)
        s = kernel_ok(p->ctx,
                      owl__k_gaussian(stream_of(p), sketch, k * e,
                                      p->opts.seed, p->refresh_count),
                      "Gaussian sketch");
    if (s == OWL_OK)
        s = to_range(p, g, ldg, sketch, range);
    if (s == OWL_OK)
        s = orthonormalise(p, range, d);
    /* Power iterations, each product re-orthonormalised (as src/svd.c). */
    for (uint64_t it = 0; s == OWL_OK && it < p->opts.power_iters; it++) {
        s = to_sketch(p, g, ldg, range, sketch);
        if (s == OWL_OK)
            s = orthonormalise(p, sketch, e);
        if (s == OWL_OK)
            s = to_range(p, g, ldg, sketch, range);
        if (s == OWL_OK)
            s = orthonormalise(p, range, d);
    }
    if (s == OWL_OK)
        s = to_sketch(p, g, ldg, range, sketch);
    if (s != OWL_OK)
        return s;
    /* B = Q^T A (k x e) is the column-major e x k B^T = V_B S U_B^T; its
     * V^T output (k x k, ld k) is U_B, read row-major. */
    float *sv = scratch_f32(p, c->off_s), *vt = scratch_f32(p, c->off_vt);
    cusolverStatus_t st = cusolverDnXgesvd(
        solver_of(p), (cusolverDnParams_t)c->params, 'N', 'S', e, k,
        CUDA_R_32F, sketch, e, CUDA_R_32F, sv, CUDA_R_32F, NULL, 1,
        CUDA_R_32F, vt, k, CUDA_R_32F, scratch_of(p) + c->off_work,
        c->dev_work_bytes, c->host_work, c->host_work_bytes,
        c->state + OWL_GSTATE_SVD_INFO);
    if (st != CUSOLVER_STATUS_SUCCESS)
        return owl__cusolver_fail(p->ctx, st, "cusolverDnXgesvd (sketch)");
    /* Vector j = sum_i U_B[i][j] q_i: basis (r x d) = U_B[:, :r]^T range. */
    return rm_sgemm(p, true, false, r, d, k, &one_f, vt, k, range, d, &zero_f,
                    p->next_basis, d, false);
}

/* Enqueues a subspace computation from g (f32, m x n, stride ldg): the
 * vectors go to next_basis, get their canonical signs and are checked
 * (cuSOLVER's info, finiteness) into the step flag; a guarded copy then
 * makes them the basis only when the flag is clear. The host cannot know
 * the outcome without waiting, so it counts the refresh as made; a
 * skipped one leaves the previous basis in place (and, before the first
 * success, none: the basis stays zero, which owl__k_require_basis turns
 * into a skip of every step until a refresh succeeds). A basis loaded by
 * persistence is written straight into p->basis and is valid as it is. A non-finite G is replaced by zeros
 * before cuSOLVER sees it (the factorisation still runs, since the host
 * cannot know; its result is discarded). */
static owl_status compute_subspace(owl_galore *p, const float *g, int64_t ldg)
{
    owl_galore_cuda *c = p->cuda;
    int32_t *flag = owl__cuda_flag(p->ctx);
    owl_status s = p->opts.svd_method == OWL_SVD_EXACT
                       ? exact_into_next(p, g, ldg)
                       : randomized_into_next(p, g, ldg);
    if (s == OWL_OK)
        s = kernel_ok(p->ctx,
                      owl__k_canonical_signs(stream_of(p), p->next_basis, p->r,
                                             p->d,
                                             c->state + OWL_GSTATE_SVD_INFO,
                                             flag),
                      "canonical signs");
    if (s == OWL_OK)
        s = kernel_ok(p->ctx,
                      owl__k_guarded_copy(stream_of(p), flag, p->next_basis,
                                          p->d, p->basis, p->d, p->r,
                                          p->d),
                      "basis swap");
    if (s != OWL_OK)
        return s;
    p->has_basis = true;
    p->stale = false;
    p->refresh_count++;
    return OWL_OK;
}

/* R = P^T G (r x n) or G Q^T (m x r), as project_into in galore.c. */
static owl_status project_into(owl_galore *p, const float *g, int64_t ldg,
                               float *dst, int64_t ldd)
{
    const int64_t m = p->m, n = p->n, r = p->r;
    if (p->left)
        return rm_sgemm(p, false, false, r, n, m, &one_f, p->basis, m, g, ldg,
                        &zero_f, dst, ldd, false);
    return rm_sgemm(p, false, true, m, r, n, &one_f, g, ldg, p->basis, n,
                    &zero_f, dst, ldd, false);
}

/* C (m x n) = alpha back(low) + beta C, as owl__galore_back_rows over all
 * rows. */
static owl_status back_into(owl_galore *p, const float *low, int64_t ldl,
                            const float *alpha, const float *beta, float *cm,
                            int64_t ldc, bool dev_scalars)
{
    const int64_t m = p->m, n = p->n, r = p->r;
    if (p->left) /* P R, P = (P^T)^T */
        return rm_sgemm(p, true, false, m, n, r, alpha, p->basis, m, low, ldl,
                        beta, cm, ldc, dev_scalars);
    /* R Q */
    return rm_sgemm(p, false, false, m, n, r, alpha, low, ldl, p->basis, n,
                    beta, cm, ldc, dev_scalars);
}

/* Refresh when due, then R = project(G) into p->lowrank; G is checked into
 * the step flag, and a projector without a valid subspace sets it too. */
static owl_status project_lowrank(owl_galore *p, uint64_t iter,
                                  const owl_tensor *grad, bool *refreshed)
{
    bool due = !p->has_basis || p->stale || iter % p->opts.update_gap == 0;
    const float *g = NULL;
    int64_t ldg = 0;
    owl_status s = prepare_grad(p, grad, &g, &ldg);
    if (s == OWL_OK && due)
        s = compute_subspace(p, g, ldg);
    if (s == OWL_OK)
        s = kernel_ok(p->ctx,
                      owl__k_require_basis(stream_of(p), p->basis, p->d,
                                           owl__cuda_flag(p->ctx)),
                      "subspace check");
    if (s == OWL_OK)
        s = project_into(p, g, ldg, p->lowrank, p->lr_cols);
    *refreshed = due;
    return s;
}

/* ---- public projector calls ------------------------------------------- */

/* A non-finite G on CUDA: the call returns OWL_OK, `out` is not written,
 * the basis is kept, and (as the host cannot know) *refreshed and the
 * refresh count report the refresh as made. Such a call is not an
 * optimizer step and is not counted by owl_context_nonfinite_skips. */
owl_status owl__cuda_galore_project(owl_galore *p, uint64_t iter,
                                    const owl_tensor *grad, owl_tensor *out,
                                    int32_t *refreshed)
{
    owl_context *ctx = p->ctx;
    owl_cuda_guard g;
    owl_status s = owl__cuda_enter_checked(ctx, &g, grad, "grad", out, "out");
    if (s != OWL_OK)
        return s;
    bool rf = false;
    s = owl__cuda_step_begin(ctx);
    if (s == OWL_OK)
        s = project_lowrank(p, iter, grad, &rf);
    if (s == OWL_OK)
        s = kernel_ok(ctx,
                      owl__k_guarded_copy(stream_of(p), owl__cuda_flag(ctx),
                                          p->lowrank, p->lr_cols, out->data,
                                          out->row_stride, p->lr_rows,
                                          p->lr_cols),
                      "copy of the projection");
    owl__cuda_leave(&g);
    if (s == OWL_OK && refreshed != NULL)
        *refreshed = rf ? 1 : 0;
    return s;
}

owl_status owl__cuda_galore_refresh(owl_galore *p, const owl_tensor *grad)
{
    owl_context *ctx = p->ctx;
    owl_cuda_guard g;
    owl_status s = owl__cuda_enter_checked(ctx, &g, grad, "grad", NULL, NULL);
    if (s != OWL_OK)
        return s;
    const float *gf = NULL;
    int64_t ldg = 0;
    s = owl__cuda_step_begin(ctx);
    if (s == OWL_OK)
        s = prepare_grad(p, grad, &gf, &ldg);
    if (s == OWL_OK)
        s = compute_subspace(p, gf, ldg);
    owl__cuda_leave(&g);
    return s;
}

owl_status owl__cuda_galore_project_back(owl_galore *p,
                                         const owl_tensor *lowrank,
                                         owl_tensor *out)
{
    owl_context *ctx = p->ctx;
    owl_cuda_guard g;
    owl_status s = owl__cuda_enter_checked(ctx, &g, lowrank, "lowrank", out,
                                           "out");
    if (s != OWL_OK)
        return s;
    const float *low = p->lowrank;
    int64_t ldl = p->lr_cols;
    if (lowrank->dtype == OWL_DTYPE_F32 && lowrank->row_stride <= INT_MAX) {
        low = lowrank->data;
        ldl = lowrank->row_stride;
    } else {
        s = kernel_ok(ctx,
                      owl__k_to_f32(stream_of(p), lowrank->data,
                                    lowrank->dtype, p->lr_rows, p->lr_cols,
                                    lowrank->row_stride, p->lowrank,
                                    p->lr_cols, NULL),
                      "conversion of lowrank to f32");
    }
    const float scale = p->scale;
    if (s == OWL_OK) {
        if (out->dtype == OWL_DTYPE_F32 && out->row_stride <= INT_MAX) {
            s = back_into(p, low, ldl, &scale, &zero_f, out->data,
                          out->row_stride, false);
        } else {
            /* Half output: the whole m x n f32 block, then one rounding
             * pass (the CPU's blocks are a cache concern only). */
            float *block = scratch_f32(p, p->cuda->off_g32);
            s = back_into(p, low, ldl, &scale, &zero_f, block, p->n, false);
            if (s == OWL_OK)
                s = kernel_ok(ctx,
                              owl__k_store_f32(stream_of(p), block, p->m, p->n,
                                               p->n, out->data, out->dtype,
                                               out->row_stride),
                              "store of the back-projection");
        }
    }
    owl__cuda_leave(&g);
    return s;
}

owl_status owl__cuda_galore_get_basis(const owl_galore *p, owl_tensor *out)
{
    owl_context *ctx = p->ctx;
    owl_cuda_guard g;
    owl_status s = owl__cuda_enter_checked(ctx, &g, out, "out", NULL, NULL);
    if (s != OWL_OK)
        return s;
    if (p->left) {
        /* P (m x r) is the transpose of the stored P^T (r x m). */
        s = kernel_ok(ctx,
                      owl__k_transpose_f32(stream_of(p), p->basis, p->r, p->m,
                                           p->m, out->data, out->row_stride,
                                           NULL),
                      "basis transpose");
    } else {
        cudaError_t e = cudaMemcpy2DAsync(
            out->data, (size_t)out->row_stride * sizeof(float), p->basis,
            (size_t)p->n * sizeof(float), (size_t)p->n * sizeof(float),
            (size_t)p->r, cudaMemcpyDeviceToDevice, stream_of(p));
        if (e != cudaSuccess)
            s = owl__cuda_fail(ctx, e, "basis copy");
    }
    owl__cuda_leave(&g);
    return s;
}

/* ---- the fused low-rank AdamW step -------------------------------------- */

/* R = project(G) in the projector's low-rank buffer; a kernel forms this
 * step's coefficients on the device (the bias-correction t depends on the
 * device's skip counter); a kernel updates m, v and writes N over R; then
 * W is updated from back(N): f32 weights by one GEMM with beta = keep
 * (device scalars, (0, 1) with N = 0 on a skipped step), other weights
 * through an f32 block in the scratch (back(N) unscaled) and an apply
 * kernel that scales it and rounds as the CPU does. A skipped step leaves
 * W, m, v and the basis as they were, and keeps t by counting the skip in
 * a->dev_skipped. The host counters advance on every call (struct
 * owl_adamw). Caveat of the one-GEMM path on a skipped step: W' = 1 W + 0
 * is W bit for bit except that a -0.0 weight may come back as +0.0. */
owl_status owl__cuda_adamw_lowrank(owl_adamw *a, owl_galore *p,
                                   owl_tensor *weight, const owl_tensor *grad,
                                   double lr)
{
    owl_context *ctx = a->ctx;
    owl_status s = owl__cuda_check_tensor(ctx, weight, "weight");
    if (s == OWL_OK)
        s = owl__cuda_check_tensor(ctx, grad, "grad");
    if (s != OWL_OK)
        return s;
    if (a->dev_skipped == NULL)
        return owl__fail(ctx, OWL_ERR_UNSUPPORTED,
                         "this optimizer has no device state (a build "
                         "without CUDA AdamW)");
    owl_cuda_guard g;
    if ((s = owl__cuda_enter(ctx, &g)) != OWL_OK)
        return s;
    int32_t *flag = owl__cuda_flag(ctx);
    owl_galore_cuda *c = p->cuda;
    const uint64_t iter = a->step_count;
    bool refreshed = false;
    s = owl__cuda_step_begin(ctx);
    if (s == OWL_OK)
        s = project_lowrank(p, iter, grad, &refreshed);
    const bool reset = refreshed && a->opts.on_refresh == OWL_MOMENTS_RESET;
    const uint64_t bias_prev = a->bias_step;
    const uint64_t bias_next = (reset ? 0 : bias_prev) + 1;
    const bool direct =
        weight->dtype == OWL_DTYPE_F32 && weight->row_stride <= INT_MAX;
    owl_lowrank_hparams hp = {
        .beta1 = a->opts.beta1,
        .beta2 = a->opts.beta2,
        .eps = a->opts.eps,
        .weight_decay = a->opts.weight_decay,
        .lr = lr,
        .scale = (double)p->scale,
        .bias_step = bias_next,
        .torch = a->opts.semantics == OWL_ADAMW_TORCH,
        .reset = reset,
        .direct = direct,
    };
    if (s == OWL_OK)
        s = kernel_ok(ctx,
                      owl__k_lowrank_coeffs(stream_of(p), hp, flag,
                                            a->dev_skipped, c->coeffs),
                      "step coefficients");
    if (s == OWL_OK)
        s = kernel_ok(ctx,
                      owl__k_lowrank_moments(stream_of(p), c->coeffs, flag,
                                             p->lowrank, a->m, a->v,
                                             a->opts.moment_dtype,
                                             p->lr_rows * p->lr_cols, reset),
                      "low-rank moments");
    if (s == OWL_OK && direct) {
        s = back_into(p, p->lowrank, p->lr_cols, &c->coeffs->gemm_alpha,
                      &c->coeffs->gemm_beta, weight->data, weight->row_stride,
                      true);
    } else if (s == OWL_OK) {
        /* Host scalars (1, 0): cuBLAS then never reads the block's old
         * contents (which may be anything, NaN included); the apply kernel
         * scales by the device's alpha. */
        float *block = scratch_f32(p, c->off_g32);
        s = back_into(p, p->lowrank, p->lr_cols, &one_f, &zero_f, block,
                      p->n, false);
        bool stochastic = a->opts.rounding == OWL_ROUND_STOCHASTIC &&
                          weight->dtype == OWL_DTYPE_BF16;
        if (s == OWL_OK)
            s = kernel_ok(ctx,
                          owl__k_lowrank_apply(stream_of(p), c->coeffs, flag,
                                               block, weight->data,
                                               weight->dtype, p->m, p->n,
                                               weight->row_stride, stochastic,
                                               a->opts.seed, iter),
                          "weight update");
    }
    if (s == OWL_OK)
        s = kernel_ok(ctx,
                      owl__k_lowrank_finish(stream_of(p), flag, a->dev_skipped,
                                            reset, bias_prev),
                      "skip counter");
    if (s == OWL_OK)
        s = owl__cuda_step_end(ctx);
    owl__cuda_leave(&g);
    if (s != OWL_OK)
        return s;
    a->step_count++;
    a->bias_step = bias_next;
    return OWL_OK;
}
