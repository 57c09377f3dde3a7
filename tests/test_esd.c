/* PL_Alpha_Hill: the spec's closed-form vectors (H1, H2), histogram edge
 * cases worked out by hand (H4), agreement between the SVD path and the
 * eigenvalue path on matrices built from a known spectrum, the result
 * struct's size rules and validation paths. */
#include "common/testutil.h"

#include <lapacke.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static const owl_xmin_method all_methods[3] = {OWL_XMIN_FIX_FINGER, OWL_XMIN_MEDIAN,
                                                OWL_XMIN_KS_SCAN};

static owl_esd_result fit(owl_context *ctx, const double *eig, uint64_t n,
                          owl_xmin_method method)
{
    owl_esd_result r;
    assert_int_equal(owl_esd_result_init(&r, sizeof r), OWL_OK);
    assert_owl_ok(ctx, owl_esd_alpha_hill_eigs(ctx, eig, n, method, &r));
    return r;
}

static void assert_close(double got, double want, double rel, const char *what)
{
    if (!(fabs(got - want) <= rel * fabs(want)))
        fail_msg("%s: got %.12g, expected %.12g (rel tol %g)", what, got, want, rel);
}

/* Direct transcription of the definitions for an ascending spectrum, used
 * as an independent check of the library's O(N) recurrences. */
static double direct_alpha(const double *lam, int n_all, int i)
{
    double s = 0;
    for (int j = i; j < n_all; j++)
        s += log(lam[j] / lam[i]);
    return 1 + (double)(n_all - i) / s;
}

static double direct_ks(const double *lam, int n_all, int i)
{
    double a = direct_alpha(lam, n_all, i), d = 0;
    int n = n_all - i;
    for (int j = 0; j < n; j++) {
        double g = fabs(1 - pow(lam[i + j] / lam[i], 1 - a) - (double)j / n);
        if (g > d)
            d = g;
    }
    return d;
}

/* H1 spectrum: lambda_i = (1 - (i - 0.5)/N)^(-1/2), i = 1..N, ascending. */
static double *h1_spectrum(int N, double scale)
{
    double *lam = malloc((size_t)N * sizeof *lam);
    for (int i = 1; i <= N; i++)
        lam[i - 1] = scale * pow(1.0 - (i - 0.5) / N, -0.5);
    return lam;
}

/* ---- H1 ------------------------------------------------------------------ */

static void test_h1_pareto(void **state)
{
    (void)state;
    owl_context *ctx = test_cpu_context(2);
    enum { N = 1000 };
    double *lam = h1_spectrum(N, 1.0), *scaled = h1_spectrum(N, 7.3);

    /* Median xmin: the spec's 3.0034 (four decimals). */
    owl_esd_result r = fit(ctx, lam, N, OWL_XMIN_MEDIAN);
    assert_int_equal(r.xmin_index, N / 2);
    assert_int_equal(r.num_eigs, N);
    assert_true(fabs(r.alpha - 3.0034) < 5e-5);
    assert_close(r.alpha, direct_alpha(lam, N, N / 2), 1e-12, "median alpha");
    assert_close(r.ks_distance, direct_ks(lam, N, N / 2), 1e-10, "median D");

    /* KS scan: the chosen D is the smallest of all N - 1 candidates. */
    r = fit(ctx, lam, N, OWL_XMIN_KS_SCAN);
    double best = direct_ks(lam, N, (int)r.xmin_index);
    assert_close(r.ks_distance, best, 1e-10, "KS D");
    for (int i = 0; i < N - 1; i++)
        assert_true(direct_ks(lam, N, i) >= best * (1 - 1e-12));

    /* Fix-finger: lambda's density falls with lambda (a Pareto tail), so the
     * fullest log-bin is the first, peak = lambda_0, and the candidates are
     * the lambda <= 1.5 lambda_0 (the log10 lower bound is negative). The
     * choice is the smallest D among them (checked by brute force below):
     * lambda_0 itself, where the spec gives alpha = 3.0017. */
    r = fit(ctx, lam, N, OWL_XMIN_FIX_FINGER);
    assert_true(r.xmin <= 1.5 * lam[0]);
    best = direct_ks(lam, N, (int)r.xmin_index);
    assert_close(r.ks_distance, best, 1e-10, "fix-finger D");
    assert_close(r.alpha, direct_alpha(lam, N, (int)r.xmin_index), 1e-12, "fix-finger alpha");
    for (int i = 0; i < N - 1 && lam[i] <= 1.5 * lam[0]; i++)
        assert_true(direct_ks(lam, N, i) >= best * (1 - 1e-12));
    assert_int_equal(r.xmin_index, 0);
    assert_true(fabs(r.alpha - 3.0017) < 5e-5);

    /* Rescaling every eigenvalue changes neither alpha nor the choice. */
    for (int m = 0; m < 3; m++) {
        owl_esd_result a = fit(ctx, lam, N, all_methods[m]);
        owl_esd_result b = fit(ctx, scaled, N, all_methods[m]);
        assert_int_equal(a.xmin_index, b.xmin_index);
        assert_close(b.alpha, a.alpha, 1e-12, "alpha after scaling by 7.3");
        assert_close(b.ks_distance, a.ks_distance, 1e-10, "D after scaling by 7.3");
        assert_close(b.xmin, 7.3 * a.xmin, 1e-14, "xmin after scaling by 7.3");
    }
    free(lam);
    free(scaled);
    owl_context_free(ctx);
}

