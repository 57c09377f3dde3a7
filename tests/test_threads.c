/* Separate contexts are usable from separate threads at once: four
 * threads, each with its own context (two worker threads) and its own
 * handles, run the same deterministic workload concurrently, and each gets
 * bit for bit what one sequential run got. Any shared mutable state in the
 * library shows up here as a difference, and as a data race when built
 * with -Db_sanitize=thread (see .ci/run). */
#include "common/testutil.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum {
    NUM_THREADS = 4,
    CTX_WORKERS = 2,
    /* The low-rank weight: tall, so STD projects on the right. */
    WM = 64, WN = 48, RANK = 8, GAP = 2, LOWRANK_STEPS = 5,
    /* Large enough that the context's worker threads split the loops. */
    FM = 256, FN = 512, FULL_STEPS = 2,
    TOKENS = 1024,
    LAYERS = 8, GAMMA = 3, PERIOD = 2, SAMPLER_STEPS = 10,
};

typedef struct {
    /* The first failure, if any (asserted on the main thread). */
    char error[384];
    float w_low[WM * WN];
    float m_low[WM * RANK], v_low[WM * RANK];
    float basis[RANK * WN];
    uint64_t refreshes, steps;
    float w_full[FM * FN];
    double sumsq[FN];
    double ratio;
    double p[LAYERS], pi[LAYERS];
    uint8_t masks[SAMPLER_STEPS][LAYERS];
    uint64_t active[SAMPLER_STEPS];
} result;

typedef struct {
    owl_context *ctx;
    result *out;
} run;

/* Records the first failure; returns true when s is OWL_OK. */
static bool ok(run *r, owl_status s, const char *what)
{
    if (s == OWL_OK)
        return true;
    if (r->out->error[0] == '\0')
        snprintf(r->out->error, sizeof r->out->error, "%s: %s (%s)", what,
                 owl_status_name(s), owl_context_last_error(r->ctx));
    return false;
}

/* A few low-rank AdamW steps through subspace refreshes. */
static bool lowrank_part(run *r)
{
    owl_galore_options go;
    owl_adamw_options ao;
    owl_galore *proj = NULL;
    owl_adamw *adam = NULL;
    bool good = ok(r, owl_galore_options_init(&go, sizeof go), "galore options");
    go.rows = WM;
    go.cols = WN;
    go.rank = RANK;
    go.update_gap = GAP;
    go.scale = 0.25;
    good = good && ok(r, owl_galore_create(r->ctx, &go, &proj), "galore create");
    good = good && ok(r, owl_adamw_options_init(&ao, sizeof ao), "adamw options");
    ao.weight_decay = 0.01;
    good = good && ok(r, owl_adamw_create(r->ctx, &ao, WM, RANK, &adam),
                      "adamw create (low-rank)");
    float *g = malloc(sizeof(float) * WM * WN);
    test_fill_normal(r->out->w_low, WM * WN, 1);
    owl_tensor wt, gt;
    owl_tensor_init(&wt, r->out->w_low, OWL_DTYPE_F32, WM, WN);
    owl_tensor_init(&gt, g, OWL_DTYPE_F32, WM, WN);
    for (int s = 0; good && s < LOWRANK_STEPS; s++) {
        test_fill_normal(g, WM * WN, 100 + (uint64_t)s);
        good = ok(r, owl_adamw_lowrank(adam, proj, &wt, &gt, 1e-2),
                  "adamw lowrank step");
    }
    owl_tensor t;
    owl_tensor_init(&t, r->out->m_low, OWL_DTYPE_F32, WM, RANK);
    good = good && ok(r, owl_adamw_get_moment(adam, 0, &t), "get m");
    owl_tensor_init(&t, r->out->v_low, OWL_DTYPE_F32, WM, RANK);
    good = good && ok(r, owl_adamw_get_moment(adam, 1, &t), "get v");
    owl_tensor_init(&t, r->out->basis, OWL_DTYPE_F32, RANK, WN);
    good = good && ok(r, owl_galore_get_basis(proj, &t), "get basis");
    r->out->refreshes = owl_galore_refresh_count(proj);
    r->out->steps = owl_adamw_step_count(adam);
    free(g);
    owl_adamw_free(adam);
    owl_galore_free(proj);
    return good;
}

/* Full-rank steps on a larger weight, so the element loops are split. */
static bool full_part(run *r)
{
    owl_adamw_options ao;
    owl_adamw *adam = NULL;
    bool good = ok(r, owl_adamw_options_init(&ao, sizeof ao), "adamw options");
    ao.weight_decay = 0.1;
    good = good && ok(r, owl_adamw_create(r->ctx, &ao, FM, FN, &adam),
                      "adamw create (full)");
    float *g = malloc(sizeof(float) * FM * FN);
    test_fill_uniform(r->out->w_full, FM * FN, 2);
    owl_tensor wt, gt;
    owl_tensor_init(&wt, r->out->w_full, OWL_DTYPE_F32, FM, FN);
    owl_tensor_init(&gt, g, OWL_DTYPE_F32, FM, FN);
    for (int s = 0; good && s < FULL_STEPS; s++) {
        test_fill_normal(g, FM * FN, 200 + (uint64_t)s);
        good = ok(r, owl_adamw_full(adam, &wt, &gt, 1e-3), "adamw full step");
    }
    free(g);
    owl_adamw_free(adam);
    return good;
}

