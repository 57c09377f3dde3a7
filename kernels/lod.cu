// Activation sums of squares and the two LOD passes on the device, with
// the CPU's precision choices (src/lod.c): f64 accumulation, and outlier
// scores A_ij = |W_ij| * sqrt(s_j) formed in f64 with correctly rounded
// operations, so each score is bit for bit the CPU's and only the order of
// the pooled sum differs.
#include "common.cuh"
#include "lod_kernels.h"

#include <cstddef>

namespace {

const unsigned kThreads = 256;
// act_sumsq's block: 32 columns by kRowLanes row lanes.
const unsigned kRowLanes = 16;

// Element i of a statistic vector (f32 or f64) as f64.
__device__ __forceinline__ double load_stat(const void *s, int32_t dtype,
                                            int64_t i)
{
    return dtype == 3 ? static_cast<const double *>(s)[i]
                      : (double)static_cast<const float *>(s)[i];
}

// The outlier score, as src/lod.c forms it: fabs((double)w) * sqrt(s).
__device__ __forceinline__ double score(float w, double s)
{
    return __dmul_rn(fabs((double)w), __dsqrt_rn(s));
}

// Sum of the block's values, in a fixed tree order (blockDim.x == kThreads).
__device__ double block_sum(double x, double *shared)
{
    shared[threadIdx.x] = x;
    __syncthreads();
    for (unsigned half = kThreads / 2; half > 0; half /= 2) {
        if (threadIdx.x < half)
            shared[threadIdx.x] =
                __dadd_rn(shared[threadIdx.x], shared[threadIdx.x + half]);
        __syncthreads();
    }
    return shared[0];
}

// One block per 32 columns: lane (tx, ty) sums rows ty, ty + kRowLanes,
// ... of column tx in row order, then lane ty == 0 adds the kRowLanes
// partial sums in order. The squares of f32 values are exact in f64.
__global__ void act_sumsq(const void *x, int32_t dtype, int64_t rows,
                          int64_t cols, int64_t ldx, float *sumsq)
{
    __shared__ double part[kRowLanes][32];
    const int64_t j = blockIdx.x * (int64_t)32 + threadIdx.x;
    double acc = 0.0;
    if (j < cols) {
        for (int64_t t = threadIdx.y; t < rows; t += kRowLanes) {
            double v = (double)owl::load_f32(x, dtype, t * ldx + j);
            acc = __dadd_rn(acc, __dmul_rn(v, v));
        }
    }
    part[threadIdx.y][threadIdx.x] = acc;
    __syncthreads();
    if (threadIdx.y == 0 && j < cols) {
        double total = 0.0;
        for (unsigned r = 0; r < kRowLanes; r++)
            total = __dadd_rn(total, part[r][threadIdx.x]);
        sumsq[j] = (float)__dadd_rn((double)sumsq[j], total);
    }
}

// Pass 1: block b sums the scores of rows b, b + gridDim.x, ...
__global__ void lod_sum(const void *w, int32_t wd, int64_t rows,
                        int64_t cols, int64_t ldw, const void *s, int32_t sd,
                        int32_t first, owl_k_lod_state *state)
{
    __shared__ double shared[kThreads];
    double acc = 0.0;
    unsigned bad = 0;
    for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
        for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
            double sc = load_stat(s, sd, c);
            if (!isfinite(sc))
                bad |= OWL_K_LOD_NONFINITE_STAT;
            else if (sc < 0.0)
                bad |= OWL_K_LOD_NEGATIVE_STAT;
            acc = __dadd_rn(acc, score(owl::load_f32(w, wd, r * ldw + c), sc));
        }
    }
    if (bad != 0)
        atomicOr(&state->status, bad);
    double sum = block_sum(acc, shared);
    if (threadIdx.x == 0)
        state->partials[blockIdx.x] =
            first ? sum : __dadd_rn(state->partials[blockIdx.x], sum);
}

