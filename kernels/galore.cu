// Kernels of the GaLore projector and the fused low-rank AdamW step:
// conversions, transposes, the Gaussian sketch, canonical signs, guarded
// copies and the step's elementwise passes. Every per-element formula is
// the one of src/adamw.c or src/svd.c, in the same order, with the IEEE
// operations of common.cuh (owl::fmul, owl::fadd, ...) so that the build's
// --use_fast_math neither contracts them into FMAs, approximates the
// division and square root nor flushes subnormals: the low-rank step rounds
// as the full-rank one and the CPU backend do.
#include "common.cuh"
#include "galore_kernels.h"

namespace {

constexpr unsigned kThreads = 256;

// Blocks of a 2-D launch: x covers the columns (kThreads * per-thread
// columns), y the rows (grid-stride beyond 65535).
inline dim3 grid_rows(int64_t rows, int64_t cols, unsigned cols_per_block)
{
    int64_t bx = (cols + cols_per_block - 1) / cols_per_block;
    int64_t by = rows < 65535 ? rows : 65535;
    if (bx > 1024)
        bx = 1024;
    return dim3((unsigned)(bx < 1 ? 1 : bx), (unsigned)(by < 1 ? 1 : by));
}

__global__ void to_f32(const void *src, int32_t dtype, int64_t rows,
                       int64_t cols, int64_t lds, float *dst, int64_t ldd,
                       int32_t *flag)
{
    bool bad = false;
    for (int64_t i = blockIdx.y; i < rows; i += gridDim.y)
        for (int64_t j = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
             j < cols; j += (int64_t)gridDim.x * blockDim.x) {
            float x = owl::load_f32(src, dtype, i * lds + j);
            bad |= owl::is_nonfinite(x);
            dst[i * ldd + j] = x;
        }
    if (flag != nullptr && __any_sync(0xffffffffu, bad) &&
        (threadIdx.x & 31) == 0)
        *flag = 1;
}

__device__ __forceinline__ void store_as(void *dst, int32_t dtype, int64_t k,
                                         float x)
{
    if (dtype == owl::DT_F32)
        static_cast<float *>(dst)[k] = x;
    else if (dtype == owl::DT_BF16)
        static_cast<uint16_t *>(dst)[k] = owl::f32_to_bf16(x);
    else
        static_cast<uint16_t *>(dst)[k] = owl::f32_to_f16(x);
}

__global__ void store_f32(const float *src, int64_t rows, int64_t cols,
                          int64_t lds, void *dst, int32_t dtype, int64_t ldd)
{
    for (int64_t i = blockIdx.y; i < rows; i += gridDim.y)
        for (int64_t j = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
             j < cols; j += (int64_t)gridDim.x * blockDim.x)
            store_as(dst, dtype, i * ldd + j, src[i * lds + j]);
}

// 32 x 32 tiles through shared memory (one padding column against bank
// conflicts); blocks of 32 x 8 threads, each moving four elements.
constexpr int kTile = 32;

__global__ void transpose_f32(const float *src, int64_t rows, int64_t cols,
                              int64_t lds, float *dst, int64_t ldd,
                              const int32_t *zero_if)
{
    __shared__ float tile[kTile][kTile + 1];
    const bool zero = zero_if != nullptr && *zero_if != 0;
    const int64_t tiles_y = (rows + kTile - 1) / kTile;
    const int64_t j0 = (int64_t)blockIdx.x * kTile;
    for (int64_t ty = blockIdx.y; ty < tiles_y; ty += gridDim.y) {
        const int64_t i0 = ty * kTile;
        for (int k = threadIdx.y; k < kTile; k += blockDim.y) {
            int64_t i = i0 + k, j = j0 + threadIdx.x;
            if (i < rows && j < cols)
                tile[k][threadIdx.x] = zero ? 0.0f : src[i * lds + j];
        }
        __syncthreads();
        // dst row j0 + k holds source column j0 + k.
        for (int k = threadIdx.y; k < kTile; k += blockDim.y) {
            int64_t j = j0 + k, i = i0 + threadIdx.x;
            if (j < cols && i < rows)
                dst[j * ldd + i] = tile[threadIdx.x][k];
        }
        __syncthreads();
    }
}

__global__ void copy_or_zero(const int32_t *zero_if, const float *src,
                             int64_t lds, float *dst, int64_t ldd,
                             int64_t rows, int64_t cols)
{
    const bool zero = *zero_if != 0;
    if (!zero && src == dst && lds == ldd)
        return;
    for (int64_t i = blockIdx.y; i < rows; i += gridDim.y)
        for (int64_t j = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
             j < cols; j += (int64_t)gridDim.x * blockDim.x)
            dst[i * ldd + j] = zero ? 0.0f : src[i * lds + j];
}

__global__ void gaussian(float *x, int64_t count, uint64_t seed,
                         uint64_t draw)
{
    const double two_pi = 6.283185307179586476925;
    const double inv24 = 1.0 / 16777216.0;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
         i < count; i += (int64_t)gridDim.x * blockDim.x) {
        uint64_t bits = owl::hash3(seed, draw, (uint64_t)i);
        double u1 = ((double)(bits >> 40) + 0.5) * inv24;
        double u2 = (double)(bits & 0xffffffu) * inv24;
        x[i] = (float)(sqrt(-2.0 * log(u1)) * cos(two_pi * u2));
    }
}

