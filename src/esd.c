/* PL_Alpha_Hill of a weight's empirical spectral density (ESD).
 *
 * The eigenvalues lambda of W^T W (squared singular values of W), sorted
 * ascending, are fitted by a power law above a cutoff xmin = lambda_i with
 * the Hill estimator used by TempBalance's net_esd_estimator:
 *   n       = N - i                        (the tail includes xmin itself)
 *   alpha_i = 1 + n / sum_{j >= i} ln(lambda_j / lambda_i)
 *   D_i     = max_{0 <= j < n} |1 - (lambda_{i+j}/lambda_i)^(1-alpha_i) - j/n|
 * (D_i = 1 when alpha_i <= 1, as in the reference; with a sorted spectrum
 * alpha_i > 1 always holds, so that branch only mirrors the reference.)
 *
 * Zero and negative eigenvalues are left out (log 0 is undefined; negative
 * values of W^T W are rounding noise). TempBalance keeps exact zeros by
 * default, which makes its alpha NaN; dropping them is the only usable
 * reading. */
#include "internal.h"
#ifdef OWL_HAVE_CUDA
#include "cuda_galore.h"
#endif

#include <inttypes.h>
#include <lapacke.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define HIST_BINS 100
/* Same bound as the options structs: no result struct is ever this big. */

owl_status owl_esd_result_init(owl_esd_result *res, uint64_t struct_size)
{
    static const owl_esd_result zeroed = {.struct_size = sizeof(owl_esd_result)};
    return owl__init_options(res, struct_size, &zeroed, sizeof zeroed);
}

static owl_status check_result(owl_context *ctx, const owl_esd_result *result)
{
    OWL_REQUIRE_PTR(ctx, result);
    if (!owl__struct_size_ok(result->struct_size))
        return owl__fail(ctx, OWL_ERR_STRUCT_SIZE,
                         "result->struct_size is %" PRIu64
                         "; fill it with owl_esd_result_init",
                         result->struct_size);
    return OWL_OK;
}

static owl_status check_method(owl_context *ctx, owl_xmin_method method)
{
    if (method != OWL_XMIN_FIX_FINGER && method != OWL_XMIN_MEDIAN &&
        method != OWL_XMIN_KS_SCAN)
        return owl__fail(ctx, OWL_ERR_INVALID_ARGUMENT,
                         "method is %d; expected OWL_XMIN_FIX_FINGER (0), "
                         "OWL_XMIN_MEDIAN (1) or OWL_XMIN_KS_SCAN (2)",
                         (int)method);
    return OWL_OK;
}

/* Copies the fields that fit in the caller's struct (an older, smaller
 * struct gets only the fields it knows). */
static void write_result(owl_esd_result *dst, const owl_esd_result *src)
{
    uint64_t size = dst->struct_size;
#define OWL_PUT(field)                                                         \
    do {                                                                       \
        if (offsetof(owl_esd_result, field) + sizeof dst->field <= size)       \
            dst->field = src->field;                                           \
    } while (0)
    OWL_PUT(alpha);
    OWL_PUT(xmin);
    OWL_PUT(ks_distance);
    OWL_PUT(xmin_index);
    OWL_PUT(num_eigs);
#undef OWL_PUT
}

/* ---- the fit ---------------------------------------------------------- */

typedef struct {
    const double *lam;   /* ascending, positive, N values */
    const double *alpha; /* alpha_i for i < N - 1 */
    double *ks;          /* D_i, filled for the tasks' indices */
    int64_t N;
    int64_t first;       /* task t is candidate index first + t */
} ks_job;

static double ks_distance(const double *lam, int64_t N, int64_t i, double alpha)
{
    if (!(alpha > 1.0))
        return 1.0;
    int64_t n = N - i;
    double expo = 1.0 - alpha, worst = 0.0;
    for (int64_t j = 0; j < n; j++) {
        double gap = fabs(1.0 - pow(lam[i + j] / lam[i], expo) -
                          (double)j / (double)n);
        if (gap > worst)
            worst = gap;
    }
    return worst;
}

static void ks_task(void *arg, int64_t begin, int64_t end)
{
    const ks_job *job = arg;
    for (int64_t t = begin; t < end; t++) {
        int64_t i = job->first + t;
        job->ks[i] = ks_distance(job->lam, job->N, i, job->alpha[i]);
    }
}

