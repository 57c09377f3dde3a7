/* Error checks shared by the GPU benchmarks: a benchmark has nothing to
 * recover, so a failed CUDA runtime or libowlore call prints the call and
 * the reason, then exits 1. */
#ifndef OWL_BENCH_GPU_CHECK_H
#define OWL_BENCH_GPU_CHECK_H

#include <owlore/owlore.h>

#include <cuda_runtime_api.h>
#include <stdio.h>
#include <stdlib.h>

#define CK(call)                                                              \
    do {                                                                      \
        cudaError_t e_ = (call);                                              \
        if (e_ != cudaSuccess) {                                              \
            fprintf(stderr, "%s: %s\n", #call, cudaGetErrorString(e_));       \
            exit(1);                                                          \
        }                                                                     \
    } while (0)

#define OK(ctx, call)                                                         \
    do {                                                                      \
        owl_status s_ = (call);                                               \
        if (s_ != OWL_OK) {                                                   \
            fprintf(stderr, "%s: %s (%s)\n", #call, owl_status_name(s_),      \
                    owl_context_last_error(ctx));                             \
            exit(1);                                                          \
        }                                                                     \
    } while (0)

#endif /* OWL_BENCH_GPU_CHECK_H */
