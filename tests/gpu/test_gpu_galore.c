/* The GaLore projector, the fused low-rank AdamW step and PL_Alpha_Hill on
 * CUDA, each against the CPU backend on identical inputs (the CPU backend
 * is itself checked against LAPACK, PyTorch and hand vectors by the 'cpu'
 * suite). Exits 77 (SKIP) without a device.
 *
 * Inputs are built with a known spectrum, G = sum_i s_i u_i v_i^T with
 * orthonormal u, v made here, so the top-r singular vectors are well
 * separated and both backends must find the same ones. Values are rounded
 * to bf16 (and small ones zeroed) so that f32, bf16 and f16 copies of G
 * hold exactly the same numbers.
 *
 * Tolerances (f32 on both sides, different summation orders, cuSOLVER
 * against LAPACK):
 *   projection R                       relative L2 1e-4
 *   basis vectors (gaps s_i/s_i+1 >= 2) max |diff| 2e-4 per entry
 *   back-projection, f32 / f16 / bf16  relative L2 1e-4 / 1e-3 / 6e-3
 *   RANDOMIZED captured energy         >= 99% of EXACT's; GPU vs CPU
 *                                      (same sketch) within 1e-4
 *   low-rank AdamW, f32 weights        relative L2 of the change 2e-3
 *   low-rank AdamW, 16-bit weights     4 ulps of the weight per entry
 *   PL_Alpha_Hill                      relative 1e-3 (MEDIAN); 2e-2
 *                                      (FIX_FINGER, KS_SCAN, whose cutoff
 *                                      may move to a neighbour) */
#include "../common/testutil.h"
#include "gpu_util.h"

#include <cuda_runtime_api.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static owl_context *gctx, *cctx;

/* ---- helpers ----------------------------------------------------------- */

static void *xmalloc(size_t bytes)
{
    void *p = calloc(1, bytes ? bytes : 1);
    assert_non_null(p);
    return p;
}

static owl_tensor tens(void *data, owl_dtype dt, int64_t rows, int64_t cols,
                       int64_t ld)
{
    owl_tensor t;
    owl_tensor_init(&t, data, dt, rows, cols);
    t.row_stride = ld;
    return t;
}

static size_t dt_size(owl_dtype dt)
{
    return dt == OWL_DTYPE_F32 ? 4 : 2;
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
    return (uint16_t)(((u >> 16) & 0x8000u) | (exp << 10) |
                      ((u >> 13) & 0x3ffu));
}

/* Rounds x to bf16 and zeroes |x| < 2^-10, so bf16 and f16 (normal range
 * from 2^-14) both hold each value exactly. */
static void make_half_exact(float *x, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        float v = bf16_value(ref_bf16(x[i]));
        x[i] = fabsf(v) < 0x1p-10f ? 0.0f : v;
    }
}

/* x (rows x cols f32, dense) as dtype with row stride ld (host). */
static void *encode(const float *x, int64_t rows, int64_t cols, owl_dtype dt,
                    int64_t ld)
{
    size_t es = dt_size(dt);
    unsigned char *out = xmalloc((size_t)(rows * ld) * es);
    for (int64_t i = 0; i < rows; i++)
        for (int64_t j = 0; j < cols; j++) {
            float v = x[i * cols + j];
            size_t k = (size_t)(i * ld + j);
            if (dt == OWL_DTYPE_F32)
                memcpy(out + 4 * k, &v, 4);
            else {
                uint16_t h = dt == OWL_DTYPE_BF16 ? ref_bf16(v) : f16_exact(v);
                memcpy(out + 2 * k, &h, 2);
            }
        }
    return out;
}

static float decode1(const void *base, owl_dtype dt, size_t k)
{
    if (dt == OWL_DTYPE_F32)
        return ((const float *)base)[k];
    uint16_t h = ((const uint16_t *)base)[k];
    return dt == OWL_DTYPE_BF16 ? bf16_value(h) : f16_value(h);
}

/* Columns of q (rows x cols, row-major, double) made orthonormal. */
static void orthonormal_columns(double *q, int rows, int cols, uint64_t seed)
{
    float *z = xmalloc((size_t)(rows * cols) * sizeof(float));
    test_fill_normal(z, (size_t)(rows * cols), seed);
    for (int i = 0; i < rows * cols; i++)
        q[i] = z[i];
    free(z);
    for (int pass = 0; pass < 2; pass++) /* Gram-Schmidt, twice */
        for (int j = 0; j < cols; j++) {
            for (int k = 0; k < j; k++) {
                double d = 0;
                for (int i = 0; i < rows; i++)
                    d += q[i * cols + j] * q[i * cols + k];
                for (int i = 0; i < rows; i++)
                    q[i * cols + j] -= d * q[i * cols + k];
            }
            double nrm = 0;
            for (int i = 0; i < rows; i++)
                nrm += q[i * cols + j] * q[i * cols + j];
            nrm = sqrt(nrm);
            for (int i = 0; i < rows; i++)
                q[i * cols + j] /= nrm;
        }
}

/* g (m x n) = sum_i s[i] u_i v_i^T over `count` terms, then half-exact. */
static void spectrum_matrix(float *g, int m, int n, const double *s,
                            int count, uint64_t seed)
{
    double *u = xmalloc((size_t)(m * count) * sizeof(double));
    double *v = xmalloc((size_t)(n * count) * sizeof(double));
    orthonormal_columns(u, m, count, seed);
    orthonormal_columns(v, n, count, seed + 1);
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
            double acc = 0;
            for (int k = 0; k < count; k++)
                acc += s[k] * u[i * count + k] * v[j * count + k];
            g[i * n + j] = (float)acc;
        }
    free(u);
    free(v);
    make_half_exact(g, (size_t)(m * n));
}

/* s_i = top * ratio^i. */
static void geometric(double *s, int count, double top, double ratio)
{
    for (int i = 0; i < count; i++)
        s[i] = top * pow(ratio, i);
}

static double rel_l2(const float *a, const float *b, size_t n)
{
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)a[i] - (double)b[i];
        num += d * d;
        den += (double)b[i] * (double)b[i];
    }
    return sqrt(num / (den > 0 ? den : 1));
}

