/* Thin SVD helpers for the projector: exact (LAPACK gesdd) and randomized
 * (range finder + small SVD), with canonical signs. The workspace is
 * planned here and provided by the caller.
 *
 * LAPACK is column-major and our matrices are row-major. A row-major m x n
 * matrix G is, byte for byte, the column-major n x m matrix G^T, so we hand
 * LAPACK G^T = V S U^T and read our factors straight out of its output
 * without any transposing copies: its U is our V (column j = right vector
 * j, contiguous) and its V^T is our U stored column by column. */
#include "svd.h"

#include <cblas.h>
#include <float.h>
#include <math.h>
#include <string.h>

/* LAPACK returns workspace sizes as floats; round up generously so a size
 * that is not exactly representable is never undershot. */
static int64_t work_size(float q)
{
    double d = ceil((double)q * (1.0 + 1e-6)) + 1.0;
    return d > (double)INT64_MAX / 2 ? INT64_MAX / 2 : (int64_t)d;
}

static bool fits_lapack_int(int64_t v)
{
    return v >= 0 && (uint64_t)v <= (uint64_t)INT32_MAX;
}

/* Optimal lwork of sgesdd('S') on a column-major rows x cols matrix. */
static owl_status gesdd_query(owl_context *ctx, int64_t rows, int64_t cols,
                              int64_t *lwork)
{
    float a = 0, s = 0, u = 0, vt = 0, q = 0;
    lapack_int iw = 0;
    int64_t mn = rows < cols ? rows : cols;
    lapack_int info = LAPACKE_sgesdd_work(
        LAPACK_COL_MAJOR, 'S', (lapack_int)rows, (lapack_int)cols, &a,
        (lapack_int)rows, &s, &u, (lapack_int)rows, &vt, (lapack_int)mn, &q, -1,
        &iw);
    if (info != 0)
        return owl__fail(ctx, OWL_ERR_INTERNAL,
                         "sgesdd workspace query for %lldx%lld failed (info %d)",
                         (long long)rows, (long long)cols, (int)info);
    *lwork = work_size(q);
    return OWL_OK;
}

/* Largest optimal lwork of sgeqrf + sorgqr on rows x k. */
static owl_status qr_query(owl_context *ctx, int64_t rows, int64_t k,
                           int64_t *lwork)
{
    float a = 0, tau = 0, q1 = 0, q2 = 0;
    lapack_int info = LAPACKE_sgeqrf_work(LAPACK_COL_MAJOR, (lapack_int)rows,
                                          (lapack_int)k, &a, (lapack_int)rows,
                                          &tau, &q1, -1);
    if (info == 0)
        info = LAPACKE_sorgqr_work(LAPACK_COL_MAJOR, (lapack_int)rows,
                                   (lapack_int)k, (lapack_int)k, &a,
                                   (lapack_int)rows, &tau, &q2, -1);
    if (info != 0)
        return owl__fail(ctx, OWL_ERR_INTERNAL,
                         "QR workspace query for %lldx%lld failed (info %d)",
                         (long long)rows, (long long)k, (int)info);
    int64_t a1 = work_size(q1), a2 = work_size(q2);
    *lwork = a1 > a2 ? a1 : a2;
    return OWL_OK;
}

