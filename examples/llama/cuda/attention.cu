// Causal grouped-query attention of the LLaMa example, forward and
// backward, without any T x T buffer (FlashAttention's scheme in its
// simplest form):
//  - forward: one block per (query tile, query head, sequence) walks the
//    key tiles up to the causal limit, keeps a running max m and sum l of
//    exp(s - m) per query row (online softmax) and an f32 accumulator of
//    P V; it writes o (bf16) and lse = m + log(l) (f32).
//  - backward: delta = rowsum(d_o * o) per query row; then one block per
//    (key tile, kv head, sequence) loops over the group's query heads and
//    the query tiles at or past the key tile, recomputing
//    p = exp(s - lse), and accumulates d_v += p^T d_o and
//    d_k += scale ds^T q with ds = p (d_o v^T - delta); and one block per
//    (query tile, query head, sequence) accumulates d_q += scale ds k over
//    the key tiles. Each output element is summed by one thread in a fixed
//    order: deterministic, no atomics.
// Tiles live in static shared memory (at most 48 KiB per block): q/k/v/d_o
// tiles as bf16 (exact: the inputs are bf16), accumulators and score tiles
// in f32. Tile sizes shrink as the head dimension grows: the kernels are
// instantiated for head_dim <= 64, <= 128 and <= 256 (LK_MAX_HEAD_DIM).
// Rows of bf16 tiles are padded by one 4-byte word so the threads of a
// warp that read different rows at the same column hit different banks.
#include "kcommon.cuh"

#include <cmath>