static void *dev_copy(const void *host, size_t bytes)
{
    return gpu_upload(host, bytes);
}

static void fetch(void *host, const void *dev, size_t bytes)
{
    gpu_download(host, dev, bytes);
}

static owl_galore_options popts(uint64_t m, uint64_t n, uint64_t r,
                                uint64_t gap, owl_proj_type type,
                                owl_svd_method method)
{
    owl_galore_options o;
    owl_galore_options_init(&o, sizeof o);
    o.rows = m;
    o.cols = n;
    o.rank = r;
    o.update_gap = gap;
    o.scale = 0.5;
    o.proj_type = type;
    o.svd_method = method;
    return o;
}

static owl_galore *make_proj(owl_context *ctx, const owl_galore_options *o)
{
    owl_galore *p = NULL;
    assert_owl_ok(ctx, owl_galore_create(ctx, o, &p));
    return p;
}

/* Basis of a projector as host f32 vectors-as-rows (r x d). */
static float *basis_rows(owl_context *ctx, owl_galore *p, bool gpu)
{
    uint64_t lr_rows, lr_cols;
    assert_owl_ok(ctx, owl_galore_lowrank_shape(p, &lr_rows, &lr_cols));
    bool left = owl_galore_is_left(p);
    int64_t r = left ? (int64_t)lr_rows : (int64_t)lr_cols;
    int64_t d = left ? (int64_t)lr_cols : (int64_t)lr_rows;
    int64_t rows = left ? d : r, cols = left ? r : d; /* P m x r, Q r x n */
    size_t bytes = (size_t)(r * d) * sizeof(float);
    float *host = xmalloc(bytes);
    void *buf = gpu ? gpu_alloc(bytes) : host;
    owl_tensor t = tens(buf, OWL_DTYPE_F32, rows, cols, cols);
    assert_owl_ok(ctx, owl_galore_get_basis(p, &t));
    if (gpu) {
        fetch(host, buf, bytes);
        gpu_free(buf);
    }
    float *out = xmalloc(bytes);
    for (int64_t j = 0; j < r; j++)
        for (int64_t i = 0; i < d; i++)
            out[j * d + i] = left ? host[i * r + j] : host[j * d + i];
    free(host);
    return out;
}

/* Each row's largest-magnitude entry (first on ties) is positive. */
static void assert_canonical(const float *rows, int64_t r, int64_t d)
{
    for (int64_t j = 0; j < r; j++) {
        const float *x = rows + j * d;
        int64_t best = 0;
        for (int64_t i = 1; i < d; i++)
            if (fabsf(x[i]) > fabsf(x[best]))
                best = i;
        if (!(x[best] > 0))
            fail_msg("basis vector %lld: largest entry %g is not positive",
                     (long long)j, x[best]);
    }
}

static void assert_bases_close(const float *a, const float *b, int64_t r,
                               int64_t d, double tol)
{
    for (int64_t k = 0; k < r * d; k++)
        if (fabs((double)a[k] - (double)b[k]) > tol)
            fail_msg("basis entry (%lld, %lld): GPU %g, CPU %g (tol %g)",
                     (long long)(k / d), (long long)(k % d), a[k], b[k], tol);
}

/* Fraction of ||G||_F^2 captured by the r rows of `basis` (d = m for a
 * left basis, else n), in double. */
static double captured_energy(const float *g, int m, int n,
                              const float *basis, int r, bool left)
{
    double total = 0, kept = 0;
    for (int i = 0; i < m * n; i++)
        total += (double)g[i] * g[i];
    for (int j = 0; j < r; j++) {
        if (left) { /* (P^T G)[j, :] */
            for (int c = 0; c < n; c++) {
                double acc = 0;
                for (int i = 0; i < m; i++)
                    acc += (double)basis[j * m + i] * g[i * n + c];
                kept += acc * acc;
            }
        } else { /* (G Q^T)[:, j] */
            for (int i = 0; i < m; i++) {
                double acc = 0;
                for (int c = 0; c < n; c++)
                    acc += (double)g[i * n + c] * basis[j * n + c];
                kept += acc * acc;
            }
        }
    }
    return kept / total;
}

/* ---- projections ---------------------------------------------------- */

