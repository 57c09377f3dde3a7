/* The layer sampler (spec section 2): each draw law against inclusion
 * probabilities computed here by separate, simple code (bisection for
 * min(1, c p), enumeration of every ordered draw sequence for the
 * reference law), exact counts, purity in (seed, period), the weight modes
 * and every validation path. */
#include "common/testutil.h"

#include <math.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_LAYERS 64

/* Skewed weights for L = 8: layer 0 has gamma * p > 1 (capped to 1 under
 * SYSTEMATIC and BERNOULLI), layer 4 has weight 0 (never drawn). */
static const double skewed8[8] = {6.0, 0.5, 1.0, 2.0, 0.0, 3.0, 0.25, 1.5};
enum { SKEWED8_ZERO = 4 };

static const char *law_name(owl_draw_law law)
{
    return law == OWL_DRAW_SYSTEMATIC  ? "SYSTEMATIC"
           : law == OWL_DRAW_REFERENCE ? "REFERENCE"
                                       : "BERNOULLI";
}

static owl_sampler *make_sampler(owl_context *ctx, uint64_t L, uint64_t gamma,
                                 uint64_t K, uint64_t seed,
                                 owl_weight_mode mode, owl_draw_law law,
                                 const double *weights)
{
    owl_sampler_options o;
    assert_int_equal(owl_sampler_options_init(&o, sizeof o), OWL_OK);
    o.num_layers = L;
    o.gamma = gamma;
    o.period = K;
    o.seed = seed;
    o.weight_mode = mode;
    o.law = law;
    o.weights = weights;
    owl_sampler *s = NULL;
    assert_owl_ok(ctx, owl_sampler_create(ctx, &o, &s));
    assert_non_null(s);
    return s;
}

/* ---- independent references ----------------------------------------- */

static void ref_p(const double *w, size_t L, double *p)
{
    double sum = 0;
    for (size_t l = 0; l < L; l++)
        sum += w[l];
    for (size_t l = 0; l < L; l++)
        p[l] = w[l] / sum;
}

/* pi_l = min(1, c p_l) with sum pi = gamma, c found by bisection. */
static void ref_capped_pi(const double *p, size_t L, double gamma, double *pi)
{
    double lo = 0, hi = 1;
    for (;;) {
        double f = 0;
        for (size_t l = 0; l < L; l++)
            f += fmin(1.0, hi * p[l]);
        if (f >= gamma)
            break;
        hi *= 2;
    }
    for (int it = 0; it < 400; it++) {
        double mid = 0.5 * (lo + hi);
        if (mid <= lo || mid >= hi)
            break;
        double f = 0;
        for (size_t l = 0; l < L; l++)
            f += fmin(1.0, mid * p[l]);
        if (f < gamma)
            lo = mid;
        else
            hi = mid;
    }
    for (size_t l = 0; l < L; l++)
        pi[l] = fmin(1.0, hi * p[l]);
}

/* Every ordered sequence of draws without replacement, each draw taking a
 * remaining layer with probability w_l / (sum of remaining w). */
static void enumerate_draws(const double *w, size_t L, size_t draws_left,
                            uint64_t used, double prob, double *pi)
{
    double rest = 0;
    for (size_t l = 0; l < L; l++)
        if (!(used >> l & 1))
            rest += w[l];
    for (size_t l = 0; l < L; l++) {
        if ((used >> l & 1) || w[l] == 0)
            continue;
        double q = prob * w[l] / rest;
        pi[l] += q;
        if (draws_left > 1)
            enumerate_draws(w, L, draws_left - 1, used | (uint64_t)1 << l, q,
                            pi);
    }
}

static void ref_reference_pi(const double *w, size_t L, size_t gamma,
                             double *pi)
{
    for (size_t l = 0; l < L; l++)
        pi[l] = 0;
    enumerate_draws(w, L, gamma, 0, 1.0, pi);
}

/* Deterministic test-side generator (xorshift64*), unrelated to the
 * library's. */
static uint64_t test_rand(uint64_t *state)
{
    uint64_t x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    return x * 0x2545F4914F6CDD1Dull;
}