namespace lk_attention {

const unsigned kThreads = 128;
const unsigned kMaxBlocks = 4096;

__device__ __forceinline__ int imin(int a, int b) { return a < b ? a : b; }

// Tile shapes for head dimensions up to KD: BR query rows by BC keys.
template <int KD> struct FwdTiles {
    static const int BR = KD > 128 ? 16 : 32;
    static const int BC = BR;
};
template <int KD> struct BwdTiles {
    static const int BR = KD > 128 ? 16 : 32;
    static const int BC = 2048 / KD;
};

// Pointers to the start of one (sequence, head) column block of a
// token-major [B*T x heads*D] matrix, with its row stride.
struct HeadView {
    int64_t offset, ld;
};
__device__ __forceinline__ HeadView head_view(int b, int T, int head,
                                              int heads, int D)
{
    HeadView v;
    v.ld = (int64_t)heads * D;
    v.offset = (int64_t)b * T * v.ld + (int64_t)head * D;
    return v;
}

// Copies rows [row0, row0 + rows) of a head into a bf16 tile of R rows,
// zeros past `rows` (and past D nothing is read).
template <int R, int KD>
__device__ __forceinline__ void load_tile(lk_bf16 (*tile)[KD + 2],
                                          const lk_bf16 *src, HeadView v,
                                          int row0, int rows, int D)
{
    for (int e = threadIdx.x; e < R * D; e += blockDim.x) {
        int r = e / D, d = e - r * D;
        tile[r][d] = r < rows ? src[v.offset + (int64_t)(row0 + r) * v.ld + d]
                              : (lk_bf16)0;
    }
}

template <int KD>
__device__ __forceinline__ float dot_rows(const lk_bf16 *a, const lk_bf16 *b,
                                          int D)
{
    float acc = 0.0f;
    for (int d = 0; d < D; d++)
        acc += lk::bf16_to_f32(a[d]) * lk::bf16_to_f32(b[d]);
    return acc;
}

template <int KD>
__global__ void attention_forward(lk_bf16 *o, float *lse, const lk_bf16 *q,
                                  const lk_bf16 *k, const lk_bf16 *v, int T,
                                  int n_heads, int n_kv_heads, int D,
                                  float scale)
{
    const int BR = FwdTiles<KD>::BR, BC = FwdTiles<KD>::BC;
    static_assert(2 * (BR + 2 * BC) * (KD + 2) + 4 * BR * KD +
                          4 * BR * (BC + 1) + 12 * BR <= 48 * 1024,
                  "static shared memory over 48 KiB");
    __shared__ lk_bf16 sQ[BR][KD + 2];
    __shared__ lk_bf16 sK[BC][KD + 2];
    __shared__ lk_bf16 sV[BC][KD + 2];
    __shared__ float sAcc[BR][KD];    // running sum of p v per row
    __shared__ float sS[BR][BC + 1];  // scores, then p
    __shared__ float sM[BR], sL[BR], sCorr[BR];

    const int b = blockIdx.z, h = blockIdx.y, q0 = blockIdx.x * BR;
    const int rows = imin(BR, T - q0);
    const int kvh = h / (n_heads / n_kv_heads);
    const HeadView qv = head_view(b, T, h, n_heads, D);
    const HeadView kv = head_view(b, T, kvh, n_kv_heads, D);
    const float neg_inf = -INFINITY;

    load_tile<BR, KD>(sQ, q, qv, q0, rows, D);
    for (int e = threadIdx.x; e < BR * D; e += blockDim.x)
        sAcc[e / D][e % D] = 0.0f;
    for (int r = threadIdx.x; r < BR; r += blockDim.x) {
        sM[r] = neg_inf;
        sL[r] = 0.0f;
    }
    __syncthreads();

    // Key tiles up to the one holding the block's last query.
    const int n_tiles = (q0 + rows - 1) / BC + 1;
    for (int kt = 0; kt < n_tiles; kt++) {
        const int k0 = kt * BC, cols = imin(BC, T - k0);
        load_tile<BC, KD>(sK, k, kv, k0, cols, D);
        load_tile<BC, KD>(sV, v, kv, k0, cols, D);
        __syncthreads();

        // Scaled scores; -inf where the key is masked or past T.
        for (int e = threadIdx.x; e < BR * BC; e += blockDim.x) {
            int r = e / BC, c = e - r * BC;
            float s = neg_inf;
            if (r < rows && c < cols && k0 + c <= q0 + r)
                s = dot_rows<KD>(sQ[r], sK[c], D) * scale;
            sS[r][c] = s;
        }
        __syncthreads();

        // Online softmax, one thread per row: new max, rescale factor of
        // the old sum and accumulator, p = exp(s - max) in place.
        for (int r = threadIdx.x; r < BR; r += blockDim.x) {
            float m_old = sM[r], m = m_old;
            for (int c = 0; c < BC; c++)
                m = lk::kmax(m, sS[r][c]);
            float corr = 1.0f, sum = 0.0f;
            if (m == neg_inf) { // nothing visible yet (or a row past T)
                for (int c = 0; c < BC; c++)
                    sS[r][c] = 0.0f;
            } else {
                corr = m_old == neg_inf ? 0.0f : lk::kexp(m_old - m);
                for (int c = 0; c < BC; c++) {
                    float s = sS[r][c];
                    float p = s == neg_inf ? 0.0f : lk::kexp(s - m);
                    sS[r][c] = p;
                    sum += p;
                }
            }
            sM[r] = m;
            sL[r] = sL[r] * corr + sum;
            sCorr[r] = corr;
        }
        __syncthreads();

        for (int e = threadIdx.x; e < BR * D; e += blockDim.x) {
            int r = e / D, d = e - r * D;
            float acc = sAcc[r][d] * sCorr[r];
            for (int c = 0; c < cols; c++)
                acc += sS[r][c] * lk::bf16_to_f32(sV[c][d]);
            sAcc[r][d] = acc;
        }
        __syncthreads();
    }

    for (int e = threadIdx.x; e < rows * D; e += blockDim.x) {
        int r = e / D, d = e - r * D;
        o[qv.offset + (int64_t)(q0 + r) * qv.ld + d] =
            lk::f32_to_bf16(sAcc[r][d] / sL[r]);
    }
    for (int r = threadIdx.x; r < rows; r += blockDim.x)
        lse[((int64_t)b * n_heads + h) * T + q0 + r] = sM[r] + lk::klog(sL[r]);
}

// delta[b][h][t] = sum_d d_o * o over the head's columns, one thread per
// (b, t, h) row (o is the forward's bf16 output, as FlashAttention uses).
__global__ void attention_delta(float *delta, const lk_bf16 *d_o,
                                const lk_bf16 *o, int B, int T, int n_heads,
                                int D)
{
    int64_t rows = (int64_t)B * T * n_heads;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < rows;
         i += (int64_t)gridDim.x * blockDim.x) {
        int64_t bt = i / n_heads; // token row b*T + t
        int h = (int)(i - bt * n_heads);
        const lk_bf16 *a = d_o + i * D, *c = o + i * D;
        float acc = 0.0f;
        for (int d = 0; d < D; d++)
            acc += lk::bf16_to_f32(a[d]) * lk::bf16_to_f32(c[d]);
        int64_t b = bt / T, t = bt - b * T;
        delta[(b * n_heads + h) * T + t] = acc;
    }
}

