/* The layer sampler on extreme weights: subnormal weights, weights spread
 * over the whole double range, weights at DBL_MAX, gamma = L, a zero
 * weight beside gamma = L - 1, Inf and NaN.
 *
 * The reference for which layers can be drawn is the exact ratio
 * w_l / sum(w) in long double (x87 extended precision: an exponent range
 * of +-16382, so 1e-300 / 1e300 is representable there): a layer is
 * drawable in double precision exactly when that ratio rounds to a
 * positive double, i.e. exceeds half the smallest subnormal, 2^-1075. The
 * cases keep clear of that boundary. Every configuration the library
 * accepts must then, under every law, draw exactly gamma layers
 * (SYSTEMATIC, REFERENCE) or have inclusion probabilities summing to
 * gamma (BERNOULLI), never draw a layer whose p is 0, report the number
 * of layers it set, and save a state that loads back into a fresh
 * sampler and draws the same sets; every other configuration is refused
 * with a message, through owl_sampler_create and owl_optimizer_create
 * alike. */
#include "common/testutil.h"

#include <float.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MAX_L 16
#define STEPS 300

static const owl_draw_law laws[] = {OWL_DRAW_SYSTEMATIC, OWL_DRAW_REFERENCE,
                                    OWL_DRAW_BERNOULLI};

static const char *law_name(owl_draw_law law)
{
    return law == OWL_DRAW_SYSTEMATIC  ? "SYSTEMATIC"
           : law == OWL_DRAW_REFERENCE ? "REFERENCE"
                                       : "BERNOULLI";
}

/* The number of layers whose w_l / sum(w) is a positive double. */
static uint64_t ref_drawable(const double *w, uint64_t L, bool *drawable)
{
    long double sum = 0;
    for (uint64_t l = 0; l < L; l++)
        sum += w[l];
    const long double half_min = ldexpl(1.0L, -1075);
    uint64_t n = 0;
    for (uint64_t l = 0; l < L; l++) {
        const long double r = (long double)w[l] / sum;
        /* The cases are chosen far from the rounding boundary. */
        assert_true(r == 0 || r > 4 * half_min || r < half_min / 4);
        drawable[l] = r > half_min;
        n += drawable[l];
    }
    return n;
}

static owl_sampler_options custom_options(const double *w, uint64_t L,
                                          uint64_t gamma, owl_draw_law law)
{
    owl_sampler_options o;
    assert_int_equal(owl_sampler_options_init(&o, sizeof o), OWL_OK);
    o.num_layers = L;
    o.gamma = gamma;
    o.period = 3;
    o.seed = 77;
    o.weight_mode = OWL_WEIGHTS_CUSTOM;
    o.law = law;
    o.weights = w;
    return o;
}

/* The optimizer takes the same sampler options (its own num_layers). */
static owl_status optimizer_with(owl_context *ctx, const owl_sampler_options *so,
                                 owl_optimizer **out)
{
    owl_optimizer_options oo;
    assert_int_equal(owl_optimizer_options_init(&oo, sizeof oo), OWL_OK);
    oo.method = OWL_METHOD_OWLORE;
    oo.num_layers = so->num_layers;
    oo.sampler = so;
    return owl_optimizer_create(ctx, &oo, out);
}

static uint64_t count_set(const uint8_t *mask, uint64_t L)
{
    uint64_t n = 0;
    for (uint64_t l = 0; l < L; l++) {
        assert_true(mask[l] == 0 || mask[l] == 1);
        n += mask[l];
    }
    return n;
}

