/*
 * owl_optimizer on the CUDA backend against the CPU backend, on the
 * synthetic model of tests/test_optimizer.c: 4 decoder layers of a 24x16
 * and a 16x24 matrix (low-rank where the method honours it) and an
 * always-trained 32x16 "embedding", with L = 0.5 sum((W - target)^2), so
 * G = W - target, computed on the host from each backend's own weights.
 *
 * References and tolerances (relative to max|W_cpu| over the parameter,
 * after every step):
 *  - full rank (FULL, LISA, every frozen policy): 1e-5. Both backends do
 *    the same f32 AdamW operations (tests/gpu/test_gpu_adamw.c: <= one ulp
 *    of step size apart per step); the clipping factor comes from f64
 *    norms summed in different orders (~1e-16 apart).
 *  - low rank (OWLORE): 2e-5, as the CPU tests' GaLore cases: the SVDs are
 *    f32 on both sides but different code.
 *  - OFFLOAD against KEEP on the GPU: bit for bit (offloading only moves
 *    the moments).
 *  - the gradient norm: 1e-12 relative (f64 sums of the same f32 squares
 *    in different orders); clipped gradients (f32, bf16, f16) bit for bit
 *    g * (float)(max / (norm + 1e-6)) rounded to nearest even in their
 *    dtype, computed here from each backend's own norm.
 *  - a NaN in one gradient: the whole step skipped (weights, gradients and
 *    the norm bit for bit as before), one skip counted, and the following
 *    steps equal to the CPU run that refused the step.
 *  - owl_optimizer_memory with OFFLOAD: device moments are exactly the
 *    active layers' and the always-trained parameter's, host moments the
 *    pinned copies of every sampled parameter, reserved at registration
 *    so that no step allocates them (sizes from the shapes).
 *  - save with offloaded moments, load into a fresh optimizer, continue:
 *    bit for bit the uninterrupted run.
 */
#include "gpu_util.h"

#include "../common/testutil.h"

#include <cuda_runtime_api.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NUM_LAYERS 4
#define NUM_PARAMS 9
#define TOL_FULL 1e-5
#define TOL_LOWRANK 2e-5

static const double k_lod[NUM_LAYERS] = {0.20, 0.30, 0.05, 0.12};

/* ---- the synthetic model ------------------------------------------------ */

typedef struct {
    uint64_t layer;
    int32_t lowrank;
    int64_t m, n;
} pspec;

static pspec spec_of(size_t i)
{
    if (i == NUM_PARAMS - 1)
        return (pspec){OWL_LAYER_ALWAYS, 0, 32, 16};
    const bool tall = i % 2 == 0;
    return (pspec){(uint64_t)(i / 2), 1, tall ? 24 : 16, tall ? 16 : 24};
}

static float init_w(size_t i, int64_t k)
{
    return (float)(0.5 * sin(0.37 * (double)k + 1.3 * (double)i));
}

static float init_target(size_t i, int64_t k)
{
    return (float)(0.4 * cos(0.23 * (double)k + 0.7 * (double)i));
}

static size_t dt_size(owl_dtype dt)
{
    return dt == OWL_DTYPE_F32 ? 4 : 2;
}

static float bits_f32(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* Half gradients need only be the same bits on both backends: bf16 by
 * truncation, f16 by truncation in its normal range (|x| < 2 here) and
 * rounding in the subnormal one. */
static uint16_t to_half(float f, owl_dtype dt)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    if (dt == OWL_DTYPE_BF16)
        return (uint16_t)(u >> 16);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000);
    double a = fabs((double)f);
    if (a < ldexp(1.0, -14))
        return (uint16_t)(sign | (uint16_t)lround(ldexp(a, 24)));
    int e = 0;
    double m = frexp(a, &e); /* a = m 2^e, m in [0.5, 1) */
    uint16_t mant = (uint16_t)((m * 2.0 - 1.0) * 1024.0);
    return (uint16_t)(sign | (uint16_t)((e - 1 + 15) << 10) | mant);
}

