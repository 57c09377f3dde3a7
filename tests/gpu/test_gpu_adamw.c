/*
 * Full-rank AdamW on the CUDA backend against the CPU backend on identical
 * inputs, over several steps with weight decay and changing lr, for every
 * weight dtype x moment dtype x semantics, in dense (the kernel's wide
 * path, with a tail) and strided (the general path) layouts.
 *
 * Tolerances: both backends do the same f32 operations in the same order
 * (the kernel spells each one out, so --use_fast_math neither fuses nor
 * approximates them); only pow(beta, t) comes from a different libm,
 * which can move the step size by one f32 ulp. Hence:
 *  - moments: the recurrence does not involve t, so f32 moments must agree
 *    to 1e-6 relative (in practice bit for bit) and bf16 moments within
 *    one bf16 ulp;
 *  - f32 weights: relative 1e-5 plus 1e-8 absolute (a one-ulp step-size
 *    change moves a weight by ~1e-7 of a ~1e-2 step per step);
 *  - bf16 / f16 weights: within one ulp of their dtype (a different step
 *    size can only flip a rounding that sits on a tie);
 *  - stochastic rounding: the same seed draws the same bits for the same
 *    element on both backends, so within one bf16 ulp as well.
 * Also: unbiasedness of stochastic rounding over 2^20 draws, a non-finite
 * gradient (skipped on the device and counted, bias correction unchanged,
 * the next step equal to the CPU's that never saw it), reset, work on a
 * non-default stream, and host pointers refused with an error.
 */
#include "gpu_util.h"

#include "../common/testutil.h"

#include <cuda_runtime_api.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- values of each dtype ------------------------------------------------ */

static size_t dt_size(owl_dtype dt)
{
    return dt == OWL_DTYPE_F32 ? 4 : 2;
}

