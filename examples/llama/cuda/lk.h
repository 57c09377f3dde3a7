/*
 * The LLaMa example's CUDA kernels, as C launchers (implemented in the .cu
 * files of this folder). Every launcher takes the stream first (a
 * cudaStream_t passed as void *), enqueues its work there, never waits, and
 * returns the launch's cudaError_t as an int (0 on success).
 *
 * Storage: weights and the activations that feed GEMMs are bf16 (lk_bf16:
 * the bit pattern of a bfloat16); the residual stream, its gradient,
 * RMSNorm statistics, attention log-sum-exps and every reduction are f32.
 * Activations are token-major: a [n x width] matrix, row b*T + t for
 * sequence b and position t; attention heads are column blocks of
 * head_dim. Counts are int64_t; widths are int.
 *
 * The same sources also build for the host under emu/cuda_emu.h (a
 * block-by-block emulator used by the CPU tests), so kernels use only what
 * the emulator provides: __global__/__device__, static __shared__ arrays,
 * __syncthreads, threadIdx/blockIdx/blockDim/gridDim, atomicAdd on float,
 * and the helpers of kcommon.cuh (bf16 conversion, math, block reductions).
 */
#ifndef LLAMA_LK_H
#define LLAMA_LK_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef uint16_t lk_bf16;

/* x[i, :] = embed[tokens[i], :] (bf16 table into the f32 residual). */
int lk_embed_forward(void *stream, float *x, const lk_bf16 *embed,
                     const int32_t *tokens, int64_t n, int dim);
/* d_embed[tokens[i], :] += d_x[i, :] (f32 accumulation, atomics). */
int lk_embed_backward(void *stream, float *d_embed, const float *d_x,
                      const int32_t *tokens, int64_t n, int dim);

/* rstd[i] = 1 / sqrt(mean_j x[i,j]^2 + eps); y = x * rstd * gain (bf16). */
int lk_rmsnorm_forward(void *stream, lk_bf16 *y, float *rstd, const float *x,
                       const lk_bf16 *gain, int64_t n, int dim, float eps);
/* Backward of the above for d_y = dL/dy (f32): d_x += dL/dx (accumulates:
 * the residual stream's gradient), and, when d_gain is not NULL,
 * d_gain[j] += sum_i d_y[i,j] * x[i,j] * rstd[i] (f32). */
int lk_rmsnorm_backward(void *stream, float *d_x, float *d_gain,
                        const float *d_y, const float *x, const float *rstd,
                        const lk_bf16 *gain, int64_t n, int dim);

/* Rotary embedding in place, Hugging Face's convention (coordinate i pairs
 * with i + head_dim/2 within each head), on x [n x heads*head_dim] whose
 * row r is at position r % T; cos_t/sin_t are [T x head_dim/2] tables
 * (f32, computed on the host as model.c does). inverse = 1 rotates back:
 * the backward pass of the rotation. */
int lk_rope(void *stream, lk_bf16 *x, const float *cos_t, const float *sin_t,
            int64_t n, int T, int heads, int head_dim, int inverse);

/*
 * Causal grouped-query attention, scale 1/sqrt(head_dim), over B sequences
 * of T positions: q [B*T x n_heads*head_dim], k and v
 * [B*T x n_kv_heads*head_dim] (query head h reads kv head
 * h / (n_heads / n_kv_heads)). Writes o [B*T x n_heads*head_dim] and
 * lse [B][n_heads][T], the log-sum-exp of each query's scaled scores,
 * which is all the backward pass keeps: no T x T buffer exists.
 * head_dim <= LK_MAX_HEAD_DIM.
 */
#define LK_MAX_HEAD_DIM 256
int lk_attention_forward(void *stream, lk_bf16 *o, float *lse,
                         const lk_bf16 *q, const lk_bf16 *k,
                         const lk_bf16 *v, int B, int T, int n_heads,
                         int n_kv_heads, int head_dim);
/* Gradients of the above from d_o: overwrites d_q, d_k, d_v (same shapes
 * as q, k, v). delta is scratch of B*n_heads*T floats (rowsum(d_o * o)). */
int lk_attention_backward(void *stream, lk_bf16 *d_q, lk_bf16 *d_k,
                          lk_bf16 *d_v, float *delta, const lk_bf16 *d_o,
                          const lk_bf16 *q, const lk_bf16 *k,
                          const lk_bf16 *v, const lk_bf16 *o,
                          const float *lse, int B, int T, int n_heads,
                          int n_kv_heads, int head_dim);

/* mid = silu(gate) * up, elementwise over n values. */
int lk_swiglu_forward(void *stream, lk_bf16 *mid, const lk_bf16 *gate,
                      const lk_bf16 *up, int64_t n);
/* d_gate, d_up from d_mid; d_gate may be d_mid (in place). */
int lk_swiglu_backward(void *stream, lk_bf16 *d_gate, lk_bf16 *d_up,
                       const lk_bf16 *d_mid, const lk_bf16 *gate,
                       const lk_bf16 *up, int64_t n);

/*
 * Cross-entropy over n rows of logits [n x vocab] (bf16), in place: for a
 * row with targets[i] >= 0, row_loss[i] = logsumexp(row) - row[target]
 * (f32, computed in f32) and the row becomes grad_scale * (softmax(row) -
 * onehot(target)); a row with a negative target gets row_loss 0 and a zero
 * gradient. The caller passes grad_scale = 1 / (number of counted rows) for
 * the mean loss, and sums row_loss itself (deterministically).
 */
int lk_cross_entropy(void *stream, lk_bf16 *logits, float *row_loss,
                     const int32_t *targets, int64_t n, int vocab,
                     float grad_scale);

/* Conversions, elementwise over n values (round to nearest even). */
int lk_f32_to_bf16(void *stream, lk_bf16 *y, const float *x, int64_t n);
int lk_bf16_to_f32(void *stream, float *y, const lk_bf16 *x, int64_t n);
/* y += x (f32), elementwise. */
int lk_add_f32(void *stream, float *y, const float *x, int64_t n);

#ifdef __cplusplus
}
#endif

#endif /* LLAMA_LK_H */