static float from_half(uint16_t h, owl_dtype dt)
{
    if (dt == OWL_DTYPE_BF16)
        return bits_f32((uint32_t)h << 16);
    int e = (h >> 10) & 31, m = h & 1023;
    double v = e == 0 ? ldexp(m, -24)
               : e == 31 ? (m ? NAN : INFINITY)
                         : ldexp(1024 + m, e - 25);
    return (float)((h & 0x8000) ? -v : v);
}

static const char *dtype_name(owl_dtype dt)
{
    return dt == OWL_DTYPE_F32 ? "f32" : dt == OWL_DTYPE_BF16 ? "bf16" : "f16";
}

/* One backend's copy of the model and its optimizer. */
typedef struct {
    owl_context *ctx;
    bool gpu;
    owl_dtype gdt[NUM_PARAMS]; /* gradient dtypes (weights are f32) */
    void *w[NUM_PARAMS], *g[NUM_PARAMS];
    float *target[NUM_PARAMS];
    owl_tensor wt[NUM_PARAMS], gt[NUM_PARAMS];
    owl_optimizer *opt;
} run;

typedef struct {
    owl_method method;
    owl_frozen_policy policy;
    uint64_t gamma, period;
    double max_grad_norm;
} run_cfg;

static size_t elems(size_t i)
{
    pspec s = spec_of(i);
    return (size_t)(s.m * s.n);
}

static void to_backend(const run *r, void *dst, const void *src, size_t bytes)
{
    if (!r->gpu) {
        memcpy(dst, src, bytes);
        return;
    }
    cudaError_t e = cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice);
    if (e != cudaSuccess)
        fail_msg("cudaMemcpy: %s", cudaGetErrorString(e));
}

static void from_backend(const run *r, void *dst, const void *src,
                         size_t bytes)
{
    if (r->gpu)
        gpu_download(dst, src, bytes);
    else
        memcpy(dst, src, bytes);
}

static void *backend_alloc(const run *r, size_t bytes)
{
    if (r->gpu)
        return gpu_alloc(bytes);
    void *p = calloc(1, bytes);
    assert_non_null(p);
    return p;
}

static void backend_free(const run *r, void *p)
{
    if (r->gpu)
        gpu_free(p);
    else
        free(p);
}

static owl_optimizer *make_opt(run *r, const run_cfg *c)
{
    owl_optimizer_options o;
    owl_sampler_options so;
    owl_galore_options go;
    owl_adamw_options ao;
    assert_int_equal(owl_optimizer_options_init(&o, sizeof o), OWL_OK);
    assert_int_equal(owl_sampler_options_init(&so, sizeof so), OWL_OK);
    assert_int_equal(owl_galore_options_init(&go, sizeof go), OWL_OK);
    assert_int_equal(owl_adamw_options_init(&ao, sizeof ao), OWL_OK);
    o.method = c->method;
    o.frozen_policy = c->policy;
    o.num_layers = NUM_LAYERS;
    o.max_grad_norm = c->max_grad_norm;
    so.gamma = c->gamma;
    so.period = c->period;
    so.seed = 5;
    if (c->method == OWL_METHOD_OWLORE || c->method == OWL_METHOD_OWLORE_FULL) {
        so.weight_mode = OWL_WEIGHTS_OWLORE;
        so.weights = k_lod;
    }
    go.rank = 4;
    go.update_gap = 3;
    go.scale = 0.25;
    ao.semantics = OWL_ADAMW_TORCH;
    ao.weight_decay = 0.01;
    o.sampler = &so;
    o.galore = &go;
    o.adamw = &ao;
    owl_optimizer *opt = NULL;
    assert_owl_ok(r->ctx, owl_optimizer_create(r->ctx, &o, &opt));
    for (size_t i = 0; i < NUM_PARAMS; i++) {
        pspec s = spec_of(i);
        assert_owl_ok(r->ctx, owl_optimizer_add_param(opt, s.layer, &r->wt[i],
                                                      &r->gt[i], s.lowrank,
                                                      NULL));
    }
    return opt;
}

