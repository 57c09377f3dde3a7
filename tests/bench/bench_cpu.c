/*
 * CPU benchmark of libowlore, run by `meson test --benchmark`. It prints a
 * table and never fails on speed: the exit status is non-zero only when a
 * library call fails. Parts this build of the library does not provide
 * (OWL_ERR_UNSUPPORTED) are reported as skipped.
 *
 * Every figure is the median of repeated runs after a warm-up, and each is
 * set next to a baseline measured in the same run on the same threads,
 * alternating with it run by run so both see the same background load:
 *  - owl_adamw_full on 16.8M parameters, as bytes the update must move per
 *    second, against a threaded memcpy (target: >= 70% of it);
 *  - one owl_adamw_lowrank step on a 4096x4096 bf16 weight at r = 256, no
 *    refresh, against its two GEMMs alone (target: <= 1.5x);
 *  - a subspace refresh, EXACT against RANDOMIZED, on a 2048x5504 gradient
 *    at r = 256, with the gradient energy each basis captures.
 * The environment variable OWL_BENCH_THREADS sets the context's threads
 * (default: all online cores).
 */
#include "bench_util.h"

#include <cblas.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef OWL_BENCH_OPENBLAS
/* Declared by OpenBLAS's cblas.h; repeated so the intent is plain. */
int openblas_get_num_threads(void);
#endif

enum { RESULT_OK, RESULT_SKIPPED, RESULT_FAILED };

typedef struct copy_case {
    void *dst;
    void *src;
    size_t bytes;
    int threads;
} copy_case;

typedef struct bench {
    owl_context *ctx;
    int threads;
    copy_case copy; /* memcpy baseline; NULL buffers when not available */
    double triad_gbs; /* in-place streaming baseline; 0 when not measured */
} bench;

/* Sorts a status into ok / skipped (not in this build) / failed, and says
 * why for the last two. */
static int classify(const bench *b, owl_status s, const char *label,
                    const char *call)
{
    if (s == OWL_OK)
        return RESULT_OK;
    if (s == OWL_ERR_UNSUPPORTED) {
        printf("%-46s skipped: %s is not in this build\n", label, call);
        return RESULT_SKIPPED;
    }
    fprintf(stderr, "%s: %s failed with %s: %s\n", label, call,
            owl_status_name(s), owl_context_last_error(b->ctx));
    return RESULT_FAILED;
}

static void print_row(const char *label, const bench_timing *t,
                      const char *rate, const char *versus)
{
    printf("%-46s %9.2f %9.2f ms %4d  %-13s %s\n", label, 1e3 * t->median,
           1e3 * t->min, t->reps, rate, versus);
}

/* ---- memory bandwidth baseline ------------------------------------------ */

static owl_status copy_once(void *arg)
{
    copy_case *c = arg;
    return bench_parallel_copy(c->dst, c->src, c->bytes, c->threads) == 0
               ? OWL_OK
               : OWL_ERR_INTERNAL;
}

static owl_status triad_once(void *arg)
{
    copy_case *c = arg;
    return bench_parallel_triad(c->dst, c->src, c->bytes / sizeof(float),
                                c->threads) == 0
               ? OWL_OK
               : OWL_ERR_INTERNAL;
}

/* Copied bytes counted as read + write, as the AdamW figures are. */
static double copy_gbs(const copy_case *c, const bench_timing *t)
{
    return 2.0 * (double)c->bytes / t->median / 1e9;
}

/* Allocates the baseline's buffers (kept for the AdamW rows, which rerun
 * it alternately) and prints its own row. */
