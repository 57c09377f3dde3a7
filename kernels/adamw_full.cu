// The full-rank AdamW step on the device: one fused pass that reads the
// weight, gradient and both moments and writes the weight and moments, in
// registers, with the same f32 operations in the same order as the CPU
// backend (src/adamw.c), so both backends round alike. Also the wide
// non-finite check of a gradient and the moment read-out.
#include "adamw_kernels.h"
#include "common.cuh"
#include "kernels.h"

namespace {

// Exact f32 arithmetic: the update rounds as the CPU's, one IEEE
// operation at a time (common.cuh).
using owl::fadd;
using owl::fdiv;
using owl::fmul;
using owl::fsqrt;
using owl::fsub;

// ---- the coefficients of one step ---------------------------------------

struct coeffs {
    float b1, b2, omb1, omb2, keep1, eps, bc2_sqrt;
    float pre, step, post;
    int32_t form;
};

// As set_coeffs in src/adamw.c, with t = steps not skipped: the doubles
// are formed with explicitly rounded operations (no contraction) and
// rounded to f32 at the same points. pow is CUDA's (within 2 ulp in
// double), which after the rounding to f32 almost always gives the CPU's
// value, and at worst differs from it by one f32 ulp.
__device__ coeffs make_coeffs(const owl_k_adamw_step &s,
                              unsigned long long skipped)
{
    coeffs c;
    double t = (double)(s.bias_step - skipped);
    double bc1 = __dadd_rn(1.0, -pow(s.beta1, t));
    double bc2 = __dadd_rn(1.0, -pow(s.beta2, t));
    c.b1 = s.b1;
    c.b2 = s.b2;
    c.omb1 = s.omb1;
    c.omb2 = s.omb2;
    c.keep1 = s.keep1;
    c.eps = s.eps;
    c.form = s.form;
    c.bc2_sqrt = (float)__dsqrt_rn(bc2);
    c.pre = s.pre;
    c.post = s.post;
    c.step = s.torch ? (float)__ddiv_rn(-s.lr, bc1)
                     : (float)__ddiv_rn(__dmul_rn(-s.lr, __dsqrt_rn(bc2)),
                                        bc1);
    return c;
}

// The start of every update kernel. A skipped step (the gradient held a
// NaN or Inf) writes nothing; block 0's first thread counts it. No thread
// reads *skipped then, so the count cannot race with a read. Otherwise one
// thread per block forms the coefficients. The flag is the same for the
// whole grid, so the early return is uniform and the barrier safe.
__device__ __forceinline__ bool begin_step(const owl_k_adamw_step &s,
                                           const int32_t *flag,
                                           unsigned long long *skipped,
                                           coeffs *shared)
{
    if (*flag) {
        if (blockIdx.x == 0 && threadIdx.x == 0)
            *skipped += 1;
        return false;
    }
    if (threadIdx.x == 0)
        *shared = make_coeffs(s, *skipped);
    __syncthreads();
    return true;
}

// adam_element and the weight update of full_pass (src/adamw.c), operation
// for operation: m, v updated in place, the new weight returned.
__device__ __forceinline__ float update(const coeffs &c, float g, float &m,
                                        float &v, float w)
{
    float mk = m;
    if (c.form == OWL_K_FORM_GALORE)
        mk = fadd(fmul(c.b1, mk), fmul(c.omb1, g));
    else if (c.form == OWL_K_FORM_LERP_SMALL)
        mk = fadd(mk, fmul(c.omb1, fsub(g, mk)));
    else
        mk = fsub(g, fmul(fsub(g, mk), c.keep1));
    float vk = fadd(fmul(c.b2, v), fmul(c.omb2, fmul(g, g)));
    float root = fsqrt(vk);
    float n = c.form == OWL_K_FORM_GALORE
                  ? fdiv(mk, fadd(root, c.eps))
                  : fdiv(mk, fadd(fdiv(root, c.bc2_sqrt), c.eps));
    m = mk;
    v = vk;
    float x = fmul(w, c.pre);
    x = fadd(x, fmul(c.step, n));
    return fadd(x, fmul(c.post, x));
}

// ---- element conversions ------------------------------------------------

// The 16 random bits of flat weight index idx (store_chunk in
// src/adamw.c): one hash per four consecutive indices.
__device__ __forceinline__ uint32_t draw_bits(uint64_t seed, uint64_t draw,
                                              uint64_t idx)
{
    uint64_t word = owl::hash3(seed, draw, idx >> 2);
    return (uint32_t)(word >> (16u * (unsigned)(idx & 3u))) & 0xffffu;
}

__device__ __forceinline__ uint16_t to_half_bits(float x, int32_t dtype)
{
    return dtype == owl::DT_BF16 ? owl::f32_to_bf16(x) : owl::f32_to_f16(x);
}

// Stores x as element i of a weight of `dtype`; idx is its flat logical
// index (row * cols + col), which picks the stochastic rounding bits.
__device__ __forceinline__ void store_weight(void *base, int32_t dtype,
                                             int64_t i, float x,
                                             const owl_k_adamw_step &s,
                                             uint64_t idx)
{
    if (dtype == owl::DT_F32) {
        static_cast<float *>(base)[i] = x;
        return;
    }
    uint16_t h = dtype == owl::DT_BF16 && s.stochastic
                     ? owl::f32_to_bf16_stochastic(
                           x, draw_bits(s.seed, s.draw, idx))
                     : to_half_bits(x, dtype);
    static_cast<uint16_t *>(base)[i] = h;
}

__device__ __forceinline__ float load_moment(const void *base, bool bf16,
                                             int64_t i)
{
    return bf16 ? owl::bf16_to_f32(static_cast<const uint16_t *>(base)[i])
                : static_cast<const float *>(base)[i];
}
__device__ __forceinline__ void store_moment(void *base, bool bf16, int64_t i,
                                             float x)
{
    if (bf16)
        static_cast<uint16_t *>(base)[i] = owl::f32_to_bf16(x);
    else
        static_cast<float *>(base)[i] = x;
}

// One element anywhere: weight element wi, gradient element gi, moment
// (and flat) index k.
__device__ __forceinline__ void update_one(const coeffs &c,
                                           const owl_k_adamw_step &s, void *w,
                                           int32_t wd, int64_t wi,
                                           const void *g, int32_t gd,
                                           int64_t gi, void *m, void *v,
                                           bool mb, int64_t k)
{
    float mk = load_moment(m, mb, k), vk = load_moment(v, mb, k);
    float x = update(c, owl::load_f32(g, gd, gi), mk, vk,
                     owl::load_f32(w, wd, wi));
    store_moment(m, mb, k, mk);
    store_moment(v, mb, k, vk);
    store_weight(w, wd, wi, x, s, (uint64_t)k);
}

// ---- the general kernel: any strides, any alignment ---------------------

__global__ void full_strided(owl_k_adamw_step s, void *w, int32_t wd,
                             int64_t ldw, const void *g, int32_t gd,
                             int64_t ldg, void *m, void *v, bool mb,
                             int64_t rows, int64_t cols, const int32_t *flag,
                             unsigned long long *skipped)
{
    __shared__ coeffs sc;
    if (!begin_step(s, flag, skipped, &sc))
        return;
    const coeffs c = sc;
    const int64_t n = rows * cols;
    for (int64_t k = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; k < n;
         k += (int64_t)gridDim.x * blockDim.x) {
        int64_t r = k / cols, col = k - r * cols;
        update_one(c, s, w, wd, r * ldw + col, g, gd, r * ldg + col, m, v,
                   mb, k);
    }
}

// ---- the wide kernel: dense, 16-byte aligned tensors --------------------

// Eight consecutive elements as f32, from 16 (half types) or 32 (f32)
// bytes at chunk k.
template <int DT>
__device__ __forceinline__ void load8(const void *base, int64_t k, float x[8])
{
    if constexpr (DT == owl::DT_F32) {
        const float4 *p = static_cast<const float4 *>(base) + 2 * k;
        float4 a = p[0], b = p[1];
        x[0] = a.x; x[1] = a.y; x[2] = a.z; x[3] = a.w;
        x[4] = b.x; x[5] = b.y; x[6] = b.z; x[7] = b.w;
    } else {
        // Little-endian: element 2i is the low half of word i.
        uint4 u = static_cast<const uint4 *>(base)[k];
        const uint32_t words[4] = {u.x, u.y, u.z, u.w};
        for (int i = 0; i < 4; i++) {
            uint16_t lo = (uint16_t)(words[i] & 0xffffu);
            uint16_t hi = (uint16_t)(words[i] >> 16);
            x[2 * i] = DT == owl::DT_BF16 ? owl::bf16_to_f32(lo)
                                          : owl::f16_to_f32(lo);
            x[2 * i + 1] = DT == owl::DT_BF16 ? owl::bf16_to_f32(hi)
                                              : owl::f16_to_f32(hi);
        }
    }
}

// Stores eight 16-bit values at chunk k.
__device__ __forceinline__ void store8_bits(void *base, int64_t k,
                                            const uint16_t h[8])
{
    uint4 u;
    u.x = (uint32_t)h[0] | ((uint32_t)h[1] << 16);
    u.y = (uint32_t)h[2] | ((uint32_t)h[3] << 16);
    u.z = (uint32_t)h[4] | ((uint32_t)h[5] << 16);
    u.w = (uint32_t)h[6] | ((uint32_t)h[7] << 16);
    static_cast<uint4 *>(base)[k] = u;
}

// Stores eight values at chunk k, rounded to nearest for half types.
template <int DT>
__device__ __forceinline__ void store8(void *base, int64_t k, const float x[8])
{
    if constexpr (DT == owl::DT_F32) {
        float4 *p = static_cast<float4 *>(base) + 2 * k;
        p[0] = make_float4(x[0], x[1], x[2], x[3]);
        p[1] = make_float4(x[4], x[5], x[6], x[7]);
    } else {
        uint16_t h[8];
        for (int i = 0; i < 8; i++)
            h[i] = to_half_bits(x[i], DT);
        store8_bits(base, k, h);
    }
}

// Chunk k of eight elements at flat indices 8k .. 8k+7 (two hash words
// when stochastic: indices 8k..8k+3 and 8k+4..8k+7).
template <int WD, int GD, bool MB>
__global__ void full_dense(owl_k_adamw_step s, void *w, const void *g,
                           void *m, void *v, int64_t n, const int32_t *flag,
                           unsigned long long *skipped)
{
    __shared__ coeffs sc;
    if (!begin_step(s, flag, skipped, &sc))
        return;
    const coeffs c = sc;
    const int64_t chunks = n / 8;
    const int64_t first = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    const int64_t stride = (int64_t)gridDim.x * blockDim.x;
    constexpr int MD = MB ? owl::DT_BF16 : owl::DT_F32;
    for (int64_t k = first; k < chunks; k += stride) {
        float wx[8], gx[8], mx[8], vx[8];
        load8<GD>(g, k, gx);
        load8<MD>(m, k, mx);
        load8<MD>(v, k, vx);
        load8<WD>(w, k, wx);
        for (int i = 0; i < 8; i++)
            wx[i] = update(c, gx[i], mx[i], vx[i], wx[i]);
        store8<MD>(m, k, mx);
        store8<MD>(v, k, vx);
        if (WD == owl::DT_BF16 && s.stochastic) {
            // Flat indices 8k..8k+3 share hash word 2k, 8k+4..8k+7 word
            // 2k+1 (store_chunk in src/adamw.c).
            uint64_t w0 = owl::hash3(s.seed, s.draw, (uint64_t)(2 * k));
            uint64_t w1 = owl::hash3(s.seed, s.draw, (uint64_t)(2 * k + 1));
            uint16_t h[8];
            for (int i = 0; i < 8; i++) {
                uint64_t word = i < 4 ? w0 : w1;
                uint32_t bits =
                    (uint32_t)(word >> (16u * (unsigned)(i & 3))) & 0xffffu;
                h[i] = owl::f32_to_bf16_stochastic(wx[i], bits);
            }
            store8_bits(w, k, h);
        } else {
            store8<WD>(w, k, wx);
        }
    }
    // The last n % 8 elements, one per thread of the first threads.
    const int64_t tail = chunks * 8 + first;
    if (tail < n)
        update_one(c, s, w, WD, tail, g, GD, tail, m, v, MB, tail);
}

const unsigned kThreads = 256;

// Blocks for a grid-stride kernel over `items` (one per thread at most):
// no more than the device holds at once, so the grid is a single wave and
// no partial last wave leaves multiprocessors idle at the end.
template <typename Kernel>
unsigned resident_grid(Kernel kernel, int32_t sm_count, int64_t items)
{
    unsigned blocks = owl::grid_for(items, kThreads, 1u << 30);
    int per_sm = 0;
    if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel,
                                                      (int)kThreads, 0) !=
            cudaSuccess ||
        per_sm < 1 || sm_count < 1) {
        (void)cudaGetLastError();
        return owl::grid_for(items, kThreads);
    }
    int64_t wave = (int64_t)per_sm * sm_count;
    return (int64_t)blocks < wave ? blocks : (unsigned)wave;
}

