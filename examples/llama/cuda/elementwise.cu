// Elementwise kernels of the LLaMa example: the embedding lookup and its
// backward, SwiGLU's gating, bf16 <-> f32 casts and the f32 add. Every
// kernel is a grid-stride loop with 64-bit indices (a large model's
// activations exceed 2^31 elements).
#include "kcommon.cuh"

namespace lk_elementwise {

const unsigned kThreads = 256;
const unsigned kMaxBlocks = 4096;

// Start and stride of this thread's grid-stride loop.
__device__ __forceinline__ int64_t first_index()
{
    return (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
}
__device__ __forceinline__ int64_t grid_stride()
{
    return (int64_t)gridDim.x * blockDim.x;
}

__global__ void embed_forward(float *x, const lk_bf16 *embed,
                              const int32_t *tokens, int64_t n, int dim)
{
    int64_t total = n * dim;
    for (int64_t i = first_index(); i < total; i += grid_stride()) {
        int64_t row = i / dim, col = i - row * dim;
        x[i] = lk::bf16_to_f32(embed[(int64_t)tokens[row] * dim + col]);
    }
}

// Repeated tokens add into the same row: atomics, so the order of the f32
// additions (and the last bits of the sum) is not deterministic.
__global__ void embed_backward(float *d_embed, const float *d_x,
                               const int32_t *tokens, int64_t n, int dim)
{
    int64_t total = n * dim;
    for (int64_t i = first_index(); i < total; i += grid_stride()) {
        int64_t row = i / dim, col = i - row * dim;
        atomicAdd(&d_embed[(int64_t)tokens[row] * dim + col], d_x[i]);
    }
}

__device__ __forceinline__ float sigmoid(float x)
{
    return 1.0f / (1.0f + lk::kexp(-x));
}

// mid = silu(gate) * up = gate * sigmoid(gate) * up, as model.c.
__global__ void swiglu_forward(lk_bf16 *mid, const lk_bf16 *gate,
                               const lk_bf16 *up, int64_t n)
{
    for (int64_t i = first_index(); i < n; i += grid_stride()) {
        float g = lk::bf16_to_f32(gate[i]), u = lk::bf16_to_f32(up[i]);
        mid[i] = lk::f32_to_bf16(g * sigmoid(g) * u);
    }
}

// With s = sigmoid(g): d silu(g)/dg = s (1 + g (1 - s)). d_gate may alias
// d_mid: each element is read before it is written, by the same thread.
__global__ void swiglu_backward(lk_bf16 *d_gate, lk_bf16 *d_up,
                                const lk_bf16 *d_mid, const lk_bf16 *gate,
                                const lk_bf16 *up, int64_t n)
{
    for (int64_t i = first_index(); i < n; i += grid_stride()) {
        float dm = lk::bf16_to_f32(d_mid[i]);
        float g = lk::bf16_to_f32(gate[i]), u = lk::bf16_to_f32(up[i]);
        float s = sigmoid(g);
        d_up[i] = lk::f32_to_bf16(dm * (g * s));
        d_gate[i] = lk::f32_to_bf16(dm * u * s * (1.0f + g * (1.0f - s)));
    }
}

__global__ void f32_to_bf16(lk_bf16 *y, const float *x, int64_t n)
{
    for (int64_t i = first_index(); i < n; i += grid_stride())
        y[i] = lk::f32_to_bf16(x[i]);
}

__global__ void bf16_to_f32(float *y, const lk_bf16 *x, int64_t n)
{
    for (int64_t i = first_index(); i < n; i += grid_stride())
        y[i] = lk::bf16_to_f32(x[i]);
}

__global__ void add_f32(float *y, const float *x, int64_t n)
{
    for (int64_t i = first_index(); i < n; i += grid_stride())
        y[i] += x[i];
}

inline unsigned blocks(int64_t n) { return lk::grid_for(n, kThreads, kMaxBlocks); }

// The launchers (lk.h). An extern "C" function defined in a namespace is
// the global C symbol; the namespace only keeps the helpers above apart
// from the other kernel files' when the emulator builds them as one unit.

extern "C" int lk_embed_forward(void *stream, float *x, const lk_bf16 *embed,
                                const int32_t *tokens, int64_t n, int dim)
{
    if (n <= 0 || dim <= 0)
        return 0;
    LK_LAUNCH(embed_forward, blocks(n * dim), kThreads, stream, x, embed,
              tokens, n, dim);
    return lk::launch_status();
}

extern "C" int lk_embed_backward(void *stream, float *d_embed, const float *d_x,
                                 const int32_t *tokens, int64_t n, int dim)
{
    if (n <= 0 || dim <= 0)
        return 0;
    LK_LAUNCH(embed_backward, blocks(n * dim), kThreads, stream, d_embed, d_x,
              tokens, n, dim);
    return lk::launch_status();
}

extern "C" int lk_swiglu_forward(void *stream, lk_bf16 *mid,
                                 const lk_bf16 *gate, const lk_bf16 *up,
                                 int64_t n)
{
    if (n <= 0)
        return 0;
    LK_LAUNCH(swiglu_forward, blocks(n), kThreads, stream, mid, gate, up, n);
    return lk::launch_status();
}

extern "C" int lk_swiglu_backward(void *stream, lk_bf16 *d_gate, lk_bf16 *d_up,
                                  const lk_bf16 *d_mid, const lk_bf16 *gate,
                                  const lk_bf16 *up, int64_t n)
{
    if (n <= 0)
        return 0;
    LK_LAUNCH(swiglu_backward, blocks(n), kThreads, stream, d_gate, d_up,
              d_mid, gate, up, n);
    return lk::launch_status();
}

extern "C" int lk_f32_to_bf16(void *stream, lk_bf16 *y, const float *x,
                              int64_t n)
{
    if (n <= 0)
        return 0;
    LK_LAUNCH(f32_to_bf16, blocks(n), kThreads, stream, y, x, n);
    return lk::launch_status();
}

extern "C" int lk_bf16_to_f32(void *stream, float *y, const lk_bf16 *x,
                              int64_t n)
{
    if (n <= 0)
        return 0;
    LK_LAUNCH(bf16_to_f32, blocks(n), kThreads, stream, y, x, n);
    return lk::launch_status();
}

extern "C" int lk_add_f32(void *stream, float *y, const float *x, int64_t n)
{
    if (n <= 0)
        return 0;
    LK_LAUNCH(add_f32, blocks(n), kThreads, stream, y, x, n);
    return lk::launch_status();
}

} // namespace lk_elementwise
