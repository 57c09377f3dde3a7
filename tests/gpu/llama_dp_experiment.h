/*
 * The data-parallel experiment shared by test_gpu_llama_nccl.c (two
 * processes on two GPUs through NCCL) and test_llama_dp_emu.c (two model
 * replicas on the emulated device, averaged on the host as ncclAvg does):
 * the model, the data, the optimizer, what a run reports, and the checks
 * against one run on the whole batch, with their bounds (argued in
 * test_gpu_llama_nccl.c's header). Header-only: each test program
 * includes it once.
 */
#ifndef LLAMA_DP_EXPERIMENT_H
#define LLAMA_DP_EXPERIMENT_H

#include "../common/testutil.h"

#include "llama.h"
#include "llama_gpu.h"

#include <owlore/owlore.h>

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define STEPS 6
#define DP_B 2   /* sequences per rank */
#define DP_T 16  /* tokens per sequence */
#define GAMMA 2
#define LR 1e-3
#define INIT_STD 0.02f
#define GRAD_TOL 0.015625 /* 2^-6 */
#define LOSS_TOL 2e-3
#define WEIGHT_TOL 0.1
#define LOWRANK_WEIGHT_TOL 0.5

static const llama_config test_cfg = {
    .dim = 64, .hidden_dim = 128, .n_layers = 4, .n_heads = 4,
    .n_kv_heads = 2, .vocab_size = 96, .seq_len = DP_T,
    .rope_theta = 10000.0f, .norm_eps = 1e-5f, .tied = 0,
};

enum { RUN_FULL = 0, RUN_OWLORE = 1, NUM_RUNS = 2 };
static const char *const run_names[NUM_RUNS] = {"FULL", "OWLORE"};

/* Token k of global sequence s at step `step`: a counter hash, so every
 * process builds the same global batch and takes its own rows. */
static int32_t token_at(int step, int s, int k)
{
    uint64_t x = (uint64_t)step * 0x9E3779B97F4A7C15ull ^
                 (uint64_t)s * 0xBF58476D1CE4E5B9ull ^
                 (uint64_t)k * 0x94D049BB133111EBull;
    x ^= x >> 31;
    x *= 0xD6E8FEB86979CD93ull;
    x ^= x >> 29;
    return (int32_t)(x % (uint64_t)test_cfg.vocab_size);
}

/* Sequences [first, first + n) of the step's global batch: inputs and
 * next-token targets (every target counts). */
static void make_batch(int step, int first, int n, int32_t *tokens,
                       int32_t *targets)
{
    for (int b = 0; b < n; b++)
        for (int t = 0; t < DP_T; t++) {
            tokens[b * DP_T + t] = token_at(step, first + b, t);
            targets[b * DP_T + t] = token_at(step, first + b, t + 1);
        }
}

/* What a process reports for one run. */
typedef struct run_result {
    uint8_t masks[STEPS][8];
    double losses[STEPS];
    double grad_norm0; /* the optimizer's norm at step 0 */
    int64_t ngrads;    /* tensors with a gradient at step 0 */
    int64_t grad_index[64];
    int64_t grad_count[64];
    float *grads;      /* step-0 gradients, concatenated */
    size_t nweights;
    float *weights;    /* after STEPS steps, host layout */
    float *init;       /* before the first step (bf16 values) */
} run_result;

static void result_free(run_result *r)
{
    free(r->grads);
    free(r->weights);
    free(r->init);
    memset(r, 0, sizeof *r);
}

/* The optimizer every run uses: FULL clipping at 0.5, or OWLORE (gamma 2,
 * period 2, rank 8, refresh every 3 updates), frozen layers OFFLOAD, the
 * same sampler seed everywhere. */