static void check_projection_case(int m, int n, owl_proj_type type,
                                  owl_dtype gdt, int64_t ld)
{
    const int r = 4;
    double s[64];
    int mn = m < n ? m : n;
    geometric(s, mn, 16.0, 0.5);
    float *g = xmalloc((size_t)(m * n) * sizeof(float));
    spectrum_matrix(g, m, n, s, mn, 100 + (uint64_t)(m * 7 + type));
    void *gh = encode(g, m, n, gdt, ld);
    size_t gbytes = (size_t)(m * ld) * dt_size(gdt);
    void *gd = dev_copy(gh, gbytes);
    owl_tensor tg_c = tens(gh, gdt, m, n, ld), tg_g = tens(gd, gdt, m, n, ld);

    owl_galore_options o = popts((uint64_t)m, (uint64_t)n, r, 1000, type,
                                 OWL_SVD_EXACT);
    owl_galore *pc = make_proj(cctx, &o), *pg = make_proj(gctx, &o);
    uint64_t lr_rows, lr_cols;
    assert_owl_ok(cctx, owl_galore_lowrank_shape(pc, &lr_rows, &lr_cols));
    size_t lr = (size_t)(lr_rows * lr_cols);
    float *rc = xmalloc(lr * sizeof(float)), *rg = xmalloc(lr * sizeof(float));
    float *rd = gpu_alloc(lr * sizeof(float));
    owl_tensor trc = tens(rc, OWL_DTYPE_F32, (int64_t)lr_rows,
                          (int64_t)lr_cols, (int64_t)lr_cols);
    owl_tensor trd = tens(rd, OWL_DTYPE_F32, (int64_t)lr_rows,
                          (int64_t)lr_cols, (int64_t)lr_cols);
    int32_t rfc = 0, rfg = 0;
    assert_owl_ok(cctx, owl_galore_project(pc, 0, &tg_c, &trc, &rfc));
    assert_owl_ok(gctx, owl_galore_project(pg, 0, &tg_g, &trd, &rfg));
    assert_int_equal(rfc, 1);
    assert_int_equal(rfg, 1);
    assert_int_equal(owl_galore_is_left(pc), owl_galore_is_left(pg));
    fetch(rg, rd, lr * sizeof(float));
    double e = rel_l2(rg, rc, lr);
    if (e > 1e-4)
        fail_msg("%dx%d type %d dtype %d ld %lld: R rel L2 %g", m, n,
                 (int)type, (int)gdt, (long long)ld, e);

    bool left = owl_galore_is_left(pc);
    int64_t d = left ? m : n;
    float *bc = basis_rows(cctx, pc, false), *bg = basis_rows(gctx, pg, true);
    assert_canonical(bg, r, d);
    assert_bases_close(bg, bc, r, d, 2e-4);

    /* A second projection without refresh reuses the basis. */
    assert_owl_ok(gctx, owl_galore_project(pg, 1, &tg_g, &trd, &rfg));
    assert_int_equal(rfg, 0);
    assert_int_equal(owl_galore_refresh_count(pg), 1);

    /* project_back of the CPU's R into each output dtype, from an f32 and
     * from a bf16 low-rank input. */
    uint16_t *rc16 = xmalloc(lr * 2);
    for (size_t k = 0; k < lr; k++)
        rc16[k] = ref_bf16(rc[k]);
    void *lows_h[2] = {rc, rc16};
    owl_dtype lows_dt[2] = {OWL_DTYPE_F32, OWL_DTYPE_BF16};
    const owl_dtype outs[3] = {OWL_DTYPE_F32, OWL_DTYPE_BF16, OWL_DTYPE_F16};
    const double tol[3] = {1e-4, 6e-3, 1e-3};
    for (int li = 0; li < 2; li++) {
        void *low_d = dev_copy(lows_h[li], lr * dt_size(lows_dt[li]));
        owl_tensor tlc = tens(lows_h[li], lows_dt[li], (int64_t)lr_rows,
                              (int64_t)lr_cols, (int64_t)lr_cols);
        owl_tensor tlg = tlc;
        tlg.data = low_d;
        for (int oi = 0; oi < 3; oi++) {
            owl_dtype odt = outs[oi];
            int64_t old = n + 5; /* strided output */
            size_t ob = (size_t)(m * old) * dt_size(odt);
            void *oc = xmalloc(ob), *og = xmalloc(ob), *od = gpu_alloc(ob);
            owl_tensor toc = tens(oc, odt, m, n, old);
            owl_tensor tod = tens(od, odt, m, n, old);
            assert_owl_ok(cctx, owl_galore_project_back(pc, &tlc, &toc));
            assert_owl_ok(gctx, owl_galore_project_back(pg, &tlg, &tod));
            fetch(og, od, ob);
            float *a = xmalloc((size_t)(m * n) * 4);
            float *b = xmalloc((size_t)(m * n) * 4);
            for (int i = 0; i < m; i++)
                for (int j = 0; j < n; j++) {
                    a[i * n + j] = decode1(og, odt, (size_t)(i * old + j));
                    b[i * n + j] = decode1(oc, odt, (size_t)(i * old + j));
                }
            double eb = rel_l2(a, b, (size_t)(m * n));
            if (eb > tol[oi])
                fail_msg("%dx%d type %d: back (low dtype %d, out dtype %d) "
                         "rel L2 %g > %g",
                         m, n, (int)type, (int)lows_dt[li], (int)odt, eb,
                         tol[oi]);
            free(a);
            free(b);
            free(oc);
            free(og);
            gpu_free(od);
        }
        gpu_free(low_d);
    }
    free(rc16);
    free(bc);
    free(bg);
    free(rc);
    free(rg);
    gpu_free(rd);
    owl_galore_free(pc);
    owl_galore_free(pg);
    gpu_free(gd);
    free(gh);
    free(g);
}

static void test_projections_match_cpu(void **state)
{
    (void)state;
    const int shapes[2][2] = {{24, 40}, {40, 24}};
    const owl_proj_type types[4] = {OWL_PROJ_STD, OWL_PROJ_REVERSE_STD,
                                    OWL_PROJ_LEFT, OWL_PROJ_RIGHT};
    const owl_dtype dts[3] = {OWL_DTYPE_F32, OWL_DTYPE_BF16, OWL_DTYPE_F16};
    for (int si = 0; si < 2; si++)
        for (int ti = 0; ti < 4; ti++)
            for (int di = 0; di < 3; di++)
                for (int pad = 0; pad < 2; pad++) {
                    int m = shapes[si][0], n = shapes[si][1];
                    check_projection_case(m, n, types[ti], dts[di],
                                          n + 3 * pad);
                }
}

/* A larger EXACT basis (cuSOLVER on a 200 x 120 matrix and its transpose,
 * r = 16, gaps of 1.25x between singular values). */
static void test_exact_basis_matches_cpu(void **state)
{
    (void)state;
    const int dims[2][2] = {{200, 120}, {120, 200}};
    for (int c = 0; c < 2; c++) {
        int m = dims[c][0], n = dims[c][1], mn = m < n ? m : n, r = 16;
        double *s = xmalloc((size_t)mn * sizeof(double));
        geometric(s, mn, 100.0, 0.8);
        float *g = xmalloc((size_t)(m * n) * sizeof(float));
        spectrum_matrix(g, m, n, s, mn, 7 + (uint64_t)c);
        void *gd = dev_copy(g, (size_t)(m * n) * 4);
        owl_tensor tc = tens(g, OWL_DTYPE_F32, m, n, n);
        owl_tensor tgd = tens(gd, OWL_DTYPE_F32, m, n, n);
        for (int side = 0; side < 2; side++) {
            owl_galore_options o =
                popts((uint64_t)m, (uint64_t)n, (uint64_t)r, 10,
                      side ? OWL_PROJ_RIGHT : OWL_PROJ_LEFT, OWL_SVD_EXACT);
            owl_galore *pc = make_proj(cctx, &o), *pg = make_proj(gctx, &o);
            assert_owl_ok(cctx, owl_galore_refresh(pc, &tc));
            assert_owl_ok(gctx, owl_galore_refresh(pg, &tgd));
            int64_t d = side ? n : m;
            float *bc = basis_rows(cctx, pc, false);
            float *bg = basis_rows(gctx, pg, true);
            assert_canonical(bg, r, d);
            assert_bases_close(bg, bc, r, d, 2e-4);
            free(bc);
            free(bg);
            owl_galore_free(pc);
            owl_galore_free(pg);
        }
        gpu_free(gd);
        free(g);
        free(s);
    }
}

