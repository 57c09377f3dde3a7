/* Activation statistics and the layerwise outlier distribution (LOD).
 *
 * Both operations reduce large tensors to a few numbers. Their results must
 * not depend on the number of worker threads, so every reduction is split
 * into blocks whose bounds depend only on the shapes; each block's partial
 * result lands in its own slot and the slots are combined in block order on
 * the calling thread. owl__parallel_for only decides who computes which
 * block. */
#include "internal.h"
#ifdef OWL_HAVE_CUDA
#include "cuda_adamw_lod.h"
#endif

#include <float.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

/* Columns handled together: one f64 accumulator per column lives on the
 * stack, and a row's span of this many values stays in L1. */
#define SPAN 256
/* Below this many elements a call runs on the calling thread alone. */
#define PARALLEL_MIN_ELEMS 32768
/* Sum-of-squares row slices: at most this many, of at least that many
 * rows. More slices give the threads work when n is small; the cap bounds
 * the f64 workspace at ACT_MAX_SLICES * n. */
#define ACT_MAX_SLICES 8
#define ACT_MIN_SLICE_ROWS 512
/* Elements per LOD task: small enough to balance threads, large enough
 * that the per-task bookkeeping is noise. */
#define LOD_TASK_ELEMS 16384

/* Start of part `i` of `parts` near-equal parts of [0, n). */
static int64_t split_point(int64_t n, int64_t parts, int64_t i)
{
    return (n / parts) * i + (i < n % parts ? i : n % parts);
}

/* ---- owl_act_norm_accumulate ---------------------------------------- */

typedef struct {
    const owl_tensor *x;
    int64_t slices, col_blocks;
    double *partial; /* slices x n: column sums of squares per row slice */
} act_job;

/* One task = one (row slice, column block): its columns are summed down
 * its rows in row order, so the partial is the same whoever runs it. */
static void act_task(void *arg, int64_t begin, int64_t end)
{
    const act_job *job = arg;
    const owl_tensor *x = job->x;
    int64_t n = x->cols;
    float row[SPAN];
    double acc[SPAN];
    for (int64_t task = begin; task < end; task++) {
        int64_t slice = task / job->col_blocks, block = task % job->col_blocks;
        int64_t r0 = split_point(x->rows, job->slices, slice);
        int64_t r1 = split_point(x->rows, job->slices, slice + 1);
        int64_t j0 = block * SPAN;
        int64_t len = n - j0 < SPAN ? n - j0 : SPAN;
        for (int64_t j = 0; j < len; j++)
            acc[j] = 0.0;
        for (int64_t t = r0; t < r1; t++) {
            owl__load_span_f32(x, t, j0, len, row);
            for (int64_t j = 0; j < len; j++)
                acc[j] += (double)row[j] * (double)row[j];
        }
        memcpy(job->partial + slice * n + j0, acc, (size_t)len * sizeof(double));
    }
}

/* Grain (in tasks) so that inputs under PARALLEL_MIN_ELEMS stay on the
 * calling thread. */
static int64_t grain_for(int64_t tasks, double elems)
{
    return elems < PARALLEL_MIN_ELEMS ? tasks : 1;
}