static int bench_memcpy(bench *b)
{
    const size_t bytes = (size_t)256 << 20;
    char label[64], rate[32];
    snprintf(label, sizeof label, "memcpy 256 MiB, %d threads", b->threads);
    b->copy = (copy_case){bench_alloc(bytes), bench_alloc(bytes), bytes,
                          b->threads};
    if (b->copy.dst == NULL || b->copy.src == NULL) {
        fprintf(stderr, "%s: out of memory\n", label);
        return RESULT_FAILED;
    }
    memset(b->copy.src, 0x5a, bytes);
    bench_timing t;
    if (bench_measure(copy_once, &b->copy, 2, 5, 15, 2.0, &t) != OWL_OK) {
        fprintf(stderr, "%s: could not start threads\n", label);
        return RESULT_FAILED;
    }
    snprintf(rate, sizeof rate, "%.1f GB/s", copy_gbs(&b->copy, &t));
    print_row(label, &t, rate, "(baseline: read + write bytes)");

    /* memcpy's destination is written without being read, an optimizer
     * reads and writes the same arrays: this second baseline has the
     * optimizer's access pattern and is the fairer limit for it. */
    snprintf(label, sizeof label, "in-place triad 2 x 256 MiB, %d threads",
             b->threads);
    bench_fill_uniform(b->copy.dst, bytes / sizeof(float), 3, 1.0f);
    if (bench_measure(triad_once, &b->copy, 2, 5, 15, 2.0, &t) != OWL_OK) {
        fprintf(stderr, "%s: could not start threads\n", label);
        return RESULT_FAILED;
    }
    b->triad_gbs = 3.0 * (double)bytes / t.median / 1e9;
    snprintf(rate, sizeof rate, "%.1f GB/s", b->triad_gbs);
    print_row(label, &t, rate, "(baseline: x = 0.5x + y, 12 B/element)");
    return RESULT_OK;
}

static void free_memcpy(bench *b)
{
    free(b->copy.dst);
    free(b->copy.src);
    b->copy.dst = b->copy.src = NULL;
}

/* ---- full-rank AdamW ----------------------------------------------------- */

typedef struct full_case {
    owl_adamw *adam;
    owl_tensor weight;
    owl_tensor grad;
} full_case;

static owl_status full_step(void *arg)
{
    full_case *c = arg;
    return owl_adamw_full(c->adam, &c->weight, &c->grad, 1e-4);
}

static size_t dtype_bytes(owl_dtype dt)
{
    return dt == OWL_DTYPE_F32 ? 4 : 2;
}

static void fill_tensor(owl_tensor *t, uint64_t seed, float scale)
{
    size_t n = (size_t)(t->rows * t->cols);
    if (t->dtype == OWL_DTYPE_F32)
        bench_fill_uniform(t->data, n, seed, scale);
    else
        bench_fill_uniform_bf16(t->data, n, seed, scale);
}

static int bench_adamw_full(bench *b, owl_dtype data_dtype,
                            owl_dtype moment_dtype, const char *label)
{
    const int64_t rows = 4096, cols = 4096; /* 16.8M parameters */
    const size_t n = (size_t)(rows * cols), ds = dtype_bytes(data_dtype);
    full_case c = {0};
    int result = RESULT_FAILED;
    void *w = bench_alloc(n * ds), *g = bench_alloc(n * ds);
    if (w == NULL || g == NULL) {
        fprintf(stderr, "%s: out of memory\n", label);
        goto done;
    }
    owl_tensor_init(&c.weight, w, data_dtype, rows, cols);
    owl_tensor_init(&c.grad, g, data_dtype, rows, cols);
    fill_tensor(&c.weight, 1, 0.05f);
    fill_tensor(&c.grad, 2, 1e-3f);

    owl_adamw_options o;
    result = classify(b, owl_adamw_options_init(&o, sizeof o), label,
                      "owl_adamw_options_init");
    if (result != RESULT_OK)
        goto done;
    o.moment_dtype = moment_dtype;
    result = classify(b, owl_adamw_create(b->ctx, &o, (uint64_t)rows,
                                          (uint64_t)cols, &c.adam),
                      label, "owl_adamw_create");
    if (result != RESULT_OK)
        goto done;
    /* With the memcpy baseline rerun in alternation when it exists. */
    bool paired = b->copy.dst != NULL;
    bench_timing t, tc;
    result = classify(b,
                      bench_measure_pair(full_step, &c,
                                         paired ? copy_once : NULL, &b->copy,
                                         2, 5, 15, 4.0, &t, &tc),
                      label, "owl_adamw_full");
    if (result != RESULT_OK)
        goto done;

    /* Bytes the update cannot avoid: read W, G, m, v; write W, m, v. */
    size_t per_param = 2 * ds + ds + 4 * dtype_bytes(moment_dtype);
    double gbs = (double)(per_param * n) / t.median / 1e9;
    char rate[32], versus[96];
    snprintf(rate, sizeof rate, "%.1f GB/s", gbs);
    if (paired)
        snprintf(versus, sizeof versus,
                 "%2zu B/param; %3.0f%% of memcpy at %.1f GB/s (target >= 70%%),"
                 " %3.0f%% of the in-place triad",
                 per_param, 100.0 * gbs / copy_gbs(&b->copy, &tc),
                 copy_gbs(&b->copy, &tc), 100.0 * gbs / b->triad_gbs);
    else
        snprintf(versus, sizeof versus, "%2zu B/param", per_param);
    print_row(label, &t, rate, versus);
done:
    owl_adamw_free(c.adam);
    free(w);
    free(g);
    return result;
}