/* ---- H2 ------------------------------------------------------------------ */

/* lambda = {1, 2, 4, 8, 16}.
 * Median: i = 2 (xmin 4), n = 3, sum ln(lambda_j/4) = 3 ln 2, so
 *   alpha = 1 + 1/ln 2; (lambda_{2+j}/4)^(1-alpha) = 2^(-j/ln 2) = e^-j,
 *   D = max(0, |1 - 1/e - 1/3|, |1 - 1/e^2 - 2/3|) = 2/3 - 1/e.
 * KS scan: i = 0, n = 5, sum = 10 ln 2, alpha = 1 + 1/(2 ln 2),
 *   ratio^(1-alpha) = e^(-j/2), D = |1 - e^-1 - 2/5| = 3/5 - 1/e
 *   (0.2321206; the spec's 0.2321213 carries float32 rounding). D_1 =
 *   0.2366, D_2 = 0.2988, D_3 = 0.3647 are larger.
 * Fix-finger: log10 lambda = 0, .3, .6, .9, 1.2 fill five bins once each:
 *   a tie, the first bin wins, peak = 10^0 = 1, candidates lambda <= 1.5:
 *   only i = 0, the KS answer. */
static void test_h2_small_case(void **state)
{
    (void)state;
    owl_context *ctx = test_cpu_context(1);
    const double lam[5] = {1, 2, 4, 8, 16};
    const double e = exp(1.0);

    owl_esd_result r = fit(ctx, lam, 5, OWL_XMIN_MEDIAN);
    assert_int_equal(r.xmin_index, 2);
    assert_true(r.xmin == 4);
    assert_close(r.alpha, 1 + 1 / log(2.0), 1e-14, "H2 median alpha");
    assert_true(fabs(r.alpha - 2.4426950) < 1e-7);
    assert_close(r.ks_distance, 2.0 / 3 - 1 / e, 1e-14, "H2 median D");
    assert_true(fabs(r.ks_distance - 0.2987872) < 1e-7);
    assert_int_equal(r.num_eigs, 5);

    r = fit(ctx, lam, 5, OWL_XMIN_KS_SCAN);
    assert_int_equal(r.xmin_index, 0);
    assert_close(r.alpha, 1 + 1 / (2 * log(2.0)), 1e-14, "H2 KS alpha");
    assert_true(fabs(r.alpha - 1.7213475) < 1e-7);
    assert_close(r.ks_distance, 0.6 - 1 / e, 1e-14, "H2 KS D");

    r = fit(ctx, lam, 5, OWL_XMIN_FIX_FINGER);
    assert_int_equal(r.xmin_index, 0);
    assert_close(r.alpha, 1 + 1 / (2 * log(2.0)), 1e-14, "H2 fix-finger alpha");

    /* Any input order: the spectrum is sorted first. */
    const double shuffled[5] = {8, 1, 16, 4, 2};
    r = fit(ctx, shuffled, 5, OWL_XMIN_MEDIAN);
    assert_true(r.xmin == 4);
    assert_close(r.alpha, 1 + 1 / log(2.0), 1e-14, "H2 shuffled");
    owl_context_free(ctx);
}

/* ---- H4: histogram edge cases -------------------------------------------- */

