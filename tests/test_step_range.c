/* Gradients a step takes: finite, and every entry below 2^48. Past that,
 * AdamW's f32 second moment (g^2) could overflow to Inf, and an Inf moment
 * turns into NaN at a later step (0 * Inf with beta2 = 0, Inf - Inf in the
 * first moment), a state that no longer loads. Such a step is refused
 * like a NaN: OWL_ERR_NONFINITE, a skip counted, nothing changed. Checked
 * for full-rank and low-rank AdamW (f32 and bf16 gradients) and for the
 * optimizer, where clipping that brings the norm back is taken. */
#include "common/testutil.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

enum { M = 12, N = 10 };

static uint16_t bf16_of(float x)
{
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    return (uint16_t)(u >> 16); /* exact for the powers of two used here */
}

static uint8_t *adamw_state(owl_context *ctx, const owl_adamw *a, uint64_t *n)
{
    assert_owl_ok(ctx, owl_adamw_state_size(a, n));
    uint8_t *buf = malloc((size_t)*n);
    uint64_t w = 0;
    assert_owl_ok(ctx, owl_adamw_save(a, buf, *n, &w));
    return buf;
}

/* The saved state loads back into the handle. */
static void assert_loads_back(owl_context *ctx, owl_adamw *a)
{
    uint64_t n;
    uint8_t *s = adamw_state(ctx, a, &n);
    assert_owl_ok(ctx, owl_adamw_load(a, s, n));
    free(s);
}

/* A step on a gradient with one entry `big` is refused with nothing
 * changed exactly when big >= 2^48. */
static void check_full(owl_context *ctx, owl_dtype gdt, owl_dtype mdt,
                       double beta2)
{
    owl_adamw_options o;
    owl_adamw_options_init(&o, sizeof o);
    o.beta2 = beta2;
    o.moment_dtype = mdt;
    owl_adamw *a = NULL;
    assert_owl_ok(ctx, owl_adamw_create(ctx, &o, M, N, &a));
    float w[M * N], g[M * N];
    uint16_t g16[M * N];
    test_fill_uniform(w, M * N, 1);
    const float bigs[] = {0x1p47f, 0x1p48f, 0x1p60f, 0x1p127f, 0x1p20f};
    for (size_t k = 0; k < sizeof bigs / sizeof bigs[0]; k++) {
        test_fill_uniform(g, M * N, 10 + k);
        g[17] = bigs[k];
        for (int i = 0; i < M * N; i++)
            g16[i] = bf16_of(g[i]);
        owl_tensor tw, tg;
        owl_tensor_init(&tw, w, OWL_DTYPE_F32, M, N);
        owl_tensor_init(&tg, gdt == OWL_DTYPE_F32 ? (void *)g : (void *)g16, gdt,
                        M, N);
        float w_before[M * N];
        memcpy(w_before, w, sizeof w);
        uint64_t n0, n1, skips0, skips1;
        uint8_t *before = adamw_state(ctx, a, &n0);
        assert_owl_ok(ctx, owl_context_nonfinite_skips(ctx, &skips0));
        const owl_status st = owl_adamw_full(a, &tw, &tg, 1e-3);
        const bool says_limit = strstr(owl_context_last_error(ctx), "2^48");
        assert_owl_ok(ctx, owl_context_nonfinite_skips(ctx, &skips1));
        if (bigs[k] >= 0x1p48f) {
            assert_owl_status(ctx, st, OWL_ERR_NONFINITE);
            assert_true(says_limit);
            assert_memory_equal(w, w_before, sizeof w);
            uint8_t *after = adamw_state(ctx, a, &n1);
            assert_int_equal(n0, n1);
            assert_memory_equal(before, after, (size_t)n0);
            assert_int_equal(skips1, skips0 + 1);
            free(after);
        } else {
            assert_owl_ok(ctx, st);
            assert_int_equal(skips1, skips0);
        }
        free(before);
        assert_loads_back(ctx, a);
    }
    owl_adamw_free(a);
}

static void test_full_rank(void **state)
{
    (void)state;
    owl_context *ctx = test_cpu_context(1);
    const double beta2s[] = {0.999, 0.0};
    for (int b = 0; b < 2; b++) {
        check_full(ctx, OWL_DTYPE_F32, OWL_DTYPE_F32, beta2s[b]);
        check_full(ctx, OWL_DTYPE_BF16, OWL_DTYPE_F32, beta2s[b]);
        check_full(ctx, OWL_DTYPE_F32, OWL_DTYPE_BF16, beta2s[b]);
    }
    owl_context_free(ctx);
}

/* Low rank, on the streaming path (rank 4) and the GEMM one (rank 8 with a
 * refresh every step): a gradient of 2^50 everywhere is refused with the
 * projector and the moments as they were. */
