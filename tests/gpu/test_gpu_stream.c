/* Stream ordering across the primitives, as a host framework drives them:
 * on a non-blocking stream, inputs are uploaded with cudaMemcpyAsync and a
 * chain of calls runs in which each reads what the one before wrote
 * (activation norms -> LOD of the updated weights; projections and steps
 * fed by uploads enqueued between them). Only that stream is synchronised
 * before the results are compared with the CPU backend on the same inputs,
 * so any call that ran outside the stream, or read its input before the
 * upload landed, shows up as a mismatch. Exits 77 (SKIP) without a device.
 *
 * Tolerances (f32 on both sides; the GPU kernels use fast-math and a
 * different summation order):
 *   activation sums of squares      max relative error 1e-5
 *   full-rank AdamW weights          max |diff| 1e-5 (steps are ~1e-2)
 *   GaLore projection R             relative L2 1e-3 (SVD of well
 *                                   separated singular values)
 *   low-rank AdamW weight change    relative L2 2e-3
 *   LOD ratio                       one entry out of all (a value on the
 *                                   threshold may round either way) */
#include "../common/testutil.h"
#include "gpu_util.h"

#include <cuda_runtime_api.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum {
    TOK = 40,  /* activation rows */
    M = 48,    /* weight rows */
    N = 80,    /* weight cols = activation features */
    M2 = 24,   /* second matrix of the layer, for the LOD */
    RANK = 4,
    STEPS = 3
};

static cudaStream_t stream;

static void check_cuda(cudaError_t e, const char *what)
{
    if (e != cudaSuccess)
        fail_msg("%s: %s", what, cudaGetErrorString(e));
}

/* Device buffer zeroed on the test stream (never on the legacy stream,
 * which a non-blocking stream does not wait for). */
static void *dev_zeros(size_t bytes)
{
    void *p = NULL;
    check_cuda(cudaMalloc(&p, bytes), "cudaMalloc");
    check_cuda(cudaMemsetAsync(p, 0, bytes, stream), "cudaMemsetAsync");
    return p;
}

static void upload_async(void *dev, const void *pinned, size_t bytes)
{
    check_cuda(cudaMemcpyAsync(dev, pinned, bytes, cudaMemcpyHostToDevice,
                               stream),
               "cudaMemcpyAsync to device");
}

static void download_async(void *pinned, const void *dev, size_t bytes)
{
    check_cuda(cudaMemcpyAsync(pinned, dev, bytes, cudaMemcpyDeviceToHost,
                               stream),
               "cudaMemcpyAsync to host");
}

/* Pinned host memory, so the async copies really are asynchronous. */
static float *pinned(size_t count)
{
    void *p = NULL;
    check_cuda(cudaMallocHost(&p, count * sizeof(float)), "cudaMallocHost");
    memset(p, 0, count * sizeof(float));
    return p;
}

/* G = sum_k s_k a_k b_k^T + 0.01 noise with s = 8, 4, 2, 1: singular
 * values far apart, so the rank-RANK subspace is well determined and both
 * backends find the same one. */
static void fill_gradient(float *g, uint64_t seed)
{
    float a[M], b[N];
    test_fill_normal(g, (size_t)M * N, seed);
    for (size_t i = 0; i < (size_t)M * N; i++)
        g[i] *= 0.01f;
    for (int k = 0; k < RANK; k++) {
        test_fill_normal(a, M, seed * 31 + 2 * k + 1);
        test_fill_normal(b, N, seed * 31 + 2 * k + 2);
        double na = 0, nb = 0;
        for (int i = 0; i < M; i++)
            na += (double)a[i] * a[i];
        for (int j = 0; j < N; j++)
            nb += (double)b[j] * b[j];
        double s = 8.0 / (double)(1 << k) / sqrt(na * nb);
        for (int i = 0; i < M; i++)
            for (int j = 0; j < N; j++)
                g[i * N + j] += (float)(s * a[i] * b[j]);
    }
}