owl_status owl__svd_init(owl_context *ctx, owl_svd_work *w,
                         owl_svd_method method, int64_t m, int64_t n,
                         int64_t r, bool left, uint64_t oversample,
                         uint64_t power_iters, uint64_t seed)
{
    memset(w, 0, sizeof *w);
    int64_t mn = m < n ? m : n;
    w->method = method;
    w->m = m;
    w->n = n;
    w->r = r;
    w->left = left;
    w->power_iters = power_iters;
    w->seed = seed;
    if (method == OWL_SVD_EXACT) {
        w->k = mn;
    } else {
        uint64_t room = (uint64_t)(mn - r);
        w->k = r + (int64_t)(oversample < room ? oversample : room);
    }
    int64_t d = left ? m : n; /* length of a kept vector */
    int64_t e = left ? n : m; /* the other side */
    int64_t k = w->k;
    /* LAPACK indexes with 32-bit integers: every array it sees must fit.
     * (m and n are below 2^31, checked by the projector, so m*n cannot
     * overflow here.) */
    int64_t biggest = method == OWL_SVD_EXACT ? m * n : k * (d > e ? d : e);
    if (!fits_lapack_int(m) || !fits_lapack_int(n) ||
        !fits_lapack_int(8 * k) || !fits_lapack_int(biggest))
        return owl__fail(ctx, OWL_ERR_UNSUPPORTED,
                         "a %lldx%lld SVD exceeds LAPACK's 32-bit sizes",
                         (long long)m, (long long)n);

    owl_status s;
    int64_t lw = 0;
    size_t end = 0;
    bool ok = true;
    if (method == OWL_SVD_EXACT) {
        /* LAPACK sees the n x m matrix G^T. */
        s = gesdd_query(ctx, n, m, &lw);
        if (s != OWL_OK)
            return s;
        ok = owl__place(&end, n * k, sizeof(float), &w->off_u) &&
             owl__place(&end, k * m, sizeof(float), &w->off_vt);
    } else {
        /* B = range^T A is k x e; B^T = Q_b R (geqrf, e x k), and the
         * small SVD is that of the k x k R. */
        s = gesdd_query(ctx, k, k, &lw);
        if (s != OWL_OK)
            return s;
        int64_t q1, q2;
        s = qr_query(ctx, d, k, &q1);
        if (s == OWL_OK)
            s = qr_query(ctx, e, k, &q2);
        if (s != OWL_OK)
            return s;
        int64_t q = q1 > q2 ? q1 : q2;
        if (!fits_lapack_int(q))
            return owl__fail(ctx, OWL_ERR_UNSUPPORTED,
                             "QR workspace for a %lldx%lld sketch exceeds "
                             "LAPACK's 32-bit sizes",
                             (long long)d, (long long)k);
        w->qr_lwork = (lapack_int)q;
        /* off_u: B^T (e x k), then R and the SVD's U (k x k each) */
        ok = owl__place(&end, e * k > 2 * k * k ? e * k : 2 * k * k,
                        sizeof(float), &w->off_u) &&
             owl__place(&end, k * k, sizeof(float), &w->off_vt) &&
             owl__place(&end, k * d, sizeof(float), &w->off_range) &&
             owl__place(&end, k * e, sizeof(float), &w->off_sketch) &&
             owl__place(&end, k, sizeof(float), &w->off_tau) &&
             owl__place(&end, q, sizeof(float), &w->off_qr_work);
    }
    if (!fits_lapack_int(lw))
        return owl__fail(ctx, OWL_ERR_UNSUPPORTED,
                         "SVD workspace for %lldx%lld exceeds LAPACK's 32-bit "
                         "sizes",
                         (long long)m, (long long)n);
    w->lwork = (lapack_int)lw;
    ok = ok && owl__place(&end, k, sizeof(float), &w->off_s) &&
         owl__place(&end, lw, sizeof(float), &w->off_work) &&
         owl__place(&end, 8 * k, sizeof(lapack_int), &w->off_iwork);
    /* Between SVDs the projector's small-rank kernels borrow this
     * workspace for a packed copy of r rows of n floats (lowrank_stream.c):
     * keep room for it, so the projector and the memory planner (both
     * size the context scratch from w->bytes) agree. */
    size_t packed = 0;
    ok = ok && !owl__mul_overflows((size_t)r * (size_t)((n + 7) / 8 * 8),
                                   sizeof(float), &packed);
    if (!ok)
        return owl__fail(ctx, OWL_ERR_OUT_OF_MEMORY,
                         "SVD workspace for %lldx%lld: size overflows",
                         (long long)m, (long long)n);
    w->bytes = end > packed ? end : packed;
    return OWL_OK;
}

/* The workspace arrays of one compute call. */
typedef struct {
    float *s, *u, *vt, *work;
    lapack_int *iwork;
    float *range, *sketch, *tau, *qr_work;
} svd_arrays;

static svd_arrays arrays_in(const owl_svd_work *w, void *scratch)
{
    char *base = scratch;
    svd_arrays a = {
        (float *)(base + w->off_s), (float *)(base + w->off_u),
        (float *)(base + w->off_vt), (float *)(base + w->off_work),
        (lapack_int *)(base + w->off_iwork), NULL, NULL, NULL, NULL};
    if (w->method == OWL_SVD_RANDOMIZED) {
        a.range = (float *)(base + w->off_range);
        a.sketch = (float *)(base + w->off_sketch);
        a.tau = (float *)(base + w->off_tau);
        a.qr_work = (float *)(base + w->off_qr_work);
    }
    return a;
}

