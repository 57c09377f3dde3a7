/*
 * Agreement of owl_adamw_full and owl_galore + owl_adamw_lowrank with the
 * PyTorch trajectories written by tests/ref/gen_adamw.py: the same initial
 * weight, gradients and per-step lr are replayed through the library, and
 * the weights are compared after every step.
 *
 * Tolerances (all relative to the reference's own scale):
 *  - f32 weights, full rank: max|W - W_ref| <= 1e-5 max|W_ref|, and the
 *    cumulative update W_t - W_0 within 1e-4 of max|W_ref,t - W_0| beyond
 *    the f32 storage rounding of W (see update_max_rel). The library and
 *    torch both compute in f32; an independent f64 version of torch's step
 *    differs from torch.optim.AdamW by 4e-7 of max|W| on these inputs.
 *    Moving eps to the other side of the bias correction changes the
 *    weights by 2e-3 (eps 1e-8) to 2e-2 (eps 1e-6) of max|W|; a 0.1% error
 *    in the step size fails the update check.
 *  - f32 weights, low rank: 2e-5 and 1e-3. The reference uses an f64 SVD;
 *    an f32 SVD alone moves the weights by <= 5e-7 of max|W| and the update
 *    by <= 1e-5. The failures this must catch (no refresh, a sign flip of one
 *    basis vector, eps doubled or misplaced, decay missing) move them by
 *    >= 9e-4.
 *  - bf16 weights: relative L2 error <= 1e-2 (spec) after every step, and
 *    the final cumulative update within 2e-2 in relative L2. Both sides
 *    round the same value to nearest even; they differ only where the f32
 *    and f64 results straddle a rounding tie, one bf16 ulp (~2e-3 of the
 *    final update) each. The failures above move it by >= 7e-2.
 *  - Basis after each refresh (canonical signs, so compared signed) and the
 *    projector P P^T / Q^T Q: max abs difference <= 1e-5; torch's f32 SVD
 *    is within 8e-7 of the f64 one on these well-separated spectra.
 *  - Final moments: max-relative 1e-5 (full rank, the same f32 recurrence
 *    as torch) and 1e-4 (low rank, R = projection of G through an f32
 *    basis).
 */
#include "common/refdata.h"
#include "common/testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TOL_FULL_W 1e-5
#define TOL_FULL_DW 1e-4
#define TOL_LOWRANK_W 2e-5
#define TOL_LOWRANK_DW 1e-3
#define TOL_BF16_L2 1e-2
#define TOL_BF16_DW_L2 2e-2
#define TOL_BASIS 1e-5
#define TOL_FULL_MOMENTS 1e-5
#define TOL_LOWRANK_MOMENTS 1e-4

static refdata *g_ref;

/* The cases gen_adamw.py writes; the file also records how many there are,
 * so a case added on one side only is noticed. */
static const char *k_cases[] = {
    "full_torch_eps1e-8",       "full_torch_eps1e-6",
    "full_galore_wd0.1",        "lr_std_tall",
    "lr_std_wide",              "lr_reverse_std_tall",
    "lr_reverse_std_wide",      "lr_left_tall",
    "lr_left_wide",             "lr_right_tall",
    "lr_right_wide",            "lr_bf16_std_tall",
    "lr_bf16_std_wide",         "lr_std_tall_wd0.05",
    "lr_torch_std_wide_wd0.05", "lr_left_r8_37x300",
    "lr_right_r5_40x300",       "lr_bf16_right_r5_40x300",
    "lr_std_r18_tall",          "lr_left_r18_wide",
    "lr_bf16_std_r18_wide",     "full_torch_1x20000",
};
#define NUM_CASES (sizeof k_cases / sizeof k_cases[0])

static const refarray *field(const char *name, const char *key)
{
    char full[128];
    snprintf(full, sizeof full, "%s/%s", name, key);
    return refdata_need(g_ref, full);
}