static void run_init(run *r, bool gpu, const run_cfg *c, const owl_dtype *gdt)
{
    memset(r, 0, sizeof *r);
    r->gpu = gpu;
    r->ctx = gpu ? gpu_context() : cpu_context();
    for (size_t i = 0; i < NUM_PARAMS; i++) {
        pspec s = spec_of(i);
        size_t n = elems(i);
        r->gdt[i] = gdt ? gdt[i] : OWL_DTYPE_F32;
        float *w0 = malloc(n * sizeof(float));
        r->target[i] = malloc(n * sizeof(float));
        assert_non_null(w0);
        assert_non_null(r->target[i]);
        for (size_t k = 0; k < n; k++) {
            w0[k] = init_w(i, (int64_t)k);
            r->target[i][k] = init_target(i, (int64_t)k);
        }
        r->w[i] = backend_alloc(r, n * sizeof(float));
        r->g[i] = backend_alloc(r, n * dt_size(r->gdt[i]));
        to_backend(r, r->w[i], w0, n * sizeof(float));
        free(w0);
        owl_tensor_init(&r->wt[i], r->w[i], OWL_DTYPE_F32, s.m, s.n);
        owl_tensor_init(&r->gt[i], r->g[i], r->gdt[i], s.m, s.n);
    }
    r->opt = c ? make_opt(r, c) : NULL;
}

static void run_free(run *r)
{
    owl_optimizer_free(r->opt);
    for (size_t i = 0; i < NUM_PARAMS; i++) {
        backend_free(r, r->w[i]);
        backend_free(r, r->g[i]);
        free(r->target[i]);
    }
    owl_context_free(r->ctx);
}

static float *weights_of(const run *r, size_t i)
{
    float *w = malloc(elems(i) * sizeof(float));
    assert_non_null(w);
    from_backend(r, w, r->w[i], elems(i) * sizeof(float));
    return w;
}

/* The gradients as f32 (converted from their dtype). */
static float *grads_of(const run *r, size_t i)
{
    size_t n = elems(i);
    float *g = malloc(n * sizeof(float));
    assert_non_null(g);
    if (r->gdt[i] == OWL_DTYPE_F32) {
        from_backend(r, g, r->g[i], n * sizeof(float));
        return g;
    }
    uint16_t *h = malloc(n * 2);
    assert_non_null(h);
    from_backend(r, h, r->g[i], n * 2);
    for (size_t k = 0; k < n; k++)
        g[k] = from_half(h[k], r->gdt[i]);
    free(h);
    return g;
}

/* G = W - target from the backend's own weights, for every parameter
 * (frozen ones too: the optimizer must not read or touch them). */
static void backward(run *r)
{
    for (size_t i = 0; i < NUM_PARAMS; i++) {
        size_t n = elems(i);
        float *w = weights_of(r, i);
        if (r->gdt[i] == OWL_DTYPE_F32) {
            for (size_t k = 0; k < n; k++)
                w[k] -= r->target[i][k];
            to_backend(r, r->g[i], w, n * sizeof(float));
        } else {
            uint16_t *h = malloc(n * 2);
            assert_non_null(h);
            for (size_t k = 0; k < n; k++)
                h[k] = to_half(w[k] - r->target[i][k], r->gdt[i]);
            to_backend(r, r->g[i], h, n * 2);
            free(h);
        }
        free(w);
    }
}

static void step(run *r, double lr, uint8_t *mask)
{
    uint8_t m[NUM_LAYERS];
    assert_owl_ok(r->ctx, owl_optimizer_active_layers(r->opt, m, NUM_LAYERS,
                                                      NULL));
    if (mask)
        memcpy(mask, m, NUM_LAYERS);
    backward(r);
    assert_owl_ok(r->ctx, owl_optimizer_step(r->opt, lr));
}

static double lr_at(int s)
{
    return 0.02 * (1.0 - 0.05 * s);
}

/* max |a - b| / max |b| */
static double max_rel(const float *a, const float *b, size_t n)
{
    double diff = 0, scale = 0;
    for (size_t k = 0; k < n; k++) {
        diff = fmax(diff, fabs((double)a[k] - (double)b[k]));
        scale = fmax(scale, fabs((double)b[k]));
    }
    return scale > 0 ? diff / scale : diff;
}

