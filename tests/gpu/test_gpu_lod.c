/*
 * Activation sums of squares and LOD on the CUDA backend against the CPU
 * backend on identical inputs.
 *
 * Tolerances: both backends square in f64 (exact for f32 inputs) and sum
 * in f64, in different orders, then round the running sum to f32 once per
 * call, so sumsq agrees within one f32 ulp per call. LOD scores are formed
 * bit for bit alike; only the pooled mean's summation order differs (a
 * relative 1e-15 change of the threshold), so on inputs whose scores all
 * lie farther than 1e-9 (relative) from the threshold -- checked here --
 * the outlier count, and so the ratio, must be equal exactly.
 */
#include "gpu_util.h"

#include "../common/testutil.h"

#include <cuda_runtime_api.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static size_t dt_size(owl_dtype dt)
{
    return dt == OWL_DTYPE_F32 ? 4 : dt == OWL_DTYPE_F64 ? 8 : 2;
}

static uint16_t to_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

/* f32 -> IEEE half for |f| in the normal half range or 0 (the tests'
 * values), rounding to nearest even. */
static uint16_t to_f16(float f)
{
    if (f == 0.0f)
        return 0;
    uint16_t sign = f < 0 ? 0x8000 : 0;
    int e;
    double m = frexp(fabs((double)f), &e); /* |f| = m 2^e, m in [0.5, 1) */
    double scaled = nearbyint(ldexp(m, 11)); /* 11 significant bits */
    if (scaled >= 2048) {
        scaled /= 2;
        e++;
    }
    int be = e - 1 + 15;
    assert_true(be >= 1 && be <= 30);
    return (uint16_t)(sign | (be << 10) | ((int)scaled - 1024));
}

/* A rows x (cols + pad) matrix of dtype dt from normal values times
 * `scale`, padding left zero. */
static void *make_matrix(owl_dtype dt, int64_t rows, int64_t cols,
                         int64_t pad, float scale, uint64_t seed)
{
    size_t n = (size_t)(rows * cols), ld = (size_t)(cols + pad);
    float *v = malloc(n * sizeof(float));
    char *p = calloc((size_t)rows * ld, dt_size(dt));
    assert_true(v && p);
    test_fill_normal(v, n, seed);
    for (int64_t i = 0; i < rows; i++)
        for (int64_t j = 0; j < cols; j++) {
            float x = v[i * cols + j] * scale;
            size_t k = (size_t)i * ld + (size_t)j;
            if (dt == OWL_DTYPE_F32)
                ((float *)p)[k] = x;
            else if (dt == OWL_DTYPE_BF16)
                ((uint16_t *)p)[k] = to_bf16(x);
            else
                ((uint16_t *)p)[k] = to_f16(fabsf(x) < 1e-4f ? 0.0f : x);
        }
    free(v);
    return p;
}

/* ---- activation sums of squares ----------------------------------------- */

static void check_act_norm(owl_dtype dt, int64_t rows, int64_t cols,
                           int64_t pad)
{
    owl_context *gctx = gpu_context(), *cctx = cpu_context();
    size_t xbytes = (size_t)(rows * (cols + pad)) * dt_size(dt);
    void *hx = make_matrix(dt, rows, cols, pad, 2.0f, (uint64_t)(rows + cols));
    void *dx = gpu_upload(hx, xbytes);
    float *hs = malloc((size_t)cols * 4), *got = malloc((size_t)cols * 4);
    assert_true(hs && got);
    test_fill_uniform(hs, (size_t)cols, 5);
    for (int64_t j = 0; j < cols; j++)
        hs[j] = fabsf(hs[j]) * 100; /* running sums from earlier batches */
    float *ds = gpu_upload(hs, (size_t)cols * 4);

    owl_tensor x_h, x_d, s_h, s_d;
    owl_tensor_init(&x_h, hx, dt, rows, cols);
    owl_tensor_init(&x_d, dx, dt, rows, cols);
    x_h.row_stride = x_d.row_stride = cols + pad;
    owl_tensor_init(&s_h, hs, OWL_DTYPE_F32, 1, cols);
    owl_tensor_init(&s_d, ds, OWL_DTYPE_F32, 1, cols);
    for (int call = 0; call < 2; call++) { /* accumulates */
        assert_owl_ok(cctx, owl_act_norm_accumulate(cctx, &x_h, &s_h));
        assert_owl_ok(gctx, owl_act_norm_accumulate(gctx, &x_d, &s_d));
    }
    gpu_download(got, ds, (size_t)cols * 4);
    for (int64_t j = 0; j < cols; j++) {
        /* two calls: two f32 roundings */
        double tol = 2 * ldexp(1.0, -23) * fabs((double)hs[j]);
        if (!(fabs((double)got[j] - (double)hs[j]) <= tol))
            fail_msg("%dx%d dtype %d: sumsq[%d] GPU %.9g, CPU %.9g",
                     (int)rows, (int)cols, (int)dt, (int)j, (double)got[j],
                     (double)hs[j]);
    }
    gpu_free(dx);
    gpu_free(ds);
    free(hx);
    free(hs);
    free(got);
    owl_context_free(gctx);
    owl_context_free(cctx);
}