/* The properties of an accepted configuration (see the top comment). */
static void check_accepted(owl_context *ctx, const owl_sampler_options *o,
                           const bool *drawable)
{
    const uint64_t L = o->num_layers, gamma = o->gamma;
    owl_sampler *s = NULL;
    assert_owl_ok(ctx, owl_sampler_create(ctx, o, &s));

    double p[MAX_L], pi[MAX_L];
    assert_owl_ok(ctx, owl_sampler_probabilities(s, p, pi));
    double psum = 0, pisum = 0;
    for (uint64_t l = 0; l < L; l++) {
        assert_true(isfinite(p[l]) && p[l] >= 0 && p[l] <= 1);
        if (!(isfinite(pi[l]) && pi[l] >= 0 && pi[l] <= 1 + 1e-12))
            fail_msg("%s gamma %llu: pi[%llu] = %.17g", law_name(o->law),
                     (unsigned long long)gamma, (unsigned long long)l, pi[l]);
        assert_int_equal(p[l] > 0, drawable[l]);
        /* A drawable layer's pi may round to 0 beside layers capped at 1
         * (1e-20 beside 1 at gamma = 1); a zero-p layer's never is > 0. */
        if (!drawable[l])
            assert_true(pi[l] == 0);
        psum += p[l];
        pisum += pi[l];
    }
    assert_true(fabs(psum - 1.0) < 1e-12);
    if (fabs(pisum - (double)gamma) > 1e-9)
        fail_msg("%s: inclusion probabilities sum to %.17g, not gamma %llu",
                 law_name(o->law), pisum, (unsigned long long)gamma);

    /* The state loads back into a fresh sampler of the same shape (made
     * uniform, so the load is what sets its weights) and draws the same. */
    uint64_t bytes = 0, written = 0;
    assert_owl_ok(ctx, owl_sampler_state_size(s, &bytes));
    uint8_t *blob = malloc(bytes);
    assert_non_null(blob);
    assert_owl_ok(ctx, owl_sampler_save(s, blob, bytes, &written));
    owl_sampler_options u = *o;
    u.weight_mode = OWL_WEIGHTS_UNIFORM;
    u.weights = NULL;
    owl_sampler *back = NULL;
    assert_owl_ok(ctx, owl_sampler_create(ctx, &u, &back));
    assert_owl_ok(ctx, owl_sampler_load(back, blob, written));
    free(blob);

    /* The optimizer's sampler, with one always-trained parameter so that
     * steps can run (its zero gradient leaves everything else alone). */
    owl_optimizer *opt = NULL;
    assert_owl_ok(ctx, optimizer_with(ctx, o, &opt));
    float wbuf[2] = {1, 2}, gbuf[2] = {0, 0};
    owl_tensor wt, gt;
    owl_tensor_init(&wt, wbuf, OWL_DTYPE_F32, 1, 2);
    owl_tensor_init(&gt, gbuf, OWL_DTYPE_F32, 1, 2);
    assert_owl_ok(ctx, owl_optimizer_add_param(opt, OWL_LAYER_ALWAYS, &wt, &gt,
                                               0, NULL));

    /* Guard bytes on both sides catch a write outside the mask even
     * without AddressSanitizer. */
    uint8_t buf[MAX_L + 2], again[MAX_L], from_opt[MAX_L];
    uint8_t *mask = buf + 1;
    for (uint64_t t = 0; t < STEPS; t++) {
        memset(buf, 0xA5, sizeof buf);
        uint64_t n = UINT64_MAX;
        assert_owl_ok(ctx, owl_sampler_step(s, t, mask, &n, NULL));
        assert_int_equal(buf[0], 0xA5);
        assert_int_equal(mask[L], 0xA5);
        assert_int_equal(count_set(mask, L), n);
        if (o->law != OWL_DRAW_BERNOULLI)
            assert_int_equal(n, gamma);
        for (uint64_t l = 0; l < L; l++)
            if (!drawable[l])
                assert_int_equal(mask[l], 0);

        assert_owl_ok(ctx, owl_sampler_step(back, t, again, NULL, NULL));
        assert_memory_equal(mask, again, L);

        /* The optimizer's own mask for its step t (no parameters, so a
         * step only advances): the sampler's draw of the same options. */
        memset(from_opt, 0xA5, sizeof from_opt);
        assert_owl_ok(ctx, owl_optimizer_active_layers(opt, from_opt, L, NULL));
        assert_memory_equal(from_opt, mask, L);
        assert_owl_ok(ctx, owl_optimizer_step(opt, 1e-3));
    }
    owl_optimizer_free(opt);
    owl_sampler_free(back);
    owl_sampler_free(s);
}

static void check_refused(owl_context *ctx, const owl_sampler_options *o,
                          owl_status expected)
{
    owl_sampler *s = (owl_sampler *)&s; /* not NULL: create must clear it */
    assert_owl_status(ctx, owl_sampler_create(ctx, o, &s), expected);
    assert_null(s);
    assert_true(strlen(owl_context_last_error(ctx)) > 0);
    owl_optimizer *opt = (owl_optimizer *)&opt;
    assert_owl_status(ctx, optimizer_with(ctx, o, &opt), expected);
    assert_null(opt);
    assert_non_null(strstr(owl_context_last_error(ctx), "sampler->"));
}

/* Every gamma from 1 to L under every law: accepted exactly when gamma is
 * at most the number of drawable layers of the reference. */
