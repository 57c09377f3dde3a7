// The shared step kernels: non-finite detection into the context's flag,
// and counting a skipped step.
#include "common.cuh"
#include "kernels.h"

#include <cuda_fp16.h>

namespace {

// Rows over grid.y, columns over grid.x and the threads, both grid-strided:
// no division per element.
__global__ void flag_nonfinite(const void *data, int32_t dtype, int64_t rows,
                               int64_t cols, int64_t ld, int32_t *flag)
{
    bool bad = false;
    for (int64_t r = blockIdx.y; r < rows; r += gridDim.y)
        for (int64_t c = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
             c < cols; c += (int64_t)gridDim.x * blockDim.x)
            bad |= owl::is_nonfinite(owl::load_f32(data, dtype, r * ld + c));
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
    unsigned gx = owl::grid_for(cols, threads, 64);
    unsigned gy = rows < 65535 ? (unsigned)rows : 65535u;
    // About 4096 blocks in all, enough to fill any current GPU.
    unsigned cap = 4096u / gx > 0 ? 4096u / gx : 1u;
    if (gy > cap)
        gy = cap;
    return owl::launch(flag_nonfinite, dim3(gx, gy), threads,
                       (cudaStream_t)stream, data, dtype, rows, cols, ld, flag);
}

extern "C" int owl__k_count_skip(void *stream, const int32_t *flag,
                                 unsigned long long *skips)
{
    return owl::launch(count_skip, 1, 1, (cudaStream_t)stream, flag, skips);
}
