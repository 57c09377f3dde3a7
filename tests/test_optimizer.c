/*
 * owl_optimizer on a small synthetic model (tests/ref/gen_optimizer.py):
 * 4 decoder layers of a 24x16 and a 16x24 matrix, and an always-trained
 * 32x16 "embedding", with L = 0.5 sum((W - target)^2), so G = W - target.
 *
 * References:
 *  - FULL with torch semantics against torch.optim.AdamW over all the
 *    parameters (and torch.nn.utils.clip_grad_norm_), per step.
 *  - GALORE against the float64 GaLore step of spec sections 3-4 (exact
 *    SVD, canonical signs), per step, with and without clipping.
 *  - Frozen-state policies against the AdamW recurrence written out here
 *    (m' = b1 m + (1 - b1) g, v' = b2 v + (1 - b2) g^2) and against the
 *    moment and projector sizes computed from the shapes.
 *  - Layer masks against owl_sampler_step with the same options.
 *  - Save, load and continue against the uninterrupted run, bit for bit.
 *
 * Tolerances (relative to max|W_ref| over the parameter, every step):
 *  - torch cases 1e-5: both sides compute AdamW in f32; the clipping factor
 *    comes from an f64 norm here and an f32 one in torch (~1e-7 apart).
 *    Moving eps across the bias correction or dropping the decay moves
 *    the weights by > 1e-4 of max|W| on these inputs.
 *    The clipped gradients themselves (scaled in place, as torch does) are
 *    compared at 1e-6; a factor off by 1e-4 fails that.
 *  - GaLore cases 2e-5, as tests/test_torch_adamw.c: the reference's SVD is
 *    f64, the library's f32 (<= 1e-6 on well-separated spectra); a basis
 *    sign flip, a missed refresh or clipping after the projection move them
 *    by >= 1e-3.
 */
#include "common/refdata.h"
#include "common/testutil.h"

/* The handle's internals, to read a parameter's AdamW and projector state
 * through their public getters. */
#include "../src/optimizer_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_PARAMS 16
#define TOL_TORCH 1e-5
#define TOL_GALORE 2e-5
#define TOL_NORM 1e-6
/* clipped gradients: one f32 rounding of g * coef on each side, and the
 * factor from norms ~1e-7 apart */
#define TOL_GRAD 1e-6

static refdata *g_ref;

/* ---- the synthetic model ---------------------------------------------- */

typedef struct {
    uint64_t layer; /* OWL_LAYER_ALWAYS for the embedding */
    int32_t lowrank;
    int64_t m, n;
    float *w, *g, *target;
    owl_tensor wt, gt;
} tparam;

typedef struct {
    size_t count;
    uint64_t num_layers;
    int steps;
    tparam p[MAX_PARAMS];
} model;

static int64_t ref_int(const char *name)
{
    const refarray *a = refdata_need(g_ref, name);
    if (a->kind != 1 || a->count != 1)
        fail_msg("%s is not an i64 scalar", name);
    return a->i64[0];
}

static double ref_scalar(const char *name)
{
    const refarray *a = refdata_need(g_ref, name);
    if (a->kind != 0 || a->count != 1)
        fail_msg("%s is not an f64 scalar", name);
    return a->f64[0];
}

static void model_init(model *md)
{
    memset(md, 0, sizeof *md);
    md->num_layers = (uint64_t)ref_int("problem/num_layers");
    md->count = (size_t)ref_int("problem/num_params");
    md->steps = (int)ref_int("problem/steps");
    assert_true(md->count <= MAX_PARAMS);
    for (size_t i = 0; i < md->count; i++) {
        tparam *p = &md->p[i];
        char name[64];
        snprintf(name, sizeof name, "problem/p%zu/layer", i);
        int64_t layer = ref_int(name);
        p->layer = layer < 0 ? OWL_LAYER_ALWAYS : (uint64_t)layer;
        snprintf(name, sizeof name, "problem/p%zu/lowrank", i);
        p->lowrank = (int32_t)ref_int(name);
        snprintf(name, sizeof name, "problem/p%zu/w0", i);
        const refarray *w0 = refdata_need(g_ref, name);
        snprintf(name, sizeof name, "problem/p%zu/target", i);
        const refarray *tg = refdata_need(g_ref, name);
        assert_int_equal(w0->ndim, 2);
        p->m = (int64_t)w0->dims[0];
        p->n = (int64_t)w0->dims[1];
        assert_int_equal(tg->count, w0->count);
        p->w = refarray_to_f32(w0);
        p->target = refarray_to_f32(tg);
        p->g = calloc(w0->count, sizeof(float));
        assert_non_null(p->g);
        owl_tensor_init(&p->wt, p->w, OWL_DTYPE_F32, p->m, p->n);
        owl_tensor_init(&p->gt, p->g, OWL_DTYPE_F32, p->m, p->n);
    }
}

static void model_free(model *md)
{
    for (size_t i = 0; i < md->count; i++) {
        free(md->p[i].w);
        free(md->p[i].g);
        free(md->p[i].target);
    }
}

/* G = W - target for every parameter (frozen ones too: the optimizer must
 * not read or touch them). */
static void model_grads(model *md)
{
    for (size_t i = 0; i < md->count; i++) {
        tparam *p = &md->p[i];
        for (int64_t k = 0; k < p->m * p->n; k++)
            p->g[k] = p->w[k] - p->target[k];
    }
}

static void model_copy_weights(const model *md, float **out)
{
    for (size_t i = 0; i < md->count; i++) {
        size_t n = (size_t)(md->p[i].m * md->p[i].n);
        out[i] = malloc(n * sizeof(float));
        assert_non_null(out[i]);
        memcpy(out[i], md->p[i].w, n * sizeof(float));
    }
}

/* The LOD-like weights of the sampled runs (layer 1 most outlier-heavy). */
static const double k_lod[4] = {0.20, 0.30, 0.05, 0.12};

typedef struct {
    owl_method method;
    owl_frozen_policy policy;
    uint64_t gamma, period;
    double max_grad_norm;
    owl_adamw_semantics semantics;
    double eps, weight_decay;
    uint64_t rank, gap;
    double scale;
    int32_t refresh_on_activation;
} run_cfg;

static run_cfg default_cfg(owl_method method)
{
    run_cfg c = {.method = method, .policy = OWL_FROZEN_KEEP, .gamma = 2,
                 .period = 3, .max_grad_norm = 0.0,
                 .semantics = OWL_ADAMW_GALORE, .eps = 1e-6,
                 .weight_decay = 0.0, .rank = 4, .gap = 5, .scale = 0.25,
                 .refresh_on_activation = 0};
    return c;
}

static owl_optimizer *make_opt(owl_context *ctx, model *md, const run_cfg *c)
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
    o.num_layers = md->num_layers;
    o.max_grad_norm = c->max_grad_norm;
    o.refresh_on_activation = c->refresh_on_activation;
    so.gamma = c->gamma;
    so.period = c->period;
    so.seed = 5;
    if (c->method == OWL_METHOD_OWLORE || c->method == OWL_METHOD_OWLORE_FULL) {
        so.weight_mode = OWL_WEIGHTS_OWLORE;
        so.weights = k_lod;
    }
    go.rank = c->rank;
    go.update_gap = c->gap;
    go.scale = c->scale;
    ao.semantics = c->semantics;
    ao.eps = c->eps;
    ao.weight_decay = c->weight_decay;
    o.sampler = &so;
    o.galore = &go;
    o.adamw = &ao;
    owl_optimizer *opt = NULL;
    assert_owl_ok(ctx, owl_optimizer_create(ctx, &o, &opt));
    for (size_t i = 0; i < md->count; i++) {
        uint64_t idx = 99;
        assert_owl_ok(ctx, owl_optimizer_add_param(opt, md->p[i].layer,
                                                   &md->p[i].wt, &md->p[i].gt,
                                                   md->p[i].lowrank, &idx));
        assert_int_equal(idx, i);
    }
    assert_int_equal(owl_optimizer_num_params(opt), md->count);
    return opt;
}

/* One training step as a trainer does it: mask, backward, step. */
static void train_step(owl_context *ctx, owl_optimizer *opt, model *md,
                       double lr, uint8_t *mask_out)
{
    uint8_t mask[8];
    assert_owl_ok(ctx, owl_optimizer_active_layers(opt, mask, md->num_layers,
                                                   NULL));
    model_grads(md);
    assert_owl_ok(ctx, owl_optimizer_step(opt, lr));
    if (mask_out)
        memcpy(mask_out, mask, md->num_layers);
}

