/* Streaming kernels for GaLore products at small rank.
 *
 * With r of a few dozen or less, the projection R = G Q^T (or P^T G) and
 * the back-projection of a step do only 2r flops per element of G or W, so
 * they are bound by memory, not arithmetic; sgemm with k = r neither
 * streams them at bandwidth nor fuses the weight update into its pass (a
 * beta != 1 costs it a separate scaling pass over W). These kernels read G
 * once for the projection and let the AdamW step read and write W once.
 *
 * Rounding does not depend on the thread split: every element's sum runs
 * in a fixed order (the dot products of a right projection over eight
 * fixed lanes, then a fixed reduction; every other sum sequentially over
 * the basis vectors or the rows). The AVX2 variants fuse each multiply-add
 * (FMA, one rounding), as the sgemm they replace does; the portable ones
 * multiply then add, so the two differ in the last bits, like OpenBLAS's
 * kernels for different CPUs. */
#include "galore_internal.h"

#include <string.h>

/* Eight floats: GCC/Clang vector extensions, lowered to SSE2 pairs in the
 * portable build and to one AVX register in the AVX2 one. Loads and stores
 * go through memcpy, which compiles to unaligned vector moves. */
typedef float v8f __attribute__((vector_size(32)));

#define STREAM_KERNEL static inline __attribute__((always_inline))
#if defined(__GNUC__) && defined(__x86_64__) && !defined(OWL_PORTABLE_ONLY)
#define STREAM_AVX2 1
#endif

#ifdef STREAM_AVX2
#include <immintrin.h>
#define STREAM_AVX2_FN __attribute__((target("avx2,fma")))
#define STREAM_AVX2_KERNEL                                                    \
    static inline __attribute__((always_inline, target("avx2,fma")))
#define STREAM_PICK(name) (stream_has_avx2() ? name##_avx2 : name)
static bool stream_has_avx2(void)
{
#if defined(__AVX2__) && defined(__FMA__)
    return true;
#else
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#endif
}
#else
#define STREAM_PICK(name) (name)
#endif
#define STREAM_RANGE_FN(name)                                                 \
    static void name(void *arg, int64_t begin, int64_t end)                   \
    {                                                                         \
        name##_body(arg, begin, end);                                         \
    }

#define LOAD8(dst, p) memcpy(&(dst), (p), sizeof(v8f))
#define STORE8(p, src) memcpy((p), &(src), sizeof(v8f))

/* Measured A/B against sgemm (2 threads, AVX2): r = 8 wins at every size
 * tried; right projections at 4096x4096 win at r = 12 (1.58x) and r = 16
 * (1.14x) but lose in cache (1024x1024, r = 16: 0.82x); left ones lose at
 * r = 16 (4096x11008: 0.76x). */
bool owl__galore_streams(const owl_galore *p)
{
    if (p->r <= OWL_STREAM_RANK)
        return true;
    return !p->left && p->r <= OWL_STREAM_MAX_RANK &&
           p->m * p->n >= OWL_STREAM_LARGE;
}

/* ---- packing ------------------------------------------------------------
 * The r rows of length n that a kernel combines (the basis Q, or N) are
 * read eight columns at a time from every row. Rows of a power-of-two
 * length then sit at addresses a multiple of 4 KiB apart, which crowds a
 * few L1 sets and makes loads wait on unrelated stores. Packed, the eight
 * columns of all r rows are one contiguous run: group j8 holds
 * pk[(j8 * r + c) * 8 + l] = b[c][8 * j8 + l], the last group padded with
 * zeros. r * ceil8(n) floats in owl__galore_packed(p). */
static void pack_rows(const float *b, int64_t ldb, int64_t r, int64_t n,
                      float *pk)
{
    const int64_t groups = (n + 7) / 8;
    for (int64_t j8 = 0; j8 < groups; j8++)
        for (int64_t c = 0; c < r; c++) {
            float *dst = pk + (j8 * r + c) * 8;
            const float *src = b + c * ldb + j8 * 8;
            int64_t cnt = n - j8 * 8 < 8 ? n - j8 * 8 : 8;
            for (int64_t l = 0; l < 8; l++)
                dst[l] = l < cnt ? src[l] : 0.0f;
        }
}

/* ---- right projection: R[i][c] = <G row i, Q row c> ------------------- */

typedef struct {
    const float *g;
    int64_t ldg;
    const float *q;  /* r x n */
    const float *pk; /* q packed */
    int64_t n, r;
    float *dst;
    int64_t ldd;
} right_job;