/* RANDOMIZED captures (almost) what EXACT does, and both backends draw the
 * same sketch: a slowly decaying spectrum s_i = 1/(i+1), r = 16, p = 8,
 * q = 2. */
static void test_randomized_energy(void **state)
{
    (void)state;
    const int dims[2][2] = {{160, 96}, {96, 160}};
    for (int c = 0; c < 2; c++) {
        int m = dims[c][0], n = dims[c][1], mn = m < n ? m : n, r = 16;
        double *s = xmalloc((size_t)mn * sizeof(double));
        for (int i = 0; i < mn; i++)
            s[i] = 1.0 / (i + 1);
        float *g = xmalloc((size_t)(m * n) * sizeof(float));
        spectrum_matrix(g, m, n, s, mn, 31 + (uint64_t)c);
        void *gd = dev_copy(g, (size_t)(m * n) * 4);
        owl_tensor tc = tens(g, OWL_DTYPE_F32, m, n, n);
        owl_tensor tgd = tens(gd, OWL_DTYPE_F32, m, n, n);
        bool left = m < n; /* STD */
        int64_t d = left ? m : n;
        owl_galore_options oe = popts((uint64_t)m, (uint64_t)n, (uint64_t)r,
                                      10, OWL_PROJ_STD, OWL_SVD_EXACT);
        owl_galore_options orr = oe;
        orr.svd_method = OWL_SVD_RANDOMIZED;
        orr.seed = 5;
        owl_galore *pe = make_proj(gctx, &oe), *pr = make_proj(gctx, &orr);
        owl_galore *prc = make_proj(cctx, &orr);
        assert_owl_ok(gctx, owl_galore_refresh(pe, &tgd));
        assert_owl_ok(gctx, owl_galore_refresh(pr, &tgd));
        assert_owl_ok(cctx, owl_galore_refresh(prc, &tc));
        float *be = basis_rows(gctx, pe, true), *br = basis_rows(gctx, pr, true);
        float *brc = basis_rows(cctx, prc, false);
        assert_canonical(br, r, d);
        /* orthonormal rows */
        for (int a = 0; a < r; a++)
            for (int b = 0; b < r; b++) {
                double dot = 0;
                for (int64_t i = 0; i < d; i++)
                    dot += (double)br[a * d + i] * br[b * d + i];
                if (fabs(dot - (a == b)) > 1e-4)
                    fail_msg("randomized basis rows %d, %d: dot %g", a, b, dot);
            }
        double ee = captured_energy(g, m, n, be, r, left);
        double er = captured_energy(g, m, n, br, r, left);
        double erc = captured_energy(g, m, n, brc, r, left);
        printf("# %dx%d r=%d: captured energy exact %.6f, randomized %.6f "
               "(CPU %.6f)\n", m, n, r, ee, er, erc);
        assert_true(er >= 0.99 * ee);
        assert_true(er <= ee + 1e-5); /* EXACT is optimal */
        assert_true(fabs(er - erc) <= 1e-4);
        free(be);
        free(br);
        free(brc);
        owl_galore_free(pe);
        owl_galore_free(pr);
        owl_galore_free(prc);
        gpu_free(gd);
        free(g);
        free(s);
    }
}

/* ---- the fused low-rank step ----------------------------------------- */

typedef struct {
    int m, n;
    owl_dtype wdt, gdt, mdt;
    owl_adamw_semantics sem;
    owl_refresh_moments on_refresh;
    owl_svd_method svd;
    double wd;
    owl_rounding rounding;
} step_case;

/* Gradient of step t: a fixed well-separated part plus a small varying
 * one, half-exact. */
static void step_grad(float *g, int m, int n, int t, const float *base)
{
    float *noise = xmalloc((size_t)(m * n) * 4);
    test_fill_normal(noise, (size_t)(m * n), 1000 + (uint64_t)t);
    for (int i = 0; i < m * n; i++)
        g[i] = base[i] + 0.02f * noise[i];
    make_half_exact(g, (size_t)(m * n));
    free(noise);
}

static double ulp_of(owl_dtype dt, double x)
{
    int e = 0;
    frexp(x, &e); /* |x| in [2^(e-1), 2^e) */
    int mant = dt == OWL_DTYPE_BF16 ? 8 : dt == OWL_DTYPE_F16 ? 11 : 24;
    return ldexp(1.0, e - mant);
}

static owl_adamw_options aopts(const step_case *c)
{
    owl_adamw_options o;
    owl_adamw_options_init(&o, sizeof o);
    o.semantics = c->sem;
    o.moment_dtype = c->mdt;
    o.on_refresh = c->on_refresh;
    o.weight_decay = c->wd;
    o.rounding = c->rounding;
    o.seed = 42;
    return o;
}

