#include "testutil.h"

#include <math.h>
#include <stdio.h>

owl_context *test_cpu_context(int32_t threads)
{
    owl_context_options o;
    if (owl_context_options_init(&o, sizeof o) != OWL_OK)
        fail_msg("owl_context_options_init failed");
    o.num_threads = threads;
    owl_context *ctx = NULL;
    owl_status s = owl_context_create(&ctx, &o);
    if (s != OWL_OK)
        fail_msg("owl_context_create: %s", owl_status_name(s));
    return ctx;
}

double test_max_rel_err(const float *a, const double *b, size_t n, double floor)
{
    double scale = floor, err = 0;
    for (size_t i = 0; i < n; i++)
        if (fabs(b[i]) > scale)
            scale = fabs(b[i]);
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (!(d <= err)) /* also catches NaN */
            err = isnan(d) ? INFINITY : d;
    }
    return err / scale;
}

double test_rel_l2(const float *a, const double *b, size_t n)
{
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)a[i] - b[i];
        num += d * d;
        den += b[i] * b[i];
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

static uint64_t next(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

void test_fill_uniform(float *x, size_t n, uint64_t seed)
{
    uint64_t s = seed;
    for (size_t i = 0; i < n; i++)
        x[i] = (float)((double)(next(&s) >> 11) * (2.0 / 9007199254740992.0) - 1.0);
}

void test_fill_normal(float *x, size_t n, uint64_t seed)
{
    uint64_t s = seed ^ 0x5DEECE66Dull;
    for (size_t i = 0; i < n; i += 2) {
        double u1 = ((double)(next(&s) >> 11) + 1.0) * (1.0 / 9007199254740993.0);
        double u2 = (double)(next(&s) >> 11) * (1.0 / 9007199254740992.0);
        double r = sqrt(-2.0 * log(u1));
        x[i] = (float)(r * cos(6.283185307179586 * u2));
        if (i + 1 < n)
            x[i + 1] = (float)(r * sin(6.283185307179586 * u2));
    }
}

const char *test_arg(int argc, char **argv, int index, const char *fallback)
{
    return index < argc ? argv[index] : fallback;
}
