/* GaLore projector and AdamW on the CPU backend.
 *
 * References, all independent of the library: the spec's hand-checked
 * vectors G1-G5 (galore-and-htsr.md section 6), LAPACK's dgesvd in double
 * (Eckart-Young residuals, subspaces), and closed-form AdamW recurrences
 * evaluated here in double. */
#include "common/testutil.h"

#include <lapacke.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- small helpers ---------------------------------------------------- */

#define EXPECT_FAIL(ctx, call, status)                                        \
    do {                                                                      \
        assert_owl_status(ctx, call, status);                                 \
        assert_true(strlen(owl_context_last_error(ctx)) > 0);                 \
    } while (0)

static void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n, size);
    assert_non_null(p);
    return p;
}

static owl_tensor tensor(void *data, owl_dtype dt, int64_t rows, int64_t cols)
{
    owl_tensor t;
    owl_tensor_init(&t, data, dt, rows, cols);
    return t;
}

static owl_galore_options proj_opts(uint64_t m, uint64_t n, uint64_t r,
                                    uint64_t gap, double scale,
                                    owl_proj_type type, owl_svd_method method)
{
    owl_galore_options o;
    assert_int_equal(owl_galore_options_init(&o, sizeof o), OWL_OK);
    o.rows = m;
    o.cols = n;
    o.rank = r;
    o.update_gap = gap;
    o.scale = scale;
    o.proj_type = type;
    o.svd_method = method;
    return o;
}

static owl_galore *make_proj(owl_context *ctx, uint64_t m, uint64_t n,
                             uint64_t r, uint64_t gap, double scale,
                             owl_proj_type type, owl_svd_method method)
{
    owl_galore_options o = proj_opts(m, n, r, gap, scale, type, method);
    owl_galore *p = NULL;
    assert_owl_ok(ctx, owl_galore_create(ctx, &o, &p));
    return p;
}

static owl_adamw *make_adam(owl_context *ctx, const owl_adamw_options *o,
                            uint64_t rows, uint64_t cols)
{
    owl_adamw *a = NULL;
    assert_owl_ok(ctx, owl_adamw_create(ctx, o, rows, cols, &a));
    return a;
}

static owl_adamw_options adam_opts(void)
{
    owl_adamw_options o;
    assert_int_equal(owl_adamw_options_init(&o, sizeof o), OWL_OK);
    return o;
}

/* Round to nearest even bf16, written independently of the library. */
static uint16_t ref_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    uint32_t lsb = (u >> 16) & 1u;
    return (uint16_t)((u + 0x7fffu + lsb) >> 16);
}

