/* The CUDA backend's host side: the per-context CUDA state, the device
 * guard every entry point takes, device memory and error mapping. Compiled
 * only when the library is built with CUDA (OWL_HAVE_CUDA). No CUDA header
 * is needed to include it: CUDA objects are held as void pointers.
 *
 * Conventions for every CUDA entry point:
 *  - validate on the host first (shapes, dtypes, ranges) and check that each
 *    tensor's memory is device memory the context's device can use
 *    (owl__cuda_check_tensor), so a host pointer is an error, never a fault;
 *  - take the device guard (owl__cuda_enter / owl__cuda_leave) so the work
 *    runs on the context's device and the caller's current device is left
 *    as it was;
 *  - enqueue everything on the context's stream (owl__cuda_stream): no
 *    cudaDeviceSynchronize, no cudaMalloc, no blocking copy in a step;
 *  - workspace comes from the context's device scratch, reserved at create
 *    (owl__cuda_reserve) and fetched at each use (owl__cuda_scratch);
 *  - a step whose gradient holds NaN/Inf is skipped on the device: the
 *    detection kernel sets the context's flag (owl__cuda_flag), every kernel
 *    that writes state reads it and does nothing when set, and
 *    owl__cuda_step_end() counts the skip. */
#ifndef OWLORE_CUDA_INTERNAL_H
#define OWLORE_CUDA_INTERNAL_H

#include "cuda_guard.h"
#include "internal.h"

typedef struct owl_cuda {
    void *cublas;          /* cublasHandle_t, bound to the context's stream */
    void *cusolver;        /* cusolverDnHandle_t, same stream */
    void *scratch;         /* device workspace shared by the handles */
    size_t scratch_bytes;
    int32_t *flag;         /* device: nonzero when this step's gradient is
                            * non-finite */
    unsigned long long *skips; /* device: steps skipped so far */
    void *host_stage;      /* pinned host buffer for values read back */
    size_t host_stage_bytes;
    int32_t sm_count;      /* multiprocessors, for grid sizing */
    int32_t guard_depth;   /* > 0 inside owl__cuda_guard_open/close */
    void *primary;         /* CUcontext: the device's primary context */
} owl_cuda;

/* ---- context (src/cuda_context.c) ------------------------------------ */

/* Sets up ctx->cuda for ctx->device: OWL_ERR_NO_DEVICE when there is no
 * usable device or the ordinal is out of range. The caller's current
 * device is unchanged. On failure nothing is left allocated. */
owl_status owl__cuda_context_create(owl_context *ctx);
void owl__cuda_context_free(owl_context *ctx);
owl_status owl__cuda_set_stream(owl_context *ctx, void *stream);
owl_status owl__cuda_synchronize(owl_context *ctx);
owl_status owl__cuda_nonfinite_skips(owl_context *ctx, uint64_t *count);

/* The cudaStream_t work is enqueued on. */
static inline void *owl__cuda_stream(const owl_context *ctx)
{
    return ctx->stream;
}

/* Makes the context's device current (remembering the caller's current
 * context); leave gives the caller back exactly that context, or none when
 * it had none, so a thread that never selected a device is not handed
 * device 0's primary context (src/cuda_guard.h says why the driver's
 * current context decides). Every CUDA entry point brackets its device
 * work with them. */
owl_status owl__cuda_enter(owl_context *ctx, owl_cuda_guard *guard);
void owl__cuda_leave(const owl_cuda_guard *guard);
/* The start of most CUDA entry points: the tensors must be device memory
 * of the context's device (b may be NULL), then the device guard. On
 * failure the guard is not held. */
owl_status owl__cuda_enter_checked(owl_context *ctx, owl_cuda_guard *guard,
                                   const owl_tensor *a, const char *a_name,
                                   const owl_tensor *b, const char *b_name);

/* Maps a failed cudaError_t / cublasStatus_t / cusolverStatus_t to
 * OWL_ERR_DEVICE (OWL_ERR_OUT_OF_MEMORY for allocation failures) with a
 * message naming `what` and the library's error string. */