/* The eight lanes of a dot product, summed in one fixed order, then the
 * tail (n mod 8 products) sequentially. */
STREAM_KERNEL float lanes_sum(const float l[8])
{
    return ((l[0] + l[4]) + (l[2] + l[6])) + ((l[1] + l[5]) + (l[3] + l[7]));
}

/* The last products of the dot products in `l` (n mod 8 columns). */
STREAM_KERNEL void dots_finish(const right_job *job, const float *g,
                               int64_t c0, float l[8][8], float *out,
                               const int cb)
{
    const int64_t n = job->n, n8 = n & ~(int64_t)7;
    for (int c = 0; c < cb; c++) {
        const float *q = job->q + (c0 + c) * n;
        float sum = lanes_sum(l[c]);
        for (int64_t j = n8; j < n; j++)
            sum = sum + g[j] * q[j];
        out[c] = sum;
    }
}

/* Dot products of one G row with CB (8, 4 or 1) consecutive basis rows
 * c0.. at once: the row is loaded once per CB products. Named
 * accumulators, so they live in registers. */
#define DOT_STEP(c)                                                           \
    do {                                                                      \
        v8f qv_;                                                              \
        LOAD8(qv_, pk + (c) * 8);                                             \
        a##c = a##c + gv * qv_;                                               \
    } while (0)
STREAM_KERNEL void dots(const right_job *job, const float *g, int64_t c0,
                        float *out, const int cb)
{
    const v8f z = {0, 0, 0, 0, 0, 0, 0, 0};
    v8f a0 = z, a1 = z, a2 = z, a3 = z, a4 = z, a5 = z, a6 = z, a7 = z;
    const int64_t groups = job->n / 8, r = job->r;
    for (int64_t j8 = 0; j8 < groups; j8++) {
        const float *pk = job->pk + (j8 * r + c0) * 8;
        v8f gv;
        LOAD8(gv, g + j8 * 8);
        DOT_STEP(0);
        if (cb >= 4) {
            DOT_STEP(1);
            DOT_STEP(2);
            DOT_STEP(3);
        }
        if (cb == 8) {
            DOT_STEP(4);
            DOT_STEP(5);
            DOT_STEP(6);
            DOT_STEP(7);
        }
    }
    float l[8][8];
    STORE8(l[0], a0);
    STORE8(l[1], a1);
    STORE8(l[2], a2);
    STORE8(l[3], a3);
    STORE8(l[4], a4);
    STORE8(l[5], a5);
    STORE8(l[6], a6);
    STORE8(l[7], a7);
    dots_finish(job, g, c0, l, out, cb);
}
#undef DOT_STEP

STREAM_KERNEL void right_range_body(void *arg, int64_t begin, int64_t end)
{
    const right_job *job = arg;
    const int64_t r = job->r;
    for (int64_t i = begin; i < end; i++) {
        const float *g = job->g + i * job->ldg;
        float *out = job->dst + i * job->ldd;
        int64_t c = 0;
        for (; c + 8 <= r; c += 8)
            dots(job, g, c, out + c, 8);
        if (r - c >= 4) {
            dots(job, g, c, out + c, 4);
            c += 4;
        }
        for (; c < r; c++)
            dots(job, g, c, out + c, 1);
    }
}
STREAM_RANGE_FN(right_range)

/* ---- left projection: R[c][j] = sum_i P[i][c] G[i][j] ------------------ */

/* Columns per tile: a tile's r x TILE sums stay in L1/L2 while all rows of
 * G stream past, and each row contributes TILE contiguous floats. */
#define TILE 256

typedef struct {
    const float *g;
    int64_t ldg;
    const float *pt; /* P^T: r x m */
    int64_t m, n, r;
    float *dst;
    int64_t ldd;
} left_job;

/* acc[c][k] = acc[c][k] + P[i][c] * G[i][j0 + k] for the rows i in order,
 * four rows per load and store of acc (the same sequence of roundings as
 * one row at a time). */