static float bf16_value(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* IEEE half to float (the test's own decoder). */
static float f16_value(uint16_t h)
{
    int sign = h >> 15, exp = (h >> 10) & 0x1f, man = h & 0x3ff;
    double mag = exp == 0 ? ldexp(man, -24) : ldexp(1024 + man, exp - 25);
    return (float)(sign ? -mag : mag);
}

/* Float to half for values that are exactly representable normals or 0. */
static uint16_t f16_exact(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    if ((u & 0x7fffffffu) == 0)
        return (uint16_t)(u >> 16);
    uint32_t exp = ((u >> 23) & 0xff) - 127 + 15;
    return (uint16_t)(((u >> 16) & 0x8000u) | (exp << 10) | ((u >> 13) & 0x3ffu));
}

static double frob(const double *x, size_t n)
{
    double s = 0;
    for (size_t i = 0; i < n; i++)
        s += x[i] * x[i];
    return sqrt(s);
}

/* Thin SVD in double: u (m x k), s (k), vt (k x n), all row-major. */
static void dsvd(const float *g, int m, int n, double *u, double *s,
                 double *vt)
{
    int k = m < n ? m : n;
    double *a = xcalloc((size_t)(m * n), sizeof *a);
    double *superb = xcalloc((size_t)k, sizeof *superb);
    for (int i = 0; i < m * n; i++)
        a[i] = g[i];
    assert_int_equal(LAPACKE_dgesvd(LAPACK_ROW_MAJOR, 'S', 'S', m, n, a, n, s,
                                    u, k, vt, n, superb),
                     0);
    free(a);
    free(superb);
}

/* Top-r singular vectors of one side as rows (r x d), canonical signs:
 * each vector's largest-magnitude entry (first on ties) is positive. */
static void ref_basis(const float *g, int m, int n, int r, int left,
                      double *basis)
{
    int k = m < n ? m : n;
    double *u = xcalloc((size_t)(m * k), sizeof *u);
    double *s = xcalloc((size_t)k, sizeof *s);
    double *vt = xcalloc((size_t)(k * n), sizeof *vt);
    dsvd(g, m, n, u, s, vt);
    int d = left ? m : n;
    for (int j = 0; j < r; j++) {
        double *row = basis + (size_t)j * d;
        for (int i = 0; i < d; i++)
            row[i] = left ? u[i * k + j] : vt[j * n + i];
        int best = 0;
        for (int i = 1; i < d; i++)
            if (fabs(row[i]) > fabs(row[best]))
                best = i;
        if (row[best] < 0)
            for (int i = 0; i < d; i++)
                row[i] = -row[i];
    }
    free(u);
    free(s);
    free(vt);
}

/* Random orthonormal columns: q is rows x cols (rows >= cols), row-major. */
static void random_orthonormal(double *q, int rows, int cols, uint64_t seed)
{
    float *x = xcalloc((size_t)(rows * cols), sizeof *x);
    double *tau = xcalloc((size_t)cols, sizeof *tau);
    test_fill_normal(x, (size_t)(rows * cols), seed);
    for (int i = 0; i < rows * cols; i++)
        q[i] = x[i];
    assert_int_equal(LAPACKE_dgeqrf(LAPACK_ROW_MAJOR, rows, cols, q, cols, tau),
                     0);
    assert_int_equal(
        LAPACKE_dorgqr(LAPACK_ROW_MAJOR, rows, cols, cols, q, cols, tau), 0);
    free(x);
    free(tau);
}

/* g (m x n) = U diag(s) V^T with random orthonormal U, V. */
static void spectrum_matrix(float *g, int m, int n, const double *s,
                            uint64_t seed)
{
    int k = m < n ? m : n;
    double *u = xcalloc((size_t)(m * k), sizeof *u);
    double *v = xcalloc((size_t)(n * k), sizeof *v);
    random_orthonormal(u, m, k, seed);
    random_orthonormal(v, n, k, seed + 1000);
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
            double acc = 0;
            for (int l = 0; l < k; l++)
                acc += u[i * k + l] * s[l] * v[j * k + l];
            g[i * n + j] = (float)acc;
        }
    free(u);
    free(v);
}

/* ---- options and create ----------------------------------------------- */

static void test_option_defaults(void **state)
{
    (void)state;
    owl_galore_options g;
    assert_int_equal(owl_galore_options_init(&g, sizeof g), OWL_OK);
    assert_int_equal(g.struct_size, sizeof g);
    assert_int_equal(g.rank, 128);
    assert_int_equal(g.update_gap, 200);
    assert_true(g.scale == 1.0);
    assert_int_equal(g.proj_type, OWL_PROJ_STD);
    assert_int_equal(g.svd_method, OWL_SVD_EXACT);
    assert_int_equal(g.oversample, 8);
    assert_int_equal(g.power_iters, 2);
    assert_int_equal(g.seed, 0);

    owl_adamw_options a;
    assert_int_equal(owl_adamw_options_init(&a, sizeof a), OWL_OK);
    assert_int_equal(a.struct_size, sizeof a);
    assert_true(a.beta1 == 0.9 && a.beta2 == 0.999 && a.eps == 1e-6);
    assert_true(a.weight_decay == 0.0);
    assert_int_equal(a.semantics, OWL_ADAMW_GALORE);
    assert_int_equal(a.moment_dtype, OWL_DTYPE_F32);
    assert_int_equal(a.on_refresh, OWL_MOMENTS_KEEP);
    assert_int_equal(a.rounding, OWL_ROUND_NEAREST);
    assert_int_equal(a.seed, 0);

    assert_int_equal(owl_galore_options_init(NULL, sizeof g),
                     OWL_ERR_NULL_POINTER);
    assert_int_equal(owl_adamw_options_init(&a, 0), OWL_ERR_STRUCT_SIZE);
}

static void expect_bad_galore(owl_context *ctx, const owl_galore_options *o,
                              owl_status status)
{
    owl_galore *p = (owl_galore *)0x1;
    EXPECT_FAIL(ctx, owl_galore_create(ctx, o, &p), status);
    assert_null(p);
}

static void test_galore_create_validation(void **state)
{
    (void)state;
    owl_context *ctx = test_cpu_context(1);
    owl_galore_options good = proj_opts(8, 6, 2, 10, 0.25, OWL_PROJ_STD,
                                        OWL_SVD_EXACT);
    owl_galore_options o;

    o = good; o.rank = 0; expect_bad_galore(ctx, &o, OWL_ERR_INVALID_ARGUMENT);
    o = good; o.rank = 7; /* > min(8, 6): an error, never a clamp */
    expect_bad_galore(ctx, &o, OWL_ERR_INVALID_ARGUMENT);
    assert_non_null(strstr(owl_context_last_error(ctx), "7"));
    o = good; o.rows = 0; expect_bad_galore(ctx, &o, OWL_ERR_INVALID_ARGUMENT);
    o = good; o.cols = 0; expect_bad_galore(ctx, &o, OWL_ERR_INVALID_ARGUMENT);
    o = good; o.update_gap = 0;
    expect_bad_galore(ctx, &o, OWL_ERR_INVALID_ARGUMENT);
    o = good; o.scale = 0; expect_bad_galore(ctx, &o, OWL_ERR_INVALID_ARGUMENT);
    o = good; o.scale = -1; expect_bad_galore(ctx, &o, OWL_ERR_INVALID_ARGUMENT);
    o = good; o.scale = NAN; expect_bad_galore(ctx, &o, OWL_ERR_INVALID_ARGUMENT);
    o = good; o.scale = INFINITY;
    expect_bad_galore(ctx, &o, OWL_ERR_INVALID_ARGUMENT);
    o = good; o.proj_type = 4;
    expect_bad_galore(ctx, &o, OWL_ERR_INVALID_ARGUMENT);
    o = good; o.proj_type = -1;
    expect_bad_galore(ctx, &o, OWL_ERR_INVALID_ARGUMENT);
    o = good; o.svd_method = 2;
    expect_bad_galore(ctx, &o, OWL_ERR_INVALID_ARGUMENT);
    o = good; o.struct_size = 0;
    expect_bad_galore(ctx, &o, OWL_ERR_STRUCT_SIZE);

    owl_galore *p = (owl_galore *)0x1;
    assert_int_equal(owl_galore_create(NULL, &good, &p), OWL_ERR_NULL_POINTER);
    EXPECT_FAIL(ctx, owl_galore_create(ctx, NULL, &p), OWL_ERR_NULL_POINTER);
    assert_null(p);
    EXPECT_FAIL(ctx, owl_galore_create(ctx, &good, NULL), OWL_ERR_NULL_POINTER);

    /* G1: reverse_std on a 64x256 gradient with r = 128 must fail. */
    o = proj_opts(64, 256, 128, 200, 1.0, OWL_PROJ_REVERSE_STD, OWL_SVD_EXACT);
    expect_bad_galore(ctx, &o, OWL_ERR_INVALID_ARGUMENT);
    o.proj_type = OWL_PROJ_STD;
    expect_bad_galore(ctx, &o, OWL_ERR_INVALID_ARGUMENT);
    o.rank = 64; /* = min(m, n): fine, and STD projects the smaller side */
    assert_owl_ok(ctx, owl_galore_create(ctx, &o, &p));
    uint64_t rows = 0, cols = 0;
    assert_owl_ok(ctx, owl_galore_lowrank_shape(p, &rows, &cols));
    assert_int_equal(rows, 64);
    assert_int_equal(cols, 256);
    assert_int_equal(owl_galore_is_left(p), 1);
    assert_int_equal(owl_galore_refresh_count(p), 0);
    EXPECT_FAIL(ctx, owl_galore_lowrank_shape(p, NULL, &cols),
                OWL_ERR_NULL_POINTER);
    owl_galore_free(p);
    owl_galore_free(NULL);
    assert_int_equal(owl_galore_lowrank_shape(NULL, &rows, &cols),
                     OWL_ERR_NULL_POINTER);
    assert_int_equal(owl_galore_is_left(NULL), 0);
    owl_context_free(ctx);
}

static void expect_bad_adam(owl_context *ctx, const owl_adamw_options *o,
                            uint64_t rows, uint64_t cols, owl_status status)
{
    owl_adamw *a = (owl_adamw *)0x1;
    EXPECT_FAIL(ctx, owl_adamw_create(ctx, o, rows, cols, &a), status);
    assert_null(a);
}

static void test_adamw_create_validation(void **state)
{
    (void)state;
    owl_context *ctx = test_cpu_context(1);
    const owl_adamw_options good = adam_opts();
    owl_adamw_options o;
    const owl_status bad = OWL_ERR_INVALID_ARGUMENT;

    o = good; o.beta1 = 1.0; expect_bad_adam(ctx, &o, 4, 4, bad);
    o = good; o.beta1 = -0.1; expect_bad_adam(ctx, &o, 4, 4, bad);
    o = good; o.beta1 = NAN; expect_bad_adam(ctx, &o, 4, 4, bad);
    o = good; o.beta2 = 1.0; expect_bad_adam(ctx, &o, 4, 4, bad);
    o = good; o.beta2 = INFINITY; expect_bad_adam(ctx, &o, 4, 4, bad);
    o = good; o.eps = 0; expect_bad_adam(ctx, &o, 4, 4, bad);
    o = good; o.eps = -1e-8; expect_bad_adam(ctx, &o, 4, 4, bad);
    o = good; o.eps = INFINITY; expect_bad_adam(ctx, &o, 4, 4, bad);
    o = good; o.weight_decay = -0.1; expect_bad_adam(ctx, &o, 4, 4, bad);
    o = good; o.weight_decay = NAN; expect_bad_adam(ctx, &o, 4, 4, bad);
    o = good; o.semantics = 2; expect_bad_adam(ctx, &o, 4, 4, bad);
    o = good; o.on_refresh = 2; expect_bad_adam(ctx, &o, 4, 4, bad);
    o = good; o.rounding = 2; expect_bad_adam(ctx, &o, 4, 4, bad);
    o = good; o.moment_dtype = OWL_DTYPE_F16;
    expect_bad_adam(ctx, &o, 4, 4, OWL_ERR_DTYPE);
    o = good; o.moment_dtype = 9;
    expect_bad_adam(ctx, &o, 4, 4, OWL_ERR_DTYPE);
    expect_bad_adam(ctx, &good, 0, 4, bad);
    expect_bad_adam(ctx, &good, 4, 0, bad);
    o = good; o.struct_size = 1; expect_bad_adam(ctx, &o, 4, 4,
                                                 OWL_ERR_STRUCT_SIZE);

    owl_adamw *a = (owl_adamw *)0x1;
    assert_int_equal(owl_adamw_create(NULL, &good, 4, 4, &a),
                     OWL_ERR_NULL_POINTER);
    EXPECT_FAIL(ctx, owl_adamw_create(ctx, NULL, 4, 4, &a),
                OWL_ERR_NULL_POINTER);
    assert_null(a);
    EXPECT_FAIL(ctx, owl_adamw_create(ctx, &good, 4, 4, NULL),
                OWL_ERR_NULL_POINTER);
    /* Edge values are accepted: beta 0, zero decay. */
    o = good; o.beta1 = 0; o.beta2 = 0;
    a = make_adam(ctx, &o, 1, 1);
    assert_int_equal(owl_adamw_step_count(a), 0);
    assert_int_equal(owl_adamw_bias_step(a), 0);
    owl_adamw_free(a);
    owl_adamw_free(NULL);
    assert_int_equal(owl_adamw_step_count(NULL), 0);
    assert_int_equal(owl_adamw_reset(NULL), OWL_ERR_NULL_POINTER);
    owl_context_free(ctx);
}

/* ---- G1: shapes and Eckart-Young --------------------------------------- */

static int expected_left(owl_proj_type t, int m, int n)
{
    switch (t) {
    case OWL_PROJ_STD: return m < n;
    case OWL_PROJ_REVERSE_STD: return m >= n;
    case OWL_PROJ_LEFT: return 1;
    default: return 0;
    }
}

static void eckart_young_case(owl_context *ctx, int m, int n, int r,
                              owl_proj_type type, owl_svd_method method,
                              uint64_t seed)
{
    const double alpha = 0.5;
    int k = m < n ? m : n;
    float *g = xcalloc((size_t)(m * n), sizeof *g);
    float *back = xcalloc((size_t)(m * n), sizeof *back);
    test_fill_normal(g, (size_t)(m * n), seed);

    owl_galore *p = make_proj(ctx, (uint64_t)m, (uint64_t)n, (uint64_t)r, 200,
                              alpha, type, method);
    int left = expected_left(type, m, n);
    assert_int_equal(owl_galore_is_left(p), left);
    uint64_t lr_rows, lr_cols;
    assert_owl_ok(ctx, owl_galore_lowrank_shape(p, &lr_rows, &lr_cols));
    assert_int_equal(lr_rows, left ? (uint64_t)r : (uint64_t)m);
    assert_int_equal(lr_cols, left ? (uint64_t)n : (uint64_t)r);

    float *low = xcalloc(lr_rows * lr_cols, sizeof *low);
    owl_tensor tg = tensor(g, OWL_DTYPE_F32, m, n);
    owl_tensor tl = tensor(low, OWL_DTYPE_F32, (int64_t)lr_rows,
                           (int64_t)lr_cols);
    owl_tensor tb = tensor(back, OWL_DTYPE_F32, m, n);
    int32_t refreshed = 0;
    assert_owl_ok(ctx, owl_galore_project(p, 0, &tg, &tl, &refreshed));
    assert_int_equal(refreshed, 1);
    assert_int_equal(owl_galore_refresh_count(p), 1);
    assert_owl_ok(ctx, owl_galore_project_back(p, &tl, &tb));

    double *u = xcalloc((size_t)(m * k), sizeof *u);
    double *s = xcalloc((size_t)k, sizeof *s);
    double *vt = xcalloc((size_t)(k * n), sizeof *vt);
    dsvd(g, m, n, u, s, vt);
    double tail = 0, total = 0;
    for (int i = 0; i < k; i++) {
        total += s[i] * s[i];
        if (i >= r)
            tail += s[i] * s[i];
    }
    double *resid = xcalloc((size_t)(m * n), sizeof *resid);
    for (int i = 0; i < m * n; i++)
        resid[i] = (double)g[i] - (double)back[i] / alpha;
    double got = frob(resid, (size_t)(m * n));
    double want = sqrt(tail);
    if (fabs(got - want) > 1e-5 * sqrt(total))
        fail_msg("%dx%d r=%d type %d method %d: ||G - back/alpha|| = %.9g, "
                 "Eckart-Young says %.9g",
                 m, n, r, (int)type, (int)method, got, want);
    free(resid);
    free(u);
    free(s);
    free(vt);
    free(low);
    free(g);
    free(back);
    owl_galore_free(p);
}

static void test_g1_eckart_young(void **state)
{
    (void)state;
    owl_context *ctx = test_cpu_context(2);
    static const int shapes[][2] = {{6, 4}, {4, 6}, {5, 5}};
    uint64_t seed = 11;
    for (int sh = 0; sh < 3; sh++) {
        int m = shapes[sh][0], n = shapes[sh][1];
        int ranks[2] = {2, m < n ? m : n};
        for (int ri = 0; ri < 2; ri++)
            for (owl_proj_type t = OWL_PROJ_STD; t <= OWL_PROJ_RIGHT; t++)
                for (owl_svd_method meth = OWL_SVD_EXACT;
                     meth <= OWL_SVD_RANDOMIZED; meth++)
                    eckart_young_case(ctx, m, n, ranks[ri], t, meth, seed++);
        /* r > min(m, n) is refused for every type. */
        for (owl_proj_type t = OWL_PROJ_STD; t <= OWL_PROJ_RIGHT; t++) {
            owl_galore_options o = proj_opts((uint64_t)m, (uint64_t)n,
                                             (uint64_t)(ranks[1] + 1), 200,
                                             1.0, t, OWL_SVD_EXACT);
            expect_bad_galore(ctx, &o, OWL_ERR_INVALID_ARGUMENT);
        }
    }
    owl_context_free(ctx);
}

/* ---- G2 and G3: first step and stale moments -------------------------- */

static const float G2_GRAD[6] = {3, 0, 0, 1, 0, 0};
static const float G3_GRAD[6] = {0, 0, 0, 2, 0, 0};

static void assert_close(double got, double want, double rel, const char *what)
{
    if (!(fabs(got - want) <= rel * fabs(want)))
        fail_msg("%s = %.10g, expected %.10g", what, got, want);
}

static void run_g2_g3(owl_context *ctx, owl_refresh_moments policy,
                      float w[6], float m[3], float v[3], owl_adamw **out_adam)
{
    /* lr 0.01, alpha 0.25, betas (0.9, 0.999), eps 1e-6, r = 1, T = 1. */
    owl_galore *p = make_proj(ctx, 3, 2, 1, 1, 0.25, OWL_PROJ_STD,
                              OWL_SVD_EXACT);
    owl_adamw_options o = adam_opts();
    o.on_refresh = policy;
    owl_adamw *a = make_adam(ctx, &o, 3, 1);
    memset(w, 0, 6 * sizeof *w);
    owl_tensor tw = tensor(w, OWL_DTYPE_F32, 3, 2);
    owl_tensor tg = tensor((void *)G2_GRAD, OWL_DTYPE_F32, 3, 2);
    assert_owl_ok(ctx, owl_adamw_lowrank(a, p, &tw, &tg, 0.01));
    /* G2: right projection with Q = [1, 0]. */
    assert_int_equal(owl_galore_is_left(p), 0);
    float q[2];
    owl_tensor tq = tensor(q, OWL_DTYPE_F32, 1, 2);
    assert_owl_ok(ctx, owl_galore_get_basis(p, &tq));
    assert_true(q[0] == 1.0f && q[1] == 0.0f);
    double closed = -0.01 * 0.25 * 3 * sqrt(0.001) / (3 * sqrt(0.001) + 1e-6);
    assert_close(closed, -0.0024999736, 1e-7, "G2 closed form");
    assert_close(w[0], -0.0024999736, 1e-6, "G2 dW[0,0]");
    for (int i = 1; i < 6; i++)
        if (w[i] != 0.0f)
            fail_msg("G2: dW[%d,%d] = %g, expected exactly 0", i / 2, i % 2,
                     (double)w[i]);

    tg.data = (void *)G3_GRAD;
    assert_owl_ok(ctx, owl_adamw_lowrank(a, p, &tw, &tg, 0.01));
    assert_int_equal(owl_galore_refresh_count(p), 2);
    assert_owl_ok(ctx, owl_galore_get_basis(p, &tq));
    /* G3: Q = +-[0, 1]; the canonical-sign rule picks +. */
    assert_true(q[0] == 0.0f && q[1] == 1.0f);
    owl_tensor tm = tensor(m, OWL_DTYPE_F32, 3, 1);
    assert_owl_ok(ctx, owl_adamw_get_moment(a, 0, &tm));
    tm.data = v;
    assert_owl_ok(ctx, owl_adamw_get_moment(a, 1, &tm));
    owl_galore_free(p);
    *out_adam = a; /* the caller frees it with its context */
}

static void test_g2_g3_stale_moments(void **state)
{
    (void)state;
    owl_context *ctx = test_cpu_context(1);
    float w[6], m[3], v[3];
    owl_adamw *a;
    run_g2_g3(ctx, OWL_MOMENTS_KEEP, w, m, v, &a);
    assert_close(m[0], 0.27, 1e-6, "G3 m[0]");
    assert_close(m[1], 0.2, 1e-6, "G3 m[1] (canonical sign: +)");
    assert_true(m[2] == 0.0f);
    assert_close(v[0], 0.008991, 1e-6, "G3 v[0]");
    assert_close(v[1], 0.004, 1e-6, "G3 v[1]");
    assert_true(v[2] == 0.0f);
    double eta2 = 0.01 * sqrt(1 - 0.999 * 0.999) / (1 - 0.9 * 0.9);
    assert_close(eta2, 0.0023531673, 1e-7, "G3 eta_2");
    assert_close(w[3], -0.0018603126, 2e-6, "G3 W[1,1]");
    /* Q = +[0,1] moves W[0,1] by -eta*alpha*m0/(sqrt(v0)+eps): negative. */
    assert_close(w[1], -0.001675128, 2e-6, "G3 W[0,1] (stale momentum)");
    assert_close(w[0], -0.0024999736, 1e-6, "G3 W[0,0]");
    assert_true(w[2] == 0.0f && w[4] == 0.0f && w[5] == 0.0f);
    assert_int_equal(owl_adamw_step_count(a), 2);
    assert_int_equal(owl_adamw_bias_step(a), 2);
    owl_adamw_free(a);
    owl_context_free(ctx);
}

static void test_g3_reset_variant_differs(void **state)
{
    (void)state;
    owl_context *ctx = test_cpu_context(1);
    float w[6], m[3], v[3];
    owl_adamw *a;
    run_g2_g3(ctx, OWL_MOMENTS_RESET, w, m, v, &a);
    /* The moments were zeroed at the refresh: only G3's projection. */
    assert_true(m[0] == 0.0f && v[0] == 0.0f);
    assert_true(fabs(m[0] - 0.27) > 0.1);
    assert_close(m[1], 0.2, 1e-6, "reset m[1]");
    assert_close(v[1], 0.004, 1e-6, "reset v[1]");
    assert_int_equal(owl_adamw_bias_step(a), 1);
    assert_int_equal(owl_adamw_step_count(a), 2);
    /* No stale momentum: W[0,1] never moves. */
    assert_true(w[1] == 0.0f);
    assert_true(fabs(w[1] - -0.001675128) > 1e-4);
    /* W[1,1] is a first step (t = 1) from m = 0.2, v = 0.004. */
    double eta1 = 0.01 * sqrt(0.001) / 0.1;
    double want = -eta1 * 0.25 * 0.2 / (sqrt(0.004) + 1e-6);
    assert_close(w[3], want, 2e-6, "reset W[1,1]");
    assert_true(fabs(w[3] - -0.0018603126) > 1e-5);
    owl_adamw_free(a);
    owl_context_free(ctx);
}

/* ---- G4: refresh timing ------------------------------------------------ */

static void test_g4_refresh_timing(void **state)
{
    (void)state;
    owl_context *ctx = test_cpu_context(2);
    const int m = 12, n = 7, r = 3;
    owl_galore *p = make_proj(ctx, m, n, r, 3, 1.0, OWL_PROJ_STD,
                              OWL_SVD_EXACT);
    owl_galore *q = make_proj(ctx, m, n, r, 3, 1.0, OWL_PROJ_STD,
                              OWL_SVD_EXACT);
    owl_adamw_options o = adam_opts();
    owl_adamw *a = make_adam(ctx, &o, m, r);
    float g[12 * 7], w[12 * 7] = {0}, low[12 * 3];
    float basis_before[3 * 7], basis_after[3 * 7];
    owl_tensor tg = tensor(g, OWL_DTYPE_F32, m, n);
    owl_tensor tw = tensor(w, OWL_DTYPE_F32, m, n);
    owl_tensor tl = tensor(low, OWL_DTYPE_F32, m, r);
    owl_tensor tb0 = tensor(basis_before, OWL_DTYPE_F32, r, n);
    owl_tensor tb1 = tensor(basis_after, OWL_DTYPE_F32, r, n);
    static const uint64_t want_count[7] = {1, 1, 1, 2, 2, 2, 3};
    for (uint64_t step = 0; step < 7; step++) {
        test_fill_normal(g, (size_t)(m * n), 100 + step);
        /* The projector alone, driven by iter = updates so far. */
        int32_t refreshed = -1;
        if (step > 0)
            assert_owl_ok(ctx, owl_galore_get_basis(q, &tb0));
        assert_owl_ok(ctx, owl_galore_project(q, step, &tg, &tl, &refreshed));
        assert_int_equal(refreshed, step % 3 == 0);
        assert_int_equal(owl_galore_refresh_count(q), want_count[step]);
        assert_owl_ok(ctx, owl_galore_get_basis(q, &tb1));
        if (step > 0) {
            int same = memcmp(basis_before, basis_after, sizeof basis_after) == 0;
            assert_int_equal(same, step % 3 != 0);
        }
        /* The fused step: refreshes before updates 1, 4 and 7. */
        assert_owl_ok(ctx, owl_adamw_lowrank(a, p, &tw, &tg, 1e-3));
        assert_int_equal(owl_galore_refresh_count(p), want_count[step]);
        assert_int_equal(owl_adamw_step_count(a), step + 1);
    }
    /* invalidate() and refresh() force a recompute off schedule. */
    assert_owl_ok(ctx, owl_galore_invalidate(q));
    int32_t refreshed = 0;
    assert_owl_ok(ctx, owl_galore_project(q, 8, &tg, &tl, &refreshed));
    assert_int_equal(refreshed, 1);
    assert_int_equal(owl_galore_refresh_count(q), 4);
    assert_owl_ok(ctx, owl_galore_project(q, 10, &tg, &tl, &refreshed));
    assert_int_equal(refreshed, 0);
    assert_owl_ok(ctx, owl_galore_refresh(q, &tg));
    assert_int_equal(owl_galore_refresh_count(q), 5);
    assert_int_equal(owl_galore_invalidate(NULL), OWL_ERR_NULL_POINTER);
    owl_adamw_free(a);
    owl_galore_free(p);
    owl_galore_free(q);
    owl_context_free(ctx);
}

/* ---- G5: weight decay --------------------------------------------------- */

static void test_g5_weight_decay(void **state)
{
    (void)state;
    owl_context *ctx = test_cpu_context(1);
    const double lr = 0.01, alpha = 0.25, wd = 0.1, b1 = 0.9, b2 = 0.999,
                 eps = 1e-6;
    owl_galore *p = make_proj(ctx, 3, 2, 1, 200, alpha, OWL_PROJ_STD,
                              OWL_SVD_EXACT);
    owl_adamw_options o = adam_opts();
    o.weight_decay = wd;
    owl_adamw *a = make_adam(ctx, &o, 3, 1);
    float w[6] = {0.5f, -0.25f, 0.125f, 1.0f, -1.0f, 0.75f};
    double ref[6];
    for (int i = 0; i < 6; i++)
        ref[i] = w[i];
    owl_tensor tw = tensor(w, OWL_DTYPE_F32, 3, 2);
    owl_tensor tg = tensor((void *)G2_GRAD, OWL_DTYPE_F32, 3, 2);
    double mm[3] = {0}, vv[3] = {0};
    for (int t = 1; t <= 3; t++) {
        assert_owl_ok(ctx, owl_adamw_lowrank(a, p, &tw, &tg, lr));
        /* Q = [1, 0]: R = G[:, 0]; back(N) puts N in column 0. */
        double eta = lr * sqrt(1 - pow(b2, t)) / (1 - pow(b1, t));
        for (int i = 0; i < 3; i++) {
            double rr = G2_GRAD[i * 2];
            mm[i] = b1 * mm[i] + (1 - b1) * rr;
            vv[i] = b2 * vv[i] + (1 - b2) * rr * rr;
            double nn = mm[i] / (sqrt(vv[i]) + eps);
            ref[i * 2] = (ref[i * 2] - eta * alpha * nn) * (1 - lr * wd);
            ref[i * 2 + 1] = ref[i * 2 + 1] * (1 - lr * wd);
        }
        for (int i = 0; i < 6; i++)
            if (fabs(w[i] - ref[i]) > 2e-7 * fabs(ref[i]) + 1e-9)
                fail_msg("G5 step %d: W[%d] = %.9g, closed form %.9g", t, i,
                         (double)w[i], ref[i]);
    }
    owl_adamw_free(a);
    owl_galore_free(p);
    owl_context_free(ctx);
}

/* ---- the low-rank step against a double-precision recurrence ---------- */

typedef struct {
    int m, n, r, gap, left, torch;
    double lr, alpha, wd, b1, b2, eps;
} lowrank_case;

static void check_lowrank_against_double(const lowrank_case *c,
                                         owl_proj_type type, owl_dtype wdt)
{
    owl_context *ctx = test_cpu_context(2);
    const int m = c->m, n = c->n, r = c->r;
    const int d = c->left ? m : n;
    owl_galore *p = make_proj(ctx, (uint64_t)m, (uint64_t)n, (uint64_t)r,
                              (uint64_t)c->gap, c->alpha, type, OWL_SVD_EXACT);
    assert_int_equal(owl_galore_is_left(p), c->left);
    int lr_rows = c->left ? r : m, lr_cols = c->left ? n : r;
    owl_adamw_options o = adam_opts();
    o.semantics = c->torch ? OWL_ADAMW_TORCH : OWL_ADAMW_GALORE;
    o.weight_decay = c->wd;
    owl_adamw *a = make_adam(ctx, &o, (uint64_t)lr_rows, (uint64_t)lr_cols);

    size_t mn = (size_t)(m * n), lrn = (size_t)(lr_rows * lr_cols);
    float *g = xcalloc(mn, sizeof *g);
    float *w32 = xcalloc(mn, sizeof *w32);
    uint16_t *w16 = xcalloc(mn, sizeof *w16);
    double *w = xcalloc(mn, sizeof *w), *w0 = xcalloc(mn, sizeof *w0);
    double *basis = xcalloc((size_t)(r * d), sizeof *basis);
    double *mom = xcalloc(lrn, sizeof *mom), *vel = xcalloc(lrn, sizeof *vel);
    double *rr = xcalloc(lrn, sizeof *rr), *dw = xcalloc(mn, sizeof *dw);
    test_fill_uniform(w32, mn, 5);
    for (size_t i = 0; i < mn; i++) {
        if (wdt == OWL_DTYPE_BF16) { /* start from bf16-exact values */
            w16[i] = ref_bf16(w32[i]);
            w32[i] = bf16_value(w16[i]);
        } else if (wdt == OWL_DTYPE_F16) { /* multiples of 2^-10 */
            w32[i] = roundf(w32[i] * 1024.0f) / 1024.0f;
            w16[i] = f16_exact(w32[i]);
        }
        w[i] = w0[i] = w32[i];
    }
    owl_tensor tw = wdt == OWL_DTYPE_F32 ? tensor(w32, wdt, m, n)
                                         : tensor(w16, wdt, m, n);
    owl_tensor tg = tensor(g, OWL_DTYPE_F32, m, n);
    int k = m < n ? m : n;
    double *spec = xcalloc((size_t)k, sizeof *spec);
    for (int i = 0; i < k; i++)
        spec[i] = ldexp(1.0, -i); /* well separated: 1, 1/2, 1/4, ... */

    for (int t = 1; t <= 5; t++) {
        spectrum_matrix(g, m, n, spec, 40 + (uint64_t)t);
        assert_owl_ok(ctx, owl_adamw_lowrank(a, p, &tw, &tg, c->lr));
        if ((t - 1) % c->gap == 0)
            ref_basis(g, m, n, r, c->left, basis);
        /* R = P^T G or G Q^T */
        for (int i = 0; i < lr_rows; i++)
            for (int j = 0; j < lr_cols; j++) {
                double acc = 0;
                if (c->left)
                    for (int l = 0; l < m; l++)
                        acc += basis[i * m + l] * g[l * n + j];
                else
                    for (int l = 0; l < n; l++)
                        acc += g[i * n + l] * basis[j * n + l];
                rr[i * lr_cols + j] = acc;
            }
        double bc1 = 1 - pow(c->b1, t), bc2 = 1 - pow(c->b2, t);
        for (size_t i = 0; i < lrn; i++) {
            mom[i] = c->b1 * mom[i] + (1 - c->b1) * rr[i];
            vel[i] = c->b2 * vel[i] + (1 - c->b2) * rr[i] * rr[i];
            rr[i] = c->torch ? mom[i] / (sqrt(vel[i]) / sqrt(bc2) + c->eps)
                             : mom[i] / (sqrt(vel[i]) + c->eps);
        }
        /* back(N) */
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++) {
                double acc = 0;
                for (int l = 0; l < r; l++)
                    acc += c->left ? basis[l * m + i] * rr[l * n + j]
                                   : rr[i * r + l] * basis[l * n + j];
                dw[i * n + j] = c->alpha * acc;
            }
        for (size_t i = 0; i < mn; i++) {
            if (c->torch) {
                w[i] *= 1 - c->lr * c->wd;
                w[i] -= c->lr / bc1 * dw[i];
            } else {
                w[i] -= c->lr * sqrt(bc2) / bc1 * dw[i];
                w[i] -= c->lr * c->wd * w[i];
            }
        }
    }
    /* Compare the total change W - W0 relative to its size. */
    double scale = 0, err = 0;
    for (size_t i = 0; i < mn; i++) {
        double got = wdt == OWL_DTYPE_BF16  ? bf16_value(w16[i])
                     : wdt == OWL_DTYPE_F16 ? f16_value(w16[i])
                                            : w32[i];
        scale = fmax(scale, fabs(w[i] - w0[i]));
        err = fmax(err, fabs((got - w0[i]) - (w[i] - w0[i])));
    }
    /* Half storage: each of 5 writes rounds by at most half an ulp
     * (|W| < 2, so 2^-8 for bf16, 2^-11 for f16). */
    double tol = wdt == OWL_DTYPE_BF16  ? 5 * ldexp(1.0, -8)
                 : wdt == OWL_DTYPE_F16 ? 5 * ldexp(1.0, -11) + 1e-4 * scale
                                        : 1e-4 * scale;
    if (!(err <= tol))
        fail_msg("%dx%d r=%d %s %s: max |dW - ref| = %.3g (|dW| up to %.3g)",
                 m, n, r, c->left ? "left" : "right",
                 c->torch ? "TORCH" : "GALORE", err, scale);
    free(spec);
    free(g);
    free(w32);
    free(w16);
    free(w);
    free(w0);
    free(basis);
    free(mom);
    free(vel);
    free(rr);
    free(dw);
    owl_adamw_free(a);
    owl_galore_free(p);
    owl_context_free(ctx);
}