static void shuffle(uint64_t *a, size_t n, uint64_t seed)
{
    uint64_t st = seed | 1;
    for (size_t i = n - 1; i > 0; i--) {
        size_t j = (size_t)(test_rand(&st) % (i + 1));
        uint64_t t = a[i];
        a[i] = a[j];
        a[j] = t;
    }
}

/* ---- helpers ---------------------------------------------------------- */

/* Checks the mask is 0/1 and agrees with num_active; returns the count. */
static uint64_t checked_count(const uint8_t *mask, size_t L, uint64_t reported)
{
    uint64_t count = 0;
    for (size_t l = 0; l < L; l++) {
        if (mask[l] > 1)
            fail_msg("mask[%zu] = %u, expected 0 or 1", l, mask[l]);
        count += mask[l];
    }
    if (count != reported)
        fail_msg("num_active %llu but the mask holds %llu layers",
                 (unsigned long long)reported, (unsigned long long)count);
    return count;
}

static void assert_close_vec(const double *got, const double *want, size_t n,
                             double tol, const char *what)
{
    for (size_t i = 0; i < n; i++)
        if (!(fabs(got[i] - want[i]) <= tol))
            fail_msg("%s[%zu] = %.17g, expected %.17g (tol %g)", what, i,
                     got[i], want[i], tol);
}

/* Draws `periods` periods and checks every layer's inclusion frequency
 * against pi within 4 standard errors (floor 1e-6: a layer with pi 0 or 1
 * must then be never / always drawn). Also checks exact counts for the
 * exactly-gamma laws and the mean count for BERNOULLI. */
static void check_frequencies(owl_context *ctx, owl_sampler *s, size_t L,
                              uint64_t gamma, uint64_t K, owl_draw_law law,
                              const double *pi, uint64_t periods)
{
    uint64_t hits[MAX_LAYERS] = {0};
    double count_sum = 0;
    uint8_t mask[MAX_LAYERS];
    for (uint64_t t = 0; t < periods; t++) {
        uint64_t n = 0;
        int32_t resampled = -1;
        /* any step inside the period names it */
        uint64_t step = t * K + t % K;
        assert_owl_ok(ctx, owl_sampler_step(s, step, mask, &n, &resampled));
        assert_int_equal(resampled, t % K == 0);
        uint64_t count = checked_count(mask, L, n);
        if (law != OWL_DRAW_BERNOULLI && count != gamma)
            fail_msg("%s period %llu drew %llu layers, expected %llu",
                     law_name(law), (unsigned long long)t,
                     (unsigned long long)count, (unsigned long long)gamma);
        count_sum += (double)count;
        for (size_t l = 0; l < L; l++)
            hits[l] += mask[l];
    }
    const double N = (double)periods;
    for (size_t l = 0; l < L; l++) {
        double freq = (double)hits[l] / N;
        double se = fmax(sqrt(pi[l] * (1 - pi[l]) / N), 1e-6);
        if (!(fabs(freq - pi[l]) <= 4 * se))
            fail_msg("%s layer %zu: frequency %.6f, pi %.6f, %.1f SE off",
                     law_name(law), l, freq, pi[l], fabs(freq - pi[l]) / se);
    }
    if (law == OWL_DRAW_BERNOULLI) {
        /* independent draws: Var(count) = sum pi (1 - pi) */
        double var = 0;
        for (size_t l = 0; l < L; l++)
            var += pi[l] * (1 - pi[l]);
        double mean = count_sum / N, se = sqrt(var / N);
        if (!(fabs(mean - (double)gamma) <= 4 * se))
            fail_msg("BERNOULLI mean count %.5f, expected %llu (SE %.5f)", mean,
                     (unsigned long long)gamma, se);
    }
}

/* ---- laws against their analytic inclusion probabilities ---------------- */