owl_status owl_act_norm_accumulate(owl_context *ctx, const owl_tensor *x,
                                   owl_tensor *sumsq)
{
    if (ctx == NULL)
        return OWL_ERR_NULL_POINTER;
    owl__clear_error(ctx);
    owl_status s = owl__check_tensor(ctx, x, "x", OWL_DT_FLOATS);
    if (s != OWL_OK)
        return s;
    s = owl__check_tensor(ctx, sumsq, "sumsq",
                          OWL_DT_BIT(OWL_DTYPE_F32) | OWL_DT_BIT(OWL_DTYPE_F64));
    if (s != OWL_OK)
        return s;
    if (sumsq->rows != 1 || sumsq->cols != x->cols)
        return owl__fail(ctx, OWL_ERR_SHAPE,
                         "sumsq is %" PRId64 "x%" PRId64 ", expected 1x%" PRId64
                         " (x is %" PRId64 "x%" PRId64 ")",
                         sumsq->rows, sumsq->cols, x->cols, x->rows, x->cols);
    s = owl__check_dense(ctx, sumsq, "sumsq");
    if (s == OWL_OK)
        s = owl__check_disjoint(ctx, sumsq, "sumsq", x, "x");
    if (s != OWL_OK)
        return s;
#ifdef OWL_HAVE_CUDA
    /* sumsq lives on the device: its values are not checked here. */
    if (ctx->backend == OWL_BACKEND_CUDA)
        return owl__cuda_act_norm(ctx, x, sumsq);
#endif

    int64_t n = x->cols;
    /* The running sums must still be sums of squares. */
    for (int64_t j = 0; j < n; j++) {
        double v = sumsq->dtype == OWL_DTYPE_F64 ? ((const double *)sumsq->data)[j]
                                                 : ((const float *)sumsq->data)[j];
        if (!isfinite(v))
            return owl__fail(ctx, OWL_ERR_NONFINITE,
                             "sumsq[%" PRId64 "] is %g before accumulating", j, v);
        if (v < 0)
            return owl__fail(ctx, OWL_ERR_INVALID_ARGUMENT,
                             "sumsq[%" PRId64 "] is %g; a sum of squares is >= 0",
                             j, v);
    }

    int64_t slices = (x->rows + ACT_MIN_SLICE_ROWS - 1) / ACT_MIN_SLICE_ROWS;
    if (slices > ACT_MAX_SLICES)
        slices = ACT_MAX_SLICES;
    int64_t col_blocks = (n + SPAN - 1) / SPAN;
    /* The partials are held until the whole input is known to be finite:
     * nothing may be written when it is not. */
    double *partial = owl__alloc(ctx, (size_t)slices * (size_t)n, sizeof(double),
                                 "sum-of-squares workspace");
    if (partial == NULL)
        return OWL_ERR_OUT_OF_MEMORY;
    act_job job = {x, slices, col_blocks, partial};
    int64_t tasks = slices * col_blocks;
    owl__parallel_for(ctx, tasks, grain_for(tasks, (double)x->rows * (double)n),
                      act_task, &job);

    /* A square of a finite f32/bf16/f16 value cannot overflow f64, even
     * summed over 2^63 rows, so a non-finite partial means a NaN or Inf
     * in x. partial[0..n) ends up holding the new values. */
    owl_status status = OWL_OK;
    for (int64_t j = 0; j < n && status == OWL_OK; j++) {
        double total = 0.0;
        for (int64_t sl = 0; sl < slices; sl++)
            total += partial[sl * n + j];
        if (!isfinite(total)) {
            status = owl__fail(ctx, OWL_ERR_NONFINITE,
                               "x contains NaN or Inf (in column %" PRId64 ")", j);
            break;
        }
        if (sumsq->dtype == OWL_DTYPE_F64) {
            partial[j] = ((const double *)sumsq->data)[j] + total;
        } else {
            float updated = (float)((double)((const float *)sumsq->data)[j] + total);
            if (!isfinite(updated))
                status = owl__fail(ctx, OWL_ERR_NUMERICAL,
                                   "sumsq[%" PRId64 "] would overflow f32 (%g); "
                                   "accumulate in an f64 sumsq",
                                   j, (double)((const float *)sumsq->data)[j] + total);
            partial[j] = updated;
        }
    }
    if (status == OWL_OK) {
        if (sumsq->dtype == OWL_DTYPE_F64) {
            memcpy(sumsq->data, partial, (size_t)n * sizeof(double));
        } else {
            float *dst = sumsq->data;
            for (int64_t j = 0; j < n; j++)
                dst[j] = (float)partial[j];
        }
    }
    owl__free(partial);
    return status;
}

/* ---- owl_lod_compute ------------------------------------------------- */

/* The sums run in LOD_LANES independent f64 accumulators (entry j of a
 * task feeds lane j % LOD_LANES), so the adds of neighbouring entries do
 * not wait on each other and vectorise; the lanes are combined in a fixed
 * order at the end of the task. Every build variant keeps this order and
 * rounds each product and sum the same way (ISO C mode contracts nothing,
 * the AVX2 variant enables no FMA), so the result is the same bit for bit
 * whichever variant runs. */
