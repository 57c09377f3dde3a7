/* The CUDA side of full-rank AdamW (src/cuda_adamw.c), activation
 * statistics and LOD (src/cuda_lod.c). Compiled only with OWL_HAVE_CUDA.
 * The public entry points in src/adamw.c and src/lod.c validate shapes,
 * dtypes and ranges first (as on the CPU) and then call these, which check
 * that the memory is the device's, take the device guard and enqueue the
 * work on the context's stream.
 *
 * What differs from the CPU backend, because the host cannot look at
 * device data without waiting:
 *  - a full-rank step with a NaN/Inf gradient returns OWL_OK, is skipped on
 *    the device and counted by owl_context_nonfinite_skips;
 *  - owl_act_norm_accumulate cannot refuse a NaN/Inf in x or a sumsq that
 *    is already non-finite or negative: the affected columns of sumsq
 *    become NaN/Inf (a later owl_lod_compute reports them), and a column
 *    that overflows f32 becomes Inf;
 *  - owl_lod_compute finds bad statistics and weights on the device and
 *    reports them after its download, without the column or row; the
 *    asynchronous form writes NaN as the ratio instead. */
#ifndef OWLORE_CUDA_ADAMW_LOD_H
#define OWLORE_CUDA_ADAMW_LOD_H

#include "internal.h"

/* m, v (rows x cols of the moment dtype) and the skip counter, in device
 * memory zeroed on the context's stream. On failure nothing stays
 * allocated and a->m, a->v, a->dev_skipped are NULL. */
owl_status owl__cuda_adamw_alloc(owl_adamw *a);
/* Releases what owl__cuda_adamw_alloc allocated (NULLs are fine). */
void owl__cuda_adamw_release(owl_adamw *a);
/* Zeroes m, v and the skip counter on the stream, and the host's
 * bias_step once that is enqueued. */
owl_status owl__cuda_adamw_reset(owl_adamw *a);
/* The bias-correction t: bias_step minus the device's skip counter (waits
 * for the stream). */
owl_status owl__cuda_adamw_bias_step(const owl_adamw *a, uint64_t *t);
/* Moment `which` as f32 into out (validated: f32, the moment shape). */
owl_status owl__cuda_adamw_get_moment(const owl_adamw *a, int32_t which,
                                      owl_tensor *out);
/* One full-rank step (arguments validated: dtypes, shapes, lr). */
owl_status owl__cuda_adamw_full(owl_adamw *a, owl_tensor *weight,
                                const owl_tensor *grad, double lr);

/* sumsq += column sums of squares of x (validated; sumsq must be f32). */
owl_status owl__cuda_act_norm(owl_context *ctx, const owl_tensor *x,
                              owl_tensor *sumsq);
/* The pooled outlier ratio of `count` validated (weight, statistic) pairs
 * holding `entries` weights in all. Exactly one of ratio (a host value:
 * waits, and reports bad inputs) and ratio_dev (a validated 1 x 1 f32
 * tensor: enqueued only) is non-NULL. Its device workspace is a fixed
 * few kilobytes of the context's scratch, reserved on the first call: that
 * call may allocate, and then waits for the device. */
owl_status owl__cuda_lod(owl_context *ctx, const owl_tensor *weights,
                         const owl_tensor *input_sumsq, uint64_t count,
                         double M, uint64_t entries, double *ratio,
                         owl_tensor *ratio_dev);

#endif /* OWLORE_CUDA_ADAMW_LOD_H */