/* Shapes with partial column tiles, few and many rows, every dtype,
 * dense and strided. */
static void test_act_norm_matches_cpu(void **state)
{
    (void)state;
    check_act_norm(OWL_DTYPE_F32, 1, 5, 0);
    check_act_norm(OWL_DTYPE_F32, 3000, 100, 7);
    check_act_norm(OWL_DTYPE_BF16, 517, 257, 0);
    check_act_norm(OWL_DTYPE_F16, 64, 33, 3);
}

/* ---- LOD ------------------------------------------------------------------ */

#define MATS 3

typedef struct {
    owl_dtype wdt[MATS], sdt[MATS];
    int64_t rows[MATS], cols[MATS], pad[MATS];
    void *hw[MATS], *hs[MATS], *dw[MATS], *ds[MATS];
    owl_tensor cw[MATS], cs[MATS], gw[MATS], gs[MATS];
} layer;

static float weight_at(const layer *l, int k, int64_t i, int64_t j)
{
    size_t idx = (size_t)(i * (l->cols[k] + l->pad[k]) + j);
    if (l->wdt[k] == OWL_DTYPE_F32)
        return ((const float *)l->hw[k])[idx];
    uint16_t h = ((const uint16_t *)l->hw[k])[idx];
    if (l->wdt[k] == OWL_DTYPE_BF16) {
        uint32_t u = (uint32_t)h << 16;
        float f;
        memcpy(&f, &u, 4);
        return f;
    }
    int e = (h >> 10) & 31, m = h & 1023;
    double v = e == 0 ? ldexp(m, -24) : ldexp(1024 + m, e - 25);
    return (float)((h & 0x8000) ? -v : v);
}

static double stat_at(const layer *l, int k, int64_t j)
{
    return l->sdt[k] == OWL_DTYPE_F64 ? ((const double *)l->hs[k])[j]
                                      : (double)((const float *)l->hs[k])[j];
}

/* q-like (f32, f32 statistic), a strided bf16 matrix with an f64
 * statistic, and an f16 one; a few input features with large norms make
 * outliers, as in LLMs. */
static void make_layer(layer *l, uint64_t seed)
{
    const owl_dtype wdt[MATS] = {OWL_DTYPE_F32, OWL_DTYPE_BF16, OWL_DTYPE_F16};
    const owl_dtype sdt[MATS] = {OWL_DTYPE_F32, OWL_DTYPE_F64, OWL_DTYPE_F32};
    const int64_t rows[MATS] = {96, 200, 64}, cols[MATS] = {96, 96, 300};
    const int64_t pad[MATS] = {0, 5, 2};
    for (int k = 0; k < MATS; k++) {
        l->wdt[k] = wdt[k];
        l->sdt[k] = sdt[k];
        l->rows[k] = rows[k];
        l->cols[k] = cols[k];
        l->pad[k] = pad[k];
        l->hw[k] = make_matrix(wdt[k], rows[k], cols[k], pad[k], 0.5f,
                               seed + (uint64_t)k);
        float *u = malloc((size_t)cols[k] * 4);
        l->hs[k] = calloc((size_t)cols[k], dt_size(sdt[k]));
        assert_true(u && l->hs[k]);
        test_fill_uniform(u, (size_t)cols[k], seed + 10 + (uint64_t)k);
        for (int64_t j = 0; j < cols[k]; j++) {
            double s = fabs((double)u[j]) * 10.0 + (j % 17 == 3 ? 5000.0 : 0);
            if (sdt[k] == OWL_DTYPE_F64)
                ((double *)l->hs[k])[j] = s;
            else
                ((float *)l->hs[k])[j] = (float)s;
        }
        free(u);
        size_t wbytes = (size_t)(rows[k] * (cols[k] + pad[k])) * dt_size(wdt[k]);
        size_t sbytes = (size_t)cols[k] * dt_size(sdt[k]);
        l->dw[k] = gpu_upload(l->hw[k], wbytes);
        l->ds[k] = gpu_upload(l->hs[k], sbytes);
        owl_tensor_init(&l->cw[k], l->hw[k], wdt[k], rows[k], cols[k]);
        owl_tensor_init(&l->gw[k], l->dw[k], wdt[k], rows[k], cols[k]);
        l->cw[k].row_stride = l->gw[k].row_stride = cols[k] + pad[k];
        owl_tensor_init(&l->cs[k], l->hs[k], sdt[k], 1, cols[k]);
        owl_tensor_init(&l->gs[k], l->ds[k], sdt[k], 1, cols[k]);
    }
}