template <int WD, int GD, bool MB>
int launch_dense(cudaStream_t st, int32_t sm_count, const owl_k_adamw_step &s,
                 void *w, const void *g, void *m, void *v, int64_t n,
                 const int32_t *flag, unsigned long long *skipped)
{
    // One thread per chunk of eight at most, and at least enough threads
    // for the tail's n % 8 elements.
    unsigned blocks = resident_grid(full_dense<WD, GD, MB>, sm_count,
                                    n / 8 > 8 ? n / 8 : 8);
    return owl::launch(full_dense<WD, GD, MB>, blocks, kThreads, st, s, w, g,
                       m, v, n, flag, skipped);
}

template <int WD, int GD>
int launch_dense_m(cudaStream_t st, int32_t sm_count,
                   const owl_k_adamw_step &s, void *w, const void *g, void *m,
                   void *v, bool mb, int64_t n, const int32_t *flag,
                   unsigned long long *skipped)
{
    return mb ? launch_dense<WD, GD, true>(st, sm_count, s, w, g, m, v, n,
                                           flag, skipped)
              : launch_dense<WD, GD, false>(st, sm_count, s, w, g, m, v, n,
                                            flag, skipped);
}

template <int WD>
int launch_dense_g(cudaStream_t st, int32_t sm_count,
                   const owl_k_adamw_step &s, void *w, const void *g,
                   int32_t gd, void *m, void *v, bool mb, int64_t n,
                   const int32_t *flag, unsigned long long *skipped)
{
    switch (gd) {
    case owl::DT_F32:
        return launch_dense_m<WD, owl::DT_F32>(st, sm_count, s, w, g, m, v,
                                               mb, n, flag, skipped);
    case owl::DT_BF16:
        return launch_dense_m<WD, owl::DT_BF16>(st, sm_count, s, w, g, m, v,
                                                mb, n, flag, skipped);
    default:
        return launch_dense_m<WD, owl::DT_F16>(st, sm_count, s, w, g, m, v,
                                               mb, n, flag, skipped);
    }
}