static owl_status dp_optimizer_create(owl_context *ctx, int which,
                                      owl_optimizer **out)
{
    const int L = test_cfg.n_layers;
    owl_sampler_options so;
    owl_sampler_options_init(&so, sizeof so);
    so.gamma = GAMMA;
    so.period = 2;
    so.seed = 7; /* the same on every rank: no communication needed */
    so.weight_mode = OWL_WEIGHTS_OWLORE;
    static const double lod_ratios[4] = {0.10, 0.30, 0.20, 0.40};
    so.weights = lod_ratios;
    owl_galore_options go;
    owl_galore_options_init(&go, sizeof go);
    go.rank = 8;
    go.update_gap = 3;
    owl_optimizer_options oo;
    owl_optimizer_options_init(&oo, sizeof oo);
    oo.method = which == RUN_FULL ? OWL_METHOD_FULL : OWL_METHOD_OWLORE;
    oo.frozen_policy = OWL_FROZEN_OFFLOAD;
    oo.num_layers = (uint64_t)L;
    oo.sampler = &so;
    oo.galore = &go;
    /* FULL clips (after the average: each rank sees the averaged norm) */
    oo.max_grad_norm = which == RUN_FULL ? 0.5 : 0.0;
    return owl_optimizer_create(ctx, &oo, out);
}

static double rel_l2(const float *a, const float *b, size_t n,
                     const float *base)
{
    /* ||a - b|| / ||b - base|| (base NULL: / ||b||) */
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)a[i] - (double)b[i];
        double s = base ? (double)b[i] - (double)base[i] : (double)b[i];
        num += d * d;
        den += s * s;
    }
    if (den == 0)
        return num == 0 ? 0 : INFINITY;
    return sqrt(num / den);
}

/* The offsets of a parameter tensor inside the host layout are not needed:
 * the weights are compared per host tensor through llama_params views. */
typedef struct span {
    const char *what;
    size_t off, n;
} span;

static int host_spans(span *s, int cap)
{
    const llama_config *c = &test_cfg;
    const size_t D = (size_t)c->dim, H = (size_t)c->hidden_dim;
    const size_t hd = D / (size_t)c->n_heads;
    const size_t q = (size_t)c->n_heads * hd, kv = (size_t)c->n_kv_heads * hd;
    /* llama_params order (model.c): embed, per layer rms_att wq wk wv wo
     * rms_ffn w_gate w_up w_down, rms_final, head. Checked against the
     * real layout below through llama_create. */
    int k = 0;
    size_t off = 0;
#define ADD(name, count)                                                       \
    do {                                                                       \
        if (k < cap)                                                           \
            s[k] = (span){name, off, (count)};                                 \
        k++;                                                                   \
        off += (count);                                                        \
    } while (0)
    ADD("embed", (size_t)c->vocab_size * D);
    for (int l = 0; l < c->n_layers; l++) {
        ADD("rms_att", D);
        ADD("wq", q * D);
        ADD("wk", kv * D);
        ADD("wv", kv * D);
        ADD("wo", D * q);
        ADD("rms_ffn", D);
        ADD("w_gate", H * D);
        ADD("w_up", H * D);
        ADD("w_down", D * H);
    }
    ADD("rms_final", D);
    if (!c->tied)
        ADD("head", (size_t)c->vocab_size * D);
#undef ADD
    return k;
}

/* Checks the span table against llama_create's real views. */
static void check_layout(const span *s, int n)
{
    llama_model m;
    char err[256];
    assert_int_equal(llama_create(&m, &test_cfg, 1, err, sizeof err), 0);
    const float *base = m.w.base;
    int k = 0;
    assert_true(s[k++].off == (size_t)(m.w.embed - base));
    for (int l = 0; l < test_cfg.n_layers; l++) {
        const llama_layer *ly = &m.w.layers[l];
        const float *p[9] = {ly->rms_att, ly->wq, ly->wk, ly->wv, ly->wo,
                             ly->rms_ffn, ly->w_gate, ly->w_up, ly->w_down};
        for (int j = 0; j < 9; j++)
            assert_true(s[k++].off == (size_t)(p[j] - base));
    }
    assert_true(s[k++].off == (size_t)(m.w.rms_final - base));
    if (!test_cfg.tied)
        assert_true(s[k++].off == (size_t)(m.w.head - base));
    assert_int_equal(k, n);
    assert_true(s[n - 1].off + s[n - 1].n == m.w.count);
    llama_destroy(&m);
}

