/*
 * The LLaMa example's CUDA kernels (examples/llama/cuda/lk.h), run on the
 * host through the emulator (emu/cuda_emu.h), against references written
 * here in double from the mathematical definitions.
 *
 * Inputs that the kernels read as bf16 are rounded to bf16 first and the
 * reference is fed the same rounded values, so a tolerance only has to
 * cover the kernel's f32 arithmetic and the bf16 rounding of its output:
 *  - exact: the casts (bit for bit against a rounding written here from
 *    the definition: the nearer of the two neighbouring bf16 values, ties
 *    to the even one), the embedding lookup, the f32 add;
 *  - bf16 outputs: |got - ref| <= 2^-7 |ref| + abs, where 2^-7 is twice
 *    bf16's unit roundoff (8 significant bits: rounding to nearest is off
 *    by at most 2^-8 relative) to leave room for the f32 error of the
 *    value before rounding, and abs (stated per check, ~1e-6 of the
 *    values' scale) covers f32 cancellation near zero;
 *  - f32 outputs: ~1e-5 relative to the values' scale (f32 sums of at most
 *    a few hundred terms);
 *  - attention gradients: the kernels use the bf16-rounded o in
 *    delta = rowsum(d_o * o), as FlashAttention does, so d_q and d_k carry
 *    an extra error of up to 2^-8 |d_o| |o| per row: against the exact
 *    gradients they are compared with 2^-6 of the tensor's largest value,
 *    and tightly against the same definition with delta from the bf16 o.
 * The emulator runs each block's threads as fibers, in a fresh random
 * order between any two barriers, so a kernel whose threads read shared
 * memory without the barrier that orders it gets stale values and fails
 * these checks.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "lk.h"
#include "model_internal.h"
#include "common/testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ */
/* Helpers                                                             */
/* ------------------------------------------------------------------ */