static void run_steps_case(const step_case *c)
{
    const int m = c->m, n = c->n, r = 4, steps = 6;
    const int mn = m < n ? m : n;
    double *s = xmalloc((size_t)mn * sizeof(double));
    geometric(s, mn, 8.0, 0.5);
    float *base = xmalloc((size_t)(m * n) * 4);
    spectrum_matrix(base, m, n, s, mn, 77);
    float *w0 = xmalloc((size_t)(m * n) * 4);
    test_fill_uniform(w0, (size_t)(m * n), 5);
    make_half_exact(w0, (size_t)(m * n));
    const int64_t ldw = n + 2;

    owl_galore_options po = popts((uint64_t)m, (uint64_t)n, r, 2,
                                  OWL_PROJ_STD, c->svd);
    owl_galore *pc = make_proj(cctx, &po), *pg = make_proj(gctx, &po);
    uint64_t lr_rows, lr_cols;
    assert_owl_ok(cctx, owl_galore_lowrank_shape(pc, &lr_rows, &lr_cols));
    owl_adamw_options ao = aopts(c);
    owl_adamw *ac = NULL, *ag = NULL;
    assert_owl_ok(cctx, owl_adamw_create(cctx, &ao, lr_rows, lr_cols, &ac));
    assert_owl_ok(gctx, owl_adamw_create(gctx, &ao, lr_rows, lr_cols, &ag));

    void *wh = encode(w0, m, n, c->wdt, ldw);
    size_t wbytes = (size_t)(m * ldw) * dt_size(c->wdt);
    void *wd = dev_copy(wh, wbytes);
    owl_tensor twc = tens(wh, c->wdt, m, n, ldw), twg = tens(wd, c->wdt, m, n, ldw);
    float *g = xmalloc((size_t)(m * n) * 4);
    for (int t = 0; t < steps; t++) {
        step_grad(g, m, n, t, base);
        void *gh = encode(g, m, n, c->gdt, n);
        void *gd = dev_copy(gh, (size_t)(m * n) * dt_size(c->gdt));
        owl_tensor tgc = tens(gh, c->gdt, m, n, n), tgg = tens(gd, c->gdt, m, n, n);
        assert_owl_ok(cctx, owl_adamw_lowrank(ac, pc, &twc, &tgc, 1e-2));
        assert_owl_ok(gctx, owl_adamw_lowrank(ag, pg, &twg, &tgg, 1e-2));
        gpu_free(gd);
        free(gh);
    }
    assert_int_equal(owl_adamw_step_count(ag), owl_adamw_step_count(ac));
    assert_int_equal(owl_galore_refresh_count(pg), owl_galore_refresh_count(pc));
    void *wout = xmalloc(wbytes);
    fetch(wout, wd, wbytes);
    float *dg = xmalloc((size_t)(m * n) * 4), *dc = xmalloc((size_t)(m * n) * 4);
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
            size_t k = (size_t)(i * ldw + j);
            float a = decode1(wout, c->wdt, k), b = decode1(wh, c->wdt, k);
            if (c->wdt != OWL_DTYPE_F32) {
                double tol = 4 * ulp_of(c->wdt, fmax(fabs(a), fabs(b))) + 1e-6;
                if (fabs((double)a - b) > tol)
                    fail_msg("case w%d g%d m%d sem %d: W[%d,%d] GPU %g CPU %g",
                             (int)c->wdt, (int)c->gdt, (int)c->mdt,
                             (int)c->sem, i, j, a, b);
            }
            dg[i * n + j] = a - w0[i * n + j];
            dc[i * n + j] = b - w0[i * n + j];
        }
    double e = rel_l2(dg, dc, (size_t)(m * n));
    printf("# %dx%d w%d g%d m%d sem %d: change rel L2 %.2e\n", m, n,
           (int)c->wdt, (int)c->gdt, (int)c->mdt, (int)c->sem, e);
    if (c->wdt == OWL_DTYPE_F32 && e > 2e-3)
        fail_msg("f32 weight change rel L2 %g > 2e-3", e);
    if (c->wdt != OWL_DTYPE_F32 && e > 5e-2)
        fail_msg("16-bit weight change rel L2 %g > 5e-2", e);
    free(dg);
    free(dc);
    free(wout);
    free(g);
    gpu_free(wd);
    free(wh);
    owl_adamw_free(ac);
    owl_adamw_free(ag);
    owl_galore_free(pc);
    owl_galore_free(pg);
    free(w0);
    free(base);
    free(s);
}