static double scalar(const char *name, const char *key)
{
    const refarray *a = field(name, key);
    if (a->count != 1 || a->kind != 0)
        fail_msg("%s/%s is not an f64 scalar", name, key);
    return a->f64[0];
}

/* Field `key` must hold `count` values; returns the f64 data. */
static const double *block(const char *name, const char *key, uint64_t count)
{
    const refarray *a = field(name, key);
    if (a->kind != 0 || a->count != count)
        fail_msg("%s/%s holds %llu values, expected %llu", name, key,
                 (unsigned long long)a->count, (unsigned long long)count);
    return a->f64;
}

/* ---- bf16 storage (the reference values are exactly representable) ---- */

static uint16_t bf16_from_exact(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    if (u & 0xFFFFu)
        fail_msg("reference value %.9g is not a bf16 value", (double)f);
    return (uint16_t)(u >> 16);
}

static float bf16_to_f32(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* A weight or gradient buffer in the case's storage dtype. */
typedef struct {
    owl_dtype dtype;
    size_t count;
    float *f32;
    uint16_t *bf16;
    owl_tensor view;
} buffer;

static void buffer_init(buffer *b, owl_dtype dtype, int64_t rows, int64_t cols)
{
    b->dtype = dtype;
    b->count = (size_t)(rows * cols);
    b->f32 = calloc(b->count, sizeof *b->f32);
    b->bf16 = dtype == OWL_DTYPE_BF16 ? calloc(b->count, sizeof *b->bf16) : NULL;
    assert_non_null(b->f32);
    owl_tensor_init(&b->view, dtype == OWL_DTYPE_BF16 ? (void *)b->bf16 : (void *)b->f32,
                    dtype, rows, cols);
}

static void buffer_set(buffer *b, const double *src)
{
    for (size_t i = 0; i < b->count; i++) {
        b->f32[i] = (float)src[i];
        if (b->bf16)
            b->bf16[i] = bf16_from_exact(b->f32[i]);
    }
}

/* The buffer's current values as f32 (b->f32 after the call). */
static const float *buffer_read(buffer *b)
{
    if (b->bf16)
        for (size_t i = 0; i < b->count; i++)
            b->f32[i] = bf16_to_f32(b->bf16[i]);
    return b->f32;
}

static void buffer_free(buffer *b)
{
    free(b->f32);
    free(b->bf16);
}

/* ---- error measures ----------------------------------------------------- */

/* Error of the cumulative update W_t - W_0 against W_ref,t - W_0, relative
 * to max|W_ref,t - W_0|, after taking off what storing W in f32 may cost on
 * its own: half an ulp of |W| per step, on either side (so `steps` ulps of
 * max|W_ref|). Early updates are a few ulps of W, so without that allowance
 * the check would measure the storage rounding instead of the step. */
static double update_max_rel(const float *w, const double *ref, const double *w0,
                             size_t n, int64_t steps)
{
    double err = 0, scale = 1e-30, wmax = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)w[i] - ref[i]);
        err = (d > err || isnan(d)) ? (isnan(d) ? INFINITY : d) : err;
        scale = fmax(scale, fabs(ref[i] - w0[i]));
        wmax = fmax(wmax, fabs(ref[i]));
    }
    double storage = (double)steps * ldexp(wmax, -23);
    return fmax(0.0, err - storage) / scale;
}

static double update_rel_l2(const float *w, const double *ref, const double *w0,
                            size_t n)
{
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)w[i] - ref[i];
        num += d * d;
        den += (ref[i] - w0[i]) * (ref[i] - w0[i]);
    }
    return sqrt(num / fmax(den, 1e-300));
}

static double max_abs_diff(const float *a, const double *b, size_t n)
{
    double err = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        err = (d > err || isnan(d)) ? (isnan(d) ? INFINITY : d) : err;
    }
    return err;
}

/* max |B^T B - Bref^T Bref| for bases stored as k x dim rows (Q), or the
 * same with columns (P, m x r) when `left`: both give the projector. */