// One block per row: the first index of the largest |x| (a reduction over
// (value, index) pairs), then the flip.
__global__ void canonical_signs(float *rows, int64_t count, int64_t len,
                                const int32_t *info, int32_t *flag)
{
    __shared__ float best_abs[kThreads];
    __shared__ int64_t best_idx[kThreads];
    __shared__ int any_bad;
    __shared__ bool flip;
    if (info != nullptr && blockIdx.x == 0 && threadIdx.x == 0 && *info != 0)
        *flag = 1;
    for (int64_t row = blockIdx.x; row < count; row += gridDim.x) {
        float *x = rows + row * len;
        float ba = -1.0f;
        int64_t bi = len;
        bool bad = false;
        for (int64_t i = threadIdx.x; i < len; i += blockDim.x) {
            float v = x[i];
            bad |= owl::is_nonfinite(v);
            float a = fabsf(v);
            if (a > ba) { // strict, and i grows: this thread's first wins
                ba = a;
                bi = i;
            }
        }
        if (threadIdx.x == 0)
            any_bad = 0;
        best_abs[threadIdx.x] = ba;
        best_idx[threadIdx.x] = bi;
        __syncthreads();
        if (bad)
            any_bad = 1;
        for (unsigned s = blockDim.x / 2; s > 0; s >>= 1) {
            if (threadIdx.x < s) {
                float oa = best_abs[threadIdx.x + s];
                int64_t oi = best_idx[threadIdx.x + s];
                if (oa > best_abs[threadIdx.x] ||
                    (oa == best_abs[threadIdx.x] &&
                     oi < best_idx[threadIdx.x])) {
                    best_abs[threadIdx.x] = oa;
                    best_idx[threadIdx.x] = oi;
                }
            }
            __syncthreads();
        }
        // One thread reads the sign before anyone flips.
        if (threadIdx.x == 0) {
            flip = !any_bad && best_idx[0] < len && x[best_idx[0]] < 0.0f;
            if (any_bad)
                *flag = 1;
        }
        __syncthreads();
        if (flip)
            for (int64_t i = threadIdx.x; i < len; i += blockDim.x)
                x[i] = -x[i];
        __syncthreads(); // the shared values are reused by the next row
    }
}