static void test_lowrank_steps_match_cpu(void **state)
{
    (void)state;
    const step_case cases[] = {
        {48, 80, OWL_DTYPE_F32, OWL_DTYPE_F32, OWL_DTYPE_F32, OWL_ADAMW_GALORE,
         OWL_MOMENTS_KEEP, OWL_SVD_EXACT, 0.0, OWL_ROUND_NEAREST},
        {80, 48, OWL_DTYPE_F32, OWL_DTYPE_BF16, OWL_DTYPE_F32, OWL_ADAMW_TORCH,
         OWL_MOMENTS_RESET, OWL_SVD_EXACT, 0.1, OWL_ROUND_NEAREST},
        {48, 80, OWL_DTYPE_BF16, OWL_DTYPE_BF16, OWL_DTYPE_BF16,
         OWL_ADAMW_GALORE, OWL_MOMENTS_KEEP, OWL_SVD_EXACT, 0.01,
         OWL_ROUND_NEAREST},
        {80, 48, OWL_DTYPE_BF16, OWL_DTYPE_F32, OWL_DTYPE_F32, OWL_ADAMW_TORCH,
         OWL_MOMENTS_RESET, OWL_SVD_RANDOMIZED, 0.0, OWL_ROUND_NEAREST},
        {48, 80, OWL_DTYPE_F16, OWL_DTYPE_F16, OWL_DTYPE_BF16,
         OWL_ADAMW_GALORE, OWL_MOMENTS_RESET, OWL_SVD_RANDOMIZED, 0.0,
         OWL_ROUND_NEAREST},
        /* the same random bits on both backends */
        {48, 80, OWL_DTYPE_BF16, OWL_DTYPE_F32, OWL_DTYPE_F32,
         OWL_ADAMW_GALORE, OWL_MOMENTS_KEEP, OWL_SVD_EXACT, 0.0,
         OWL_ROUND_STOCHASTIC},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        run_steps_case(&cases[i]);
}

/* A NaN gradient on CUDA: OWL_OK, counted, W, m, v and the basis exactly
 * as they were; the next good step lands where the CPU's second good step
 * does (its t did not move). Variants: every step refreshes (T = 1) with
 * KEEP and with RESET, and a skip between refreshes (T = 100). */
static void skip_case(uint64_t gap, owl_refresh_moments on_refresh)
{
    const int m = 40, n = 64, r = 4;
    const int mn = m < n ? m : n;
    double s[64];
    geometric(s, mn, 8.0, 0.5);
    float *base = xmalloc((size_t)(m * n) * 4), *g = xmalloc((size_t)(m * n) * 4);
    spectrum_matrix(base, m, n, s, mn, 3);
    float *w0 = xmalloc((size_t)(m * n) * 4);
    test_fill_uniform(w0, (size_t)(m * n), 9);
    const size_t wb = (size_t)(m * n) * 4;
    float *wc = xmalloc(wb);
    memcpy(wc, w0, wb);
    float *wd = dev_copy(w0, wb);
    owl_tensor twc = tens(wc, OWL_DTYPE_F32, m, n, n);
    owl_tensor twg = tens(wd, OWL_DTYPE_F32, m, n, n);
    owl_galore_options po = popts(m, n, r, gap, OWL_PROJ_STD, OWL_SVD_EXACT);
    owl_galore *pc = make_proj(cctx, &po), *pg = make_proj(gctx, &po);
    owl_adamw_options ao;
    owl_adamw_options_init(&ao, sizeof ao);
    ao.on_refresh = on_refresh;
    owl_adamw *ac = NULL, *ag = NULL;
    assert_owl_ok(cctx, owl_adamw_create(cctx, &ao, r, n, &ac));
    assert_owl_ok(gctx, owl_adamw_create(gctx, &ao, r, n, &ag));
    uint64_t skips0 = 0, skips1 = 0;
    assert_owl_ok(gctx, owl_context_nonfinite_skips(gctx, &skips0));

    /* step 1 (good) on both */
    step_grad(g, m, n, 0, base);
    float *gd = dev_copy(g, wb);
    owl_tensor tgc = tens(g, OWL_DTYPE_F32, m, n, n);
    owl_tensor tgg = tens(gd, OWL_DTYPE_F32, m, n, n);
    assert_owl_ok(cctx, owl_adamw_lowrank(ac, pc, &twc, &tgc, 1e-2));
    assert_owl_ok(gctx, owl_adamw_lowrank(ag, pg, &twg, &tgg, 1e-2));

    /* snapshot the GPU state */
    float *w1 = xmalloc(wb), *w2 = xmalloc(wb);
    fetch(w1, wd, wb);
    float *b1 = basis_rows(gctx, pg, true);
    size_t mb = (size_t)(r * n) * 4;
    float *mom_d = gpu_alloc(mb);
    float *m1 = xmalloc(mb), *v1 = xmalloc(mb), *m2 = xmalloc(mb),
          *v2 = xmalloc(mb);
    owl_tensor tm = tens(mom_d, OWL_DTYPE_F32, r, n, n);
    assert_owl_ok(gctx, owl_adamw_get_moment(ag, 0, &tm));
    fetch(m1, mom_d, mb);
    assert_owl_ok(gctx, owl_adamw_get_moment(ag, 1, &tm));
    fetch(v1, mom_d, mb);

    /* step 2: NaN in G */
    step_grad(g, m, n, 1, base);
    g[5 * n + 7] = NAN;
    float *gnan = dev_copy(g, wb);
    owl_tensor tgn_c = tens(g, OWL_DTYPE_F32, m, n, n);
    owl_tensor tgn_g = tens(gnan, OWL_DTYPE_F32, m, n, n);
    assert_owl_status(cctx, owl_adamw_lowrank(ac, pc, &twc, &tgn_c, 1e-2),
                      OWL_ERR_NONFINITE);
    assert_owl_ok(gctx, owl_adamw_lowrank(ag, pg, &twg, &tgn_g, 1e-2));
    assert_owl_ok(gctx, owl_context_nonfinite_skips(gctx, &skips1));
    assert_int_equal(skips1, skips0 + 1);
    fetch(w2, wd, wb);
    assert_memory_equal(w1, w2, wb);
    float *b2 = basis_rows(gctx, pg, true);
    assert_memory_equal(b1, b2, (size_t)(r * n) * 4);
    assert_owl_ok(gctx, owl_adamw_get_moment(ag, 0, &tm));
    fetch(m2, mom_d, mb);
    assert_owl_ok(gctx, owl_adamw_get_moment(ag, 1, &tm));
    fetch(v2, mom_d, mb);
    assert_memory_equal(m1, m2, mb);
    assert_memory_equal(v1, v2, mb);
    assert_int_equal(owl_adamw_bias_step(ag), owl_adamw_bias_step(ac));

    /* owl_galore_project with the NaN G: OWL_OK, out untouched */
    float *sentinel = xmalloc(mb);
    for (int i = 0; i < r * n; i++)
        sentinel[i] = 7.0f;
    float *outd = dev_copy(sentinel, mb);
    owl_tensor tout = tens(outd, OWL_DTYPE_F32, r, n, n);
    assert_owl_ok(gctx, owl_galore_project(pg, 1, &tgn_g, &tout, NULL));
    fetch(m2, outd, mb);
    assert_memory_equal(m2, sentinel, mb);
    free(b2);
    b2 = basis_rows(gctx, pg, true);
    assert_memory_equal(b1, b2, (size_t)(r * n) * 4);

    /* step 3 (good) on both: the same place */
    step_grad(g, m, n, 2, base);
    float *g3 = dev_copy(g, wb);
    owl_tensor tg3c = tens(g, OWL_DTYPE_F32, m, n, n);
    owl_tensor tg3g = tens(g3, OWL_DTYPE_F32, m, n, n);
    assert_owl_ok(cctx, owl_adamw_lowrank(ac, pc, &twc, &tg3c, 1e-2));
    assert_owl_ok(gctx, owl_adamw_lowrank(ag, pg, &twg, &tg3g, 1e-2));
    assert_int_equal(owl_adamw_bias_step(ag), owl_adamw_bias_step(ac));
    fetch(w2, wd, wb);
    float *dg = xmalloc(wb), *dc = xmalloc(wb);
    for (int i = 0; i < m * n; i++) {
        dg[i] = w2[i] - w0[i];
        dc[i] = wc[i] - w0[i];
    }
    double e = rel_l2(dg, dc, (size_t)(m * n));
    if (e > 2e-3)
        fail_msg("T %llu on_refresh %d: change after the skip rel L2 %g",
                 (unsigned long long)gap, (int)on_refresh, e);
    free(dg);
    free(dc);
    free(sentinel);
    gpu_free(outd);
    gpu_free(g3);
    gpu_free(gnan);
    gpu_free(gd);
    gpu_free(mom_d);
    free(m1);
    free(v1);
    free(m2);
    free(v2);
    free(b1);
    free(b2);
    free(w1);
    free(w2);
    owl_adamw_free(ac);
    owl_adamw_free(ag);
    owl_galore_free(pc);
    owl_galore_free(pg);
    gpu_free(wd);
    free(wc);
    free(w0);
    free(g);
    free(base);
}

static void test_nonfinite_step_skipped(void **state)
{
    (void)state;
    skip_case(1, OWL_MOMENTS_KEEP);
    skip_case(1, OWL_MOMENTS_RESET);
    skip_case(100, OWL_MOMENTS_KEEP);
}

/* ---- stream ordering -------------------------------------------------- */

/* On a non-blocking stream, inputs arrive by cudaMemcpyAsync and outputs
 * leave the same way; only that stream is synchronised before comparing
 * with the CPU. A call running outside the stream would read its input
 * before the upload lands. */
static void test_stream_ordering(void **state)
{
    (void)state;
    const int m = 48, n = 80, r = 4, mn = 48;
    cudaStream_t st;
    assert_int_equal(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking),
                     cudaSuccess);
    assert_owl_ok(gctx, owl_context_set_stream(gctx, st));
    double s[48];
    geometric(s, mn, 8.0, 0.5);
    const size_t gb = (size_t)(m * n) * 4;
    float *g = NULL, *w = NULL, *wout = NULL;
    assert_int_equal(cudaMallocHost((void **)&g, gb), cudaSuccess);
    assert_int_equal(cudaMallocHost((void **)&w, gb), cudaSuccess);
    assert_int_equal(cudaMallocHost((void **)&wout, gb), cudaSuccess);
    spectrum_matrix(g, m, n, s, mn, 11);
    test_fill_uniform(w, (size_t)(m * n), 12);
    float *wc = xmalloc(gb);
    memcpy(wc, w, gb);

    owl_galore_options po = popts(m, n, r, 1, OWL_PROJ_STD, OWL_SVD_EXACT);
    owl_galore *pc = make_proj(cctx, &po), *pg = make_proj(gctx, &po);
    owl_adamw_options ao;
    owl_adamw_options_init(&ao, sizeof ao);
    owl_adamw *ac = NULL, *ag = NULL;
    assert_owl_ok(cctx, owl_adamw_create(cctx, &ao, r, n, &ac));
    assert_owl_ok(gctx, owl_adamw_create(gctx, &ao, r, n, &ag));
    float *gd = NULL, *wd = NULL;
    assert_int_equal(cudaMalloc((void **)&gd, gb), cudaSuccess);
    assert_int_equal(cudaMalloc((void **)&wd, gb), cudaSuccess);
    owl_tensor tgg = tens(gd, OWL_DTYPE_F32, m, n, n);
    owl_tensor twg = tens(wd, OWL_DTYPE_F32, m, n, n);
    owl_tensor tgc = tens(g, OWL_DTYPE_F32, m, n, n);
    owl_tensor twc = tens(wc, OWL_DTYPE_F32, m, n, n);
    assert_int_equal(cudaMemcpyAsync(wd, w, gb, cudaMemcpyHostToDevice, st),
                     cudaSuccess);
    for (int t = 0; t < 3; t++) {
        /* a new G each step, uploaded on the stream right before */
        for (int i = 0; i < m * n; i++)
            g[i] = g[i] * 0.9f + 0.01f * (float)((i * 31 + t * 17) % 23 - 11);
        assert_int_equal(cudaMemcpyAsync(gd, g, gb, cudaMemcpyHostToDevice, st),
                         cudaSuccess);
        assert_owl_ok(gctx, owl_adamw_lowrank(ag, pg, &twg, &tgg, 1e-2));
        assert_owl_ok(cctx, owl_adamw_lowrank(ac, pc, &twc, &tgc, 1e-2));
        /* the host rewrites g next: wait for the upload of this one */
        assert_int_equal(cudaStreamSynchronize(st), cudaSuccess);
    }
    assert_int_equal(cudaMemcpyAsync(wout, wd, gb, cudaMemcpyDeviceToHost, st),
                     cudaSuccess);
    assert_int_equal(cudaStreamSynchronize(st), cudaSuccess);
    float *dg = xmalloc(gb), *dc = xmalloc(gb);
    for (int i = 0; i < m * n; i++) {
        dg[i] = wout[i] - w[i];
        dc[i] = wc[i] - w[i];
    }
    double e = rel_l2(dg, dc, (size_t)(m * n));
    if (e > 2e-3)
        fail_msg("steps on a non-blocking stream: change rel L2 %g", e);
    assert_owl_ok(gctx, owl_context_set_stream(gctx, NULL));
    owl_adamw_free(ac);
    owl_adamw_free(ag);
    owl_galore_free(pc);
    owl_galore_free(pg);
    cudaFree(gd);
    cudaFree(wd);
    cudaFreeHost(g);
    cudaFreeHost(w);
    cudaFreeHost(wout);
    free(dg);
    free(dc);
    free(wc);
    cudaStreamDestroy(st);
}