static void expect_close(const run *gpu, const run *cpu, double tol,
                         const char *what, int s)
{
    for (size_t i = 0; i < NUM_PARAMS; i++) {
        float *a = weights_of(gpu, i), *b = weights_of(cpu, i);
        double e = max_rel(a, b, elems(i));
        if (!(e <= tol))
            fail_msg("%s, step %d, parameter %zu: GPU and CPU weights differ "
                     "by %.3g of max|W| (tolerance %.1g)",
                     what, s, i, e, tol);
        free(a);
        free(b);
    }
}

static void expect_identical(const run *a, const run *b, const char *what)
{
    for (size_t i = 0; i < NUM_PARAMS; i++) {
        float *x = weights_of(a, i), *y = weights_of(b, i);
        if (memcmp(x, y, elems(i) * sizeof(float)) != 0)
            fail_msg("%s: parameter %zu differs", what, i);
        free(x);
        free(y);
    }
}

/* Both backends, same configuration, `steps` steps, compared after each. */
static void compare_runs(const run_cfg *c, int steps, double tol,
                         const char *what)
{
    run gpu, cpu;
    run_init(&gpu, true, c, NULL);
    run_init(&cpu, false, c, NULL);
    for (int s = 0; s < steps; s++) {
        uint8_t mg[NUM_LAYERS], mc[NUM_LAYERS];
        step(&gpu, lr_at(s), mg);
        step(&cpu, lr_at(s), mc);
        assert_memory_equal(mg, mc, NUM_LAYERS);
        expect_close(&gpu, &cpu, tol, what, s);
        double ng = 0, nc = 0;
        assert_owl_ok(gpu.ctx, owl_optimizer_last_grad_norm(gpu.opt, &ng));
        assert_owl_ok(cpu.ctx, owl_optimizer_last_grad_norm(cpu.opt, &nc));
        if (!(fabs(ng - nc) <= 1e-12 * nc))
            fail_msg("%s, step %d: gradient norm %.17g on the GPU, %.17g on "
                     "the CPU",
                     what, s, ng, nc);
    }
    uint64_t skips = 99;
    assert_owl_ok(gpu.ctx, owl_context_nonfinite_skips(gpu.ctx, &skips));
    assert_int_equal(skips, 0);
    run_free(&gpu);
    run_free(&cpu);
}

/* ---- methods and policies ----------------------------------------------- */

static void test_full_matches_cpu(void **state)
{
    (void)state;
    run_cfg c = {OWL_METHOD_FULL, OWL_FROZEN_KEEP, 2, 3, 0.0};
    compare_runs(&c, 8, TOL_FULL, "FULL");
}

static void test_lisa_policies_match_cpu(void **state)
{
    (void)state;
    static const owl_frozen_policy policies[] = {
        OWL_FROZEN_KEEP, OWL_FROZEN_RESET, OWL_FROZEN_OFFLOAD,
        OWL_FROZEN_FREE};
    static const char *names[] = {"LISA KEEP", "LISA RESET", "LISA OFFLOAD",
                                  "LISA FREE"};
    for (size_t k = 0; k < 4; k++) {
        /* period 2 over 12 steps: layers leave and come back */
        run_cfg c = {OWL_METHOD_LISA, policies[k], 2, 2, 0.0};
        compare_runs(&c, 12, TOL_FULL, names[k]);
    }
}

static void test_owlore_matches_cpu(void **state)
{
    (void)state;
    run_cfg keep = {OWL_METHOD_OWLORE, OWL_FROZEN_KEEP, 2, 2, 0.0};
    compare_runs(&keep, 10, TOL_LOWRANK, "OWLORE KEEP");
    run_cfg off = {OWL_METHOD_OWLORE, OWL_FROZEN_OFFLOAD, 2, 2, 1.0};
    compare_runs(&off, 10, TOL_LOWRANK, "OWLORE OFFLOAD clipped");
}

/* OFFLOAD only moves moments: the same weights as KEEP, bit for bit, on
 * the same device. */