static void test_low_rank(void **state)
{
    (void)state;
    owl_context *ctx = test_cpu_context(1);
    const uint64_t ranks[] = {4, 8};
    const uint64_t gaps[] = {1000, 1};
    for (int c = 0; c < 2; c++) {
        owl_galore_options go;
        owl_galore_options_init(&go, sizeof go);
        go.rows = M;
        go.cols = N;
        go.rank = ranks[c];
        go.update_gap = gaps[c];
        owl_galore *p = NULL;
        assert_owl_ok(ctx, owl_galore_create(ctx, &go, &p));
        uint64_t lr, lc;
        assert_owl_ok(ctx, owl_galore_lowrank_shape(p, &lr, &lc));
        owl_adamw_options ao;
        owl_adamw_options_init(&ao, sizeof ao);
        owl_adamw *a = NULL;
        assert_owl_ok(ctx, owl_adamw_create(ctx, &ao, lr, lc, &a));
        float w[M * N], g[M * N];
        test_fill_uniform(w, M * N, 3);
        test_fill_uniform(g, M * N, 4);
        owl_tensor tw, tg;
        owl_tensor_init(&tw, w, OWL_DTYPE_F32, M, N);
        owl_tensor_init(&tg, g, OWL_DTYPE_F32, M, N);
        assert_owl_ok(ctx, owl_adamw_lowrank(a, p, &tw, &tg, 1e-3));
        for (int i = 0; i < M * N; i++)
            g[i] = (i % 2 ? -1 : 1) * 0x1p50f;
        uint64_t na, np;
        uint8_t *sa = adamw_state(ctx, a, &na);
        assert_owl_ok(ctx, owl_galore_state_size(p, &np));
        uint8_t *sp = malloc((size_t)np), *sp2 = malloc((size_t)np);
        uint64_t wr;
        assert_owl_ok(ctx, owl_galore_save(p, sp, np, &wr));
        float w_before[M * N];
        memcpy(w_before, w, sizeof w);
        assert_owl_status(ctx, owl_adamw_lowrank(a, p, &tw, &tg, 1e-3),
                          OWL_ERR_NONFINITE);
        assert_memory_equal(w, w_before, sizeof w);
        uint64_t na2;
        uint8_t *sa2 = adamw_state(ctx, a, &na2);
        assert_memory_equal(sa, sa2, (size_t)na);
        assert_owl_ok(ctx, owl_galore_save(p, sp2, np, &wr));
        assert_memory_equal(sp, sp2, (size_t)np);
        free(sa);
        free(sa2);
        free(sp);
        free(sp2);
        owl_adamw_free(a);
        owl_galore_free(p);
    }
    owl_context_free(ctx);
}

/* The optimizer refuses before any parameter changes, and takes the same
 * gradient when clipping brings its norm down. */
static void test_optimizer(void **state)
{
    (void)state;
    owl_context *ctx = test_cpu_context(1);
    for (int clip = 0; clip < 2; clip++) {
        owl_optimizer_options oo;
        owl_optimizer_options_init(&oo, sizeof oo);
        oo.method = OWL_METHOD_FULL;
        oo.num_layers = 1;
        oo.max_grad_norm = clip ? 1.0 : 0.0;
        owl_optimizer *opt = NULL;
        assert_owl_ok(ctx, owl_optimizer_create(ctx, &oo, &opt));
        float w0[M * N], g0[M * N], w1[M * N], g1[M * N];
        test_fill_uniform(w0, M * N, 5);
        test_fill_uniform(w1, M * N, 6);
        test_fill_uniform(g0, M * N, 7);
        test_fill_uniform(g1, M * N, 8);
        g1[3] = 0x1p49f; /* the second parameter: the first is fine */
        owl_tensor tw0, tg0, tw1, tg1;
        owl_tensor_init(&tw0, w0, OWL_DTYPE_F32, M, N);
        owl_tensor_init(&tg0, g0, OWL_DTYPE_F32, M, N);
        owl_tensor_init(&tw1, w1, OWL_DTYPE_F32, M, N);
        owl_tensor_init(&tg1, g1, OWL_DTYPE_F32, M, N);
        assert_owl_ok(ctx, owl_optimizer_add_param(opt, 0, &tw0, &tg0, 0, NULL));
        assert_owl_ok(ctx, owl_optimizer_add_param(opt, 0, &tw1, &tg1, 0, NULL));
        float b0[M * N], b1[M * N];
        memcpy(b0, w0, sizeof w0);
        memcpy(b1, w1, sizeof w1);
        const owl_status st = owl_optimizer_step(opt, 1e-3);
        if (!clip) {
            assert_owl_status(ctx, st, OWL_ERR_NONFINITE);
            assert_memory_equal(w0, b0, sizeof w0);
            assert_memory_equal(w1, b1, sizeof w1);
            assert_int_equal(owl_optimizer_step_index(opt), 0);
        } else {
            assert_owl_ok(ctx, st);
            assert_int_equal(owl_optimizer_step_index(opt), 1);
            uint64_t n, wr;
            assert_owl_ok(ctx, owl_optimizer_state_size(opt, &n));
            uint8_t *s = malloc((size_t)n);
            assert_owl_ok(ctx, owl_optimizer_save(opt, s, n, &wr));
            assert_owl_ok(ctx, owl_optimizer_load(opt, s, n));
            free(s);
        }
        owl_optimizer_free(opt);
    }
    owl_context_free(ctx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_full_rank),
        cmocka_unit_test(test_low_rank),
        cmocka_unit_test(test_optimizer),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