/* Every input of the chain, on the host. */
typedef struct inputs {
    float *x;              /* TOK x N activations */
    float *w;              /* M x N, full-rank AdamW, then LOD */
    float *w2;             /* M2 x N, LOD only (with outliers) */
    float *g[STEPS];       /* M x N full-rank gradients */
    float *wl;             /* M x N, low-rank AdamW */
    float *gl[STEPS];      /* M x N low-rank gradients */
} inputs;

typedef struct results {
    float *sumsq;  /* 1 x N */
    float *w;      /* after the full-rank steps */
    float *r;      /* projection of gl[0] */
    float *wl;     /* after the low-rank steps */
    size_t r_count; /* entries of r: the low-rank shape */
    float ratio;
    uint64_t skips;
} results;

static void make_inputs(inputs *in)
{
    in->x = pinned((size_t)TOK * N);
    in->w = pinned((size_t)M * N);
    in->w2 = pinned((size_t)M2 * N);
    in->wl = pinned((size_t)M * N);
    test_fill_normal(in->x, (size_t)TOK * N, 11);
    /* A few feature columns carry large activations, as in an LLM. */
    for (int t = 0; t < TOK; t++) {
        in->x[t * N + 3] *= 20.0f;
        in->x[t * N + 41] *= 12.0f;
    }
    test_fill_uniform(in->w, (size_t)M * N, 12);
    test_fill_uniform(in->w2, (size_t)M2 * N, 13);
    /* Planted outliers, far above any threshold (rows 1..16 < M2). */
    for (int k = 0; k < 6; k++)
        in->w2[(k * 3 + 1) * N + (k * 13 + 5) % N] = 40.0f;
    test_fill_uniform(in->wl, (size_t)M * N, 14);
    for (int s = 0; s < STEPS; s++) {
        in->g[s] = pinned((size_t)M * N);
        test_fill_normal(in->g[s], (size_t)M * N, 100 + s);
        in->gl[s] = pinned((size_t)M * N);
        fill_gradient(in->gl[s], 200 + s);
    }
}

static void free_inputs(inputs *in)
{
    cudaFreeHost(in->x);
    cudaFreeHost(in->w);
    cudaFreeHost(in->w2);
    cudaFreeHost(in->wl);
    for (int s = 0; s < STEPS; s++) {
        cudaFreeHost(in->g[s]);
        cudaFreeHost(in->gl[s]);
    }
}

static owl_adamw *make_adamw(owl_context *ctx, uint64_t rows, uint64_t cols)
{
    owl_adamw_options o;
    owl_adamw_options_init(&o, sizeof o);
    o.weight_decay = 0.01;
    owl_adamw *adam = NULL;
    assert_owl_ok(ctx, owl_adamw_create(ctx, &o, rows, cols, &adam));
    return adam;
}

static owl_galore *make_galore(owl_context *ctx)
{
    owl_galore_options o;
    owl_galore_options_init(&o, sizeof o);
    o.rows = M;
    o.cols = N;
    o.rank = RANK;
    o.update_gap = 2; /* a refresh inside the low-rank steps too */
    o.scale = 0.25;
    owl_galore *proj = NULL;
    assert_owl_ok(ctx, owl_galore_create(ctx, &o, &proj));
    return proj;
}

static const double LR = 1e-2;
static const double LOD_M = 5.0;