#define LOD_LANES 8
/* How far ahead (in elements, 4 KiB of f32) the streaming loops ask for
 * weights: the hardware prefetcher alone left the loads waiting on memory
 * (about 10% slower over a 7B layer); 1-4 KiB ahead measured the same. */
#define LOD_PREFETCH 1024

#if defined(__GNUC__) && defined(__x86_64__) && !defined(OWL_PORTABLE_ONLY)
#define LOD_X86_AVX2 1
static bool lod_cpu_has_avx2(void)
{
#ifdef __AVX2__
    return true;
#else
    __builtin_cpu_init(); /* idempotent; cheap after the first call */
    return __builtin_cpu_supports("avx2");
#endif
}
#endif

typedef struct {
    uint64_t matrix;
    int64_t r0, r1;
} lod_task;

typedef struct {
    const owl_tensor *weights;
    const lod_task *tasks;
    const double *norms;        /* sqrt(s_j) of every matrix, back to back */
    const uint32_t *not_counted; /* per column, same layout: the largest
                                  * |W| bit pattern whose score is not above
                                  * the threshold */
    const size_t *norm_offset;  /* where matrix k's columns start */
    double *sums;               /* per task: sum of A over its rows */
    uint64_t *counts;           /* per task: #{A > threshold} */
} lod_job;

/* acc[j % LOD_LANES] += |w_j| * c_j for j in [0, len); len is a multiple of
 * LOD_LANES except for a row's last span. The lanes live in locals while
 * the loop runs (an array reached through a pointer would be stored and
 * reloaded on every step). */
static inline __attribute__((always_inline)) void
lod_sum_span(const float *w, const double *c, int64_t len, double *acc)
{
    double a0 = acc[0], a1 = acc[1], a2 = acc[2], a3 = acc[3];
    double a4 = acc[4], a5 = acc[5], a6 = acc[6], a7 = acc[7];
    int64_t j = 0;
    for (; j + LOD_LANES <= len; j += LOD_LANES) {
        a0 += fabs((double)w[j + 0]) * c[j + 0];
        a1 += fabs((double)w[j + 1]) * c[j + 1];
        a2 += fabs((double)w[j + 2]) * c[j + 2];
        a3 += fabs((double)w[j + 3]) * c[j + 3];
        a4 += fabs((double)w[j + 4]) * c[j + 4];
        a5 += fabs((double)w[j + 5]) * c[j + 5];
        a6 += fabs((double)w[j + 6]) * c[j + 6];
        a7 += fabs((double)w[j + 7]) * c[j + 7];
    }
    acc[0] = a0, acc[1] = a1, acc[2] = a2, acc[3] = a3;
    acc[4] = a4, acc[5] = a5, acc[6] = a6, acc[7] = a7;
    for (int k = 0; j < len; j++, k++)
        acc[k] += fabs((double)w[j]) * c[j];
}

#ifdef LOD_X86_AVX2
/* lod_sum_span in AVX2: lanes 0-3 in lo, 4-7 in hi, the same products and
 * sums in the same order. */
__attribute__((target("avx2"))) static void
lod_sum_span_avx2(const float *w, const double *c, int64_t len, double *acc)
{
    const __m256d sign = _mm256_set1_pd(-0.0);
    __m256d lo = _mm256_loadu_pd(acc), hi = _mm256_loadu_pd(acc + 4);
    int64_t j = 0;
    for (; j + LOD_LANES <= len; j += LOD_LANES) {
        __builtin_prefetch(w + j + LOD_PREFETCH);
        __m256 x = _mm256_loadu_ps(w + j);
        __m256d xl = _mm256_andnot_pd(sign, _mm256_cvtps_pd(_mm256_castps256_ps128(x)));
        __m256d xh = _mm256_andnot_pd(sign, _mm256_cvtps_pd(_mm256_extractf128_ps(x, 1)));
        lo = _mm256_add_pd(lo, _mm256_mul_pd(xl, _mm256_loadu_pd(c + j)));
        hi = _mm256_add_pd(hi, _mm256_mul_pd(xh, _mm256_loadu_pd(c + j + 4)));
    }
    _mm256_storeu_pd(acc, lo);
    _mm256_storeu_pd(acc + 4, hi);
    for (int k = 0; j < len; j++, k++)
        acc[k] += fabs((double)w[j]) * c[j];
}
#endif