static void run_law(owl_draw_law law, const double *pi_ref)
{
    owl_context *ctx = test_cpu_context(1);
    const size_t L = 8;
    const uint64_t gamma = 3, K = 7;
    owl_sampler *s = make_sampler(ctx, L, gamma, K, 2024, OWL_WEIGHTS_CUSTOM,
                                  law, skewed8);
    double p[8], pi[8], p_ref[8];
    assert_owl_ok(ctx, owl_sampler_probabilities(s, p, pi));
    ref_p(skewed8, L, p_ref);
    assert_close_vec(p, p_ref, L, 1e-15, "p");
    assert_close_vec(pi, pi_ref, L, 1e-12, "pi");
    double sum = 0;
    for (size_t l = 0; l < L; l++)
        sum += pi[l];
    assert_true(fabs(sum - (double)gamma) < 1e-12);
    check_frequencies(ctx, s, L, gamma, K, law, pi_ref, 200000);
    owl_sampler_free(s);
    owl_context_free(ctx);
}

static void test_systematic_matches_capped_pi(void **state)
{
    (void)state;
    double p[8], pi[8];
    ref_p(skewed8, 8, p);
    ref_capped_pi(p, 8, 3, pi);
    assert_true(3 * p[0] > 1); /* the case where capping matters */
    assert_true(pi[0] == 1.0);
    run_law(OWL_DRAW_SYSTEMATIC, pi);
}

static void test_bernoulli_matches_capped_pi(void **state)
{
    (void)state;
    double p[8], pi[8];
    ref_p(skewed8, 8, p);
    ref_capped_pi(p, 8, 3, pi);
    run_law(OWL_DRAW_BERNOULLI, pi);
}

static void test_reference_matches_enumeration(void **state)
{
    (void)state;
    double pi[8];
    ref_reference_pi(skewed8, 8, 3, pi);
    /* successive draws do not reach min(1, gamma p) for the heavy layer */
    assert_true(pi[0] < 1.0 - 1e-3);
    run_law(OWL_DRAW_REFERENCE, pi);
}

/* The exact DP at the paper's scale (L = 32, gamma = 5) against the
 * enumeration of all 32*31*30*29*28 ordered draw sequences. */
static void test_reference_probabilities_l32(void **state)
{
    (void)state;
    owl_context *ctx = test_cpu_context(1);
    double w[32];
    uint64_t st = 77;
    for (size_t l = 0; l < 32; l++)
        w[l] = 0.02 + 0.3 * (double)(test_rand(&st) >> 11) / 9007199254740992.0;
    w[3] = 1.5; /* heavy */
    w[17] = 0;  /* never drawn */
    double pi_ref[32], pi[32];
    ref_reference_pi(w, 32, 5, pi_ref);
    owl_sampler *s = make_sampler(ctx, 32, 5, 50, 0, OWL_WEIGHTS_OWLORE,
                                  OWL_DRAW_REFERENCE, w);
    assert_owl_ok(ctx, owl_sampler_probabilities(s, NULL, pi));
    assert_close_vec(pi, pi_ref, 32, 1e-12, "pi");
    assert_true(pi[17] == 0.0);
    owl_sampler_free(s);

    /* gamma = 1: a single weighted draw, pi = p */
    s = make_sampler(ctx, 32, 1, 50, 0, OWL_WEIGHTS_OWLORE, OWL_DRAW_REFERENCE,
                     w);
    double p[32], p_ref[32];
    assert_owl_ok(ctx, owl_sampler_probabilities(s, p, pi));
    ref_p(w, 32, p_ref);
    assert_close_vec(p, p_ref, 32, 1e-15, "p");
    assert_close_vec(pi, p_ref, 32, 1e-15, "pi");
    owl_sampler_free(s);
    owl_context_free(ctx);
}

/* ---- exact counts ------------------------------------------------------ */

/* Many layers with uneven weights and a large gamma stress the systematic
 * law's rounding guards; every period must still hold exactly gamma. */