/* The chain on the CPU backend: the reference. */
static void run_cpu(const inputs *in, results *out)
{
    owl_context *ctx = cpu_context();
    size_t mn = (size_t)M * N;
    float *g = malloc(mn * sizeof *g);
    assert_non_null(g);
    owl_tensor tx, ts, tw, tg, tw2, tr, twl;
    memset(out->sumsq, 0, N * sizeof(float));
    owl_tensor_init(&tx, in->x, OWL_DTYPE_F32, TOK, N);
    owl_tensor_init(&ts, out->sumsq, OWL_DTYPE_F32, 1, N);
    assert_owl_ok(ctx, owl_act_norm_accumulate(ctx, &tx, &ts));

    memcpy(out->w, in->w, mn * sizeof(float));
    owl_tensor_init(&tw, out->w, OWL_DTYPE_F32, M, N);
    owl_tensor_init(&tg, g, OWL_DTYPE_F32, M, N);
    owl_adamw *adam = make_adamw(ctx, M, N);
    for (int s = 0; s < STEPS; s++) {
        memcpy(g, in->g[s], mn * sizeof(float));
        assert_owl_ok(ctx, owl_adamw_full(adam, &tw, &tg, LR));
    }

    owl_galore *proj = make_galore(ctx);
    uint64_t rr, rc;
    assert_owl_ok(ctx, owl_galore_lowrank_shape(proj, &rr, &rc));
    memcpy(g, in->gl[0], mn * sizeof(float));
    out->r_count = (size_t)(rr * rc);
    owl_tensor_init(&tr, out->r, OWL_DTYPE_F32, (int64_t)rr, (int64_t)rc);
    assert_owl_ok(ctx, owl_galore_project(proj, 0, &tg, &tr, NULL));

    owl_galore *proj2 = make_galore(ctx);
    owl_adamw *adam2 = make_adamw(ctx, rr, rc);
    memcpy(out->wl, in->wl, mn * sizeof(float));
    owl_tensor_init(&twl, out->wl, OWL_DTYPE_F32, M, N);
    for (int s = 0; s < STEPS; s++) {
        memcpy(g, in->gl[s], mn * sizeof(float));
        assert_owl_ok(ctx, owl_adamw_lowrank(adam2, proj2, &twl, &tg, LR));
    }

    owl_tensor_init(&tw2, in->w2, OWL_DTYPE_F32, M2, N);
    owl_tensor weights[2] = {tw, tw2}, sums[2] = {ts, ts};
    double ratio = -1;
    assert_owl_ok(ctx, owl_lod_compute(ctx, weights, sums, 2, LOD_M, &ratio));
    out->ratio = (float)ratio;
    assert_owl_ok(ctx, owl_context_nonfinite_skips(ctx, &out->skips));

    owl_adamw_free(adam);
    owl_adamw_free(adam2);
    owl_galore_free(proj);
    owl_galore_free(proj2);
    owl_context_free(ctx);
    free(g);
}

/* The same chain on the GPU, everything on `stream`; the only wait is the
 * cudaStreamSynchronize at the end. */