/* #{j : |w_j| > not_counted_j}, on the bit patterns: for non-negative
 * floats the order of the patterns is the order of the values, and a
 * pattern with the sign cleared is below 2^31, so a signed compare does. */
static inline __attribute__((always_inline)) uint64_t
lod_count_span(const float *w, const uint32_t *not_counted, int64_t len)
{
    const uint32_t *u = (const uint32_t *)(const void *)w;
    uint32_t count = 0;
    int64_t j = 0;
    /* Blocks of 64 (four cache lines): one prefetch each, and a fixed-length
     * inner loop the compiler vectorises. */
    for (; j + 64 <= len; j += 64) {
        __builtin_prefetch(u + j + LOD_PREFETCH);
        for (int64_t k = j; k < j + 64; k++)
            count += (int32_t)(u[k] & 0x7fffffffu) > (int32_t)not_counted[k];
    }
    for (; j < len; j++)
        count += (int32_t)(u[j] & 0x7fffffffu) > (int32_t)not_counted[j];
    return count;
}

/* Pass 1: sum of A_ij = |W_ij| * sqrt(s_j) over the task's rows. A NaN or
 * Inf weight makes the sum non-finite (0 * Inf is NaN), which is how the
 * caller finds it without a separate scan. f32 rows are read in place;
 * half rows are widened a span at a time (exactly, so the sums match). */
static inline __attribute__((always_inline)) void
lod_sum_body(void *arg, int64_t begin, int64_t end, const bool avx2)
{
    const lod_job *job = arg;
    float span[SPAN];
    for (int64_t t = begin; t < end; t++) {
        const lod_task *task = &job->tasks[t];
        const owl_tensor *w = &job->weights[task->matrix];
        const double *c = job->norms + job->norm_offset[task->matrix];
        /* f32 rows are read in place, whole; halves a span at a time. */
        bool in_place = w->dtype == OWL_DTYPE_F32;
        int64_t step = in_place ? w->cols : SPAN;
        double acc[LOD_LANES] = {0};
        for (int64_t i = task->r0; i < task->r1; i++) {
            for (int64_t j0 = 0; j0 < w->cols; j0 += step) {
                int64_t len = w->cols - j0 < step ? w->cols - j0 : step;
                const float *x = span;
                if (in_place)
                    x = owl__row_ptr(w, i);
                else
                    owl__load_span_f32(w, i, j0, len, span);
#ifdef LOD_X86_AVX2
                if (avx2) {
                    lod_sum_span_avx2(x, c + j0, len, acc);
                    continue;
                }
#endif
                lod_sum_span(x, c + j0, len, acc);
            }
        }
        double sum = 0.0;
        for (int k = 0; k < LOD_LANES; k++)
            sum += acc[k];
        job->sums[t] = sum;
    }
}

/* Pass 2: entries whose score exceeds the threshold, found by comparing
 * |W_ij| with the column's cut-off (see lod_not_counted). */
static inline __attribute__((always_inline)) void
lod_count_body(void *arg, int64_t begin, int64_t end)
{
    const lod_job *job = arg;
    float span[SPAN];
    for (int64_t t = begin; t < end; t++) {
        const lod_task *task = &job->tasks[t];
        const owl_tensor *w = &job->weights[task->matrix];
        const uint32_t *cut = job->not_counted + job->norm_offset[task->matrix];
        uint64_t count = 0;
        for (int64_t i = task->r0; i < task->r1; i++) {
            if (w->dtype == OWL_DTYPE_F32) {
                count += lod_count_span((const float *)owl__row_ptr(w, i), cut,
                                        w->cols);
                continue;
            }
            for (int64_t j0 = 0; j0 < w->cols; j0 += SPAN) {
                int64_t len = w->cols - j0 < SPAN ? w->cols - j0 : SPAN;
                owl__load_span_f32(w, i, j0, len, span);
                count += lod_count_span(span, cut + j0, len);
            }
        }
        job->counts[t] = count;
    }
}