static double max_rel(const float *w, const double *ref, size_t n)
{
    double err = 0, scale = 1e-30;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)w[i] - ref[i]);
        err = (d > err || isnan(d)) ? (isnan(d) ? INFINITY : d) : err;
        scale = fmax(scale, fabs(ref[i]));
    }
    return err / scale;
}

/* ---- (b), (c): agreement with the PyTorch references ------------------ */

static void replay_case(const char *name, double tol)
{
    owl_context *ctx = test_cpu_context(2);
    model md;
    model_init(&md);
    char key[96];
    snprintf(key, sizeof key, "%s/method", name);
    run_cfg c = default_cfg((owl_method)ref_scalar(key));
    snprintf(key, sizeof key, "%s/semantics", name);
    c.semantics = (owl_adamw_semantics)ref_scalar(key);
    snprintf(key, sizeof key, "%s/eps", name);
    c.eps = ref_scalar(key);
    snprintf(key, sizeof key, "%s/weight_decay", name);
    c.weight_decay = ref_scalar(key);
    snprintf(key, sizeof key, "%s/max_grad_norm", name);
    c.max_grad_norm = ref_scalar(key);
    if (c.method == OWL_METHOD_GALORE) {
        snprintf(key, sizeof key, "%s/rank", name);
        c.rank = (uint64_t)ref_scalar(key);
        snprintf(key, sizeof key, "%s/gap", name);
        c.gap = (uint64_t)ref_scalar(key);
        snprintf(key, sizeof key, "%s/scale", name);
        c.scale = ref_scalar(key);
    }
    owl_optimizer *opt = make_opt(ctx, &md, &c);
    snprintf(key, sizeof key, "%s/lr", name);
    const refarray *lrs = refdata_need(g_ref, key);
    snprintf(key, sizeof key, "%s/norm", name);
    const refarray *norms = refdata_need(g_ref, key);
    assert_int_equal(lrs->count, (uint64_t)md.steps);
    double want_g[32 * 24];

    for (int t = 0; t < md.steps; t++) {
        uint8_t mask[8];
        int32_t resampled = -1;
        assert_owl_ok(ctx, owl_optimizer_active_layers(opt, mask, md.num_layers,
                                                       &resampled));
        for (uint64_t l = 0; l < md.num_layers; l++)
            assert_int_equal(mask[l], 1); /* GALORE and FULL train all */
        assert_int_equal(resampled, t == 0);
        model_grads(&md);
        float *g_before[MAX_PARAMS];
        for (size_t i = 0; i < md.count; i++) {
            size_t n = (size_t)(md.p[i].m * md.p[i].n);
            g_before[i] = malloc(n * sizeof(float));
            assert_non_null(g_before[i]);
            memcpy(g_before[i], md.p[i].g, n * sizeof(float));
        }
        assert_owl_ok(ctx, owl_optimizer_step(opt, lrs->f64[t]));
        double norm = -1;
        assert_owl_ok(ctx, owl_optimizer_last_grad_norm(opt, &norm));
        double nerr = fabs(norm - norms->f64[t]) / norms->f64[t];
        if (nerr > TOL_NORM)
            fail_msg("%s step %d: grad norm %.9g, reference %.9g", name, t + 1,
                     norm, norms->f64[t]);
        for (size_t i = 0; i < md.count; i++) {
            snprintf(key, sizeof key, "%s/p%zu/w", name, i);
            const refarray *tr = refdata_need(g_ref, key);
            size_t n = (size_t)(md.p[i].m * md.p[i].n);
            assert_int_equal(tr->count, (uint64_t)md.steps * n);
            double err = max_rel(md.p[i].w, tr->f64 + (size_t)t * n, n);
            if (err > tol)
                fail_msg("%s step %d param %zu: max rel error %.3g > %.1g",
                         name, t + 1, i, err, tol);
            /* The gradient the step used, clipped in place: against
             * torch's own clipped gradient where the trajectory is
             * torch's, and everywhere against clip_grad_norm_'s formula
             * applied to this run's unclipped gradient with the
             * reference's norm. */
            if (c.method == OWL_METHOD_FULL) {
                snprintf(key, sizeof key, "%s/p%zu/g", name, i);
                const refarray *gr = refdata_need(g_ref, key);
                assert_int_equal(gr->count, (uint64_t)md.steps * n);
                err = max_rel(md.p[i].g, gr->f64 + (size_t)t * n, n);
                if (err > TOL_GRAD)
                    fail_msg("%s step %d param %zu: gradient max rel error "
                             "%.3g vs torch",
                             name, t + 1, i, err);
            }
            assert_true(n <= sizeof want_g / sizeof want_g[0]);
            double coef = 1.0;
            if (c.max_grad_norm > 0)
                coef = fmin(1.0, c.max_grad_norm / (norms->f64[t] + 1e-6));
            for (size_t k = 0; k < n; k++)
                want_g[k] = (double)(g_before[i][k] * (float)coef);
            err = max_rel(md.p[i].g, want_g, n);
            if (err > TOL_GRAD)
                fail_msg("%s step %d param %zu: gradient max rel error %.3g "
                         "vs clip_grad_norm_'s formula",
                         name, t + 1, i, err);
            free(g_before[i]);
        }
    }
    assert_int_equal(owl_optimizer_step_index(opt), (uint64_t)md.steps);
    owl_optimizer_free(opt);
    model_free(&md);
    owl_context_free(ctx);
}

static void test_full_matches_torch_adamw(void **state)
{
    (void)state;
    replay_case("full_torch", TOL_TORCH);
}

static void test_full_clipped_matches_torch(void **state)
{
    (void)state;
    replay_case("full_torch_clip", TOL_TORCH);
}

static void test_galore_matches_reference(void **state)
{
    (void)state;
    replay_case("galore", TOL_GALORE);
}

static void test_galore_clipped_matches_reference(void **state)
{
    (void)state;
    replay_case("galore_clip", TOL_GALORE);
}

/* ---- (e): active layers ------------------------------------------------ */

static void check_masks_match_sampler(owl_method method)
{
    owl_context *ctx = test_cpu_context(1);
    model md;
    model_init(&md);
    run_cfg c = default_cfg(method);
    c.gamma = 2;
    c.period = 4;
    owl_optimizer *opt = make_opt(ctx, &md, &c);

    owl_sampler_options so;
    owl_sampler_options_init(&so, sizeof so);
    so.num_layers = md.num_layers;
    so.gamma = c.gamma;
    so.period = c.period;
    so.seed = 5;
    if (method != OWL_METHOD_LISA) {
        so.weight_mode = OWL_WEIGHTS_OWLORE;
        so.weights = k_lod;
    }
    owl_sampler *sampler = NULL;
    assert_owl_ok(ctx, owl_sampler_create(ctx, &so, &sampler));

    uint8_t period_mask[8] = {0};
    for (uint64_t t = 0; t < 24; t++) {
        uint8_t mask[8], again[8], want[8];
        int32_t resampled = -1, want_resampled = -1;
        assert_owl_ok(ctx, owl_optimizer_active_layers(opt, mask, md.num_layers,
                                                       &resampled));
        assert_owl_ok(ctx, owl_optimizer_active_layers(opt, again,
                                                       md.num_layers, NULL));
        assert_memory_equal(mask, again, md.num_layers);
        assert_owl_ok(ctx, owl_sampler_step(sampler, t, want, NULL,
                                            &want_resampled));
        assert_memory_equal(mask, want, md.num_layers);
        assert_int_equal(resampled, want_resampled);
        assert_int_equal(resampled, t % c.period == 0);
        uint64_t count = 0;
        for (uint64_t l = 0; l < md.num_layers; l++) {
            assert_true(mask[l] == 0 || mask[l] == 1);
            count += mask[l];
        }
        assert_int_equal(count, c.gamma);
        if (t % c.period == 0)
            memcpy(period_mask, mask, md.num_layers);
        else
            assert_memory_equal(mask, period_mask, md.num_layers);
        model_grads(&md);
        assert_owl_ok(ctx, owl_optimizer_step(opt, 1e-3));
    }
    owl_sampler_free(sampler);
    owl_optimizer_free(opt);
    model_free(&md);
    owl_context_free(ctx);
}