__global__ void guarded_copy(const int32_t *flag, const float *src,
                             int64_t lds, float *dst, int64_t ldd,
                             int64_t rows, int64_t cols)
{
    if (*flag)
        return;
    for (int64_t i = blockIdx.y; i < rows; i += gridDim.y)
        for (int64_t j = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
             j < cols; j += (int64_t)gridDim.x * blockDim.x)
            dst[i * ldd + j] = src[i * lds + j];
}

__global__ void require_basis(const float *first, int64_t len,
                              int32_t *flag)
{
    bool any = false;
    for (int64_t i = threadIdx.x; i < len; i += blockDim.x)
        any |= first[i] != 0.0f;
    if (!__syncthreads_or(any) && threadIdx.x == 0)
        *flag = 1;
}

// set_coeffs of src/adamw.c, in double like the host, rounded to f32 at
// the same points.
__global__ void lowrank_coeffs(owl_lowrank_hparams hp, const int32_t *flag,
                               const unsigned long long *skipped,
                               owl_lowrank_coeffs *out)
{
    owl_lowrank_coeffs c = {};
    uint64_t tt = hp.reset ? 1u : hp.bias_step - (uint64_t)*skipped;
    double t = (double)tt;
    double bc1 = 1.0 - pow(hp.beta1, t);
    double bc2 = 1.0 - pow(hp.beta2, t);
    c.b1 = (float)hp.beta1;
    c.b2 = (float)hp.beta2;
    c.omb1 = (float)(1.0 - hp.beta1);
    c.omb2 = (float)(1.0 - hp.beta2);
    c.eps = (float)hp.eps;
    c.keep1 = owl::fsub(1.0f, c.omb1);
    c.bc2_sqrt = (float)sqrt(bc2);
    c.form = !hp.torch ? 0 : c.omb1 < 0.5f ? 1 : 2;
    if (hp.torch) {
        c.pre = (float)(1.0 - hp.lr * hp.weight_decay);
        c.step = (float)(-hp.lr / bc1);
        c.post = 0.0f;
    } else {
        c.pre = 1.0f;
        c.step = (float)(-hp.lr * sqrt(bc2) / bc1);
        c.post = (float)(-hp.lr * hp.weight_decay);
    }
    if (hp.direct) {
        // apply_lowrank's single GEMM: W' = keep W + alpha back(N)
        c.gemm_beta = (float)((double)c.pre * (1.0 + (double)c.post));
        c.gemm_alpha = (float)((double)c.step * hp.scale *
                               (1.0 + (double)c.post));
    } else {
        // the GEMM's alpha of the CPU's blocked path, applied by
        // lowrank_apply to the unscaled product
        c.gemm_alpha = (float)((double)c.step * hp.scale);
        c.gemm_beta = 0.0f;
    }
    if (*flag) {
        // N is zero then: W' = 1 W + 0 back(0) leaves W as it was.
        c.gemm_alpha = 0.0f;
        c.gemm_beta = hp.direct ? 1.0f : 0.0f;
    }
    *out = c;
}

__device__ __forceinline__ float moment_load(const void *p, bool half,
                                             int64_t k)
{
    return half ? owl::bf16_to_f32(static_cast<const uint16_t *>(p)[k])
                : static_cast<const float *>(p)[k];
}

__device__ __forceinline__ void moment_store(void *p, bool half, int64_t k,
                                             float x)
{
    if (half)
        static_cast<uint16_t *>(p)[k] = owl::f32_to_bf16(x);
    else
        static_cast<float *>(p)[k] = x;
}