static double projector_diff(const float *b, const double *ref, int64_t rows,
                             int64_t cols, int left)
{
    int64_t dim = left ? rows : cols, k = left ? cols : rows;
    double err = 0;
    for (int64_t i = 0; i < dim; i++)
        for (int64_t j = 0; j < dim; j++) {
            double s = 0, sr = 0;
            for (int64_t l = 0; l < k; l++) {
                int64_t ai = left ? i * cols + l : l * cols + i;
                int64_t aj = left ? j * cols + l : l * cols + j;
                s += (double)b[ai] * b[aj];
                sr += ref[ai] * ref[aj];
            }
            err = fmax(err, isnan(s) ? INFINITY : fabs(s - sr));
        }
    return err;
}

/* ---- one case ----------------------------------------------------------- */

/* Worst errors of a case, printed so the margins to the tolerances show:
 * dw is the update error beyond the storage allowance (what is asserted),
 * dw_final the plain relative error of the final cumulative update. */
typedef struct {
    double w, dw, dw_final, basis, projector, moments;
} worst_errors;

static void check_moments(const char *name, owl_context *ctx, owl_adamw *adam,
                          int64_t rows, int64_t cols, double tol,
                          worst_errors *worst)
{
    static const char *const keys[2] = {"m", "v"};
    float *buf = malloc((size_t)(rows * cols) * sizeof *buf);
    assert_non_null(buf);
    for (int32_t which = 0; which < 2; which++) {
        owl_tensor t;
        owl_tensor_init(&t, buf, OWL_DTYPE_F32, rows, cols);
        assert_owl_ok(ctx, owl_adamw_get_moment(adam, which, &t));
        const double *ref = block(name, keys[which], (uint64_t)(rows * cols));
        double err = test_max_rel_err(buf, ref, (size_t)(rows * cols), 1e-30);
        worst->moments = fmax(worst->moments, err);
        if (!(err <= tol))
            fail_msg("%s: final %s max-rel error %.3g > %.1g", name, keys[which],
                     err, tol);
    }
    free(buf);
}