static void test_active_layers_owlore(void **state)
{
    (void)state;
    check_masks_match_sampler(OWL_METHOD_OWLORE);
}

static void test_active_layers_lisa(void **state)
{
    (void)state;
    check_masks_match_sampler(OWL_METHOD_LISA);
}

/* Frozen layers' weights never move; active ones always do. */
static void test_only_active_layers_change(void **state)
{
    (void)state;
    owl_context *ctx = test_cpu_context(1);
    model md;
    model_init(&md);
    run_cfg c = default_cfg(OWL_METHOD_OWLORE);
    owl_optimizer *opt = make_opt(ctx, &md, &c);
    for (int t = 0; t < 12; t++) {
        float *before[MAX_PARAMS];
        model_copy_weights(&md, before);
        uint8_t mask[8];
        train_step(ctx, opt, &md, 1e-3, mask);
        for (size_t i = 0; i < md.count; i++) {
            const tparam *p = &md.p[i];
            bool active = p->layer == OWL_LAYER_ALWAYS || mask[p->layer];
            bool same = memcmp(before[i], p->w,
                               (size_t)(p->m * p->n) * sizeof(float)) == 0;
            assert_true(active ? !same : same);
            free(before[i]);
        }
    }
    owl_optimizer_free(opt);
    model_free(&md);
    owl_context_free(ctx);
}

/* ---- (d): state allocation and frozen-state policies ------------------- */

/* Bytes of a parameter's moments and projector, from its shape. */
static void expected_bytes(const tparam *p, bool lowrank, uint64_t rank,
                           uint64_t *moments, uint64_t *proj)
{
    if (!lowrank) {
        *moments = 2u * (uint64_t)(p->m * p->n) * 4u;
        *proj = 0;
        return;
    }
    bool left = p->m < p->n; /* STD */
    uint64_t d = (uint64_t)(left ? p->m : p->n);
    uint64_t low = rank * (uint64_t)(left ? p->n : p->m);
    *moments = 2u * low * 4u;
    *proj = (2u * rank * d + low) * 4u;
}

static void usage_of(owl_context *ctx, owl_optimizer *opt, owl_memory_usage *u)
{
    assert_int_equal(owl_memory_usage_init(u, sizeof *u), OWL_OK);
    assert_owl_ok(ctx, owl_optimizer_memory(opt, u));
    assert_int_equal(u->device_moments, 0);
    assert_int_equal(u->device_projectors, 0);
    assert_int_equal(u->device_workspace, 0);
}

/* Lazy allocation (nothing before a layer's first step), and under FREE
 * exactly the active layers' state afterwards; under KEEP every layer seen
 * so far. */
static void check_memory(owl_frozen_policy policy)
{
    owl_context *ctx = test_cpu_context(1);
    model md;
    model_init(&md);
    run_cfg c = default_cfg(OWL_METHOD_OWLORE);
    c.policy = policy;
    owl_optimizer *opt = make_opt(ctx, &md, &c);
    owl_memory_usage u;
    usage_of(ctx, opt, &u);
    assert_int_equal(u.host_moments, 0);
    assert_int_equal(u.host_projectors, 0);

    bool seen[8] = {false};
    int drops = 0;
    uint64_t prev_moments = 0;
    for (int t = 0; t < 30; t++) {
        uint8_t mask[8];
        train_step(ctx, opt, &md, 1e-3, mask);
        uint64_t want_m = 0, want_p = 0;
        for (size_t i = 0; i < md.count; i++) {
            const tparam *p = &md.p[i];
            bool always = p->layer == OWL_LAYER_ALWAYS;
            if (!always && mask[p->layer])
                seen[p->layer] = true;
            bool held = always || (policy == OWL_FROZEN_FREE
                                       ? mask[p->layer] != 0
                                       : seen[p->layer]);
            if (!held) {
                assert_null(opt->params[i].adam);
                continue;
            }
            uint64_t bm, bp;
            expected_bytes(p, p->lowrank && !always, c.rank, &bm, &bp);
            want_m += bm;
            want_p += bp;
        }
        usage_of(ctx, opt, &u);
        assert_int_equal(u.host_moments, want_m);
        assert_int_equal(u.host_projectors, want_p);
        assert_true(u.host_workspace > 0);
        if (t > 0 && u.host_moments < prev_moments)
            drops++;
        prev_moments = u.host_moments;
    }
    if (policy == OWL_FROZEN_FREE)
        assert_true(drops > 0); /* the run did free a layer */
    owl_optimizer_free(opt);
    model_free(&md);
    owl_context_free(ctx);
}

static void test_memory_lazy_keep(void **state)
{
    (void)state;
    check_memory(OWL_FROZEN_KEEP);
}

static void test_memory_free_policy(void **state)
{
    (void)state;
    check_memory(OWL_FROZEN_FREE);
}

/* A copy of a parameter's moments (f32) and bias step. */
typedef struct {
    float *m, *v;
    uint64_t bias_step;
    uint64_t count;
} moments;

static void read_moments(owl_context *ctx, owl_adamw *a, moments *out)
{
    assert_non_null(a);
    out->count = (uint64_t)(a->rows * a->cols);
    out->m = malloc(out->count * sizeof(float));
    out->v = malloc(out->count * sizeof(float));
    assert_non_null(out->m);
    assert_non_null(out->v);
    owl_tensor tm, tv;
    owl_tensor_init(&tm, out->m, OWL_DTYPE_F32, a->rows, a->cols);
    owl_tensor_init(&tv, out->v, OWL_DTYPE_F32, a->rows, a->cols);
    assert_owl_ok(ctx, owl_adamw_get_moment(a, 0, &tm));
    assert_owl_ok(ctx, owl_adamw_get_moment(a, 1, &tv));
    out->bias_step = owl_adamw_bias_step(a);
}

static void moments_free(moments *x)
{
    free(x->m);
    free(x->v);
    x->m = x->v = NULL;
}

/* OWLORE_FULL (full-rank moments, so the recurrence can be written out
 * here): for every layer that freezes and comes back, the moments at its
 * re-activation are those it froze with (KEEP, OFFLOAD on CPU), and the
 * re-activation step continues from them; under RESET it starts from zero
 * (m = (1 - b1) g, v = (1 - b2) g^2, t = 1); under FREE from fresh state. */
static void check_policy(owl_frozen_policy policy)
{
    const double b1 = 0.9, b2 = 0.999;
    owl_context *ctx = test_cpu_context(1);
    model md;
    model_init(&md);
    run_cfg c = default_cfg(OWL_METHOD_OWLORE_FULL);
    c.policy = policy;
    owl_optimizer *opt = make_opt(ctx, &md, &c);

    moments frozen[MAX_PARAMS];
    memset(frozen, 0, sizeof frozen);
    uint8_t prev[8] = {0};
    int reactivations = 0;
    for (int t = 0; t < 40; t++) {
        uint8_t mask[8];
        assert_owl_ok(ctx, owl_optimizer_active_layers(opt, mask,
                                                       md.num_layers, NULL));
        model_grads(&md);
        moments before[MAX_PARAMS];
        bool react[MAX_PARAMS] = {false};
        memset(before, 0, sizeof before);
        for (size_t i = 0; i < md.count; i++) {
            const tparam *p = &md.p[i];
            if (p->layer == OWL_LAYER_ALWAYS)
                continue;
            owl_adamw *a = opt->params[i].adam;
            if (prev[p->layer] && !mask[p->layer]) {
                /* just froze: remember the state it froze with */
                moments_free(&frozen[i]);
                read_moments(ctx, a, &frozen[i]);
            }
            if (!mask[p->layer] && frozen[i].m != NULL &&
                policy == OWL_FROZEN_FREE && !prev[p->layer])
                assert_null(a); /* released while frozen */
            if (mask[p->layer] && !prev[p->layer] && frozen[i].m != NULL) {
                react[i] = true;
                if (policy == OWL_FROZEN_FREE) {
                    assert_null(a);
                    continue;
                }
                /* coming back: untouched while frozen */
                read_moments(ctx, a, &before[i]);
                assert_memory_equal(before[i].m, frozen[i].m,
                                    frozen[i].count * sizeof(float));
                assert_memory_equal(before[i].v, frozen[i].v,
                                    frozen[i].count * sizeof(float));
                assert_int_equal(before[i].bias_step, frozen[i].bias_step);
            }
        }

        assert_owl_ok(ctx, owl_optimizer_step(opt, 1e-3));

        for (size_t i = 0; i < md.count; i++) {
            if (!react[i])
                continue;
            /* the re-activation step, against the AdamW recurrence */
            reactivations++;
            moments after;
            read_moments(ctx, opt->params[i].adam, &after);
            const bool fresh = policy == OWL_FROZEN_RESET ||
                               policy == OWL_FROZEN_FREE;
            const float *g = md.p[i].g;
            for (uint64_t k = 0; k < after.count; k++) {
                double m0 = fresh ? 0.0 : before[i].m[k];
                double v0 = fresh ? 0.0 : before[i].v[k];
                double wm = b1 * m0 + (1 - b1) * g[k];
                double wv = b2 * v0 + (1 - b2) * (double)g[k] * g[k];
                /* f32 rounding of each term (they may cancel in m) */
                double sm = fabs(b1 * m0) + fabs((1 - b1) * g[k]);
                assert_true(fabs(after.m[k] - wm) <= 1e-6 * sm + 1e-30);
                assert_true(fabs(after.v[k] - wv) <= 1e-6 * fabs(wv) + 1e-30);
            }
            assert_int_equal(after.bias_step,
                             fresh ? 1 : frozen[i].bias_step + 1);
            if (policy == OWL_FROZEN_FREE)
                assert_int_equal(owl_adamw_step_count(opt->params[i].adam), 1);
            moments_free(&after);
            moments_free(&before[i]);
            moments_free(&frozen[i]);
        }
        memcpy(prev, mask, md.num_layers);
    }
    for (size_t i = 0; i < md.count; i++)
        moments_free(&frozen[i]);
    assert_true(reactivations > 0); /* the run exercised the policy */
    owl_optimizer_free(opt);
    model_free(&md);
    owl_context_free(ctx);
}