static uint32_t f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static float f32_from_bits(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static float bf16_value(uint16_t h)
{
    return f32_from_bits((uint32_t)h << 16);
}

static float f16_value(uint16_t h)
{
    int e = (h >> 10) & 31, m = h & 1023;
    double v = e == 0 ? ldexp(m, -24)
               : e == 31 ? (m ? NAN : INFINITY)
                         : ldexp(1024 + m, e - 25);
    return (float)((h & 0x8000) ? -v : v);
}

/* Element i of a buffer of dtype dt as f32. */
static float value_at(const void *p, owl_dtype dt, size_t i)
{
    if (dt == OWL_DTYPE_F32)
        return ((const float *)p)[i];
    uint16_t h = ((const uint16_t *)p)[i];
    return dt == OWL_DTYPE_BF16 ? bf16_value(h) : f16_value(h);
}

/* A random finite value of dtype dt with magnitude in [2^-5, 2): f32 from a
 * normal draw, half types built from their bits so they are exact. */
static void put_random(void *p, owl_dtype dt, size_t i, uint64_t *state)
{
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    uint16_t sign = (uint16_t)((z & 1) << 15);
    if (dt == OWL_DTYPE_F32) {
        float mant = 1.0f + (float)((z >> 8) & 0xffffff) / 16777216.0f;
        float v = ldexpf(mant, (int)((z >> 40) % 6) - 5);
        ((float *)p)[i] = sign ? -v : v;
    } else if (dt == OWL_DTYPE_BF16) {
        uint16_t e = (uint16_t)(127 - 5 + (z >> 40) % 6);
        ((uint16_t *)p)[i] = (uint16_t)(sign | (e << 7) | ((z >> 8) & 0x7f));
    } else {
        uint16_t e = (uint16_t)(15 - 5 + (z >> 40) % 6);
        ((uint16_t *)p)[i] = (uint16_t)(sign | (e << 10) | ((z >> 8) & 0x3ff));
    }
}

/* The spacing of dtype dt's values at magnitude |x|. */
static double ulp_of(owl_dtype dt, double x)
{
    int e;
    frexp(fabs(x), &e); /* |x| in [2^(e-1), 2^e) */
    if (dt == OWL_DTYPE_BF16)
        return ldexp(1.0, e - 1 - 7 < -133 ? -133 : e - 1 - 7);
    if (dt == OWL_DTYPE_F16)
        return ldexp(1.0, e - 1 - 10 < -24 ? -24 : e - 1 - 10);
    return ldexp(1.0, e - 1 - 23);
}

/* GPU value a against CPU value b at the tolerance of the dtype: for f32,
 * relative f32_rel plus f32_abs (weights near zero, where a one-ulp change
 * of the step size is large relative to the weight). */
static void expect_close(owl_dtype dt, double a, double b, double f32_rel,
                         double f32_abs, const char *what, size_t i)
{
    double d = fabs(a - b);
    bool ok = dt == OWL_DTYPE_F32
                  ? d <= f32_rel * fabs(b) + f32_abs
                  : d <= ulp_of(dt, fabs(a) > fabs(b) ? a : b);
    if (!ok)
        fail_msg("%s[%zu]: GPU %.9g, CPU %.9g", what, i, a, b);
}

/* ---- one comparison run --------------------------------------------------- */

typedef struct {
    owl_dtype wd, gd, md;
    owl_adamw_semantics sem;
    owl_rounding rounding;
    double beta1;
    int64_t rows, cols, pad_w, pad_g;
} adam_case;

static const uint8_t PAD_BYTE = 0x5a; /* padding that must stay untouched */

/* A rows x (cols + pad) buffer: random values, padding bytes PAD_BYTE. */
static void *random_matrix(owl_dtype dt, int64_t rows, int64_t cols,
                           int64_t pad, uint64_t seed)
{
    size_t ld = (size_t)(cols + pad), es = dt_size(dt);
    char *p = malloc((size_t)rows * ld * es);
    assert_non_null(p);
    memset(p, PAD_BYTE, (size_t)rows * ld * es);
    uint64_t state = seed;
    for (int64_t i = 0; i < rows; i++)
        for (int64_t j = 0; j < cols; j++)
            put_random(p, dt, (size_t)i * ld + (size_t)j, &state);
    return p;
}

static owl_adamw *make_adamw(owl_context *ctx, const adam_case *c)
{
    owl_adamw_options o;
    owl_adamw_options_init(&o, sizeof o);
    o.beta1 = c->beta1;
    o.weight_decay = 0.1;
    o.semantics = c->sem;
    o.moment_dtype = c->md;
    o.rounding = c->rounding;
    o.seed = 0xC0FFEE;
    owl_adamw *a = NULL;
    assert_owl_ok(ctx, owl_adamw_create(ctx, &o, (uint64_t)c->rows,
                                        (uint64_t)c->cols, &a));
    return a;
}

/* Both moments of the GPU optimizer (read out into a strided device f32
 * tensor) against the CPU optimizer's. */
static void compare_moments(owl_context *gctx, owl_adamw *ga,
                            owl_context *cctx, owl_adamw *ca,
                            const adam_case *c)
{
    int64_t ldo = c->cols + 2;
    size_t n = (size_t)(c->rows * ldo);
    float *dev = gpu_alloc(n * sizeof(float));
    float *got = malloc(n * sizeof(float));
    float *want = malloc((size_t)(c->rows * c->cols) * sizeof(float));
    assert_true(got && want);
    for (int32_t which = 0; which < 2; which++) {
        owl_tensor t;
        owl_tensor_init(&t, dev, OWL_DTYPE_F32, c->rows, c->cols);
        t.row_stride = ldo;
        assert_owl_ok(gctx, owl_adamw_get_moment(ga, which, &t));
        gpu_download(got, dev, n * sizeof(float));
        owl_tensor_init(&t, want, OWL_DTYPE_F32, c->rows, c->cols);
        assert_owl_ok(cctx, owl_adamw_get_moment(ca, which, &t));
        for (int64_t i = 0; i < c->rows; i++)
            for (int64_t j = 0; j < c->cols; j++)
                expect_close(c->md, got[i * ldo + j], want[i * c->cols + j],
                             1e-6, 1e-30, which ? "v" : "m",
                             (size_t)(i * c->cols + j));
    }
    gpu_free(dev);
    free(got);
    free(want);
}

/* Weights of the GPU run (device dw) against the CPU's (hw), and the
 * GPU's padding untouched. */
static void compare_weights(const adam_case *c, const void *dw,
                            const void *hw)
{
    int64_t ld = c->cols + c->pad_w;
    size_t bytes = (size_t)(c->rows * ld) * dt_size(c->wd);
    unsigned char *got = malloc(bytes);
    assert_non_null(got);
    gpu_download(got, dw, bytes);
    size_t differ = 0, es = dt_size(c->wd);
    for (int64_t i = 0; i < c->rows; i++) {
        for (int64_t j = 0; j < c->cols; j++) {
            size_t k = (size_t)(i * ld + j);
            expect_close(c->wd, value_at(got, c->wd, k),
                         value_at(hw, c->wd, k), 1e-5, 1e-8, "weight", k);
            differ += memcmp(got + k * es, (const char *)hw + k * es, es) != 0;
        }
        for (int64_t j = c->cols; j < ld; j++)
            for (size_t b = 0; b < dt_size(c->wd); b++)
                assert_int_equal(got[(size_t)(i * ld + j) * dt_size(c->wd) + b],
                                 PAD_BYTE);
    }
    /* Half weights: a one-ulp difference needs a rounding tie (nearest) or
     * a random draw within an f32 ulp of the cut (stochastic), so nearly
     * all must be bit-identical; different random bits would flip about a
     * third of the stochastic roundings. */
    if (c->wd != OWL_DTYPE_F32 && differ * 100 > (size_t)(c->rows * c->cols))
        fail_msg("%zu of %lld half weights differ from the CPU's", differ,
                 (long long)(c->rows * c->cols));
    free(got);
}

static double step_lr(int step)
{
    return 1e-2 * (1.0 + 0.25 * step);
}

static void run_case(const adam_case *c)
{
    owl_context *gctx = gpu_context(), *cctx = cpu_context();
    owl_adamw *ga = make_adamw(gctx, c), *ca = make_adamw(cctx, c);
    int64_t ldw = c->cols + c->pad_w, ldg = c->cols + c->pad_g;
    size_t wbytes = (size_t)(c->rows * ldw) * dt_size(c->wd);
    size_t gbytes = (size_t)(c->rows * ldg) * dt_size(c->gd);
    void *hw = random_matrix(c->wd, c->rows, c->cols, c->pad_w, 7);
    void *dw = gpu_upload(hw, wbytes);
    void *dg = gpu_alloc(gbytes);
    owl_tensor cw, gw, cg, gg;
    owl_tensor_init(&cw, hw, c->wd, c->rows, c->cols);
    owl_tensor_init(&gw, dw, c->wd, c->rows, c->cols);
    cw.row_stride = gw.row_stride = ldw;
    const int steps = 4;
    for (int s = 0; s < steps; s++) {
        void *hg = random_matrix(c->gd, c->rows, c->cols, c->pad_g,
                                 100 + (uint64_t)s);
        assert_int_equal(cudaMemcpy(dg, hg, gbytes, cudaMemcpyHostToDevice),
                         cudaSuccess);
        owl_tensor_init(&cg, hg, c->gd, c->rows, c->cols);
        owl_tensor_init(&gg, dg, c->gd, c->rows, c->cols);
        cg.row_stride = gg.row_stride = ldg;
        assert_owl_ok(cctx, owl_adamw_full(ca, &cw, &cg, step_lr(s)));
        assert_owl_ok(gctx, owl_adamw_full(ga, &gw, &gg, step_lr(s)));
        free(hg);
    }
    compare_weights(c, dw, hw);
    compare_moments(gctx, ga, cctx, ca, c);
    assert_int_equal(owl_adamw_step_count(ga), steps);
    assert_int_equal(owl_adamw_bias_step(ga), steps);
    owl_adamw_free(ga);
    owl_adamw_free(ca);
    gpu_free(dw);
    gpu_free(dg);
    free(hw);
    owl_context_free(gctx);
    owl_context_free(cctx);
}

/* Every weight dtype x moment dtype x semantics, dense (37 x 131: the wide
 * path plus a tail of 3) and strided; the gradient's dtype varies too. */
static void test_matches_cpu(void **state)
{
    (void)state;
    const owl_dtype wds[] = {OWL_DTYPE_F32, OWL_DTYPE_BF16, OWL_DTYPE_F16};
    const owl_dtype mds[] = {OWL_DTYPE_F32, OWL_DTYPE_BF16};
    const owl_adamw_semantics sems[] = {OWL_ADAMW_GALORE, OWL_ADAMW_TORCH};
    for (int w = 0; w < 3; w++)
        for (int m = 0; m < 2; m++)
            for (int s = 0; s < 2; s++)
                for (int strided = 0; strided < 2; strided++) {
                    adam_case c = {wds[w], wds[(w + strided) % 3], mds[m],
                                   sems[s], OWL_ROUND_NEAREST, 0.9,
                                   37, 131, strided ? 5 : 0,
                                   strided ? 3 : 0};
                    run_case(&c);
                }
    /* torch's lerp in its other form (1 - beta1 >= 0.5), f32 and bf16. */
    adam_case c = {OWL_DTYPE_F32, OWL_DTYPE_F32, OWL_DTYPE_F32,
                   OWL_ADAMW_TORCH, OWL_ROUND_NEAREST, 0.3, 16, 64, 0, 0};
    run_case(&c);
    c.wd = c.gd = OWL_DTYPE_BF16;
    run_case(&c);
}

/* Stochastic bf16 rounding with one seed on both backends. */
static void test_stochastic_matches_cpu(void **state)
{
    (void)state;
    for (int strided = 0; strided < 2; strided++)
        for (int m = 0; m < 2; m++) {
            adam_case c = {OWL_DTYPE_BF16, OWL_DTYPE_BF16,
                           m ? OWL_DTYPE_BF16 : OWL_DTYPE_F32,
                           OWL_ADAMW_GALORE, OWL_ROUND_STOCHASTIC, 0.9,
                           33, 203, strided ? 4 : 0, strided ? 1 : 0};
            run_case(&c);
        }
}

/* 2^20 copies of one update: every element has the same f32 value x
 * before rounding, found with f32 weights on the CPU, which lies between
 * the bf16 values lo and hi. Stochastic rounding must give lo or hi, hi
 * with probability p = (x - lo) / (hi - lo): the observed fraction is
 * within 5 standard deviations of p, so the rounded mean is unbiased. */
static void test_stochastic_unbiased(void **state)
{
    (void)state;
    const int64_t rows = 1024, cols = 1024;
    const size_t n = (size_t)(rows * cols);
    const uint16_t w0 = 0x3f33; /* 0.69921875 */
    const float g0 = 0.3f;
    const double lr = 1e-3;

    owl_context *cctx = cpu_context();
    adam_case c = {OWL_DTYPE_F32, OWL_DTYPE_F32, OWL_DTYPE_F32,
                   OWL_ADAMW_GALORE, OWL_ROUND_NEAREST, 0.9, 1, 1, 0, 0};
    owl_adamw *ca = make_adamw(cctx, &c);
    float x = bf16_value(w0), g = g0;
    owl_tensor tw, tg;
    owl_tensor_init(&tw, &x, OWL_DTYPE_F32, 1, 1);
    owl_tensor_init(&tg, &g, OWL_DTYPE_F32, 1, 1);
    assert_owl_ok(cctx, owl_adamw_full(ca, &tw, &tg, lr));
    uint32_t xb = f32_bits(x);
    float lo = f32_from_bits(xb & 0xffff0000u);
    float hi = f32_from_bits((xb & 0xffff0000u) + 0x10000u);
    double p = (double)(xb & 0xffffu) / 65536.0;
    assert_true(x > 0 && p > 0.05 && p < 0.95); /* a real choice */

    uint16_t *hw = malloc(n * 2);
    float *hg = malloc(n * 4);
    assert_true(hw && hg);
    for (size_t i = 0; i < n; i++) {
        hw[i] = w0;
        hg[i] = g0;
    }
    void *dw = gpu_upload(hw, n * 2), *dg = gpu_upload(hg, n * 4);
    owl_context *gctx = gpu_context();
    c = (adam_case){OWL_DTYPE_BF16, OWL_DTYPE_F32, OWL_DTYPE_F32,
                    OWL_ADAMW_GALORE, OWL_ROUND_STOCHASTIC, 0.9, rows, cols,
                    0, 0};
    owl_adamw *ga = make_adamw(gctx, &c);
    owl_tensor_init(&tw, dw, OWL_DTYPE_BF16, rows, cols);
    owl_tensor_init(&tg, dg, OWL_DTYPE_F32, rows, cols);
    assert_owl_ok(gctx, owl_adamw_full(ga, &tw, &tg, lr));
    gpu_download(hw, dw, n * 2);
    size_t ups = 0;
    for (size_t i = 0; i < n; i++) {
        float v = bf16_value(hw[i]);
        if (v != lo && v != hi)
            fail_msg("element %zu rounded to %.9g, not %.9g or %.9g", i,
                     (double)v, (double)lo, (double)hi);
        ups += v == hi;
    }
    double frac = (double)ups / (double)n;
    double sigma = sqrt(p * (1 - p) / (double)n);
    if (fabs(frac - p) > 5 * sigma)
        fail_msg("rounded up %.6f of the time, expected %.6f (sigma %.2g)",
                 frac, p, sigma);
    owl_adamw_free(ga);
    owl_adamw_free(ca);
    gpu_free(dw);
    gpu_free(dg);
    free(hw);
    free(hg);
    owl_context_free(gctx);
    owl_context_free(cctx);
}

/* ---- non-finite gradients ------------------------------------------------ */

static void download_moment(owl_context *ctx, owl_adamw *a, int32_t which,
                            float *dev, float *host, int64_t rows,
                            int64_t cols)
{
    owl_tensor t;
    owl_tensor_init(&t, dev, OWL_DTYPE_F32, rows, cols);
    assert_owl_ok(ctx, owl_adamw_get_moment(a, which, &t));
    gpu_download(host, dev, (size_t)(rows * cols) * sizeof(float));
}

/* Two good steps; then a NaN in a dense gradient and an Inf in a strided
 * bf16 one (the two detection paths): the GPU returns OWL_OK, changes
 * nothing, counts the skips, keeps its bias-correction t; then one more
 * good step equals the CPU's third step. */
static void test_nonfinite_skipped(void **state)
{
    (void)state;
    const int64_t rows = 24, cols = 72, ldg = cols + 2;
    const size_t n = (size_t)(rows * cols);
    adam_case c = {OWL_DTYPE_F32, OWL_DTYPE_F32, OWL_DTYPE_F32,
                   OWL_ADAMW_GALORE, OWL_ROUND_NEAREST, 0.9, rows, cols,
                   0, 0};
    owl_context *gctx = gpu_context(), *cctx = cpu_context();
    owl_adamw *ga = make_adamw(gctx, &c), *ca = make_adamw(cctx, &c);
    float *hw = random_matrix(OWL_DTYPE_F32, rows, cols, 0, 3);
    void *dw = gpu_upload(hw, n * 4);
    owl_tensor cw, gw, cg, gg;
    owl_tensor_init(&cw, hw, OWL_DTYPE_F32, rows, cols);
    owl_tensor_init(&gw, dw, OWL_DTYPE_F32, rows, cols);
    float *good[3];
    for (int s = 0; s < 3; s++)
        good[s] = random_matrix(OWL_DTYPE_F32, rows, cols, 0, 40 + (uint64_t)s);
    void *dg = gpu_alloc(n * 4);
    for (int s = 0; s < 2; s++) {
        assert_int_equal(cudaMemcpy(dg, good[s], n * 4, cudaMemcpyHostToDevice),
                         cudaSuccess);
        owl_tensor_init(&cg, good[s], OWL_DTYPE_F32, rows, cols);
        owl_tensor_init(&gg, dg, OWL_DTYPE_F32, rows, cols);
        assert_owl_ok(cctx, owl_adamw_full(ca, &cw, &cg, step_lr(s)));
        assert_owl_ok(gctx, owl_adamw_full(ga, &gw, &gg, step_lr(s)));
    }

    float *w_before = malloc(n * 4), *w_after = malloc(n * 4);
    float *m_before = malloc(n * 4), *v_before = malloc(n * 4);
    float *m_after = malloc(n * 4), *v_after = malloc(n * 4);
    float *dmom = gpu_alloc(n * 4);
    assert_true(w_before && w_after && m_before && v_before && m_after &&
                v_after);
    gpu_download(w_before, dw, n * 4);
    download_moment(gctx, ga, 0, dmom, m_before, rows, cols);
    download_moment(gctx, ga, 1, dmom, v_before, rows, cols);
    uint64_t skips0 = 0;
    assert_owl_ok(gctx, owl_context_nonfinite_skips(gctx, &skips0));

    /* NaN in a dense f32 gradient. */
    float *bad = random_matrix(OWL_DTYPE_F32, rows, cols, 0, 77);
    bad[n - 5] = NAN;
    assert_int_equal(cudaMemcpy(dg, bad, n * 4, cudaMemcpyHostToDevice),
                     cudaSuccess);
    owl_tensor_init(&gg, dg, OWL_DTYPE_F32, rows, cols);
    assert_owl_ok(gctx, owl_adamw_full(ga, &gw, &gg, 0.5));
    /* +Inf in a strided bf16 gradient. */
    uint16_t *bad16 = random_matrix(OWL_DTYPE_BF16, rows, cols, 2, 78);
    bad16[5 * ldg + 17] = 0x7f80;
    void *dg16 = gpu_upload(bad16, (size_t)(rows * ldg) * 2);
    owl_tensor_init(&gg, dg16, OWL_DTYPE_BF16, rows, cols);
    gg.row_stride = ldg;
    assert_owl_ok(gctx, owl_adamw_full(ga, &gw, &gg, 0.5));

    gpu_download(w_after, dw, n * 4);
    download_moment(gctx, ga, 0, dmom, m_after, rows, cols);
    download_moment(gctx, ga, 1, dmom, v_after, rows, cols);
    assert_memory_equal(w_before, w_after, n * 4);
    assert_memory_equal(m_before, m_after, n * 4);
    assert_memory_equal(v_before, v_after, n * 4);
    uint64_t skips = 0;
    assert_owl_ok(gctx, owl_context_nonfinite_skips(gctx, &skips));
    assert_int_equal(skips, skips0 + 2);
    assert_int_equal(owl_adamw_bias_step(ga), 2);
    assert_int_equal(owl_adamw_step_count(ga), 4); /* every call counts */

    /* The third good step uses t = 3 on both. */
    assert_int_equal(cudaMemcpy(dg, good[2], n * 4, cudaMemcpyHostToDevice),
                     cudaSuccess);
    owl_tensor_init(&cg, good[2], OWL_DTYPE_F32, rows, cols);
    owl_tensor_init(&gg, dg, OWL_DTYPE_F32, rows, cols);
    assert_owl_ok(cctx, owl_adamw_full(ca, &cw, &cg, step_lr(2)));
    assert_owl_ok(gctx, owl_adamw_full(ga, &gw, &gg, step_lr(2)));
    compare_weights(&c, dw, hw);
    compare_moments(gctx, ga, cctx, ca, &c);
    assert_int_equal(owl_adamw_bias_step(ga), 3);
    assert_int_equal(owl_adamw_bias_step(ca), 3);

    /* Reset zeroes the moments and t (and the skip count behind it). */
    assert_owl_ok(gctx, owl_adamw_reset(ga));
    assert_owl_ok(cctx, owl_adamw_reset(ca));
    assert_int_equal(owl_adamw_bias_step(ga), 0);
    download_moment(gctx, ga, 1, dmom, v_after, rows, cols);
    for (size_t i = 0; i < n; i++)
        assert_true(v_after[i] == 0.0f);
    assert_owl_ok(cctx, owl_adamw_full(ca, &cw, &cg, step_lr(3)));
    assert_owl_ok(gctx, owl_adamw_full(ga, &gw, &gg, step_lr(3)));
    compare_weights(&c, dw, hw);
    compare_moments(gctx, ga, cctx, ca, &c);
    assert_int_equal(owl_adamw_bias_step(ga), 1);

    for (int s = 0; s < 3; s++)
        free(good[s]);
    free(bad);
    free(bad16);
    free(w_before);
    free(w_after);
    free(m_before);
    free(v_before);
    free(m_after);
    free(v_after);
    gpu_free(dmom);
    gpu_free(dg);
    gpu_free(dg16);
    gpu_free(dw);
    free(hw);
    owl_adamw_free(ga);
    owl_adamw_free(ca);
    owl_context_free(gctx);
    owl_context_free(cctx);
}

/* ---- streams ------------------------------------------------------------- */

/* Create, steps and read-out on a non-blocking stream, checked after
 * synchronising that stream alone. */
static void test_stream_ordering(void **state)
{
    (void)state;
    const int64_t rows = 64, cols = 512;
    const size_t n = (size_t)(rows * cols);
    cudaStream_t st;
    assert_int_equal(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking),
                     cudaSuccess);
    owl_context *gctx = gpu_context(), *cctx = cpu_context();
    assert_owl_ok(gctx, owl_context_set_stream(gctx, st));
    adam_case c = {OWL_DTYPE_BF16, OWL_DTYPE_BF16, OWL_DTYPE_F32,
                   OWL_ADAMW_TORCH, OWL_ROUND_NEAREST, 0.9, rows, cols, 0, 0};
    owl_adamw *ga = make_adamw(gctx, &c), *ca = make_adamw(cctx, &c);
    uint16_t *hw = random_matrix(OWL_DTYPE_BF16, rows, cols, 0, 9);
    uint16_t *hg[3];
    void *dg[3];
    for (int s = 0; s < 3; s++) {
        hg[s] = random_matrix(OWL_DTYPE_BF16, rows, cols, 0, 90 + (uint64_t)s);
        dg[s] = gpu_upload(hg[s], n * 2);
    }
    void *dw = gpu_upload(hw, n * 2);
    float *dm = gpu_alloc(n * 4);
    /* The uploads are complete before any work is issued on st. */
    assert_int_equal(cudaDeviceSynchronize(), cudaSuccess);

    owl_tensor cw, gw, cg, gg, mt;
    owl_tensor_init(&cw, hw, OWL_DTYPE_BF16, rows, cols);
    owl_tensor_init(&gw, dw, OWL_DTYPE_BF16, rows, cols);
    for (int s = 0; s < 3; s++) {
        owl_tensor_init(&cg, hg[s], OWL_DTYPE_BF16, rows, cols);
        owl_tensor_init(&gg, dg[s], OWL_DTYPE_BF16, rows, cols);
        assert_owl_ok(cctx, owl_adamw_full(ca, &cw, &cg, step_lr(s)));
        assert_owl_ok(gctx, owl_adamw_full(ga, &gw, &gg, step_lr(s)));
    }
    owl_tensor_init(&mt, dm, OWL_DTYPE_F32, rows, cols);
    assert_owl_ok(gctx, owl_adamw_get_moment(ga, 1, &mt));
    assert_int_equal(cudaStreamSynchronize(st), cudaSuccess);

    uint16_t *got = malloc(n * 2);
    float *v = malloc(n * 4), *want = malloc(n * 4);
    assert_true(got && v && want);
    assert_int_equal(cudaMemcpy(got, dw, n * 2, cudaMemcpyDeviceToHost),
                     cudaSuccess);
    assert_int_equal(cudaMemcpy(v, dm, n * 4, cudaMemcpyDeviceToHost),
                     cudaSuccess);
    owl_tensor_init(&mt, want, OWL_DTYPE_F32, rows, cols);
    assert_owl_ok(cctx, owl_adamw_get_moment(ca, 1, &mt));
    for (size_t i = 0; i < n; i++) {
        expect_close(OWL_DTYPE_BF16, bf16_value(got[i]), bf16_value(hw[i]),
                     0, 0, "weight", i);
        expect_close(OWL_DTYPE_F32, v[i], want[i], 1e-6, 1e-30, "v", i);
    }

    owl_adamw_free(ga);
    owl_adamw_free(ca);
    owl_context_free(gctx);
    owl_context_free(cctx);
    assert_int_equal(cudaStreamDestroy(st), cudaSuccess);
    for (int s = 0; s < 3; s++) {
        gpu_free(dg[s]);
        free(hg[s]);
    }
    gpu_free(dw);
    gpu_free(dm);
    free(hw);
    free(got);
    free(v);
    free(want);
}