static void run_gpu(const inputs *in, results *out)
{
    owl_context *ctx = gpu_context();
    assert_owl_ok(ctx, owl_context_set_stream(ctx, stream));
    size_t mn = (size_t)M * N, bytes = mn * sizeof(float);

    float *x = dev_zeros((size_t)TOK * N * sizeof(float));
    float *sumsq = dev_zeros(N * sizeof(float));
    float *w = dev_zeros(bytes), *w2 = dev_zeros((size_t)M2 * N * sizeof(float));
    float *wl = dev_zeros(bytes), *g = dev_zeros(bytes);
    float *ratio = dev_zeros(sizeof(float));
    upload_async(x, in->x, (size_t)TOK * N * sizeof(float));
    upload_async(w, in->w, bytes);
    upload_async(w2, in->w2, (size_t)M2 * N * sizeof(float));
    upload_async(wl, in->wl, bytes);

    owl_tensor tx, ts, tw, tg, tw2, tr, twl, tratio;
    owl_tensor_init(&tx, x, OWL_DTYPE_F32, TOK, N);
    owl_tensor_init(&ts, sumsq, OWL_DTYPE_F32, 1, N);
    owl_tensor_init(&tw, w, OWL_DTYPE_F32, M, N);
    owl_tensor_init(&tw2, w2, OWL_DTYPE_F32, M2, N);
    owl_tensor_init(&twl, wl, OWL_DTYPE_F32, M, N);
    owl_tensor_init(&tg, g, OWL_DTYPE_F32, M, N);
    owl_tensor_init(&tratio, ratio, OWL_DTYPE_F32, 1, 1);
    assert_owl_ok(ctx, owl_act_norm_accumulate(ctx, &tx, &ts));

    /* One gradient buffer, refilled before each step: each upload must
     * wait for the step before it, and each step for its upload. */
    owl_adamw *adam = make_adamw(ctx, M, N);
    for (int s = 0; s < STEPS; s++) {
        upload_async(g, in->g[s], bytes);
        assert_owl_ok(ctx, owl_adamw_full(adam, &tw, &tg, LR));
    }

    owl_galore *proj = make_galore(ctx);
    uint64_t rr, rc;
    assert_owl_ok(ctx, owl_galore_lowrank_shape(proj, &rr, &rc));
    out->r_count = (size_t)(rr * rc);
    float *r = dev_zeros(rr * rc * sizeof(float));
    owl_tensor_init(&tr, r, OWL_DTYPE_F32, (int64_t)rr, (int64_t)rc);
    upload_async(g, in->gl[0], bytes);
    assert_owl_ok(ctx, owl_galore_project(proj, 0, &tg, &tr, NULL));

    owl_galore *proj2 = make_galore(ctx);
    owl_adamw *adam2 = make_adamw(ctx, rr, rc);
    for (int s = 0; s < STEPS; s++) {
        upload_async(g, in->gl[s], bytes);
        assert_owl_ok(ctx, owl_adamw_lowrank(adam2, proj2, &twl, &tg, LR));
    }

    /* LOD of the weights the full-rank steps just wrote, weighted by the
     * sums the first call accumulated. */
    owl_tensor weights[2] = {tw, tw2}, sums[2] = {ts, ts};
    assert_owl_ok(ctx, owl_lod_compute_async(ctx, weights, sums, 2, LOD_M,
                                             &tratio));

    download_async(out->sumsq, sumsq, N * sizeof(float));
    download_async(out->w, w, bytes);
    download_async(out->r, r, rr * rc * sizeof(float));
    download_async(out->wl, wl, bytes);
    download_async(&out->ratio, ratio, sizeof(float));
    check_cuda(cudaStreamSynchronize(stream), "cudaStreamSynchronize");

    assert_owl_ok(ctx, owl_context_nonfinite_skips(ctx, &out->skips));
    owl_adamw_free(adam);
    owl_adamw_free(adam2);
    owl_galore_free(proj);
    owl_galore_free(proj2);
    owl_context_free(ctx);
    float *bufs[] = {x, sumsq, w, w2, wl, g, ratio, r};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        cudaFree(bufs[i]);
}

static void to_double(double *dst, const float *src, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dst[i] = src[i];
}

static results make_results(void)
{
    results r;
    r.sumsq = pinned(N);
    r.w = pinned((size_t)M * N);
    r.r = pinned((size_t)M * N); /* the low-rank shape is smaller */
    r.wl = pinned((size_t)M * N);
    r.r_count = 0;
    r.ratio = -1;
    r.skips = 99;
    return r;
}

static void free_results(results *r)
{
    cudaFreeHost(r->sumsq);
    cudaFreeHost(r->w);
    cudaFreeHost(r->r);
    cudaFreeHost(r->wl);
}