static void check_offload_is_keep(owl_method method)
{
    run_cfg ck = {method, OWL_FROZEN_KEEP, 2, 2, 0.0};
    run_cfg co = {method, OWL_FROZEN_OFFLOAD, 2, 2, 0.0};
    run keep, off;
    run_init(&keep, true, &ck, NULL);
    run_init(&off, true, &co, NULL);
    for (int s = 0; s < 12; s++) {
        step(&keep, lr_at(s), NULL);
        step(&off, lr_at(s), NULL);
    }
    expect_identical(&off, &keep, "OFFLOAD against KEEP");
    run_free(&keep);
    run_free(&off);
}

static void test_offload_equals_keep(void **state)
{
    (void)state;
    check_offload_is_keep(OWL_METHOD_LISA);
    check_offload_is_keep(OWL_METHOD_OWLORE);
}

/* ---- clipping ------------------------------------------------------------ */

static void test_clipping_matches_cpu(void **state)
{
    (void)state;
    /* The gradients' norm here is ~ 9: 1.0 clips every step. */
    run_cfg c = {OWL_METHOD_LISA, OWL_FROZEN_KEEP, 2, 2, 1.0};
    compare_runs(&c, 8, TOL_FULL, "LISA clipped");
    run_cfg f = {OWL_METHOD_FULL, OWL_FROZEN_KEEP, 2, 2, 1.0};
    compare_runs(&f, 8, TOL_FULL, "FULL clipped");
}

/* x * c rounded to nearest even into dtype dt, computed independently of
 * the library: the product is exact in f64, then one rounding (nearbyint
 * rounds half to even). Normal range, and f16's subnormal spacing. */
static float clipped_value(float x, float c, owl_dtype dt)
{
    const double v = (double)x * (double)c;
    if (dt == OWL_DTYPE_F32)
        return (float)v;
    if (v == 0)
        return (float)v;
    const int bits = dt == OWL_DTYPE_BF16 ? 8 : 11;
    int e = 0;
    (void)frexp(v, &e); /* |v| in [2^(e-1), 2^e) */
    double ulp = ldexp(1.0, e - bits);
    if (dt == OWL_DTYPE_F16 && ulp < ldexp(1.0, -24))
        ulp = ldexp(1.0, -24);
    return (float)(nearbyint(v / ulp) * ulp);
}

/* The gradients clipped in place, in every storage dtype: each backend's
 * result is bit for bit g * (float)(max / (norm + 1e-6)) rounded to
 * nearest even in the gradient's dtype, from that backend's own norm (the
 * two norms agree to 1e-12). */
static void test_clipped_grads_every_dtype(void **state)
{
    (void)state;
    owl_dtype gdt[NUM_PARAMS];
    for (size_t i = 0; i < NUM_PARAMS; i++)
        gdt[i] = i % 3 == 0   ? OWL_DTYPE_F32
                 : i % 3 == 1 ? OWL_DTYPE_BF16
                              : OWL_DTYPE_F16;
    const double max_norm = 0.5;
    run_cfg c = {OWL_METHOD_FULL, OWL_FROZEN_KEEP, 2, 2, max_norm};
    run r[2];
    run_init(&r[0], true, &c, gdt);
    run_init(&r[1], false, &c, gdt);
    float *pre[NUM_PARAMS];
    double norm[2];
    for (int b = 0; b < 2; b++) {
        uint8_t mask[NUM_LAYERS];
        assert_owl_ok(r[b].ctx, owl_optimizer_active_layers(
                                    r[b].opt, mask, NUM_LAYERS, NULL));
        backward(&r[b]);
        if (b == 0)
            for (size_t i = 0; i < NUM_PARAMS; i++)
                pre[i] = grads_of(&r[0], i); /* the same bits on both */
        assert_owl_ok(r[b].ctx, owl_optimizer_step(r[b].opt, 0.01));
        assert_owl_ok(r[b].ctx,
                      owl_optimizer_last_grad_norm(r[b].opt, &norm[b]));
    }
    assert_true(fabs(norm[0] - norm[1]) <= 1e-12 * norm[1]);
    assert_true(norm[1] > 2 * max_norm); /* clipping happened */
    for (int b = 0; b < 2; b++) {
        const float coef = (float)(max_norm / (norm[b] + 1e-6));
        for (size_t i = 0; i < NUM_PARAMS; i++) {
            float *got = grads_of(&r[b], i);
            for (size_t k = 0; k < elems(i); k++) {
                float want = clipped_value(pre[i][k], coef, gdt[i]);
                if (memcmp(&got[k], &want, sizeof want) != 0)
                    fail_msg("%s: parameter %zu (%s) element %zu: clipped "
                             "gradient %.9g, expected %.9g",
                             b == 0 ? "GPU" : "CPU", i, dtype_name(gdt[i]),
                             k, got[k], want);
            }
            free(got);
        }
    }
    for (size_t i = 0; i < NUM_PARAMS; i++)
        free(pre[i]);
    run_free(&r[0]);
    run_free(&r[1]);
}