static uint32_t f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static float bits_f32(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static float bf16_value(lk_bf16 h) { return bits_f32((uint32_t)h << 16); }

/* Round to nearest, ties to even, from the definition: the two bf16
 * values around f (truncation and the next one away from zero) and the
 * distances to them in double. Past the largest finite bf16 the upper
 * neighbour is 2^128 (what IEEE rounding compares against) and the result
 * is Inf. NaN is handled by the caller. */
static lk_bf16 ref_bf16(float f)
{
    uint32_t u = f32_bits(f);
    uint32_t lo = u & 0xffff0000u, hi = lo + 0x10000u;
    double a = fabs((double)f), dlo = fabs((double)bits_f32(lo));
    double dhi = ((hi >> 23) & 0xffu) == 0xffu ? ldexp(1.0, 128)
                                               : fabs((double)bits_f32(hi));
    if ((u & 0x7fffffffu) == 0x7f800000u) /* Inf stays */
        return (lk_bf16)(u >> 16);
    if (a - dlo < dhi - a)
        return (lk_bf16)(lo >> 16);
    if (a - dlo > dhi - a)
        return (lk_bf16)(hi >> 16);
    return (lo >> 16) & 1u ? (lk_bf16)(hi >> 16) : (lk_bf16)(lo >> 16);
}

static void *xmalloc(size_t bytes)
{
    void *p = malloc(bytes ? bytes : 1);
    assert_non_null(p);
    return p;
}

/* n random bf16 values of N(0, std^2) (or uniform when std < 0: [-1, 1)),
 * and the same values as floats. */
static lk_bf16 *random_bf16(size_t n, uint64_t seed, float std, float **as_f32)
{
    float *x = xmalloc(n * sizeof(float));
    if (std < 0)
        test_fill_uniform(x, n, seed);
    else {
        test_fill_normal(x, n, seed);
        for (size_t i = 0; i < n; i++)
            x[i] *= std;
    }
    lk_bf16 *h = xmalloc(n * sizeof(lk_bf16));
    for (size_t i = 0; i < n; i++) {
        h[i] = ref_bf16(x[i]);
        x[i] = bf16_value(h[i]);
    }
    if (as_f32)
        *as_f32 = x;
    else
        free(x);
    return h;
}

static float *random_f32(size_t n, uint64_t seed, float std)
{
    float *x = xmalloc(n * sizeof(float));
    test_fill_normal(x, n, seed);
    for (size_t i = 0; i < n; i++)
        x[i] *= std;
    return x;
}

static double max_abs(const double *r, size_t n)
{
    double m = 0.0;
    for (size_t i = 0; i < n; i++)
        m = fabs(r[i]) > m ? fabs(r[i]) : m;
    return m;
}

/* |got - ref| <= rel |ref| + abs element by element, or the test fails
 * naming the first offender. */
static void check_f32(const char *what, const float *got, const double *ref,
                      size_t n, double rel, double abs_)
{
    for (size_t i = 0; i < n; i++)
        if (!(fabs((double)got[i] - ref[i]) <= rel * fabs(ref[i]) + abs_))
            fail_msg("%s[%zu]: got %.9g, want %.9g (tolerance %g rel + %g)",
                     what, i, (double)got[i], ref[i], rel, abs_);
}

static void check_bf16(const char *what, const lk_bf16 *got,
                       const double *ref, size_t n, double rel, double abs_)
{
    for (size_t i = 0; i < n; i++) {
        double g = bf16_value(got[i]);
        if (!(fabs(g - ref[i]) <= rel * fabs(ref[i]) + abs_))
            fail_msg("%s[%zu]: got %.9g, want %.9g (tolerance %g rel + %g)",
                     what, i, g, ref[i], rel, abs_);
    }
}

#define BF16_REL (1.0 / 128.0) /* 2^-7: see the header */

/* ------------------------------------------------------------------ */
/* Casts and the f32 add                                               */
/* ------------------------------------------------------------------ */

static void test_casts(void **state)
{
    (void)state;
    /* Hand-picked values: ties either way, the largest finite f32 (rounds
     * to Inf), the smallest subnormal, signed zeros, infinities; then
     * random values over many binades, spanning several blocks. */
    const uint32_t special[] = {
        0x3f808000u, /* 1 + 2^-8: tie, 0x3f80 is even -> down */
        0x3f818000u, /* tie, 0x3f81 is odd -> up to 0x3f82 */
        0x3f808001u, /* just above the tie -> up */
        0xbf80ffffu, /* negative, rounds away from zero */
        0x7f7fffffu, /* FLT_MAX -> Inf */
        0x7f7f7fffu, /* below the midpoint to Inf -> 0x7f7f */
        0x00000001u, /* smallest subnormal -> +0 */
        0x00008000u, /* subnormal tie, even -> 0 */
        0x00018000u, /* subnormal tie, odd -> up */
        0x80000000u, 0x00000000u, 0x7f800000u, 0xff800000u,
    };
    const size_t ns = sizeof special / sizeof special[0];
    const size_t n = 5000;
    float *x = xmalloc(n * sizeof(float));
    test_fill_normal(x, n, 11);
    for (size_t i = 0; i < n; i++)
        x[i] = ldexpf(x[i], (int)(i % 61) - 30);
    for (size_t i = 0; i < ns; i++)
        x[i] = bits_f32(special[i]);
    x[ns] = NAN;
    x[ns + 1] = -NAN;
    lk_bf16 *h = xmalloc(n * sizeof(lk_bf16));
    assert_int_equal(lk_f32_to_bf16(NULL, h, x, (int64_t)n), 0);
    for (size_t i = 0; i < n; i++) {
        if (isnan(x[i])) {
            assert_true(isnan(bf16_value(h[i])));
            continue;
        }
        if (h[i] != ref_bf16(x[i]))
            fail_msg("f32_to_bf16(%a = 0x%08x) = 0x%04x, want 0x%04x",
                     (double)x[i], f32_bits(x[i]), h[i], ref_bf16(x[i]));
    }
    /* The hand-derived values themselves, so the reference is checked. */
    assert_int_equal(h[0], 0x3f80);
    assert_int_equal(h[1], 0x3f82);
    assert_int_equal(h[2], 0x3f81);
    assert_int_equal(h[3], 0xbf81);
    assert_int_equal(h[4], 0x7f80);
    assert_int_equal(h[5], 0x7f7f);
    assert_int_equal(h[6], 0x0000);
    assert_int_equal(h[7], 0x0000);
    assert_int_equal(h[8], 0x0002);

    /* bf16 -> f32 is exact: the 16 bits become the high half. */
    float *back = xmalloc(n * sizeof(float));
    assert_int_equal(lk_bf16_to_f32(NULL, back, h, (int64_t)n), 0);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(f32_bits(back[i]), (uint32_t)h[i] << 16);

    /* y += x in f32: exactly the host's f32 sum. */
    float *y = random_f32(n, 12, 3.0f), *y0 = xmalloc(n * sizeof(float));
    float *a = random_f32(n, 13, 1.0f);
    memcpy(y0, y, n * sizeof(float));
    assert_int_equal(lk_add_f32(NULL, y, a, (int64_t)n), 0);
    for (size_t i = 0; i < n; i++) {
        float want = y0[i] + a[i];
        assert_int_equal(f32_bits(y[i]), f32_bits(want));
    }
    /* n = 0 launches nothing and succeeds. */
    assert_int_equal(lk_add_f32(NULL, y, a, 0), 0);
    free(x), free(h), free(back), free(y), free(y0), free(a);
}

/* ------------------------------------------------------------------ */
/* Embedding                                                           */
/* ------------------------------------------------------------------ */

static void test_embed(void **state)
{
    (void)state;
    const int vocab = 11, dim = 37;
    const int64_t n = 40;
    float *table_f;
    lk_bf16 *table = random_bf16((size_t)vocab * dim, 21, 1.0f, &table_f);
    int32_t *tokens = xmalloc((size_t)n * sizeof(int32_t));
    /* Tokens repeat (40 positions over 11 ids, several of them often);
     * id 10 never occurs, so its gradient row must stay as it was. */
    for (int64_t i = 0; i < n; i++)
        tokens[i] = (int32_t)((i * 7 + i / 5) % 10);
    tokens[3] = tokens[4] = tokens[5] = 2;

    float *x = xmalloc((size_t)n * dim * sizeof(float));
    assert_int_equal(lk_embed_forward(NULL, x, table, tokens, n, dim), 0);
    for (int64_t i = 0; i < n; i++)
        for (int j = 0; j < dim; j++)
            assert_int_equal(f32_bits(x[i * dim + j]),
                             f32_bits(table_f[(size_t)tokens[i] * dim + j]));

    /* Backward: accumulates into a gradient that already holds values. */
    float *d_x = random_f32((size_t)n * dim, 22, 1.0f);
    float *d_e = random_f32((size_t)vocab * dim, 23, 1.0f);
    double *ref = xmalloc((size_t)vocab * dim * sizeof(double));
    for (size_t i = 0; i < (size_t)vocab * dim; i++)
        ref[i] = d_e[i];
    for (int64_t i = 0; i < n; i++)
        for (int j = 0; j < dim; j++)
            ref[(size_t)tokens[i] * dim + j] += d_x[i * dim + j];
    assert_int_equal(lk_embed_backward(NULL, d_e, d_x, tokens, n, dim), 0);
    /* f32 sums of at most ~10 terms of size ~1: 1e-5 absolute. */
    check_f32("d_embed", d_e, ref, (size_t)vocab * dim, 0.0, 1e-5);
    free(table), free(table_f), free(tokens), free(x), free(d_x), free(d_e);
    free(ref);
}

/* ------------------------------------------------------------------ */
/* SwiGLU                                                              */
/* ------------------------------------------------------------------ */

static void test_swiglu(void **state)
{
    (void)state;
    const size_t n = 1000;
    float *g, *u, *dm;
    lk_bf16 *gate = random_bf16(n, 31, 3.0f, &g);
    lk_bf16 *up = random_bf16(n, 32, 1.0f, &u);
    lk_bf16 *d_mid = random_bf16(n, 33, 1.0f, &dm);
    lk_bf16 *mid = xmalloc(n * sizeof(lk_bf16));
    double *r_mid = xmalloc(n * sizeof(double));
    double *r_dg = xmalloc(n * sizeof(double));
    double *r_du = xmalloc(n * sizeof(double));
    for (size_t i = 0; i < n; i++) {
        double s = 1.0 / (1.0 + exp(-(double)g[i]));
        r_mid[i] = g[i] * s * u[i];
        r_du[i] = (double)dm[i] * g[i] * s;
        r_dg[i] = (double)dm[i] * u[i] * s * (1.0 + g[i] * (1.0 - s));
    }
    assert_int_equal(lk_swiglu_forward(NULL, mid, gate, up, (int64_t)n), 0);
    check_bf16("mid", mid, r_mid, n, BF16_REL, 1e-6 * max_abs(r_mid, n));

    /* Backward in place: d_gate is d_mid. */
    lk_bf16 *d_up = xmalloc(n * sizeof(lk_bf16));
    assert_int_equal(lk_swiglu_backward(NULL, d_mid, d_up, d_mid, gate, up,
                                        (int64_t)n), 0);
    check_bf16("d_up", d_up, r_du, n, BF16_REL, 1e-6 * max_abs(r_du, n));
    check_bf16("d_gate", d_mid, r_dg, n, BF16_REL, 1e-6 * max_abs(r_dg, n));
    free(g), free(u), free(dm), free(gate), free(up), free(d_mid), free(mid);
    free(r_mid), free(r_dg), free(r_du), free(d_up);
}

/* ------------------------------------------------------------------ */
/* RMSNorm                                                             */
/* ------------------------------------------------------------------ */

/* y = x r g with r = (mean(x^2) + eps)^(-1/2), in double. */
static double rms_rstd(const float *x, int dim, double eps)
{
    double ss = 0.0;
    for (int j = 0; j < dim; j++)
        ss += (double)x[j] * x[j];
    return 1.0 / sqrt(ss / dim + eps);
}

static void rmsnorm_forward_case(int64_t n, int dim, uint64_t seed)
{
    const float eps = 1e-5f;
    float *x = random_f32((size_t)n * dim, seed, 2.0f), *gf;
    lk_bf16 *gain = random_bf16((size_t)dim, seed + 1, 1.0f, &gf);
    lk_bf16 *y = xmalloc((size_t)n * dim * sizeof(lk_bf16));
    float *rstd = xmalloc((size_t)n * sizeof(float));
    double *r_y = xmalloc((size_t)n * dim * sizeof(double));
    double *r_rstd = xmalloc((size_t)n * sizeof(double));
    for (int64_t i = 0; i < n; i++) {
        r_rstd[i] = rms_rstd(x + i * dim, dim, eps);
        for (int j = 0; j < dim; j++)
            r_y[i * dim + j] = x[i * dim + j] * r_rstd[i] * gf[j];
    }
    assert_int_equal(lk_rmsnorm_forward(NULL, y, rstd, x, gain, n, dim, eps), 0);
    /* rstd: an f32 sum of dim squares, then rsqrt: 1e-5 relative. */
    check_f32("rstd", rstd, r_rstd, (size_t)n, 1e-5, 0.0);
    check_bf16("y", y, r_y, (size_t)n * dim, BF16_REL,
               1e-6 * max_abs(r_y, (size_t)n * dim));
    free(x), free(gf), free(gain), free(y), free(rstd), free(r_y), free(r_rstd);
}

static void test_rmsnorm_forward(void **state)
{
    (void)state;
    rmsnorm_forward_case(5, 64, 41);   /* dim < threads per block */
    rmsnorm_forward_case(3, 300, 42);  /* dim > threads, not a multiple */
    rmsnorm_forward_case(1, 1, 43);
}

/* L(x, g) = sum_ij d_y[i,j] y[i,j](x, g), y the double forward: its
 * gradients are what lk_rmsnorm_backward computes (d_x for dL/dx, d_gain
 * for dL/dg). */
static double rms_loss(const float *x, const double *g, const float *d_y,
                       int64_t n, int dim, double eps)
{
    double L = 0.0;
    for (int64_t i = 0; i < n; i++) {
        double r = rms_rstd(x + i * dim, dim, eps);
        for (int j = 0; j < dim; j++)
            L += (double)d_y[i * dim + j] * x[i * dim + j] * r * g[j];
    }
    return L;
}

static void rmsnorm_backward_case(int64_t n, int dim, uint64_t seed)
{
    const float eps = 1e-5f;
    const size_t nd = (size_t)n * dim;
    float *x = random_f32(nd, seed, 1.0f), *gf;
    lk_bf16 *gain = random_bf16((size_t)dim, seed + 1, 1.0f, &gf);
    float *d_y = random_f32(nd, seed + 2, 1.0f);
    float *d_x = random_f32(nd, seed + 3, 1.0f);
    float *d_g = random_f32((size_t)dim, seed + 4, 1.0f);
    float *d_x0 = xmalloc(nd * sizeof(float)), *d_g0 = xmalloc(dim * sizeof(float));
    memcpy(d_x0, d_x, nd * sizeof(float));
    memcpy(d_g0, d_g, (size_t)dim * sizeof(float));
    float *rstd = xmalloc((size_t)n * sizeof(float));
    lk_bf16 *y = xmalloc(nd * sizeof(lk_bf16));
    assert_int_equal(lk_rmsnorm_forward(NULL, y, rstd, x, gain, n, dim, eps), 0);

    /* Reference: central differences of the double forward (step h on a
     * value of size ~1: truncation ~h^2, rounding ~1e-16/h: ~1e-10). The
     * expected gradient is the initial content plus the derivative. */
    const double h = 1e-5;
    double *g = xmalloc((size_t)dim * sizeof(double));
    for (int j = 0; j < dim; j++)
        g[j] = gf[j];
    double *r_dx = xmalloc(nd * sizeof(double));
    double *r_dg = xmalloc((size_t)dim * sizeof(double));
    for (size_t k = 0; k < nd; k++) {
        /* x[k] +- h in a double copy of its row (a float would round the
         * step away). */
        int64_t i = (int64_t)(k / (size_t)dim);
        double row[512];
        assert_true(dim <= 512);
        double Lpm[2];
        for (int s = 0; s < 2; s++) {
            for (int j = 0; j < dim; j++)
                row[j] = x[i * dim + j];
            row[k % (size_t)dim] += s == 0 ? h : -h;
            double ss = 0.0;
            for (int j = 0; j < dim; j++)
                ss += row[j] * row[j];
            double r = 1.0 / sqrt(ss / dim + eps), L = 0.0;
            for (int j = 0; j < dim; j++)
                L += (double)d_y[i * dim + j] * row[j] * r * g[j];
            Lpm[s] = L;
        }
        r_dx[k] = d_x0[k] + (Lpm[0] - Lpm[1]) / (2 * h);
    }
    for (int j = 0; j < dim; j++) {
        double gj = g[j], Lp, Lm;
        g[j] = gj + h;
        Lp = rms_loss(x, g, d_y, n, dim, eps);
        g[j] = gj - h;
        Lm = rms_loss(x, g, d_y, n, dim, eps);
        g[j] = gj;
        r_dg[j] = d_g0[j] + (Lp - Lm) / (2 * h);
    }

    assert_int_equal(lk_rmsnorm_backward(NULL, d_x, d_g, d_y, x, rstd, gain,
                                         n, dim), 0);
    /* f32 row dot products (dim terms) and f32 column sums (n terms) of
     * values ~1, against a reference good to ~1e-9: 1e-5 of the scale. */
    check_f32("d_x", d_x, r_dx, nd, 1e-5, 1e-5 * max_abs(r_dx, nd));
    check_f32("d_gain", d_g, r_dg, (size_t)dim, 1e-5,
              1e-5 * max_abs(r_dg, (size_t)dim));

    /* d_gain NULL: d_x alone; d_x NULL: d_gain alone, each accumulating
     * the same amounts again. */
    float *d_x1 = xmalloc(nd * sizeof(float)), *d_g1 = xmalloc(dim * sizeof(float));
    memcpy(d_x1, d_x0, nd * sizeof(float));
    memcpy(d_g1, d_g0, (size_t)dim * sizeof(float));
    assert_int_equal(lk_rmsnorm_backward(NULL, d_x1, NULL, d_y, x, rstd, gain,
                                         n, dim), 0);
    check_f32("d_x (no d_gain)", d_x1, r_dx, nd, 1e-5, 1e-5 * max_abs(r_dx, nd));
    assert_int_equal(lk_rmsnorm_backward(NULL, NULL, d_g1, d_y, x, rstd, gain,
                                         n, dim), 0);
    check_f32("d_gain (no d_x)", d_g1, r_dg, (size_t)dim, 1e-5,
              1e-5 * max_abs(r_dg, (size_t)dim));
    free(x), free(gf), free(gain), free(d_y), free(d_x), free(d_g), free(d_x0);
    free(d_g0), free(rstd), free(y), free(g), free(r_dx), free(r_dg);
    free(d_x1), free(d_g1);
}

static void test_rmsnorm_backward(void **state)
{
    (void)state;
    rmsnorm_backward_case(3, 20, 51);
    /* 150 rows: d_gain sums three row chunks through atomics. */
    rmsnorm_backward_case(150, 40, 52);
    rmsnorm_backward_case(2, 300, 53);
}

/* ------------------------------------------------------------------ */
/* RoPE                                                                */
/* ------------------------------------------------------------------ */

static void test_rope(void **state)
{
    (void)state;
    const int B = 2, T = 5, heads = 3, hd = 16, half = hd / 2;
    const int64_t n = (int64_t)B * T;
    const size_t nx = (size_t)n * heads * hd;
    /* model.c's tables: angle t * theta^(-i/half), rounded to f32. */
    float *cs = xmalloc((size_t)T * half * sizeof(float));
    float *sn = xmalloc((size_t)T * half * sizeof(float));
    for (int t = 0; t < T; t++)
        for (int i = 0; i < half; i++) {
            double angle = t * pow(10000.0, -(double)i / half);
            cs[t * half + i] = (float)cos(angle);
            sn[t * half + i] = (float)sin(angle);
        }
    float *xf;
    lk_bf16 *x = random_bf16(nx, 61, 1.0f, &xf);
    lk_bf16 *x0 = xmalloc(nx * sizeof(lk_bf16));
    memcpy(x0, x, nx * sizeof(lk_bf16));
    double *ref = xmalloc(nx * sizeof(double));
    double *pair_norm = xmalloc(nx * sizeof(double));
    for (int inverse = 0; inverse < 2; inverse++) {
        double sign = inverse ? -1.0 : 1.0;
        for (int64_t r = 0; r < n; r++)
            for (int h = 0; h < heads; h++)
                for (int i = 0; i < half; i++) {
                    size_t at = (size_t)r * heads * hd + (size_t)h * hd + i;
                    double a = xf[at], b = xf[at + half];
                    double c = cs[(r % T) * half + i];
                    double s = sign * sn[(r % T) * half + i];
                    ref[at] = a * c - b * s;
                    ref[at + half] = b * c + a * s;
                    pair_norm[at] = pair_norm[at + half] = sqrt(a * a + b * b);
                }
        memcpy(x, x0, nx * sizeof(lk_bf16));
        assert_int_equal(lk_rope(NULL, x, cs, sn, n, T, heads, hd, inverse), 0);
        /* Position 0 rotates by angle 0 (cos 1, sin 0): exactly unchanged. */
        for (int b = 0; b < B; b++)
            for (int k = 0; k < heads * hd; k++)
                assert_int_equal(x[(size_t)b * T * heads * hd + k],
                                 x0[(size_t)b * T * heads * hd + k]);
        /* bf16 output: 2^-7 relative, plus f32 cancellation (~1e-6 of the
         * pair's norm) for outputs near zero. */
        for (size_t k = 0; k < nx; k++) {
            double got = bf16_value(x[k]);
            if (!(fabs(got - ref[k]) <= BF16_REL * fabs(ref[k]) +
                                            1e-6 * pair_norm[k]))
                fail_msg("rope(inverse=%d)[%zu]: got %.9g, want %.9g", inverse,
                         k, got, ref[k]);
        }
    }
    /* The inverse undoes the rotation up to two bf16 roundings: the first
     * moves the pair by at most sqrt(2) 2^-8 of its norm (the rotation
     * back keeps that), the second a coordinate by 2^-8 of it: 2^-6 of the
     * norm covers both. */
    memcpy(x, x0, nx * sizeof(lk_bf16));
    assert_int_equal(lk_rope(NULL, x, cs, sn, n, T, heads, hd, 0), 0);
    assert_int_equal(lk_rope(NULL, x, cs, sn, n, T, heads, hd, 1), 0);
    for (size_t k = 0; k < nx; k++)
        if (!(fabs((double)bf16_value(x[k]) - xf[k]) <= pair_norm[k] / 64.0))
            fail_msg("rope then inverse [%zu]: got %.9g, was %.9g", k,
                     (double)bf16_value(x[k]), (double)xf[k]);
    free(cs), free(sn), free(xf), free(x), free(x0), free(ref), free(pair_norm);
}

/* ------------------------------------------------------------------ */
/* Cross-entropy                                                       */
/* ------------------------------------------------------------------ */

static void ce_case(int64_t n, int vocab, uint64_t seed)
{
    const size_t nv = (size_t)n * vocab;
    float *lf;
    lk_bf16 *logits = random_bf16(nv, seed, 2.0f, &lf);
    /* Row 1 is shifted by +80 and row 3 by -200: exp without subtracting
     * the row's true maximum would overflow, or underflow to a zero sum. */
    for (int64_t i = 1; i < n && i <= 3; i += 2)
        for (int j = 0; j < vocab; j++) {
            size_t at = (size_t)i * vocab + j;
            logits[at] = ref_bf16(lf[at] + (i == 1 ? 80.0f : -200.0f));
            lf[at] = bf16_value(logits[at]);
        }
    int32_t *targets = xmalloc((size_t)n * sizeof(int32_t));
    int counted = 0;
    for (int64_t i = 0; i < n; i++) {
        targets[i] = (int32_t)((i * 37 + 5) % vocab);
        if (i % 3 == 2)
            targets[i] = -1 - (int32_t)i; /* ignored rows (-3, -6, ...) */
        counted += targets[i] >= 0;
    }
    targets[0] = vocab - 1;
    float scale = 1.0f / (float)(counted ? counted : 1);
    double *r_loss = xmalloc((size_t)n * sizeof(double));
    double *r_grad = xmalloc(nv * sizeof(double));
    for (int64_t i = 0; i < n; i++) {
        const float *row = lf + (size_t)i * vocab;
        double mx = row[0], sum = 0.0;
        for (int j = 1; j < vocab; j++)
            mx = row[j] > mx ? row[j] : mx;
        for (int j = 0; j < vocab; j++)
            sum += exp(row[j] - mx);
        double lse = mx + log(sum);
        int32_t t = targets[i];
        r_loss[i] = t >= 0 ? lse - row[t] : 0.0;
        for (int j = 0; j < vocab; j++)
            r_grad[(size_t)i * vocab + j] =
                t >= 0 ? scale * (exp(row[j] - lse) - (j == t)) : 0.0;
    }
    float *loss = xmalloc((size_t)n * sizeof(float));
    assert_int_equal(lk_cross_entropy(NULL, logits, loss, targets, n, vocab,
                                      scale), 0);
    /* Loss: f32 sum of exps and a log, then a difference of values of the
     * row's size (up to ~200): 1e-5 of (1 + |loss| + shift) absolute. */
    for (int64_t i = 0; i < n; i++) {
        double shift = i == 1 ? 80.0 : i == 3 ? 200.0 : 0.0;
        double tol = 1e-5 * (1.0 + fabs(r_loss[i]) + shift);
        if (!(fabs(loss[i] - r_loss[i]) <= tol))
            fail_msg("row_loss[%lld] (vocab %d): got %.9g, want %.9g",
                     (long long)i, vocab, (double)loss[i], r_loss[i]);
    }
    /* Gradient in bf16: 2^-7 relative, 1e-6 of the scale absolute. Ignored
     * rows: exact zeros. */
    check_bf16("ce grad", logits, r_grad, nv, BF16_REL, 1e-6 * scale);
    for (int64_t i = 0; i < n; i++) {
        if (targets[i] >= 0)
            continue;
        assert_true(loss[i] == 0.0f);
        for (int j = 0; j < vocab; j++)
            assert_int_equal(logits[(size_t)i * vocab + j], 0);
    }
    free(lf), free(logits), free(targets), free(r_loss), free(r_grad), free(loss);
}

static void test_cross_entropy(void **state)
{
    (void)state;
    ce_case(7, 1000, 71); /* vocab > threads per block, not a multiple */
    ce_case(4, 7, 72);    /* vocab < threads per block */
    ce_case(1, 1, 73);    /* one class: loss 0, gradient 0 */
}

/* ------------------------------------------------------------------ */
/* Attention                                                           */
/* ------------------------------------------------------------------ */

typedef struct att_shape {
    int B, T, H, KV, D; /* sequences, positions, query heads, kv heads, head_dim */
} att_shape;

/* Element (b, t, head, d) of a token-major [B*T x heads*D] matrix. */
static size_t att_at(const att_shape *s, int heads, int b, int t, int h, int d)
{
    return ((size_t)b * s->T + t) * (size_t)heads * s->D + (size_t)h * s->D + d;
}

/* Causal GQA attention and its gradients in double, from the definitions:
 * s_j = q_t . k_j / sqrt(D) for j <= t, p = softmax(s), o_t = sum_j p_j v_j,
 * lse_t = log sum_j exp(s_j); with dP_j = d_o_t . v_j and
 * delta = sum_j p_j dP_j (= d_o_t . o_t), dS_j = p_j (dP_j - delta),
 * d_q_t = sum_j dS_j k_j / sqrt(D), d_k_j += dS_j q_t / sqrt(D),
 * d_v_j += p_j d_o_t. When o_in is not NULL, delta is d_o_t . o_in_t
 * instead (o_in: a rounded o, as the kernels receive it). Query head h
 * reads kv head h / (H / KV). Outputs are zeroed here. */
static void att_reference(const att_shape *s, const float *q, const float *k,
                          const float *v, const float *d_o, const float *o_in,
                          double *o, double *lse, double *dq, double *dk,
                          double *dv)
{
    const int T = s->T, D = s->D, group = s->H / s->KV;
    const double scale = 1.0 / sqrt((double)D);
    size_t nq = (size_t)s->B * T * s->H * D, nkv = (size_t)s->B * T * s->KV * D;
    double *p = xmalloc((size_t)T * sizeof(double));
    double *dp = xmalloc((size_t)T * sizeof(double));
    memset(o, 0, nq * sizeof(double));
    if (dq) {
        memset(dq, 0, nq * sizeof(double));
        memset(dk, 0, nkv * sizeof(double));
        memset(dv, 0, nkv * sizeof(double));
    }
    for (int b = 0; b < s->B; b++)
        for (int h = 0; h < s->H; h++) {
            int g = h / group;
            for (int t = 0; t < T; t++) {
                double mx = -INFINITY, sum = 0.0;
                for (int j = 0; j <= t; j++) {
                    double acc = 0.0;
                    for (int d = 0; d < D; d++)
                        acc += (double)q[att_at(s, s->H, b, t, h, d)] *
                               k[att_at(s, s->KV, b, j, g, d)];
                    p[j] = acc * scale;
                    mx = p[j] > mx ? p[j] : mx;
                }
                for (int j = 0; j <= t; j++)
                    sum += exp(p[j] - mx);
                lse[((size_t)b * s->H + h) * T + t] = mx + log(sum);
                for (int j = 0; j <= t; j++) {
                    p[j] = exp(p[j] - mx) / sum;
                    for (int d = 0; d < D; d++)
                        o[att_at(s, s->H, b, t, h, d)] +=
                            p[j] * v[att_at(s, s->KV, b, j, g, d)];
                }
                if (!dq)
                    continue;
                double delta = 0.0;
                for (int j = 0; j <= t; j++) {
                    double acc = 0.0;
                    for (int d = 0; d < D; d++)
                        acc += (double)d_o[att_at(s, s->H, b, t, h, d)] *
                               v[att_at(s, s->KV, b, j, g, d)];
                    dp[j] = acc;
                    delta += p[j] * acc;
                }
                if (o_in) {
                    delta = 0.0;
                    for (int d = 0; d < D; d++)
                        delta += (double)d_o[att_at(s, s->H, b, t, h, d)] *
                                 o_in[att_at(s, s->H, b, t, h, d)];
                }
                for (int j = 0; j <= t; j++) {
                    double ds = p[j] * (dp[j] - delta);
                    for (int d = 0; d < D; d++) {
                        size_t iq = att_at(s, s->H, b, t, h, d);
                        size_t ik = att_at(s, s->KV, b, j, g, d);
                        dq[iq] += scale * ds * k[ik];
                        dk[ik] += scale * ds * q[iq];
                        dv[ik] += p[j] * d_o[iq];
                    }
                }
            }
        }
    free(p), free(dp);
}

/* max over i of |got_i - ref_i| / (rel |ref_i| + abs): <= 1 passes. An
 * exact 0 against 0 counts as no error. */
static double bf16_err_ratio(const lk_bf16 *got, const double *ref, size_t n,
                             double rel, double abs_)
{
    double worst = 0.0;
    for (size_t i = 0; i < n; i++) {
        double diff = fabs(bf16_value(got[i]) - ref[i]);
        double e = diff == 0.0 ? 0.0 : diff / (rel * fabs(ref[i]) + abs_);
        worst = e > worst || isnan(e) ? e : worst;
    }
    return worst;
}

/* The CPU model's attention (attention.c, f32, with the T x T
 * probabilities) on the same inputs, through a one-layer model whose
 * activation buffers hold them. */
static void att_cpu_model(const att_shape *s, const float *q, const float *k,
                          const float *v, const float *d_o, float *o,
                          float *dq, float *dk, float *dv)
{
    llama_config cfg = {
        .dim = s->H * s->D, .hidden_dim = 4, .n_layers = 1, .n_heads = s->H,
        .n_kv_heads = s->KV, .vocab_size = 4, .seq_len = s->T,
        .rope_theta = 10000.0f, .norm_eps = 1e-5f, .tied = 0,
    };
    llama_model m;
    char err[256];
    if (llama_create(&m, &cfg, s->B, err, sizeof err) != 0)
        fail_msg("llama_create: %s", err);
    m.batch = s->B;
    m.seq = s->T;
    llama_layer_acts la;
    llama_layer_acts_get(&m, 0, &la);
    size_t nq = (size_t)s->B * s->T * s->H * s->D;
    size_t nkv = (size_t)s->B * s->T * s->KV * s->D;
    memcpy(la.q, q, nq * sizeof(float));
    memcpy(la.k, k, nkv * sizeof(float));
    memcpy(la.v, v, nkv * sizeof(float));
    llama_attention_forward(&m, &la, s->B, s->T);
    memcpy(o, la.att_out, nq * sizeof(float));
    memcpy(m.acts->d_att_out, d_o, nq * sizeof(float));
    llama_attention_backward(&m, &la, s->B, s->T);
    memcpy(dq, m.acts->d_q, nq * sizeof(float));
    memcpy(dk, m.acts->d_k, nkv * sizeof(float));
    memcpy(dv, m.acts->d_v, nkv * sizeof(float));
    llama_destroy(&m);
}

static void attention_case(att_shape s, uint64_t seed)
{
    const size_t nq = (size_t)s.B * s.T * s.H * s.D;
    const size_t nkv = (size_t)s.B * s.T * s.KV * s.D;
    const size_t nl = (size_t)s.B * s.H * s.T;
    float *qf, *kf, *vf, *dof;
    /* q scaled up so that the softmax is far from uniform. */
    lk_bf16 *q = random_bf16(nq, seed, 2.0f, &qf);
    lk_bf16 *k = random_bf16(nkv, seed + 1, 1.0f, &kf);
    lk_bf16 *v = random_bf16(nkv, seed + 2, 1.0f, &vf);
    lk_bf16 *d_o = random_bf16(nq, seed + 3, 1.0f, &dof);
    double *r_o = xmalloc(nq * sizeof(double)), *r_lse = xmalloc(nl * sizeof(double));
    double *r_dq = xmalloc(nq * sizeof(double));
    double *r_dk = xmalloc(nkv * sizeof(double)), *r_dv = xmalloc(nkv * sizeof(double));
    lk_bf16 *o = xmalloc(nq * sizeof(lk_bf16));
    float *lse = xmalloc(nl * sizeof(float)), *delta = xmalloc(nl * sizeof(float));
    lk_bf16 *dq = xmalloc(nq * sizeof(lk_bf16));
    lk_bf16 *dk = xmalloc(nkv * sizeof(lk_bf16)), *dv = xmalloc(nkv * sizeof(lk_bf16));
    char what[128];

    /* Forward against the exact attention. o: bf16 output of f32 sums of
     * at most T terms p_j v_j (|v| ~ 1): 2^-7 relative + 1e-5 of max|o|.
     * lse: f32 log of an f32 sum: 1e-5 (1 + |lse|). */
    att_reference(&s, qf, kf, vf, dof, NULL, r_o, r_lse, r_dq, r_dk, r_dv);
    assert_int_equal(lk_attention_forward(NULL, o, lse, q, k, v, s.B, s.T, s.H,
                                          s.KV, s.D), 0);
    snprintf(what, sizeof what, "o (B %d T %d H %d KV %d D %d)", s.B, s.T, s.H,
             s.KV, s.D);
    check_bf16(what, o, r_o, nq, BF16_REL, 1e-5 * max_abs(r_o, nq));
    for (size_t i = 0; i < nl; i++)
        if (!(fabs(lse[i] - r_lse[i]) <= 1e-5 * (1.0 + fabs(r_lse[i]))))
            fail_msg("lse[%zu] (D %d): got %.9g, want %.9g", i, s.D,
                     (double)lse[i], r_lse[i]);

    /* Backward against the exact gradients. The kernels take delta from
     * the bf16 o, off by up to 2^-8 |d_o| |o| per row: d_q and d_k get
     * 2^-7 relative + 2^-6 of the tensor's largest value; d_v does not
     * depend on delta (2^-7 + 1e-5 of the max, f32 sums). When the
     * gradient is exactly 0 (T = 1: p = 1), the kernels' must be 0 too. */
    assert_int_equal(lk_attention_backward(NULL, dq, dk, dv, delta, d_o, q, k,
                                           v, o, lse, s.B, s.T, s.H, s.KV,
                                           s.D), 0);
    double e_dq = bf16_err_ratio(dq, r_dq, nq, BF16_REL, max_abs(r_dq, nq) / 64);
    double e_dk = bf16_err_ratio(dk, r_dk, nkv, BF16_REL, max_abs(r_dk, nkv) / 64);
    double e_dv = bf16_err_ratio(dv, r_dv, nkv, BF16_REL, 1e-5 * max_abs(r_dv, nkv));
    print_message("attention B %d T %d H %d KV %d D %d: error / tolerance "
                  "against the exact gradients: d_q %.3f d_k %.3f d_v %.3f\n",
                  s.B, s.T, s.H, s.KV, s.D, e_dq, e_dk, e_dv);
    assert_true(e_dq <= 1.0);
    assert_true(e_dk <= 1.0);
    assert_true(e_dv <= 1.0);

    /* Backward against the same definition with delta from the bf16 o the
     * kernels were given: what is left is f32 accumulation (sums of at
     * most group * T * D products of values ~1) and the bf16 rounding of
     * the outputs: 2^-7 relative + 1e-4 of the tensor's largest value. */
    float *of = xmalloc(nq * sizeof(float));
    for (size_t i = 0; i < nq; i++)
        of[i] = bf16_value(o[i]);
    double *a_o = xmalloc(nq * sizeof(double)), *a_lse = xmalloc(nl * sizeof(double));
    att_reference(&s, qf, kf, vf, dof, of, a_o, a_lse, r_dq, r_dk, r_dv);
    snprintf(what, sizeof what, "d_q (D %d, delta from bf16 o)", s.D);
    check_bf16(what, dq, r_dq, nq, BF16_REL, 1e-4 * max_abs(r_dq, nq));
    snprintf(what, sizeof what, "d_k (D %d, delta from bf16 o)", s.D);
    check_bf16(what, dk, r_dk, nkv, BF16_REL, 1e-4 * max_abs(r_dk, nkv));
    snprintf(what, sizeof what, "d_v (D %d)", s.D);
    check_bf16(what, dv, r_dv, nkv, BF16_REL, 1e-5 * max_abs(r_dv, nkv));

    /* The CPU model (f32, T x T probabilities) on the same bf16 inputs:
     * the same head mapping, scale and layout. o as above; its gradients
     * use the exact f32 o, so the 2^-6 allowance of the exact comparison. */
    float *c_o = xmalloc(nq * sizeof(float)), *c_dq = xmalloc(nq * sizeof(float));
    float *c_dk = xmalloc(nkv * sizeof(float)), *c_dv = xmalloc(nkv * sizeof(float));
    att_cpu_model(&s, qf, kf, vf, dof, c_o, c_dq, c_dk, c_dv);
    double *cd = xmalloc((nq > nkv ? nq : nkv) * sizeof(double));
    for (size_t i = 0; i < nq; i++)
        cd[i] = c_o[i];
    check_bf16("o against attention.c", o, cd, nq, BF16_REL, 1e-5 * max_abs(cd, nq));
    for (size_t i = 0; i < nq; i++)
        cd[i] = c_dq[i];
    check_bf16("d_q against attention.c", dq, cd, nq, BF16_REL, max_abs(cd, nq) / 64);
    for (size_t i = 0; i < nkv; i++)
        cd[i] = c_dk[i];
    check_bf16("d_k against attention.c", dk, cd, nkv, BF16_REL, max_abs(cd, nkv) / 64);
    for (size_t i = 0; i < nkv; i++)
        cd[i] = c_dv[i];
    check_bf16("d_v against attention.c", dv, cd, nkv, BF16_REL,
               1e-5 * max_abs(cd, nkv));

    free(qf), free(kf), free(vf), free(dof), free(q), free(k), free(v), free(d_o);
    free(r_o), free(r_lse), free(r_dq), free(r_dk), free(r_dv), free(o), free(lse);
    free(delta), free(dq), free(dk), free(dv), free(of), free(a_o), free(a_lse);
    free(c_o), free(c_dq), free(c_dk), free(c_dv), free(cd);
}

/* Head dimensions in each tile configuration (<= 64, <= 128, <= 256),
 * T not a multiple of any tile, T = 1, two sequences, GQA groups of 2 and
 * 4 and plain multi-head attention. */
static void test_attention_small_heads(void **state)
{
    (void)state;
    attention_case((att_shape){.B = 2, .T = 37, .H = 4, .KV = 2, .D = 16}, 81);
    attention_case((att_shape){.B = 2, .T = 1, .H = 4, .KV = 2, .D = 16}, 82);
    attention_case((att_shape){.B = 1, .T = 20, .H = 4, .KV = 1, .D = 64}, 83);
}

static void test_attention_large_heads(void **state)
{
    (void)state;
    attention_case((att_shape){.B = 1, .T = 33, .H = 2, .KV = 2, .D = 100}, 84);
    /* 256: the largest head, where the tiles fill the 48 KiB of shared
     * memory. */
    attention_case((att_shape){.B = 2, .T = 19, .H = 4, .KV = 2, .D = 256}, 85);
    attention_case((att_shape){.B = 1, .T = 9, .H = 4, .KV = 1, .D = 256}, 86);
}

/* A head_dim without tiles, or query heads that do not split evenly over
 * the kv heads, are refused before anything is launched (the NULL buffers
 * would fault otherwise). */
static void test_attention_refuses_bad_shapes(void **state)
{
    (void)state;
    assert_int_not_equal(lk_attention_forward(NULL, NULL, NULL, NULL, NULL,
                                              NULL, 1, 4, 3, 2, 16), 0);
    assert_int_not_equal(lk_attention_backward(NULL, NULL, NULL, NULL, NULL,
                                               NULL, NULL, NULL, NULL, NULL,
                                               NULL, 1, 4, 3, 2, 16), 0);
    assert_int_not_equal(lk_attention_forward(NULL, NULL, NULL, NULL, NULL,
                                              NULL, 1, 4, 2, 1,
                                              LK_MAX_HEAD_DIM + 2), 0);
    assert_int_not_equal(lk_attention_backward(NULL, NULL, NULL, NULL, NULL,
                                               NULL, NULL, NULL, NULL, NULL,
                                               NULL, 1, 4, 2, 1,
                                               LK_MAX_HEAD_DIM + 2), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_casts),
        cmocka_unit_test(test_embed),
        cmocka_unit_test(test_swiglu),
        cmocka_unit_test(test_rmsnorm_forward),
        cmocka_unit_test(test_rmsnorm_backward),
        cmocka_unit_test(test_rope),
        cmocka_unit_test(test_cross_entropy),
        cmocka_unit_test(test_attention_small_heads),
        cmocka_unit_test(test_attention_large_heads),
        cmocka_unit_test(test_attention_refuses_bad_shapes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