STREAM_KERNEL void left_tile(const left_job *job, int64_t j0, int64_t cnt,
                             float *acc)
{
    const int64_t m = job->m, r = job->r, ldg = job->ldg;
    const int64_t c8 = cnt & ~(int64_t)7;
    memset(acc, 0, (size_t)(r * TILE) * sizeof(float));
    int64_t i = 0;
    for (; i + 4 <= m; i += 4) {
        const float *g0 = job->g + i * ldg + j0, *g1 = g0 + ldg,
                    *g2 = g1 + ldg, *g3 = g2 + ldg;
        for (int64_t c = 0; c < r; c++) {
            const float *pc = job->pt + c * m + i;
            const float p0 = pc[0], p1 = pc[1], p2 = pc[2], p3 = pc[3];
            float *ac = acc + c * TILE;
            for (int64_t k = 0; k < c8; k += 8) {
                v8f a, x;
                LOAD8(a, ac + k);
                LOAD8(x, g0 + k);
                a = a + p0 * x;
                LOAD8(x, g1 + k);
                a = a + p1 * x;
                LOAD8(x, g2 + k);
                a = a + p2 * x;
                LOAD8(x, g3 + k);
                a = a + p3 * x;
                STORE8(ac + k, a);
            }
            for (int64_t k = c8; k < cnt; k++) {
                float a = ac[k];
                a = a + p0 * g0[k];
                a = a + p1 * g1[k];
                a = a + p2 * g2[k];
                a = a + p3 * g3[k];
                ac[k] = a;
            }
        }
    }
    for (; i < m; i++) {
        const float *g0 = job->g + i * ldg + j0;
        for (int64_t c = 0; c < r; c++) {
            const float p = job->pt[c * m + i];
            float *ac = acc + c * TILE;
            for (int64_t k = 0; k < cnt; k++)
                ac[k] = ac[k] + p * g0[k];
        }
    }
    for (int64_t c = 0; c < r; c++)
        memcpy(job->dst + c * job->ldd + j0, acc + c * TILE,
               (size_t)cnt * sizeof(float));
}

STREAM_KERNEL void left_range_body(void *arg, int64_t begin, int64_t end)
{
    const left_job *job = arg;
    float acc[OWL_STREAM_MAX_RANK * TILE] __attribute__((aligned(64)));
    for (int64_t t = begin; t < end; t++) {
        int64_t j0 = t * TILE;
        int64_t cnt = job->n - j0 < TILE ? job->n - j0 : TILE;
        left_tile(job, j0, cnt, acc);
    }
}
STREAM_RANGE_FN(left_range)

/* ---- back-projection rows: s = sum_c coef[c] * b[c][...] --------------- */

/* `groups` packed groups from pk: s[8 g + l] = sum_c coef[c] pk[g][c][l],
 * summed in order of c. */
static void combine_portable(const float *coef, int64_t r, const float *pk,
                             int64_t groups, float *s)
{
    for (int64_t j8 = 0; j8 < groups; j8++) {
        const float *b = pk + j8 * r * 8;
        v8f a, x;
        LOAD8(x, b);
        a = coef[0] * x;
        for (int64_t c = 1; c < r; c++) {
            LOAD8(x, b + c * 8);
            a = a + coef[c] * x;
        }
        STORE8(s + j8 * 8, a);
    }
}

#ifdef STREAM_AVX2
/* ---- AVX2 + FMA -------------------------------------------------------- */

/* dots() with fused multiply-adds; the same lanes and reduction. */
#define DOTF(c) a##c = _mm256_fmadd_ps(gv, _mm256_loadu_ps(pk + (c) * 8), a##c)
STREAM_AVX2_KERNEL void dots_fma(const right_job *job, const float *g,
                                 int64_t c0, float *out, const int cb)
{
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, a4 = a0,
           a5 = a0, a6 = a0, a7 = a0;
    const int64_t groups = job->n / 8, r = job->r;
    for (int64_t j8 = 0; j8 < groups; j8++) {
        const float *pk = job->pk + (j8 * r + c0) * 8;
        _mm_prefetch((const char *)(g + j8 * 8) + 16384, _MM_HINT_T0);
        __m256 gv = _mm256_loadu_ps(g + j8 * 8);
        DOTF(0);
        if (cb >= 4) {
            DOTF(1);
            DOTF(2);
            DOTF(3);
        }
        if (cb == 8) {
            DOTF(4);
            DOTF(5);
            DOTF(6);
            DOTF(7);
        }
    }
    float l[8][8];
    _mm256_storeu_ps(l[0], a0);
    _mm256_storeu_ps(l[1], a1);
    _mm256_storeu_ps(l[2], a2);
    _mm256_storeu_ps(l[3], a3);
    _mm256_storeu_ps(l[4], a4);
    _mm256_storeu_ps(l[5], a5);
    _mm256_storeu_ps(l[6], a6);
    _mm256_storeu_ps(l[7], a7);
    dots_finish(job, g, c0, l, out, cb);
}
#undef DOTF