static void lod_sum_task(void *arg, int64_t begin, int64_t end)
{
    lod_sum_body(arg, begin, end, false);
}
static void lod_count_task(void *arg, int64_t begin, int64_t end)
{
    lod_count_body(arg, begin, end);
}
#ifdef LOD_X86_AVX2
__attribute__((target("avx2"))) static void
lod_sum_task_avx2(void *arg, int64_t begin, int64_t end)
{
    lod_sum_body(arg, begin, end, true);
}
__attribute__((target("avx2"))) static void
lod_count_task_avx2(void *arg, int64_t begin, int64_t end)
{
    lod_count_body(arg, begin, end);
}
#endif

/* Whether a weight of magnitude bits `u` scores above thr in a column of
 * norm c: the score formed exactly as in pass 1 (f64 product). */
static bool lod_above(uint32_t u, double c, double thr)
{
    float w;
    memcpy(&w, &u, sizeof w);
    return (double)w * c > thr;
}

/* The largest magnitude bit pattern (up to +Inf's, 0x7f800000) whose score
 * in a column of norm c is NOT above thr. The score is non-decreasing in
 * |w|, so pass 2 may count |w| > cut-off instead of forming the product,
 * and the count is exactly that of the f64 comparison. thr / c gives the
 * cut-off to within a unit or so; the steps settle it exactly. */
static uint32_t lod_not_counted(double c, double thr)
{
    const uint32_t inf_bits = 0x7f800000u;
    if (!(c > 0) || !(thr < INFINITY))
        return inf_bits; /* no score is above thr */
    double guess = thr / c;
    uint32_t u = inf_bits;
    if (guess < (double)FLT_MAX) {
        float g = (float)guess;
        memcpy(&u, &g, sizeof u);
    }
    /* Down while the pattern below is still counted, then up to the first
     * pattern that is counted; u then is the smallest counted one. */
    while (u > 0 && lod_above(u - 1, c, thr))
        u--;
    while (u <= inf_bits && !lod_above(u, c, thr))
        u++;
    /* thr >= 0, so a zero weight never counts and u >= 1. */
    return u - 1;
}

/* Rows per LOD task of a matrix with `cols` columns (at least one). */
static int64_t lod_rows_per_task(int64_t cols)
{
    return LOD_TASK_ELEMS / cols > 0 ? LOD_TASK_ELEMS / cols : 1;
}

/* Shapes, dtypes and (when the host can read them) statistic values of
 * every (weight, sumsq) pair; adds up the entries and the number of
 * tasks. */
static owl_status lod_validate(owl_context *ctx, const owl_tensor *weights,
                               const owl_tensor *input_sumsq, uint64_t count,
                               bool check_values, uint64_t *entries,
                               size_t *num_tasks, size_t *num_norms)
{
    char wname[48], sname[48];
    *entries = 0;
    *num_tasks = 0;
    *num_norms = 0;
    for (uint64_t k = 0; k < count; k++) {
        const owl_tensor *w = &weights[k], *sq = &input_sumsq[k];
        snprintf(wname, sizeof wname, "weights[%" PRIu64 "]", k);
        snprintf(sname, sizeof sname, "input_sumsq[%" PRIu64 "]", k);
        owl_status s = owl__check_tensor(ctx, w, wname, OWL_DT_FLOATS);
        if (s != OWL_OK)
            return s;
        s = owl__check_tensor(ctx, sq, sname,
                              OWL_DT_BIT(OWL_DTYPE_F32) | OWL_DT_BIT(OWL_DTYPE_F64));
        if (s != OWL_OK)
            return s;
        if (sq->rows != 1 || sq->cols != w->cols)
            return owl__fail(ctx, OWL_ERR_SHAPE,
                             "%s is %" PRId64 "x%" PRId64 ", %s has %" PRId64
                             " columns (%" PRId64 "x%" PRId64 "); expected 1x%" PRId64,
                             sname, sq->rows, sq->cols, wname, w->cols, w->rows,
                             w->cols, w->cols);
        s = owl__check_dense(ctx, sq, sname);
        if (s != OWL_OK)
            return s;
        for (int64_t j = 0; check_values && j < sq->cols; j++) {
            double v = sq->dtype == OWL_DTYPE_F64 ? ((const double *)sq->data)[j]
                                                  : ((const float *)sq->data)[j];
            if (!isfinite(v))
                return owl__fail(ctx, OWL_ERR_NONFINITE, "%s[%" PRId64 "] is %g",
                                 sname, j, v);
            if (v < 0)
                return owl__fail(ctx, OWL_ERR_INVALID_ARGUMENT,
                                 "%s[%" PRId64 "] is %g; a sum of squares is >= 0",
                                 sname, j, v);
        }
        uint64_t cells = (uint64_t)w->rows * (uint64_t)w->cols;
        int64_t rows_per_task = lod_rows_per_task(w->cols);
        if (__builtin_add_overflow(*entries, cells, entries) ||
            __builtin_add_overflow(*num_tasks,
                                   (size_t)((w->rows + rows_per_task - 1) / rows_per_task),
                                   num_tasks) ||
            __builtin_add_overflow(*num_norms, (size_t)w->cols, num_norms))
            return owl__fail(ctx, OWL_ERR_SHAPE,
                             "the %" PRIu64 " matrices hold more entries than can "
                             "be counted",
                             count);
    }
    return OWL_OK;
}