static void test_exact_counts_under_stress(void **state)
{
    (void)state;
    owl_context *ctx = test_cpu_context(1);
    enum { L = 1000 };
    static double w[L];
    static uint8_t mask[L];
    uint64_t st = 5;
    for (size_t l = 0; l < L; l++) {
        double u = (double)(test_rand(&st) >> 11) / 9007199254740992.0;
        w[l] = u < 0.1 ? 0.0 : pow(10.0, 6 * u - 3); /* 1e-3 .. 1e3 */
    }
    const owl_draw_law laws[] = {OWL_DRAW_SYSTEMATIC, OWL_DRAW_REFERENCE};
    const uint64_t gammas[] = {1, 37, 300};
    for (size_t a = 0; a < 2; a++) {
        for (size_t g = 0; g < 3; g++) {
            owl_sampler *s = make_sampler(ctx, L, gammas[g], 1, 9,
                                          OWL_WEIGHTS_CUSTOM, laws[a], w);
            for (uint64_t t = 0; t < 500; t++) {
                uint64_t n = 0;
                assert_owl_ok(ctx, owl_sampler_step(s, t, mask, &n, NULL));
                uint64_t count = 0;
                for (size_t l = 0; l < L; l++) {
                    count += mask[l];
                    if (mask[l] && w[l] == 0)
                        fail_msg("%s drew layer %zu of weight 0",
                                 law_name(laws[a]), l);
                }
                if (count != gammas[g] || n != gammas[g])
                    fail_msg("%s gamma %llu period %llu: %llu layers",
                             law_name(laws[a]), (unsigned long long)gammas[g],
                             (unsigned long long)t, (unsigned long long)count);
            }
            owl_sampler_free(s);
        }
    }
    owl_context_free(ctx);
}

/* With 4 equal layers and gamma 2, systematic sampling over a uniformly
 * random order takes {order[0], order[2]} or {order[1], order[3]}, each a
 * uniform random pair: every one of the 6 pairs has probability 1/6. A
 * fixed order would only ever give 2 of them. */
static void test_systematic_pairs_are_uniform(void **state)
{
    (void)state;
    owl_context *ctx = test_cpu_context(1);
    owl_sampler *s = make_sampler(ctx, 4, 2, 1, 3, OWL_WEIGHTS_UNIFORM,
                                  OWL_DRAW_SYSTEMATIC, NULL);
    uint64_t pairs[4][4] = {{0}};
    const uint64_t N = 60000;
    uint8_t mask[4];
    for (uint64_t t = 0; t < N; t++) {
        assert_owl_ok(ctx, owl_sampler_step(s, t, mask, NULL, NULL));
        int a = -1, b = -1;
        for (int l = 0; l < 4; l++)
            if (mask[l]) {
                if (a < 0)
                    a = l;
                else
                    b = l;
            }
        assert_true(a >= 0 && b > a);
        pairs[a][b]++;
    }
    const double se = sqrt((1.0 / 6) * (5.0 / 6) / (double)N);
    for (int a = 0; a < 4; a++)
        for (int b = a + 1; b < 4; b++) {
            double f = (double)pairs[a][b] / (double)N;
            if (!(fabs(f - 1.0 / 6) <= 4 * se))
                fail_msg("pair {%d,%d}: frequency %.5f, expected 1/6", a, b, f);
        }
    owl_sampler_free(s);
    owl_context_free(ctx);
}

/* gamma equal to the number of positive weights, gamma == L, and L == 1:
 * every law must take exactly the positive layers. */
static void test_degenerate_sizes(void **state)
{
    (void)state;
    owl_context *ctx = test_cpu_context(1);
    const double w[5] = {0.0, 2.0, 0.0, 0.5, 1.0};
    const owl_draw_law laws[] = {OWL_DRAW_SYSTEMATIC, OWL_DRAW_REFERENCE,
                                 OWL_DRAW_BERNOULLI};
    for (size_t a = 0; a < 3; a++) {
        owl_sampler *s = make_sampler(ctx, 5, 3, 4, 1, OWL_WEIGHTS_CUSTOM,
                                      laws[a], w);
        double pi[5];
        assert_owl_ok(ctx, owl_sampler_probabilities(s, NULL, pi));
        for (size_t l = 0; l < 5; l++)
            assert_true(fabs(pi[l] - (w[l] > 0 ? 1.0 : 0.0)) < 1e-12);
        uint8_t mask[5];
        for (uint64_t t = 0; t < 200; t++) {
            uint64_t n;
            assert_owl_ok(ctx, owl_sampler_step(s, t, mask, &n, NULL));
            assert_int_equal(n, 3);
            for (size_t l = 0; l < 5; l++)
                assert_int_equal(mask[l], w[l] > 0);
        }
        owl_sampler_free(s);

        s = make_sampler(ctx, 6, 6, 1, 1, OWL_WEIGHTS_DECREASING, laws[a], NULL);
        uint8_t all[6];
        for (uint64_t t = 0; t < 50; t++) {
            uint64_t n;
            assert_owl_ok(ctx, owl_sampler_step(s, t, all, &n, NULL));
            assert_int_equal(n, 6);
            for (size_t l = 0; l < 6; l++)
                assert_int_equal(all[l], 1);
        }
        owl_sampler_free(s);

        s = make_sampler(ctx, 1, 1, 1, 1, OWL_WEIGHTS_UNIFORM, laws[a], NULL);
        uint8_t one = 7;
        assert_owl_ok(ctx, owl_sampler_step(s, 12345, &one, NULL, NULL));
        assert_int_equal(one, 1);
        owl_sampler_free(s);
    }
    owl_context_free(ctx);
}