static void test_lowrank_matches_double_recurrence(void **state)
{
    (void)state;
    for (int torch = 0; torch <= 1; torch++) {
        lowrank_case c = {.m = 9, .n = 6, .r = 2, .gap = 2, .left = 0,
                          .torch = torch, .lr = 0.01, .alpha = 0.25,
                          .wd = 0.05, .b1 = 0.9, .b2 = 0.999, .eps = 1e-6};
        check_lowrank_against_double(&c, OWL_PROJ_STD, OWL_DTYPE_F32);
        c.m = 6; c.n = 9; c.left = 1; /* STD on a wide matrix: left */
        check_lowrank_against_double(&c, OWL_PROJ_STD, OWL_DTYPE_F32);
        c.left = 0; /* forced right on the wide matrix */
        check_lowrank_against_double(&c, OWL_PROJ_RIGHT, OWL_DTYPE_F32);
        c.left = 1; c.alpha = 2.0; /* half weights go through row blocks */
        check_lowrank_against_double(&c, OWL_PROJ_STD, OWL_DTYPE_BF16);
        check_lowrank_against_double(&c, OWL_PROJ_STD, OWL_DTYPE_F16);
    }
}

/* ---- subspaces: canonical signs, span, randomized energy --------------- */

static void check_basis_properties(owl_context *ctx, owl_galore *p, int m,
                                   int n, int r, const float *g)
{
    int left = owl_galore_is_left(p);
    int rows = left ? m : r, cols = left ? r : n, d = left ? m : n;
    float *b = xcalloc((size_t)(rows * cols), sizeof *b);
    owl_tensor tb = tensor(b, OWL_DTYPE_F32, rows, cols);
    assert_owl_ok(ctx, owl_galore_get_basis(p, &tb));
    /* vector j, element i */
#define VEC(j, i) (left ? b[(i) * r + (j)] : b[(j) * n + (i)])
    for (int j = 0; j < r; j++) {
        int best = 0;
        for (int i = 1; i < d; i++)
            if (fabsf(VEC(j, i)) > fabsf(VEC(j, best)))
                best = i;
        if (!(VEC(j, best) > 0))
            fail_msg("vector %d: largest-magnitude entry %d is %g", j, best,
                     (double)VEC(j, best));
        for (int l = 0; l <= j; l++) { /* orthonormal */
            double dot = 0;
            for (int i = 0; i < d; i++)
                dot += (double)VEC(j, i) * VEC(l, i);
            if (fabs(dot - (j == l)) > 1e-5)
                fail_msg("<v%d, v%d> = %g", j, l, dot);
        }
    }
    /* The same subspace as dgesvd's: compare projectors B^T B. */
    if (g != NULL) {
        double *ref = xcalloc((size_t)(r * d), sizeof *ref);
        ref_basis(g, m, n, r, left, ref);
        double err = 0;
        for (int i = 0; i < d; i++)
            for (int l = 0; l < d; l++) {
                double a = 0, e = 0;
                for (int j = 0; j < r; j++) {
                    a += (double)VEC(j, i) * VEC(j, l);
                    e += ref[j * d + i] * ref[j * d + l];
                }
                err = fmax(err, fabs(a - e));
            }
        if (err > 1e-4)
            fail_msg("P P^T differs from dgesvd's by %g", err);
        free(ref);
    }
#undef VEC
    free(b);
}

static void test_canonical_signs_and_span(void **state)
{
    (void)state;
    owl_context *ctx = test_cpu_context(2);
    static const int shapes[][3] = {{40, 30, 5}, {30, 40, 5}, {17, 17, 4}};
    for (int s = 0; s < 3; s++) {
        int m = shapes[s][0], n = shapes[s][1], r = shapes[s][2];
        int k = m < n ? m : n;
        float *g = xcalloc((size_t)(m * n), sizeof *g);
        double *spec = xcalloc((size_t)k, sizeof *spec);
        for (int i = 0; i < k; i++) /* a clear gap after the top r */
            spec[i] = i < r ? 10.0 - i : 1.0 / (1 + i);
        spectrum_matrix(g, m, n, spec, 77 + (uint64_t)s);
        owl_tensor tg = tensor(g, OWL_DTYPE_F32, m, n);
        for (owl_proj_type t = OWL_PROJ_LEFT; t <= OWL_PROJ_RIGHT; t++) {
            for (owl_svd_method meth = OWL_SVD_EXACT;
                 meth <= OWL_SVD_RANDOMIZED; meth++) {
                owl_galore *p = make_proj(ctx, (uint64_t)m, (uint64_t)n,
                                          (uint64_t)r, 200, 1.0, t, meth);
                assert_owl_ok(ctx, owl_galore_refresh(p, &tg));
                check_basis_properties(ctx, p, m, n, r, g);
                owl_galore_free(p);
            }
            /* Signs on a plain random matrix too (no subspace check). */
            float *x = xcalloc((size_t)(m * n), sizeof *x);
            test_fill_uniform(x, (size_t)(m * n), 900 + (uint64_t)s);
            owl_tensor tx = tensor(x, OWL_DTYPE_F32, m, n);
            owl_galore *p = make_proj(ctx, (uint64_t)m, (uint64_t)n,
                                      (uint64_t)r, 200, 1.0, t, OWL_SVD_EXACT);
            assert_owl_ok(ctx, owl_galore_refresh(p, &tx));
            check_basis_properties(ctx, p, m, n, r, NULL);
            owl_galore_free(p);
            free(x);
        }
        free(g);
        free(spec);
    }
    owl_context_free(ctx);
}

static double captured_energy(owl_context *ctx, owl_galore *p, const float *g,
                              int m, int n, int r)
{
    int left = owl_galore_is_left(p);
    int rows = left ? r : m, cols = left ? n : r;
    float *low = xcalloc((size_t)(rows * cols), sizeof *low);
    owl_tensor tg = tensor((void *)g, OWL_DTYPE_F32, m, n);
    owl_tensor tl = tensor(low, OWL_DTYPE_F32, rows, cols);
    assert_owl_ok(ctx, owl_galore_project(p, 0, &tg, &tl, NULL));
    double num = 0, den = 0;
    for (int i = 0; i < rows * cols; i++)
        num += (double)low[i] * low[i];
    for (int i = 0; i < m * n; i++)
        den += (double)g[i] * g[i];
    free(low);
    return num / den;
}

static void test_randomized_energy_and_determinism(void **state)
{
    (void)state;
    owl_context *ctx = test_cpu_context(2);
    const int m = 300, n = 200, r = 16;
    float *g = xcalloc((size_t)(m * n), sizeof *g);
    double spec[200];
    for (int i = 0; i < n; i++)
        spec[i] = exp(-i / 12.0); /* decaying, no gap at r */
    spectrum_matrix(g, m, n, spec, 2024);
    double best = 0, total = 0;
    for (int i = 0; i < n; i++) {
        total += spec[i] * spec[i];
        if (i < r)
            best += spec[i] * spec[i];
    }
    for (owl_proj_type t = OWL_PROJ_LEFT; t <= OWL_PROJ_RIGHT; t++) {
        owl_galore *ex = make_proj(ctx, m, n, r, 200, 1.0, t, OWL_SVD_EXACT);
        owl_galore *rnd = make_proj(ctx, m, n, r, 200, 1.0, t,
                                    OWL_SVD_RANDOMIZED);
        double e_exact = captured_energy(ctx, ex, g, m, n, r);
        double e_rand = captured_energy(ctx, rnd, g, m, n, r);
        /* EXACT reaches the optimum; RANDOMIZED is within 1% of it. */
        assert_true(fabs(e_exact - best / total) < 1e-4);
        if (!(e_rand <= e_exact * (1 + 1e-5) && e_rand >= 0.99 * e_exact))
            fail_msg("randomized captures %.6f, exact %.6f", e_rand, e_exact);
        owl_galore_free(ex);
        owl_galore_free(rnd);
    }
    /* A fixed seed gives the same basis byte for byte (any thread count);
     * another seed gives another sketch. */
    float *b[3];
    owl_context *ctxs[3] = {ctx, test_cpu_context(1), ctx};
    owl_tensor tg = tensor(g, OWL_DTYPE_F32, m, n);
    for (int i = 0; i < 3; i++) {
        owl_galore_options o = proj_opts(m, n, r, 200, 1.0, OWL_PROJ_STD,
                                         OWL_SVD_RANDOMIZED);
        o.seed = i == 2 ? 99 : 7;
        owl_galore *p = NULL;
        assert_owl_ok(ctxs[i], owl_galore_create(ctxs[i], &o, &p));
        assert_owl_ok(ctxs[i], owl_galore_refresh(p, &tg));
        b[i] = xcalloc((size_t)(r * n), sizeof(float));
        owl_tensor tb = tensor(b[i], OWL_DTYPE_F32, r, n);
        assert_owl_ok(ctxs[i], owl_galore_get_basis(p, &tb));
        owl_galore_free(p);
    }
    assert_memory_equal(b[0], b[1], (size_t)(r * n) * sizeof(float));
    assert_memory_not_equal(b[0], b[2], (size_t)(r * n) * sizeof(float));
    for (int i = 0; i < 3; i++)
        free(b[i]);
    owl_context_free(ctxs[1]);
    free(g);
    owl_context_free(ctx);
}