/* Tie between peak bins. lambda = 10^{-50, 1.1, 1.5, 30.1, 30.5, 50}: the
 * histogram spans 100 decades, one decade per bin, bin = floor(log10 + 50):
 * 0, 51, 51, 80, 80, 99. Bins 51 and 80 tie with 2; the first wins, peak =
 * 10^1 (edge 51 = 50 - 49), candidates log10(9.5) = 0.978 <= lambda <= 15:
 * only lambda_1 = 10^1.1 (10^-50 is below, 10^1.5 = 31.6 above). Had bin
 * 80 won, the candidates would be i = 2 and 3.
 * alpha_1 = 1 + 5 / (ln 10 * (0 + 0.4 + 29 + 29.4 + 48.9)). */
static void test_h4_tie_takes_first_bin(void **state)
{
    (void)state;
    owl_context *ctx = test_cpu_context(1);
    const double lam[6] = {1e-50, pow(10, 1.1), pow(10, 1.5), pow(10, 30.1),
                           pow(10, 30.5), 1e50};
    owl_esd_result r = fit(ctx, lam, 6, OWL_XMIN_FIX_FINGER);
    assert_int_equal(r.xmin_index, 1);
    assert_true(r.xmin == lam[1]);
    assert_close(r.alpha, 1 + 5 / (107.7 * log(10.0)), 1e-12, "tie alpha");
    owl_context_free(ctx);
}

/* lambda_max on the last edge lands in the last bin. lambda = {1, 10^0.5,
 * 1000, 1000}: log10 spans [0, 3], bins of 0.03: 0 -> bin 0, 0.5 -> bin 16,
 * and both 3's sit exactly on the right edge (position 100) and count in
 * bin 99, which then is the fullest (2). Peak = 10^2.97 = 933, candidates
 * log10(886.6) = 2.948 <= lambda <= 1400 among i <= 2: i = 1 (3.16) and
 * i = 2 (1000).
 *   i = 1: n = 3, sum = 2 ln(10^2.5) = 5 ln 10, alpha = 1 + 3/(5 ln 10),
 *          ratio^(1-alpha) = e^-1.5 for both j, D = 2/3 - e^-1.5 = 0.4435.
 *   i = 2: n = 2, sum = 0, alpha = inf, D = |1 - 1 - 1/2| = 0.5.
 * So i = 1. Were the maximum dropped, bins 0 and 16 would tie, peak = 1,
 * and only i = 0 would qualify. */
static void test_h4_max_in_last_bin(void **state)
{
    (void)state;
    owl_context *ctx = test_cpu_context(1);
    const double lam[4] = {1, sqrt(10.0), 1000, 1000};
    owl_esd_result r = fit(ctx, lam, 4, OWL_XMIN_FIX_FINGER);
    assert_int_equal(r.xmin_index, 1);
    assert_close(r.alpha, 1 + 3 / (5 * log(10.0)), 1e-12, "last-bin alpha");
    assert_close(r.ks_distance, 2.0 / 3 - exp(-1.5), 1e-12, "last-bin D");
    owl_context_free(ctx);
}

/* Zero (and negative rounding-noise) eigenvalues are left out: H2 with
 * extra zeros gives H2's median fit (counted, the zeros would move the
 * median index from 2 to 4 of 8). */
static void test_h4_zero_eigenvalues_ignored(void **state)
{
    (void)state;
    owl_context *ctx = test_cpu_context(1);
    const double lam[8] = {0.0, 4, 1, -0.0, 16, 2, -1e-13, 8};
    for (int m = 0; m < 3; m++) {
        owl_esd_result with = fit(ctx, lam, 8, all_methods[m]);
        const double clean[5] = {1, 2, 4, 8, 16};
        owl_esd_result without = fit(ctx, clean, 5, all_methods[m]);
        assert_int_equal(with.num_eigs, 5);
        assert_int_equal(with.xmin_index, without.xmin_index);
        assert_true(with.alpha == without.alpha);
        assert_true(with.ks_distance == without.ks_distance);
    }
    owl_esd_result r = fit(ctx, lam, 8, OWL_XMIN_MEDIAN);
    assert_true(r.xmin == 4);
    owl_context_free(ctx);
}