/* ---- purity ------------------------------------------------------------ */

static void test_pure_function_of_seed_and_period(void **state)
{
    (void)state;
    owl_context *ctx = test_cpu_context(1);
    enum { P = 500, L = 8 };
    const uint64_t K = 10;
    const owl_draw_law laws[] = {OWL_DRAW_SYSTEMATIC, OWL_DRAW_REFERENCE,
                                 OWL_DRAW_BERNOULLI};
    static uint8_t first[P][L];
    for (size_t a = 0; a < 3; a++) {
        owl_sampler *s = make_sampler(ctx, L, 3, K, 42, OWL_WEIGHTS_CUSTOM,
                                      laws[a], skewed8);
        for (uint64_t t = 0; t < P; t++)
            assert_owl_ok(ctx, owl_sampler_step(s, t * K, first[t], NULL, NULL));
        owl_sampler_free(s);

        /* a fresh handle (as after a checkpoint restore, or on another
         * rank), periods in random order and at any step inside them */
        uint64_t periods[P];
        for (uint64_t t = 0; t < P; t++)
            periods[t] = t;
        shuffle(periods, P, 99 + a);
        s = make_sampler(ctx, L, 3, K, 42, OWL_WEIGHTS_CUSTOM, laws[a], skewed8);
        uint8_t mask[L];
        for (size_t i = 0; i < P; i++) {
            uint64_t t = periods[i];
            for (uint64_t j = 0; j < K; j += 3) {
                int32_t resampled = -1;
                assert_owl_ok(ctx, owl_sampler_step(s, t * K + j, mask, NULL,
                                                    &resampled));
                assert_int_equal(resampled, j == 0);
                if (memcmp(mask, first[t], L) != 0)
                    fail_msg("%s: period %llu step %llu differs on replay",
                             law_name(laws[a]), (unsigned long long)t,
                             (unsigned long long)(t * K + j));
            }
        }
        owl_sampler_free(s);

        /* the periods differ from one another, and another seed gives
         * another sequence (for 3 of 8 layers two independent draws agree
         * with probability well under 1/4) */
        s = make_sampler(ctx, L, 3, K, 43, OWL_WEIGHTS_CUSTOM, laws[a], skewed8);
        uint64_t differ_seed = 0, differ_next = 0;
        for (uint64_t t = 0; t < P; t++) {
            assert_owl_ok(ctx, owl_sampler_step(s, t * K, mask, NULL, NULL));
            differ_seed += memcmp(mask, first[t], L) != 0;
            if (t + 1 < P)
                differ_next += memcmp(first[t], first[t + 1], L) != 0;
        }
        if (differ_seed < P / 2 || differ_next < P / 2)
            fail_msg("%s: only %llu/%d periods differ across seeds, %llu "
                     "between consecutive periods",
                     law_name(laws[a]), (unsigned long long)differ_seed, P,
                     (unsigned long long)differ_next);
        owl_sampler_free(s);
    }
    owl_context_free(ctx);
}

/* ---- weight modes --------------------------------------------------------- */