static void free_layer(layer *l)
{
    for (int k = 0; k < MATS; k++) {
        gpu_free(l->dw[k]);
        gpu_free(l->ds[k]);
        free(l->hw[k]);
        free(l->hs[k]);
    }
}

/* Smallest |A_ij - thr| / thr over the layer, with thr = M * mean(A) from
 * a plain f64 sum on the host: how far the inputs are from a tie. */
static double threshold_margin(const layer *l, double M)
{
    double sum = 0, entries = 0;
    for (int k = 0; k < MATS; k++)
        for (int64_t i = 0; i < l->rows[k]; i++)
            for (int64_t j = 0; j < l->cols[k]; j++) {
                sum += fabs((double)weight_at(l, k, i, j)) * sqrt(stat_at(l, k, j));
                entries += 1;
            }
    double thr = M * (sum / entries), margin = INFINITY;
    for (int k = 0; k < MATS; k++)
        for (int64_t i = 0; i < l->rows[k]; i++)
            for (int64_t j = 0; j < l->cols[k]; j++) {
                double a = fabs((double)weight_at(l, k, i, j)) * sqrt(stat_at(l, k, j));
                double d = fabs(a - thr) / thr;
                if (d < margin)
                    margin = d;
            }
    return margin;
}

static void test_lod_matches_cpu(void **state)
{
    (void)state;
    owl_context *gctx = gpu_context(), *cctx = cpu_context();
    layer l;
    make_layer(&l, 21);
    const double Ms[] = {2.0, 5.0, 13.0};
    float *dr = gpu_alloc(sizeof(float));
    for (size_t i = 0; i < sizeof Ms / sizeof Ms[0]; i++) {
        assert_true(threshold_margin(&l, Ms[i]) > 1e-9);
        double want = -1, got = -2;
        assert_owl_ok(cctx, owl_lod_compute(cctx, l.cw, l.cs, MATS, Ms[i], &want));
        assert_owl_ok(gctx, owl_lod_compute(gctx, l.gw, l.gs, MATS, Ms[i], &got));
        if (got != want)
            fail_msg("M = %g: GPU ratio %.17g, CPU %.17g", Ms[i], got, want);
        if (i == 1)
            assert_true(want > 0); /* the case has outliers */

        /* The asynchronous form into a device f32 scalar. */
        owl_tensor rt;
        owl_tensor_init(&rt, dr, OWL_DTYPE_F32, 1, 1);
        assert_owl_ok(gctx, owl_lod_compute_async(gctx, l.gw, l.gs, MATS, Ms[i], &rt));
        assert_owl_ok(gctx, owl_context_synchronize(gctx));
        float r32 = -1;
        gpu_download(&r32, dr, sizeof r32);
        assert_true(r32 == (float)want);
    }
    gpu_free(dr);
    free_layer(&l);
    owl_context_free(gctx);
    owl_context_free(cctx);
}

/* Bad values found on the device: reported by the waiting call, NaN from
 * the asynchronous one; nothing else is written. */