/* No fix-finger candidate: lambda = 10^{0, 40.5, 40.7, 100}. Bins are one
 * decade wide; 40.5 and 40.7 fill bin 40, peak = 10^40, candidates
 * 39.98 <= lambda <= 1.5e40: none (1 is below, 10^40.5 above). The
 * library then scans every i (the reference would return its placeholder
 * alpha 0):
 *   i = 0: alpha - 1 = 4/(181.2 ln 10), D = |1 - e^(-4*40.5/181.2) - 1/4|
 *          = 0.341
 *   i = 1: sum = (0.2 + 59.5) ln 10, D = |1 - e^(-0.6/59.7) - 1/3| = 0.323
 *   i = 2: alpha - 1 = 2/(59.3 ln 10), D = |1 - e^-2 - 1/2| = 0.365
 * so i = 1 with alpha = 1 + 3/(59.7 ln 10). */
static void test_fix_finger_without_candidates(void **state)
{
    (void)state;
    owl_context *ctx = test_cpu_context(1);
    const double lam[4] = {1, pow(10, 40.5), pow(10, 40.7), 1e100};
    owl_esd_result r = fit(ctx, lam, 4, OWL_XMIN_FIX_FINGER);
    assert_int_equal(r.xmin_index, 1);
    assert_close(r.alpha, 1 + 3 / (59.7 * log(10.0)), 1e-12, "fallback alpha");
    assert_close(r.ks_distance, 1.0 / 3 - (1 - exp(-0.6 / 59.7)), 1e-12, "fallback D");
    owl_context_free(ctx);
}

/* ---- SVD path -------------------------------------------------------------- */

/* rows x cols matrix with orthonormal columns (rows >= cols), from the QR
 * factorisation of a Gaussian matrix. Column-major. */
static double *orthonormal(int rows, int cols, uint64_t seed)
{
    float *g = malloc(sizeof(float) * (size_t)rows * (size_t)cols);
    double *q = malloc(sizeof(double) * (size_t)rows * (size_t)cols);
    double *tau = malloc(sizeof(double) * (size_t)cols);
    test_fill_normal(g, (size_t)rows * (size_t)cols, seed);
    for (size_t i = 0; i < (size_t)rows * (size_t)cols; i++)
        q[i] = g[i];
    assert_int_equal(LAPACKE_dgeqrf(LAPACK_COL_MAJOR, rows, cols, q, rows, tau), 0);
    assert_int_equal(LAPACKE_dorgqr(LAPACK_COL_MAJOR, rows, cols, cols, q, rows, tau), 0);
    free(tau);
    free(g);
    return q;
}

/* W = U diag(sqrt(lambda)) V^T (row-major m x n, m >= n, or its transpose)
 * must give the same fit as lambda itself. */
static void test_svd_path_matches_eigenvalues(void **state)
{
    (void)state;
    owl_context *ctx = test_cpu_context(2);
    enum { M = 160, N = 120 };
    double *lam = h1_spectrum(N, 3.0);
    double *u = orthonormal(M, N, 21), *v = orthonormal(N, N, 22);
    double *w = malloc(sizeof(double) * M * N), *wt = malloc(sizeof(double) * M * N);
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double s = 0;
            for (int k = 0; k < N; k++)
                s += u[i + k * M] * sqrt(lam[k]) * v[j + k * N];
            w[i * N + j] = s;
            wt[j * M + i] = s;
        }
    owl_tensor tw, twt;
    owl_tensor_init(&tw, w, OWL_DTYPE_F64, M, N);
    owl_tensor_init(&twt, wt, OWL_DTYPE_F64, N, M);
    for (int m = 0; m < 3; m++) {
        owl_esd_result want = fit(ctx, lam, N, all_methods[m]);
        const owl_tensor *shapes[2] = {&tw, &twt};
        for (int s = 0; s < 2; s++) {
            owl_esd_result got;
            owl_esd_result_init(&got, sizeof got);
            assert_owl_ok(ctx, owl_esd_alpha_hill(ctx, shapes[s], all_methods[m], &got));
            assert_int_equal(got.num_eigs, N);
            assert_int_equal(got.xmin_index, want.xmin_index);
            assert_close(got.alpha, want.alpha, 1e-6, "alpha from the SVD");
            assert_close(got.xmin, want.xmin, 1e-6, "xmin from the SVD");
            assert_close(got.ks_distance, want.ks_distance, 1e-6, "D from the SVD");
        }
    }
    free(w);
    free(wt);
    free(u);
    free(v);
    free(lam);
    owl_context_free(ctx);
}

/* The candidates' D values are computed in parallel; the answer is the
 * same, bit for bit, on 1 and 4 threads. */