static void test_weight_modes_give_documented_p(void **state)
{
    (void)state;
    owl_context *ctx = test_cpu_context(1);
    enum { L = 6 };
    double w[L], p_ref[L], p[L];
    const owl_weight_mode modes[] = {OWL_WEIGHTS_UNIFORM,
                                     OWL_WEIGHTS_DECREASING,
                                     OWL_WEIGHTS_INCREASING};
    for (size_t m = 0; m < 3; m++) {
        for (size_t l = 0; l < L; l++)
            w[l] = modes[m] == OWL_WEIGHTS_UNIFORM      ? 1.0
                   : modes[m] == OWL_WEIGHTS_DECREASING ? (double)(L - l)
                                                        : (double)(l + 1);
        ref_p(w, L, p_ref);
        owl_sampler *s = make_sampler(ctx, L, 2, 50, 0, modes[m],
                                      OWL_DRAW_SYSTEMATIC, NULL);
        assert_owl_ok(ctx, owl_sampler_probabilities(s, p, NULL));
        assert_close_vec(p, p_ref, L, 1e-15, "p");
        owl_sampler_free(s);
    }

    /* OWLORE and CUSTOM: the caller's values, copied at create */
    const owl_weight_mode given[] = {OWL_WEIGHTS_OWLORE, OWL_WEIGHTS_CUSTOM};
    for (size_t m = 0; m < 2; m++) {
        double d[L] = {0.268, 0.295, 0.0182, 0.1, 0.0, 0.0825};
        ref_p(d, L, p_ref);
        owl_sampler *s = make_sampler(ctx, L, 2, 50, 5, given[m],
                                      OWL_DRAW_SYSTEMATIC, d);
        uint8_t before[L], after[L];
        assert_owl_ok(ctx, owl_sampler_step(s, 0, before, NULL, NULL));
        for (size_t l = 0; l < L; l++)
            d[l] = 1.0; /* the handle must not see this */
        assert_owl_ok(ctx, owl_sampler_probabilities(s, p, NULL));
        assert_close_vec(p, p_ref, L, 1e-15, "p");
        assert_owl_ok(ctx, owl_sampler_step(s, 0, after, NULL, NULL));
        assert_memory_equal(before, after, L);
        owl_sampler_free(s);
    }

    /* huge finite weights must not overflow the normalisation */
    const double big[3] = {1e308, 1.7e308, 0.5e308};
    owl_sampler *s = make_sampler(ctx, 3, 1, 1, 0, OWL_WEIGHTS_CUSTOM,
                                  OWL_DRAW_BERNOULLI, big);
    assert_owl_ok(ctx, owl_sampler_probabilities(s, p, NULL));
    const double want[3] = {1.0 / 3.2, 1.7 / 3.2, 0.5 / 3.2};
    assert_close_vec(p, want, 3, 1e-15, "p");
    owl_sampler_free(s);
    owl_context_free(ctx);
}

/* ---- validation --------------------------------------------------------- */

static owl_status try_create(owl_context *ctx, const owl_sampler_options *o)
{
    owl_sampler *s = (owl_sampler *)0x1;
    owl_status st = owl_sampler_create(ctx, o, &s);
    if (st != OWL_OK) {
        assert_null(s);
        assert_true(strlen(owl_context_last_error(ctx)) > 0);
    }
    owl_sampler_free(s);
    return st;
}

static void expect_create(owl_context *ctx, const owl_sampler_options *o,
                          owl_status want, const char *needle)
{
    owl_status st = try_create(ctx, o);
    if (st != want)
        fail_msg("create returned %s, expected %s (%s)", owl_status_name(st),
                 owl_status_name(want), owl_context_last_error(ctx));
    if (needle != NULL && strstr(owl_context_last_error(ctx), needle) == NULL)
        fail_msg("message \"%s\" does not mention \"%s\"",
                 owl_context_last_error(ctx), needle);
}

static void test_options_defaults(void **state)
{
    (void)state;
    owl_sampler_options o;
    memset(&o, 0xAB, sizeof o);
    assert_int_equal(owl_sampler_options_init(&o, sizeof o), OWL_OK);
    assert_int_equal(o.struct_size, sizeof o);
    assert_int_equal(o.num_layers, 0);
    assert_int_equal(o.gamma, 2);
    assert_int_equal(o.period, 50);
    assert_int_equal(o.seed, 0);
    assert_int_equal(o.weight_mode, OWL_WEIGHTS_UNIFORM);
    assert_int_equal(o.law, OWL_DRAW_SYSTEMATIC);
    assert_null(o.weights);
    assert_int_equal(owl_sampler_options_init(NULL, sizeof o),
                     OWL_ERR_NULL_POINTER);
    assert_int_equal(owl_sampler_options_init(&o, 3), OWL_ERR_STRUCT_SIZE);

    /* a caller built against a header without `weights` keeps its default */
    owl_context *ctx = test_cpu_context(1);
    const uint64_t old_size = offsetof(owl_sampler_options, weights);
    assert_int_equal(owl_sampler_options_init(&o, old_size), OWL_OK);
    o.num_layers = 4;
    assert_int_equal(try_create(ctx, &o), OWL_OK);
    owl_context_free(ctx);
}