/* ---- projections with half and strided tensors ------------------------- */

static void test_projection_dtypes_and_strides(void **state)
{
    (void)state;
    owl_context *ctx = test_cpu_context(2);
    const int m = 70, n = 33, r = 4, stride = 41;
    float *g = xcalloc((size_t)(m * n), sizeof *g);
    uint16_t *gh = xcalloc((size_t)(m * stride), sizeof *gh);
    test_fill_normal(g, (size_t)(m * n), 3);
    for (int i = 0; i < m; i++) /* bf16-exact values, strided bf16 copy */
        for (int j = 0; j < n; j++) {
            gh[i * stride + j] = ref_bf16(g[i * n + j]);
            g[i * n + j] = bf16_value(gh[i * stride + j]);
        }
    owl_tensor tg = tensor(g, OWL_DTYPE_F32, m, n);
    owl_tensor th = tensor(gh, OWL_DTYPE_BF16, m, n);
    th.row_stride = stride;
    for (owl_proj_type t = OWL_PROJ_LEFT; t <= OWL_PROJ_RIGHT; t++) {
        for (owl_svd_method meth = OWL_SVD_EXACT; meth <= OWL_SVD_RANDOMIZED;
             meth++) {
            owl_galore *p = make_proj(ctx, m, n, r, 200, 0.5, t, meth);
            owl_galore *q = make_proj(ctx, m, n, r, 200, 0.5, t, meth);
            int left = owl_galore_is_left(p);
            int rows = left ? r : m, cols = left ? n : r;
            float *lo1 = xcalloc((size_t)(rows * cols), sizeof *lo1);
            float *lo2 = xcalloc((size_t)(rows * (cols + 3)), sizeof *lo2);
            owl_tensor t1 = tensor(lo1, OWL_DTYPE_F32, rows, cols);
            owl_tensor t2 = tensor(lo2, OWL_DTYPE_F32, rows, cols);
            t2.row_stride = cols + 3;
            /* A bf16 strided grad projects exactly like its f32 values. */
            assert_owl_ok(ctx, owl_galore_project(p, 0, &tg, &t1, NULL));
            assert_owl_ok(ctx, owl_galore_project(q, 0, &th, &t2, NULL));
            for (int i = 0; i < rows; i++)
                assert_memory_equal(lo1 + i * cols, lo2 + i * (cols + 3),
                                    (size_t)cols * sizeof(float));
            /* project_back into f32, bf16 and f16 outputs. */
            float *b32 = xcalloc((size_t)(m * n), sizeof *b32);
            uint16_t *b16 = xcalloc((size_t)(m * (n + 5)), sizeof *b16);
            owl_tensor tb = tensor(b32, OWL_DTYPE_F32, m, n);
            assert_owl_ok(ctx, owl_galore_project_back(p, &t1, &tb));
            owl_tensor th16 = tensor(b16, OWL_DTYPE_BF16, m, n);
            th16.row_stride = n + 5;
            assert_owl_ok(ctx, owl_galore_project_back(p, &t2, &th16));
            for (int i = 0; i < m; i++)
                for (int j = 0; j < n; j++) {
                    float want = b32[i * n + j];
                    float got = bf16_value(b16[i * (n + 5) + j]);
                    /* rounded to nearest: within half a bf16 ulp (2^-9) */
                    if (fabsf(got - want) > ldexpf(fabsf(want), -8) + 1e-30f)
                        fail_msg("bf16 back[%d,%d] = %g, f32 %g", i, j,
                                 (double)got, (double)want);
                }
            free(b32);
            free(b16);
            free(lo1);
            free(lo2);
            owl_galore_free(p);
            owl_galore_free(q);
        }
    }
    free(g);
    free(gh);
    owl_context_free(ctx);
}

/* ---- full-rank AdamW ----------------------------------------------------- */

static void full_reference(int torch, double lr, double wd, double b1,
                           double b2, double eps, int t, const float *g,
                           double *w, double *mo, double *ve, size_t count)
{
    double bc1 = 1 - pow(b1, t), bc2 = 1 - pow(b2, t);
    for (size_t i = 0; i < count; i++) {
        if (torch)
            w[i] *= 1 - lr * wd;
        mo[i] = b1 * mo[i] + (1 - b1) * g[i];
        ve[i] = b2 * ve[i] + (1 - b2) * (double)g[i] * g[i];
        if (torch) {
            w[i] -= lr / bc1 * mo[i] / (sqrt(ve[i]) / sqrt(bc2) + eps);
        } else {
            w[i] -= lr * sqrt(bc2) / bc1 * mo[i] / (sqrt(ve[i]) + eps);
            w[i] -= lr * wd * w[i];
        }
    }
}

static void test_full_rank_closed_form(void **state)
{
    (void)state;
    owl_context *ctx = test_cpu_context(3);
    const int m = 37, n = 29, stride = 31;
    const size_t mn = (size_t)(m * n);
    for (int torch = 0; torch <= 1; torch++) {
        owl_adamw_options o = adam_opts();
        o.semantics = torch ? OWL_ADAMW_TORCH : OWL_ADAMW_GALORE;
        o.beta1 = 0.8;
        o.beta2 = 0.99;
        o.eps = 1e-3; /* large enough that its placement shows */
        o.weight_decay = 0.02;
        owl_adamw *a = make_adam(ctx, &o, m, n);
        float *w = xcalloc((size_t)(m * stride), sizeof *w);
        float *g = xcalloc(mn, sizeof *g);
        double *rw = xcalloc(mn, sizeof *rw), *rm = xcalloc(mn, sizeof *rm),
               *rv = xcalloc(mn, sizeof *rv);
        float *tmp = xcalloc(mn, sizeof *tmp);
        test_fill_uniform(tmp, mn, 8);
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++)
                rw[i * n + j] = w[i * stride + j] = tmp[i * n + j];
        owl_tensor tw = tensor(w, OWL_DTYPE_F32, m, n);
        tw.row_stride = stride; /* strided weight, dense grad */
        owl_tensor tg = tensor(g, OWL_DTYPE_F32, m, n);
        for (int t = 1; t <= 3; t++) {
            test_fill_normal(g, mn, 20 + (uint64_t)t);
            for (size_t i = 0; i < mn; i++)
                g[i] *= (float)(i % 7) * 0.01f; /* tiny and zero gradients */
            double lr = 0.01 * t;
            assert_owl_ok(ctx, owl_adamw_full(a, &tw, &tg, lr));
            full_reference(torch, lr, o.weight_decay, o.beta1, o.beta2, o.eps,
                           t, g, rw, rm, rv, mn);
            double err = 0;
            for (int i = 0; i < m; i++)
                for (int j = 0; j < n; j++)
                    err = fmax(err, fabs(w[i * stride + j] - rw[i * n + j]));
            if (err > 2e-6)
                fail_msg("%s step %d: max |W - closed form| = %g",
                         torch ? "TORCH" : "GALORE", t, err);
        }
        owl_tensor tm = tensor(tmp, OWL_DTYPE_F32, m, n);
        assert_owl_ok(ctx, owl_adamw_get_moment(a, 1, &tm));
        for (size_t i = 0; i < mn; i++)
            assert_true(fabs(tmp[i] - rv[i]) <= 1e-6 * rv[i] + 1e-12);
        /* reset zeroes the moments and t, not the step count */
        assert_owl_ok(ctx, owl_adamw_reset(a));
        assert_int_equal(owl_adamw_bias_step(a), 0);
        assert_int_equal(owl_adamw_step_count(a), 3);
        assert_owl_ok(ctx, owl_adamw_get_moment(a, 0, &tm));
        for (size_t i = 0; i < mn; i++)
            assert_true(tmp[i] == 0.0f);
        free(w);
        free(g);
        free(rw);
        free(rm);
        free(rv);
        free(tmp);
        owl_adamw_free(a);
    }
    owl_context_free(ctx);
}

/* Half weights compute in f32 and round once on the store, so a bf16 (f16)
 * run equals the f32 run rounded to nearest, bit for bit (one step). */
static void test_half_weights_equal_rounded_f32(void **state)
{
    (void)state;
    owl_context *ctx = test_cpu_context(2);
    const int m = 45, n = 300;
    const size_t mn = (size_t)(m * n);
    float *w32 = xcalloc(mn, sizeof *w32), *g = xcalloc(mn, sizeof *g);
    uint16_t *wh = xcalloc(mn, sizeof *wh), *gh = xcalloc(mn, sizeof *gh);
    test_fill_uniform(w32, mn, 31);
    test_fill_normal(g, mn, 32);
    for (size_t i = 0; i < mn; i++) {
        wh[i] = ref_bf16(w32[i]);
        w32[i] = bf16_value(wh[i]);
        gh[i] = ref_bf16(g[i]);
        g[i] = bf16_value(gh[i]);
    }
    for (int torch = 0; torch <= 1; torch++) {
        owl_adamw_options o = adam_opts();
        o.semantics = torch ? OWL_ADAMW_TORCH : OWL_ADAMW_GALORE;
        o.weight_decay = 0.1;
        owl_adamw *a32 = make_adam(ctx, &o, m, n);
        owl_adamw *a16 = make_adam(ctx, &o, m, n);
        float *x = xcalloc(mn, sizeof *x);
        uint16_t *xh = xcalloc(mn, sizeof *xh);
        memcpy(x, w32, mn * sizeof *x);
        memcpy(xh, wh, mn * sizeof *xh);
        owl_tensor tx = tensor(x, OWL_DTYPE_F32, m, n);
        owl_tensor txh = tensor(xh, OWL_DTYPE_BF16, m, n);
        owl_tensor tg = tensor(g, OWL_DTYPE_F32, m, n);
        owl_tensor tgh = tensor(gh, OWL_DTYPE_BF16, m, n);
        assert_owl_ok(ctx, owl_adamw_full(a32, &tx, &tg, 0.01));
        assert_owl_ok(ctx, owl_adamw_full(a16, &txh, &tgh, 0.01));
        for (size_t i = 0; i < mn; i++)
            if (xh[i] != ref_bf16(x[i]))
                fail_msg("element %zu: bf16 path %04x, rounded f32 path %04x",
                         i, xh[i], ref_bf16(x[i]));
        free(x);
        free(xh);
        owl_adamw_free(a32);
        owl_adamw_free(a16);
    }
    free(w32);
    free(g);
    free(wh);
    free(gh);
    owl_context_free(ctx);
}

/* The low-rank step on half weights large enough to take several row
 * blocks: each element is the f32 run's value rounded (to within one unit
 * in the last place, since the f32 path folds the decay into the GEMM). */
static void test_lowrank_half_weights_blocks(void **state)
{
    (void)state;
    owl_context *ctx = test_cpu_context(2);
    /* Both weights strided: sgemm's ldc path and the blocked half path. */
    const int m = 300, n = 1500, r = 4, sx = n + 7, sh = n + 3;
    const size_t mn = (size_t)(m * n);
    float *w0 = xcalloc(mn, sizeof *w0), *g = xcalloc(mn, sizeof *g);
    float *x = xcalloc((size_t)(m * sx), sizeof *x);
    uint16_t *xh = xcalloc((size_t)(m * sh), sizeof *xh);
    test_fill_uniform(w0, mn, 41);
    for (size_t i = 0; i < mn; i++) /* exact in bf16 and f16 */
        w0[i] = roundf(w0[i] * 128.0f) / 128.0f;
    for (owl_proj_type t = OWL_PROJ_LEFT; t <= OWL_PROJ_RIGHT; t++) {
        for (owl_dtype dt = OWL_DTYPE_BF16; dt <= OWL_DTYPE_F16; dt++) {
            owl_galore *p32 = make_proj(ctx, m, n, r, 200, 0.25, t,
                                        OWL_SVD_EXACT);
            owl_galore *p16 = make_proj(ctx, m, n, r, 200, 0.25, t,
                                        OWL_SVD_EXACT);
            int left = owl_galore_is_left(p32);
            owl_adamw_options o = adam_opts();
            o.weight_decay = 0.5;
            owl_adamw *a32 = make_adam(ctx, &o, left ? r : m, left ? n : r);
            owl_adamw *a16 = make_adam(ctx, &o, left ? r : m, left ? n : r);
            for (int i = 0; i < m; i++)
                for (int j = 0; j < n; j++) {
                    float v0 = w0[i * n + j];
                    x[i * sx + j] = v0;
                    xh[i * sh + j] = dt == OWL_DTYPE_BF16 ? ref_bf16(v0)
                                                          : f16_exact(v0);
                }
            owl_tensor tx = tensor(x, OWL_DTYPE_F32, m, n);
            owl_tensor txh = tensor(xh, dt, m, n);
            tx.row_stride = sx;
            txh.row_stride = sh;
            owl_tensor tg = tensor(g, OWL_DTYPE_F32, m, n);
            for (int step = 0; step < 2; step++) {
                test_fill_normal(g, mn, 300 + (uint64_t)step);
                assert_owl_ok(ctx, owl_adamw_lowrank(a32, p32, &tx, &tg, 0.05));
                assert_owl_ok(ctx, owl_adamw_lowrank(a16, p16, &txh, &tg, 0.05));
                for (int i = 0; i < m; i++)
                    for (int j = 0; j < n; j++) {
                        uint16_t h = xh[i * sh + j];
                        float got = dt == OWL_DTYPE_BF16 ? bf16_value(h)
                                                         : f16_value(h);
                        float want = x[i * sx + j];
                        float ulp = ldexpf(fabsf(want),
                                           dt == OWL_DTYPE_BF16 ? -7 : -10);
                        if (fabsf(got - want) > ulp + 1e-7f)
                            fail_msg("%s %s step %d: W[%d,%d] = %.6g, f32 "
                                     "run %.6g",
                                     left ? "left" : "right",
                                     dt == OWL_DTYPE_BF16 ? "bf16" : "f16",
                                     step, i, j, (double)got, (double)want);
                        /* continue both runs from the same weights */
                        x[i * sx + j] = got;
                    }
                /* the padding between rows is never written */
                for (int i = 0; i < m; i++) {
                    for (int j = n; j < sx; j++)
                        assert_true(x[i * sx + j] == 0.0f);
                    for (int j = n; j < sh && i + 1 < m; j++)
                        assert_true(xh[i * sh + j] == 0);
                }
            }
            owl_adamw_free(a32);
            owl_adamw_free(a16);
            owl_galore_free(p32);
            owl_galore_free(p16);
        }
    }
    free(w0);
    free(g);
    free(x);
    free(xh);
    owl_context_free(ctx);
}