/* ---- low-rank AdamW step against its GEMMs ------------------------------ */

typedef struct lowrank_case {
    owl_adamw *adam;
    owl_galore *proj;
    owl_tensor weight;
    owl_tensor grad;
} lowrank_case;

static owl_status lowrank_step(void *arg)
{
    lowrank_case *c = arg;
    return owl_adamw_lowrank(c->adam, c->proj, &c->weight, &c->grad, 1e-4);
}

typedef struct gemm_case {
    int m, n, r;
    float *g;   /* m x n */
    float *q;   /* r x n */
    float *low; /* m x r */
    float *out; /* m x n */
} gemm_case;

/* The two products a right-projected step needs: R = G Q^T, then R Q. */
static owl_status two_gemms(void *arg)
{
    gemm_case *c = arg;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, c->m, c->r, c->n,
                1.0f, c->g, c->n, c->q, c->n, 0.0f, c->low, c->r);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, c->m, c->n, c->r,
                1.0f, c->low, c->r, c->q, c->n, 0.0f, c->out, c->n);
    return OWL_OK;
}

/* Buffers for the GEMM baseline; returns 0 when out of memory. */
static int gemm_setup(gemm_case *c, int m, int n, int r)
{
    *c = (gemm_case){m, n, r,
                     bench_alloc(sizeof(float) * (size_t)m * (size_t)n),
                     bench_alloc(sizeof(float) * (size_t)r * (size_t)n),
                     bench_alloc(sizeof(float) * (size_t)m * (size_t)r),
                     bench_alloc(sizeof(float) * (size_t)m * (size_t)n)};
    if (!(c->g && c->q && c->low && c->out))
        return 0;
    bench_fill_uniform(c->g, (size_t)m * (size_t)n, 3, 1e-3f);
    bench_fill_uniform(c->q, (size_t)r * (size_t)n, 4, 0.02f);
    return 1;
}

static void gemm_free(gemm_case *c)
{
    free(c->g);
    free(c->q);
    free(c->low);
    free(c->out);
}

