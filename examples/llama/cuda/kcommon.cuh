// What the LLaMa kernels share: bf16 <-> f32 conversions that are the same
// bit for bit on the device, on the host and in the emulator (and as
// src/dtype.h), math wrappers, block reductions on static shared memory,
// grid sizing and the launch macro. Built by nvcc, or by g++ with
// LK_EMULATE defined (emu/kernels_emu.cpp), where emu/cuda_emu.h supplies
// the CUDA built-ins.
#ifndef LLAMA_KCOMMON_CUH
#define LLAMA_KCOMMON_CUH

#include "lk.h"

#include <cstdint>
#include <cstring>

#ifdef LK_EMULATE
#include "emu/cuda_emu.h"
#define LK_RAW_LAUNCH LK_EMU_LAUNCH
#else
#include <cuda_runtime.h>
#define LK_RAW_LAUNCH(kernel, grid, block, stream, ...)                        \
    kernel<<<(grid), (block), 0, (cudaStream_t)(stream)>>>(__VA_ARGS__)
#endif

// LK_LAUNCH(kernel, grid, block, stream, args...) is the launch
// kernel<<<grid, block, 0, stream>>>(args...), written as a macro so that
// the emulator can run the same line on the host; lk::launch_status()
// right after it is that launch's status. The runtime keeps one last
// error per host thread, overwritten by every failing call and cleared
// only when read, so an error nobody read (the cudaErrorNotReady of a
// stream query, a failed call whose status was handled without clearing
// it) would read as this launch's failure: the macro reads and drops it
// right before the launch, as the CUDA Programming Guide's "Error
// Checking" prescribes. Nothing is lost: a sticky error (a broken
// context) fails the launch itself, any other was already returned by the
// call that made it.
#define LK_LAUNCH(kernel, grid, block, stream, ...)                            \
    do {                                                                       \
        (void)cudaGetLastError();                                              \
        LK_RAW_LAUNCH(kernel, grid, block, stream, __VA_ARGS__);               \
    } while (0)

namespace lk {

__host__ __device__ __forceinline__ uint32_t f32_bits(float f)
{
#if defined(__CUDA_ARCH__) || defined(LK_EMULATE)
    return __float_as_uint(f);
#else
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
#endif
}

__host__ __device__ __forceinline__ float bits_f32(uint32_t u)
{
#if defined(__CUDA_ARCH__) || defined(LK_EMULATE)
    return __uint_as_float(u);
#else
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
#endif
}

__host__ __device__ __forceinline__ float bf16_to_f32(lk_bf16 h)
{
    return bits_f32((uint32_t)h << 16);
}

// Round to nearest, ties to even; a NaN stays a (quiet) NaN instead of
// rounding into Inf.
__host__ __device__ __forceinline__ lk_bf16 f32_to_bf16(float f)
{
    uint32_t u = f32_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u)
        return (lk_bf16)((u >> 16) | 0x0040u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (lk_bf16)(u >> 16);
}

// Math in f32. nvcc builds with --use_fast_math, so these are the fast
// hardware approximations there (a few ulp); the emulator uses libm.
__device__ __forceinline__ float kexp(float x) { return expf(x); }
__device__ __forceinline__ float klog(float x) { return logf(x); }
__device__ __forceinline__ float krsqrt(float x) { return rsqrtf(x); }
__device__ __forceinline__ float kmax(float a, float b) { return a > b ? a : b; }

// Sum / maximum of one value per thread over the block, returned to every
// thread. `scratch` is a static __shared__ array of at least blockDim.x
// floats; blockDim.x (1-D blocks only) must be a power of two. Every thread
// of the block must call it (it synchronises); the fixed tree order makes
// the result deterministic. The trailing barrier lets the caller reuse
// `scratch` at once.
__device__ __forceinline__ float block_sum(float v, float *scratch)
{
    unsigned t = threadIdx.x;
    scratch[t] = v;
    __syncthreads();
    for (unsigned half = blockDim.x / 2; half > 0; half /= 2) {
        if (t < half)
            scratch[t] += scratch[t + half];
        __syncthreads();
    }
    float r = scratch[0];
    __syncthreads();
    return r;
}

__device__ __forceinline__ float block_max(float v, float *scratch)
{
    unsigned t = threadIdx.x;
    scratch[t] = v;
    __syncthreads();
    for (unsigned half = blockDim.x / 2; half > 0; half /= 2) {
        if (t < half)
            scratch[t] = kmax(scratch[t], scratch[t + half]);
        __syncthreads();
    }
    float r = scratch[0];
    __syncthreads();
    return r;
}

// Blocks for a grid-stride loop over n items: as many as the items need,
// at most max_blocks (the loops cover the rest), at least one.
inline unsigned grid_for(int64_t n, unsigned threads, unsigned max_blocks)
{
    int64_t b = (n + threads - 1) / threads;
    if (b < 1)
        b = 1;
    return b > (int64_t)max_blocks ? max_blocks : (unsigned)b;
}

// The status of the LK_LAUNCH just made, as lk.h returns it (and
// cleared, so the next launch starts clean).
inline int launch_status() { return (int)cudaGetLastError(); }

} // namespace lk

#endif // LLAMA_KCOMMON_CUH
