/* The layer sampler: which decoder layers train in each period (spec
 * section 2).
 *
 * Every random number a period uses is owl__hash3(seed, period, i) for a
 * running counter i, so the active set is a pure function of (seed,
 * period, weights, law): resuming from a checkpoint, visiting periods in
 * any order, or running the same options on many data-parallel ranks gives
 * the same layers without communication.
 *
 * Threads: the configuration, p and pi are set at create and change only
 * when a saved state is loaded (owl__sampler_rebuild). owl_sampler_step
 * writes only the caller's outputs, a scratch permutation kept in the
 * handle (so a step never allocates) and the context's error text; so,
 * like every handle, a sampler is used from one thread at a time. Its
 * results never depend on which calls came before.
 */
#include "sampler_internal.h"

#include <math.h>
#include <string.h>

/* Bounds of the exact REFERENCE inclusion probabilities (see
 * reference_inclusion): the number of sets of already-drawn layers, and
 * that number times the drawable layers (the work, about a second at the
 * bound). Beyond either, owl_sampler_probabilities returns
 * OWL_ERR_UNSUPPORTED. */
#define OWL_REF_MAX_SUBSETS ((uint64_t)1 << 22)     /* 4194304 */
#define OWL_REF_MAX_TRANSITIONS ((uint64_t)1 << 28) /* 268435456 */

/* ------------------------------------------------------------------ */
/* Options                                                             */
/* ------------------------------------------------------------------ */

static const owl_sampler_options sampler_defaults = {
    .struct_size = sizeof(owl_sampler_options),
    .num_layers = 0,
    .gamma = 2,
    .period = 50,
    .seed = 0,
    .weight_mode = OWL_WEIGHTS_UNIFORM,
    .law = OWL_DRAW_SYSTEMATIC,
    .weights = NULL,
};

owl_status owl_sampler_options_init(owl_sampler_options *opts,
                                    uint64_t struct_size)
{
    return owl__init_options(opts, struct_size, &sampler_defaults,
                             sizeof sampler_defaults);
}

static const char *weight_mode_name(owl_weight_mode mode)
{
    switch (mode) {
    case OWL_WEIGHTS_OWLORE: return "OWLORE";
    case OWL_WEIGHTS_UNIFORM: return "UNIFORM";
    case OWL_WEIGHTS_DECREASING: return "DECREASING";
    case OWL_WEIGHTS_INCREASING: return "INCREASING";
    case OWL_WEIGHTS_CUSTOM: return "CUSTOM";
    default: return "unknown";
    }
}

static bool mode_takes_weights(owl_weight_mode mode)
{
    return mode == OWL_WEIGHTS_OWLORE || mode == OWL_WEIGHTS_CUSTOM;
}

/* p_l = w_l / sum(w), computed as (w_l / max) / sum_k (w_k / max): dividing
 * by the largest weight first means the sum cannot overflow for any finite
 * input. A weight far below the largest (5e-324 beside 10) still becomes 0
 * here, so validation counts the positive weights of exactly this
 * arithmetic (weights_positive), not of the caller's raw numbers: the draws
 * use these p. */
static double weights_max(const double *w, uint64_t L)
{
    double max = 0;
    for (uint64_t l = 0; l < L; l++)
        if (w[l] > max)
            max = w[l];
    return max;
}

static double weights_scaled_sum(const double *w, uint64_t L, double max)
{
    double sum = 0;
    for (uint64_t l = 0; l < L; l++)
        sum += w[l] / max;
    return sum;
}

static double weight_normalised(double w, double max, double sum)
{
    return w / max / sum;
}

/* The number of layers whose p normalise_weights makes > 0, for finite
 * weights >= 0 with at least one > 0. */
static uint64_t weights_positive(const double *w, uint64_t L)
{
    const double max = weights_max(w, L);
    const double sum = weights_scaled_sum(w, L, max);
    uint64_t positive = 0;
    for (uint64_t l = 0; l < L; l++)
        positive += weight_normalised(w[l], max, sum) > 0;
    return positive;
}