/* The arguments both LOD entry points share (the output aside). */
static owl_status lod_check_args(owl_context *ctx, const owl_tensor *weights,
                                 const owl_tensor *input_sumsq, uint64_t count,
                                 double M, uint64_t *entries,
                                 size_t *num_tasks, size_t *num_norms)
{
    OWL_REQUIRE_PTR(ctx, weights);
    OWL_REQUIRE_PTR(ctx, input_sumsq);
    if (count < 1)
        return owl__fail(ctx, OWL_ERR_INVALID_ARGUMENT,
                         "count is 0; a layer has at least one matrix");
    if (!(M > 0) || !isfinite(M))
        return owl__fail(ctx, OWL_ERR_INVALID_ARGUMENT,
                         "M is %g; it must be finite and > 0", M);
    /* Device statistics are checked by the device (src/cuda_lod.c). */
    return lod_validate(ctx, weights, input_sumsq, count,
                        ctx->backend == OWL_BACKEND_CPU, entries, num_tasks,
                        num_norms);
}

/* The CPU computation over validated arguments. */
static owl_status lod_cpu(owl_context *ctx, const owl_tensor *weights,
                          const owl_tensor *input_sumsq, uint64_t count,
                          double M, uint64_t entries, size_t num_tasks,
                          size_t num_norms, double *ratio)
{
    owl_status s = OWL_OK;
    lod_task *tasks = owl__alloc(ctx, num_tasks, sizeof *tasks, "LOD task table");
    double *norms = owl__alloc(ctx, num_norms, sizeof *norms, "LOD input norms");
    uint32_t *not_counted = owl__alloc(ctx, num_norms, sizeof *not_counted,
                                       "LOD cut-offs");
    size_t *offsets = owl__alloc(ctx, (size_t)count, sizeof *offsets, "LOD offsets");
    double *sums = owl__alloc(ctx, num_tasks, sizeof *sums, "LOD partial sums");
    uint64_t *counts = owl__alloc(ctx, num_tasks, sizeof *counts, "LOD counts");
    if (!tasks || !norms || !not_counted || !offsets || !sums || !counts) {
        s = OWL_ERR_OUT_OF_MEMORY;
        goto done;
    }

    /* The task table: each matrix cut into blocks of whole rows. */
    size_t t = 0, off = 0;
    for (uint64_t k = 0; k < count; k++) {
        const owl_tensor *w = &weights[k], *sq = &input_sumsq[k];
        int64_t rows_per_task = lod_rows_per_task(w->cols);
        for (int64_t r0 = 0; r0 < w->rows; r0 += rows_per_task) {
            tasks[t].matrix = k;
            tasks[t].r0 = r0;
            tasks[t].r1 = r0 + rows_per_task < w->rows ? r0 + rows_per_task : w->rows;
            t++;
        }
        offsets[k] = off;
        for (int64_t j = 0; j < w->cols; j++)
            norms[off + (size_t)j] = sqrt(sq->dtype == OWL_DTYPE_F64
                                              ? ((const double *)sq->data)[j]
                                              : (double)((const float *)sq->data)[j]);
        off += (size_t)w->cols;
    }

    owl_range_fn sum_fn = lod_sum_task, count_fn = lod_count_task;
#ifdef LOD_X86_AVX2
    if (lod_cpu_has_avx2()) {
        sum_fn = lod_sum_task_avx2;
        count_fn = lod_count_task_avx2;
    }
#endif
    lod_job job = {weights, tasks, norms, not_counted, offsets, sums, counts};
    int64_t grain = grain_for((int64_t)num_tasks, (double)entries);
    owl__parallel_for(ctx, (int64_t)num_tasks, grain, sum_fn, &job);
    double total = 0.0;
    for (size_t i = 0; i < num_tasks; i++) {
        if (!isfinite(sums[i])) {
            s = owl__fail(ctx, OWL_ERR_NONFINITE,
                          "weights[%" PRIu64 "] contains NaN or Inf (rows %" PRId64
                          "..%" PRId64 ")",
                          tasks[i].matrix, tasks[i].r0, tasks[i].r1 - 1);
            goto done;
        }
        total += sums[i];
    }
    double threshold = M * (total / (double)entries);
    for (size_t j = 0; j < num_norms; j++)
        not_counted[j] = lod_not_counted(norms[j], threshold);

    owl__parallel_for(ctx, (int64_t)num_tasks, grain, count_fn, &job);
    uint64_t outliers = 0;
    for (size_t i = 0; i < num_tasks; i++)
        outliers += counts[i];
    *ratio = (double)outliers / (double)entries;

done:
    owl__free(counts);
    owl__free(sums);
    owl__free(offsets);
    owl__free(not_counted);
    owl__free(norms);
    owl__free(tasks);
    return s;
}