/* ---- non-finite gradients ----------------------------------------------- */

static void poison(run *r, size_t i, size_t k)
{
    const float nan = NAN;
    float *dst = (float *)r->g[i] + k;
    to_backend(r, dst, &nan, sizeof nan);
}

static void test_nan_skips_whole_step(void **state)
{
    (void)state;
    run_cfg c = {OWL_METHOD_FULL, OWL_FROZEN_KEEP, 2, 2, 1.0};
    run gpu, cpu;
    run_init(&gpu, true, &c, NULL);
    run_init(&cpu, false, &c, NULL);
    for (int s = 0; s < 2; s++) {
        step(&gpu, lr_at(s), NULL);
        step(&cpu, lr_at(s), NULL);
    }
    double norm_before = 0;
    assert_owl_ok(gpu.ctx, owl_optimizer_last_grad_norm(gpu.opt,
                                                        &norm_before));
    float *w_before[NUM_PARAMS], *g_before[NUM_PARAMS];
    uint8_t mask[NUM_LAYERS];
    assert_owl_ok(gpu.ctx, owl_optimizer_active_layers(gpu.opt, mask,
                                                       NUM_LAYERS, NULL));
    backward(&gpu);
    backward(&cpu);
    poison(&gpu, 3, 17); /* one element of one layer's gradient */
    poison(&cpu, 3, 17);
    for (size_t i = 0; i < NUM_PARAMS; i++) {
        w_before[i] = weights_of(&gpu, i);
        g_before[i] = grads_of(&gpu, i);
    }
    assert_owl_ok(gpu.ctx, owl_optimizer_step(gpu.opt, 0.05));
    assert_int_equal(owl_optimizer_step(cpu.opt, 0.05), OWL_ERR_NONFINITE);
    uint64_t skips = 0;
    assert_owl_ok(gpu.ctx, owl_context_nonfinite_skips(gpu.ctx, &skips));
    assert_int_equal(skips, 1);
    for (size_t i = 0; i < NUM_PARAMS; i++) {
        float *w = weights_of(&gpu, i), *g = grads_of(&gpu, i);
        if (memcmp(w, w_before[i], elems(i) * sizeof(float)) != 0)
            fail_msg("parameter %zu's weight changed on a skipped step", i);
        /* with clipping on: not scaled either (NaN compares bitwise) */
        if (memcmp(g, g_before[i], elems(i) * sizeof(float)) != 0)
            fail_msg("parameter %zu's gradient changed on a skipped step", i);
        free(w);
        free(g);
        free(w_before[i]);
        free(g_before[i]);
    }
    double norm_after = 0;
    assert_owl_ok(gpu.ctx, owl_optimizer_last_grad_norm(gpu.opt,
                                                        &norm_after));
    assert_true(norm_after == norm_before);
    /* The host's bookkeeping advanced (it cannot know of the skip); the
     * bias correction did not: the next steps equal the CPU's, whose step
     * was refused. */
    assert_int_equal(owl_optimizer_step_index(gpu.opt), 3);
    assert_int_equal(owl_optimizer_step_index(cpu.opt), 2);
    for (int s = 2; s < 5; s++) {
        step(&gpu, lr_at(s), NULL);
        step(&cpu, lr_at(s), NULL);
        expect_close(&gpu, &cpu, TOL_FULL, "after a skipped step", s);
    }
    assert_owl_ok(gpu.ctx, owl_context_nonfinite_skips(gpu.ctx, &skips));
    assert_int_equal(skips, 1);
    run_free(&gpu);
    run_free(&cpu);
}