/* bf16 moments: stored rounded, and the run tracks the f32-moment run. */
static void test_bf16_moments(void **state)
{
    (void)state;
    owl_context *ctx = test_cpu_context(2);
    const int m = 20, n = 50;
    const size_t mn = (size_t)(m * n);
    owl_adamw_options o = adam_opts();
    owl_adamw *a32 = make_adam(ctx, &o, m, n);
    o.moment_dtype = OWL_DTYPE_BF16;
    owl_adamw *a16 = make_adam(ctx, &o, m, n);
    float *w1 = xcalloc(mn, sizeof *w1), *w2 = xcalloc(mn, sizeof *w2);
    float *g = xcalloc(mn, sizeof *g), *mom = xcalloc(mn, sizeof *mom);
    owl_tensor t1 = tensor(w1, OWL_DTYPE_F32, m, n);
    owl_tensor t2 = tensor(w2, OWL_DTYPE_F32, m, n);
    owl_tensor tg = tensor(g, OWL_DTYPE_F32, m, n);
    for (int t = 0; t < 4; t++) {
        test_fill_normal(g, mn, 60 + (uint64_t)t);
        assert_owl_ok(ctx, owl_adamw_full(a32, &t1, &tg, 1e-3));
        assert_owl_ok(ctx, owl_adamw_full(a16, &t2, &tg, 1e-3));
    }
    double scale = 0, err = 0;
    for (size_t i = 0; i < mn; i++) {
        scale = fmax(scale, fabs(w1[i]));
        err = fmax(err, fabs(w1[i] - w2[i]));
    }
    assert_true(err < 2e-2 * scale);
    for (int which = 0; which < 2; which++) {
        owl_tensor tm = tensor(mom, OWL_DTYPE_F32, m, n);
        assert_owl_ok(ctx, owl_adamw_get_moment(a16, which, &tm));
        for (size_t i = 0; i < mn; i++) {
            uint32_t u;
            memcpy(&u, &mom[i], sizeof u);
            assert_true((u & 0xffffu) == 0); /* a bf16 value */
        }
    }
    /* One step from zero moments: m = (1-b1) g and v = (1-b2) g^2 in f32,
     * stored rounded to nearest bf16. */
    owl_adamw *fresh = make_adam(ctx, &o, m, n);
    test_fill_normal(g, mn, 99);
    assert_owl_ok(ctx, owl_adamw_full(fresh, &t2, &tg, 1e-3));
    for (int which = 0; which < 2; which++) {
        owl_tensor tm = tensor(mom, OWL_DTYPE_F32, m, n);
        assert_owl_ok(ctx, owl_adamw_get_moment(fresh, which, &tm));
        for (size_t i = 0; i < mn; i++) {
            float want = which == 0 ? (float)(1 - 0.9) * g[i]
                                    : (float)(1 - 0.999) * (g[i] * g[i]);
            if (mom[i] != bf16_value(ref_bf16(want)))
                fail_msg("moment %d[%zu] = %.9g, want bf16(%.9g)", which, i,
                         (double)mom[i], (double)want);
        }
    }
    owl_adamw_free(fresh);
    free(w1);
    free(w2);
    free(g);
    free(mom);
    owl_adamw_free(a32);
    owl_adamw_free(a16);
    owl_context_free(ctx);
}

/* ---- stochastic rounding ------------------------------------------------ */

static void sr_run(int threads, uint64_t seed, owl_rounding rounding,
                   uint16_t *w, int m, int n)
{
    owl_context *ctx = test_cpu_context(threads);
    owl_adamw_options o = adam_opts();
    o.rounding = rounding;
    o.seed = seed;
    owl_adamw *a = make_adam(ctx, &o, (uint64_t)m, (uint64_t)n);
    float *g = xcalloc((size_t)(m * n), sizeof *g);
    for (int i = 0; i < m * n; i++) {
        w[i] = ref_bf16(1.0f);
        g[i] = 1.0f;
    }
    owl_tensor tw = tensor(w, OWL_DTYPE_BF16, m, n);
    owl_tensor tg = tensor(g, OWL_DTYPE_F32, m, n);
    assert_owl_ok(ctx, owl_adamw_full(a, &tw, &tg, 1e-3));
    free(g);
    owl_adamw_free(a);
    owl_context_free(ctx);
}

static void test_stochastic_rounding(void **state)
{
    (void)state;
    const int m = 512, n = 160; /* 81920 samples, split across threads */
    const size_t mn = (size_t)(m * n);
    uint16_t *a = xcalloc(mn, sizeof *a), *b = xcalloc(mn, sizeof *b);
    uint16_t *c = xcalloc(mn, sizeof *c);
    /* Step 1 from W = 1, G = 1: W' = 1 - eta*0.1/(sqrt(0.001) + eps). */
    double eta = 1e-3 * sqrt(1 - 0.999) / (1 - 0.9);
    double exact = 1.0 - eta * 0.1 / (sqrt(0.001) + 1e-6);
    const double ulp = ldexp(1.0, -8); /* bf16 spacing just below 1 */

    sr_run(1, 5, OWL_ROUND_NEAREST, a, m, n);
    for (size_t i = 0; i < mn; i++)
        assert_true(bf16_value(a[i]) == 1.0f); /* 0.999 rounds up to 1 */

    sr_run(1, 5, OWL_ROUND_STOCHASTIC, a, m, n);
    double sum = 0;
    size_t down = 0;
    for (size_t i = 0; i < mn; i++) {
        float x = bf16_value(a[i]);
        assert_true(x == 1.0f || x == (float)(1.0 - ulp));
        down += x != 1.0f;
        sum += x;
    }
    /* Unbiased: mean within 5 sigma of the exact f32 value. */
    double p_down = (1.0 - exact) / ulp;
    double sigma = ulp * sqrt(p_down * (1 - p_down) / (double)mn);
    if (fabs(sum / (double)mn - exact) > 5 * sigma)
        fail_msg("stochastic mean %.8f, exact %.8f (sigma %.2g)",
                 sum / (double)mn, exact, sigma);
    assert_true(down > 0 && down < mn);

    sr_run(3, 5, OWL_ROUND_STOCHASTIC, b, m, n);  /* other thread count */
    assert_memory_equal(a, b, mn * sizeof *a);
    sr_run(1, 6, OWL_ROUND_STOCHASTIC, c, m, n);  /* other seed */
    assert_memory_not_equal(a, c, mn * sizeof *a);

    /* The low-rank step's blocked bf16 writes: the same thread-count
     * independence, and rounding that is not always to nearest. */
    uint16_t *out[2] = {b, c};
    float *g = xcalloc(mn, sizeof *g);
    test_fill_normal(g, mn, 17);
    for (int run = 0; run < 2; run++) {
        owl_context *ctx = test_cpu_context(run == 0 ? 1 : 3);
        owl_galore *p = make_proj(ctx, m, n, 8, 200, 1.0, OWL_PROJ_STD,
                                  OWL_SVD_EXACT);
        owl_adamw_options o = adam_opts();
        o.rounding = OWL_ROUND_STOCHASTIC;
        o.seed = 5;
        owl_adamw *ad = make_adam(ctx, &o, m, 8);
        for (size_t i = 0; i < mn; i++)
            out[run][i] = ref_bf16(1.0f);
        owl_tensor tw = tensor(out[run], OWL_DTYPE_BF16, m, n);
        owl_tensor tg = tensor(g, OWL_DTYPE_F32, m, n);
        assert_owl_ok(ctx, owl_adamw_lowrank(ad, p, &tw, &tg, 1e-3));
        owl_adamw_free(ad);
        owl_galore_free(p);
        owl_context_free(ctx);
    }
    assert_memory_equal(b, c, mn * sizeof *b);
    size_t moved = 0;
    for (size_t i = 0; i < mn; i++)
        moved += b[i] != ref_bf16(1.0f);
    assert_true(moved > 0); /* steps below half an ulp sometimes move W */
    free(g);
    free(a);
    free(b);
    free(c);
}

/* ---- non-finite gradients change nothing ------------------------------- */

typedef struct {
    float *w, *m, *v, *basis;
    uint64_t steps, bias, refreshes;
} snapshot;

static void take_snapshot(owl_context *ctx, owl_adamw *a, owl_galore *p,
                          const float *w, int wm, int wn, int lr_rows,
                          int lr_cols, snapshot *s)
{
    size_t lrn = (size_t)(lr_rows * lr_cols);
    s->w = xcalloc((size_t)(wm * wn), sizeof(float));
    memcpy(s->w, w, (size_t)(wm * wn) * sizeof(float));
    s->m = xcalloc(lrn, sizeof(float));
    s->v = xcalloc(lrn, sizeof(float));
    owl_tensor tm = tensor(s->m, OWL_DTYPE_F32, lr_rows, lr_cols);
    assert_owl_ok(ctx, owl_adamw_get_moment(a, 0, &tm));
    tm.data = s->v;
    assert_owl_ok(ctx, owl_adamw_get_moment(a, 1, &tm));
    s->steps = owl_adamw_step_count(a);
    s->bias = owl_adamw_bias_step(a);
    s->basis = NULL;
    s->refreshes = 0;
    if (p != NULL) {
        s->refreshes = owl_galore_refresh_count(p);
        int left = owl_galore_is_left(p);
        int r = left ? lr_rows : lr_cols;
        int rows = left ? wm : r, cols = left ? r : wn;
        s->basis = xcalloc((size_t)(rows * cols), sizeof(float));
        owl_tensor tb = tensor(s->basis, OWL_DTYPE_F32, rows, cols);
        if (s->refreshes > 0)
            assert_owl_ok(ctx, owl_galore_get_basis(p, &tb));
    }
}

static void assert_same_snapshot(const snapshot *x, const snapshot *y,
                                 size_t wn, size_t lrn, size_t bn)
{
    assert_memory_equal(x->w, y->w, wn * sizeof(float));
    assert_memory_equal(x->m, y->m, lrn * sizeof(float));
    assert_memory_equal(x->v, y->v, lrn * sizeof(float));
    assert_int_equal(x->steps, y->steps);
    assert_int_equal(x->bias, y->bias);
    assert_int_equal(x->refreshes, y->refreshes);
    if (x->basis != NULL)
        assert_memory_equal(x->basis, y->basis, bn * sizeof(float));
}

static void free_snapshot(snapshot *s)
{
    free(s->w);
    free(s->m);
    free(s->v);
    free(s->basis);
}

static void test_nonfinite_grad_changes_nothing(void **state)
{
    (void)state;
    owl_context *ctx = test_cpu_context(2);
    const int m = 10, n = 8, r = 3;
    owl_galore *p = make_proj(ctx, m, n, r, 2, 1.0, OWL_PROJ_STD,
                              OWL_SVD_EXACT);
    owl_adamw_options o = adam_opts();
    o.weight_decay = 0.1;
    o.on_refresh = OWL_MOMENTS_RESET;
    owl_adamw *a = make_adam(ctx, &o, m, r);
    float w[80], g[80], bad[80];
    uint16_t badh[80];
    test_fill_uniform(w, 80, 1);
    owl_tensor tw = tensor(w, OWL_DTYPE_F32, m, n);
    owl_tensor tg = tensor(g, OWL_DTYPE_F32, m, n);
    owl_tensor tbad = tensor(bad, OWL_DTYPE_F32, m, n);
    owl_tensor tbadh = tensor(badh, OWL_DTYPE_BF16, m, n);
    const float poison[3] = {NAN, INFINITY, -INFINITY};
    /* Before any subspace (step 0), at a refresh (2) and between (3). */
    for (int step = 0; step < 4; step++) {
        if (step == 0 || step == 2 || step == 3) {
            for (int k = 0; k < 3; k++) {
                test_fill_normal(bad, 80, 9);
                bad[17 + k] = poison[k];
                for (int i = 0; i < 80; i++)
                    badh[i] = ref_bf16(bad[i]);
                snapshot before, after;
                take_snapshot(ctx, a, p, w, m, n, m, r, &before);
                EXPECT_FAIL(ctx, owl_adamw_lowrank(a, p, &tw, &tbad, 0.01),
                            OWL_ERR_NONFINITE);
                EXPECT_FAIL(ctx, owl_adamw_lowrank(a, p, &tw, &tbadh, 0.01),
                            OWL_ERR_NONFINITE);
                /* the projector on its own, too */
                float out[30];
                for (int i = 0; i < 30; i++)
                    out[i] = 42.0f;
                owl_tensor tout = tensor(out, OWL_DTYPE_F32, m, r);
                EXPECT_FAIL(ctx, owl_galore_project(p, 0, &tbad, &tout, NULL),
                            OWL_ERR_NONFINITE);
                EXPECT_FAIL(ctx, owl_galore_refresh(p, &tbadh),
                            OWL_ERR_NONFINITE);
                for (int i = 0; i < 30; i++)
                    assert_true(out[i] == 42.0f);
                take_snapshot(ctx, a, p, w, m, n, m, r, &after);
                assert_same_snapshot(&before, &after, 80, 30, 24);
                free_snapshot(&before);
                free_snapshot(&after);
            }
        }
        test_fill_normal(g, 80, 50 + (uint64_t)step);
        assert_owl_ok(ctx, owl_adamw_lowrank(a, p, &tw, &tg, 0.01));
    }
    /* Full rank as well. */
    owl_adamw *f = make_adam(ctx, &o, m, n);
    test_fill_normal(g, 80, 70);
    assert_owl_ok(ctx, owl_adamw_full(f, &tw, &tg, 0.01));
    snapshot before, after;
    take_snapshot(ctx, f, NULL, w, m, n, m, n, &before);
    bad[3] = NAN;
    EXPECT_FAIL(ctx, owl_adamw_full(f, &tw, &tbad, 0.01), OWL_ERR_NONFINITE);
    take_snapshot(ctx, f, NULL, w, m, n, m, n, &after);
    assert_same_snapshot(&before, &after, 80, 80, 0);
    free_snapshot(&before);
    free_snapshot(&after);
    owl_adamw_free(f);
    owl_adamw_free(a);
    owl_galore_free(p);
    owl_context_free(ctx);
}

/* ---- argument validation of the step functions ------------------------- */