/* D_i for i in [lo, hi], spread over the context's threads (each D_i is
 * independent, so the values do not depend on the thread count). */
static void ks_range(owl_context *ctx, ks_job *job, int64_t lo, int64_t hi)
{
    job->first = lo;
    int64_t tasks = hi - lo + 1;
    /* Each candidate costs about N pow() calls; keep small fits serial. */
    int64_t grain = (16384 + job->N - 1) / job->N;
    owl__parallel_for(ctx, tasks, grain, ks_task, job);
}

/* First index of the smallest D_i over [lo, hi]. */
static int64_t argmin_ks(const double *ks, int64_t lo, int64_t hi)
{
    int64_t best = lo;
    for (int64_t i = lo + 1; i <= hi; i++)
        if (ks[i] < ks[best])
            best = i;
    return best;
}

/* TempBalance's xmin_peak peak: the left edge of the fullest bin of a
 * 100-bin histogram of log10(lambda) over [min, max], returned as
 * 10^edge. Binning follows torch.histc as TempBalance runs it (CUDA) and
 * as current CPU builds do: bin = floor((x - min) * bins / (max - min));
 * a value equal to max goes in the last bin, and the first of equally full
 * bins wins (torch.argmax). (Some older CPU builds divide before they
 * multiply, which differs only for a value within one rounding of an
 * interior edge.) When min == max every value sits in the first bin. The
 * edges are those of torch.linspace(min, max, bins + 1), which steps from
 * the start for the first half and back from the end for the second. */
static double histogram_peak(const double *lam, int64_t N)
{
    int64_t counts[HIST_BINS] = {0};
    double lo = log10(lam[0]), hi = log10(lam[N - 1]);
    double width = hi - lo;
    for (int64_t k = 0; k < N; k++) {
        int64_t bin = 0;
        if (width > 0) {
            bin = (int64_t)((log10(lam[k]) - lo) * HIST_BINS / width);
            if (bin >= HIST_BINS)
                bin = HIST_BINS - 1;
            if (bin < 0)
                bin = 0;
        }
        counts[bin]++;
    }
    int64_t peak_bin = 0;
    for (int64_t b = 1; b < HIST_BINS; b++)
        if (counts[b] > counts[peak_bin])
            peak_bin = b;
    double step = width / HIST_BINS;
    double edge = peak_bin < (HIST_BINS + 1) / 2
                      ? lo + step * (double)peak_bin
                      : hi - step * (double)(HIST_BINS - peak_bin);
    return pow(10.0, edge);
}

/* Fits the ascending positive spectrum lam[0..N), N >= 2. `scratch` holds
 * 2 * N doubles. */
static owl_status fit_sorted(owl_context *ctx, const double *lam, int64_t N,
                             owl_xmin_method method, double *scratch,
                             owl_esd_result *out)
{
    double *alpha = scratch, *ks = scratch + N;
    /* den_i = sum_{j >= i} ln(lambda_j / lambda_i), from the top down:
     * den_i = den_{i+1} + (N - 1 - i) * ln(lambda_{i+1} / lambda_i). Every
     * term is >= 0, so unlike a difference of prefix sums of ln(lambda)
     * nothing cancels, and rescaling lambda leaves the sum unchanged up to
     * the rounding of the ratios. */
    double den = 0.0;
    for (int64_t i = N - 2; i >= 0; i--) {
        den += (double)(N - 1 - i) * log(lam[i + 1] / lam[i]);
        alpha[i] = 1.0 + (double)(N - i) / den;
    }
    ks_job job = {lam, alpha, ks, N, 0};
    int64_t last = N - 2, chosen;
    if (method == OWL_XMIN_MEDIAN) {
        chosen = N / 2 < last ? N / 2 : last;
        ks_range(ctx, &job, chosen, chosen);
    } else if (method == OWL_XMIN_KS_SCAN) {
        ks_range(ctx, &job, 0, last);
        chosen = argmin_ks(ks, 0, last);
    } else {
        /* Fix-finger (TempBalance xmin_peak): candidates are the lambda_i
         * with log10(0.95 * peak) <= lambda_i <= 1.5 * peak. The lower
         * bound compares a logarithm with linear eigenvalues; the reference
         * (after WeightWatcher's xmin_range) does exactly that, and we keep
         * it so results match. It is always below the peak, so the peak
         * bin's eigenvalues stay candidates and the 1.5x cap is the bound
         * that matters. The spectrum is sorted, so the candidates form one
         * run of indices. */
        double peak = histogram_peak(lam, N);
        double lower = log10(0.95 * peak), upper = 1.5 * peak;
        int64_t lo = 0;
        while (lo <= last && lam[lo] < lower)
            lo++;
        int64_t hi = lo - 1;
        while (hi + 1 <= last && lam[hi + 1] <= upper)
            hi++;
        if (lo > hi) {
            /* No candidate (the peak bin spans more than a factor 1.5,
             * i.e. the spectrum covers over 17 decades): the reference
             * would return its placeholder alpha 0; we scan every i. */
            lo = 0;
            hi = last;
        }
        ks_range(ctx, &job, lo, hi);
        chosen = argmin_ks(ks, lo, hi);
    }
    if (!isfinite(alpha[chosen]))
        return owl__fail(ctx, OWL_ERR_NUMERICAL,
                         "the %" PRId64 " eigenvalues from xmin = %g up are all "
                         "equal; alpha is undefined",
                         N - chosen, lam[chosen]);
    out->alpha = alpha[chosen];
    out->xmin = lam[chosen];
    out->ks_distance = ks[chosen];
    out->xmin_index = (uint64_t)chosen;
    out->num_eigs = (uint64_t)N;
    return OWL_OK;
}