void owl__canonical_signs(float *rows, int64_t count, int64_t len)
{
    for (int64_t j = 0; j < count; j++) {
        float *x = rows + j * len;
        int64_t best = 0;
        float best_abs = fabsf(x[0]);
        for (int64_t i = 1; i < len; i++) {
            float a = fabsf(x[i]);
            if (a > best_abs) { /* strict: the first index wins ties */
                best_abs = a;
                best = i;
            }
        }
        if (x[best] < 0)
            for (int64_t i = 0; i < len; i++)
                x[i] = -x[i];
    }
}

static owl_status svd_failed(owl_context *ctx, const owl_svd_work *w,
                             lapack_int info)
{
    if (info > 0)
        return owl__fail(ctx, OWL_ERR_NUMERICAL,
                         "the SVD of the %lldx%lld gradient did not converge "
                         "(sgesdd info %d)",
                         (long long)w->m, (long long)w->n, (int)info);
    return owl__fail(ctx, OWL_ERR_INTERNAL,
                     "sgesdd rejected argument %d", (int)-info);
}

owl_status owl__svd_exact(owl_context *ctx, const owl_svd_work *w, float *a,
                          float *basis, void *scratch)
{
    const int64_t m = w->m, n = w->n, k = w->k, r = w->r;
    svd_arrays x = arrays_in(w, scratch);
    /* G^T (n x m, column-major) = U' S V'^T with U' = V (n x k) and
     * V'^T = U^T (k x m). */
    lapack_int info = LAPACKE_sgesdd_work(
        LAPACK_COL_MAJOR, 'S', (lapack_int)n, (lapack_int)m, a, (lapack_int)n,
        x.s, x.u, (lapack_int)n, x.vt, (lapack_int)k, x.work, w->lwork,
        x.iwork);
    if (info != 0)
        return svd_failed(ctx, w, info);
    if (w->left) {
        /* U[i][j] sits at vt[j + i*k]: gather column j of U into row j. */
        for (int64_t j = 0; j < r; j++)
            for (int64_t i = 0; i < m; i++)
                basis[j * m + i] = x.vt[j + i * k];
        owl__canonical_signs(basis, r, m);
    } else {
        /* Right vector j is column j of U': n contiguous floats. */
        memcpy(basis, x.u, (size_t)(r * n) * sizeof(float));
        owl__canonical_signs(basis, r, n);
    }
    return OWL_OK;
}

/* ---- randomized ------------------------------------------------------ */

typedef struct {
    float *x;
    int64_t count;
    uint64_t seed, draw;
} gaussian_job;

/* Box-Muller from one 64-bit hash per pair of entries: 24 bits for the
 * radius (kept away from 0) and 24 for the angle, the pair's two normals
 * its cosine and sine (one log and one sqrt per two entries). */
static void gaussian_range(void *arg, int64_t begin, int64_t end)
{
    const gaussian_job *job = arg;
    const double two_pi = 6.283185307179586476925;
    const double inv24 = 1.0 / 16777216.0;
    for (int64_t i = begin; i < end; i++) {
        uint64_t bits = owl__hash3(job->seed, job->draw, (uint64_t)i);
        double u1 = ((double)(bits >> 40) + 0.5) * inv24;
        double u2 = (double)(bits & 0xffffffu) * inv24;
        double rad = sqrt(-2.0 * log(u1)), ang = two_pi * u2;
        job->x[2 * i] = (float)(rad * cos(ang));
        if (2 * i + 1 < job->count)
            job->x[2 * i + 1] = (float)(rad * sin(ang));
    }
}

/* Normalises the k vectors (rows of length len, column-major len x k for
 * LAPACK) between power iterations, where only their span matters: LU
 * with partial pivoting, x = P L U, replaced by P L. A quarter of the
 * flops of a Householder QR with its explicit Q, and the same span; only
 * the last basis must be orthonormal (orthonormalise). */