static void test_step_validation(void **state)
{
    (void)state;
    owl_context *ctx = test_cpu_context(1);
    owl_context *other = test_cpu_context(1);
    const int m = 8, n = 6, r = 2; /* STD, m >= n: right, low-rank 8x2 */
    owl_galore *p = make_proj(ctx, m, n, r, 10, 1.0, OWL_PROJ_STD,
                              OWL_SVD_EXACT);
    owl_adamw_options o = adam_opts();
    owl_adamw *a = make_adam(ctx, &o, m, r);
    owl_adamw *wrong = make_adam(ctx, &o, r, n);
    owl_adamw *foreign = make_adam(other, &o, m, r);
    float w[48] = {0}, g[48] = {0}, big[64] = {0}, big_g[64] = {0}, low[16],
          basis[12];
    owl_tensor tw = tensor(w, OWL_DTYPE_F32, m, n);
    owl_tensor tg = tensor(g, OWL_DTYPE_F32, m, n);
    owl_tensor tl = tensor(low, OWL_DTYPE_F32, m, r);
    owl_tensor tq = tensor(basis, OWL_DTYPE_F32, r, n);

    /* Before any subspace */
    EXPECT_FAIL(ctx, owl_galore_project_back(p, &tl, &tw), OWL_ERR_STATE);
    EXPECT_FAIL(ctx, owl_galore_get_basis(p, &tq), OWL_ERR_STATE);

    assert_int_equal(owl_adamw_lowrank(NULL, p, &tw, &tg, 0.1),
                     OWL_ERR_NULL_POINTER);
    EXPECT_FAIL(ctx, owl_adamw_lowrank(a, NULL, &tw, &tg, 0.1),
                OWL_ERR_NULL_POINTER);
    EXPECT_FAIL(ctx, owl_adamw_lowrank(a, p, NULL, &tg, 0.1),
                OWL_ERR_NULL_POINTER);
    EXPECT_FAIL(ctx, owl_adamw_lowrank(a, p, &tw, NULL, 0.1),
                OWL_ERR_NULL_POINTER);
    EXPECT_FAIL(other, owl_adamw_lowrank(foreign, p, &tw, &tg, 0.1),
                OWL_ERR_MISMATCH);
    EXPECT_FAIL(ctx, owl_adamw_lowrank(wrong, p, &tw, &tg, 0.1),
                OWL_ERR_MISMATCH);
    assert_non_null(strstr(owl_context_last_error(ctx), "2x6"));
    assert_non_null(strstr(owl_context_last_error(ctx), "8x2"));
    owl_tensor tt = tensor(g, OWL_DTYPE_F32, n, m); /* transposed grad */
    EXPECT_FAIL(ctx, owl_adamw_lowrank(a, p, &tw, &tt, 0.1), OWL_ERR_SHAPE);
    owl_tensor tw2 = tensor(big, OWL_DTYPE_F32, 8, 8),
               tg2 = tensor(big_g, OWL_DTYPE_F32, 8, 8);
    EXPECT_FAIL(ctx, owl_adamw_lowrank(a, p, &tw2, &tg2, 0.1), OWL_ERR_SHAPE);
    /* A weight that shares memory with its gradient (here: their last and
     * first 40 elements) would read its own update. */
    owl_tensor tw_alias = tensor(big, OWL_DTYPE_F32, m, n);
    owl_tensor tg_alias = tensor(big + 8, OWL_DTYPE_F32, m, n);
    EXPECT_FAIL(ctx, owl_adamw_lowrank(a, p, &tw_alias, &tg_alias, 0.1),
                OWL_ERR_INVALID_ARGUMENT);
    assert_non_null(strstr(owl_context_last_error(ctx), "share memory"));
    owl_tensor tbad = tw;
    tbad.dtype = OWL_DTYPE_F64;
    EXPECT_FAIL(ctx, owl_adamw_lowrank(a, p, &tbad, &tg, 0.1), OWL_ERR_DTYPE);
    tbad = tg;
    tbad.flags = 1;
    EXPECT_FAIL(ctx, owl_adamw_lowrank(a, p, &tw, &tbad, 0.1),
                OWL_ERR_INVALID_ARGUMENT);
    tbad = tw;
    tbad.row_stride = n - 1;
    EXPECT_FAIL(ctx, owl_adamw_lowrank(a, p, &tbad, &tg, 0.1), OWL_ERR_SHAPE);
    tbad = tw;
    tbad.data = NULL;
    EXPECT_FAIL(ctx, owl_adamw_lowrank(a, p, &tbad, &tg, 0.1),
                OWL_ERR_NULL_POINTER);
    const double bad_lr[3] = {-1e-3, NAN, INFINITY};
    for (int i = 0; i < 3; i++) {
        EXPECT_FAIL(ctx, owl_adamw_lowrank(a, p, &tw, &tg, bad_lr[i]),
                    OWL_ERR_INVALID_ARGUMENT);
        EXPECT_FAIL(ctx, owl_adamw_full(wrong, &tw, &tg, bad_lr[i]),
                    OWL_ERR_INVALID_ARGUMENT);
    }
    /* None of that touched anything. */
    assert_int_equal(owl_adamw_step_count(a), 0);
    assert_int_equal(owl_galore_refresh_count(p), 0);

    /* full: the moments must have the weight's shape */
    EXPECT_FAIL(ctx, owl_adamw_full(wrong, &tw, &tg, 0.1), OWL_ERR_MISMATCH);
    assert_int_equal(owl_adamw_full(NULL, &tw, &tg, 0.1), OWL_ERR_NULL_POINTER);

    /* the projector's own entry points */
    owl_tensor tl_bf = tl;
    tl_bf.dtype = OWL_DTYPE_BF16;
    EXPECT_FAIL(ctx, owl_galore_project(p, 0, &tg, &tl_bf, NULL),
                OWL_ERR_DTYPE);
    owl_tensor tl_t = tensor(low, OWL_DTYPE_F32, r, m);
    EXPECT_FAIL(ctx, owl_galore_project(p, 0, &tg, &tl_t, NULL),
                OWL_ERR_SHAPE);
    EXPECT_FAIL(ctx, owl_galore_project(p, 0, &tt, &tl, NULL), OWL_ERR_SHAPE);
    EXPECT_FAIL(ctx, owl_galore_refresh(p, NULL), OWL_ERR_NULL_POINTER);
    assert_int_equal(owl_galore_project(NULL, 0, &tg, &tl, NULL),
                     OWL_ERR_NULL_POINTER);
    assert_int_equal(owl_galore_refresh_count(p), 0);
    assert_owl_ok(ctx, owl_galore_project(p, 0, &tg, &tl, NULL));
    EXPECT_FAIL(ctx, owl_galore_project_back(p, &tl_t, &tw), OWL_ERR_SHAPE);
    EXPECT_FAIL(ctx, owl_galore_project_back(p, &tl, &tt), OWL_ERR_SHAPE);
    owl_tensor tq_t = tensor(basis, OWL_DTYPE_F32, n, r);
    EXPECT_FAIL(ctx, owl_galore_get_basis(p, &tq_t), OWL_ERR_SHAPE);
    assert_owl_ok(ctx, owl_galore_get_basis(p, &tq));

    /* moments */
    owl_tensor tm = tensor(low, OWL_DTYPE_F32, m, r);
    EXPECT_FAIL(ctx, owl_adamw_get_moment(a, 2, &tm), OWL_ERR_INVALID_ARGUMENT);
    EXPECT_FAIL(ctx, owl_adamw_get_moment(a, -1, &tm),
                OWL_ERR_INVALID_ARGUMENT);
    EXPECT_FAIL(ctx, owl_adamw_get_moment(a, 0, &tl_t), OWL_ERR_SHAPE);
    EXPECT_FAIL(ctx, owl_adamw_get_moment(a, 0, &tl_bf), OWL_ERR_DTYPE);
    EXPECT_FAIL(ctx, owl_adamw_get_moment(a, 0, NULL), OWL_ERR_NULL_POINTER);
    assert_int_equal(owl_adamw_get_moment(NULL, 0, &tm), OWL_ERR_NULL_POINTER);

    /* A successful call clears the last error. */
    assert_owl_ok(ctx, owl_adamw_lowrank(a, p, &tw, &tg, 0.1));
    assert_string_equal(owl_context_last_error(ctx), "");
    owl_adamw_free(a);
    owl_adamw_free(wrong);
    owl_adamw_free(foreign);
    owl_galore_free(p);
    owl_context_free(ctx);
    owl_context_free(other);
}

/* ---- the context's shared scratch -------------------------------------- */

/* Everything one projector's calls produce, in order. */
typedef struct {
    unsigned char *bytes;
    size_t len, cap;
} trace;

static void trace_add(trace *t, const void *p, size_t n)
{
    if (t->len + n > t->cap) {
        t->cap = 2 * (t->len + n);
        t->bytes = realloc(t->bytes, t->cap);
        assert_non_null(t->bytes);
    }
    memcpy(t->bytes + t->len, p, n);
    t->len += n;
}

typedef struct {
    int m, n, r;
    uint64_t gap;
    owl_proj_type type;
    owl_svd_method method;
    owl_dtype grad_dt, weight_dt, moment_dt;
    int grad_pad; /* extra elements per gradient row */
} actor_cfg;

/* A projector, its optimizer and weight, driven by a fixed script. */
typedef struct {
    actor_cfg c;
    owl_context *ctx;
    owl_galore *p;
    owl_adamw *a;
    void *w, *g, *back;
    float *g32, *low;
    uint64_t lr_rows, lr_cols;
    int steps;
    trace tr;
} actor;

static size_t elem_bytes(owl_dtype dt)
{
    return dt == OWL_DTYPE_F32 ? 4 : 2;
}

static void actor_create(actor *x, owl_context *ctx, const actor_cfg *c,
                         uint64_t seed)
{
    memset(x, 0, sizeof *x);
    x->c = *c;
    x->ctx = ctx;
    x->p = make_proj(ctx, c->m, c->n, c->r, c->gap, 0.5, c->type, c->method);
    assert_owl_ok(ctx, owl_galore_lowrank_shape(x->p, &x->lr_rows,
                                                &x->lr_cols));
    owl_adamw_options o = adam_opts();
    o.moment_dtype = c->moment_dt;
    o.weight_decay = 0.1;
    x->a = make_adam(ctx, &o, x->lr_rows, x->lr_cols);
    size_t mn = (size_t)c->m * (size_t)c->n;
    float *w0 = xcalloc(mn, sizeof *w0);
    test_fill_uniform(w0, mn, seed);
    x->w = xcalloc(mn, elem_bytes(c->weight_dt));
    for (size_t i = 0; i < mn; i++) {
        if (c->weight_dt == OWL_DTYPE_F32)
            ((float *)x->w)[i] = w0[i];
        else if (c->weight_dt == OWL_DTYPE_BF16)
            ((uint16_t *)x->w)[i] = ref_bf16(w0[i]);
        else /* f16: a multiple of 2^-10 in [-1, 1) is exact */
            ((uint16_t *)x->w)[i] =
                f16_exact(roundf(w0[i] * 1024.0f) / 1024.0f);
    }
    free(w0);
    x->g32 = xcalloc(mn, sizeof *x->g32);
    x->g = xcalloc((size_t)c->m * (size_t)(c->n + c->grad_pad),
                   elem_bytes(c->grad_dt));
    x->back = xcalloc(mn, sizeof(uint16_t));
    x->low = xcalloc((size_t)(x->lr_rows * x->lr_cols), sizeof *x->low);
}

static void actor_free(actor *x)
{
    owl_adamw_free(x->a);
    owl_galore_free(x->p);
    free(x->w);
    free(x->g);
    free(x->g32);
    free(x->back);
    free(x->low);
    free(x->tr.bytes);
}

/* Step `x->steps` of actor `id`'s script: gradient from (id, step); then a
 * low-rank AdamW step, or a projection and a bf16 back-projection, or a
 * forced refresh and a step; every output goes to the trace. */
static void actor_step(actor *x, int id)
{
    const actor_cfg *c = &x->c;
    owl_context *ctx = x->ctx;
    int step = x->steps++;
    int ld = c->n + c->grad_pad;
    size_t mn = (size_t)c->m * (size_t)c->n;
    test_fill_normal(x->g32, mn, 7000 + 100 * (uint64_t)id + (uint64_t)step);
    for (int i = 0; i < c->m; i++)
        for (int j = 0; j < c->n; j++) {
            float v = x->g32[i * c->n + j];
            if (c->grad_dt == OWL_DTYPE_F32)
                ((float *)x->g)[i * ld + j] = v;
            else
                ((uint16_t *)x->g)[i * ld + j] = ref_bf16(v);
        }
    owl_tensor tg = tensor(x->g, c->grad_dt, c->m, c->n);
    tg.row_stride = ld;
    owl_tensor tw = tensor(x->w, c->weight_dt, c->m, c->n);
    switch (step % 4) {
    case 2: {
        owl_tensor tl = tensor(x->low, OWL_DTYPE_F32, (int64_t)x->lr_rows,
                               (int64_t)x->lr_cols);
        owl_tensor tb = tensor(x->back, OWL_DTYPE_BF16, c->m, c->n);
        int32_t refreshed = -1;
        assert_owl_ok(ctx, owl_galore_project(x->p, (uint64_t)step, &tg, &tl,
                                              &refreshed));
        trace_add(&x->tr, &refreshed, sizeof refreshed);
        trace_add(&x->tr, x->low, (size_t)(x->lr_rows * x->lr_cols) * 4);
        assert_owl_ok(ctx, owl_galore_project_back(x->p, &tl, &tb));
        trace_add(&x->tr, x->back, mn * sizeof(uint16_t));
        break;
    }
    case 3: {
        assert_owl_ok(ctx, owl_galore_refresh(x->p, &tg));
        int left = owl_galore_is_left(x->p);
        float *basis = xcalloc((size_t)c->r * (size_t)(left ? c->m : c->n),
                               sizeof *basis);
        owl_tensor tq = tensor(basis, OWL_DTYPE_F32, left ? c->m : c->r,
                               left ? c->r : c->n);
        assert_owl_ok(ctx, owl_galore_get_basis(x->p, &tq));
        trace_add(&x->tr, basis,
                  (size_t)c->r * (size_t)(left ? c->m : c->n) * 4);
        free(basis);
        break;
    }
    default:
        break;
    }
    if (step % 4 != 2) {
        assert_owl_ok(ctx, owl_adamw_lowrank(x->a, x->p, &tw, &tg, 0.01));
        trace_add(&x->tr, x->w, mn * elem_bytes(c->weight_dt));
    }
}

static const actor_cfg scratch_actors[] = {
    {40, 24, 4, 3, OWL_PROJ_STD, OWL_SVD_EXACT, OWL_DTYPE_F32,
     OWL_DTYPE_BF16, OWL_DTYPE_F32, 0},
    {36, 90, 5, 2, OWL_PROJ_STD, OWL_SVD_RANDOMIZED, OWL_DTYPE_BF16,
     OWL_DTYPE_F32, OWL_DTYPE_BF16, 0},
    {120, 100, 6, 4, OWL_PROJ_LEFT, OWL_SVD_EXACT, OWL_DTYPE_BF16,
     OWL_DTYPE_BF16, OWL_DTYPE_F32, 0},
    {70, 150, 7, 5, OWL_PROJ_RIGHT, OWL_SVD_RANDOMIZED, OWL_DTYPE_F32,
     OWL_DTYPE_F16, OWL_DTYPE_F32, 3},
};
#define N_ACTORS 4

/* Projectors of different shapes, methods and dtypes share one context,
 * created one after another (each bigger, so the shared scratch moves
 * while earlier handles are in use) and driven in interleaved orders; a
 * larger projector is created and freed in the middle and a failing step
 * is thrown in. Each one's outputs must equal, bit for bit, those of the
 * same script run alone on a context of its own. */
static void test_shared_scratch_isolation(void **state)
{
    (void)state;
    owl_context *ctx = test_cpu_context(2);
    actor xs[N_ACTORS];
    int created = 0;
    for (int round = 0; round < 14; round++) {
        if (round % 2 == 0 && created < N_ACTORS) {
            actor_create(&xs[created], ctx, &scratch_actors[created],
                         500 + (uint64_t)created);
            created++;
        }
        if (round == 7) { /* grows the scratch once more, then goes */
            owl_galore *big = make_proj(ctx, 300, 260, 3, 10, 1.0,
                                        OWL_PROJ_STD, OWL_SVD_EXACT);
            owl_galore_free(big);
        }
        if (round == 9) { /* a rejected step changes nothing */
            actor *x = &xs[1];
            float *nan_g = xcalloc((size_t)(x->c.m * x->c.n), sizeof *nan_g);
            nan_g[5] = NAN;
            owl_tensor tg = tensor(nan_g, OWL_DTYPE_F32, x->c.m, x->c.n);
            owl_tensor tw = tensor(x->w, x->c.weight_dt, x->c.m, x->c.n);
            assert_owl_status(ctx, owl_adamw_lowrank(x->a, x->p, &tw, &tg,
                                                     0.01),
                              OWL_ERR_NONFINITE);
            free(nan_g);
        }
        for (int k = 0; k < created; k++) {
            int id = round % 2 ? created - 1 - k : k; /* alternate order */
            actor_step(&xs[id], id);
            if (round % 3 == 0 && id == 0)
                actor_step(&xs[id], id); /* uneven interleaving */
        }
    }
    assert_int_equal(created, N_ACTORS);

    for (int id = 0; id < N_ACTORS; id++) {
        owl_context *own = test_cpu_context(2);
        actor solo;
        actor_create(&solo, own, &scratch_actors[id], 500 + (uint64_t)id);
        while (solo.steps < xs[id].steps)
            actor_step(&solo, id);
        assert_true(solo.tr.len > 0);
        assert_int_equal(solo.tr.len, xs[id].tr.len);
        if (memcmp(solo.tr.bytes, xs[id].tr.bytes, solo.tr.len) != 0)
            fail_msg("projector %d (%dx%d) on a shared context differs from "
                     "its run alone",
                     id, scratch_actors[id].m, scratch_actors[id].n);
        actor_free(&solo);
        owl_context_free(own);
    }
    for (int k = 0; k < N_ACTORS; k++)
        actor_free(&xs[k]);
    owl_context_free(ctx);
}