static void test_thread_count_independence(void **state)
{
    (void)state;
    double *lam = h1_spectrum(1000, 1.0);
    owl_esd_result r[2];
    int threads[2] = {1, 4};
    for (int c = 0; c < 2; c++) {
        owl_context *ctx = test_cpu_context(threads[c]);
        r[c] = fit(ctx, lam, 1000, OWL_XMIN_KS_SCAN);
        owl_context_free(ctx);
    }
    assert_memory_equal(&r[0], &r[1], sizeof r[0]);
    free(lam);
}

/* ---- the result struct ------------------------------------------------------ */

static void test_result_struct_sizes(void **state)
{
    (void)state;
    owl_context *ctx = test_cpu_context(1);
    owl_esd_result r;
    memset(&r, 0x55, sizeof r);
    assert_int_equal(owl_esd_result_init(&r, sizeof r), OWL_OK);
    assert_int_equal(r.struct_size, sizeof r);
    assert_true(r.alpha == 0 && r.xmin == 0 && r.ks_distance == 0);
    assert_int_equal(r.xmin_index, 0);
    assert_int_equal(r.num_eigs, 0);
    assert_int_equal(owl_esd_result_init(NULL, sizeof r), OWL_ERR_NULL_POINTER);
    assert_int_equal(owl_esd_result_init(&r, 4), OWL_ERR_STRUCT_SIZE);

    /* An older caller's struct that ends after ks_distance: the fields it
     * does not have are never written. */
    const double lam[5] = {1, 2, 4, 8, 16};
    size_t old = offsetof(owl_esd_result, xmin_index);
    unsigned char buf[sizeof(owl_esd_result) + 8];
    memset(buf, 0xAB, sizeof buf);
    owl_esd_result *small = (owl_esd_result *)(void *)buf;
    assert_int_equal(owl_esd_result_init(small, old), OWL_OK);
    assert_owl_ok(ctx, owl_esd_alpha_hill_eigs(ctx, lam, 5, OWL_XMIN_MEDIAN, small));
    assert_close(small->alpha, 1 + 1 / log(2.0), 1e-14, "small struct alpha");
    for (size_t i = old; i < sizeof buf; i++)
        assert_int_equal(buf[i], 0xAB);

    /* A newer caller's larger struct: our fields filled, the tail kept. */
    struct {
        owl_esd_result r;
        uint64_t future;
    } big;
    assert_int_equal(owl_esd_result_init(&big.r, sizeof big), OWL_OK);
    big.future = 99;
    assert_owl_ok(ctx, owl_esd_alpha_hill_eigs(ctx, lam, 5, OWL_XMIN_KS_SCAN, &big.r));
    assert_int_equal(big.r.num_eigs, 5);
    assert_int_equal(big.future, 99);
    owl_context_free(ctx);
}

/* ---- validation ---------------------------------------------------------- */