static void test_policy_keep(void **state)
{
    (void)state;
    check_policy(OWL_FROZEN_KEEP);
}

static void test_policy_reset(void **state)
{
    (void)state;
    check_policy(OWL_FROZEN_RESET);
}

static void test_policy_free(void **state)
{
    (void)state;
    check_policy(OWL_FROZEN_FREE);
}

static void test_policy_offload_is_keep_on_cpu(void **state)
{
    (void)state;
    check_policy(OWL_FROZEN_OFFLOAD);
    /* and the whole trajectory equals KEEP's, bit for bit */
    owl_context *ctx = test_cpu_context(1);
    model a, b;
    model_init(&a);
    model_init(&b);
    run_cfg ca = default_cfg(OWL_METHOD_OWLORE);
    run_cfg cb = ca;
    cb.policy = OWL_FROZEN_OFFLOAD;
    owl_optimizer *oa = make_opt(ctx, &a, &ca);
    owl_optimizer *ob = make_opt(ctx, &b, &cb);
    for (int t = 0; t < 20; t++) {
        train_step(ctx, oa, &a, 1e-3, NULL);
        train_step(ctx, ob, &b, 1e-3, NULL);
    }
    for (size_t i = 0; i < a.count; i++)
        assert_memory_equal(a.p[i].w, b.p[i].w,
                            (size_t)(a.p[i].m * a.p[i].n) * sizeof(float));
    owl_optimizer_free(oa);
    owl_optimizer_free(ob);
    model_free(&a);
    model_free(&b);
    owl_context_free(ctx);
}

/* refresh_on_activation: a re-activated low-rank parameter recomputes its
 * subspace at once; without it, only the gap's schedule does. */
static void check_refresh_on_activation(int32_t on)
{
    owl_context *ctx = test_cpu_context(1);
    model md;
    model_init(&md);
    run_cfg c = default_cfg(OWL_METHOD_OWLORE);
    c.gap = 1000; /* no scheduled refresh after the first */
    c.refresh_on_activation = on;
    owl_optimizer *opt = make_opt(ctx, &md, &c);
    uint8_t prev[8] = {0};
    uint64_t activations[MAX_PARAMS] = {0};
    int checked = 0;
    for (int t = 0; t < 40; t++) {
        uint8_t mask[8];
        train_step(ctx, opt, &md, 1e-3, mask);
        for (size_t i = 0; i < md.count; i++) {
            const tparam *p = &md.p[i];
            if (p->layer == OWL_LAYER_ALWAYS || !p->lowrank)
                continue;
            if (mask[p->layer] && !prev[p->layer]) {
                activations[i]++;
                checked += activations[i] > 1;
            }
            if (opt->params[i].proj == NULL)
                continue;
            uint64_t want = on ? activations[i] : 1;
            assert_int_equal(owl_galore_refresh_count(opt->params[i].proj),
                             want);
        }
        memcpy(prev, mask, md.num_layers);
    }
    assert_true(checked > 0);
    owl_optimizer_free(opt);
    model_free(&md);
    owl_context_free(ctx);
}

static void test_refresh_on_activation(void **state)
{
    (void)state;
    check_refresh_on_activation(1);
    check_refresh_on_activation(0);
}

/* ---- (f): non-finite gradients ----------------------------------------- */

static void test_nonfinite_changes_nothing(void **state)
{
    (void)state;
    owl_context *ctx = test_cpu_context(2);
    model md;
    model_init(&md);
    run_cfg c = default_cfg(OWL_METHOD_OWLORE);
    c.max_grad_norm = 0.5; /* clipping would scale the grads if it ran */
    owl_optimizer *opt = make_opt(ctx, &md, &c);
    for (int t = 0; t < 5; t++)
        train_step(ctx, opt, &md, 1e-3, NULL);

    uint8_t mask[8];
    assert_owl_ok(ctx, owl_optimizer_active_layers(opt, mask, md.num_layers,
                                                   NULL));
    model_grads(&md);
    /* A NaN in an active layer's gradient (the last active parameter, so
     * every other one would already have been read). */
    size_t victim = SIZE_MAX;
    for (size_t i = 0; i < md.count; i++)
        if (md.p[i].layer != OWL_LAYER_ALWAYS && mask[md.p[i].layer])
            victim = i;
    assert_true(victim != SIZE_MAX);
    for (int pass = 0; pass < 2; pass++) {
        model_grads(&md);
        md.p[victim].g[7] = pass == 0 ? NAN : -INFINITY;
        float *w_before[MAX_PARAMS], *g_before[MAX_PARAMS];
        model_copy_weights(&md, w_before);
        moments mom[MAX_PARAMS];
        memset(mom, 0, sizeof mom);
        for (size_t i = 0; i < md.count; i++) {
            size_t n = (size_t)(md.p[i].m * md.p[i].n);
            g_before[i] = malloc(n * sizeof(float));
            memcpy(g_before[i], md.p[i].g, n * sizeof(float));
            if (opt->params[i].adam)
                read_moments(ctx, opt->params[i].adam, &mom[i]);
        }
        uint64_t skips0 = 0, skips1 = 0;
        double norm0 = 0, norm1 = 0;
        assert_owl_ok(ctx, owl_context_nonfinite_skips(ctx, &skips0));
        assert_owl_ok(ctx, owl_optimizer_last_grad_norm(opt, &norm0));
        owl_memory_usage u0, u1;
        usage_of(ctx, opt, &u0);

        assert_owl_status(ctx, owl_optimizer_step(opt, 1e-3), OWL_ERR_NONFINITE);
        assert_true(strlen(owl_context_last_error(ctx)) > 0);

        assert_int_equal(owl_optimizer_step_index(opt), 5);
        assert_owl_ok(ctx, owl_context_nonfinite_skips(ctx, &skips1));
        assert_int_equal(skips1, skips0 + 1);
        assert_owl_ok(ctx, owl_optimizer_last_grad_norm(opt, &norm1));
        assert_true(norm1 == norm0);
        usage_of(ctx, opt, &u1);
        assert_memory_equal(&u0, &u1, sizeof u0);
        for (size_t i = 0; i < md.count; i++) {
            size_t n = (size_t)(md.p[i].m * md.p[i].n);
            assert_memory_equal(w_before[i], md.p[i].w, n * sizeof(float));
            assert_memory_equal(g_before[i], md.p[i].g, n * sizeof(float));
            if (mom[i].m != NULL) {
                moments now;
                read_moments(ctx, opt->params[i].adam, &now);
                assert_memory_equal(now.m, mom[i].m, now.count * sizeof(float));
                assert_memory_equal(now.v, mom[i].v, now.count * sizeof(float));
                assert_int_equal(now.bias_step, mom[i].bias_step);
                moments_free(&now);
            } else {
                assert_null(opt->params[i].adam);
            }
            moments_free(&mom[i]);
            free(w_before[i]);
            free(g_before[i]);
        }
    }
    /* A NaN in a frozen layer's gradient is never read. */
    model_grads(&md);
    size_t frozen = SIZE_MAX;
    for (size_t i = 0; i < md.count; i++)
        if (md.p[i].layer != OWL_LAYER_ALWAYS && !mask[md.p[i].layer])
            frozen = i;
    assert_true(frozen != SIZE_MAX);
    md.p[frozen].g[0] = NAN;
    assert_owl_ok(ctx, owl_optimizer_step(opt, 1e-3));
    assert_int_equal(owl_optimizer_step_index(opt), 6);
    owl_optimizer_free(opt);
    model_free(&md);
    owl_context_free(ctx);
}

