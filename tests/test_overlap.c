/* Tensors a call writes must not share memory with its other tensors: an
 * in-place AdamW step on a weight that overlaps its gradient would read
 * its own update (the moments turned NaN, and the saved state no longer
 * loaded). Every such call refuses the overlap with a message and changes
 * nothing, and the same call on disjoint memory succeeds; the optimizer
 * also keeps weights apart from every registered weight and gradient,
 * while gradients may share one buffer (a pool rebound to the active
 * layers). */
#include "common/testutil.h"

#include <string.h>

enum { M = 8, N = 6, R = 2 };

static float buf[4 * M * N];
static float before[4 * M * N];

static owl_tensor view(float *at, int64_t rows, int64_t cols)
{
    owl_tensor t;
    owl_tensor_init(&t, at, OWL_DTYPE_F32, rows, cols);
    return t;
}

static void fill(void)
{
    test_fill_uniform(buf, sizeof buf / sizeof buf[0], 11);
    memcpy(before, buf, sizeof buf);
}

#define EXPECT_OVERLAP(ctx, call)                                              \
    do {                                                                       \
        fill();                                                                \
        assert_owl_status(ctx, call, OWL_ERR_INVALID_ARGUMENT);                \
        assert_non_null(strstr(owl_context_last_error(ctx), "share memory"));  \
        assert_memory_equal(buf, before, sizeof buf);                          \
    } while (0)

static void test_adamw_and_projector(void **state)
{
    (void)state;
    owl_context *ctx = test_cpu_context(1);
    owl_galore_options go;
    owl_galore_options_init(&go, sizeof go);
    go.rows = M;
    go.cols = N;
    go.rank = R;
    owl_galore *p = NULL;
    assert_owl_ok(ctx, owl_galore_create(ctx, &go, &p));
    uint64_t lr, lc;
    assert_owl_ok(ctx, owl_galore_lowrank_shape(p, &lr, &lc));
    owl_adamw_options ao;
    owl_adamw_options_init(&ao, sizeof ao);
    owl_adamw *low = NULL, *full = NULL;
    assert_owl_ok(ctx, owl_adamw_create(ctx, &ao, lr, lc, &low));
    assert_owl_ok(ctx, owl_adamw_create(ctx, &ao, M, N, &full));

    /* The weight's last 40 elements are the gradient's first 40. */
    owl_tensor w = view(buf, M, N), g = view(buf + 8, M, N);
    EXPECT_OVERLAP(ctx, owl_adamw_full(full, &w, &g, 1e-3));
    EXPECT_OVERLAP(ctx, owl_adamw_lowrank(low, p, &w, &g, 1e-3));
    assert_int_equal(owl_adamw_step_count(full), 0);
    assert_int_equal(owl_galore_refresh_count(p), 0);

    /* Projection output over its input, and back. */
    owl_tensor out = view(buf + 4, (int64_t)lr, (int64_t)lc);
    EXPECT_OVERLAP(ctx, owl_galore_project(p, 0, &w, &out, NULL));
    assert_int_equal(owl_galore_refresh_count(p), 0);

    /* Disjoint: the same calls succeed. */
    owl_tensor g2 = view(buf + M * N, M, N);
    owl_tensor out2 = view(buf + 2 * M * N, (int64_t)lr, (int64_t)lc);
    fill();
    assert_owl_ok(ctx, owl_galore_project(p, 0, &g2, &out2, NULL));
    owl_tensor back = view(buf + 2 * M * N + 4, M, N); /* over out2 */
    EXPECT_OVERLAP(ctx, owl_galore_project_back(p, &out2, &back));
    owl_tensor back2 = view(buf + 3 * M * N, M, N);
    assert_owl_ok(ctx, owl_galore_project_back(p, &out2, &back2));
    assert_owl_ok(ctx, owl_adamw_full(full, &w, &g2, 1e-3));
    assert_owl_ok(ctx, owl_adamw_lowrank(low, p, &w, &g2, 1e-3));

    owl_adamw_free(low);
    owl_adamw_free(full);
    owl_galore_free(p);
    owl_context_free(ctx);
}

static void test_act_norm(void **state)
{
    (void)state;
    owl_context *ctx = test_cpu_context(1);
    owl_tensor x = view(buf, M, N), sumsq = view(buf + 3 * N, 1, N);
    EXPECT_OVERLAP(ctx, owl_act_norm_accumulate(ctx, &x, &sumsq));
    owl_tensor apart = view(buf + M * N, 1, N);
    memset(buf + M * N, 0, N * sizeof(float)); /* sums of squares: >= 0 */
    assert_owl_ok(ctx, owl_act_norm_accumulate(ctx, &x, &apart));
    owl_context_free(ctx);
}

static void test_optimizer_parameters(void **state)
{
    (void)state;
    owl_context *ctx = test_cpu_context(1);
    owl_optimizer_options oo;
    owl_optimizer_options_init(&oo, sizeof oo);
    oo.method = OWL_METHOD_FULL;
    oo.num_layers = 2;
    owl_optimizer *opt = NULL;
    assert_owl_ok(ctx, owl_optimizer_create(ctx, &oo, &opt));

    float *w0 = buf, *w1 = buf + M * N, *g = buf + 2 * M * N;
    owl_tensor tw0 = view(w0, M, N), tw1 = view(w1, M, N), tg = view(g, M, N);
    owl_tensor over_w0 = view(w0 + 1, M, N);
    fill();
    /* Weight over its own gradient. */
    EXPECT_OVERLAP(ctx, owl_optimizer_add_param(opt, 0, &tw0, &over_w0, 0, NULL));
    assert_int_equal(owl_optimizer_num_params(opt), 0);
    assert_owl_ok(ctx, owl_optimizer_add_param(opt, 0, &tw0, &tg, 0, NULL));
    /* A second weight over the first, over the first's gradient, and a
     * gradient over the first weight. */
    EXPECT_OVERLAP(ctx, owl_optimizer_add_param(opt, 1, &over_w0, NULL, 0, NULL));
    owl_tensor over_g = view(g + 2, M, N);
    EXPECT_OVERLAP(ctx, owl_optimizer_add_param(opt, 1, &over_g, NULL, 0, NULL));
    EXPECT_OVERLAP(ctx, owl_optimizer_add_param(opt, 1, &tw1, &over_w0, 0, NULL));
    assert_int_equal(owl_optimizer_num_params(opt), 1);
    /* Gradients may share a buffer. */
    assert_owl_ok(ctx, owl_optimizer_add_param(opt, 1, &tw1, &tg, 0, NULL));
    /* Rebinding a gradient onto a weight is refused too. */
    EXPECT_OVERLAP(ctx, owl_optimizer_set_grad(opt, 1, &tw0));
    EXPECT_OVERLAP(ctx, owl_optimizer_set_grad(opt, 0, &over_w0));
    assert_owl_ok(ctx, owl_optimizer_set_grad(opt, 0, &tg));
    fill();
    assert_owl_ok(ctx, owl_optimizer_step(opt, 1e-3));
    owl_optimizer_free(opt);
    owl_context_free(ctx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_adamw_and_projector),
        cmocka_unit_test(test_act_norm),
        cmocka_unit_test(test_optimizer_parameters),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