// p and ds for query row r of a tile at q0 and key c of a tile at k0, or
// zeros where masked: p = exp(scale q.k - lse), ds = p (d_o.v - delta).
template <int KD>
__device__ __forceinline__ void p_and_ds(float *p, float *ds,
                                         const lk_bf16 *q_row,
                                         const lk_bf16 *do_row,
                                         const lk_bf16 *k_row,
                                         const lk_bf16 *v_row, float lse_r,
                                         float delta_r, bool visible, int D,
                                         float scale)
{
    if (!visible) {
        *p = 0.0f;
        *ds = 0.0f;
        return;
    }
    float pr = lk::kexp(dot_rows<KD>(q_row, k_row, D) * scale - lse_r);
    *p = pr;
    *ds = pr * (dot_rows<KD>(do_row, v_row, D) - delta_r);
}

template <int KD>
__global__ void attention_backward_dkdv(lk_bf16 *d_k, lk_bf16 *d_v,
                                        const lk_bf16 *d_o, const lk_bf16 *q,
                                        const lk_bf16 *k, const lk_bf16 *v,
                                        const float *lse, const float *delta,
                                        int T, int n_heads, int n_kv_heads,
                                        int D, float scale)
{
    const int BR = BwdTiles<KD>::BR, BC = BwdTiles<KD>::BC;
    static_assert(2 * (2 * BR + 2 * BC) * (KD + 2) + 8 * BC * KD +
                          8 * BR * (BC + 1) + 8 * BR <= 48 * 1024,
                  "static shared memory over 48 KiB");
    __shared__ lk_bf16 sK[BC][KD + 2];
    __shared__ lk_bf16 sV[BC][KD + 2];
    __shared__ lk_bf16 sQ[BR][KD + 2];
    __shared__ lk_bf16 sdO[BR][KD + 2];
    __shared__ float sdK[BC][KD];
    __shared__ float sdV[BC][KD];
    __shared__ float sP[BR][BC + 1];
    __shared__ float sdS[BR][BC + 1];
    __shared__ float sLse[BR], sDelta[BR];

    const int b = blockIdx.z, kvh = blockIdx.y, k0 = blockIdx.x * BC;
    const int cols = imin(BC, T - k0);
    const int group = n_heads / n_kv_heads;
    const HeadView kv = head_view(b, T, kvh, n_kv_heads, D);

    load_tile<BC, KD>(sK, k, kv, k0, cols, D);
    load_tile<BC, KD>(sV, v, kv, k0, cols, D);
    for (int e = threadIdx.x; e < BC * D; e += blockDim.x) {
        sdK[e / D][e % D] = 0.0f;
        sdV[e / D][e % D] = 0.0f;
    }
    __syncthreads();

    for (int h = kvh * group; h < (kvh + 1) * group; h++) {
        const HeadView qv = head_view(b, T, h, n_heads, D);
        const float *lse_h = lse + ((int64_t)b * n_heads + h) * T;
        const float *delta_h = delta + ((int64_t)b * n_heads + h) * T;
        // Query tiles holding a query at or after the first key.
        for (int q0 = k0 / BR * BR; q0 < T; q0 += BR) {
            const int rows = imin(BR, T - q0);
            load_tile<BR, KD>(sQ, q, qv, q0, rows, D);
            load_tile<BR, KD>(sdO, d_o, qv, q0, rows, D);
            for (int r = threadIdx.x; r < BR; r += blockDim.x) {
                sLse[r] = r < rows ? lse_h[q0 + r] : 0.0f;
                sDelta[r] = r < rows ? delta_h[q0 + r] : 0.0f;
            }
            __syncthreads();

            for (int e = threadIdx.x; e < BR * BC; e += blockDim.x) {
                int r = e / BC, c = e - r * BC;
                bool visible = r < rows && c < cols && k0 + c <= q0 + r;
                p_and_ds<KD>(&sP[r][c], &sdS[r][c], sQ[r], sdO[r], sK[c],
                             sV[c], sLse[r], sDelta[r], visible, D, scale);
            }
            __syncthreads();

            // d_v += p^T d_o, d_k += ds^T q (scaled at the end).
            for (int e = threadIdx.x; e < BC * D; e += blockDim.x) {
                int c = e / D, d = e - c * D;
                float av = sdV[c][d], ak = sdK[c][d];
                for (int r = 0; r < rows; r++) {
                    av += sP[r][c] * lk::bf16_to_f32(sdO[r][d]);
                    ak += sdS[r][c] * lk::bf16_to_f32(sQ[r][d]);
                }
                sdV[c][d] = av;
                sdK[c][d] = ak;
            }
            __syncthreads();
        }
    }

    for (int e = threadIdx.x; e < cols * D; e += blockDim.x) {
        int c = e / D, d = e - c * D;
        int64_t at = kv.offset + (int64_t)(k0 + c) * kv.ld + d;
        d_k[at] = lk::f32_to_bf16(sdK[c][d] * scale);
        d_v[at] = lk::f32_to_bf16(sdV[c][d]);
    }
}