/* Activation statistics of the full weight's input, then its layer's
 * outlier ratio. */
static bool lod_part(run *r)
{
    float *x = malloc(sizeof(float) * TOKENS * FN);
    owl_tensor xt, st;
    owl_tensor_init(&st, r->out->sumsq, OWL_DTYPE_F64, 1, FN);
    bool good = true;
    for (int batch = 0; good && batch < 2; batch++) {
        test_fill_normal(x, TOKENS * FN, 300 + (uint64_t)batch);
        owl_tensor_init(&xt, x, OWL_DTYPE_F32, TOKENS, FN);
        good = ok(r, owl_act_norm_accumulate(r->ctx, &xt, &st),
                  "act_norm_accumulate");
    }
    free(x);
    owl_tensor w;
    owl_tensor_init(&w, r->out->w_full, OWL_DTYPE_F32, FM, FN);
    return good && ok(r, owl_lod_compute(r->ctx, &w, &st, 1, 3.0, &r->out->ratio),
                      "lod_compute");
}

static bool sampler_part(run *r)
{
    double weights[LAYERS];
    for (int l = 0; l < LAYERS; l++)
        weights[l] = r->out->ratio + 0.01 * (l + 1);
    owl_sampler_options so;
    owl_sampler *s = NULL;
    bool good = ok(r, owl_sampler_options_init(&so, sizeof so), "sampler options");
    so.num_layers = LAYERS;
    so.gamma = GAMMA;
    so.period = PERIOD;
    so.seed = 7;
    so.weight_mode = OWL_WEIGHTS_CUSTOM;
    so.weights = weights;
    good = good && ok(r, owl_sampler_create(r->ctx, &so, &s), "sampler create");
    for (int step = 0; good && step < SAMPLER_STEPS; step++)
        good = ok(r, owl_sampler_step(s, (uint64_t)step, r->out->masks[step],
                                      &r->out->active[step], NULL),
                  "sampler step");
    good = good && ok(r, owl_sampler_probabilities(s, r->out->p, r->out->pi),
                      "sampler probabilities");
    owl_sampler_free(s);
    return good;
}

static void run_workload(result *out)
{
    memset(out, 0, sizeof *out);
    owl_context_options o;
    owl_context *ctx = NULL;
    owl_context_options_init(&o, sizeof o);
    o.num_threads = CTX_WORKERS;
    run r = {NULL, out};
    if (!ok(&r, owl_context_create(&ctx, &o), "context create"))
        return;
    r.ctx = ctx;
    (void)(lowrank_part(&r) && full_part(&r) && lod_part(&r) && sampler_part(&r));
    owl_context_free(ctx);
}

static pthread_barrier_t start_line;

static void *thread_main(void *arg)
{
    /* All four start together, so their calls really overlap. */
    pthread_barrier_wait(&start_line);
    run_workload(arg);
    return NULL;
}

#define SAME(field, i)                                                         \
    do {                                                                       \
        if (memcmp(&got[i].field, &want->field, sizeof want->field) != 0)      \
            fail_msg("thread %d: " #field " differs from the sequential run",  \
                     (i));                                                     \
    } while (0)

static void test_four_contexts_at_once(void **state)
{
    (void)state;
    /* Static, so a failing assertion leaks nothing. */
    static result want_storage, got[NUM_THREADS];
    result *want = &want_storage;

    run_workload(want);
    if (want->error[0] != '\0')
        fail_msg("sequential run: %s", want->error);
    /* The workload did what it says: refreshes before updates 1, 3, 5. */
    assert_int_equal(want->steps, LOWRANK_STEPS);
    assert_int_equal(want->refreshes, (LOWRANK_STEPS + GAP - 1) / GAP);
    assert_true(want->ratio >= 0.0 && want->ratio <= 1.0);
    for (int step = 0; step < SAMPLER_STEPS; step++)
        assert_int_equal(want->active[step], GAMMA);

    pthread_t threads[NUM_THREADS];
    assert_int_equal(pthread_barrier_init(&start_line, NULL, NUM_THREADS), 0);
    for (int i = 0; i < NUM_THREADS; i++)
        assert_int_equal(pthread_create(&threads[i], NULL, thread_main, &got[i]), 0);
    for (int i = 0; i < NUM_THREADS; i++)
        assert_int_equal(pthread_join(threads[i], NULL), 0);
    pthread_barrier_destroy(&start_line);

    for (int i = 0; i < NUM_THREADS; i++) {
        if (got[i].error[0] != '\0')
            fail_msg("thread %d: %s", i, got[i].error);
        SAME(w_low, i);
        SAME(m_low, i);
        SAME(v_low, i);
        SAME(basis, i);
        SAME(refreshes, i);
        SAME(steps, i);
        SAME(w_full, i);
        SAME(sumsq, i);
        SAME(ratio, i);
        SAME(p, i);
        SAME(pi, i);
        SAME(masks, i);
        SAME(active, i);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_four_contexts_at_once),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