static owl_status lu_normalise(owl_context *ctx, const owl_svd_work *w,
                               const svd_arrays *a, float *x, int64_t len,
                               bool *broke)
{
    const int64_t k = w->k;
    lapack_int *ipiv = a->iwork; /* 8 k of them */
    /* A subnormal pivot has no f32 reciprocal (1 / 2e-43 is Inf), and
     * OpenBLAS's getrf scales by the reciprocal: flush subnormals to 0.
     * Relative to the vectors' largest entries they are below f32's
     * precision anyway; normal inputs are unchanged. */
    for (int64_t i = 0; i < k * len; i++)
        if (fabsf(x[i]) < FLT_MIN)
            x[i] = 0.0f;
    lapack_int info = LAPACKE_sgetrf_work(LAPACK_COL_MAJOR, (lapack_int)len,
                                          (lapack_int)k, x, (lapack_int)len,
                                          ipiv);
    if (info < 0)
        return owl__fail(ctx, OWL_ERR_INTERNAL,
                         "LU of the %lldx%lld sketch failed (info %d)",
                         (long long)len, (long long)k, (int)info);
    /* Rank-deficient vectors break the LU down: reference LAPACK leaves
     * an exactly zero pivot's column of L at 0, but OpenBLAS scales it by
     * 1 / 0 (or by the huge reciprocal of a tiny pivot), and the NaN
     * spreads. Then the caller forms the product again and orthonormalises
     * it: QR takes a zero column in its stride. */
    *broke = false;
    for (int64_t i = 0; i < k * len && !*broke; i++)
        *broke = !isfinite(x[i]);
    if (*broke)
        return OWL_OK;
    for (int64_t j = 0; j < k; j++) { /* unit diagonal, nothing above */
        float *col = x + j * len;
        memset(col, 0, (size_t)j * sizeof(float));
        col[j] = 1.0f;
    }
    /* Undo the row interchanges, last first: P L. */
    LAPACKE_slaswp_work(LAPACK_COL_MAJOR, (lapack_int)k, x, (lapack_int)len,
                        1, (lapack_int)k, ipiv, -1);
    return OWL_OK;
}

/* Orthonormalises the k vectors (rows of length len) in x in place:
 * column-major len x k for LAPACK. */
static owl_status orthonormalise(owl_context *ctx, const owl_svd_work *w,
                                 const svd_arrays *a, float *x, int64_t len)
{
    lapack_int k = (lapack_int)w->k;
    lapack_int info = LAPACKE_sgeqrf_work(LAPACK_COL_MAJOR, (lapack_int)len, k,
                                          x, (lapack_int)len, a->tau,
                                          a->qr_work, w->qr_lwork);
    if (info == 0)
        info = LAPACKE_sorgqr_work(LAPACK_COL_MAJOR, (lapack_int)len, k, k, x,
                                   (lapack_int)len, a->tau, a->qr_work,
                                   w->qr_lwork);
    if (info != 0)
        return owl__fail(ctx, OWL_ERR_INTERNAL,
                         "QR of the %lldx%lld sketch failed (info %d)",
                         (long long)len, (long long)w->k, (int)info);
    return OWL_OK;
}

int owl__svd_safe_shift(const float *g, int64_t ldg, int64_t m, int64_t n)
{
    float max = 0;
    for (int64_t i = 0; i < m; i++) {
        const float *row = g + i * ldg;
        for (int64_t j = 0; j < n; j++) {
            const float a = fabsf(row[j]);
            max = a > max ? a : max;
        }
    }
    if (max == 0 || (max >= 0x1p-64f && max <= 0x1p64f))
        return 0;
    int e;
    frexpf(max, &e); /* max = f 2^e, f in [0.5, 1) */
    return 1 - e;
}

void owl__svd_scale(float *a, int64_t count, int shift)
{
    for (int64_t i = 0; i < count; i++)
        a[i] = ldexpf(a[i], shift);
}

/* With A = G (left) or G^T (right), d x e:
 * to_range:  range (k x d) = x (k x e) * A^T, i.e. the vectors A x_i;
 * to_sketch: sketch (k x e) = range (k x d) * A, i.e. the vectors A^T q_i. */
static void to_range(const owl_svd_work *w, const float *g, int64_t ldg,
                     const float *x, float *out)
{
    int m = (int)w->m, n = (int)w->n, k = (int)w->k;
    if (w->left) /* (k x n) * G^T */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, k, m, n, 1.0f, x,
                    n, g, (int)ldg, 0.0f, out, m);
    else /* (k x m) * G */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, k, n, m, 1.0f,
                    x, m, g, (int)ldg, 0.0f, out, n);
}

static void to_sketch(const owl_svd_work *w, const float *g, int64_t ldg,
                      const float *range, float *out)
{
    int m = (int)w->m, n = (int)w->n, k = (int)w->k;
    if (w->left) /* (k x m) * G */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, k, n, m, 1.0f,
                    range, m, g, (int)ldg, 0.0f, out, n);
    else /* (k x n) * G^T */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, k, m, n, 1.0f,
                    range, n, g, (int)ldg, 0.0f, out, m);
}

