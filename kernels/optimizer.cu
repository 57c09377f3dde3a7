// The optimizer's step kernels: one read of every updated gradient that
// flags NaN/Inf and sums squares in f64 into fixed partials, a one-block
// reduction of those partials into the global norm and the clipping
// factor, and the in-place scaling. Nothing here depends on the device's
// size: the partials' grid is fixed, so the norm (and the clipped
// gradients) are the same on every GPU and every run.
#include "common.cuh"
#include "optimizer_kernels.h"

namespace {

constexpr unsigned kThreads = 256; // a power of two: the tree reductions
static_assert(OWL_K_OPT_PARTIALS == 256, "one partial per block of kThreads");

// f32 product rounded to nearest even without flushing subnormals (the
// library compiles with --use_fast_math; this is the CPU's x * c).
__device__ __forceinline__ float mul_rn(float a, float b)
{
    return owl::fmul(a, b);
}

// Visits the gradient's elements as a fixed function of the grid: dense
// storage (ld == cols, or one row) as one linear range strided over every
// thread; otherwise rows over blocks and columns over threads. No
// division per element.
template <typename F>
__device__ __forceinline__ void for_each(int64_t rows, int64_t cols,
                                         int64_t ld, F f)
{
    const int64_t tid = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    const int64_t nthreads = (int64_t)gridDim.x * blockDim.x;
    if (ld == cols || rows == 1) {
        const int64_t n = rows * cols;
        for (int64_t i = tid; i < n; i += nthreads)
            f(i);
    } else {
        for (int64_t r = blockIdx.x; r < rows; r += gridDim.x)
            for (int64_t c = threadIdx.x; c < cols; c += blockDim.x)
                f(r * ld + c);
    }
}

__global__ void __launch_bounds__(kThreads)
grad_sumsq(const void *g, int32_t dtype, int64_t rows, int64_t cols,
           int64_t ld, double *partials, int32_t *flag)
{
    __shared__ double sh[kThreads];
    double acc = 0;
    bool bad = false;
    for_each(rows, cols, ld, [&](int64_t i) {
        const float x = owl::load_f32(g, dtype, i);
        bad |= owl::is_nonfinite(x);
        // exact in f64 (a 24-bit square), so contraction cannot change it
        acc += (double)x * (double)x;
    });
    // Every thread reaches this: the whole warp votes.
    if (__any_sync(0xffffffffu, bad) && (threadIdx.x & 31) == 0)
        *flag = 1;
    sh[threadIdx.x] = acc;
    __syncthreads();
    for (unsigned s = kThreads / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s)
            sh[threadIdx.x] += sh[threadIdx.x + s];
        __syncthreads();
    }
    if (threadIdx.x == 0)
        partials[blockIdx.x] = sh[0];
}

__global__ void __launch_bounds__(kThreads)
grad_norm(const double *partials, uint64_t count, double max_norm,
          const int32_t *flag, double *stats)
{
    __shared__ double sh[kThreads];
    double total = 0; // meaningful in thread 0
    for (uint64_t k = 0; k < count; k++) {
        sh[threadIdx.x] = partials[k * OWL_K_OPT_PARTIALS + threadIdx.x];
        __syncthreads();
        for (unsigned s = kThreads / 2; s > 0; s >>= 1) {
            if (threadIdx.x < s)
                sh[threadIdx.x] += sh[threadIdx.x + s];
            __syncthreads();
        }
        if (threadIdx.x == 0)
            total += sh[0];
        __syncthreads(); // sh is rewritten by the next gradient
    }
    if (threadIdx.x != 0 || *flag)
        return;
    // f64 arithmetic: --use_fast_math leaves it IEEE.
    const double norm = sqrt(total);
    stats[0] = norm;
    stats[1] = max_norm > 0 ? max_norm / (norm + 1e-6) : 1.0;
}

__global__ void grad_scale(void *g, int32_t dtype, int64_t rows, int64_t cols,
                           int64_t ld, const double *stats,
                           const int32_t *flag)
{
    if (*flag)
        return; // a skipped step leaves the gradients as they were
    const double coef = stats[1];
    if (!(coef < 1.0))
        return; // torch multiplies by the clamped 1.0: no change
    const float c = (float)coef;
    if (dtype == owl::DT_F32) {
        float *x = static_cast<float *>(g);
        for_each(rows, cols, ld, [&](int64_t i) { x[i] = mul_rn(x[i], c); });
    } else if (dtype == owl::DT_BF16) {
        uint16_t *x = static_cast<uint16_t *>(g);
        for_each(rows, cols, ld, [&](int64_t i) {
            x[i] = owl::f32_to_bf16(mul_rn(owl::bf16_to_f32(x[i]), c));
        });
    } else {
        uint16_t *x = static_cast<uint16_t *>(g);
        for_each(rows, cols, ld, [&](int64_t i) {
            x[i] = owl::f32_to_f16(mul_rn(owl::f16_to_f32(x[i]), c));
        });
    }
}

} // namespace

extern "C" int owl__k_opt_grad_sumsq(void *stream, const void *g,
                                     int32_t dtype, int64_t rows,
                                     int64_t cols, int64_t ld,
                                     double *partials, int32_t *flag)
{
    return owl::launch(grad_sumsq, OWL_K_OPT_PARTIALS, kThreads,
                       (cudaStream_t)stream, g, dtype, rows, cols, ld, partials,
                       flag);
}

extern "C" int owl__k_opt_grad_norm(void *stream, const double *partials,
                                    uint64_t count, double max_norm,
                                    const int32_t *flag, double *stats)
{
    return owl::launch(grad_norm, 1, kThreads, (cudaStream_t)stream, partials,
                       count, max_norm, flag, stats);
}

extern "C" int owl__k_opt_grad_scale(void *stream, int32_t sm_count, void *g,
                                     int32_t dtype, int64_t rows,
                                     int64_t cols, int64_t ld,
                                     const double *stats, const int32_t *flag)
{
    // Dense: enough blocks for the elements, at most a few waves; row
    // mode: one block per row, same cap.
    const bool dense = ld == cols || rows == 1;
    const unsigned cap = 4u * (unsigned)(sm_count > 0 ? sm_count : 1) * 8u;
    unsigned blocks = dense ? owl::grid_for(rows * cols, kThreads, cap)
                            : (rows < (int64_t)cap ? (unsigned)rows : cap);
    return owl::launch(grad_scale, blocks, kThreads, (cudaStream_t)stream, g,
                       dtype, rows, cols, ld, stats, flag);
}

extern "C" int owl__k_opt_copy_to_host(void *stream, void *host,
                                       const void *dev, size_t bytes)
{
    return (int)cudaMemcpyAsync(host, dev, bytes, cudaMemcpyDeviceToHost,
                                (cudaStream_t)stream);
}

extern "C" int owl__k_opt_copy_to_device(void *stream, void *dev,
                                         const void *host, size_t bytes)
{
    return (int)cudaMemcpyAsync(dev, host, bytes, cudaMemcpyHostToDevice,
                                (cudaStream_t)stream);
}