/* One set of rules for the sampler's options, shared by owl_sampler_create,
 * the optimizer and the memory planner. `prefix` names the struct in
 * messages ("" or "owl_optimizer_options.sampler->"). need_weights false
 * lets a mode that takes weights leave them NULL (the planner: the weights
 * do not change the memory); weights that are given are always checked:
 * finite, >= 0, and at least gamma of them > 0 once normalised, so every
 * accepted configuration draws exactly gamma layers (SYSTEMATIC,
 * REFERENCE) or has inclusion probabilities summing to gamma (BERNOULLI). */
owl_status owl__sampler_check_options(owl_context *ctx,
                                      const owl_sampler_options *o,
                                      const char *prefix, bool need_weights)
{
    if (o->num_layers < 1)
        return owl__fail(ctx, OWL_ERR_INVALID_ARGUMENT,
                         "%snum_layers is 0; set it to the model's decoder "
                         "layer count (>= 1)",
                         prefix);
    if (o->num_layers > (uint64_t)SIZE_MAX / sizeof(double))
        return owl__fail(ctx, OWL_ERR_INVALID_ARGUMENT,
                         "%snum_layers is %llu, more than can be addressed",
                         prefix, (unsigned long long)o->num_layers);
    if (o->gamma < 1 || o->gamma > o->num_layers)
        return owl__fail(ctx, OWL_ERR_INVALID_ARGUMENT,
                         "%sgamma is %llu with num_layers %llu; need 1 <= "
                         "gamma <= num_layers",
                         prefix, (unsigned long long)o->gamma,
                         (unsigned long long)o->num_layers);
    if (o->period < 1)
        return owl__fail(ctx, OWL_ERR_INVALID_ARGUMENT,
                         "%speriod is 0; the resampling period K must be >= 1",
                         prefix);
    if (o->weight_mode < OWL_WEIGHTS_OWLORE || o->weight_mode > OWL_WEIGHTS_CUSTOM)
        return owl__fail(ctx, OWL_ERR_INVALID_ARGUMENT,
                         "%sweight_mode is %d; expected OWLORE (0), UNIFORM "
                         "(1), DECREASING (2), INCREASING (3) or CUSTOM (4)",
                         prefix, (int)o->weight_mode);
    if (o->law < OWL_DRAW_SYSTEMATIC || o->law > OWL_DRAW_BERNOULLI)
        return owl__fail(ctx, OWL_ERR_INVALID_ARGUMENT,
                         "%slaw is %d; expected SYSTEMATIC (0), REFERENCE (1) "
                         "or BERNOULLI (2)",
                         prefix, (int)o->law);
    const bool takes = mode_takes_weights(o->weight_mode);
    if (takes && o->weights == NULL && need_weights)
        return owl__fail(ctx, OWL_ERR_NULL_POINTER,
                         "%sweights is NULL; weight_mode %s needs num_layers "
                         "(%llu) weights",
                         prefix, weight_mode_name(o->weight_mode),
                         (unsigned long long)o->num_layers);
    /* Weights passed with a mode that ignores them are almost surely a
     * forgotten weight_mode, which would silently train uniformly. */
    if (!takes && o->weights != NULL)
        return owl__fail(ctx, OWL_ERR_INVALID_ARGUMENT,
                         "%sweights is set but weight_mode %s ignores it; use "
                         "OWLORE or CUSTOM to pass weights, or leave it NULL",
                         prefix, weight_mode_name(o->weight_mode));
    if (o->weights == NULL)
        return OWL_OK;
    const double *w = o->weights;
    const uint64_t L = o->num_layers;
    uint64_t positive = 0;
    for (uint64_t l = 0; l < L; l++) {
        if (!isfinite(w[l]))
            return owl__fail(ctx, OWL_ERR_NONFINITE,
                             "%sweights[%llu] is %g; weights must be finite",
                             prefix, (unsigned long long)l, w[l]);
        if (w[l] < 0)
            return owl__fail(ctx, OWL_ERR_INVALID_ARGUMENT,
                             "%sweights[%llu] is %g; weights must be >= 0",
                             prefix, (unsigned long long)l, w[l]);
        if (w[l] > 0)
            positive++;
    }
    if (positive == 0)
        return owl__fail(ctx, OWL_ERR_INVALID_ARGUMENT,
                         "all %llu %sweights are 0; at least gamma (%llu) "
                         "must be > 0",
                         (unsigned long long)L, prefix,
                         (unsigned long long)o->gamma);
    /* The draws use w_l / sum(w): a weight too small beside the largest
     * to survive that division in double precision is a zero weight. */
    const uint64_t usable = weights_positive(w, L);
    if (usable < o->gamma && usable == positive)
        return owl__fail(ctx, OWL_ERR_INVALID_ARGUMENT,
                         "%sgamma is %llu but only %llu of the %llu weights "
                         "are > 0; exactly gamma distinct layers cannot be "
                         "drawn",
                         prefix, (unsigned long long)o->gamma,
                         (unsigned long long)positive, (unsigned long long)L);
    if (usable < o->gamma)
        return owl__fail(ctx, OWL_ERR_INVALID_ARGUMENT,
                         "%sgamma is %llu but only %llu of the %llu weights "
                         "stay > 0 once divided by their sum (%llu are > 0, "
                         "the others are below the largest by more than the "
                         "range of a double); exactly gamma distinct layers "
                         "cannot be drawn",
                         prefix, (unsigned long long)o->gamma,
                         (unsigned long long)usable, (unsigned long long)L,
                         (unsigned long long)positive);
    return OWL_OK;
}