/* Every step skipped so far: no norm to report. */
static void test_norm_before_any_completed_step(void **state)
{
    (void)state;
    run_cfg c = {OWL_METHOD_FULL, OWL_FROZEN_KEEP, 2, 2, 0.0};
    run gpu;
    run_init(&gpu, true, &c, NULL);
    double n = 0;
    assert_int_equal(owl_optimizer_last_grad_norm(gpu.opt, &n), OWL_ERR_STATE);
    backward(&gpu);
    poison(&gpu, NUM_PARAMS - 1, 0);
    assert_owl_ok(gpu.ctx, owl_optimizer_step(gpu.opt, 0.01));
    assert_int_equal(owl_optimizer_last_grad_norm(gpu.opt, &n), OWL_ERR_STATE);
    assert_true(owl_context_last_error(gpu.ctx)[0] != '\0');
    run_free(&gpu);
}

/* ---- memory with OFFLOAD ------------------------------------------------- */

static uint64_t moment_bytes(size_t i)
{
    return 2 * (uint64_t)elems(i) * sizeof(float); /* f32 m and v */
}

static void check_offload_memory(void)
{
    run_cfg c = {OWL_METHOD_LISA, OWL_FROZEN_OFFLOAD, 2, 1, 0.0};
    run gpu;
    run_init(&gpu, true, &c, NULL);
    /* Every layer parameter's pinned copies, from registration on. */
    uint64_t host = 0;
    for (size_t i = 0; i + 1 < NUM_PARAMS; i++)
        host += moment_bytes(i);
    owl_memory_usage u0;
    assert_int_equal(owl_memory_usage_init(&u0, sizeof u0), OWL_OK);
    assert_owl_ok(gpu.ctx, owl_optimizer_memory(gpu.opt, &u0));
    assert_int_equal(u0.host_moments, host);
    assert_int_equal(u0.device_moments, 0);
    for (int s = 0; s < 12; s++) {
        uint8_t mask[NUM_LAYERS];
        step(&gpu, lr_at(s), mask);
        uint64_t device = moment_bytes(NUM_PARAMS - 1);
        for (size_t i = 0; i + 1 < NUM_PARAMS; i++)
            if (mask[spec_of(i).layer])
                device += moment_bytes(i);
        owl_memory_usage u;
        assert_int_equal(owl_memory_usage_init(&u, sizeof u), OWL_OK);
        assert_owl_ok(gpu.ctx, owl_optimizer_memory(gpu.opt, &u));
        if (u.device_moments != device || u.host_moments != host)
            fail_msg("step %d: device moments %llu (expected %llu), host "
                     "moments %llu (expected %llu)",
                     s, (unsigned long long)u.device_moments,
                     (unsigned long long)device,
                     (unsigned long long)u.host_moments,
                     (unsigned long long)host);
        assert_true(u.host_projectors == 0 && u.device_projectors == 0);
    }
    run_free(&gpu);
}

static void test_offload_memory(void **state)
{
    (void)state;
    check_offload_memory();
    /* KEEP: everything allocated stays on the device, nothing on the
     * host. */
    run_cfg c = {OWL_METHOD_LISA, OWL_FROZEN_KEEP, 2, 1, 0.0};
    run gpu;
    run_init(&gpu, true, &c, NULL);
    bool seen[NUM_LAYERS] = {false};
    for (int s = 0; s < 6; s++) {
        uint8_t mask[NUM_LAYERS];
        step(&gpu, lr_at(s), mask);
        uint64_t device = moment_bytes(NUM_PARAMS - 1);
        for (size_t l = 0; l < NUM_LAYERS; l++)
            seen[l] = seen[l] || mask[l];
        for (size_t i = 0; i + 1 < NUM_PARAMS; i++)
            if (seen[spec_of(i).layer])
                device += moment_bytes(i);
        owl_memory_usage u;
        assert_int_equal(owl_memory_usage_init(&u, sizeof u), OWL_OK);
        assert_owl_ok(gpu.ctx, owl_optimizer_memory(gpu.opt, &u));
        assert_int_equal(u.device_moments, device);
        assert_int_equal(u.host_moments, 0);
    }
    run_free(&gpu);
}