STREAM_AVX2_FN static void right_range_avx2(void *arg, int64_t begin,
                                            int64_t end)
{
    const right_job *job = arg;
    const int64_t r = job->r;
    for (int64_t i = begin; i < end; i++) {
        const float *g = job->g + i * job->ldg;
        float *out = job->dst + i * job->ldd;
        int64_t c = 0;
        for (; c + 8 <= r; c += 8)
            dots_fma(job, g, c, out + c, 8);
        if (r - c >= 4) {
            dots_fma(job, g, c, out + c, 4);
            c += 4;
        }
        for (; c < r; c++)
            dots_fma(job, g, c, out + c, 1);
    }
}

/* left_tile with FMAs: per basis vector, its four coefficients broadcast
 * once, then the tile's sums updated four rows at a time. */
STREAM_AVX2_KERNEL void left_tile_fma(const left_job *job, int64_t j0,
                                      int64_t cnt, float *acc)
{
    const int64_t m = job->m, r = job->r, ldg = job->ldg;
    const int64_t c8 = cnt & ~(int64_t)7;
    memset(acc, 0, (size_t)(r * TILE) * sizeof(float));
    int64_t i = 0;
    for (; i + 4 <= m; i += 4) {
        const float *g0 = job->g + i * ldg + j0, *g1 = g0 + ldg,
                    *g2 = g1 + ldg, *g3 = g2 + ldg;
        /* The tile's rows are strided, which the hardware prefetchers
         * follow poorly: request the rows two blocks ahead. */
        if (i + 12 <= m)
            for (int64_t u = 8; u < 12; u++)
                for (int64_t k = 0; k < cnt; k += 16)
                    _mm_prefetch((const char *)(g0 + u * ldg + k),
                                 _MM_HINT_T0);
        for (int64_t c = 0; c < r; c++) {
            const float *pc = job->pt + c * m + i;
            const __m256 p0 = _mm256_broadcast_ss(pc),
                         p1 = _mm256_broadcast_ss(pc + 1),
                         p2 = _mm256_broadcast_ss(pc + 2),
                         p3 = _mm256_broadcast_ss(pc + 3);
            float *ac = acc + c * TILE;
            for (int64_t k = 0; k < c8; k += 8) {
                __m256 a = _mm256_load_ps(ac + k);
                a = _mm256_fmadd_ps(p0, _mm256_loadu_ps(g0 + k), a);
                a = _mm256_fmadd_ps(p1, _mm256_loadu_ps(g1 + k), a);
                a = _mm256_fmadd_ps(p2, _mm256_loadu_ps(g2 + k), a);
                a = _mm256_fmadd_ps(p3, _mm256_loadu_ps(g3 + k), a);
                _mm256_store_ps(ac + k, a);
            }
            for (int64_t k = c8; k < cnt; k++) {
                float a = ac[k];
                a = a + pc[0] * g0[k];
                a = a + pc[1] * g1[k];
                a = a + pc[2] * g2[k];
                a = a + pc[3] * g3[k];
                ac[k] = a;
            }
        }
    }
    for (; i < m; i++) {
        const float *g0 = job->g + i * ldg + j0;
        for (int64_t c = 0; c < r; c++) {
            const float p = job->pt[c * m + i];
            float *ac = acc + c * TILE;
            for (int64_t k = 0; k < cnt; k++)
                ac[k] = ac[k] + p * g0[k];
        }
    }
    for (int64_t c = 0; c < r; c++)
        memcpy(job->dst + c * job->ldd + j0, acc + c * TILE,
               (size_t)cnt * sizeof(float));
}

STREAM_AVX2_FN static void left_range_avx2(void *arg, int64_t begin,
                                           int64_t end)
{
    const left_job *job = arg;
    float acc[OWL_STREAM_MAX_RANK * TILE] __attribute__((aligned(64)));
    for (int64_t t = begin; t < end; t++) {
        int64_t j0 = t * TILE;
        int64_t cnt = job->n - j0 < TILE ? job->n - j0 : TILE;
        left_tile_fma(job, j0, cnt, acc);
    }
}

/* combine_portable with FMAs, four groups at a time: each sum is a chain
 * of r dependent FMAs, so four run side by side to hide their latency. */
