// Device-side helpers shared by the kernels: 16-bit storage conversions
// that match src/dtype.h bit for bit, the counter-based random numbers of
// src/internal.h, and grid sizing.
#ifndef OWLORE_KERNELS_COMMON_CUH
#define OWLORE_KERNELS_COMMON_CUH

#include <cstdint>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

namespace owl {

// owl_dtype values (include/owlore/owlore.h).
enum : int32_t { DT_F32 = 0, DT_BF16 = 1, DT_F16 = 2 };

__device__ __forceinline__ float bf16_to_f32(uint16_t h)
{
    return __uint_as_float((uint32_t)h << 16);
}

// Round to nearest even; NaN stays a quiet NaN (as owl_f32_to_bf16).
__device__ __forceinline__ uint16_t f32_to_bf16(float f)
{
    uint32_t u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((u >> 16) | 0x0040u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

// Stochastic rounding with 16 random bits (as owl_f32_to_bf16_stochastic).
__device__ __forceinline__ uint16_t f32_to_bf16_stochastic(float f,
                                                           uint32_t rnd16)
{
    uint32_t u = __float_as_uint(f);
    if ((u & 0x7f800000u) == 0x7f800000u)
        return f32_to_bf16(f);
    uint32_t r = u + (rnd16 & 0xffffu);
    if ((r & 0x7f800000u) == 0x7f800000u)
        return (uint16_t)(u >> 16);
    return (uint16_t)(r >> 16);
}

// IEEE half <-> f32 through the hardware conversions (round to nearest
// even, subnormals and overflow to Inf, as owl_f32_to_f16).
__device__ __forceinline__ float f16_to_f32(uint16_t h)
{
    return __half2float(__ushort_as_half(h));
}
__device__ __forceinline__ uint16_t f32_to_f16(float f)
{
    return __half_as_ushort(__float2half_rn(f));
}

__device__ __forceinline__ float load_f32(const void *base, int32_t dtype,
                                          int64_t i)
{
    if (dtype == DT_F32)
        return static_cast<const float *>(base)[i];
    uint16_t h = static_cast<const uint16_t *>(base)[i];
    return dtype == DT_BF16 ? bf16_to_f32(h) : f16_to_f32(h);
}

__device__ __forceinline__ bool is_nonfinite(float x)
{
    return (__float_as_uint(x) & 0x7f800000u) == 0x7f800000u;
}

// SplitMix64 finaliser and the three-word hash of src/internal.h, so a
// random value is the same function of (seed, stream, index) on both
// backends.
__device__ __forceinline__ uint64_t mix64(uint64_t x)
{
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}
__device__ __forceinline__ uint64_t hash3(uint64_t a, uint64_t b, uint64_t c)
{
    return mix64(mix64(mix64(a) ^ b) ^ c);
}

// ---- IEEE f32 arithmetic -------------------------------------------------
// The library compiles kernels with --use_fast_math, which flushes f32
// subnormals to zero, approximates division and square root and contracts
// a*b+c into one fused multiply-add. The optimizer's updates must round as
// the CPU backend does, one IEEE operation at a time and with subnormals
// kept, so these spell out the PTX instructions with round-to-nearest and
// no .ftz: nothing can fuse, approximate or flush them. (The __fmul_rn
// family is not enough: it does not fuse, but under --use_fast_math it
// flushes.)
__device__ __forceinline__ float fadd(float a, float b)
{
    float r;
    asm("add.rn.f32 %0, %1, %2;" : "=f"(r) : "f"(a), "f"(b));
    return r;
}
__device__ __forceinline__ float fsub(float a, float b)
{
    float r;
    asm("sub.rn.f32 %0, %1, %2;" : "=f"(r) : "f"(a), "f"(b));
    return r;
}
__device__ __forceinline__ float fmul(float a, float b)
{
    float r;
    asm("mul.rn.f32 %0, %1, %2;" : "=f"(r) : "f"(a), "f"(b));
    return r;
}
__device__ __forceinline__ float fdiv(float a, float b)
{
    float r;
    asm("div.rn.f32 %0, %1, %2;" : "=f"(r) : "f"(a), "f"(b));
    return r;
}
__device__ __forceinline__ float fsqrt(float a)
{
    float r;
    asm("sqrt.rn.f32 %0, %1;" : "=f"(r) : "f"(a));
    return r;
}

// ---- launching ----------------------------------------------------------
// kernel<<<grid, block, 0, stream>>>(args...), returning the cudaError_t
// of this launch alone. The runtime keeps one last error per host thread,
// overwritten by every failing call and cleared only when read: an error
// nobody read (a stream query's expected cudaErrorNotReady, a failed call
// whose status was handled without clearing it) would be taken for this
// launch's failure if the last error were only read after the launch. So
// it is read and dropped right before the launch as well, as the CUDA
// Programming Guide's "Error Checking" prescribes. Nothing is lost by
// dropping it: a sticky error (a broken context) fails the launch itself,
// and any other was the status of a call that has already returned it.
// Every launcher of kernels/ goes through here.
template <typename... Params, typename... Args>
inline int launch(void (*kernel)(Params...), dim3 grid, dim3 block,
                  cudaStream_t stream, Args... args)
{
    (void)cudaGetLastError();
    kernel<<<grid, block, 0, stream>>>(args...);
    return (int)cudaGetLastError();
}

// Blocks for a grid-stride loop over n items: enough to fill the device,
// never more than the items need.
inline unsigned grid_for(int64_t n, unsigned threads, unsigned max_blocks = 4096)
{
    int64_t b = (n + threads - 1) / threads;
    if (b < 1)
        b = 1;
    return b > (int64_t)max_blocks ? max_blocks : (unsigned)b;
}

} // namespace owl

#endif // OWLORE_KERNELS_COMMON_CUH