static int bench_adamw_lowrank(bench *b)
{
    const int64_t m = 4096, n = 4096, r = 256;
    const char *label = "adamw_lowrank 4096x4096 bf16, r=256, STD";
    lowrank_case c = {0};
    gemm_case gc = {0};
    int result = RESULT_FAILED;
    void *w = bench_alloc((size_t)(m * n) * 2), *g = bench_alloc((size_t)(m * n) * 2);
    if (w == NULL || g == NULL) {
        fprintf(stderr, "%s: out of memory\n", label);
        goto done;
    }
    owl_tensor_init(&c.weight, w, OWL_DTYPE_BF16, m, n);
    owl_tensor_init(&c.grad, g, OWL_DTYPE_BF16, m, n);
    fill_tensor(&c.weight, 5, 0.05f);
    fill_tensor(&c.grad, 6, 1e-3f);

    owl_galore_options go;
    result = classify(b, owl_galore_options_init(&go, sizeof go), label,
                      "owl_galore_options_init");
    if (result != RESULT_OK)
        goto done;
    go.rows = (uint64_t)m;
    go.cols = (uint64_t)n;
    go.rank = (uint64_t)r;
    go.update_gap = 1000000000; /* only the warm-up computes a subspace */
    go.proj_type = OWL_PROJ_STD;
    /* The refresh is not timed here; the randomized one keeps the warm-up
     * short. */
    go.svd_method = OWL_SVD_RANDOMIZED;
    result = classify(b, owl_galore_create(b->ctx, &go, &c.proj), label,
                      "owl_galore_create");
    if (result != RESULT_OK)
        goto done;
    uint64_t lr_rows = 0, lr_cols = 0;
    result = classify(b, owl_galore_lowrank_shape(c.proj, &lr_rows, &lr_cols),
                      label, "owl_galore_lowrank_shape");
    if (result != RESULT_OK)
        goto done;
    owl_adamw_options ao;
    result = classify(b, owl_adamw_options_init(&ao, sizeof ao), label,
                      "owl_adamw_options_init");
    if (result != RESULT_OK)
        goto done;
    result = classify(b, owl_adamw_create(b->ctx, &ao, lr_rows, lr_cols,
                                          &c.adam),
                      label, "owl_adamw_create");
    if (result != RESULT_OK)
        goto done;

    if (!gemm_setup(&gc, (int)m, (int)n, (int)r)) {
        fprintf(stderr, "%s: out of memory for the GEMM baseline\n", label);
        result = RESULT_FAILED;
        goto done;
    }
    bench_timing t, tg;
    result = classify(b,
                      bench_measure_pair(lowrank_step, &c, two_gemms, &gc, 2,
                                         5, 15, 6.0, &t, &tg),
                      label, "owl_adamw_lowrank");
    if (result != RESULT_OK)
        goto done;
    uint64_t refreshes = owl_galore_refresh_count(c.proj);
    if (refreshes != 1) {
        /* Timed steps that recompute the subspace measure something else. */
        fprintf(stderr, "%s: expected 1 subspace computation, saw %llu\n",
                label, (unsigned long long)refreshes);
        result = RESULT_FAILED;
        goto done;
    }
    double gflop = 2.0 * 2.0 * (double)m * (double)n * (double)r / 1e9;
    char rate[32], versus[96];
    snprintf(rate, sizeof rate, "%.0f GFLOP/s", gflop / tg.median);
    print_row("  baseline: its 2 GEMMs alone (f32 sgemm)", &tg, rate, "");
    snprintf(rate, sizeof rate, "%.0f GFLOP/s", gflop / t.median);
    snprintf(versus, sizeof versus, "%.2fx the GEMMs (target <= 1.5x)",
             t.median / tg.median);
    print_row(label, &t, rate, versus);
done:
    owl_adamw_free(c.adam);
    owl_galore_free(c.proj);
    gemm_free(&gc);
    free(w);
    free(g);
    return result;
}

/* ---- subspace refresh: EXACT vs RANDOMIZED ------------------------------ */

/* A gradient with a decaying spectrum, as real gradients have: G = X S Y
 * with Gaussian X (m x m), Y (m x n) and S = diag((i+1)^-0.75). */
static float *make_gradient(int m, int n)
{
    float *g = bench_alloc(sizeof(float) * (size_t)m * (size_t)n);
    float *x = bench_alloc(sizeof(float) * (size_t)m * (size_t)m);
    float *y = bench_alloc(sizeof(float) * (size_t)m * (size_t)n);
    if (g && x && y) {
        bench_fill_normal(x, (size_t)m * (size_t)m, 7);
        bench_fill_normal(y, (size_t)m * (size_t)n, 8);
        for (int i = 0; i < m; i++)
            for (int k = 0; k < m; k++)
                x[(size_t)i * (size_t)m + (size_t)k] *=
                    (float)pow(k + 1.0, -0.75);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, n, m, 1.0f,
                    x, m, y, n, 0.0f, g, n);
    } else {
        free(g);
        g = NULL;
    }
    free(x);
    free(y);
    return g;
}

