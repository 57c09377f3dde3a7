/*
 * CUDA benchmark of the GaLore projector and the fused low-rank step, run
 * by `meson test --benchmark --suite gpu`. It prints figures next to
 * baselines measured in the same run and never fails on speed: the exit
 * status is non-zero only when a call fails (77, SKIP, without a device).
 *
 *  - one owl_adamw_lowrank step on a 4096 x 11008 bf16 weight at r = 256
 *    (no refresh), against its two cuBLAS GEMMs alone (f32 Sgemm of the
 *    projection and the back-projection; target: <= 1.3x);
 *  - a subspace refresh of the same shape, EXACT against RANDOMIZED
 *    (target: >= 10x faster), with the gradient energy each basis
 *    captures (target: RANDOMIZED within 1% of EXACT).
 *
 * The gradient has a decaying spectrum (rank 1024, s_k = 1/(1 + k/16)),
 * so the top 256 directions are meaningful. Every timed call is followed
 * by a wait for the stream, the baselines too.
 */
#include "bench_util.h"
#include "../gpu/gpu_util.h"

#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { M = 4096, N = 11008, RANK = 256, SPECTRUM_RANK = 1024 };

static int failures;

static void report_fail(owl_context *ctx, const char *what, owl_status s)
{
    fprintf(stderr, "%s failed with %s: %s\n", what, owl_status_name(s),
            ctx ? owl_context_last_error(ctx) : "");
    failures++;
}

static int check_cuda(cudaError_t e, const char *what)
{
    if (e == cudaSuccess)
        return 0;
    fprintf(stderr, "%s: %s\n", what, cudaGetErrorString(e));
    failures++;
    return 1;
}

static void *dev_alloc(size_t bytes)
{
    void *p = NULL;
    if (check_cuda(cudaMalloc(&p, bytes), "cudaMalloc"))
        return NULL;
    return p;
}

/* ---- the gradient ------------------------------------------------------ */

/* G (M x N f32, on the device) = U diag(s) V with U, V Gaussian, made by
 * one Sgemm (column-major: G^T = V^T diag(s) U^T). */
static float *make_gradient(cublasHandle_t h)
{
    size_t ub = (size_t)M * SPECTRUM_RANK, vb = (size_t)SPECTRUM_RANK * N;
    float *u = malloc(ub * sizeof(float)), *v = malloc(vb * sizeof(float));
    if (u == NULL || v == NULL) {
        free(u);
        free(v);
        return NULL;
    }
    bench_fill_normal(u, ub, 1);
    bench_fill_normal(v, vb, 2);
    for (int k = 0; k < SPECTRUM_RANK; k++) { /* scale row k of V */
        float s = (float)(1.0 / (1.0 + k / 16.0) / sqrt((double)M * N));
        for (int j = 0; j < N; j++)
            v[(size_t)k * N + j] *= s;
    }
    float *ud = dev_alloc(ub * 4), *vd = dev_alloc(vb * 4);
    float *g = dev_alloc((size_t)M * N * 4);
    if (ud && vd && g &&
        !check_cuda(cudaMemcpy(ud, u, ub * 4, cudaMemcpyHostToDevice), "upload") &&
        !check_cuda(cudaMemcpy(vd, v, vb * 4, cudaMemcpyHostToDevice), "upload")) {
        /* row-major G (M x N) = U (M x K) V (K x N): column-major
         * G^T (N x M) = V^T (N x K) U^T (K x M). */
        const float one = 1.0f, zero = 0.0f;
        if (cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, N, M, SPECTRUM_RANK, &one,
                        vd, N, ud, SPECTRUM_RANK, &zero, g, N) !=
            CUBLAS_STATUS_SUCCESS) {
            fprintf(stderr, "cublasSgemm (gradient) failed\n");
            failures++;
        }
    }
    cudaFree(ud);
    cudaFree(vd);
    free(u);
    free(v);
    return g;
}

