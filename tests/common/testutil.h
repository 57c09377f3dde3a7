/* Small helpers shared by the cmocka tests. */
#ifndef OWL_TEST_UTIL_H
#define OWL_TEST_UTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <owlore/owlore.h>

/* Fails the test with the context's message unless s == OWL_OK. */
#define assert_owl_ok(ctx, s)                                                  \
    do {                                                                       \
        owl_status s_ = (s);                                                   \
        if (s_ != OWL_OK)                                                      \
            fail_msg("%s returned %s: %s", #s, owl_status_name(s_),            \
                     owl_context_last_error(ctx));                             \
    } while (0)

/* Asserts the status and that the context carries a non-empty message. */
#define assert_owl_status(ctx, s, expected)                                    \
    do {                                                                       \
        owl_status s_ = (s);                                                   \
        if (s_ != (expected))                                                  \
            fail_msg("%s returned %s, expected %s (%s)", #s,                   \
                     owl_status_name(s_), owl_status_name(expected),           \
                     owl_context_last_error(ctx));                             \
    } while (0)

/* A CPU context with `threads` workers (0 = all cores). */
owl_context *test_cpu_context(int32_t threads);

/* max_i |a_i - b_i| / max(max_i |b_i|, floor): error relative to the
 * reference's scale. */
double test_max_rel_err(const float *a, const double *b, size_t n, double floor);
/* ||a - b||_2 / ||b||_2 */
double test_rel_l2(const float *a, const double *b, size_t n);

/* Deterministic pseudo-random fill in [-1, 1) (test inputs only). */
void test_fill_uniform(float *x, size_t n, uint64_t seed);
/* Standard normal via Box-Muller from the same generator. */
void test_fill_normal(float *x, size_t n, uint64_t seed);

/* Path of a file next to the test data: argv[1] if given, else `fallback`. */
const char *test_arg(int argc, char **argv, int index, const char *fallback);

#endif