/* range = sketch * A^T, then LU-normalised (lu) or orthonormalised; an
 * LU that breaks down on rank-deficient vectors is replaced by a QR of the
 * product formed again (the sketch is left as it was). */
static owl_status next_range(owl_context *ctx, const owl_svd_work *w,
                             const svd_arrays *x, const float *g, int64_t ldg,
                             bool lu)
{
    const int64_t d = w->left ? w->m : w->n;
    to_range(w, g, ldg, x->sketch, x->range);
    bool broke = false;
    if (lu) {
        owl_status s = lu_normalise(ctx, w, x, x->range, d, &broke);
        if (s != OWL_OK || !broke)
            return s;
        to_range(w, g, ldg, x->sketch, x->range);
    }
    return orthonormalise(ctx, w, x, x->range, d);
}

/* sketch = range * A, LU-normalised, with the same fallback. */
static owl_status next_sketch(owl_context *ctx, const owl_svd_work *w,
                              const svd_arrays *x, const float *g, int64_t ldg)
{
    const int64_t e = w->left ? w->n : w->m;
    to_sketch(w, g, ldg, x->range, x->sketch);
    bool broke = false;
    owl_status s = lu_normalise(ctx, w, x, x->sketch, e, &broke);
    if (s != OWL_OK || !broke)
        return s;
    to_sketch(w, g, ldg, x->range, x->sketch);
    return orthonormalise(ctx, w, x, x->sketch, e);
}

owl_status owl__svd_randomized(owl_context *ctx, const owl_svd_work *w,
                               const float *g, int64_t ldg, uint64_t draw,
                               float *basis, void *scratch)
{
    svd_arrays x = arrays_in(w, scratch);
    const int64_t k = w->k, r = w->r;
    const int64_t d = w->left ? w->m : w->n;
    const int64_t e = w->left ? w->n : w->m;
    owl_status s;

    gaussian_job job = {x.sketch, k * e, w->seed, draw};
    owl__parallel_for(ctx, (k * e + 1) / 2, 8192, gaussian_range, &job);
    /* Power iterations sharpen a slowly decaying spectrum; each product is
     * renormalised (LU) so small directions are not lost to rounding, and
     * the last range is orthonormalised. */
    s = next_range(ctx, w, &x, g, ldg, w->power_iters > 0);
    for (uint64_t it = 0; it < w->power_iters && s == OWL_OK; it++) {
        s = next_sketch(ctx, w, &x, g, ldg);
        if (s == OWL_OK)
            s = next_range(ctx, w, &x, g, ldg, it + 1 < w->power_iters);
    }
    if (s != OWL_OK)
        return s;
    /* B = Q^T A (k x e). B^T = Q_b R (e x k), so B = R^T Q_b^T and the
     * left vectors of B are the right vectors of R: LAPACK's V^T output
     * for the k x k R is U_B^T, i.e. U_B stored row-major. Q_b itself is
     * never needed. */
    to_sketch(w, g, ldg, x.range, x.sketch);
    lapack_int info = LAPACKE_sgeqrf_work(LAPACK_COL_MAJOR, (lapack_int)e,
                                          (lapack_int)k, x.sketch,
                                          (lapack_int)e, x.tau, x.qr_work,
                                          w->qr_lwork);
    if (info != 0)
        return owl__fail(ctx, OWL_ERR_INTERNAL,
                         "QR of the %lldx%lld sketch failed (info %d)",
                         (long long)e, (long long)k, (int)info);
    float *rk = x.u, *uk = x.u + k * k; /* R, then the SVD's unused U */
    for (int64_t j = 0; j < k; j++)
        for (int64_t i = 0; i < k; i++)
            rk[i + j * k] = i <= j ? x.sketch[i + j * e] : 0.0f;
    info = LAPACKE_sgesdd_work(LAPACK_COL_MAJOR, 'S', (lapack_int)k,
                               (lapack_int)k, rk, (lapack_int)k, x.s, uk,
                               (lapack_int)k, x.vt, (lapack_int)k, x.work,
                               w->lwork, x.iwork);
    if (info != 0)
        return svd_failed(ctx, w, info);
    /* Vector j = sum_i U_B[i][j] q_i: basis (r x d) = U_B[:, :r]^T range. */
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)r, (int)d,
                (int)k, 1.0f, x.vt, (int)k, x.range, (int)d, 0.0f, basis,
                (int)d);
    owl__canonical_signs(basis, r, d);
    return OWL_OK;
}