template <int KD>
__global__ void attention_backward_dq(lk_bf16 *d_q, const lk_bf16 *d_o,
                                      const lk_bf16 *q, const lk_bf16 *k,
                                      const lk_bf16 *v, const float *lse,
                                      const float *delta, int T, int n_heads,
                                      int n_kv_heads, int D, float scale)
{
    const int BR = BwdTiles<KD>::BR, BC = BwdTiles<KD>::BC;
    static_assert(2 * (2 * BR + 2 * BC) * (KD + 2) + 4 * BR * KD +
                          4 * BR * (BC + 1) + 8 * BR <= 48 * 1024,
                  "static shared memory over 48 KiB");
    __shared__ lk_bf16 sQ[BR][KD + 2];
    __shared__ lk_bf16 sdO[BR][KD + 2];
    __shared__ lk_bf16 sK[BC][KD + 2];
    __shared__ lk_bf16 sV[BC][KD + 2];
    __shared__ float sdQ[BR][KD];
    __shared__ float sdS[BR][BC + 1];
    __shared__ float sLse[BR], sDelta[BR];

    const int b = blockIdx.z, h = blockIdx.y, q0 = blockIdx.x * BR;
    const int rows = imin(BR, T - q0);
    const int kvh = h / (n_heads / n_kv_heads);
    const HeadView qv = head_view(b, T, h, n_heads, D);
    const HeadView kv = head_view(b, T, kvh, n_kv_heads, D);
    const float *lse_h = lse + ((int64_t)b * n_heads + h) * T;
    const float *delta_h = delta + ((int64_t)b * n_heads + h) * T;

    load_tile<BR, KD>(sQ, q, qv, q0, rows, D);
    load_tile<BR, KD>(sdO, d_o, qv, q0, rows, D);
    for (int e = threadIdx.x; e < BR * D; e += blockDim.x)
        sdQ[e / D][e % D] = 0.0f;
    for (int r = threadIdx.x; r < BR; r += blockDim.x) {
        sLse[r] = r < rows ? lse_h[q0 + r] : 0.0f;
        sDelta[r] = r < rows ? delta_h[q0 + r] : 0.0f;
    }
    __syncthreads();

    const int n_tiles = (q0 + rows - 1) / BC + 1;
    for (int kt = 0; kt < n_tiles; kt++) {
        const int k0 = kt * BC, cols = imin(BC, T - k0);
        load_tile<BC, KD>(sK, k, kv, k0, cols, D);
        load_tile<BC, KD>(sV, v, kv, k0, cols, D);
        __syncthreads();

        for (int e = threadIdx.x; e < BR * BC; e += blockDim.x) {
            int r = e / BC, c = e - r * BC;
            bool visible = r < rows && c < cols && k0 + c <= q0 + r;
            float p;
            p_and_ds<KD>(&p, &sdS[r][c], sQ[r], sdO[r], sK[c], sV[c],
                         sLse[r], sDelta[r], visible, D, scale);
        }
        __syncthreads();

        for (int e = threadIdx.x; e < BR * D; e += blockDim.x) {
            int r = e / D, d = e - r * D;
            float acc = sdQ[r][d];
            for (int c = 0; c < cols; c++)
                acc += sdS[r][c] * lk::bf16_to_f32(sK[c][d]);
            sdQ[r][d] = acc;
        }
        __syncthreads();
    }

    for (int e = threadIdx.x; e < rows * D; e += blockDim.x) {
        int r = e / D, d = e - r * D;
        d_q[qv.offset + (int64_t)(q0 + r) * qv.ld + d] =
            lk::f32_to_bf16(sdQ[r][d] * scale);
    }
}

inline unsigned tiles(int T, int tile) { return (unsigned)((T + tile - 1) / tile); }