/* ---- save and load with offloaded moments -------------------------------- */

static void copy_weights(run *dst, const run *src)
{
    for (size_t i = 0; i < NUM_PARAMS; i++) {
        float *w = weights_of(src, i);
        to_backend(dst, dst->w[i], w, elems(i) * sizeof(float));
        free(w);
    }
}

static void check_resume(owl_method method)
{
    run_cfg c = {method, OWL_FROZEN_OFFLOAD, 2, 2, 1.0};
    run a, b;
    run_init(&a, true, &c, NULL);
    for (int s = 0; s < 5; s++) /* layers have left: moments offloaded */
        step(&a, lr_at(s), NULL);
    uint64_t size = 0, written = 0;
    assert_owl_ok(a.ctx, owl_optimizer_state_size(a.opt, &size));
    void *blob = malloc((size_t)size);
    assert_non_null(blob);
    assert_owl_ok(a.ctx, owl_optimizer_save(a.opt, blob, size, &written));
    assert_int_equal(written, size);

    run_init(&b, true, &c, NULL);
    copy_weights(&b, &a);
    assert_owl_ok(b.ctx, owl_optimizer_load(b.opt, blob, size));
    /* the loaded optimizer saves the same state back */
    uint64_t size2 = 0;
    assert_owl_ok(b.ctx, owl_optimizer_state_size(b.opt, &size2));
    assert_int_equal(size2, size);
    void *blob2 = malloc((size_t)size);
    assert_non_null(blob2);
    assert_owl_ok(b.ctx, owl_optimizer_save(b.opt, blob2, size, &written));
    assert_memory_equal(blob, blob2, (size_t)size);
    /* and holds the same memory: parked layers offloaded again */
    owl_memory_usage ua, ub;
    assert_int_equal(owl_memory_usage_init(&ua, sizeof ua), OWL_OK);
    assert_int_equal(owl_memory_usage_init(&ub, sizeof ub), OWL_OK);
    assert_owl_ok(a.ctx, owl_optimizer_memory(a.opt, &ua));
    assert_owl_ok(b.ctx, owl_optimizer_memory(b.opt, &ub));
    assert_int_equal(ua.device_moments, ub.device_moments);
    for (int s = 5; s < 10; s++) {
        step(&a, lr_at(s), NULL);
        step(&b, lr_at(s), NULL);
    }
    expect_identical(&b, &a, "resumed against uninterrupted");
    /* Loading over a live optimizer whose moments are offloaded. */
    assert_owl_ok(a.ctx, owl_optimizer_load(a.opt, blob, size));
    assert_owl_ok(a.ctx, owl_optimizer_save(a.opt, blob2, size, &written));
    assert_memory_equal(blob, blob2, (size_t)size);
    free(blob);
    free(blob2);
    run_free(&a);
    run_free(&b);
}

static void test_resume_with_offloaded_moments(void **state)
{
    (void)state;
    check_resume(OWL_METHOD_LISA);
    check_resume(OWL_METHOD_OWLORE);
}

int main(void)
{
    gpu_require_device();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_full_matches_cpu),
        cmocka_unit_test(test_lisa_policies_match_cpu),
        cmocka_unit_test(test_owlore_matches_cpu),
        cmocka_unit_test(test_offload_equals_keep),
        cmocka_unit_test(test_clipping_matches_cpu),
        cmocka_unit_test(test_clipped_grads_every_dtype),
        cmocka_unit_test(test_nan_skips_whole_step),
        cmocka_unit_test(test_norm_before_any_completed_step),
        cmocka_unit_test(test_offload_memory),
        cmocka_unit_test(test_resume_with_offloaded_moments),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