static double sum_squares(const float *x, size_t n)
{
    double s = 0;
    for (size_t i = 0; i < n; i++)
        s += (double)x[i] * (double)x[i];
    return s;
}

/* ||P^T G||_F^2 / ||G||_F^2 (left basis P, m x r) or ||G Q^T||_F^2 /
 * ||G||_F^2 (right basis Q, r x n): the share of G the subspace keeps. */
static int captured_energy(const owl_galore *proj, const float *g, int m,
                           int n, int r, double *energy)
{
    int left = owl_galore_is_left(proj);
    size_t basis_n = (size_t)r * (size_t)(left ? m : n);
    size_t low_n = (size_t)r * (size_t)(left ? n : m);
    float *basis = bench_alloc(sizeof(float) * basis_n);
    float *low = bench_alloc(sizeof(float) * low_n);
    int ok = basis != NULL && low != NULL;
    if (ok) {
        owl_tensor bt;
        owl_tensor_init(&bt, basis, OWL_DTYPE_F32, left ? m : r, left ? r : n);
        ok = owl_galore_get_basis(proj, &bt) == OWL_OK;
    }
    if (ok) {
        if (left)
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, r, n, m,
                        1.0f, basis, r, g, n, 0.0f, low, n);
        else
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, r, n,
                        1.0f, g, n, basis, n, 0.0f, low, r);
        *energy = sum_squares(low, low_n) /
                  sum_squares(g, (size_t)m * (size_t)n);
    }
    free(basis);
    free(low);
    return ok;
}

typedef struct refresh_case {
    owl_galore *proj;
    owl_tensor grad;
} refresh_case;

static owl_status refresh_once(void *arg)
{
    refresh_case *c = arg;
    return owl_galore_refresh(c->proj, &c->grad);
}

static int refresh_method(bench *b, owl_svd_method method, const float *g,
                          int m, int n, int r, bench_timing *t, double *energy)
{
    const char *label = method == OWL_SVD_EXACT
                            ? "refresh 2048x5504 f32, r=256, EXACT"
                            : "refresh 2048x5504 f32, r=256, RANDOMIZED";
    refresh_case c = {0};
    owl_tensor_init(&c.grad, (void *)g, OWL_DTYPE_F32, m, n);
    owl_galore_options o;
    int result = classify(b, owl_galore_options_init(&o, sizeof o), label,
                          "owl_galore_options_init");
    if (result != RESULT_OK)
        return result;
    o.rows = (uint64_t)m;
    o.cols = (uint64_t)n;
    o.rank = (uint64_t)r;
    o.svd_method = method;
    result = classify(b, owl_galore_create(b->ctx, &o, &c.proj), label,
                      "owl_galore_create");
    if (result != RESULT_OK)
        return result;
    /* The exact SVD takes seconds: one warm-up and at most three runs. */
    owl_status s = method == OWL_SVD_EXACT
                       ? bench_measure(refresh_once, &c, 1, 1, 3, 15.0, t)
                       : bench_measure(refresh_once, &c, 1, 3, 9, 5.0, t);
    result = classify(b, s, label, "owl_galore_refresh");
    if (result == RESULT_OK && !captured_energy(c.proj, g, m, n, r, energy)) {
        fprintf(stderr, "%s: reading the basis failed: %s\n", label,
                owl_context_last_error(b->ctx));
        result = RESULT_FAILED;
    }
    owl_galore_free(c.proj);
    return result;
}