/* ---- (g): validation of every entry point ------------------------------ */

static owl_status try_create(owl_context *ctx, owl_optimizer_options *o)
{
    owl_optimizer *opt = (owl_optimizer *)(uintptr_t)1;
    owl_status s = owl_optimizer_create(ctx, o, &opt);
    assert_null(opt);
    if (s != OWL_OK)
        assert_true(strlen(owl_context_last_error(ctx)) > 0);
    return s;
}

static void test_create_validation(void **state)
{
    (void)state;
    owl_context *ctx = test_cpu_context(1);
    owl_optimizer_options o;
    owl_sampler_options so;
    owl_galore_options go;
    owl_adamw_options ao;
    owl_optimizer *opt = NULL;

#define RESET_OPTS()                                                          \
    do {                                                                      \
        owl_optimizer_options_init(&o, sizeof o);                             \
        owl_sampler_options_init(&so, sizeof so);                             \
        owl_galore_options_init(&go, sizeof go);                              \
        owl_adamw_options_init(&ao, sizeof ao);                               \
        o.num_layers = 4;                                                     \
        so.weights = k_lod;                                                   \
        o.sampler = &so;                                                      \
        o.galore = &go;                                                       \
        o.adamw = &ao;                                                        \
    } while (0)

    RESET_OPTS();
    assert_int_equal(owl_optimizer_create(NULL, &o, &opt), OWL_ERR_NULL_POINTER);
    assert_int_equal(owl_optimizer_create(ctx, &o, NULL), OWL_ERR_NULL_POINTER);
    assert_int_equal(try_create(ctx, NULL), OWL_ERR_NULL_POINTER);
    assert_int_equal(owl_optimizer_options_init(NULL, sizeof o),
                     OWL_ERR_NULL_POINTER);
    assert_int_equal(owl_optimizer_options_init(&o, 3), OWL_ERR_STRUCT_SIZE);

    RESET_OPTS();
    o.struct_size = 4;
    assert_int_equal(try_create(ctx, &o), OWL_ERR_STRUCT_SIZE);
    RESET_OPTS();
    o.method = 5;
    assert_int_equal(try_create(ctx, &o), OWL_ERR_INVALID_ARGUMENT);
    RESET_OPTS();
    o.frozen_policy = -1;
    assert_int_equal(try_create(ctx, &o), OWL_ERR_INVALID_ARGUMENT);
    RESET_OPTS();
    o.num_layers = 0;
    assert_int_equal(try_create(ctx, &o), OWL_ERR_INVALID_ARGUMENT);
    RESET_OPTS();
    o.max_grad_norm = -1;
    assert_int_equal(try_create(ctx, &o), OWL_ERR_INVALID_ARGUMENT);
    RESET_OPTS();
    o.max_grad_norm = NAN;
    assert_int_equal(try_create(ctx, &o), OWL_ERR_INVALID_ARGUMENT);
    RESET_OPTS();
    o.refresh_on_activation = 2;
    assert_int_equal(try_create(ctx, &o), OWL_ERR_INVALID_ARGUMENT);
    RESET_OPTS();
    o.reserved = 1;
    assert_int_equal(try_create(ctx, &o), OWL_ERR_INVALID_ARGUMENT);
    /* sampler */
    RESET_OPTS();
    so.gamma = 5; /* > num_layers */
    assert_int_equal(try_create(ctx, &o), OWL_ERR_INVALID_ARGUMENT);
    assert_non_null(strstr(owl_context_last_error(ctx), "gamma"));
    RESET_OPTS();
    so.period = 0;
    assert_int_equal(try_create(ctx, &o), OWL_ERR_INVALID_ARGUMENT);
    RESET_OPTS();
    so.struct_size = 2;
    assert_int_equal(try_create(ctx, &o), OWL_ERR_STRUCT_SIZE);
    RESET_OPTS();
    so.weights = NULL; /* OWLORE needs the LOD ratios */
    assert_int_equal(try_create(ctx, &o), OWL_ERR_NULL_POINTER);
    assert_non_null(strstr(owl_context_last_error(ctx), "LOD"));
    RESET_OPTS();
    o.sampler = NULL;
    assert_int_equal(try_create(ctx, &o), OWL_ERR_NULL_POINTER);
    RESET_OPTS();
    o.method = OWL_METHOD_LISA; /* uniform: weights are a mistake */
    assert_int_equal(try_create(ctx, &o), OWL_ERR_INVALID_ARGUMENT);
    RESET_OPTS();
    const double bad_w[4] = {0.1, -0.2, 0.3, 0.4};
    so.weights = bad_w;
    assert_int_equal(try_create(ctx, &o), OWL_ERR_INVALID_ARGUMENT);
    /* galore */
    RESET_OPTS();
    go.rank = 0;
    assert_int_equal(try_create(ctx, &o), OWL_ERR_INVALID_ARGUMENT);
    RESET_OPTS();
    go.update_gap = 0;
    assert_int_equal(try_create(ctx, &o), OWL_ERR_INVALID_ARGUMENT);
    RESET_OPTS();
    go.scale = 0;
    assert_int_equal(try_create(ctx, &o), OWL_ERR_INVALID_ARGUMENT);
    RESET_OPTS();
    go.proj_type = 9;
    assert_int_equal(try_create(ctx, &o), OWL_ERR_INVALID_ARGUMENT);
    RESET_OPTS();
    go.svd_method = 9;
    assert_int_equal(try_create(ctx, &o), OWL_ERR_INVALID_ARGUMENT);
    /* adamw */
    RESET_OPTS();
    ao.beta1 = 1.0;
    assert_int_equal(try_create(ctx, &o), OWL_ERR_INVALID_ARGUMENT);
    RESET_OPTS();
    ao.eps = 0;
    assert_int_equal(try_create(ctx, &o), OWL_ERR_INVALID_ARGUMENT);
    RESET_OPTS();
    ao.moment_dtype = OWL_DTYPE_F16;
    assert_int_equal(try_create(ctx, &o), OWL_ERR_DTYPE);

    /* the defaults that work; GALORE and FULL ignore the sampler */
    RESET_OPTS();
    assert_owl_ok(ctx, owl_optimizer_create(ctx, &o, &opt));
    owl_optimizer_free(opt);
    RESET_OPTS();
    o.method = OWL_METHOD_FULL;
    o.sampler = NULL;
    o.galore = NULL;
    o.adamw = NULL;
    assert_owl_ok(ctx, owl_optimizer_create(ctx, &o, &opt));
    owl_optimizer_free(opt);
    owl_optimizer_free(NULL);
#undef RESET_OPTS
    owl_context_free(ctx);
}