/* A trainer's worth of projectors on one context (7 per layer x 32 layers
 * at a reduced width): all are created, and each projects its own gradient
 * exactly as a lone projector on its own context does. */
static void test_many_projectors_one_context(void **state)
{
    (void)state;
    enum { LAYERS = 32, KINDS = 7, D = 64, F = 172, R = 8 };
    /* q, k, v, o: D x D; gate, up: F x D; down: D x F */
    const int rows[KINDS] = {D, D, D, D, F, F, D};
    const int cols[KINDS] = {D, D, D, D, D, D, F};
    owl_context *ctx = test_cpu_context(2);
    owl_galore **ps = xcalloc(LAYERS * KINDS, sizeof *ps);
    for (int i = 0; i < LAYERS * KINDS; i++)
        ps[i] = make_proj(ctx, rows[i % KINDS], cols[i % KINDS], R, 200, 1.0,
                          OWL_PROJ_STD, i % 2 ? OWL_SVD_EXACT
                                              : OWL_SVD_RANDOMIZED);
    float *g = xcalloc((size_t)F * D, sizeof *g);
    float *out = xcalloc((size_t)F * D, sizeof *out);
    float *want = xcalloc((size_t)F * D, sizeof *want);
    owl_context *own = test_cpu_context(2);
    for (int i = 0; i < LAYERS * KINDS; i++) {
        int m = rows[i % KINDS], n = cols[i % KINDS];
        uint64_t lr, lc;
        assert_owl_ok(ctx, owl_galore_lowrank_shape(ps[i], &lr, &lc));
        test_fill_normal(g, (size_t)(m * n), 9000 + (uint64_t)i);
        owl_tensor tg = tensor(g, OWL_DTYPE_F32, m, n);
        owl_tensor to = tensor(out, OWL_DTYPE_F32, (int64_t)lr, (int64_t)lc);
        owl_tensor tw = tensor(want, OWL_DTYPE_F32, (int64_t)lr, (int64_t)lc);
        assert_owl_ok(ctx, owl_galore_project(ps[i], 0, &tg, &to, NULL));
        owl_galore *alone = make_proj(own, m, n, R, 200, 1.0, OWL_PROJ_STD,
                                      i % 2 ? OWL_SVD_EXACT
                                            : OWL_SVD_RANDOMIZED);
        assert_owl_ok(own, owl_galore_project(alone, 0, &tg, &tw, NULL));
        owl_galore_free(alone);
        if (memcmp(out, want, (size_t)(lr * lc) * sizeof *out) != 0)
            fail_msg("projector %d (%dx%d) differs from a lone one", i, m, n);
    }
    for (int i = 0; i < LAYERS * KINDS; i++)
        owl_galore_free(ps[i]);
    free(ps);
    free(g);
    free(out);
    free(want);
    owl_context_free(own);
    owl_context_free(ctx);
}

/* ---- full rank: elementwise, wherever an element sits ----------------- */

static uint32_t value_bits(const void *base, owl_dtype dt, size_t i)
{
    if (dt == OWL_DTYPE_F32) {
        uint32_t u;
        memcpy(&u, (const float *)base + i, sizeof u);
        return u;
    }
    return ((const uint16_t *)base)[i];
}

static void set_value(void *base, owl_dtype dt, size_t i, float f)
{
    if (dt == OWL_DTYPE_F32)
        ((float *)base)[i] = f;
    else
        ((uint16_t *)base)[i] = ref_bf16(f);
}

/* AdamW is elementwise: an element's new weight and moments depend only
 * on its own weight, gradient and moments. So the same (w, g) pairs laid
 * out as one long strided row and, permuted, as a 7 x 29 block must give
 * the same results bit for bit, for every dtype mix and first-moment
 * form. This holds whatever the vector width, lane order or tail handling
 * of the kernels; weights include NaN, infinities and subnormals, and one
 * gradient overflows v. */
static void test_full_rank_elementwise(void **state)
{
    (void)state;
    enum { COUNT = 203, ROWS = 7, COLS = 29, PAD = 5 };
    owl_context *ctx = test_cpu_context(2);
    int perm[COUNT];
    for (int k = 0; k < COUNT; k++)
        perm[k] = (k * 64 + 11) % COUNT; /* 64 is invertible mod 203 */
    float *w0 = xcalloc(COUNT, sizeof *w0), *g = xcalloc(COUNT, sizeof *g);
    float *ma = xcalloc(COUNT, sizeof *ma), *mb = xcalloc(COUNT, sizeof *mb);
    void *wa = xcalloc(COUNT + PAD, 4), *wb = xcalloc(ROWS * (COLS + PAD), 4);
    void *ga = xcalloc(COUNT + PAD, 4), *gb = xcalloc(ROWS * (COLS + PAD), 4);
    test_fill_uniform(w0, COUNT, 71);
    w0[3] = NAN;
    w0[40] = INFINITY;
    w0[77] = -INFINITY;
    w0[100] = 1e-40f;
    for (owl_dtype wd = OWL_DTYPE_F32; wd <= OWL_DTYPE_BF16; wd++)
    for (owl_dtype gd = OWL_DTYPE_F32; gd <= OWL_DTYPE_BF16; gd++)
    for (owl_dtype md = OWL_DTYPE_F32; md <= OWL_DTYPE_BF16; md++)
    for (int form = 0; form < 3; form++) {
        owl_adamw_options o = adam_opts();
        o.moment_dtype = md;
        o.weight_decay = 0.1;
        o.semantics = form == 0 ? OWL_ADAMW_GALORE : OWL_ADAMW_TORCH;
        o.beta1 = form == 2 ? 0.3 : 0.9; /* torch's two lerp formulas */
        owl_adamw *aa = make_adam(ctx, &o, 1, COUNT);
        owl_adamw *ab = make_adam(ctx, &o, ROWS, COLS);
        owl_tensor twa = tensor(wa, wd, 1, COUNT);
        owl_tensor tga = tensor(ga, gd, 1, COUNT);
        owl_tensor twb = tensor(wb, wd, ROWS, COLS);
        owl_tensor tgb = tensor(gb, gd, ROWS, COLS);
        twb.row_stride = tgb.row_stride = COLS + PAD;
#define AT_B(k) ((size_t)(perm[k] / COLS) * (COLS + PAD) + (size_t)(perm[k] % COLS))
        for (int k = 0; k < COUNT; k++) {
            set_value(wa, wd, (size_t)k, w0[k]);
            set_value(wb, wd, AT_B(k), w0[k]);
        }
        for (int step = 0; step < 3; step++) {
            test_fill_normal(g, COUNT, 80 + (uint64_t)step);
            if (step == 1)
                g[150] = 2e14f; /* just below the step limit 2^48 */
            for (int k = 0; k < COUNT; k++) {
                set_value(ga, gd, (size_t)k, g[k]);
                set_value(gb, gd, AT_B(k), g[k]);
            }
            assert_owl_ok(ctx, owl_adamw_full(aa, &twa, &tga, 0.01));
            assert_owl_ok(ctx, owl_adamw_full(ab, &twb, &tgb, 0.01));
            for (int k = 0; k < COUNT; k++)
                if (value_bits(wa, wd, (size_t)k) !=
                    value_bits(wb, wd, AT_B(k)))
                    fail_msg("W[%d] differs with its position (w %s, g %s, "
                             "moments %s, form %d, step %d)",
                             k, wd ? "bf16" : "f32", gd ? "bf16" : "f32",
                             md ? "bf16" : "f32", form, step);
            for (int which = 0; which < 2; which++) {
                owl_tensor tma = tensor(ma, OWL_DTYPE_F32, 1, COUNT);
                owl_tensor tmb = tensor(mb, OWL_DTYPE_F32, ROWS, COLS);
                assert_owl_ok(ctx, owl_adamw_get_moment(aa, which, &tma));
                assert_owl_ok(ctx, owl_adamw_get_moment(ab, which, &tmb));
                for (int k = 0; k < COUNT; k++)
                    if (value_bits(ma, OWL_DTYPE_F32, (size_t)k) !=
                        value_bits(mb, OWL_DTYPE_F32, (size_t)perm[k]))
                        fail_msg("moment %d[%d] differs with its position",
                                 which, k);
            }
        }
#undef AT_B
        owl_adamw_free(aa);
        owl_adamw_free(ab);
    }
    free(w0);
    free(g);
    free(ma);
    free(mb);
    free(wa);
    free(wb);
    free(ga);
    free(gb);
    owl_context_free(ctx);
}

/* ---- low rank: a NaN/Inf anywhere in G changes nothing ------------------ */

/* Twin projectors and optimizers: one also receives gradients with a NaN
 * or an infinity somewhere (first, middle or last element; f32 strided,
 * bf16 or f16), which must fail with OWL_ERR_NONFINITE, on refresh steps
 * and between them. Every clean step must then leave both twins with the
 * same weights and moments, bit for bit: the rejected calls changed
 * nothing, counters included. */
static void test_lowrank_nonfinite_anywhere(void **state)
{
    (void)state;
    enum { M = 96, N = 130, R = 6, LD = N + 3 };
    owl_context *ctx = test_cpu_context(2);
    for (owl_dtype gd = OWL_DTYPE_F32; gd <= OWL_DTYPE_F16; gd++) {
        owl_galore *p[2];
        owl_adamw *a[2];
        uint16_t *w[2];
        uint64_t lr = 0, lc = 0;
        for (int t = 0; t < 2; t++) {
            /* left for f32 G, right for the others */
            p[t] = make_proj(ctx, M, N, R, 3, 0.5,
                             gd == OWL_DTYPE_F32 ? OWL_PROJ_LEFT
                                                 : OWL_PROJ_RIGHT,
                             OWL_SVD_RANDOMIZED);
            owl_adamw_options o = adam_opts();
            o.moment_dtype = OWL_DTYPE_BF16;
            o.weight_decay = 0.1;
            assert_owl_ok(ctx, owl_galore_lowrank_shape(p[t], &lr, &lc));
            a[t] = make_adam(ctx, &o, lr, lc);
            w[t] = xcalloc(M * N, sizeof *w[t]);
        }
        float *w0 = xcalloc(M * N, sizeof *w0), *g = xcalloc(M * N, sizeof *g);
        void *gt = xcalloc(M * LD, 4);
        size_t lrn = (size_t)(lr * lc);
        float *m0 = xcalloc(lrn, sizeof *m0), *m1 = xcalloc(lrn, sizeof *m1);
        test_fill_uniform(w0, M * N, 5);
        for (int i = 0; i < M * N; i++)
            w[0][i] = w[1][i] = ref_bf16(w0[i]);
        owl_tensor tg = tensor(gt, gd, M, N);
        tg.row_stride = LD;
        const size_t spots[3] = {0, (M / 2) * LD + 17, (M - 1) * LD + N - 1};
        const float poison[3] = {NAN, INFINITY, -INFINITY};
        for (int step = 0; step < 7; step++) {
            test_fill_normal(g, M * N, 400 + (uint64_t)step);
            for (int i = 0; i < M; i++)
                for (int j = 0; j < N; j++) {
                    float v = g[i * N + j];
                    size_t k = (size_t)i * LD + (size_t)j;
                    if (gd == OWL_DTYPE_F32)
                        ((float *)gt)[k] = v;
                    else if (gd == OWL_DTYPE_BF16)
                        ((uint16_t *)gt)[k] = ref_bf16(v);
                    else /* |v| < 8: exact as a multiple of 2^-7 */
                        ((uint16_t *)gt)[k] =
                            f16_exact(roundf(v * 128.0f) / 128.0f);
                }
            for (int s = 0; s < 3; s++) {
                size_t k = spots[(step + s) % 3];
                float keep = 0;
                uint16_t keeph = 0;
                if (gd == OWL_DTYPE_F32) {
                    keep = ((float *)gt)[k];
                    ((float *)gt)[k] = poison[s];
                } else {
                    keeph = ((uint16_t *)gt)[k];
                    ((uint16_t *)gt)[k] =
                        gd == OWL_DTYPE_BF16
                            ? ref_bf16(poison[s])
                            : (uint16_t)(s == 0 ? 0x7e00 : s == 1 ? 0x7c00
                                                                  : 0xfc00);
                }
                owl_tensor tw = tensor(w[0], OWL_DTYPE_BF16, M, N);
                EXPECT_FAIL(ctx, owl_adamw_lowrank(a[0], p[0], &tw, &tg, 0.01),
                            OWL_ERR_NONFINITE);
                if (gd == OWL_DTYPE_F32)
                    ((float *)gt)[k] = keep;
                else
                    ((uint16_t *)gt)[k] = keeph;
            }
            for (int t = 0; t < 2; t++) {
                owl_tensor tw = tensor(w[t], OWL_DTYPE_BF16, M, N);
                assert_owl_ok(ctx, owl_adamw_lowrank(a[t], p[t], &tw, &tg,
                                                     0.01));
            }
            assert_int_equal(owl_adamw_step_count(a[0]),
                             owl_adamw_step_count(a[1]));
            assert_int_equal(owl_galore_refresh_count(p[0]),
                             owl_galore_refresh_count(p[1]));
            if (memcmp(w[0], w[1], M * N * sizeof *w[0]) != 0)
                fail_msg("%s grad, step %d: weights differ from the twin's",
                         gd == OWL_DTYPE_F32 ? "f32" : gd == OWL_DTYPE_BF16
                                                           ? "bf16"
                                                           : "f16",
                         step);
            for (int which = 0; which < 2; which++) {
                owl_tensor t0 = tensor(m0, OWL_DTYPE_F32, (int64_t)lr,
                                       (int64_t)lc);
                owl_tensor t1 = tensor(m1, OWL_DTYPE_F32, (int64_t)lr,
                                       (int64_t)lc);
                assert_owl_ok(ctx, owl_adamw_get_moment(a[0], which, &t0));
                assert_owl_ok(ctx, owl_adamw_get_moment(a[1], which, &t1));
                assert_memory_equal(m0, m1, lrn * sizeof *m0);
            }
        }
        for (int t = 0; t < 2; t++) {
            owl_galore_free(p[t]);
            owl_adamw_free(a[t]);
            free(w[t]);
        }
        free(w0);
        free(g);
        free(gt);
        free(m0);
        free(m1);
    }
    owl_context_free(ctx);
}

/* A gradient near the ends of f32's range has the subspace of the same
 * gradient scaled to 1: the range finder's products with G must neither
 * overflow (|G| ~ 1e38) nor flush to zero (subnormal G), and EXACT's gesdd
 * scales for itself. Both methods, both projection sides. */