static int bench_refresh(bench *b)
{
    const int m = 2048, n = 5504, r = 256;
    float *g = make_gradient(m, n);
    if (g == NULL) {
        fprintf(stderr, "refresh: out of memory\n");
        return RESULT_FAILED;
    }
    bench_timing te, tr;
    double ee = 0, er = 0;
    int exact = refresh_method(b, OWL_SVD_EXACT, g, m, n, r, &te, &ee);
    int randomized = refresh_method(b, OWL_SVD_RANDOMIZED, g, m, n, r, &tr, &er);
    char rate[32], versus[96];
    if (exact == RESULT_OK) {
        snprintf(rate, sizeof rate, "energy %.4f", ee);
        print_row("refresh 2048x5504 f32, r=256, EXACT", &te, rate, "");
    }
    if (randomized == RESULT_OK) {
        snprintf(rate, sizeof rate, "energy %.4f", er);
        if (exact == RESULT_OK)
            snprintf(versus, sizeof versus,
                     "%.1fx faster, %.2f%% of EXACT's energy",
                     te.median / tr.median, 100.0 * er / ee);
        else
            versus[0] = '\0';
        print_row("refresh 2048x5504 f32, r=256, RANDOMIZED", &tr, rate,
                  versus);
    }
    free(g);
    if (exact == RESULT_FAILED || randomized == RESULT_FAILED)
        return RESULT_FAILED;
    return exact == RESULT_OK && randomized == RESULT_OK ? RESULT_OK
                                                         : RESULT_SKIPPED;
}

/* ---- main ---------------------------------------------------------------- */

static void print_environment(const bench *b)
{
    char cpu[256];
    bench_cpu_model(cpu, sizeof cpu);
    const char *env = getenv("OPENBLAS_NUM_THREADS");
    printf("libowlore %s CPU benchmark\n", owl_version_string());
    printf("cpu: %s\n", cpu);
    printf("threads: context %d; OPENBLAS_NUM_THREADS=%s", b->threads,
           env ? env : "(unset)");
#ifdef OWL_BENCH_OPENBLAS
    printf(" (OpenBLAS uses %d)", openblas_get_num_threads());
#endif
    printf("\n");
    printf("figures: median and fastest of the timed runs after a warm-up; "
           "rates and\npercentages from the median; GB/s count the bytes an "
           "update must move\n(1 GB = 1e9 B), GFLOP/s the flops of the two "
           "GEMMs\n\n");
    printf("%-46s %9s %12s %4s  %-13s %s\n", "case", "median", "min",
           "reps", "rate", "versus baseline");
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    double start = bench_now();
    owl_context_options o;
    owl_context_options_init(&o, sizeof o);
    const char *threads = getenv("OWL_BENCH_THREADS");
    o.num_threads = threads ? atoi(threads) : 0;
    bench b = {0};
    owl_status s = owl_context_create(&b.ctx, &o);
    if (s != OWL_OK) {
        fprintf(stderr, "owl_context_create failed: %s\n", owl_status_name(s));
        return 1;
    }
    b.threads = owl_context_num_threads(b.ctx);
    print_environment(&b);

    int failed = 0;
    failed |= bench_memcpy(&b) == RESULT_FAILED;
    failed |= bench_adamw_full(&b, OWL_DTYPE_F32, OWL_DTYPE_F32,
                               "adamw_full 16.8M, f32 W/G/moments") ==
              RESULT_FAILED;
    failed |= bench_adamw_full(&b, OWL_DTYPE_BF16, OWL_DTYPE_F32,
                               "adamw_full 16.8M, bf16 W/G, f32 moments") ==
              RESULT_FAILED;
    failed |= bench_adamw_full(&b, OWL_DTYPE_BF16, OWL_DTYPE_BF16,
                               "adamw_full 16.8M, bf16 W/G/moments") ==
              RESULT_FAILED;
    free_memcpy(&b);
    failed |= bench_adamw_lowrank(&b) == RESULT_FAILED;
    failed |= bench_refresh(&b) == RESULT_FAILED;

    printf("\ntotal %.1f s%s\n", bench_now() - start,
           failed ? "; some calls FAILED (see stderr)" : "");
    owl_context_free(b.ctx);
    return failed ? 1 : 0;
}