/* ------------------------------------------------------------------ */
/* Probabilities                                                       */
/* ------------------------------------------------------------------ */

static void normalise_weights(const owl_sampler_options *o, double *p)
{
    const uint64_t L = o->num_layers;
    for (uint64_t l = 0; l < L; l++) {
        switch (o->weight_mode) {
        case OWL_WEIGHTS_UNIFORM: p[l] = 1.0; break;
        case OWL_WEIGHTS_DECREASING: p[l] = (double)(L - l); break;
        case OWL_WEIGHTS_INCREASING: p[l] = (double)(l + 1); break;
        default: p[l] = o->weights[l]; break;
        }
    }
    const double max = weights_max(p, L);
    const double sum = weights_scaled_sum(p, L, max);
    for (uint64_t l = 0; l < L; l++)
        p[l] = weight_normalised(p[l], max, sum);
}

/* pi_l = min(1, c p_l) with sum(pi) = gamma. Layers whose c p_l >= 1 are
 * capped at 1 and the others share the remaining mass in proportion to
 * p; capping raises c, so repeat until no new layer reaches 1. */
static void capped_inclusion(const double *p, uint64_t L, uint64_t gamma,
                             double *pi)
{
    const double uncapped = -1.0; /* marker while iterating */
    for (uint64_t l = 0; l < L; l++)
        pi[l] = p[l] > 0 ? uncapped : 0.0;
    uint64_t capped = 0;
    for (;;) {
        double free_mass = 0;
        for (uint64_t l = 0; l < L; l++)
            if (pi[l] == uncapped)
                free_mass += p[l];
        const double target = (double)(gamma - capped);
        bool changed = false;
        for (uint64_t l = 0; l < L; l++) {
            /* c p_l >= 1 with c = target / free_mass, without dividing. */
            if (pi[l] == uncapped && target * p[l] >= free_mass) {
                pi[l] = 1.0;
                capped++;
                changed = true;
            }
        }
        if (!changed) {
            for (uint64_t l = 0; l < L; l++)
                if (pi[l] == uncapped)
                    pi[l] = target * p[l] / free_mass;
            return;
        }
    }
}

/* Splits the layers for systematic sampling into the certain ones
 * (pi == 1) and the drawable ones (0 < pi < 1). */
static void classify_layers(owl_sampler *s)
{
    s->num_certain = 0;
    s->num_drawable = 0;
    s->drawable_mass = 0;
    for (uint64_t l = 0; l < s->num_layers; l++) {
        if (s->pi[l] >= 1.0) {
            s->pi[l] = 1.0;
            s->num_certain++;
        } else if (s->pi[l] > 0) {
            s->drawable[s->num_drawable++] = (size_t)l;
            s->drawable_mass += s->pi[l];
        }
    }
}

void owl__sampler_rebuild(owl_sampler *s)
{
    capped_inclusion(s->p, s->num_layers, s->gamma, s->pi);
    classify_layers(s);
}

/* ------------------------------------------------------------------ */
/* Create / free                                                       */
/* ------------------------------------------------------------------ */

void owl_sampler_free(owl_sampler *sampler)
{
    if (sampler == NULL)
        return;
    owl__free(sampler->p);
    owl__free(sampler->pi);
    owl__free(sampler->drawable);
    owl__free(sampler->order);
    owl__free(sampler);
}