bool aligned16(const void *p)
{
    return ((uintptr_t)p & 15u) == 0;
}

// ---- the wide non-finite check ------------------------------------------

// True when a 32-bit word holds a non-finite f32, or either of its 16-bit
// halves a non-finite bf16/f16 (exponent bits all ones).
template <int DT>
__device__ __forceinline__ bool word_nonfinite(uint32_t u)
{
    if (DT == owl::DT_F32)
        return (u & 0x7f800000u) == 0x7f800000u;
    const uint32_t e = DT == owl::DT_BF16 ? 0x7f807f80u : 0x7c007c00u;
    const uint32_t lo = e & 0xffffu, hi = e & 0xffff0000u;
    return (u & lo) == lo || (u & hi) == hi;
}

// `chunks` 16-byte chunks of g, then the `tail` elements after them.
template <int DT>
__global__ void flag_dense(const void *g, int64_t chunks, int64_t tail,
                           int32_t *flag)
{
    bool bad = false;
    const int64_t first = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    for (int64_t k = first; k < chunks; k += (int64_t)gridDim.x * blockDim.x) {
        uint4 u = static_cast<const uint4 *>(g)[k];
        bad |= word_nonfinite<DT>(u.x) | word_nonfinite<DT>(u.y) |
               word_nonfinite<DT>(u.z) | word_nonfinite<DT>(u.w);
    }
    if (first < tail) {
        const int per = DT == owl::DT_F32 ? 4 : 8;
        bad |= owl::is_nonfinite(owl::load_f32(g, DT, chunks * per + first));
    }
    if (__any_sync(0xffffffffu, bad) && (threadIdx.x & 31) == 0)
        *flag = 1;
}