static void test_create_validation(void **state)
{
    (void)state;
    owl_context *ctx = test_cpu_context(1);
    owl_sampler_options base;
    owl_sampler_options_init(&base, sizeof base);
    base.num_layers = 4;
    owl_sampler_options o = base;
    assert_int_equal(try_create(ctx, &o), OWL_OK);

    owl_sampler *s = (owl_sampler *)0x1;
    assert_int_equal(owl_sampler_create(NULL, &o, &s), OWL_ERR_NULL_POINTER);
    assert_null(s);
    assert_owl_status(ctx, owl_sampler_create(ctx, &o, NULL),
                      OWL_ERR_NULL_POINTER);
    assert_true(strlen(owl_context_last_error(ctx)) > 0);
    expect_create(ctx, NULL, OWL_ERR_NULL_POINTER, "opts");

    o = base;
    o.struct_size = 2;
    expect_create(ctx, &o, OWL_ERR_STRUCT_SIZE, "struct_size");
    o = base;
    o.num_layers = 0;
    expect_create(ctx, &o, OWL_ERR_INVALID_ARGUMENT, "num_layers");
    o = base;
    o.gamma = 0;
    expect_create(ctx, &o, OWL_ERR_INVALID_ARGUMENT, "gamma is 0");
    o = base;
    o.gamma = 5;
    expect_create(ctx, &o, OWL_ERR_INVALID_ARGUMENT, "gamma is 5");
    o = base;
    o.period = 0;
    expect_create(ctx, &o, OWL_ERR_INVALID_ARGUMENT, "period");
    o = base;
    o.weight_mode = 5;
    expect_create(ctx, &o, OWL_ERR_INVALID_ARGUMENT, "weight_mode is 5");
    o.weight_mode = -1;
    expect_create(ctx, &o, OWL_ERR_INVALID_ARGUMENT, "weight_mode is -1");
    o = base;
    o.law = 3;
    expect_create(ctx, &o, OWL_ERR_INVALID_ARGUMENT, "law is 3");
    o.law = -2;
    expect_create(ctx, &o, OWL_ERR_INVALID_ARGUMENT, "law is -2");

    /* weights: required for OWLORE and CUSTOM, refused otherwise */
    const double ok[4] = {0.1, 0.2, 0.0, 0.4};
    o = base;
    o.weight_mode = OWL_WEIGHTS_OWLORE;
    expect_create(ctx, &o, OWL_ERR_NULL_POINTER, "weights");
    o.weight_mode = OWL_WEIGHTS_CUSTOM;
    expect_create(ctx, &o, OWL_ERR_NULL_POINTER, "weights");
    o = base;
    o.weights = ok;
    expect_create(ctx, &o, OWL_ERR_INVALID_ARGUMENT, "UNIFORM");
    o.weight_mode = OWL_WEIGHTS_CUSTOM;
    assert_int_equal(try_create(ctx, &o), OWL_OK);

    double bad[4] = {0.1, 0.2, 0.3, 0.4};
    o.weights = bad;
    bad[2] = NAN;
    expect_create(ctx, &o, OWL_ERR_NONFINITE, "weights[2]");
    bad[2] = INFINITY;
    expect_create(ctx, &o, OWL_ERR_NONFINITE, "weights[2]");
    bad[2] = 0.3;
    bad[1] = -1e-9;
    expect_create(ctx, &o, OWL_ERR_INVALID_ARGUMENT, "weights[1]");
    const double zeros[4] = {0, 0, 0, 0};
    o.weights = zeros;
    expect_create(ctx, &o, OWL_ERR_INVALID_ARGUMENT, "all 4 weights are 0");
    /* gamma 2 but only one positive weight: exactly 2 is impossible */
    const double one[4] = {0, 0, 3, 0};
    o.weights = one;
    expect_create(ctx, &o, OWL_ERR_INVALID_ARGUMENT, "gamma is 2");
    o.gamma = 1;
    assert_int_equal(try_create(ctx, &o), OWL_OK);
    owl_context_free(ctx);
}