owl_status owl_sampler_create(owl_context *ctx, const owl_sampler_options *opts,
                              owl_sampler **out)
{
    if (out != NULL)
        *out = NULL; /* also when ctx is NULL: no stale handle escapes */
    owl_sampler_options o = sampler_defaults;
    owl_status st = owl__create_begin(ctx, out != NULL, opts, &o, sizeof o,
                                     "owl_sampler_options");
    if (st != OWL_OK)
        return st;
    st = owl__sampler_check_options(ctx, &o, "", true);
    if (st != OWL_OK)
        return st;

    owl_sampler *s = owl__alloc(ctx, 1, sizeof *s, "sampler");
    if (s == NULL)
        return OWL_ERR_OUT_OF_MEMORY;
    const size_t L = (size_t)o.num_layers;
    s->p = owl__alloc(ctx, L, sizeof(double), "sampler probabilities");
    s->pi = owl__alloc(ctx, L, sizeof(double), "sampler probabilities");
    s->drawable = owl__alloc(ctx, L, sizeof(size_t), "sampler layer list");
    s->order = owl__alloc(ctx, L, sizeof(size_t), "sampler layer list");
    if (s->p == NULL || s->pi == NULL || s->drawable == NULL ||
        s->order == NULL) {
        owl_sampler_free(s);
        return OWL_ERR_OUT_OF_MEMORY;
    }
    s->ctx = ctx;
    s->num_layers = o.num_layers;
    s->gamma = o.gamma;
    s->period = o.period;
    s->seed = o.seed;
    s->law = o.law;
    normalise_weights(&o, s->p);
    owl__sampler_rebuild(s);
    *out = s;
    return OWL_OK;
}

/* ------------------------------------------------------------------ */
/* Drawing one period                                                  */
/* ------------------------------------------------------------------ */

/* The counter-based random stream of one period. */
typedef struct period_rng {
    uint64_t seed;
    uint64_t period;
    uint64_t counter;
} period_rng;

static uint64_t rng_bits(period_rng *r)
{
    return owl__hash3(r->seed, r->period, r->counter++);
}

static double rng_u01(period_rng *r)
{
    return owl__u01(rng_bits(r));
}

/* Uniform integer in [0, n), n >= 1, without modulo bias: values in the
 * incomplete top block of 2^64 are drawn again. */
static uint64_t rng_below(period_rng *r, uint64_t n)
{
    const uint64_t excess = (UINT64_MAX % n + 1) % n; /* 2^64 mod n */
    for (;;) {
        uint64_t x = rng_bits(r);
        if (excess == 0 || x < (uint64_t)0 - excess)
            return x % n;
    }
}

/* Exactly gamma layers with inclusion probabilities pi: the certain layers,
 * then systematic PPS over the drawable ones in a uniformly random order
 * (Fisher-Yates): one start u in [0, 1) and the points u, u+1, ...,
 * u+target-1 on the line of their cumulative pi; each point selects the
 * layer whose interval holds it. */
static uint64_t draw_systematic(const owl_sampler *s, period_rng *rng,
                                uint8_t *mask)
{
    for (uint64_t l = 0; l < s->num_layers; l++)
        if (s->pi[l] == 1.0)
            mask[l] = 1;
    const uint64_t target = s->gamma - s->num_certain;
    const size_t n = s->num_drawable;
    if (target == 0 || n == 0)
        return s->num_certain;

    size_t *order = s->order;
    memcpy(order, s->drawable, n * sizeof *order);
    for (size_t i = n - 1; i > 0; i--) {
        size_t j = (size_t)rng_below(rng, (uint64_t)i + 1);
        size_t t = order[i];
        order[i] = order[j];
        order[j] = t;
    }

    /* The intervals are rescaled so they end exactly at `target`, and a
     * layer is taken at most once, moving on to the next one; with the
     * last-resort rule below the count is exactly `target` whatever the
     * rounding. In exact arithmetic neither guard ever changes a draw. */
    const double u = rng_u01(rng);
    const double scale = (double)target / s->drawable_mass;
    double upper = 0;
    uint64_t taken = 0;
    for (size_t i = 0; i < n && taken < target; i++) {
        const size_t l = order[i];
        upper = i + 1 == n ? (double)target : upper + s->pi[l] * scale;
        const bool point_inside = u + (double)taken < upper;
        const bool must_take = (uint64_t)(n - i) <= target - taken;
        if (point_inside || must_take) {
            mask[l] = 1;
            taken++;
        }
    }
    return s->num_certain + taken;
}