static void test_lod_bad_values(void **state)
{
    (void)state;
    owl_context *gctx = gpu_context();
    layer l;
    make_layer(&l, 3);
    float *dr = gpu_alloc(sizeof(float));
    owl_tensor rt;
    owl_tensor_init(&rt, dr, OWL_DTYPE_F32, 1, 1);
    double r = -7;

    /* A NaN statistic (f32, matrix 2), then a negative one (f64, matrix 1). */
    float nan32 = NAN;
    float *s2 = l.ds[2];
    float keep2;
    gpu_download(&keep2, s2 + 7, 4);
    assert_int_equal(cudaMemcpy(s2 + 7, &nan32, 4, cudaMemcpyHostToDevice),
                     cudaSuccess);
    assert_owl_status(gctx, owl_lod_compute(gctx, l.gw, l.gs, MATS, 5, &r),
                      OWL_ERR_NONFINITE);
    assert_true(r == -7);
    assert_owl_ok(gctx, owl_lod_compute_async(gctx, l.gw, l.gs, MATS, 5, &rt));
    float r32 = 0;
    gpu_download(&r32, dr, 4);
    assert_true(isnan(r32));
    assert_int_equal(cudaMemcpy(s2 + 7, &keep2, 4, cudaMemcpyHostToDevice),
                     cudaSuccess);

    double neg = -1.0, keep1;
    double *s1 = l.ds[1];
    gpu_download(&keep1, s1 + 3, 8);
    assert_int_equal(cudaMemcpy(s1 + 3, &neg, 8, cudaMemcpyHostToDevice),
                     cudaSuccess);
    assert_owl_status(gctx, owl_lod_compute(gctx, l.gw, l.gs, MATS, 5, &r),
                      OWL_ERR_INVALID_ARGUMENT);
    assert_int_equal(cudaMemcpy(s1 + 3, &keep1, 8, cudaMemcpyHostToDevice),
                     cudaSuccess);

    /* An Inf weight (f32, matrix 0). */
    float inf = INFINITY, keep0;
    float *w0 = l.dw[0];
    gpu_download(&keep0, w0 + 50, 4);
    assert_int_equal(cudaMemcpy(w0 + 50, &inf, 4, cudaMemcpyHostToDevice),
                     cudaSuccess);
    assert_owl_status(gctx, owl_lod_compute(gctx, l.gw, l.gs, MATS, 5, &r),
                      OWL_ERR_NONFINITE);
    assert_true(r == -7);
    assert_int_equal(cudaMemcpy(w0 + 50, &keep0, 4, cudaMemcpyHostToDevice),
                     cudaSuccess);

    /* Restored: a ratio again. */
    assert_owl_ok(gctx, owl_lod_compute(gctx, l.gw, l.gs, MATS, 5, &r));
    assert_true(r >= 0 && r <= 1);
    gpu_free(dr);
    free_layer(&l);
    owl_context_free(gctx);
}

/* Host memory and dtypes the CUDA backend does not take: errors, not
 * faults. */
static void test_validation(void **state)
{
    (void)state;
    owl_context *gctx = gpu_context();
    layer l;
    make_layer(&l, 9);
    double r = -7;
    /* A host weight among device ones. */
    owl_tensor mixed[MATS] = {l.gw[0], l.cw[1], l.gw[2]};
    assert_owl_status(gctx, owl_lod_compute(gctx, mixed, l.gs, MATS, 5, &r),
                      OWL_ERR_INVALID_ARGUMENT);
    assert_non_null(strstr(owl_context_last_error(gctx), "weights[1]"));
    assert_owl_status(gctx, owl_lod_compute(gctx, l.gw, l.cs, MATS, 5, &r),
                      OWL_ERR_INVALID_ARGUMENT);
    assert_owl_status(gctx, owl_lod_compute(gctx, l.gw, l.gs, MATS, 0, &r),
                      OWL_ERR_INVALID_ARGUMENT);
    assert_true(r == -7);

    /* The asynchronous ratio: f32 device memory only. */
    float hr = -7;
    double *d64 = gpu_alloc(8);
    owl_tensor rt;
    owl_tensor_init(&rt, &hr, OWL_DTYPE_F32, 1, 1);
    assert_owl_status(gctx, owl_lod_compute_async(gctx, l.gw, l.gs, MATS, 5, &rt),
                      OWL_ERR_INVALID_ARGUMENT);
    assert_true(hr == -7);
    owl_tensor_init(&rt, d64, OWL_DTYPE_F64, 1, 1);
    assert_owl_status(gctx, owl_lod_compute_async(gctx, l.gw, l.gs, MATS, 5, &rt),
                      OWL_ERR_DTYPE);

    /* Sums of squares: f32 device memory only. */
    owl_tensor x, s;
    owl_tensor_init(&x, l.dw[0], OWL_DTYPE_F32, l.rows[0], l.cols[0]);
    owl_tensor_init(&s, gpu_alloc((size_t)l.cols[0] * 8), OWL_DTYPE_F64, 1,
                    l.cols[0]);
    assert_owl_status(gctx, owl_act_norm_accumulate(gctx, &x, &s),
                      OWL_ERR_DTYPE);
    gpu_free(s.data);
    float *hs = calloc((size_t)l.cols[0], 4);
    assert_non_null(hs);
    owl_tensor_init(&s, hs, OWL_DTYPE_F32, 1, l.cols[0]);
    assert_owl_status(gctx, owl_act_norm_accumulate(gctx, &x, &s),
                      OWL_ERR_INVALID_ARGUMENT);
    owl_tensor_init(&x, l.hw[0], OWL_DTYPE_F32, l.rows[0], l.cols[0]);
    owl_tensor_init(&s, l.ds[0], OWL_DTYPE_F32, 1, l.cols[0]);
    assert_owl_status(gctx, owl_act_norm_accumulate(gctx, &x, &s),
                      OWL_ERR_INVALID_ARGUMENT);
    free(hs);
    gpu_free(d64);
    free_layer(&l);
    owl_context_free(gctx);
}