/* Every step, both ranks and the reference train the same layers (gamma
 * of them under OWLORE, all under FULL). */
static void dp_check_masks(const run_result *r0, const run_result *r1,
                           const run_result *ref)
{
    const int L = test_cfg.n_layers;
    for (int w = 0; w < NUM_RUNS; w++)
        for (int s = 0; s < STEPS; s++) {
            const uint8_t *m0 = r0[w].masks[s];
            const uint8_t *m1 = r1[w].masks[s];
            const uint8_t *mr = ref[w].masks[s];
            int count = 0;
            for (int l = 0; l < L; l++) {
                if (m0[l] != m1[l] || m0[l] != mr[l])
                    fail_msg("%s step %d layer %d: rank 0 %d, rank 1 %d, "
                             "reference %d", run_names[w], s, l, m0[l],
                             m1[l], mr[l]);
                count += m0[l] != 0;
            }
            assert_int_equal(count, w == RUN_FULL ? L : GAMMA);
        }
}

/* The replicas hold the same weights, and had the same averaged step-0
 * gradients. */
static void dp_check_identical(const run_result *r0, const run_result *r1)
{
    for (int w = 0; w < NUM_RUNS; w++) {
        const run_result *a = &r0[w], *b = &r1[w];
        assert_int_equal(a->nweights, b->nweights);
        size_t bad = 0, first = 0;
        for (size_t i = 0; i < a->nweights; i++)
            if (memcmp(&a->weights[i], &b->weights[i], 4) != 0 && !bad++)
                first = i;
        if (bad)
            fail_msg("%s: after %d steps the ranks differ in %zu of %zu "
                     "weights (first at %zu: %g vs %g)", run_names[w], STEPS,
                     bad, a->nweights, first, (double)a->weights[first],
                     (double)b->weights[first]);
        /* identical averaged gradients at step 0 as well */
        assert_int_equal(a->ngrads, b->ngrads);
        int64_t total = 0;
        for (int64_t k = 0; k < a->ngrads; k++)
            total += a->grad_count[k];
        assert_memory_equal(a->grads, b->grads, (size_t)total * 4);
    }
}

/* Step 0: the averaged gradients, the loss and the optimizer's norm
 * against the whole batch's; the control must be out of bounds. */
static void dp_check_step0(const run_result *r0, const run_result *r1,
                           const run_result *refs, const run_result *ctls)
{
    for (int w = 0; w < NUM_RUNS; w++) {
        const run_result *dp = &r0[w], *ref = &refs[w], *ctl = &ctls[w];
        assert_int_equal(dp->ngrads, ref->ngrads);
        assert_int_equal(ctl->ngrads, ref->ngrads);
        size_t at = 0;
        double worst = 0, ctl_best = INFINITY;
        for (int64_t k = 0; k < dp->ngrads; k++) {
            assert_int_equal(dp->grad_index[k], ref->grad_index[k]);
            assert_int_equal(dp->grad_count[k], ref->grad_count[k]);
            size_t n = (size_t)dp->grad_count[k];
            double e = rel_l2(dp->grads + at, ref->grads + at, n, NULL);
            double c = rel_l2(ctl->grads + at, ref->grads + at, n, NULL);
            if (e > GRAD_TOL)
                fail_msg("%s: step-0 gradient of tensor %lld, averaged over "
                         "2 ranks vs the whole batch: rel. L2 %.3g > %.3g",
                         run_names[w], (long long)dp->grad_index[k], e,
                         GRAD_TOL);
            worst = e > worst ? e : worst;
            ctl_best = c < ctl_best ? c : ctl_best;
            at += n;
        }
        printf("%s step 0: gradients rel. L2 worst %.3g (bound %.3g); "
               "control without all-reduce: best %.3g\n", run_names[w], worst,
               GRAD_TOL, ctl_best);
        if (!(ctl_best > GRAD_TOL))
            fail_msg("%s: one rank's half batch alone is within the gradient "
                     "bound (%.3g): the check cannot tell", run_names[w],
                     ctl_best);
        double mean_loss = 0.5 * (r0[w].losses[0] +
                                  r1[w].losses[0]);
        double le = fabs(mean_loss - ref->losses[0]) / fabs(ref->losses[0]);
        printf("%s step 0: loss mean of ranks %.6f, whole batch %.6f\n",
               run_names[w], mean_loss, ref->losses[0]);
        if (le > LOSS_TOL)
            fail_msg("%s: step-0 loss: mean of the ranks %.6f, whole batch "
                     "%.6f (rel. %.3g > %.3g)", run_names[w], mean_loss,
                     ref->losses[0], le, LOSS_TOL);
        double ne = fabs(dp->grad_norm0 - ref->grad_norm0) / ref->grad_norm0;
        printf("%s step 0: gradient norm %.6g, whole batch %.6g\n",
               run_names[w], dp->grad_norm0, ref->grad_norm0);
        if (!(ne <= GRAD_TOL))
            fail_msg("%s: the optimizer's gradient norm %.6g vs the whole "
                     "batch's %.6g (rel. %.3g > %.3g)", run_names[w],
                     dp->grad_norm0, ref->grad_norm0, ne, GRAD_TOL);
    }
}