/* numpy's choice(L, gamma, replace=False, p): gamma successive draws, each
 * among the layers not yet drawn with probability proportional to p. */
static uint64_t draw_reference(const owl_sampler *s, period_rng *rng,
                               uint8_t *mask)
{
    const size_t L = (size_t)s->num_layers;
    for (uint64_t k = 0; k < s->gamma; k++) {
        double rest = 0;
        for (size_t l = 0; l < L; l++)
            if (!mask[l])
                rest += s->p[l];
        const double t = rng_u01(rng) * rest;
        size_t pick = SIZE_MAX, last = SIZE_MAX;
        double acc = 0;
        for (size_t l = 0; l < L; l++) {
            if (mask[l] || s->p[l] == 0)
                continue;
            last = l;
            acc += s->p[l];
            if (t < acc) {
                pick = l;
                break;
            }
        }
        /* t can round up to the full sum: that point belongs to the last
         * drawable layer. Validation keeps gamma <= #(p > 0), so one is
         * always left; the guard only keeps a broken invariant from
         * writing outside the mask. */
        if (last == SIZE_MAX)
            return k;
        mask[pick != SIZE_MAX ? pick : last] = 1;
    }
    return s->gamma;
}

/* Independent draws: layer l is active with probability pi_l. */
static uint64_t draw_bernoulli(const owl_sampler *s, period_rng *rng,
                               uint8_t *mask)
{
    uint64_t count = 0;
    for (uint64_t l = 0; l < s->num_layers; l++) {
        if (rng_u01(rng) < s->pi[l]) {
            mask[l] = 1;
            count++;
        }
    }
    return count;
}

owl_status owl_sampler_step(owl_sampler *sampler, uint64_t step, uint8_t *mask,
                            uint64_t *num_active, int32_t *resampled)
{
    if (sampler == NULL)
        return OWL_ERR_NULL_POINTER;
    owl__clear_error(sampler->ctx);
    OWL_REQUIRE_PTR(sampler->ctx, mask);

    period_rng rng = {sampler->seed, step / sampler->period, 0};
    memset(mask, 0, (size_t)sampler->num_layers);
    uint64_t count;
    switch (sampler->law) {
    case OWL_DRAW_REFERENCE: count = draw_reference(sampler, &rng, mask); break;
    case OWL_DRAW_BERNOULLI: count = draw_bernoulli(sampler, &rng, mask); break;
    default: count = draw_systematic(sampler, &rng, mask); break;
    }
    if (num_active != NULL)
        *num_active = count;
    if (resampled != NULL)
        *resampled = step % sampler->period == 0;
    return OWL_OK;
}

/* ------------------------------------------------------------------ */
/* Exact inclusion probabilities of the REFERENCE law                  */
/* ------------------------------------------------------------------ */

/*
 * pi_l = sum over sets S of layers drawn so far (|S| < gamma) of
 * P(S is drawn first) * p_l / (1 - p(S)). Only the n layers with p > 0
 * take part. The sets of one size k are enumerated in colexicographic
 * order, whose index is the combinatorial-number-system rank
 * sum_i C(c_i, i+1) of the sorted members c_0 < c_1 < ...; so the
 * probabilities of one level live in a plain array and S + {l} finds its
 * slot in the next level by arithmetic. Two levels are kept at a time.
 */

/* C(n, k) with overflow reported (false). */
static bool binomial(uint64_t n, uint64_t k, uint64_t *out)
{
    uint64_t c = 1;
    for (uint64_t i = 0; i < k; i++) {
        /* c * (n - i) / (i + 1) stays an integer at every step. */
        uint64_t num;
        if (__builtin_mul_overflow(c, n - i, &num))
            return false;
        c = num / (i + 1);
    }
    *out = c;
    return true;
}

/* The work of reference_inclusion for n drawable layers, checked against
 * the bounds; *widest is the largest level. */