owl_status owl__cuda_fail(owl_context *ctx, int cuda_error, const char *what);
owl_status owl__cublas_fail(owl_context *ctx, int status, const char *what);
owl_status owl__cusolver_fail(owl_context *ctx, int status,
                              const char *what);
/* The stream's pending error, if any (cudaGetLastError after launches). */
owl_status owl__cuda_check_launch(owl_context *ctx, const char *what);

/* Checks that t's memory (the whole extent) is device memory usable from
 * the context's device (device or managed allocation); after
 * owl__check_tensor. Takes the device guard for its query. */
owl_status owl__cuda_check_tensor(owl_context *ctx, const owl_tensor *t,
                                  const char *name);

/* Blocks of the LOD passes: two per multiprocessor fill the device, and
 * the cap bounds the workspace (partials) at 8 KiB. Fixed for a device,
 * so the pooled sum is the same from call to call, and so is the scratch
 * they need, which the context reserves at create (src/cuda_lod.c). */
static inline int32_t owl__cuda_lod_blocks(const owl_cuda *c)
{
    int32_t blocks = 2 * c->sm_count;
    return blocks < 1 ? 1 : blocks > 1024 ? 1024 : blocks;
}

/* ---- memory ---------------------------------------------------------- */

/* Grows the device scratch to at least `bytes` (never shrinks). Only at
 * create time: freeing the old block waits for the device. */
owl_status owl__cuda_reserve(owl_context *ctx, size_t bytes);
static inline void *owl__cuda_scratch(const owl_context *ctx)
{
    return ctx->cuda->scratch;
}
/* Device allocation, zeroed on the context's stream; records an error.
 * *p is NULL on failure. Create-time only. */
owl_status owl__cuda_alloc(owl_context *ctx, size_t bytes, void **p,
                           const char *what);
/* NULL is fine. Under the device guard, like every runtime call of the
 * backend: on a thread with no current context, a bare cudaFree would
 * create the default device's primary context. */
void owl__cuda_free(owl_context *ctx, void *p);
/* Pinned host memory (for offloaded state and staged results), allocated
 * and freed under the device guard too. */
owl_status owl__cuda_host_alloc(owl_context *ctx, size_t bytes, void **p,
                                const char *what);
void owl__cuda_host_free(owl_context *ctx, void *p);
/* Copies between host and device on the stream, then waits for the stream
 * (for calls documented as returning host values, and for save/load). */
owl_status owl__cuda_download(owl_context *ctx, void *host, const void *dev,
                              size_t bytes);
owl_status owl__cuda_upload(owl_context *ctx, void *dev, const void *host,
                            size_t bytes);
/* Enqueued device-to-device copy and memset on the stream. */
owl_status owl__cuda_copy_async(owl_context *ctx, void *dst, const void *src,
                                size_t bytes);
owl_status owl__cuda_zero_async(owl_context *ctx, void *dst, size_t bytes);

/* ---- non-finite step skipping ---------------------------------------- */

static inline int32_t *owl__cuda_flag(const owl_context *ctx)
{
    return ctx->cuda->flag;
}
/* Clears the flag on the stream (the start of a guarded step). */
owl_status owl__cuda_step_begin(owl_context *ctx);
/* Counts the step as skipped when the flag is set (on the stream). */
owl_status owl__cuda_step_end(owl_context *ctx);
/* A step made of several primitive calls (the optimizer's): open clears
 * the flag once, and until close every owl__cuda_step_begin/end inside
 * does nothing, so a NaN found in any gradient of the step (flag it
 * between open and the first update) skips every update of the step, and
 * close counts one skip. Opens do not nest beyond one level of meaning:
 * inner opens only deepen the count. */
owl_status owl__cuda_guard_open(owl_context *ctx);
owl_status owl__cuda_guard_close(owl_context *ctx);

#endif /* OWLORE_CUDA_INTERNAL_H */