__global__ void lod_threshold(int32_t blocks, uint64_t entries, double M,
                              owl_k_lod_state *state)
{
    __shared__ double shared[kThreads];
    // Thread i adds partials i, i + kThreads, ... in order; then the tree.
    double acc = 0.0;
    for (int32_t b = threadIdx.x; b < blocks; b += kThreads)
        acc = __dadd_rn(acc, state->partials[b]);
    double total = block_sum(acc, shared);
    if (threadIdx.x == 0) {
        if (!isfinite(total))
            state->status |= OWL_K_LOD_BAD_WEIGHT;
        state->threshold = __dmul_rn(M, __ddiv_rn(total, (double)entries));
    }
}

__global__ void lod_count(const void *w, int32_t wd, int64_t rows,
                          int64_t cols, int64_t ldw, const void *s, int32_t sd,
                          owl_k_lod_state *state)
{
    __shared__ unsigned long long shared[kThreads];
    if (state->status != 0) // uniform: nothing writes it in this kernel
        return;
    const double thr = state->threshold;
    unsigned long long count = 0;
    for (int64_t r = blockIdx.x; r < rows; r += gridDim.x)
        for (int64_t c = threadIdx.x; c < cols; c += blockDim.x)
            count += score(owl::load_f32(w, wd, r * ldw + c),
                           load_stat(s, sd, c)) > thr;
    shared[threadIdx.x] = count;
    __syncthreads();
    for (unsigned half = kThreads / 2; half > 0; half /= 2) {
        if (threadIdx.x < half)
            shared[threadIdx.x] += shared[threadIdx.x + half];
        __syncthreads();
    }
    if (threadIdx.x == 0 && shared[0] != 0)
        atomicAdd(&state->outliers, shared[0]);
}

__global__ void lod_ratio(uint64_t entries, owl_k_lod_state *state,
                          float *ratio_f32)
{
    double ratio = state->status != 0
                       ? (double)NAN
                       : __ddiv_rn((double)state->outliers, (double)entries);
    state->ratio = ratio;
    if (ratio_f32 != nullptr)
        *ratio_f32 = (float)ratio;
}

} // namespace

extern "C" size_t owl__k_lod_bytes(int32_t blocks)
{
    return offsetof(owl_k_lod_state, partials) +
           (size_t)(blocks > 0 ? blocks : 1) * sizeof(double);
}

extern "C" int owl__k_act_sumsq(void *stream, const void *x, int32_t x_dtype,
                                int64_t rows, int64_t cols, int64_t ldx,
                                float *sumsq)
{
    dim3 block(32, kRowLanes);
    unsigned blocks = (unsigned)((cols + 31) / 32);
    return owl::launch(act_sumsq, blocks, block, (cudaStream_t)stream, x,
                       x_dtype, rows, cols, ldx, sumsq);
}

extern "C" int owl__k_lod_sum(void *stream, const void *w, int32_t w_dtype,
                              int64_t rows, int64_t cols, int64_t ldw,
                              const void *s, int32_t s_dtype, int32_t blocks,
                              int32_t first, owl_k_lod_state *state)
{
    return owl::launch(lod_sum, (unsigned)blocks, kThreads,
                       (cudaStream_t)stream, w, w_dtype, rows, cols, ldw, s,
                       s_dtype, first, state);
}

extern "C" int owl__k_lod_threshold(void *stream, int32_t blocks,
                                    uint64_t entries, double M,
                                    owl_k_lod_state *state)
{
    return owl::launch(lod_threshold, 1, kThreads, (cudaStream_t)stream, blocks,
                       entries, M, state);
}

extern "C" int owl__k_lod_count(void *stream, const void *w, int32_t w_dtype,
                                int64_t rows, int64_t cols, int64_t ldw,
                                const void *s, int32_t s_dtype, int32_t blocks,
                                owl_k_lod_state *state)
{
    return owl::launch(lod_count, (unsigned)blocks, kThreads,
                       (cudaStream_t)stream, w, w_dtype, rows, cols, ldw, s,
                       s_dtype, state);
}

extern "C" int owl__k_lod_ratio(void *stream, uint64_t entries,
                                owl_k_lod_state *state, float *ratio_f32)
{
    return owl::launch(lod_ratio, 1, 1, (cudaStream_t)stream, entries, state,
                       ratio_f32);
}
