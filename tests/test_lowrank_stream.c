/*
 * The GaLore AdamW step on matrices large enough for the library's
 * streaming kernels at ranks 9-16 (right projections of at least 2^22
 * elements, src/lowrank_stream.c), and just below that size (sgemm),
 * against a double-precision recomputation of the same step from the
 * projector's own basis: R = G Q^T, m and v, N = m / (sqrt(v) + eps),
 * W <- W - eta * alpha * N Q, then the decay. The basis is an input here
 * (it is the refresh's output, checked elsewhere); what is checked is the
 * arithmetic of the projection, the back-projection and the weight update,
 * in f32 and bf16 weights, over two steps.
 *
 * Tolerance: f32 weights max|W - W_ref| <= 2e-6 max|W_ref| and the update
 * W - W_0 within 1e-3 of max|W_ref - W_0| beyond the f32 rounding of W
 * (the f32 sums over n = 2048 products carry ~1e-6 relative error; a
 * missing or doubled basis vector, a wrong scale or a dropped decay move
 * the update by >= 5e-2). bf16 weights: relative L2 of the update <= 2e-2
 * (one bf16 ulp where the f32 and f64 results straddle a tie).
 */
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "owlore/owlore.h"
#include "common/testutil.h"

static float bf16_to_f32(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static uint16_t f32_to_bf16(float f) /* nearest even; inputs are finite */
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

static void check_step(int m, int n, int r, owl_dtype wdt, double wd)
{
    const double lr = 1e-2, alpha = 0.5, b1 = 0.9, b2 = 0.999, eps = 1e-6;
    const size_t mn = (size_t)m * (size_t)n;
    owl_context *ctx = test_cpu_context(2);
    owl_galore_options go;
    assert_int_equal(owl_galore_options_init(&go, sizeof go), OWL_OK);
    go.rows = (uint64_t)m;
    go.cols = (uint64_t)n;
    go.rank = (uint64_t)r;
    go.update_gap = 1000;
    go.scale = alpha;
    go.proj_type = OWL_PROJ_RIGHT;
    go.svd_method = OWL_SVD_RANDOMIZED;
    owl_galore *p = NULL;
    assert_int_equal(owl_galore_create(ctx, &go, &p), OWL_OK);
    owl_adamw_options ao;
    assert_int_equal(owl_adamw_options_init(&ao, sizeof ao), OWL_OK);
    ao.beta1 = b1;
    ao.beta2 = b2;
    ao.eps = eps;
    ao.weight_decay = wd;
    owl_adamw *a = NULL;
    assert_int_equal(owl_adamw_create(ctx, &ao, (uint64_t)m, (uint64_t)r, &a),
                     OWL_OK);

    float *g = malloc(mn * sizeof *g), *w32 = malloc(mn * sizeof *w32);
    uint16_t *w16 = malloc(mn * sizeof *w16);
    double *w = malloc(mn * sizeof *w), *w0 = malloc(mn * sizeof *w0);
    float *q = malloc((size_t)r * (size_t)n * sizeof *q);
    double *mom = calloc((size_t)m * (size_t)r, sizeof *mom);
    double *vel = calloc((size_t)m * (size_t)r, sizeof *vel);
    double *nd = malloc((size_t)m * (size_t)r * sizeof *nd);
    assert_true(g && w32 && w16 && w && w0 && q && mom && vel && nd);
    test_fill_uniform(w32, mn, 11);
    for (size_t i = 0; i < mn; i++) {
        if (wdt == OWL_DTYPE_BF16) {
            w16[i] = f32_to_bf16(w32[i]);
            w[i] = bf16_to_f32(w16[i]);
        } else {
            w[i] = w32[i];
        }
        w0[i] = w[i];
    }
    owl_tensor tw, tg, tq;
    owl_tensor_init(&tw, wdt == OWL_DTYPE_BF16 ? (void *)w16 : (void *)w32,
                    wdt, m, n);
    owl_tensor_init(&tg, g, OWL_DTYPE_F32, m, n);
    owl_tensor_init(&tq, q, OWL_DTYPE_F32, r, n);

    for (int t = 1; t <= 2; t++) {
        test_fill_normal(g, mn, 100 + (uint64_t)t);
        assert_int_equal(owl_adamw_lowrank(a, p, &tw, &tg, lr), OWL_OK);
        assert_int_equal(owl_galore_get_basis(p, &tq), OWL_OK);
        /* the step in f64 from the same basis */
        double eta = lr * sqrt(1 - pow(b2, t)) / (1 - pow(b1, t));
        for (int i = 0; i < m; i++)
            for (int c = 0; c < r; c++) {
                double s = 0;
                const float *gi = g + (size_t)i * (size_t)n;
                const float *qc = q + (size_t)c * (size_t)n;
                for (int j = 0; j < n; j++)
                    s += (double)gi[j] * qc[j];
                size_t k = (size_t)i * (size_t)r + (size_t)c;
                mom[k] = b1 * mom[k] + (1 - b1) * s;
                vel[k] = b2 * vel[k] + (1 - b2) * s * s;
                nd[k] = mom[k] / (sqrt(vel[k]) + eps);
            }
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++) {
                double s = 0;
                for (int c = 0; c < r; c++)
                    s += nd[(size_t)i * (size_t)r + (size_t)c] *
                         q[(size_t)c * (size_t)n + (size_t)j];
                size_t k = (size_t)i * (size_t)n + (size_t)j;
                double x = w[k] - eta * alpha * s;
                x = x - lr * wd * x;
                w[k] = wdt == OWL_DTYPE_BF16
                           ? bf16_to_f32(f32_to_bf16((float)x))
                           : (double)(float)x;
            }
        if (wdt == OWL_DTYPE_BF16) {
            double num = 0, den = 0;
            for (size_t k = 0; k < mn; k++) {
                double d = bf16_to_f32(w16[k]) - w[k], u = w[k] - w0[k];
                num += d * d;
                den += u * u;
            }
            double rel = sqrt(num / den);
            if (!(rel <= 2e-2))
                fail_msg("%dx%d r=%d bf16 step %d: update rel-L2 %.3g > 2e-2",
                         m, n, r, t, rel);
        } else {
            double wmax = 0, umax = 0, werr = 0, uerr = 0;
            for (size_t k = 0; k < mn; k++) {
                double d = fabs(w32[k] - w[k]);
                /* beyond the f32 rounding of the stored weight */
                double excess = d - 0.5 * ldexp(1.0, -23) * 2 * fabs(w[k]);
                wmax = fmax(wmax, fabs(w[k]));
                umax = fmax(umax, fabs(w[k] - w0[k]));
                werr = fmax(werr, d);
                uerr = fmax(uerr, excess);
            }
            if (!(werr <= 2e-6 * wmax))
                fail_msg("%dx%d r=%d step %d: max|dW| %.3g > 2e-6 * %.3g", m,
                         n, r, t, werr, wmax);
            if (!(uerr <= 1e-3 * umax))
                fail_msg("%dx%d r=%d step %d: update error %.3g > 1e-3 * %.3g",
                         m, n, r, t, uerr, umax);
        }
    }
    free(g);
    free(w32);
    free(w16);
    free(w);
    free(w0);
    free(q);
    free(mom);
    free(vel);
    free(nd);
    owl_adamw_free(a);
    owl_galore_free(p);
    owl_context_free(ctx);
}

/* 2048 x 2048 = 2^22 elements: streamed for r <= 16. */
static void test_stream_ranks_f32(void **state)
{
    (void)state;
    check_step(2048, 2048, 12, OWL_DTYPE_F32, 0.0);
    check_step(2048, 2048, 16, OWL_DTYPE_F32, 0.05);
}

static void test_stream_ranks_bf16(void **state)
{
    (void)state;
    check_step(2048, 2048, 13, OWL_DTYPE_BF16, 0.05);
}

/* Just below the size: the same ranks through sgemm. */
static void test_below_size_sgemm(void **state)
{
    (void)state;
    check_step(2047, 2048, 16, OWL_DTYPE_F32, 0.05);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stream_ranks_f32),
        cmocka_unit_test(test_stream_ranks_bf16),
        cmocka_unit_test(test_below_size_sgemm),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