__global__ void lowrank_moments(const owl_lowrank_coeffs *cp,
                                const int32_t *flag, float *r, void *m,
                                void *v, bool half, int64_t count, bool reset)
{
    const bool skip = *flag != 0;
    const owl_lowrank_coeffs c = *cp;
    for (int64_t k = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
         k < count; k += (int64_t)gridDim.x * blockDim.x) {
        if (skip) {
            r[k] = 0.0f;
            continue;
        }
        float g = r[k];
        float mk = reset ? 0.0f : moment_load(m, half, k);
        float vk = reset ? 0.0f : moment_load(v, half, k);
        if (c.form == 0)
            mk = owl::fadd(owl::fmul(c.b1, mk), owl::fmul(c.omb1, g));
        else if (c.form == 1)
            mk = owl::fadd(mk, owl::fmul(c.omb1, owl::fsub(g, mk)));
        else
            mk = owl::fsub(g, owl::fmul(owl::fsub(g, mk), c.keep1));
        vk = owl::fadd(owl::fmul(c.b2, vk),
                       owl::fmul(c.omb2, owl::fmul(g, g)));
        float root = owl::fsqrt(vk);
        float n = c.form == 0
                      ? owl::fdiv(mk, owl::fadd(root, c.eps))
                      : owl::fdiv(mk, owl::fadd(owl::fdiv(root, c.bc2_sqrt),
                                                c.eps));
        moment_store(m, half, k, mk);
        moment_store(v, half, k, vk);
        r[k] = n;
    }
}

__global__ void lowrank_apply(const owl_lowrank_coeffs *cp,
                              const int32_t *flag, const float *s, void *w,
                              int32_t dtype, int64_t rows, int64_t cols,
                              int64_t ldw, bool stochastic, uint64_t seed,
                              uint64_t draw)
{
    if (*flag)
        return;
    const float pre = cp->pre, post = cp->post, alpha = cp->gemm_alpha;
    for (int64_t i = blockIdx.y; i < rows; i += gridDim.y)
        for (int64_t j = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
             j < cols; j += (int64_t)gridDim.x * blockDim.x) {
            int64_t k = i * ldw + j;
            float x = owl::fmul(owl::load_f32(w, dtype, k), pre);
            x = owl::fadd(x, owl::fmul(alpha, s[i * cols + j]));
            x = owl::fadd(x, owl::fmul(post, x));
            if (stochastic && dtype == owl::DT_BF16) {
                // store_chunk's bits: 16 per element from one hash per
                // four consecutive flat indices i*cols + j.
                uint64_t idx = (uint64_t)i * (uint64_t)cols + (uint64_t)j;
                uint64_t word = owl::hash3(seed, draw, idx >> 2);
                uint32_t bits = (uint32_t)(word >> (16u * (unsigned)(idx & 3u)));
                static_cast<uint16_t *>(w)[k] =
                    owl::f32_to_bf16_stochastic(x, bits & 0xffffu);
            } else {
                store_as(w, dtype, k, x);
            }
        }
}

__global__ void lowrank_finish(const int32_t *flag,
                               unsigned long long *skipped, int32_t reset,
                               uint64_t bias_prev)
{
    if (*flag)
        *skipped = *skipped + 1ull - (reset ? (unsigned long long)bias_prev
                                            : 0ull);
    else if (reset)
        *skipped = 0;
}

} // namespace

extern "C" int owl__k_to_f32(void *stream, const void *src, int32_t dtype,
                             int64_t rows, int64_t cols, int64_t lds,
                             float *dst, int64_t ldd, int32_t *flag)
{
    return owl::launch(to_f32, grid_rows(rows, cols, kThreads * 4), kThreads,
                       (cudaStream_t)stream, src, dtype, rows, cols, lds, dst,
                       ldd, flag);
}

extern "C" int owl__k_transpose_f32(void *stream, const float *src,
                                    int64_t rows, int64_t cols, int64_t lds,
                                    float *dst, int64_t ldd,
                                    const int32_t *zero_if)
{
    int64_t tx = (cols + kTile - 1) / kTile, ty = (rows + kTile - 1) / kTile;
    dim3 grid((unsigned)tx, (unsigned)(ty < 65535 ? ty : 65535));
    return owl::launch(transpose_f32, grid, dim3(kTile, 8),
                       (cudaStream_t)stream, src, rows, cols, lds, dst, ldd,
                       zero_if);
}