static owl_status reference_cost(owl_context *ctx, uint64_t n, uint64_t gamma,
                                 uint64_t *widest)
{
    uint64_t subsets = 0;
    *widest = 1;
    bool fits = true;
    for (uint64_t k = 0; k < gamma && fits; k++) {
        uint64_t c;
        fits = binomial(n, k, &c) && c <= OWL_REF_MAX_SUBSETS;
        if (fits) {
            subsets += c;
            fits = subsets <= OWL_REF_MAX_SUBSETS;
            if (c > *widest)
                *widest = c;
        }
    }
    uint64_t transitions;
    if (fits && (__builtin_mul_overflow(subsets, n, &transitions) ||
                 transitions > OWL_REF_MAX_TRANSITIONS))
        fits = false;
    if (!fits)
        return owl__fail(ctx, OWL_ERR_UNSUPPORTED,
                         "the exact REFERENCE inclusion probabilities for "
                         "gamma %llu of %llu drawable layers need sum_{k<gamma} "
                         "C(n,k) sets of drawn layers; this library computes "
                         "at most %llu sets and %llu set-layer pairs",
                         (unsigned long long)gamma, (unsigned long long)n,
                         (unsigned long long)OWL_REF_MAX_SUBSETS,
                         (unsigned long long)OWL_REF_MAX_TRANSITIONS);
    return OWL_OK;
}

typedef struct reference_dp {
    size_t n;        /* drawable layers */
    uint64_t gamma;
    const double *q; /* their p */
    uint64_t *binom; /* C(m, j) at [m * gamma + j], m <= n, j < gamma */
    double *cur, *next; /* the probabilities of the sets of one level */
    size_t *members;    /* the current set, ascending, + sentinel n */
    uint64_t *below;    /* rank part of members before a position */
    uint64_t *above;    /* rank part of members from a position, shifted */
    double *pi;         /* output, per drawable layer */
} reference_dp;

static uint64_t dp_binom(const reference_dp *dp, size_t m, uint64_t j)
{
    return j > m ? 0 : dp->binom[m * dp->gamma + j];
}

/* Adds every transition out of the current set (size k, probability P). */
static void dp_expand(reference_dp *dp, uint64_t k, double P)
{
    const size_t n = dp->n;
    const size_t *c = dp->members;
    double rest = 0; /* summed directly: 1 - p(S) would cancel */
    size_t pos = 0;
    for (size_t l = 0; l < n; l++) {
        if (pos < k && c[pos] == l)
            pos++;
        else
            rest += dp->q[l];
    }
    const bool has_next = k + 1 < dp->gamma;
    if (has_next) {
        /* rank(S + {l}) with pos members below l:
         * sum_{i<pos} C(c_i, i+1) + C(l, pos+1) + sum_{i>=pos} C(c_i, i+2). */
        dp->below[0] = 0;
        for (uint64_t i = 0; i < k; i++)
            dp->below[i + 1] = dp->below[i] + dp_binom(dp, c[i], i + 1);
        dp->above[k] = 0;
        for (uint64_t i = k; i-- > 0;)
            dp->above[i] = dp->above[i + 1] + dp_binom(dp, c[i], i + 2);
    }
    pos = 0;
    for (size_t l = 0; l < n; l++) {
        if (pos < k && c[pos] == l) {
            pos++;
            continue;
        }
        /* q / rest first: both may be subnormal, their ratio is not, and
         * P * q would round P away in the subnormal range. */
        const double share = P * (dp->q[l] / rest);
        dp->pi[l] += share;
        if (has_next) {
            uint64_t rank = dp->below[pos] + dp_binom(dp, l, pos + 1) +
                            dp->above[pos];
            dp->next[rank] += share;
        }
    }
}

/* Steps members (size k, sentinel members[k] == n) to its colex successor. */
static void dp_next_set(size_t *c, uint64_t k)
{
    uint64_t i = 0;
    while (i < k && c[i] + 1 == c[i + 1])
        i++;
    c[i]++;
    for (uint64_t j = 0; j < i; j++)
        c[j] = j;
}