STREAM_AVX2_FN static void combine_avx2(const float *coef, int64_t r,
                                        const float *pk, int64_t groups,
                                        float *s)
{
    const int64_t gs = r * 8; /* floats per group */
    int64_t j8 = 0;
    for (; j8 + 4 <= groups; j8 += 4) {
        const float *b = pk + j8 * gs;
        const __m256 k0 = _mm256_broadcast_ss(coef);
        __m256 a0 = _mm256_mul_ps(k0, _mm256_loadu_ps(b));
        __m256 a1 = _mm256_mul_ps(k0, _mm256_loadu_ps(b + gs));
        __m256 a2 = _mm256_mul_ps(k0, _mm256_loadu_ps(b + 2 * gs));
        __m256 a3 = _mm256_mul_ps(k0, _mm256_loadu_ps(b + 3 * gs));
        for (int64_t c = 1; c < r; c++) {
            const __m256 k = _mm256_broadcast_ss(coef + c);
            const float *bc = b + c * 8;
            a0 = _mm256_fmadd_ps(k, _mm256_loadu_ps(bc), a0);
            a1 = _mm256_fmadd_ps(k, _mm256_loadu_ps(bc + gs), a1);
            a2 = _mm256_fmadd_ps(k, _mm256_loadu_ps(bc + 2 * gs), a2);
            a3 = _mm256_fmadd_ps(k, _mm256_loadu_ps(bc + 3 * gs), a3);
        }
        _mm256_storeu_ps(s + j8 * 8, a0);
        _mm256_storeu_ps(s + j8 * 8 + 8, a1);
        _mm256_storeu_ps(s + j8 * 8 + 16, a2);
        _mm256_storeu_ps(s + j8 * 8 + 24, a3);
    }
    for (; j8 < groups; j8++) {
        const float *b = pk + j8 * gs;
        __m256 a = _mm256_mul_ps(_mm256_broadcast_ss(coef), _mm256_loadu_ps(b));
        for (int64_t c = 1; c < r; c++)
            a = _mm256_fmadd_ps(_mm256_broadcast_ss(coef + c),
                                _mm256_loadu_ps(b + c * 8), a);
        _mm256_storeu_ps(s + j8 * 8, a);
    }
}
#endif /* STREAM_AVX2 */

void owl__galore_stream_project(const owl_galore *p, const float *g,
                                int64_t ldg, float *dst, int64_t ldd)
{
    if (p->left) {
        left_job job = {g, ldg, p->basis, p->m, p->n, p->r, dst, ldd};
        int64_t tiles = (p->n + TILE - 1) / TILE;
        /* a tile reads m x TILE floats: split when that is worth a thread */
        int64_t grain = p->m * TILE >= 32768 ? 1 : 32768 / (p->m * TILE);
        owl__parallel_for(p->ctx, tiles, grain, STREAM_PICK(left_range),
                          &job);
    } else {
        float *pk = owl__galore_packed(p);
        pack_rows(p->basis, p->n, p->r, p->n, pk);
        right_job job = {g, ldg, p->basis, pk, p->n, p->r, dst, ldd};
        int64_t grain = p->n >= 32768 ? 1 : 32768 / p->n;
        owl__parallel_for(p->ctx, p->m, grain, STREAM_PICK(right_range),
                          &job);
    }
}

owl_stream_combine_fn owl__stream_combine_fn(void)
{
#ifdef STREAM_AVX2
    if (stream_has_avx2())
        return combine_avx2;
#endif
    return combine_portable;
}

const float *owl__galore_stream_pack_back(const owl_galore *p,
                                          const float *low, int64_t ldl)
{
    /* right: rows of N combine rows of Q; left: rows of P combine rows of
     * N. Either way r rows of n floats. */
    float *pk = owl__galore_packed(p);
    if (p->left)
        pack_rows(low, ldl, p->r, p->n, pk);
    else
        pack_rows(p->basis, p->n, p->r, p->n, pk);
    return pk;
}

void owl__galore_stream_coefs(const owl_galore *p, const float *low,
                              int64_t ldl, int64_t row, float alpha,
                              float *coef)
{
    if (p->left) /* row of P = column of P^T */
        for (int64_t c = 0; c < p->r; c++)
            coef[c] = alpha * p->basis[c * p->m + row];
    else /* row of N */
        for (int64_t c = 0; c < p->r; c++)
            coef[c] = alpha * low[row * ldl + c];
}