/* ---- validation ---------------------------------------------------------- */

/* Host memory handed to a CUDA context is an error, never a fault, and
 * changes nothing; so are the usual bad arguments. */
static void test_validation(void **state)
{
    (void)state;
    const int64_t rows = 8, cols = 16;
    const size_t n = (size_t)(rows * cols);
    owl_context *gctx = gpu_context();
    adam_case c = {OWL_DTYPE_F32, OWL_DTYPE_F32, OWL_DTYPE_F32,
                   OWL_ADAMW_GALORE, OWL_ROUND_NEAREST, 0.9, rows, cols, 0, 0};
    owl_adamw *ga = make_adamw(gctx, &c);
    float *hw = calloc(n, 4), *hg = calloc(n, 4);
    assert_true(hw && hg);
    void *dw = gpu_upload(hw, n * 4), *dg = gpu_upload(hg, n * 4);
    owl_tensor w_host, g_host, w_dev, g_dev, small;
    owl_tensor_init(&w_host, hw, OWL_DTYPE_F32, rows, cols);
    owl_tensor_init(&g_host, hg, OWL_DTYPE_F32, rows, cols);
    owl_tensor_init(&w_dev, dw, OWL_DTYPE_F32, rows, cols);
    owl_tensor_init(&g_dev, dg, OWL_DTYPE_F32, rows, cols);
    owl_tensor_init(&small, dw, OWL_DTYPE_F32, rows, cols - 1);

    assert_owl_status(gctx, owl_adamw_full(ga, &w_host, &g_dev, 0.1),
                      OWL_ERR_INVALID_ARGUMENT);
    assert_non_null(strstr(owl_context_last_error(gctx), "weight"));
    assert_owl_status(gctx, owl_adamw_full(ga, &w_dev, &g_host, 0.1),
                      OWL_ERR_INVALID_ARGUMENT);
    assert_non_null(strstr(owl_context_last_error(gctx), "grad"));
    assert_owl_status(gctx, owl_adamw_full(ga, &w_dev, &g_dev, -1.0),
                      OWL_ERR_INVALID_ARGUMENT);
    assert_owl_status(gctx, owl_adamw_full(ga, &small, &small, 0.1),
                      OWL_ERR_MISMATCH);
    assert_owl_status(gctx, owl_adamw_full(ga, &w_dev, NULL, 0.1),
                      OWL_ERR_NULL_POINTER);
    assert_int_equal(owl_adamw_step_count(ga), 0);
    assert_int_equal(owl_adamw_bias_step(ga), 0);

    float *hm = calloc(n, 4);
    assert_non_null(hm);
    owl_tensor m_host;
    owl_tensor_init(&m_host, hm, OWL_DTYPE_F32, rows, cols);
    assert_owl_status(gctx, owl_adamw_get_moment(ga, 0, &m_host),
                      OWL_ERR_INVALID_ARGUMENT);
    assert_owl_status(gctx, owl_adamw_get_moment(ga, 2, &w_dev),
                      OWL_ERR_INVALID_ARGUMENT);

    /* The moments start at zero (allocated zeroed on the stream). */
    assert_owl_ok(gctx, owl_adamw_get_moment(ga, 0, &w_dev));
    gpu_download(hm, dw, n * 4);
    for (size_t i = 0; i < n; i++)
        assert_true(hm[i] == 0.0f);

    owl_adamw_options o;
    owl_adamw_options_init(&o, sizeof o);
    o.beta2 = 1.0;
    owl_adamw *bad = (owl_adamw *)1;
    assert_owl_status(gctx, owl_adamw_create(gctx, &o, 4, 4, &bad),
                      OWL_ERR_INVALID_ARGUMENT);
    assert_null(bad);
    owl_adamw_free(NULL);

    owl_adamw_free(ga);
    gpu_free(dw);
    gpu_free(dg);
    free(hw);
    free(hg);
    free(hm);
    owl_context_free(gctx);
}

int main(void)
{
    gpu_require_device();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_matches_cpu),
        cmocka_unit_test(test_stochastic_matches_cpu),
        cmocka_unit_test(test_stochastic_unbiased),
        cmocka_unit_test(test_nonfinite_skipped),
        cmocka_unit_test(test_stream_ordering),
        cmocka_unit_test(test_validation),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
