// The shared step kernels: non-finite detection into the context's flag,
// and counting a skipped step.
#include "common.cuh"
#include "kernels.h"

#include <cuda_fp16.h>

namespace {

__global__ void flag_nonfinite(const void *data, int32_t dtype, int64_t rows,
                               int64_t cols, int64_t ld, int32_t *flag)
{
    const int64_t n = rows * cols;
    bool bad = false;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        int64_t r = i / cols, c = i - r * cols;
        bad |= owl::is_nonfinite(owl::load_f32(data, dtype, r * ld + c));
    }
    // One write per warp that saw a bad value; any order is fine.
    if (__any_sync(0xffffffffu, bad) && (threadIdx.x & 31) == 0)
        *flag = 1;
}

__global__ void count_skip(const int32_t *flag, unsigned long long *skips)
{
    if (*flag)
        ++*skips;
}

} // namespace

extern "C" int owl__k_flag_nonfinite(void *stream, const void *data,
                                     int32_t dtype, int64_t rows,
                                     int64_t cols, int64_t ld, int32_t *flag)
{
    const unsigned threads = 256;
    flag_nonfinite<<<owl::grid_for(rows * cols, threads), threads, 0,
                     (cudaStream_t)stream>>>(data, dtype, rows, cols, ld,
                                             flag);
    return (int)cudaGetLastError();
}

extern "C" int owl__k_count_skip(void *stream, const int32_t *flag,
                                 unsigned long long *skips)
{
    count_skip<<<1, 1, 0, (cudaStream_t)stream>>>(flag, skips);
    return (int)cudaGetLastError();
}
