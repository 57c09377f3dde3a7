/* owl_lod_compute at the threshold itself: the count must be exactly
 * #{A_ij > M * mean(A)} with A_ij = |W_ij| * sqrt(s_j) formed in f64, also
 * for scores equal to the threshold or one unit in the last place either
 * side of it.
 *
 * The inputs make the reference independent of summation order: every
 * weight has a short mantissa within a few binades and every norm is a
 * power of two, so each score is exact in f64 and so is their sum, in any
 * order. mean = total / N is then the library's value bit for bit, and so
 * is M * mean. Each M is chosen as (a score) / mean and its neighbours, so
 * the threshold lands on, just below and just above real scores; the
 * expected count is the definition evaluated here, entry by entry. */
#include "common/testutil.h"

#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define N_MATRICES 3

/* f32 (a tail of 5 after the 8-wide blocks), bf16 wider than one 256-wide
 * span, f16 with an odd width. */
static const int64_t ROWS[N_MATRICES] = {24, 5, 9};
static const int64_t COLS[N_MATRICES] = {37, 300, 19};
static const owl_dtype DTYPES[N_MATRICES] = {OWL_DTYPE_F32, OWL_DTYPE_BF16,
                                             OWL_DTYPE_F16};

typedef struct {
    void *w[N_MATRICES];
    double *s[N_MATRICES];  /* f64 statistics (matrix 0) */
    float *s32[N_MATRICES]; /* f32 statistics (matrices 1, 2) */
    double *score[N_MATRICES];
    owl_tensor wt[N_MATRICES], st[N_MATRICES];
    int64_t entries;
    double total;
} layer;

static uint64_t next(uint64_t *x)
{
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    return *x;
}

/* A weight in +-[2^-7, 2) with a random mantissa, as its storage bits, and
 * its value decoded here from the fields (not by the library's
 * conversions). */
static double make_weight(owl_dtype dt, uint64_t *rng, uint32_t *bits)
{
    uint64_t r = next(rng);
    int e = (int)(r % 8) - 7; /* 2^-7 .. 2^0 */
    bool neg = (r >> 8) & 1;
    uint32_t man = (uint32_t)(r >> 16);
    double v;
    switch (dt) {
    case OWL_DTYPE_F32:
        man &= 0x7fffffu;
        *bits = (neg ? 0x80000000u : 0) | (uint32_t)(e + 127) << 23 | man;
        v = ldexp(1.0 + man / 8388608.0, e);
        break;
    case OWL_DTYPE_BF16:
        man &= 0x7fu;
        *bits = (neg ? 0x8000u : 0) | (uint32_t)(e + 127) << 7 | man;
        v = ldexp(1.0 + man / 128.0, e);
        break;
    default: /* f16 */
        man &= 0x3ffu;
        *bits = (neg ? 0x8000u : 0) | (uint32_t)(e + 15) << 10 | man;
        v = ldexp(1.0 + man / 1024.0, e);
        break;
    }
    return v; /* |W| */
}

static void make_layer(layer *l, uint64_t seed)
{
    uint64_t rng = seed;
    l->entries = 0;
    l->total = 0.0;
    for (int k = 0; k < N_MATRICES; k++) {
        int64_t m = ROWS[k], n = COLS[k];
        size_t esize = DTYPES[k] == OWL_DTYPE_F32 ? 4 : 2;
        l->w[k] = malloc((size_t)(m * n) * esize);
        l->s[k] = malloc((size_t)n * sizeof(double));
        l->s32[k] = malloc((size_t)n * sizeof(float));
        l->score[k] = malloc((size_t)(m * n) * sizeof(double));
        assert_non_null(l->w[k]);
        assert_non_null(l->s[k]);
        assert_non_null(l->s32[k]);
        assert_non_null(l->score[k]);
        /* s_j = 4^p, so sqrt(s_j) = 2^p exactly, p in [-3, 4]. */
        for (int64_t j = 0; j < n; j++) {
            int p = (int)(next(&rng) % 8) - 3;
            l->s[k][j] = ldexp(1.0, 2 * p);
            l->s32[k][j] = (float)l->s[k][j];
        }
        for (int64_t i = 0; i < m * n; i++) {
            uint32_t bits;
            double a = make_weight(DTYPES[k], &rng, &bits);
            if (esize == 4)
                ((uint32_t *)l->w[k])[i] = bits;
            else
                ((uint16_t *)l->w[k])[i] = (uint16_t)bits;
            l->score[k][i] = a * sqrt(l->s[k][i % n]);
            l->total += l->score[k][i];
        }
        owl_tensor_init(&l->wt[k], l->w[k], DTYPES[k], m, n);
        if (k == 0)
            owl_tensor_init(&l->st[k], l->s[k], OWL_DTYPE_F64, 1, n);
        else
            owl_tensor_init(&l->st[k], l->s32[k], OWL_DTYPE_F32, 1, n);
        l->entries += m * n;
    }
}

static void free_layer(layer *l)
{
    for (int k = 0; k < N_MATRICES; k++) {
        free(l->w[k]);
        free(l->s[k]);
        free(l->s32[k]);
        free(l->score[k]);
    }
}

static int64_t count_above(const layer *l, double thr, bool *tie)
{
    int64_t count = 0;
    for (int k = 0; k < N_MATRICES; k++)
        for (int64_t i = 0; i < ROWS[k] * COLS[k]; i++) {
            count += l->score[k][i] > thr;
            *tie |= l->score[k][i] == thr;
        }
    return count;
}

static void test_threshold_on_scores(void **state)
{
    (void)state;
    layer l;
    make_layer(&l, 0x9e3779b97f4a7c15ull);
    double mean = l.total / (double)l.entries;
    int ties = 0, checked = 0;
    for (int32_t threads = 1; threads <= 2; threads++) {
        owl_context *ctx = test_cpu_context(threads);
        /* Scores from every matrix, the largest ones among them. */
        for (int k = 0; k < N_MATRICES; k++) {
            int64_t cells = ROWS[k] * COLS[k];
            for (int64_t i = 0; i < cells; i += cells / 40 + 1) {
                double m0 = l.score[k][i] / mean;
                double ms[3] = {nextafter(m0, 0.0), m0, nextafter(m0, INFINITY)};
                for (int v = 0; v < 3; v++) {
                    bool tie = false;
                    int64_t expected = count_above(&l, ms[v] * mean, &tie);
                    double ratio = -1.0;
                    assert_owl_ok(ctx, owl_lod_compute(ctx, l.wt, l.st, N_MATRICES,
                                                       ms[v], &ratio));
                    if (ratio != (double)expected / (double)l.entries)
                        fail_msg("matrix %d entry %lld, M = %.17g: ratio %.17g, "
                                 "expected %lld / %lld",
                                 k, (long long)i, ms[v], ratio,
                                 (long long)expected, (long long)l.entries);
                    ties += tie;
                    checked++;
                }
            }
        }
        owl_context_free(ctx);
    }
    /* The thresholds did sit on scores, so "above" was really tested
     * against "at". */
    assert_true(ties > 0 && ties < checked);
    free_layer(&l);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_threshold_on_scores),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