/* ---- validation -------------------------------------------------------- */

static void expect_fail(owl_context *ctx, owl_status got, owl_status want)
{
    assert_owl_status(ctx, got, want);
    assert_true(strlen(owl_context_last_error(ctx)) > 0);
}

static void test_host_pointers_rejected(void **state)
{
    (void)state;
    const int m = 16, n = 24, r = 2;
    owl_galore_options po = popts(m, n, r, 10, OWL_PROJ_STD, OWL_SVD_EXACT);
    owl_galore *pg = make_proj(gctx, &po);
    float *host = xmalloc((size_t)(m * n) * 4);
    test_fill_uniform(host, (size_t)(m * n), 1);
    float *dev = dev_copy(host, (size_t)(m * n) * 4);
    float *out_d = gpu_alloc((size_t)(m * n) * 4);
    owl_tensor th = tens(host, OWL_DTYPE_F32, m, n, n);
    owl_tensor tdv = tens(dev, OWL_DTYPE_F32, m, n, n);
    owl_tensor tr_h = tens(host, OWL_DTYPE_F32, r, n, n);
    owl_tensor tr_d = tens(out_d, OWL_DTYPE_F32, r, n, n);

    /* no subspace yet */
    expect_fail(gctx, owl_galore_project_back(pg, &tr_d, &tdv), OWL_ERR_STATE);
    expect_fail(gctx, owl_galore_project(pg, 0, &th, &tr_d, NULL),
                OWL_ERR_INVALID_ARGUMENT);
    assert_int_equal(owl_galore_refresh_count(pg), 0);
    expect_fail(gctx, owl_galore_refresh(pg, &th), OWL_ERR_INVALID_ARGUMENT);
    assert_int_equal(owl_galore_refresh_count(pg), 0);
    expect_fail(gctx, owl_galore_project(pg, 0, &tdv, &tr_h, NULL),
                OWL_ERR_INVALID_ARGUMENT);
    assert_int_equal(owl_galore_refresh_count(pg), 0);
    assert_owl_ok(gctx, owl_galore_project(pg, 0, &tdv, &tr_d, NULL));
    expect_fail(gctx, owl_galore_project_back(pg, &tr_h, &tdv),
                OWL_ERR_INVALID_ARGUMENT);
    expect_fail(gctx, owl_galore_project_back(pg, &tr_d, &th),
                OWL_ERR_INVALID_ARGUMENT);
    owl_tensor tb_h = tens(host, OWL_DTYPE_F32, m, r, r); /* P: m x r */
    expect_fail(gctx, owl_galore_get_basis(pg, &tb_h), OWL_ERR_INVALID_ARGUMENT);

    owl_adamw_options ao;
    owl_adamw_options_init(&ao, sizeof ao);
    owl_adamw *ag = NULL;
    assert_owl_ok(gctx, owl_adamw_create(gctx, &ao, r, n, &ag));
    expect_fail(gctx, owl_adamw_lowrank(ag, pg, &th, &tdv, 1e-3),
                OWL_ERR_INVALID_ARGUMENT);
    expect_fail(gctx, owl_adamw_lowrank(ag, pg, &tdv, &th, 1e-3),
                OWL_ERR_INVALID_ARGUMENT);
    assert_int_equal(owl_adamw_step_count(ag), 0);

    owl_esd_result res;
    owl_esd_result_init(&res, sizeof res);
    expect_fail(gctx, owl_esd_alpha_hill(gctx, &th, OWL_XMIN_MEDIAN, &res),
                OWL_ERR_INVALID_ARGUMENT);
    double *h64 = xmalloc((size_t)(m * n) * 8);
    void *d64 = gpu_alloc((size_t)(m * n) * 8);
    owl_tensor t64 = tens(d64, OWL_DTYPE_F64, m, n, n);
    expect_fail(gctx, owl_esd_alpha_hill(gctx, &t64, OWL_XMIN_MEDIAN, &res),
                OWL_ERR_DTYPE);
    gpu_free(d64);
    free(h64);
    owl_adamw_free(ag);
    owl_galore_free(pg);
    gpu_free(dev);
    gpu_free(out_d);
    free(host);
}