/* The options and the arrays they point to are copied at create. */
static void test_options_are_copied(void **state)
{
    (void)state;
    owl_context *ctx = test_cpu_context(1);
    model md;
    model_init(&md);
    run_cfg c = default_cfg(OWL_METHOD_OWLORE);
    owl_optimizer_options o;
    owl_sampler_options so;
    owl_optimizer_options_init(&o, sizeof o);
    owl_sampler_options_init(&so, sizeof so);
    double w[4];
    memcpy(w, k_lod, sizeof w);
    so.weights = w;
    so.gamma = c.gamma;
    so.period = c.period;
    so.seed = 5;
    o.num_layers = 4;
    o.sampler = &so;
    owl_optimizer *opt = NULL;
    assert_owl_ok(ctx, owl_optimizer_create(ctx, &o, &opt));
    /* scribble over everything the caller passed */
    w[0] = w[1] = w[2] = w[3] = NAN;
    memset(&so, 0xff, sizeof so);
    memset(&o, 0xff, sizeof o);

    owl_sampler_options so2;
    owl_sampler_options_init(&so2, sizeof so2);
    so2.num_layers = 4;
    so2.gamma = c.gamma;
    so2.period = c.period;
    so2.seed = 5;
    so2.weight_mode = OWL_WEIGHTS_OWLORE;
    so2.weights = k_lod;
    owl_sampler *ref = NULL;
    assert_owl_ok(ctx, owl_sampler_create(ctx, &so2, &ref));
    for (uint64_t t = 0; t < 12; t++) {
        uint8_t a[4], b[4];
        assert_owl_ok(ctx, owl_optimizer_active_layers(opt, a, 4, NULL));
        assert_owl_ok(ctx, owl_sampler_step(ref, t, b, NULL, NULL));
        assert_memory_equal(a, b, 4);
        /* steps with no parameters are refused; register one to advance */
        if (t == 0)
            assert_owl_ok(ctx, owl_optimizer_add_param(
                                   opt, OWL_LAYER_ALWAYS, &md.p[8].wt,
                                   &md.p[8].gt, 0, NULL));
        model_grads(&md);
        assert_owl_ok(ctx, owl_optimizer_step(opt, 1e-3));
    }
    owl_sampler_free(ref);
    owl_optimizer_free(opt);
    model_free(&md);
    owl_context_free(ctx);
}

static void test_param_validation(void **state)
{
    (void)state;
    owl_context *ctx = test_cpu_context(1);
    model md;
    model_init(&md);
    run_cfg c = default_cfg(OWL_METHOD_OWLORE);
    owl_optimizer_options o;
    owl_sampler_options so;
    owl_galore_options go;
    owl_optimizer_options_init(&o, sizeof o);
    owl_sampler_options_init(&so, sizeof so);
    owl_galore_options_init(&go, sizeof go);
    so.weights = k_lod;
    go.rank = 20; /* > 16 = min side of the model's matrices */
    o.num_layers = 4;
    o.sampler = &so;
    o.galore = &go;
    owl_optimizer *opt = NULL;
    assert_owl_ok(ctx, owl_optimizer_create(ctx, &o, &opt));
    tparam *p0 = &md.p[0];
    uint64_t idx = 77;

    assert_int_equal(owl_optimizer_add_param(NULL, 0, &p0->wt, &p0->gt, 0, NULL),
                     OWL_ERR_NULL_POINTER);
    assert_owl_status(ctx, owl_optimizer_add_param(opt, 0, &p0->wt, &p0->gt, 1, &idx),
                      OWL_ERR_INVALID_ARGUMENT);
    assert_non_null(strstr(owl_context_last_error(ctx), "rank"));
    assert_non_null(strstr(owl_context_last_error(ctx), "24x16"));
    assert_int_equal(idx, 77);
    assert_owl_status(ctx, owl_optimizer_add_param(opt, 4, &p0->wt, &p0->gt, 0, NULL),
                      OWL_ERR_INVALID_ARGUMENT);
    assert_owl_status(ctx, owl_optimizer_add_param(opt, 0, &p0->wt, &p0->gt, 2, NULL),
                      OWL_ERR_INVALID_ARGUMENT);
    assert_owl_status(ctx, owl_optimizer_add_param(opt, 0, NULL, &p0->gt, 0, NULL),
                      OWL_ERR_NULL_POINTER);
    assert_owl_status(ctx, owl_optimizer_add_param(opt, 0, &p0->wt, &md.p[1].gt, 0,
                                                   NULL),
                      OWL_ERR_SHAPE);
    owl_tensor bad = p0->wt;
    bad.dtype = OWL_DTYPE_F64;
    assert_owl_status(ctx, owl_optimizer_add_param(opt, 0, &bad, &p0->gt, 0, NULL),
                      OWL_ERR_DTYPE);
    bad = p0->wt;
    bad.row_stride = 3;
    assert_owl_status(ctx, owl_optimizer_add_param(opt, 0, &bad, NULL, 0, NULL),
                      OWL_ERR_SHAPE);
    assert_int_equal(owl_optimizer_num_params(opt), 0);

    /* full rank (and ALWAYS, where lowrank is not honoured) is fine */
    assert_owl_ok(ctx, owl_optimizer_add_param(opt, 0, &p0->wt, NULL, 0, &idx));
    assert_int_equal(idx, 0);
    assert_owl_status(ctx, owl_optimizer_add_param(opt, 1, &p0->wt, NULL, 0, NULL),
                      OWL_ERR_INVALID_ARGUMENT); /* registered twice */
    assert_owl_ok(ctx, owl_optimizer_add_param(opt, OWL_LAYER_ALWAYS, &md.p[8].wt,
                                               &md.p[8].gt, 1, &idx));
    assert_int_equal(idx, 1);

    /* set_grad */
    assert_int_equal(owl_optimizer_set_grad(NULL, 0, &p0->gt), OWL_ERR_NULL_POINTER);
    assert_owl_status(ctx, owl_optimizer_set_grad(opt, 2, &p0->gt),
                      OWL_ERR_INVALID_ARGUMENT);
    assert_owl_status(ctx, owl_optimizer_set_grad(opt, 0, NULL), OWL_ERR_NULL_POINTER);
    assert_owl_status(ctx, owl_optimizer_set_grad(opt, 0, &md.p[1].gt), OWL_ERR_SHAPE);

    /* active_layers */
    uint8_t mask[8];
    assert_int_equal(owl_optimizer_active_layers(NULL, mask, 4, NULL),
                     OWL_ERR_NULL_POINTER);
    assert_owl_status(ctx, owl_optimizer_active_layers(opt, NULL, 4, NULL),
                      OWL_ERR_NULL_POINTER);
    assert_owl_status(ctx, owl_optimizer_active_layers(opt, mask, 3, NULL),
                      OWL_ERR_SHAPE);
    assert_owl_ok(ctx, owl_optimizer_active_layers(opt, mask, 4, NULL));

    /* step */
    double norm;
    assert_owl_status(ctx, owl_optimizer_last_grad_norm(opt, &norm), OWL_ERR_STATE);
    assert_owl_status(ctx, owl_optimizer_last_grad_norm(opt, NULL),
                      OWL_ERR_NULL_POINTER);
    assert_int_equal(owl_optimizer_last_grad_norm(NULL, &norm), OWL_ERR_NULL_POINTER);
    assert_int_equal(owl_optimizer_step(NULL, 1e-3), OWL_ERR_NULL_POINTER);
    assert_owl_status(ctx, owl_optimizer_step(opt, -1e-3), OWL_ERR_INVALID_ARGUMENT);
    assert_owl_status(ctx, owl_optimizer_step(opt, NAN), OWL_ERR_INVALID_ARGUMENT);
    assert_owl_status(ctx, owl_optimizer_step(opt, INFINITY), OWL_ERR_INVALID_ARGUMENT);
    if (mask[0]) { /* layer 0 active: its parameter has no gradient yet */
        assert_owl_status(ctx, owl_optimizer_step(opt, 1e-3), OWL_ERR_STATE);
        assert_non_null(strstr(owl_context_last_error(ctx), "gradient"));
    }
    assert_int_equal(owl_optimizer_step_index(opt), 0);
    assert_owl_ok(ctx, owl_optimizer_set_grad(opt, 0, &p0->gt));
    model_grads(&md);
    assert_owl_ok(ctx, owl_optimizer_step(opt, 0.0));
    assert_int_equal(owl_optimizer_step_index(opt), 1);
    assert_owl_ok(ctx, owl_optimizer_last_grad_norm(opt, &norm));
    assert_true(norm > 0);
    /* registration is closed after the first step */
    assert_owl_status(ctx, owl_optimizer_add_param(opt, 1, &md.p[2].wt, NULL, 0, NULL),
                      OWL_ERR_STATE);
    assert_int_equal(owl_optimizer_num_params(opt), 2);

    /* memory */
    owl_memory_usage u;
    assert_int_equal(owl_memory_usage_init(NULL, sizeof u), OWL_ERR_NULL_POINTER);
    assert_int_equal(owl_memory_usage_init(&u, 2), OWL_ERR_STRUCT_SIZE);
    assert_int_equal(owl_optimizer_memory(NULL, &u), OWL_ERR_NULL_POINTER);
    assert_owl_status(ctx, owl_optimizer_memory(opt, NULL), OWL_ERR_NULL_POINTER);
    u.struct_size = 1;
    assert_owl_status(ctx, owl_optimizer_memory(opt, &u), OWL_ERR_STRUCT_SIZE);
    /* an older, smaller struct gets only its fields */
    memset(&u, 0xab, sizeof u);
    u.struct_size = offsetof(owl_memory_usage, host_moments);
    assert_owl_ok(ctx, owl_optimizer_memory(opt, &u));
    assert_int_equal(u.device_moments, 0);
    uint64_t untouched;
    memset(&untouched, 0xab, sizeof untouched);
    assert_int_equal(u.host_moments, untouched);

    assert_int_equal(owl_optimizer_step_index(NULL), 0);
    assert_int_equal(owl_optimizer_num_params(NULL), 0);
    owl_optimizer_free(opt);

    /* a step with nothing registered */
    owl_galore_options_init(&go, sizeof go);
    assert_owl_ok(ctx, owl_optimizer_create(ctx, &o, &opt));
    assert_owl_status(ctx, owl_optimizer_step(opt, 1e-3), OWL_ERR_STATE);
    owl_optimizer_free(opt);
    (void)c;
    model_free(&md);
    owl_context_free(ctx);
}