owl_status owl_lod_compute(owl_context *ctx, const owl_tensor *weights,
                           const owl_tensor *input_sumsq, uint64_t count,
                           double M, double *ratio)
{
    if (ctx == NULL)
        return OWL_ERR_NULL_POINTER;
    owl__clear_error(ctx);
    OWL_REQUIRE_PTR(ctx, weights);
    OWL_REQUIRE_PTR(ctx, input_sumsq);
    OWL_REQUIRE_PTR(ctx, ratio);
    uint64_t entries;
    size_t num_tasks, num_norms;
    owl_status s = lod_check_args(ctx, weights, input_sumsq, count, M,
                                  &entries, &num_tasks, &num_norms);
    if (s != OWL_OK)
        return s;
#ifdef OWL_HAVE_CUDA
    if (ctx->backend == OWL_BACKEND_CUDA)
        return owl__cuda_lod(ctx, weights, input_sumsq, count, M, entries,
                             ratio, NULL);
#endif
    return lod_cpu(ctx, weights, input_sumsq, count, M, entries, num_tasks,
                   num_norms, ratio);
}

owl_status owl_lod_compute_async(owl_context *ctx, const owl_tensor *weights,
                                 const owl_tensor *input_sumsq,
                                 uint64_t count, double M, owl_tensor *ratio)
{
    if (ctx == NULL)
        return OWL_ERR_NULL_POINTER;
    owl__clear_error(ctx);
    uint64_t entries;
    size_t num_tasks, num_norms;
    owl_status s = lod_check_args(ctx, weights, input_sumsq, count, M,
                                  &entries, &num_tasks, &num_norms);
    if (s != OWL_OK)
        return s;
    /* CPU: f32 or f64; CUDA: f32 (checked with the device memory). */
    s = owl__check_tensor(ctx, ratio, "ratio",
                          OWL_DT_BIT(OWL_DTYPE_F32) | OWL_DT_BIT(OWL_DTYPE_F64));
    if (s == OWL_OK)
        s = owl__check_shape(ctx, ratio, "ratio (a 1 x 1 tensor)", 1, 1);
    if (s != OWL_OK)
        return s;
#ifdef OWL_HAVE_CUDA
    if (ctx->backend == OWL_BACKEND_CUDA)
        return owl__cuda_lod(ctx, weights, input_sumsq, count, M, entries,
                             NULL, ratio);
#endif
    double value;
    s = lod_cpu(ctx, weights, input_sumsq, count, M, entries, num_tasks,
                num_norms, &value);
    if (s != OWL_OK)
        return s;
    if (ratio->dtype == OWL_DTYPE_F64)
        *(double *)ratio->data = value;
    else
        *(float *)ratio->data = (float)value;
    return OWL_OK;
}