static void test_refresh_at_the_ends_of_f32(void **state)
{
    (void)state;
    owl_context *ctx = test_cpu_context(1);
    enum { m = 24, n = 16, r = 4 };
    float g[m * n], scaled[m * n], b_ref[m * n], b_got[m * n];
    test_fill_normal(g, m * n, 5);
    const int shifts[] = {126, 100, -100, -140};
    const owl_proj_type sides[] = {OWL_PROJ_RIGHT, OWL_PROJ_LEFT};
    for (int meth = 0; meth < 2; meth++) {
        for (int side = 0; side < 2; side++) {
            owl_galore *ref = make_proj(ctx, m, n, r, 10, 1.0, sides[side],
                                        meth ? OWL_SVD_RANDOMIZED : OWL_SVD_EXACT);
            owl_tensor tg = tensor(g, OWL_DTYPE_F32, m, n);
            assert_owl_ok(ctx, owl_galore_refresh(ref, &tg));
            const int64_t br = sides[side] == OWL_PROJ_LEFT ? m : r;
            const int64_t bc = sides[side] == OWL_PROJ_LEFT ? r : n;
            owl_tensor tb = tensor(b_ref, OWL_DTYPE_F32, br, bc);
            assert_owl_ok(ctx, owl_galore_get_basis(ref, &tb));
            for (size_t k = 0; k < sizeof shifts / sizeof shifts[0]; k++) {
                /* max |g| of a normal sample is below 8: 2^126 * 8 is
                 * still finite, 2^-140 leaves subnormals. */
                for (int i = 0; i < m * n; i++)
                    scaled[i] = ldexpf(g[i], shifts[k] - (shifts[k] > 0 ? 3 : 0));
                owl_galore *p = make_proj(ctx, m, n, r, 10, 1.0, sides[side],
                                          meth ? OWL_SVD_RANDOMIZED
                                               : OWL_SVD_EXACT);
                owl_tensor ts = tensor(scaled, OWL_DTYPE_F32, m, n);
                assert_owl_ok(ctx, owl_galore_refresh(p, &ts));
                owl_tensor tgot = tensor(b_got, OWL_DTYPE_F32, br, bc);
                assert_owl_ok(ctx, owl_galore_get_basis(p, &tgot));
                double worst = 0;
                for (int64_t i = 0; i < br * bc; i++) {
                    const double d = fabs((double)b_got[i] - b_ref[i]);
                    worst = d > worst ? d : worst;
                }
                /* Subnormal inputs keep fewer bits: 2^-140 leaves about 9
                 * of a normal sample's 24. */
                const double tol = shifts[k] < -126 ? 2e-2 : 1e-5;
                if (worst > tol)
                    fail_msg("%s side %d, G * 2^%d: basis differs by %g",
                             meth ? "RANDOMIZED" : "EXACT", side, shifts[k],
                             worst);
                owl_galore_free(p);
            }
            owl_galore_free(ref);
        }
    }
    owl_context_free(ctx);
}

/* Entries whose magnitudes spread over all of f32 (3e-41 to 3e38 in one
 * matrix, one the API fuzzer found): once scaled, the power iterations'
 * sketches hold subnormals, and a subnormal LU pivot has no f32
 * reciprocal. Every power-iteration count must still give an orthonormal
 * basis whose leading vector is EXACT's. */
static void test_refresh_over_the_whole_f32_range(void **state)
{
    (void)state;
    owl_context *ctx = test_cpu_context(1);
    enum { m = 8, n = 8, r = 8 };
    static const float g[m * n] = {
        0x1.bd8ee4p-99f, 0x1.d11054p+0f, -0x1.1204b0p+90f, 0x1.82145ap+0f,
        -0x1.392ea0p+61f, 0x1.8eb06ap+0f, -0x1.927f3cp+14f, -0x1.d17a74p+0f,
        -0x1.3b98f0p-101f, -0x1.831838p+0f, -0x1.b8ec80p+103f, -0x1.99f988p+0f,
        -0x1.adefe0p+90f, 0x1.bd64a4p+0f, 0x1.4d9bf0p-72f, -0x1.98683cp+0f,
        -0x1.df2a60p-30f, 0x1.9caca2p+0f, 0x1.be7060p+127f, 0x1.aeaf52p+0f,
        0x1.bad3ecp+33f, -0x1.dbbc76p+0f, -0x1.dc7fd0p+3f, -0x1.af0a9ap+0f,
        -0x1.33bd10p+122f, 0x1.887ff2p+0f, -0x1.fc56c4p+92f, 0x1.c2651ap+0f,
        -0x1.944840p+88f, -0x1.8aac52p+0f, 0x1.5faa80p-66f, 0x1.5adc98p+0f,
        -0x1.458870p-92f, -0x1.a21e78p+0f, 0x1.b8dc00p-116f, 0x1.e11d7cp-1f,
        0x1.fb5508p-104f, -0x1.d76fa6p+0f, -0x1.ef4318p+115f, 0x1.bc4074p+0f,
        -0x1.dbf4c0p-72f, -0x1.c4eed2p+0f, 0x1.240bf0p+54f, -0x1.dc9afap+0f,
        0x1.ea6b04p-3f, 0x1.c406f0p+0f, -0x1.b01800p-131f, 0x1.d46becp+0f,
        0x1.503000p-135f, 0x1.aac8c0p+0f, -0x1.f0c7b0p-83f, 0x1.a208c0p+0f,
        0x1.07aaa4p-11f, 0x1.c1dbfap+0f, 0x1.b30200p-27f, 0x1.8e9c6ap+0f,
        -0x1.a93e20p-106f, 0x1.80b8ecp+0f, -0x1.8801c8p+44f, 0x1.bb7b48p+0f,
        -0x1.f27208p-5f, 0x1.a8ee56p+0f, -0x1.c3cff4p-68f, 0x1.cbaccap+0f,
    };
    float b_rand[m * n], b_exact[m * n];
    const owl_proj_type sides[] = {OWL_PROJ_RIGHT, OWL_PROJ_LEFT};
    for (int side = 0; side < 2; side++) {
        owl_galore *ex = make_proj(ctx, m, n, r, 10, 1.0, sides[side],
                                   OWL_SVD_EXACT);
        owl_tensor tg = tensor((float *)g, OWL_DTYPE_F32, m, n);
        assert_owl_ok(ctx, owl_galore_refresh(ex, &tg));
        owl_tensor te = tensor(b_exact, OWL_DTYPE_F32, side ? m : r, side ? r : n);
        assert_owl_ok(ctx, owl_galore_get_basis(ex, &te));
        for (uint64_t q = 0; q <= 4; q++) {
            owl_galore_options o;
            owl_galore_options_init(&o, sizeof o);
            o.rows = m;
            o.cols = n;
            o.rank = r;
            o.proj_type = sides[side];
            o.svd_method = OWL_SVD_RANDOMIZED;
            o.power_iters = q;
            o.seed = 8092774257459679055u; /* the fuzzer's sketch */
            owl_galore *p = NULL;
            assert_owl_ok(ctx, owl_galore_create(ctx, &o, &p));
            assert_owl_ok(ctx, owl_galore_refresh(p, &tg));
            owl_tensor tb = tensor(b_rand, OWL_DTYPE_F32, side ? m : r, side ? r : n);
            assert_owl_ok(ctx, owl_galore_get_basis(p, &tb));
            /* Vector v_a is row a (right: Q, r x n) or column a (left:
             * P, m x r); d is its length. */
            const int d = side ? m : n;
            double lead = 0;
            for (int a = 0; a < r; a++) {
                for (int c = 0; c < r; c++) {
                    double dot = 0;
                    for (int i = 0; i < d; i++) {
                        const float va = side ? b_rand[i * r + a] : b_rand[a * n + i];
                        const float vc = side ? b_rand[i * r + c] : b_rand[c * n + i];
                        dot += (double)va * vc;
                    }
                    if (fabs(dot - (a == c)) > 1e-5)
                        fail_msg("side %d, q %llu: <v%d, v%d> = %g", side,
                                 (unsigned long long)q, a, c, dot);
                }
            }
            for (int i = 0; i < d; i++)
                lead += side ? (double)b_rand[i * r] * b_exact[i * r]
                             : (double)b_rand[i] * b_exact[i];
            if (fabs(lead) < 0.999)
                fail_msg("side %d, q %llu: leading vectors agree to %g", side,
                         (unsigned long long)q, fabs(lead));
            owl_galore_free(p);
        }
        owl_galore_free(ex);
    }
    owl_context_free(ctx);
}

/* A second matrix the API fuzzer found (21 x 6, |G| from 5e-36 to 1e37):
 * with six power iterations the sketches become rank deficient, and
 * OpenBLAS's LU turns the zero or tiny pivots into NaN; the range finder
 * must orthonormalise those products instead. */
static void test_refresh_rank_deficient_sketches(void **state)
{
    (void)state;
    owl_context *ctx = test_cpu_context(1);
    enum { m = 21, n = 6 };
    static const float g[m * n] = {
        -0x1.144d36p+90f, 0x1.cd2f18p+0f, 0x1.65b2b8p+102f, -0x1.b66fecp+0f,
        0x1.033258p+123f, 0x1.c0a90ap+0f, 0x1.3d17b6p-3f, -0x1.3d17b6p-4f,
        -0x1.7df316p-1f, 0x1.7df316p-2f, 0x1.cb8236p-1f, -0x1.cb8236p-2f,
        -0x1.28d6cap-1f, 0x1.28d6cap-2f, 0x1.92047ep-2f, -0x1.92047ep-3f,
        -0x1.f6ea26p-1f, 0x1.f6ea26p-2f, -0x1.bec3dep-2f, 0x1.bec3dep-3f,
        -0x1.c1da32p-1f, 0x1.c1da32p-2f, 0x1.6267eap-1f, -0x1.6267eap-2f,
        0x1.48da3ap-4f, -0x1.48da3ap-5f, -0x1.d84d32p-1f, 0x1.d84d32p-2f,
        0x1.aab684p-1f, -0x1.aab684p-2f, -0x1.bdb316p-4f, 0x1.bdb316p-5f,
        -0x1.6fee6cp-1f, 0x1.6fee6cp-2f, 0x1.f11224p-1f, -0x1.f11224p-2f,
        -0x1.619a9ep-1f, 0x1.619a9ep-2f, -0x1.218390p-2f, 0x1.218390p-3f,
        -0x1.5ac116p-2f, 0x1.5ac116p-3f, 0x1.7b56aap-3f, -0x1.7b56aap-4f,
        0x1.45a766p-6f, -0x1.45a766p-7f, 0x1.77071ep-1f, -0x1.77071ep-2f,
        0x1.c5da34p-1f, -0x1.c5da34p-2f, 0x1.a4f3cap-1f, -0x1.a4f3cap-2f,
        0x1.9c77d2p-1f, -0x1.9c77d2p-2f, -0x1.c70106p-4f, 0x1.c70106p-5f,
        0x1.7c0cfcp-1f, -0x1.7c0cfcp-2f, -0x1.de320ep-1f, 0x1.de320ep-2f,
        0x1.e1adc0p-1f, -0x1.e1adc0p-2f, 0x1.120224p-1f, -0x1.120224p-2f,
        -0x1.86f48ap-2f, 0x1.86f48ap-3f, -0x1.e4535ep-1f, 0x1.e4535ep-2f,
        0x1.7789aep-3f, -0x1.7789aep-4f, 0x1.75fccap-1f, -0x1.75fccap-2f,
        0x1.4e2e50p-1f, -0x1.4e2e50p-2f, -0x1.fd6e46p-4f, 0x1.fd6e46p-5f,
        -0x1.b5f6aap-1f, 0x1.b5f6aap-2f, -0x1.bd5256p-4f, 0x1.bd5256p-5f,
        -0x1.42441ep-1f, 0x1.42441ep-2f, 0x1.d404cep-2f, -0x1.d404cep-3f,
        0x1.624fdap-1f, -0x1.624fdap-2f, -0x1.4e0d1cp-2f, 0x1.4e0d1cp-3f,
        0x1.d03c0ep-3f, -0x1.d03c0ep-4f, -0x1.90fefep-4f, 0x1.90fefep-5f,
        -0x1.21d7cap-3f, 0x1.21d7cap-4f, 0x1.43eeeap-1f, -0x1.43eeeap-2f,
        0x1.6ba76ep-2f, -0x1.6ba76ep-3f, 0x1.b39f50p-1f, -0x1.b39f50p-2f,
        -0x1.9b2d3ap-1f, 0x1.9b2d3ap-2f, 0x1.635ef0p-1f, -0x1.635ef0p-2f,
        -0x1.f2e972p-1f, 0x1.f2e972p-2f, -0x1.05aab0p-2f, 0x1.05aab0p-3f,
        -0x1.7e6548p-3f, 0x1.7e6548p-4f, -0x1.75ea2cp-2f, 0x1.75ea2cp-3f,
        0x1.323f9cp-1f, -0x1.323f9cp-2f, 0x1.482764p-2f, -0x1.482764p-3f,
        0x1.96138ep-3f, -0x1.96138ep-4f, -0x1.22545ap-5f, 0x1.22545ap-6f,
        0x1.38ec48p-2f, -0x1.38ec48p-3f, -0x1.9a7078p-1f, 0x1.9a7078p-2f,
        -0x1.25f0f8p-3f, 0x1.25f0f8p-4f,
    };
    for (uint64_t q = 0; q <= 6; q++) {
        owl_galore_options o;
        owl_galore_options_init(&o, sizeof o);
        o.rows = m;
        o.cols = n;
        o.rank = 1;
        o.proj_type = OWL_PROJ_REVERSE_STD; /* left for m >= n */
        o.svd_method = OWL_SVD_RANDOMIZED;
        o.oversample = 6;
        o.power_iters = q;
        o.seed = 10416985246563296227u; /* the fuzzer's sketch */
        owl_galore *p = NULL;
        assert_owl_ok(ctx, owl_galore_create(ctx, &o, &p));
        owl_tensor tg = tensor((float *)g, OWL_DTYPE_F32, m, n);
        assert_owl_ok(ctx, owl_galore_refresh(p, &tg));
        float basis[m];
        owl_tensor tb = tensor(basis, OWL_DTYPE_F32, m, 1);
        assert_owl_ok(ctx, owl_galore_get_basis(p, &tb));
        double norm = 0;
        for (int i = 0; i < m; i++)
            norm += (double)basis[i] * basis[i];
        if (fabs(norm - 1.0) > 1e-5)
            fail_msg("q %llu: the basis vector has norm^2 %g",
                     (unsigned long long)q, norm);
        owl_galore_free(p);
    }
    owl_context_free(ctx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_option_defaults),
        cmocka_unit_test(test_galore_create_validation),
        cmocka_unit_test(test_adamw_create_validation),
        cmocka_unit_test(test_g1_eckart_young),
        cmocka_unit_test(test_g2_g3_stale_moments),
        cmocka_unit_test(test_g3_reset_variant_differs),
        cmocka_unit_test(test_g4_refresh_timing),
        cmocka_unit_test(test_g5_weight_decay),
        cmocka_unit_test(test_lowrank_matches_double_recurrence),
        cmocka_unit_test(test_canonical_signs_and_span),
        cmocka_unit_test(test_randomized_energy_and_determinism),
        cmocka_unit_test(test_projection_dtypes_and_strides),
        cmocka_unit_test(test_full_rank_closed_form),
        cmocka_unit_test(test_half_weights_equal_rounded_f32),
        cmocka_unit_test(test_lowrank_half_weights_blocks),
        cmocka_unit_test(test_bf16_moments),
        cmocka_unit_test(test_stochastic_rounding),
        cmocka_unit_test(test_nonfinite_grad_changes_nothing),
        cmocka_unit_test(test_step_validation),
        cmocka_unit_test(test_shared_scratch_isolation),
        cmocka_unit_test(test_many_projectors_one_context),
        cmocka_unit_test(test_full_rank_elementwise),
        cmocka_unit_test(test_lowrank_nonfinite_anywhere),
        cmocka_unit_test(test_refresh_at_the_ends_of_f32),
        cmocka_unit_test(test_refresh_over_the_whole_f32_range),
        cmocka_unit_test(test_refresh_rank_deficient_sketches),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