static void test_call_validation(void **state)
{
    (void)state;
    owl_context *ctx = test_cpu_context(1);
    owl_sampler *s = make_sampler(ctx, 4, 2, 5, 0, OWL_WEIGHTS_UNIFORM,
                                  OWL_DRAW_SYSTEMATIC, NULL);
    uint8_t mask[4];
    uint64_t n = 99;
    int32_t r = 99;
    assert_int_equal(owl_sampler_step(NULL, 0, mask, &n, &r),
                     OWL_ERR_NULL_POINTER);
    assert_int_equal(n, 99);
    assert_int_equal(r, 99);
    assert_owl_status(ctx, owl_sampler_step(s, 0, NULL, &n, &r),
                      OWL_ERR_NULL_POINTER);
    assert_true(strlen(owl_context_last_error(ctx)) > 0);
    assert_int_equal(n, 99);
    assert_int_equal(r, 99);
    /* outputs other than the mask are optional; errors are cleared */
    assert_owl_ok(ctx, owl_sampler_step(s, 0, mask, NULL, NULL));
    assert_string_equal(owl_context_last_error(ctx), "");
    assert_int_equal(owl_sampler_probabilities(NULL, NULL, NULL),
                     OWL_ERR_NULL_POINTER);
    assert_owl_ok(ctx, owl_sampler_probabilities(s, NULL, NULL));
    owl_sampler_free(s);
    owl_sampler_free(NULL);
    owl_context_free(ctx);
}

/* The exact REFERENCE pi beyond its documented bound (more than 4194304
 * sets of drawn layers: here 1 + 200 + C(200,2) + C(200,3) + C(200,4))
 * is refused, and neither output is touched; drawing still works. */
static void test_reference_probabilities_bound(void **state)
{
    (void)state;
    owl_context *ctx = test_cpu_context(1);
    enum { L = 200 };
    owl_sampler *s = make_sampler(ctx, L, 5, 1, 0, OWL_WEIGHTS_UNIFORM,
                                  OWL_DRAW_REFERENCE, NULL);
    double p[L], pi[L];
    for (size_t l = 0; l < L; l++)
        p[l] = pi[l] = -7;
    assert_owl_status(ctx, owl_sampler_probabilities(s, p, pi),
                      OWL_ERR_UNSUPPORTED);
    assert_true(strlen(owl_context_last_error(ctx)) > 0);
    for (size_t l = 0; l < L; l++)
        assert_true(p[l] == -7 && pi[l] == -7);
    /* p alone needs no DP */
    assert_owl_ok(ctx, owl_sampler_probabilities(s, p, NULL));
    assert_true(fabs(p[0] - 1.0 / L) < 1e-15);
    uint8_t mask[L];
    uint64_t n;
    assert_owl_ok(ctx, owl_sampler_step(s, 3, mask, &n, NULL));
    assert_int_equal(n, 5);
    owl_sampler_free(s);
    owl_context_free(ctx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_systematic_matches_capped_pi),
        cmocka_unit_test(test_bernoulli_matches_capped_pi),
        cmocka_unit_test(test_reference_matches_enumeration),
        cmocka_unit_test(test_reference_probabilities_l32),
        cmocka_unit_test(test_exact_counts_under_stress),
        cmocka_unit_test(test_systematic_pairs_are_uniform),
        cmocka_unit_test(test_degenerate_sizes),
        cmocka_unit_test(test_pure_function_of_seed_and_period),
        cmocka_unit_test(test_weight_modes_give_documented_p),
        cmocka_unit_test(test_options_defaults),
        cmocka_unit_test(test_create_validation),
        cmocka_unit_test(test_call_validation),
        cmocka_unit_test(test_reference_probabilities_bound),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