/* ---- (a), (h): persistence --------------------------------------------- */

/* Skips (never passes) while the library has no optimizer persistence. */
static bool persistence_available(owl_context *ctx, owl_optimizer *opt)
{
    uint64_t bytes = 0;
    owl_status s = owl_optimizer_state_size(opt, &bytes);
    if (s == OWL_ERR_UNSUPPORTED) {
        print_message("optimizer persistence is not built: %s\n",
                      owl_context_last_error(ctx));
        return false;
    }
    assert_owl_ok(ctx, s);
    return true;
}

/* CRC-32C (Castagnoli, reflected 0x82F63B78), bit by bit, independent of
 * the library's table-driven one. */
static uint32_t crc32c(const unsigned char *p, size_t n)
{
    uint32_t crc = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) {
        crc ^= p[i];
        for (int k = 0; k < 8; k++)
            crc = (crc >> 1) ^ (0x82F63B78u & (0u - (crc & 1u)));
    }
    return crc ^ 0xFFFFFFFFu;
}

static void put_le32(unsigned char *p, size_t at, uint32_t v)
{
    for (int k = 0; k < 4; k++)
        p[at + (size_t)k] = (unsigned char)(v >> (8 * k));
}

static void *save_state(owl_context *ctx, owl_optimizer *opt, uint64_t *size)
{
    uint64_t bytes = 0, written = 0;
    assert_owl_ok(ctx, owl_optimizer_state_size(opt, &bytes));
    void *buf = malloc((size_t)bytes);
    assert_non_null(buf);
    assert_owl_ok(ctx, owl_optimizer_save(opt, buf, bytes, &written));
    assert_int_equal(written, bytes);
    *size = written;
    return buf;
}

static void check_resume(owl_frozen_policy policy, bool via_file)
{
    const int steps = 60, half = 30;
    owl_context *ctx = test_cpu_context(2);
    model a, b;
    model_init(&a);
    model_init(&b);
    run_cfg c = default_cfg(OWL_METHOD_OWLORE);
    c.policy = policy;
    c.max_grad_norm = 0.5;
    c.refresh_on_activation = 1;
    owl_optimizer *oa = make_opt(ctx, &a, &c);
    if (!persistence_available(ctx, oa)) {
        owl_optimizer_free(oa);
        model_free(&a);
        model_free(&b);
        owl_context_free(ctx);
        skip();
    }
    for (int t = 0; t < steps; t++)
        train_step(ctx, oa, &a, 1e-3 * (1.0 - t / 80.0), NULL);

    owl_optimizer *ob = make_opt(ctx, &b, &c);
    for (int t = 0; t < half; t++)
        train_step(ctx, ob, &b, 1e-3 * (1.0 - t / 80.0), NULL);
    /* a fresh optimizer (and the weights, which the host saves itself) */
    owl_optimizer *oc = make_opt(ctx, &b, &c);
    if (via_file) {
        char path[] = "/tmp/owl_opt_stateXXXXXX";
        int fd = mkstemp(path);
        assert_true(fd >= 0);
        close(fd);
        assert_owl_ok(ctx, owl_optimizer_save_file(ob, path));
        assert_owl_ok(ctx, owl_optimizer_load_file(oc, path));
        unlink(path);
    } else {
        uint64_t size;
        void *blob = save_state(ctx, ob, &size);
        assert_owl_ok(ctx, owl_optimizer_load(oc, blob, size));
        free(blob);
    }
    owl_optimizer_free(ob);
    assert_int_equal(owl_optimizer_step_index(oc), half);
    for (int t = half; t < steps; t++)
        train_step(ctx, oc, &b, 1e-3 * (1.0 - t / 80.0), NULL);
    for (size_t i = 0; i < a.count; i++)
        assert_memory_equal(a.p[i].w, b.p[i].w,
                            (size_t)(a.p[i].m * a.p[i].n) * sizeof(float));
    owl_memory_usage ua, uc;
    usage_of(ctx, oa, &ua);
    usage_of(ctx, oc, &uc);
    assert_int_equal(ua.host_moments, uc.host_moments);
    assert_int_equal(ua.host_projectors, uc.host_projectors);
    owl_optimizer_free(oa);
    owl_optimizer_free(oc);
    model_free(&a);
    model_free(&b);
    owl_context_free(ctx);
}

static void test_resume_bit_identical(void **state)
{
    (void)state;
    check_resume(OWL_FROZEN_KEEP, false);
}

static void test_resume_bit_identical_free_file(void **state)
{
    (void)state;
    check_resume(OWL_FROZEN_FREE, true);
}

/* Corrupted, truncated, wrong-version or mismatched blobs are refused, and
 * the optimizer that refused them saves exactly what it saved before. */
/* The saved last norm: finite and >= 0 when present, +0.0 when absent (the
 * one value the writer puts), anything else refused as corrupt with
 * nothing changed; a blob without a norm loads and reports none. The field
 * is found by its value (the live norm's f64 bytes), has_norm just before
 * it, and the checksum resealed. */
static void test_saved_norm_checked(void **state)
{
    (void)state;
    owl_context *ctx = test_cpu_context(1);
    model md;
    model_init(&md);
    run_cfg c = default_cfg(OWL_METHOD_LISA);
    c.max_grad_norm = 1.0;
    owl_optimizer *opt = make_opt(ctx, &md, &c);
    if (!persistence_available(ctx, opt)) {
        owl_optimizer_free(opt);
        model_free(&md);
        owl_context_free(ctx);
        skip();
    }
    for (int t = 0; t < 3; t++)
        train_step(ctx, opt, &md, 1e-3, NULL);
    double norm = 0;
    assert_owl_ok(ctx, owl_optimizer_last_grad_norm(opt, &norm));
    assert_true(norm > 0);
    uint64_t size;
    unsigned char *blob = save_state(ctx, opt, &size);
    unsigned char le[8];
    uint64_t bits;
    memcpy(&bits, &norm, 8);
    for (int k = 0; k < 8; k++)
        le[k] = (unsigned char)(bits >> (8 * k));
    size_t at = 0;
    int found = 0;
    for (size_t i = 1; i + 8 <= (size_t)size; i++)
        if (memcmp(blob + i, le, 8) == 0) {
            at = i;
            found++;
        }
    assert_int_equal(found, 1);
    assert_int_equal(blob[at - 1], 1); /* has_norm */
    unsigned char *bad = malloc((size_t)size);
    assert_non_null(bad);
    const struct {
        unsigned char has;
        double value;
        owl_status want;
    } cases[] = {
        {1, -1.0, OWL_ERR_CORRUPT},    {1, NAN, OWL_ERR_CORRUPT},
        {1, INFINITY, OWL_ERR_CORRUPT}, {0, 2.5, OWL_ERR_CORRUPT},
        {0, -0.0, OWL_ERR_CORRUPT},    {0, 0.0, OWL_OK},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        memcpy(bad, blob, (size_t)size);
        bad[at - 1] = cases[k].has;
        memcpy(&bits, &cases[k].value, 8);
        for (int b = 0; b < 8; b++)
            bad[at + (size_t)b] = (unsigned char)(bits >> (8 * b));
        put_le32(bad, (size_t)size - 4, crc32c(bad, (size_t)size - 4));
        assert_owl_status(ctx, owl_optimizer_load(opt, bad, size),
                          cases[k].want);
        double now = 0;
        if (cases[k].want == OWL_OK) {
            assert_owl_status(ctx, owl_optimizer_last_grad_norm(opt, &now),
                              OWL_ERR_STATE);
        } else {
            assert_owl_ok(ctx, owl_optimizer_last_grad_norm(opt, &now));
            assert_true(now == norm);
        }
    }
    free(bad);
    free(blob);
    owl_optimizer_free(opt);
    model_free(&md);
    owl_context_free(ctx);
}

