/* C entry points of the activation-statistic and LOD kernels
 * (kernels/lod.cu). Same conventions as kernels.h: `stream` first, work
 * enqueued there, the launch's cudaError_t returned, nothing waits.
 *
 * Every reduction is deterministic: a sum of doubles is split into
 * per-block partials whose bounds depend only on the shapes and the
 * launch's block count, each block reduces in a fixed order, and the
 * partials are combined in block order. Counts are integers, exact in any
 * order. */
#ifndef OWLORE_LOD_KERNELS_H
#define OWLORE_LOD_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* sumsq[j] = (float)((double)sumsq[j] + sum over rows t of x[t, j]^2),
 * the column sums accumulated in f64 by one block per 32 columns (no
 * atomics). x: rows x cols, dtype F32/BF16/F16, row stride ldx; sumsq:
 * 1 x cols f32. */
int owl__k_act_sumsq(void *stream, const void *x, int32_t x_dtype,
                     int64_t rows, int64_t cols, int64_t ldx, float *sumsq);

/* LOD status bits, set on the device. */
enum { OWL_K_LOD_NONFINITE_STAT = 1u, /* a statistic is NaN or Inf */
       OWL_K_LOD_BAD_WEIGHT = 2u,     /* the pooled sum is not finite */
       OWL_K_LOD_NEGATIVE_STAT = 4u   /* a statistic is < 0 */ };

/* The device words of one LOD computation, in a caller's buffer of
 * owl__k_lod_bytes(blocks) bytes, 8-byte aligned; zero `status` and
 * `outliers` (the first 24 bytes) before the first pass. */
typedef struct owl_k_lod_state {
    unsigned long long outliers; /* #{A > threshold}, over all matrices */
    uint32_t status;             /* OWL_K_LOD_* bits */
    uint32_t reserved;
    double threshold;            /* M * mean(A) */
    double ratio;                /* the result, NaN when status != 0 */
    double partials[1];          /* `blocks` per-block sums of A */
} owl_k_lod_state;

size_t owl__k_lod_bytes(int32_t blocks);

/* Pass 1 for one matrix: block b adds the sum of A_ij = |W_ij| * sqrt(s_j)
 * (f64, as the CPU forms it) over its rows to partials[b] (writes it when
 * `first`, the layer's first matrix). w: rows x cols (F32/BF16/F16, row
 * stride ldw); s: 1 x cols, F32 or F64 (owl_dtype 3). Every launch of one
 * computation uses the same `blocks`. */
int owl__k_lod_sum(void *stream, const void *w, int32_t w_dtype,
                   int64_t rows, int64_t cols, int64_t ldw, const void *s,
                   int32_t s_dtype, int32_t blocks, int32_t first,
                   owl_k_lod_state *state);

/* threshold = M * (sum of the partials in block order / entries); sets
 * OWL_K_LOD_BAD_WEIGHT when that sum is not finite. */
int owl__k_lod_threshold(void *stream, int32_t blocks, uint64_t entries,
                         double M, owl_k_lod_state *state);

/* Pass 2 for one matrix: outliers += #{A_ij > threshold}, A formed exactly
 * as in pass 1. Does nothing once a status bit is set. */
int owl__k_lod_count(void *stream, const void *w, int32_t w_dtype,
                     int64_t rows, int64_t cols, int64_t ldw, const void *s,
                     int32_t s_dtype, int32_t blocks, owl_k_lod_state *state);

/* ratio = outliers / entries (NaN when a status bit is set), also stored
 * as f32 at *ratio_f32 when that is not NULL. */
int owl__k_lod_ratio(void *stream, uint64_t entries, owl_k_lod_state *state,
                     float *ratio_f32);

#ifdef __cplusplus
}
#endif

#endif /* OWLORE_LOD_KERNELS_H */