/* After STEPS steps, each tensor against the whole batch's, relative to
 * the update. */
static void dp_check_weights(const run_result *r0, const run_result *refs,
                             const run_result *ctls)
{
    span s[64];
    int n = host_spans(s, 64);
    assert_true(n <= 64);
    check_layout(s, n);
    for (int w = 0; w < NUM_RUNS; w++) {
        const run_result *dp = &r0[w], *ref = &refs[w], *ctl = &ctls[w];
        assert_int_equal(dp->nweights, ref->nweights);
        /* the same starting point */
        assert_memory_equal(dp->init, ref->init, dp->nweights * 4);
        double worst[2] = {0, 0}, ctl_worst = 0;
        int trained = 0;
        for (int k = 0; k < n; k++) {
            const float *a = dp->weights + s[k].off;
            const float *b = ref->weights + s[k].off;
            const float *w0 = ref->init + s[k].off;
            /* the seven matrices of a layer (not its two norm gains) take
             * GaLore's low-rank path under OWLORE */
            int in_layer = k >= 1 && k <= 9 * test_cfg.n_layers;
            int j = (k - 1) % 9;
            int lowrank = w == RUN_OWLORE && in_layer && j != 0 && j != 5;
            double tol = lowrank ? LOWRANK_WEIGHT_TOL : WEIGHT_TOL;
            double e = rel_l2(a, b, s[k].n, w0);
            double c = rel_l2(ctl->weights + s[k].off, b, s[k].n, w0);
            if (e > tol)
                fail_msg("%s: %s (tensor %d%s) after %d steps: ||W_dp - "
                         "W_ref|| / ||W_ref - W_0|| = %.3g > %.3g",
                         run_names[w], s[k].what, k,
                         lowrank ? ", low rank" : "", STEPS, e, tol);
            if (isfinite(e) && memcmp(b, w0, s[k].n * 4) != 0) {
                trained++;
                worst[lowrank] = e > worst[lowrank] ? e : worst[lowrank];
                ctl_worst = isfinite(c) && c > ctl_worst ? c : ctl_worst;
            }
        }
        assert_true(trained > 0);
        printf("%s after %d steps: %d tensors moved; weights rel. to the "
               "update, worst %.3g full rank (bound %.3g), %.3g low rank "
               "(bound %.3g); control without all-reduce: worst %.3g\n",
               run_names[w], STEPS, trained, worst[0], WEIGHT_TOL, worst[1],
               LOWRANK_WEIGHT_TOL, ctl_worst);
    }
}

#endif /* LLAMA_DP_EXPERIMENT_H */