static void test_corrupt_state_rejected(void **state)
{
    (void)state;
    owl_context *ctx = test_cpu_context(1);
    model md;
    model_init(&md);
    run_cfg c = default_cfg(OWL_METHOD_OWLORE);
    owl_optimizer *src = make_opt(ctx, &md, &c);
    if (!persistence_available(ctx, src)) {
        owl_optimizer_free(src);
        model_free(&md);
        owl_context_free(ctx);
        skip();
    }
    for (int t = 0; t < 7; t++)
        train_step(ctx, src, &md, 1e-3, NULL);
    uint64_t size;
    unsigned char *blob = save_state(ctx, src, &size);

    /* the target: a different history, so a partial load would show */
    model mt;
    model_init(&mt);
    owl_optimizer *dst = make_opt(ctx, &mt, &c);
    for (int t = 0; t < 2; t++)
        train_step(ctx, dst, &mt, 1e-3, NULL);
    uint64_t ref_size;
    unsigned char *ref = save_state(ctx, dst, &ref_size);

#define CHECK_UNCHANGED()                                                     \
    do {                                                                      \
        uint64_t n_;                                                          \
        unsigned char *now_ = save_state(ctx, dst, &n_);                      \
        assert_int_equal(n_, ref_size);                                       \
        assert_memory_equal(now_, ref, (size_t)n_);                           \
        free(now_);                                                           \
    } while (0)

    for (uint64_t cut = 0; cut < size; cut++) {
        owl_status s = owl_optimizer_load(dst, blob, cut);
        if (s != OWL_ERR_CORRUPT && s != OWL_ERR_INVALID_ARGUMENT)
            fail_msg("truncated to %llu of %llu bytes: %s (%s)",
                     (unsigned long long)cut, (unsigned long long)size,
                     owl_status_name(s), owl_context_last_error(ctx));
        if (cut % 97 == 0)
            CHECK_UNCHANGED();
    }
    CHECK_UNCHANGED();
    assert_true(size > 64);
    unsigned char *bad = malloc((size_t)size + 64);
    assert_non_null(bad);
    for (uint64_t k = 0; k < size; k += (size > 4000 ? 13 : 1)) {
        memcpy(bad, blob, (size_t)size);
        bad[k] ^= 0x5a;
        owl_status s = owl_optimizer_load(dst, bad, size);
        if (s != OWL_ERR_CORRUPT && s != OWL_ERR_VERSION &&
            s != OWL_ERR_MISMATCH)
            fail_msg("a flipped byte at %llu: %s (%s)", (unsigned long long)k,
                     owl_status_name(s), owl_context_last_error(ctx));
    }
    CHECK_UNCHANGED();
    /* another format version, with a valid checksum */
    memcpy(bad, blob, (size_t)size);
    bad[8] = 2;
    bad[9] = bad[10] = bad[11] = 0;
    uint32_t crc = crc32c(bad, (size_t)size - 4);
    put_le32(bad, (size_t)size - 4, crc);
    assert_owl_status(ctx, owl_optimizer_load(dst, bad, size), OWL_ERR_VERSION);
    /* the checksum itself is what this test thinks it is */
    memcpy(bad, blob, (size_t)size);
    crc = crc32c(bad, (size_t)size - 4);
    for (int k = 0; k < 4; k++)
        assert_int_equal(bad[size - 4 + (uint64_t)k],
                         (unsigned char)(crc >> (8 * k)));
    CHECK_UNCHANGED();
    assert_int_equal(owl_optimizer_step_index(dst), 2);
    free(bad);

    /* mismatched parameters: one fewer, or another method */
    model mm;
    model_init(&mm);
    owl_optimizer_options o;
    owl_optimizer_options_init(&o, sizeof o);
    owl_optimizer *other = NULL;
    run_cfg cf = default_cfg(OWL_METHOD_OWLORE_FULL);
    other = make_opt(ctx, &mm, &cf);
    assert_owl_status(ctx, owl_optimizer_load(other, blob, size), OWL_ERR_MISMATCH);
    owl_optimizer_free(other);
    run_cfg cr = default_cfg(OWL_METHOD_OWLORE);
    cr.rank = 3;
    other = make_opt(ctx, &mm, &cr);
    assert_owl_status(ctx, owl_optimizer_load(other, blob, size), OWL_ERR_MISMATCH);
    owl_optimizer_free(other);
    cr = default_cfg(OWL_METHOD_OWLORE);
    cr.policy = OWL_FROZEN_FREE;
    other = make_opt(ctx, &mm, &cr);
    assert_owl_status(ctx, owl_optimizer_load(other, blob, size), OWL_ERR_MISMATCH);
    owl_optimizer_free(other);
    /* one parameter fewer, and the same count with two swapped */
    model_free(&mm);
    model_init(&mm);
    mm.count--;
    other = make_opt(ctx, &mm, &c);
    assert_owl_status(ctx, owl_optimizer_load(other, blob, size), OWL_ERR_MISMATCH);
    owl_optimizer_free(other);
    mm.count++;
    tparam tmp = mm.p[0];
    mm.p[0] = mm.p[1];
    mm.p[1] = tmp;
    other = make_opt(ctx, &mm, &c);
    assert_owl_status(ctx, owl_optimizer_load(other, blob, size), OWL_ERR_MISMATCH);
    assert_non_null(strstr(owl_context_last_error(ctx), "parameter 0"));
    /* nothing was allocated by the failed loads */
    owl_memory_usage u;
    usage_of(ctx, other, &u);
    assert_int_equal(u.host_moments, 0);
    owl_optimizer_free(other);
    (void)o;
    model_free(&mm);

    /* and the good blob still loads, after all that */
    assert_owl_ok(ctx, owl_optimizer_load(dst, blob, size));
    assert_int_equal(owl_optimizer_step_index(dst), 7);
    free(blob);
    free(ref);
#undef CHECK_UNCHANGED
    owl_optimizer_free(src);
    owl_optimizer_free(dst);
    model_free(&md);
    model_free(&mt);
    owl_context_free(ctx);
}

int main(int argc, char **argv)
{
    const char *path = test_arg(argc, argv, 1, "optimizer.ref");
    g_ref = refdata_load(path);
    if (g_ref == NULL)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_full_matches_torch_adamw),
        cmocka_unit_test(test_full_clipped_matches_torch),
        cmocka_unit_test(test_galore_matches_reference),
        cmocka_unit_test(test_galore_clipped_matches_reference),
        cmocka_unit_test(test_active_layers_owlore),
        cmocka_unit_test(test_active_layers_lisa),
        cmocka_unit_test(test_only_active_layers_change),
        cmocka_unit_test(test_memory_lazy_keep),
        cmocka_unit_test(test_memory_free_policy),
        cmocka_unit_test(test_policy_keep),
        cmocka_unit_test(test_policy_reset),
        cmocka_unit_test(test_policy_free),
        cmocka_unit_test(test_policy_offload_is_keep_on_cpu),
        cmocka_unit_test(test_refresh_on_activation),
        cmocka_unit_test(test_nonfinite_changes_nothing),
        cmocka_unit_test(test_create_validation),
        cmocka_unit_test(test_options_are_copied),
        cmocka_unit_test(test_param_validation),
        cmocka_unit_test(test_resume_bit_identical),
        cmocka_unit_test(test_resume_bit_identical_free_file),
        cmocka_unit_test(test_corrupt_state_rejected),
        cmocka_unit_test(test_saved_norm_checked),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    refdata_free(g_ref);
    return failed;
}