static owl_status reference_inclusion(const owl_sampler *s, double *pi_out)
{
    owl_context *ctx = s->ctx;
    const size_t L = (size_t)s->num_layers;
    size_t n = 0;
    for (size_t l = 0; l < L; l++)
        n += s->p[l] > 0;
    uint64_t widest;
    owl_status st = reference_cost(ctx, n, s->gamma, &widest);
    if (st != OWL_OK)
        return st;

    reference_dp dp = {.n = n, .gamma = s->gamma};
    double *q = owl__alloc(ctx, n, sizeof *q, "REFERENCE probabilities");
    dp.binom = owl__alloc(ctx, (n + 1) * s->gamma, sizeof *dp.binom,
                          "REFERENCE probabilities");
    dp.cur = owl__alloc(ctx, widest, sizeof *dp.cur, "REFERENCE probabilities");
    dp.next = owl__alloc(ctx, widest, sizeof *dp.next, "REFERENCE probabilities");
    dp.members = owl__alloc(ctx, s->gamma + 1, sizeof *dp.members,
                            "REFERENCE probabilities");
    dp.below = owl__alloc(ctx, s->gamma + 1, sizeof *dp.below,
                          "REFERENCE probabilities");
    dp.above = owl__alloc(ctx, s->gamma + 1, sizeof *dp.above,
                          "REFERENCE probabilities");
    dp.pi = owl__alloc(ctx, n, sizeof *dp.pi, "REFERENCE probabilities");
    if (q && dp.binom && dp.cur && dp.next && dp.members && dp.below &&
        dp.above && dp.pi) {
        size_t j = 0;
        for (size_t l = 0; l < L; l++)
            if (s->p[l] > 0)
                q[j++] = s->p[l];
        dp.q = q;
        /* Pascal's triangle; every entry used is below the bound checked
         * above, so none overflows. */
        for (size_t m = 0; m <= n; m++)
            for (uint64_t i = 0; i < s->gamma; i++)
                dp.binom[m * s->gamma + i] =
                    i == 0 ? 1
                    : i > m ? 0
                            : dp_binom(&dp, m - 1, i - 1) + dp_binom(&dp, m - 1, i);
        dp.cur[0] = 1.0; /* nothing drawn yet */
        for (uint64_t k = 0; k < s->gamma; k++) {
            uint64_t sets = 0, next_sets = 0;
            binomial(n, k, &sets);
            if (k + 1 < s->gamma) {
                binomial(n, k + 1, &next_sets);
                memset(dp.next, 0, (size_t)next_sets * sizeof *dp.next);
            }
            for (uint64_t i = 0; i < k; i++)
                dp.members[i] = (size_t)i;
            dp.members[k] = n;
            for (uint64_t r = 0; r < sets; r++) {
                dp_expand(&dp, k, dp.cur[r]);
                if (r + 1 < sets)
                    dp_next_set(dp.members, k);
            }
            double *t = dp.cur;
            dp.cur = dp.next;
            dp.next = t;
        }
        j = 0;
        for (size_t l = 0; l < L; l++)
            pi_out[l] = s->p[l] > 0 ? dp.pi[j++] : 0.0;
    } else {
        st = OWL_ERR_OUT_OF_MEMORY;
    }
    owl__free(q);
    owl__free(dp.binom);
    owl__free(dp.cur);
    owl__free(dp.next);
    owl__free(dp.members);
    owl__free(dp.below);
    owl__free(dp.above);
    owl__free(dp.pi);
    return st;
}

owl_status owl_sampler_probabilities(owl_sampler *sampler, double *p, double *pi)
{
    if (sampler == NULL)
        return OWL_ERR_NULL_POINTER;
    owl__clear_error(sampler->ctx);
    const size_t bytes = (size_t)sampler->num_layers * sizeof(double);
    if (pi != NULL && sampler->law == OWL_DRAW_REFERENCE) {
        /* Computed aside, so that a failure leaves both outputs as they
         * were. */
        double *exact = owl__alloc(sampler->ctx, (size_t)sampler->num_layers,
                                   sizeof *exact, "REFERENCE probabilities");
        if (exact == NULL)
            return OWL_ERR_OUT_OF_MEMORY;
        owl_status st = reference_inclusion(sampler, exact);
        if (st == OWL_OK)
            memcpy(pi, exact, bytes);
        owl__free(exact);
        if (st != OWL_OK)
            return st;
    } else if (pi != NULL) {
        memcpy(pi, sampler->pi, bytes);
    }
    if (p != NULL)
        memcpy(p, sampler->p, bytes);
    return OWL_OK;
}