/* bf16 copy of the f32 device G (round to nearest even, on the host). */
static uint16_t *to_bf16_device(const float *g)
{
    size_t n = (size_t)M * N;
    float *h = malloc(n * 4);
    uint16_t *b = malloc(n * 2);
    uint16_t *d = dev_alloc(n * 2);
    if (h && b && d &&
        !check_cuda(cudaMemcpy(h, g, n * 4, cudaMemcpyDeviceToHost), "download")) {
        for (size_t i = 0; i < n; i++) {
            uint32_t x;
            memcpy(&x, &h[i], 4);
            b[i] = (uint16_t)((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
        }
        check_cuda(cudaMemcpy(d, b, n * 2, cudaMemcpyHostToDevice), "upload");
    }
    free(h);
    free(b);
    return d;
}

/* ---- one fused step against its GEMMs ----------------------------------- */

typedef struct {
    owl_context *ctx;
    owl_adamw *adam;
    owl_galore *proj;
    owl_tensor w, g;
} step_arg;

static owl_status run_step(void *p)
{
    step_arg *a = p;
    owl_status s = owl_adamw_lowrank(a->adam, a->proj, &a->w, &a->g, 1e-6);
    return s == OWL_OK ? owl_context_synchronize(a->ctx) : s;
}

typedef struct {
    cublasHandle_t h;
    const float *basis, *g32, *low;
    float *r, *block;
} gemm_arg;

/* The step's two products as f32 Sgemm (left projection, as STD picks for
 * m < n): R (r x n) = P^T G and back (m x n) = P R. */
static owl_status run_gemms(void *p)
{
    gemm_arg *a = p;
    const float one = 1.0f, zero = 0.0f;
    /* row-major R = B G, B = P^T (r x m): column-major R^T = G^T B^T */
    cublasStatus_t st = cublasSgemm(a->h, CUBLAS_OP_N, CUBLAS_OP_N, N, RANK, M,
                                    &one, a->g32, N, a->basis, M, &zero, a->r,
                                    N);
    /* row-major C = B^T R: column-major C^T = R^T B */
    if (st == CUBLAS_STATUS_SUCCESS)
        st = cublasSgemm(a->h, CUBLAS_OP_N, CUBLAS_OP_T, N, M, RANK, &one,
                         a->low, N, a->basis, M, &zero, a->block, N);
    if (st != CUBLAS_STATUS_SUCCESS)
        return OWL_ERR_DEVICE;
    return cudaDeviceSynchronize() == cudaSuccess ? OWL_OK : OWL_ERR_DEVICE;
}

static void bench_step(owl_context *ctx, cublasHandle_t h, const float *g32)
{
    const size_t cells = (size_t)M * N;
    uint16_t *gb = to_bf16_device(g32);
    uint16_t *wb = to_bf16_device(g32); /* any finite bf16 weight */
    owl_galore_options po;
    owl_galore_options_init(&po, sizeof po);
    po.rows = M;
    po.cols = N;
    po.rank = RANK;
    po.update_gap = 1u << 30; /* refresh once, in the warm-up */
    po.svd_method = OWL_SVD_RANDOMIZED;
    owl_adamw_options ao;
    owl_adamw_options_init(&ao, sizeof ao);
    owl_galore *proj = NULL;
    owl_adamw *adam = NULL;
    owl_status s = owl_galore_create(ctx, &po, &proj);
    if (s != OWL_OK) {
        report_fail(ctx, "owl_galore_create", s);
        goto done;
    }
    if ((s = owl_adamw_create(ctx, &ao, RANK, N, &adam)) != OWL_OK) {
        report_fail(ctx, "owl_adamw_create", s);
        goto done;
    }
    step_arg sa = {.ctx = ctx, .adam = adam, .proj = proj};
    owl_tensor_init(&sa.w, wb, OWL_DTYPE_BF16, M, N);
    owl_tensor_init(&sa.g, gb, OWL_DTYPE_BF16, M, N);
    if ((s = run_step(&sa)) != OWL_OK) { /* the refresh, untimed */
        report_fail(ctx, "owl_adamw_lowrank (first step)", s);
        goto done;
    }
    gemm_arg ga = {.h = h, .g32 = g32};
    float *basis = dev_alloc((size_t)RANK * M * 4);
    float *r = dev_alloc((size_t)RANK * N * 4);
    float *block = dev_alloc(cells * 4);
    ga.basis = basis;
    ga.low = r;
    ga.r = r;
    ga.block = block;
    if (basis && r && block) {
        cudaMemset(basis, 0, (size_t)RANK * M * 4);
        cudaMemset(r, 0, (size_t)RANK * N * 4);
        bench_timing ts, tg;
        s = bench_measure_pair(run_step, &sa, run_gemms, &ga, 3, 10, 100, 10.0,
                               &ts, &tg);
        if (s != OWL_OK) {
            report_fail(ctx, "step / GEMM timing", s);
        } else {
            printf("%-52s %9.3f ms\n",
                   "fused low-rank step, 4096x11008 bf16, r=256", 1e3 * ts.median);
            printf("%-52s %9.3f ms\n", "  its two cuBLAS Sgemm alone",
                   1e3 * tg.median);
            printf("%-52s %9.2fx  (target <= 1.30x)\n", "  ratio",
                   ts.median / tg.median);
        }
    }
    cudaFree(basis);
    cudaFree(r);
    cudaFree(block);
done:
    owl_adamw_free(adam);
    owl_galore_free(proj);
    cudaFree(gb);
    cudaFree(wb);
}

/* ---- refresh: EXACT against RANDOMIZED ---------------------------------- */

typedef struct {
    owl_context *ctx;
    owl_galore *proj;
    owl_tensor g;
} refresh_arg;

static owl_status run_refresh(void *p)
{
    refresh_arg *a = p;
    owl_status s = owl_galore_refresh(a->proj, &a->g);
    return s == OWL_OK ? owl_context_synchronize(a->ctx) : s;
}

/* ||P^T G||^2 / ||G||^2 through the projector's own projection. */
static double energy(owl_context *ctx, owl_galore *proj, const owl_tensor *g,
                     double g_sq)
{
    size_t n = (size_t)RANK * N;
    float *rd = dev_alloc(n * 4), *rh = malloc(n * 4);
    double e = -1;
    owl_tensor t;
    owl_tensor_init(&t, rd, OWL_DTYPE_F32, RANK, N);
    owl_status s = rd && rh ? owl_galore_project(proj, 1, g, &t, NULL)
                            : OWL_ERR_OUT_OF_MEMORY;
    if (s != OWL_OK)
        report_fail(ctx, "owl_galore_project", s);
    else if (!check_cuda(cudaMemcpy(rh, rd, n * 4, cudaMemcpyDeviceToHost),
                         "download")) {
        double acc = 0;
        for (size_t i = 0; i < n; i++)
            acc += (double)rh[i] * rh[i];
        e = acc / g_sq;
    }
    cudaFree(rd);
    free(rh);
    return e;
}

static void bench_refresh(owl_context *ctx, float *g32)
{
    size_t n = (size_t)M * N;
    float *h = malloc(n * 4);
    double g_sq = 0;
    if (h == NULL ||
        check_cuda(cudaMemcpy(h, g32, n * 4, cudaMemcpyDeviceToHost), "download")) {
        free(h);
        return;
    }
    for (size_t i = 0; i < n; i++)
        g_sq += (double)h[i] * h[i];
    free(h);
    owl_galore_options po;
    owl_galore_options_init(&po, sizeof po);
    po.rows = M;
    po.cols = N;
    po.rank = RANK;
    po.update_gap = 1u << 30;
    owl_galore *pe = NULL, *pr = NULL;
    owl_status s = owl_galore_create(ctx, &po, &pe);
    po.svd_method = OWL_SVD_RANDOMIZED;
    if (s == OWL_OK)
        s = owl_galore_create(ctx, &po, &pr);
    if (s != OWL_OK) {
        report_fail(ctx, "owl_galore_create", s);
        owl_galore_free(pe);
        return;
    }
    refresh_arg ae = {.ctx = ctx, .proj = pe}, ar = {.ctx = ctx, .proj = pr};
    owl_tensor_init(&ae.g, g32, OWL_DTYPE_F32, M, N);
    ar.g = ae.g;
    bench_timing te, tr;
    s = bench_measure(run_refresh, &ae, 0, 1, 3, 20.0, &te);
    if (s == OWL_OK)
        s = bench_measure(run_refresh, &ar, 1, 3, 30, 5.0, &tr);
    if (s != OWL_OK) {
        report_fail(ctx, "owl_galore_refresh", s);
    } else {
        double ee = energy(ctx, pe, &ae.g, g_sq);
        double er = energy(ctx, pr, &ar.g, g_sq);
        printf("%-52s %9.3f ms  energy %.5f\n",
               "refresh EXACT, 4096x11008 f32, r=256", 1e3 * te.median, ee);
        printf("%-52s %9.3f ms  energy %.5f\n",
               "refresh RANDOMIZED (p=8, q=2)", 1e3 * tr.median, er);
        printf("%-52s %9.1fx  (target >= 10x)\n", "  speedup",
               te.median / tr.median);
        printf("%-52s %9.3f%%  (target >= -1%%)\n",
               "  randomized energy relative to exact",
               ee > 0 ? 100.0 * (er - ee) / ee : 0.0);
    }
    owl_galore_free(pe);
    owl_galore_free(pr);
}

int main(void)
{
    gpu_require_device();
    owl_context *ctx = gpu_context();
    cublasHandle_t h = NULL;
    if (cublasCreate(&h) != CUBLAS_STATUS_SUCCESS) {
        fprintf(stderr, "cublasCreate failed\n");
        return 1;
    }
    float *g32 = make_gradient(h);
    if (g32 != NULL && failures == 0) {
        bench_step(ctx, h, g32);
        bench_refresh(ctx, g32);
    }
    cudaFree(g32);
    cublasDestroy(h);
    owl_context_free(ctx);
    return failures == 0 ? 0 : 1;
}