/* Work on a non-blocking stream, checked after synchronising it alone. */
static void test_stream_ordering(void **state)
{
    (void)state;
    cudaStream_t st;
    assert_int_equal(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking),
                     cudaSuccess);
    owl_context *gctx = gpu_context(), *cctx = cpu_context();
    layer l;
    make_layer(&l, 33);
    float *dr = gpu_alloc(4);
    /* Matrix 0 doubles as an activation batch, summed into a zero f32
     * vector of its width. */
    int64_t n = l.cols[0];
    float *zero = calloc((size_t)n, 4), *got = malloc((size_t)n * 4);
    assert_true(zero && got);
    float *ds = gpu_upload(zero, (size_t)n * 4);
    assert_int_equal(cudaDeviceSynchronize(), cudaSuccess);
    assert_owl_ok(gctx, owl_context_set_stream(gctx, st));

    owl_tensor rt, s_d, s_h;
    owl_tensor_init(&rt, dr, OWL_DTYPE_F32, 1, 1);
    owl_tensor_init(&s_d, ds, OWL_DTYPE_F32, 1, n);
    owl_tensor_init(&s_h, zero, OWL_DTYPE_F32, 1, n);
    assert_owl_ok(gctx, owl_act_norm_accumulate(gctx, &l.gw[0], &s_d));
    assert_owl_ok(gctx, owl_lod_compute_async(gctx, l.gw, l.gs, MATS, 5, &rt));
    assert_int_equal(cudaStreamSynchronize(st), cudaSuccess);

    float r32 = -1;
    assert_int_equal(cudaMemcpy(&r32, dr, 4, cudaMemcpyDeviceToHost), cudaSuccess);
    assert_int_equal(cudaMemcpy(got, ds, (size_t)n * 4, cudaMemcpyDeviceToHost),
                     cudaSuccess);
    double want = -1;
    assert_owl_ok(cctx, owl_lod_compute(cctx, l.cw, l.cs, MATS, 5, &want));
    assert_true(threshold_margin(&l, 5) > 1e-9);
    assert_true(r32 == (float)want);
    assert_owl_ok(cctx, owl_act_norm_accumulate(cctx, &l.cw[0], &s_h));
    for (int64_t j = 0; j < n; j++)
        assert_true(fabs((double)got[j] - (double)zero[j]) <=
                    ldexp(1.0, -23) * fabs((double)zero[j]));

    owl_context_free(gctx);
    assert_int_equal(cudaStreamDestroy(st), cudaSuccess);
    gpu_free(dr);
    gpu_free(ds);
    free(zero);
    free(got);
    free_layer(&l);
    owl_context_free(cctx);
}

int main(void)
{
    gpu_require_device();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_act_norm_matches_cpu),
        cmocka_unit_test(test_lod_matches_cpu),
        cmocka_unit_test(test_lod_bad_values),
        cmocka_unit_test(test_validation),
        cmocka_unit_test(test_stream_ordering),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