/* ---- PL_Alpha_Hill ------------------------------------------------------ */

static void test_esd_matches_cpu(void **state)
{
    (void)state;
    const int dims[3][2] = {{64, 96}, {96, 64}, {64, 96}};
    const owl_dtype dts[3] = {OWL_DTYPE_F32, OWL_DTYPE_F32, OWL_DTYPE_BF16};
    const owl_xmin_method methods[3] = {OWL_XMIN_MEDIAN, OWL_XMIN_FIX_FINGER,
                                        OWL_XMIN_KS_SCAN};
    const double tol[3] = {1e-3, 2e-2, 2e-2};
    for (int c = 0; c < 3; c++) {
        int m = dims[c][0], n = dims[c][1], mn = m < n ? m : n;
        double *s = xmalloc((size_t)mn * sizeof(double));
        for (int i = 0; i < mn; i++) /* a power-law spectrum */
            s[i] = 10.0 * pow(i + 1.0, -0.8);
        float *w = xmalloc((size_t)(m * n) * 4);
        spectrum_matrix(w, m, n, s, mn, 50 + (uint64_t)c);
        void *wh = encode(w, m, n, dts[c], n);
        void *wd = dev_copy(wh, (size_t)(m * n) * dt_size(dts[c]));
        owl_tensor tc = tens(wh, dts[c], m, n, n), tg = tens(wd, dts[c], m, n, n);
        for (int k = 0; k < 3; k++) {
            owl_esd_result rc, rg;
            owl_esd_result_init(&rc, sizeof rc);
            owl_esd_result_init(&rg, sizeof rg);
            assert_owl_ok(cctx, owl_esd_alpha_hill(cctx, &tc, methods[k], &rc));
            assert_owl_ok(gctx, owl_esd_alpha_hill(gctx, &tg, methods[k], &rg));
            assert_int_equal(rg.num_eigs, rc.num_eigs);
            double rel = fabs(rg.alpha - rc.alpha) / rc.alpha;
            printf("# ESD %dx%d dtype %d method %d: alpha GPU %.6f CPU %.6f\n",
                   m, n, (int)dts[c], (int)methods[k], rg.alpha, rc.alpha);
            if (rel > tol[k])
                fail_msg("alpha GPU %g CPU %g (rel %g > %g)", rg.alpha,
                         rc.alpha, rel, tol[k]);
            if (methods[k] == OWL_XMIN_MEDIAN)
                assert_int_equal(rg.xmin_index, rc.xmin_index);
        }
        gpu_free(wd);
        free(wh);
        free(w);
        free(s);
    }
}

static int setup(void **state)
{
    (void)state;
    gctx = gpu_context();
    cctx = cpu_context();
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    owl_context_free(gctx);
    owl_context_free(cctx);
    return 0;
}

int main(void)
{
    gpu_require_device();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_projections_match_cpu),
        cmocka_unit_test(test_exact_basis_matches_cpu),
        cmocka_unit_test(test_randomized_energy),
        cmocka_unit_test(test_lowrank_steps_match_cpu),
        cmocka_unit_test(test_nonfinite_step_skipped),
        cmocka_unit_test(test_stream_ordering),
        cmocka_unit_test(test_host_pointers_rejected),
        cmocka_unit_test(test_esd_matches_cpu),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