static void test_chain_on_one_stream_matches_cpu(void **state)
{
    (void)state;
    inputs in;
    make_inputs(&in);
    results cpu = make_results(), gpu = make_results();
    run_cpu(&in, &cpu);
    run_gpu(&in, &gpu);
    size_t mn = (size_t)M * N;
    double *ref = malloc(mn * sizeof *ref);
    float *delta = malloc(mn * sizeof *delta);
    assert_non_null(ref);
    assert_non_null(delta);

    to_double(ref, cpu.sumsq, N);
    double e = test_max_rel_err(gpu.sumsq, ref, N, 1e-30);
    printf("# act norms: max rel err %.3g (tolerance 1e-5)\n", e);
    assert_true(e <= 1e-5);

    double worst = 0;
    for (size_t i = 0; i < mn; i++) {
        double d = fabs((double)gpu.w[i] - cpu.w[i]);
        worst = d > worst || isnan(d) ? d : worst;
    }
    printf("# full-rank AdamW: max |diff| %.3g (tolerance 1e-5)\n", worst);
    assert_true(worst <= 1e-5);
    /* The steps did move the weights (~LR each), so the check has teeth. */
    double moved = 0;
    for (size_t i = 0; i < mn; i++)
        moved = fmax(moved, fabs((double)cpu.w[i] - in.w[i]));
    assert_true(moved > 1e-3);

    /* R in the low-rank shape the projector chose, compared in full. */
    assert_int_equal(gpu.r_count, cpu.r_count);
    to_double(ref, cpu.r, cpu.r_count);
    e = test_rel_l2(gpu.r, ref, cpu.r_count);
    printf("# GaLore projection: rel L2 %.3g (tolerance 1e-3)\n", e);
    assert_true(e <= 1e-3);

    for (size_t i = 0; i < mn; i++) {
        ref[i] = (double)cpu.wl[i] - in.wl[i];
        delta[i] = (float)((double)gpu.wl[i] - in.wl[i]);
    }
    e = test_rel_l2(delta, ref, mn);
    printf("# low-rank AdamW weight change: rel L2 %.3g (tolerance 2e-3)\n",
           e);
    assert_true(e <= 2e-3);

    double one_entry = 1.0 / (double)((M + M2) * N);
    printf("# LOD ratio: gpu %.6f cpu %.6f (tolerance %.3g)\n", gpu.ratio,
           cpu.ratio, one_entry);
    assert_true(cpu.ratio > 0); /* the planted outliers count */
    assert_true(fabs((double)gpu.ratio - cpu.ratio) <= one_entry * 1.01);

    assert_int_equal(cpu.skips, 0);
    assert_int_equal(gpu.skips, 0);
    free(ref);
    free(delta);
    free_results(&cpu);
    free_results(&gpu);
    free_inputs(&in);
}

static double seconds(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* Informative only, never asserted: after enqueueing a large amount of
 * full-rank AdamW work, the calls have returned while the stream is still
 * busy (cudaStreamQuery says cudaErrorNotReady) if no call waited for the
 * device. A fast device or a slow host can legitimately finish first. */
static void test_steps_do_not_wait_informative(void **state)
{
    (void)state;
    enum { BIG_STEPS = 20 };
    const int64_t rows = 8192, cols = 4096; /* 33.5M parameters */
    size_t bytes = (size_t)rows * (size_t)cols * sizeof(float);
    owl_context *ctx = gpu_context();
    assert_owl_ok(ctx, owl_context_set_stream(ctx, stream));
    float *w = dev_zeros(bytes), *g = dev_zeros(bytes);
    owl_tensor tw, tg;
    owl_tensor_init(&tw, w, OWL_DTYPE_F32, rows, cols);
    owl_tensor_init(&tg, g, OWL_DTYPE_F32, rows, cols);
    owl_adamw *adam = make_adamw(ctx, (uint64_t)rows, (uint64_t)cols);
    check_cuda(cudaStreamSynchronize(stream), "cudaStreamSynchronize");

    double t0 = seconds();
    for (int s = 0; s < BIG_STEPS; s++)
        assert_owl_ok(ctx, owl_adamw_full(adam, &tw, &tg, 1e-3));
    double t_issue = seconds() - t0;
    cudaError_t q = cudaStreamQuery(stream);
    check_cuda(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
    double t_done = seconds() - t0;
    printf("# informative: %d AdamW steps of %lld params issued in %.3f ms, "
           "done after %.3f ms; cudaStreamQuery right after issuing: %s\n",
           BIG_STEPS, (long long)(rows * cols), 1e3 * t_issue, 1e3 * t_done,
           q == cudaErrorNotReady ? "not ready (the calls did not wait)"
           : q == cudaSuccess     ? "already done (inconclusive)"
                                  : cudaGetErrorString(q));
    (void)cudaGetLastError();
    owl_adamw_free(adam);
    owl_context_free(ctx);
    cudaFree(w);
    cudaFree(g);
}

static int setup(void **state)
{
    (void)state;
    return cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking) ==
                   cudaSuccess
               ? 0
               : -1;
}

static int teardown(void **state)
{
    (void)state;
    return cudaStreamDestroy(stream) == cudaSuccess ? 0 : -1;
}

int main(void)
{
    gpu_require_device();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_chain_on_one_stream_matches_cpu),
        cmocka_unit_test(test_steps_do_not_wait_informative),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