static void run_case(void **state)
{
    const char *name = *(const char **)*state;
    const int64_t m = (int64_t)scalar(name, "rows");
    const int64_t n = (int64_t)scalar(name, "cols");
    const int64_t steps = (int64_t)scalar(name, "steps");
    const owl_dtype dtype = (owl_dtype)scalar(name, "dtype");
    char rank_key[128];
    snprintf(rank_key, sizeof rank_key, "%s/rank", name);
    const int lowrank = refdata_get(g_ref, rank_key) != NULL;
    const size_t mn = (size_t)(m * n);
    const double *w0 = block(name, "w0", mn);
    const double *grads = block(name, "grads", (uint64_t)steps * mn);
    const double *lrs = block(name, "lr", (uint64_t)steps);
    const double *traj = block(name, "w", (uint64_t)steps * mn);

    owl_context *ctx = test_cpu_context(0);
    owl_adamw_options ao;
    assert_owl_ok(ctx, owl_adamw_options_init(&ao, sizeof ao));
    ao.beta1 = scalar(name, "beta1");
    ao.beta2 = scalar(name, "beta2");
    ao.eps = scalar(name, "eps");
    ao.weight_decay = scalar(name, "weight_decay");
    ao.semantics = (owl_adamw_semantics)scalar(name, "semantics");
    ao.moment_dtype = OWL_DTYPE_F32;
    ao.on_refresh = OWL_MOMENTS_KEEP;
    ao.rounding = OWL_ROUND_NEAREST;

    owl_galore *proj = NULL;
    int left = 0;
    int64_t mrows = m, mcols = n, brows = 0, bcols = 0;
    if (lowrank) {
        owl_galore_options go;
        assert_owl_ok(ctx, owl_galore_options_init(&go, sizeof go));
        go.rows = (uint64_t)m;
        go.cols = (uint64_t)n;
        go.rank = (uint64_t)scalar(name, "rank");
        go.update_gap = (uint64_t)scalar(name, "update_gap");
        go.scale = scalar(name, "scale");
        go.proj_type = (owl_proj_type)scalar(name, "proj_type");
        go.svd_method = OWL_SVD_EXACT;
        assert_owl_ok(ctx, owl_galore_create(ctx, &go, &proj));
        left = (int)scalar(name, "left");
        assert_int_equal(owl_galore_is_left(proj), left);
        uint64_t lr_rows = 0, lr_cols = 0;
        assert_owl_ok(ctx, owl_galore_lowrank_shape(proj, &lr_rows, &lr_cols));
        int64_t r = (int64_t)go.rank;
        assert_int_equal(lr_rows, left ? r : m);
        assert_int_equal(lr_cols, left ? n : r);
        mrows = (int64_t)lr_rows;
        mcols = (int64_t)lr_cols;
        brows = left ? m : r; /* P: m x r, Q: r x n */
        bcols = left ? r : n;
    }
    owl_adamw *adam = NULL;
    assert_owl_ok(ctx, owl_adamw_create(ctx, &ao, (uint64_t)mrows,
                                        (uint64_t)mcols, &adam));

    buffer weight, grad;
    buffer_init(&weight, dtype, m, n);
    buffer_init(&grad, dtype, m, n);
    buffer_set(&weight, w0);

    const refarray *refreshed = lowrank ? field(name, "refreshed") : NULL;
    const double *bases = NULL;
    float *basis = NULL;
    if (lowrank) {
        if (refreshed->kind != 1 || refreshed->count != (uint64_t)steps)
            fail_msg("%s/refreshed must hold %lld flags", name, (long long)steps);
        uint64_t nref = 0;
        for (int64_t t = 0; t < steps; t++)
            nref += refreshed->i64[t] != 0;
        bases = block(name, "bases", nref * (uint64_t)(brows * bcols));
        basis = malloc((size_t)(brows * bcols) * sizeof *basis);
        assert_non_null(basis);
    }

    worst_errors worst = {0, 0, 0, 0, 0, 0};
    uint64_t expected_refreshes = 0;
    for (int64_t t = 0; t < steps; t++) {
        buffer_set(&grad, grads + (size_t)t * mn);
        if (lowrank)
            assert_owl_ok(ctx, owl_adamw_lowrank(adam, proj, &weight.view,
                                                 &grad.view, lrs[t]));
        else
            assert_owl_ok(ctx, owl_adamw_full(adam, &weight.view, &grad.view,
                                              lrs[t]));
        assert_int_equal(owl_adamw_step_count(adam), (uint64_t)(t + 1));
        assert_int_equal(owl_adamw_bias_step(adam), (uint64_t)(t + 1));

        const float *w = buffer_read(&weight);
        const double *ref = traj + (size_t)t * mn;
        if (dtype == OWL_DTYPE_BF16) {
            double l2 = test_rel_l2(w, ref, mn);
            worst.w = fmax(worst.w, l2);
            if (!(l2 <= TOL_BF16_L2))
                fail_msg("%s step %lld: bf16 weight rel-L2 %.3g > %.1g", name,
                         (long long)t + 1, l2, TOL_BF16_L2);
            if (t == steps - 1) {
                double dl2 = update_rel_l2(w, ref, w0, mn);
                worst.dw = worst.dw_final = dl2;
                if (!(dl2 <= TOL_BF16_DW_L2))
                    fail_msg("%s: final bf16 update rel-L2 %.3g > %.1g", name,
                             dl2, TOL_BF16_DW_L2);
            }
        } else {
            double tol_w = lowrank ? TOL_LOWRANK_W : TOL_FULL_W;
            double tol_dw = lowrank ? TOL_LOWRANK_DW : TOL_FULL_DW;
            double ew = test_max_rel_err(w, ref, mn, 1e-30);
            double edw = update_max_rel(w, ref, w0, mn, t + 1);
            worst.w = fmax(worst.w, ew);
            worst.dw = fmax(worst.dw, edw);
            if (t == steps - 1)
                worst.dw_final = update_max_rel(w, ref, w0, mn, 0);
            if (!(ew <= tol_w))
                fail_msg("%s step %lld: weight max-rel error %.3g > %.1g", name,
                         (long long)t + 1, ew, tol_w);
            if (!(edw <= tol_dw))
                fail_msg("%s step %lld: update max-rel error %.3g > %.1g", name,
                         (long long)t + 1, edw, tol_dw);
        }

        if (!lowrank)
            continue;
        /* Refreshes before updates 1, T+1, 2T+1, ... as the reference did. */
        int did_refresh = refreshed->i64[t] != 0;
        expected_refreshes += (uint64_t)did_refresh;
        uint64_t count = owl_galore_refresh_count(proj);
        if (count != expected_refreshes)
            fail_msg("%s step %lld: %llu subspace computations, reference %llu",
                     name, (long long)t + 1, (unsigned long long)count,
                     (unsigned long long)expected_refreshes);
        if (!did_refresh)
            continue;
        owl_tensor bt;
        owl_tensor_init(&bt, basis, OWL_DTYPE_F32, brows, bcols);
        assert_owl_ok(ctx, owl_galore_get_basis(proj, &bt));
        const double *bref = bases + (expected_refreshes - 1) * (size_t)(brows * bcols);
        size_t bn = (size_t)(brows * bcols);
        double ep = projector_diff(basis, bref, brows, bcols, left);
        double eb = max_abs_diff(basis, bref, bn);
        worst.projector = fmax(worst.projector, ep);
        worst.basis = fmax(worst.basis, eb);
        if (!(ep <= TOL_BASIS))
            fail_msg("%s step %lld: projector differs from torch's by %.3g > %.1g",
                     name, (long long)t + 1, ep, TOL_BASIS);
        if (!(eb <= TOL_BASIS))
            fail_msg("%s step %lld: the subspace agrees (%.3g) but the basis "
                     "differs by %.3g > %.1g: canonical signs?",
                     name, (long long)t + 1, ep, eb, TOL_BASIS);
    }
    check_moments(name, ctx, adam, mrows, mcols,
                  lowrank ? TOL_LOWRANK_MOMENTS : TOL_FULL_MOMENTS, &worst);

    printf("# %-26s weights %.2e  update %.2e (final %.2e)  moments %.2e",
           name, worst.w, worst.dw, worst.dw_final, worst.moments);
    if (lowrank)
        printf("  projector %.2e  basis %.2e", worst.projector, worst.basis);
    printf("\n");

    free(basis);
    buffer_free(&weight);
    buffer_free(&grad);
    owl_adamw_free(adam);
    owl_galore_free(proj);
    owl_context_free(ctx);
}

static void test_case_list_matches_reference(void **state)
{
    (void)state;
    const refarray *count = refdata_need(g_ref, "cases/count");
    assert_int_equal(count->kind, 1);
    assert_int_equal(count->i64[0], (int64_t)NUM_CASES);
}

int main(int argc, char **argv)
{
    const char *path = test_arg(argc, argv, 1, "adamw.ref");
    g_ref = refdata_load(path);
    if (!g_ref) {
        fprintf(stderr, "cannot load the PyTorch reference %s\n", path);
        return 1;
    }
    struct CMUnitTest tests[NUM_CASES + 1];
    tests[0] = (struct CMUnitTest)cmocka_unit_test(test_case_list_matches_reference);
    for (size_t i = 0; i < NUM_CASES; i++) {
        tests[i + 1] = (struct CMUnitTest)cmocka_unit_test_prestate(
            run_case, (void *)&k_cases[i]);
        tests[i + 1].name = k_cases[i];
    }
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    refdata_free(g_ref);
    return failed;
}