static void check_weights(owl_context *ctx, const double *w, uint64_t L)
{
    bool drawable[MAX_L];
    const uint64_t n = ref_drawable(w, L, drawable);
    for (uint64_t gamma = 1; gamma <= L; gamma++) {
        for (size_t a = 0; a < sizeof laws / sizeof laws[0]; a++) {
            owl_sampler_options o = custom_options(w, L, gamma, laws[a]);
            if (gamma <= n)
                check_accepted(ctx, &o, drawable);
            else
                check_refused(ctx, &o, OWL_ERR_INVALID_ARGUMENT);
        }
    }
}

static void test_smallest_subnormal_beside_ten(void **state)
{
    (void)state;
    owl_context *ctx = test_cpu_context(1);
    /* 5e-324 / 10 is 0 in double precision: only one layer can be drawn,
     * so gamma = 2 must be refused rather than write outside the mask. */
    const double w[] = {10.0, 5e-324};
    bool drawable[2];
    assert_int_equal(ref_drawable(w, 2, drawable), 1);
    for (size_t a = 0; a < sizeof laws / sizeof laws[0]; a++) {
        owl_sampler_options o = custom_options(w, 2, 2, laws[a]);
        check_refused(ctx, &o, OWL_ERR_INVALID_ARGUMENT);
        assert_non_null(strstr(owl_context_last_error(ctx), "once divided"));
    }
    check_weights(ctx, w, 2);
    owl_context_free(ctx);
}

static void test_subnormal_weights(void **state)
{
    (void)state;
    owl_context *ctx = test_cpu_context(1);
    /* All subnormal, within a factor 2^20 of each other: all drawable. */
    const double all_sub[] = {5e-324, 1e-310, 3e-318, 2.2e-308};
    check_weights(ctx, all_sub, 4);
    /* Subnormal beside normal: the ratio decides. */
    const double mixed[] = {1e-320, 1e-20, 4e-310, 1.0, 0.0, 2e-305};
    check_weights(ctx, mixed, 6);
    owl_context_free(ctx);
}

static void test_weights_over_the_whole_range(void **state)
{
    (void)state;
    owl_context *ctx = test_cpu_context(1);
    const double span[] = {1e-300, 1e-200, 1e-100, 1.0, 1e100, 1e200, 1e300};
    bool drawable[7];
    /* 1e-300, 1e-200 and 1e-100 over 1e300 are below 2^-1075. */
    assert_int_equal(ref_drawable(span, 7, drawable), 4);
    check_weights(ctx, span, 7);
    /* Largest weights: the sum of the raw weights would overflow. */
    const double huge[] = {DBL_MAX, DBL_MAX, DBL_MAX / 3, DBL_MAX};
    check_weights(ctx, huge, 4);
    owl_context_free(ctx);
}

static void test_gamma_at_the_number_of_positive_weights(void **state)
{
    (void)state;
    owl_context *ctx = test_cpu_context(1);
    /* gamma = L: every layer, every period. */
    const double full[] = {0.3, 7.0, 1e-3, 2.0, 5.5};
    check_weights(ctx, full, 5);
    /* gamma = L - 1 with one zero weight: exactly the others. */
    const double one_zero[] = {1.0, 0.0, 4.0, 1e-9, 2.5, 0.125};
    check_weights(ctx, one_zero, 6);
    owl_context_free(ctx);
}

static void test_nonfinite_weights_refused(void **state)
{
    (void)state;
    owl_context *ctx = test_cpu_context(1);
    const double bad[][3] = {{1.0, INFINITY, 2.0},
                             {1.0, NAN, 2.0},
                             {-INFINITY, 1.0, 2.0},
                             {1.0, 2.0, -NAN}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        for (size_t a = 0; a < sizeof laws / sizeof laws[0]; a++) {
            owl_sampler_options o = custom_options(bad[i], 3, 1, laws[a]);
            check_refused(ctx, &o, OWL_ERR_NONFINITE);
        }
    }
    const double negative[] = {1.0, -1e-300, 2.0};
    owl_sampler_options o = custom_options(negative, 3, 1, OWL_DRAW_SYSTEMATIC);
    check_refused(ctx, &o, OWL_ERR_INVALID_ARGUMENT);
    owl_context_free(ctx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_smallest_subnormal_beside_ten),
        cmocka_unit_test(test_subnormal_weights),
        cmocka_unit_test(test_weights_over_the_whole_range),
        cmocka_unit_test(test_gamma_at_the_number_of_positive_weights),
        cmocka_unit_test(test_nonfinite_weights_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