extern "C" int owl__k_copy_or_zero(void *stream, const int32_t *zero_if,
                                   const float *src, int64_t lds, float *dst,
                                   int64_t ldd, int64_t rows, int64_t cols)
{
    return owl::launch(copy_or_zero, grid_rows(rows, cols, kThreads * 4),
                       kThreads, (cudaStream_t)stream, zero_if, src, lds, dst,
                       ldd, rows, cols);
}

extern "C" int owl__k_store_f32(void *stream, const float *src, int64_t rows,
                                int64_t cols, int64_t lds, void *dst,
                                int32_t dtype, int64_t ldd)
{
    return owl::launch(store_f32, grid_rows(rows, cols, kThreads * 4), kThreads,
                       (cudaStream_t)stream, src, rows, cols, lds, dst, dtype,
                       ldd);
}

extern "C" int owl__k_gaussian(void *stream, float *x, int64_t count,
                               uint64_t seed, uint64_t draw)
{
    return owl::launch(gaussian, owl::grid_for(count, kThreads), kThreads,
                       (cudaStream_t)stream, x, count, seed, draw);
}

extern "C" int owl__k_canonical_signs(void *stream, float *rows,
                                      int64_t count, int64_t len,
                                      const int32_t *info, int32_t *flag)
{
    unsigned blocks = (unsigned)(count < 65535 ? count : 65535);
    return owl::launch(canonical_signs, blocks < 1 ? 1u : blocks, kThreads,
                       (cudaStream_t)stream, rows, count, len, info, flag);
}

extern "C" int owl__k_guarded_copy(void *stream, const int32_t *flag,
                                   const float *src, int64_t lds, float *dst,
                                   int64_t ldd, int64_t rows, int64_t cols)
{
    return owl::launch(guarded_copy, grid_rows(rows, cols, kThreads * 4),
                       kThreads, (cudaStream_t)stream, flag, src, lds, dst, ldd,
                       rows, cols);
}

extern "C" int owl__k_require_basis(void *stream, const float *first,
                                    int64_t len, int32_t *flag)
{
    return owl::launch(require_basis, 1, kThreads, (cudaStream_t)stream, first,
                       len, flag);
}

extern "C" int owl__k_lowrank_coeffs(void *stream, owl_lowrank_hparams hp,
                                     const int32_t *flag,
                                     const unsigned long long *skipped,
                                     owl_lowrank_coeffs *out)
{
    return owl::launch(lowrank_coeffs, 1, 1, (cudaStream_t)stream, hp, flag,
                       skipped, out);
}

extern "C" int owl__k_lowrank_moments(void *stream,
                                      const owl_lowrank_coeffs *c,
                                      const int32_t *flag, float *r, void *m,
                                      void *v, int32_t moment_dtype,
                                      int64_t count, int32_t reset)
{
    return owl::launch(lowrank_moments, owl::grid_for(count, kThreads),
                       kThreads, (cudaStream_t)stream, c, flag, r, m, v,
                       moment_dtype == owl::DT_BF16, count, reset != 0);
}

extern "C" int owl__k_lowrank_apply(void *stream, const owl_lowrank_coeffs *c,
                                    const int32_t *flag, const float *s,
                                    void *w, int32_t dtype, int64_t rows,
                                    int64_t cols, int64_t ldw,
                                    int32_t stochastic, uint64_t seed,
                                    uint64_t draw)
{
    return owl::launch(lowrank_apply, grid_rows(rows, cols, kThreads * 4),
                       kThreads, (cudaStream_t)stream, c, flag, s, w, dtype,
                       rows, cols, ldw, stochastic != 0, seed, draw);
}

extern "C" int owl__k_lowrank_finish(void *stream, const int32_t *flag,
                                     unsigned long long *skipped,
                                     int32_t reset, uint64_t bias_prev)
{
    return owl::launch(lowrank_finish, 1, 1, (cudaStream_t)stream, flag,
                       skipped, reset, bias_prev);
}
