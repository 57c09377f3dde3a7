// RMSNorm (forward, backward) and the rotary embedding of the LLaMa
// example, with model.c's formulas: y = x * rstd * gain with
// rstd = 1 / sqrt(mean(x^2) + eps), and the rotate-half RoPE of Hugging
// Face (coordinate i pairs with i + head_dim/2).
#include "kcommon.cuh"

namespace lk_norm_rope {

const unsigned kThreads = 256;    // power of two: block_sum's tree
// One block per row: the x dimension of a grid reaches 2^31 - 1 blocks,
// more rows than any batch has (the kernels still loop past it).
const unsigned kMaxRowBlocks = 0x7fffffffu;
const unsigned kMaxBlocks = 4096;
// d_gain: each block sums a column strip over a chunk of at least this
// many rows, so the atomics are few (dim per chunk) and spread out.
const int64_t kGainRowsPerChunk = 64;
const int64_t kGainMaxChunks = 256;

// One block per row (rows loop when n exceeds the grid); every thread of a
// block walks the same rows, so the reductions' barriers are uniform.
__global__ void rmsnorm_forward(lk_bf16 *y, float *rstd, const float *x,
                                const lk_bf16 *gain, int64_t n, int dim,
                                float eps)
{
    __shared__ float scratch[kThreads];
    for (int64_t row = blockIdx.x; row < n; row += gridDim.x) {
        const float *xr = x + row * dim;
        float ss = 0.0f;
        for (int j = threadIdx.x; j < dim; j += blockDim.x)
            ss += xr[j] * xr[j];
        ss = lk::block_sum(ss, scratch);
        float r = lk::krsqrt(ss / (float)dim + eps);
        if (threadIdx.x == 0)
            rstd[row] = r;
        lk_bf16 *yr = y + row * dim;
        for (int j = threadIdx.x; j < dim; j += blockDim.x)
            yr[j] = lk::f32_to_bf16(xr[j] * r * lk::bf16_to_f32(gain[j]));
    }
}

// dL/dx = r u - r^3 x mean(u x), u = gain * d_y (the second term is the
// path through rstd), added into d_x.
__global__ void rmsnorm_backward_x(float *d_x, const float *d_y,
                                   const float *x, const float *rstd,
                                   const lk_bf16 *gain, int64_t n, int dim)
{
    __shared__ float scratch[kThreads];
    for (int64_t row = blockIdx.x; row < n; row += gridDim.x) {
        const float *xr = x + row * dim, *dy = d_y + row * dim;
        float dot = 0.0f;
        for (int j = threadIdx.x; j < dim; j += blockDim.x)
            dot += lk::bf16_to_f32(gain[j]) * dy[j] * xr[j];
        dot = lk::block_sum(dot, scratch);
        float r = rstd[row];
        float c = dot / (float)dim * r * r * r;
        float *dx = d_x + row * dim;
        for (int j = threadIdx.x; j < dim; j += blockDim.x)
            dx[j] += r * lk::bf16_to_f32(gain[j]) * dy[j] - c * xr[j];
    }
}

// d_gain[j] += sum_i d_y[i,j] x[i,j] rstd[i]. Block (bx, by) sums columns
// bx*blockDim.x + threadIdx.x over the by-th chunk of rows in f32, then
// adds its partial with one atomicAdd per column: the partials' order
// varies between runs, so the last bits of d_gain are not deterministic.
__global__ void rmsnorm_backward_gain(float *d_gain, const float *d_y,
                                      const float *x, const float *rstd,
                                      int64_t n, int dim, int64_t chunk)
{
    int64_t j = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= dim)
        return;
    int64_t begin = blockIdx.y * chunk;
    int64_t end = begin + chunk < n ? begin + chunk : n;
    float acc = 0.0f;
    for (int64_t i = begin; i < end; i++)
        acc += d_y[i * dim + j] * x[i * dim + j] * rstd[i];
    atomicAdd(&d_gain[j], acc);
}

// One thread per rotated pair (row, head, i < head_dim/2). The inverse
// rotation is the rotation by -angle: sin's sign flips.
__global__ void rope(lk_bf16 *x, const float *cos_t, const float *sin_t,
                     int64_t n, int T, int heads, int head_dim, float sign)
{
    int half = head_dim / 2;
    int64_t per_row = (int64_t)heads * half, total = n * per_row;
    for (int64_t p = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
         p < total; p += (int64_t)gridDim.x * blockDim.x) {
        int64_t row = p / per_row;
        int rem = (int)(p - row * per_row);
        int h = rem / half, i = rem - h * half;
        int64_t pos = row % T;
        float c = cos_t[pos * half + i], s = sign * sin_t[pos * half + i];
        lk_bf16 *v = x + row * heads * head_dim + (int64_t)h * head_dim;
        float a = lk::bf16_to_f32(v[i]), b = lk::bf16_to_f32(v[i + half]);
        v[i] = lk::f32_to_bf16(a * c - b * s);
        v[i + half] = lk::f32_to_bf16(b * c + a * s);
    }
}

inline unsigned row_blocks(int64_t n)
{
    return n > (int64_t)kMaxRowBlocks ? kMaxRowBlocks : (unsigned)n;
}

// The launchers (lk.h); see elementwise.cu for the namespace.
extern "C" int lk_rmsnorm_forward(void *stream, lk_bf16 *y, float *rstd,
                                  const float *x, const lk_bf16 *gain,
                                  int64_t n, int dim, float eps)
{
    if (n <= 0 || dim <= 0)
        return 0;
    LK_LAUNCH(rmsnorm_forward, row_blocks(n), kThreads, stream, y, rstd, x,
              gain, n, dim, eps);
    return lk::launch_status();
}

// d_x may be NULL (only d_gain wanted), d_gain may be NULL.
extern "C" int lk_rmsnorm_backward(void *stream, float *d_x, float *d_gain,
                                   const float *d_y, const float *x,
                                   const float *rstd, const lk_bf16 *gain,
                                   int64_t n, int dim)
{
    if (n <= 0 || dim <= 0)
        return 0;
    if (d_x) {
        LK_LAUNCH(rmsnorm_backward_x, row_blocks(n), kThreads, stream, d_x,
                  d_y, x, rstd, gain, n, dim);
        int err = lk::launch_status();
        if (err)
            return err;
    }
    if (d_gain) {
        int64_t chunks = (n + kGainRowsPerChunk - 1) / kGainRowsPerChunk;
        if (chunks > kGainMaxChunks)
            chunks = kGainMaxChunks;
        int64_t chunk = (n + chunks - 1) / chunks;
        chunks = (n + chunk - 1) / chunk;
        dim3 grid((unsigned)((dim + kThreads - 1) / kThreads),
                  (unsigned)chunks);
        LK_LAUNCH(rmsnorm_backward_gain, grid, kThreads, stream, d_gain, d_y,
                  x, rstd, n, dim, chunk);
        return lk::launch_status();
    }
    return 0;
}

extern "C" int lk_rope(void *stream, lk_bf16 *x, const float *cos_t,
                       const float *sin_t, int64_t n, int T, int heads,
                       int head_dim, int inverse)
{
    int64_t pairs = n * heads * (int64_t)(head_dim / 2);
    if (pairs <= 0 || T <= 0)
        return 0;
    LK_LAUNCH(rope, lk::grid_for(pairs, kThreads, kMaxBlocks), kThreads,
              stream, x, cos_t, sin_t, n, T, heads, head_dim,
              inverse ? -1.0f : 1.0f);
    return lk::launch_status();
}

} // namespace lk_norm_rope