// ---- moment read-out ------------------------------------------------------

__global__ void moment_f32(const void *moment, bool mb, int64_t rows,
                           int64_t cols, float *out, int64_t ldo)
{
    const int64_t n = rows * cols;
    for (int64_t k = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; k < n;
         k += (int64_t)gridDim.x * blockDim.x) {
        int64_t r = k / cols, c = k - r * cols;
        out[r * ldo + c] = load_moment(moment, mb, k);
    }
}

} // namespace

extern "C" int owl__k_adamw_full(void *stream, int32_t sm_count,
                                 const owl_k_adamw_step *step,
                                 void *w, int32_t w_dtype, int64_t ldw,
                                 const void *g, int32_t g_dtype, int64_t ldg,
                                 void *m, void *v, int32_t moments_bf16,
                                 int64_t rows, int64_t cols,
                                 const int32_t *flag,
                                 unsigned long long *skipped)
{
    cudaStream_t st = (cudaStream_t)stream;
    const owl_k_adamw_step s = *step;
    const bool mb = moments_bf16 != 0;
    const int64_t n = rows * cols;
    const bool dense = (ldw == cols && ldg == cols) || rows == 1;
    if (dense && aligned16(w) && aligned16(g) && aligned16(m) &&
        aligned16(v)) {
        switch (w_dtype) {
        case owl::DT_F32:
            return launch_dense_g<owl::DT_F32>(st, sm_count, s, w, g, g_dtype,
                                               m, v, mb, n, flag, skipped);
        case owl::DT_BF16:
            return launch_dense_g<owl::DT_BF16>(st, sm_count, s, w, g,
                                                g_dtype, m, v, mb, n, flag,
                                                skipped);
        default:
            return launch_dense_g<owl::DT_F16>(st, sm_count, s, w, g, g_dtype,
                                               m, v, mb, n, flag, skipped);
        }
    }
    return owl::launch(full_strided, owl::grid_for(n, kThreads), kThreads, st,
                       s, w, w_dtype, ldw, g, g_dtype, ldg, m, v, mb, rows,
                       cols, flag, skipped);
}