template <int KD>
int forward(void *stream, lk_bf16 *o, float *lse, const lk_bf16 *q,
            const lk_bf16 *k, const lk_bf16 *v, int B, int T, int n_heads,
            int n_kv_heads, int D, float scale)
{
    dim3 grid(tiles(T, FwdTiles<KD>::BR), (unsigned)n_heads, (unsigned)B);
    LK_LAUNCH(attention_forward<KD>, grid, kThreads, stream, o, lse, q, k, v,
              T, n_heads, n_kv_heads, D, scale);
    return lk::launch_status();
}

template <int KD>
int backward(void *stream, lk_bf16 *d_q, lk_bf16 *d_k, lk_bf16 *d_v,
             const float *delta, const lk_bf16 *d_o, const lk_bf16 *q,
             const lk_bf16 *k, const lk_bf16 *v, const float *lse, int B,
             int T, int n_heads, int n_kv_heads, int D, float scale)
{
    dim3 grid_kv(tiles(T, BwdTiles<KD>::BC), (unsigned)n_kv_heads, (unsigned)B);
    LK_LAUNCH(attention_backward_dkdv<KD>, grid_kv, kThreads, stream, d_k, d_v,
              d_o, q, k, v, lse, delta, T, n_heads, n_kv_heads, D, scale);
    int err = lk::launch_status();
    if (err)
        return err;
    dim3 grid_q(tiles(T, BwdTiles<KD>::BR), (unsigned)n_heads, (unsigned)B);
    LK_LAUNCH(attention_backward_dq<KD>, grid_q, kThreads, stream, d_q, d_o,
              q, k, v, lse, delta, T, n_heads, n_kv_heads, D, scale);
    return lk::launch_status();
}

// The launchers (lk.h); see elementwise.cu for the namespace. The model
// checks the shapes; a head_dim the kernels have no tiles for is refused
// here, as an invalid launch value.
extern "C" int lk_attention_forward(void *stream, lk_bf16 *o, float *lse,
                                    const lk_bf16 *q, const lk_bf16 *k,
                                    const lk_bf16 *v, int B, int T,
                                    int n_heads, int n_kv_heads, int head_dim)
{
    if (B <= 0 || T <= 0 || n_heads <= 0)
        return 0;
    if (head_dim < 1 || head_dim > LK_MAX_HEAD_DIM || n_kv_heads < 1 ||
        n_heads % n_kv_heads != 0)
        return (int)cudaErrorInvalidValue;
    float scale = 1.0f / sqrtf((float)head_dim);
    if (head_dim <= 64)
        return forward<64>(stream, o, lse, q, k, v, B, T, n_heads, n_kv_heads,
                           head_dim, scale);
    if (head_dim <= 128)
        return forward<128>(stream, o, lse, q, k, v, B, T, n_heads,
                            n_kv_heads, head_dim, scale);
    return forward<256>(stream, o, lse, q, k, v, B, T, n_heads, n_kv_heads,
                        head_dim, scale);
}

extern "C" int lk_attention_backward(void *stream, lk_bf16 *d_q, lk_bf16 *d_k,
                                     lk_bf16 *d_v, float *delta,
                                     const lk_bf16 *d_o, const lk_bf16 *q,
                                     const lk_bf16 *k, const lk_bf16 *v,
                                     const lk_bf16 *o, const float *lse,
                                     int B, int T, int n_heads,
                                     int n_kv_heads, int head_dim)
{
    if (B <= 0 || T <= 0 || n_heads <= 0)
        return 0;
    if (head_dim < 1 || head_dim > LK_MAX_HEAD_DIM || n_kv_heads < 1 ||
        n_heads % n_kv_heads != 0)
        return (int)cudaErrorInvalidValue;
    float scale = 1.0f / sqrtf((float)head_dim);
    int64_t rows = (int64_t)B * T * n_heads;
    LK_LAUNCH(attention_delta, lk::grid_for(rows, kThreads, kMaxBlocks),
              kThreads, stream, delta, d_o, o, B, T, n_heads, head_dim);
    int err = lk::launch_status();
    if (err)
        return err;
    if (head_dim <= 64)
        return backward<64>(stream, d_q, d_k, d_v, delta, d_o, q, k, v, lse,
                            B, T, n_heads, n_kv_heads, head_dim, scale);
    if (head_dim <= 128)
        return backward<128>(stream, d_q, d_k, d_v, delta, d_o, q, k, v, lse,
                             B, T, n_heads, n_kv_heads, head_dim, scale);
    return backward<256>(stream, d_q, d_k, d_v, delta, d_o, q, k, v, lse, B,
                         T, n_heads, n_kv_heads, head_dim, scale);
}

} // namespace lk_attention