static int compare_doubles(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Keeps the positive values of eig[0..count) (already checked finite),
 * sorts them into lam and fits. lam has room for count values, scratch for
 * 2 * count. */
static owl_status fit_values(owl_context *ctx, const double *eig, uint64_t count,
                             owl_xmin_method method, double *lam,
                             double *scratch, const char *what,
                             owl_esd_result *result)
{
    int64_t N = 0;
    for (uint64_t k = 0; k < count; k++)
        if (eig[k] > 0)
            lam[N++] = eig[k];
    if (N < 2)
        return owl__fail(ctx, OWL_ERR_INVALID_ARGUMENT,
                         "%s: %" PRId64 " of %" PRIu64 " eigenvalues are "
                         "positive; the fit needs at least 2",
                         what, N, count);
    qsort(lam, (size_t)N, sizeof *lam, compare_doubles);
    owl_esd_result fit = {.struct_size = sizeof fit};
    owl_status s = fit_sorted(ctx, lam, N, method, scratch, &fit);
    if (s == OWL_OK)
        write_result(result, &fit);
    return s;
}

owl_status owl_esd_alpha_hill_eigs(owl_context *ctx, const double *eigenvalues,
                                   uint64_t count, owl_xmin_method method,
                                   owl_esd_result *result)
{
    if (ctx == NULL)
        return OWL_ERR_NULL_POINTER;
    owl__clear_error(ctx);
    OWL_REQUIRE_PTR(ctx, eigenvalues);
    owl_status s = check_result(ctx, result);
    if (s != OWL_OK)
        return s;
    s = check_method(ctx, method);
    if (s != OWL_OK)
        return s;
    if (count < 2)
        return owl__fail(ctx, OWL_ERR_INVALID_ARGUMENT,
                         "count is %" PRIu64 "; the fit needs at least 2 "
                         "eigenvalues",
                         count);
    if (count > (uint64_t)(INT64_MAX / 4))
        return owl__fail(ctx, OWL_ERR_INVALID_ARGUMENT,
                         "count is %" PRIu64 "; too many eigenvalues", count);
    for (uint64_t k = 0; k < count; k++)
        if (!isfinite(eigenvalues[k]))
            return owl__fail(ctx, OWL_ERR_NONFINITE,
                             "eigenvalues[%" PRIu64 "] is %g", k, eigenvalues[k]);
    double *work = owl__alloc(ctx, (size_t)count, 3 * sizeof(double),
                              "eigenvalue workspace");
    if (work == NULL)
        return OWL_ERR_OUT_OF_MEMORY;
    s = fit_values(ctx, eigenvalues, count, method, work, work + count,
                   "eigenvalues", result);
    owl__free(work);
    return s;
}

owl_status owl_esd_alpha_hill(owl_context *ctx, const owl_tensor *weight,
                              owl_xmin_method method, owl_esd_result *result)
{
    if (ctx == NULL)
        return OWL_ERR_NULL_POINTER;
    owl__clear_error(ctx);
    owl_status s = owl__check_tensor(ctx, weight, "weight",
                                     OWL_DT_FLOATS | OWL_DT_BIT(OWL_DTYPE_F64));
    if (s != OWL_OK)
        return s;
    s = check_result(ctx, result);
    if (s != OWL_OK)
        return s;
    s = check_method(ctx, method);
    if (s != OWL_OK)
        return s;
    int64_t m = weight->rows, n = weight->cols;
    if (m > INT32_MAX || n > INT32_MAX)
        return owl__fail(ctx, OWL_ERR_UNSUPPORTED,
                         "weight is %" PRId64 "x%" PRId64 "; LAPACK takes "
                         "dimensions up to %d",
                         m, n, INT32_MAX);
    int64_t k = m < n ? m : n;
    if (k < 2)
        return owl__fail(ctx, OWL_ERR_INVALID_ARGUMENT,
                         "weight is %" PRId64 "x%" PRId64 "; the fit needs at "
                         "least 2 singular values",
                         m, n);
    if (ctx->backend != OWL_BACKEND_CPU) {
#ifdef OWL_HAVE_CUDA
        /* Singular values on the device, the fit on the host. */
        return owl__cuda_esd_alpha_hill(ctx, weight, method, result);
#else
        return owl__fail(ctx, OWL_ERR_UNSUPPORTED,
                         "owl_esd_alpha_hill: this build has no CUDA backend");
#endif
    }
    if (!owl__all_finite(ctx, weight))
        return owl__fail(ctx, OWL_ERR_NONFINITE, "weight contains NaN or Inf");

    /* An f64 copy for LAPACK (dgesdd overwrites its input), then room for
     * the singular values, the sorted spectrum, the fit's scratch and one
     * f32 row. Allocated per call: this is an analysis, not a step. */
    size_t cells = (size_t)m * (size_t)n, tail = 4 * (size_t)k + (size_t)n;
    if (cells > SIZE_MAX / sizeof(double) - tail)
        return owl__fail(ctx, OWL_ERR_OUT_OF_MEMORY,
                         "weight (%" PRId64 "x%" PRId64 ") is too large to copy",
                         m, n);
    double *a = owl__alloc(ctx, cells + tail, sizeof(double), "SVD workspace");
    if (a == NULL)
        return OWL_ERR_OUT_OF_MEMORY;
    double *sv = a + cells, *lam = sv + k, *scratch = lam + k;
    float *row = (float *)(void *)(scratch + 2 * k);
    for (int64_t i = 0; i < m; i++) {
        double *dst = a + (size_t)i * (size_t)n;
        if (weight->dtype == OWL_DTYPE_F64) {
            memcpy(dst, owl__row_ptr(weight, i), (size_t)n * sizeof(double));
        } else {
            owl__load_row_f32(weight, i, row);
            for (int64_t j = 0; j < n; j++)
                dst[j] = row[j];
        }
    }
    /* The row-major m x n copy is W^T in column-major order; W^T has the
     * same singular values, and no transposition is needed. */
    lapack_int info = LAPACKE_dgesdd(LAPACK_COL_MAJOR, 'N', (lapack_int)n,
                                     (lapack_int)m, a, (lapack_int)n, sv, NULL, 1,
                                     NULL, 1);
    if (info > 0) {
        s = owl__fail(ctx, OWL_ERR_NUMERICAL,
                      "the SVD of weight (%" PRId64 "x%" PRId64 ") did not "
                      "converge (dgesdd info %d)",
                      m, n, (int)info);
    } else if (info == LAPACK_WORK_MEMORY_ERROR) {
        s = owl__fail(ctx, OWL_ERR_OUT_OF_MEMORY,
                      "dgesdd could not allocate its workspace");
    } else if (info < 0) {
        s = owl__fail(ctx, OWL_ERR_INTERNAL,
                      "dgesdd rejected argument %d", (int)-info);
    } else {
        for (int64_t i = 0; i < k; i++)
            sv[i] *= sv[i];
        s = fit_values(ctx, sv, (uint64_t)k, method, lam, scratch,
                       "weight's squared singular values", result);
    }
    owl__free(a);
    return s;
}
