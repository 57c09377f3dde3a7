/* C entry points of the optimizer's own kernels (kernels/optimizer.cu):
 * the step's gradient pass (non-finite check and global squared L2 norm in
 * one read), the clipping scale, and the asynchronous host <-> device
 * copies of offloaded moments. Same conventions as kernels.h: `stream`
 * first, work enqueued there, the cudaError_t returned (0 on success),
 * nothing waits. */
#ifndef OWLORE_OPTIMIZER_KERNELS_H
#define OWLORE_OPTIMIZER_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Partial sums one gradient's pass writes: a fixed count, independent of
 * the device, so the norm is the same function of the gradients on every
 * GPU. */
#define OWL_K_OPT_PARTIALS 256

/* Sum of squares (f64) of the rows x cols gradient g (dtype an owl_dtype:
 * F32, BF16, F16; row stride ld elements) into partials[0 ..
 * OWL_K_OPT_PARTIALS) -- each element goes to a partial fixed by its
 * position, each partial is reduced in a fixed order -- and *flag = 1 when
 * g holds a NaN or Inf (never cleared). */
int owl__k_opt_grad_sumsq(void *stream, const void *g, int32_t dtype,
                          int64_t rows, int64_t cols, int64_t ld,
                          double *partials, int32_t *flag);

/* The step's norm from `count` gradients' partials (count *
 * OWL_K_OPT_PARTIALS values, summed gradient by gradient in order). When
 * *flag is set (some gradient is non-finite) it writes nothing, so stats
 * keeps the last completed step's values; otherwise stats[0] = the global
 * L2 norm and stats[1] = max_norm / (norm + 1e-6), the clipping factor
 * (1 when max_norm is 0). */
int owl__k_opt_grad_norm(void *stream, const double *partials, uint64_t count,
                         double max_norm, const int32_t *flag, double *stats);

/* g *= (float)stats[1] in place when that factor is < 1 and *flag is
 * clear (else nothing): f32 multiply rounded to nearest even, and for
 * bf16/f16 gradients the product rounded to nearest even back into the
 * gradient's dtype, as the CPU backend's clipping. sm_count sizes the
 * grid. */
int owl__k_opt_grad_scale(void *stream, int32_t sm_count, void *g,
                          int32_t dtype, int64_t rows, int64_t cols,
                          int64_t ld, const double *stats,
                          const int32_t *flag);

/* cudaMemcpyAsync on the stream, device -> pinned host and back. */
int owl__k_opt_copy_to_host(void *stream, void *host, const void *dev,
                            size_t bytes);
int owl__k_opt_copy_to_device(void *stream, void *dev, const void *host,
                              size_t bytes);

#ifdef __cplusplus
}
#endif

#endif /* OWLORE_OPTIMIZER_KERNELS_H */
