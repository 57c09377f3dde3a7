/* C entry points of the shared CUDA kernels (kernels/step.cu). Every
 * launcher takes the cudaStream_t as `stream`, enqueues its work there and
 * returns the cudaError_t of the launch (0 on success); none waits. Each
 * kernel family declares its launchers in its own header next to this
 * one. */
#ifndef OWLORE_KERNELS_H
#define OWLORE_KERNELS_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* *flag = 1 when any element of the rows x cols tensor (row stride ld
 * elements, dtype an owl_dtype: F32, BF16 or F16) is NaN or Inf. Never
 * clears the flag, so several tensors can share one step's flag. */
int owl__k_flag_nonfinite(void *stream, const void *data, int32_t dtype,
                          int64_t rows, int64_t cols, int64_t ld,
                          int32_t *flag);

/* ++*skips when *flag is set: the end of a guarded step. */
int owl__k_count_skip(void *stream, const int32_t *flag,
                      unsigned long long *skips);

#ifdef __cplusplus
}
#endif

#endif /* OWLORE_KERNELS_H */