extern "C" int owl__k_adamw_flag_grad(void *stream, int32_t sm_count,
                                      const void *g, int32_t g_dtype, int64_t rows,
                                      int64_t cols, int64_t ldg,
                                      int32_t *flag)
{
    if (!((ldg == cols || rows == 1) && aligned16(g)))
        return owl__k_flag_nonfinite(stream, g, g_dtype, rows, cols, ldg,
                                     flag);
    cudaStream_t st = (cudaStream_t)stream;
    const int64_t n = rows * cols;
    const int64_t per = g_dtype == owl::DT_F32 ? 4 : 8;
    const int64_t chunks = n / per, tail = n - chunks * per;
    // Enough threads for the chunks, and at least `per` for the tail.
    const int64_t items = chunks > per ? chunks : per;
    switch (g_dtype) {
    case owl::DT_F32:
        return owl::launch(flag_dense<owl::DT_F32>,
                           resident_grid(flag_dense<owl::DT_F32>, sm_count,
                                         items),
                           kThreads, st, g, chunks, tail, flag);
    case owl::DT_BF16:
        return owl::launch(flag_dense<owl::DT_BF16>,
                           resident_grid(flag_dense<owl::DT_BF16>, sm_count,
                                         items),
                           kThreads, st, g, chunks, tail, flag);
    default:
        return owl::launch(flag_dense<owl::DT_F16>,
                           resident_grid(flag_dense<owl::DT_F16>, sm_count,
                                         items),
                           kThreads, st, g, chunks, tail, flag);
    }
}

extern "C" int owl__k_adamw_moment_f32(void *stream, const void *moment,
                                       int32_t moment_bf16, int64_t rows,
                                       int64_t cols, float *out, int64_t ldo)
{
    return owl::launch(moment_f32, owl::grid_for(rows * cols, kThreads),
                       kThreads, (cudaStream_t)stream, moment,
                       moment_bf16 != 0, rows, cols, out, ldo);
}