static void test_validation(void **state)
{
    (void)state;
    owl_context *ctx = test_cpu_context(1);
    double lam[5] = {1, 2, 4, 8, 16};
    owl_esd_result r, before;
    owl_esd_result_init(&r, sizeof r);
    r.alpha = -3; /* a sentinel: nothing is written on failure */
    before = r;

    assert_int_equal(owl_esd_alpha_hill_eigs(NULL, lam, 5, 0, &r), OWL_ERR_NULL_POINTER);
    assert_owl_status(ctx, owl_esd_alpha_hill_eigs(ctx, NULL, 5, 0, &r), OWL_ERR_NULL_POINTER);
    assert_owl_status(ctx, owl_esd_alpha_hill_eigs(ctx, lam, 5, 0, NULL), OWL_ERR_NULL_POINTER);
    assert_owl_status(ctx, owl_esd_alpha_hill_eigs(ctx, lam, 1, 0, &r),
                      OWL_ERR_INVALID_ARGUMENT);
    assert_owl_status(ctx, owl_esd_alpha_hill_eigs(ctx, lam, 5, 3, &r),
                      OWL_ERR_INVALID_ARGUMENT);
    assert_owl_status(ctx, owl_esd_alpha_hill_eigs(ctx, lam, 5, -1, &r),
                      OWL_ERR_INVALID_ARGUMENT);
    r.struct_size = 0;
    assert_owl_status(ctx, owl_esd_alpha_hill_eigs(ctx, lam, 5, 0, &r), OWL_ERR_STRUCT_SIZE);
    r.struct_size = sizeof r;
    lam[3] = NAN;
    assert_owl_status(ctx, owl_esd_alpha_hill_eigs(ctx, lam, 5, 0, &r), OWL_ERR_NONFINITE);
    lam[3] = INFINITY;
    assert_owl_status(ctx, owl_esd_alpha_hill_eigs(ctx, lam, 5, 0, &r), OWL_ERR_NONFINITE);
    lam[3] = 8;
    /* Fewer than two positive values. */
    const double one[3] = {0, 5, -1};
    assert_owl_status(ctx, owl_esd_alpha_hill_eigs(ctx, one, 3, 0, &r),
                      OWL_ERR_INVALID_ARGUMENT);
    /* A flat spectrum has no power-law tail: alpha would be infinite. */
    const double flat[3] = {2, 2, 2};
    for (int m = 0; m < 3; m++)
        assert_owl_status(ctx, owl_esd_alpha_hill_eigs(ctx, flat, 3, all_methods[m], &r),
                          OWL_ERR_NUMERICAL);
    assert_memory_equal(&r, &before, sizeof r);

    /* The SVD entry point. */
    double wd[6] = {1, 2, 3, 4, 5, 7};
    owl_tensor w;
    owl_tensor_init(&w, wd, OWL_DTYPE_F64, 2, 3);
    assert_int_equal(owl_esd_alpha_hill(NULL, &w, 0, &r), OWL_ERR_NULL_POINTER);
    assert_owl_status(ctx, owl_esd_alpha_hill(ctx, NULL, 0, &r), OWL_ERR_NULL_POINTER);
    assert_owl_status(ctx, owl_esd_alpha_hill(ctx, &w, 0, NULL), OWL_ERR_NULL_POINTER);
    assert_owl_status(ctx, owl_esd_alpha_hill(ctx, &w, 9, &r), OWL_ERR_INVALID_ARGUMENT);
    owl_tensor bad = w;
    bad.dtype = 7;
    assert_owl_status(ctx, owl_esd_alpha_hill(ctx, &bad, 0, &r), OWL_ERR_DTYPE);
    bad = w;
    bad.rows = 1; /* one singular value */
    assert_owl_status(ctx, owl_esd_alpha_hill(ctx, &bad, 0, &r), OWL_ERR_INVALID_ARGUMENT);
    bad = w;
    bad.row_stride = 2;
    assert_owl_status(ctx, owl_esd_alpha_hill(ctx, &bad, 0, &r), OWL_ERR_SHAPE);
    wd[4] = NAN;
    assert_owl_status(ctx, owl_esd_alpha_hill(ctx, &w, 0, &r), OWL_ERR_NONFINITE);
    wd[4] = 5;
    double zero[6] = {0};
    owl_tensor z;
    owl_tensor_init(&z, zero, OWL_DTYPE_F64, 2, 3);
    assert_owl_status(ctx, owl_esd_alpha_hill(ctx, &z, 0, &r), OWL_ERR_INVALID_ARGUMENT);
    assert_memory_equal(&r, &before, sizeof r);

    /* 2x3 with rank 2: two positive eigenvalues, a valid fit. bf16 storage
     * of the same small integers. */
    assert_owl_ok(ctx, owl_esd_alpha_hill(ctx, &w, OWL_XMIN_MEDIAN, &r));
    assert_int_equal(r.num_eigs, 2);
    assert_int_equal(r.xmin_index, 0);
    uint16_t wb[6] = {0x3f80, 0x4000, 0x4040, 0x4080, 0x40a0, 0x40e0};
    owl_tensor tb;
    owl_tensor_init(&tb, wb, OWL_DTYPE_BF16, 2, 3);
    owl_esd_result rb;
    owl_esd_result_init(&rb, sizeof rb);
    assert_owl_ok(ctx, owl_esd_alpha_hill(ctx, &tb, OWL_XMIN_MEDIAN, &rb));
    assert_close(rb.alpha, r.alpha, 1e-12, "bf16 weight");
    owl_context_free(ctx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_h1_pareto),
        cmocka_unit_test(test_h2_small_case),
        cmocka_unit_test(test_h4_tie_takes_first_bin),
        cmocka_unit_test(test_h4_max_in_last_bin),
        cmocka_unit_test(test_h4_zero_eigenvalues_ignored),
        cmocka_unit_test(test_fix_finger_without_candidates),
        cmocka_unit_test(test_svd_path_matches_eigenvalues),
        cmocka_unit_test(test_thread_count_independence),
        cmocka_unit_test(test_result_struct_sizes),
        cmocka_unit_test(test_validation),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
