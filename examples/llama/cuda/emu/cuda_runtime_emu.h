/*
 * The CUDA runtime calls of the host emulator that C code makes too (the
 * stream wait of stream_wait.c, the tests), with the runtime's semantics:
 *
 *  - every failing call records its error as the calling thread's last
 *    error, which stays until read; a successful call leaves it alone;
 *  - cudaGetLastError returns the last error and clears it,
 *    cudaPeekAtLastError returns it and leaves it;
 *  - cudaStreamQuery is cudaSuccess when the stream's work is done, else
 *    cudaErrorNotReady, recorded as the last error like any other failing
 *    status (which is why frameworks clear it after an expected "not
 *    ready"), or the error of failed work.
 *
 * Emulated launches run at once, so a stream is never busy by itself: the
 * test controls below make one look busy, or failed, for a number of
 * queries, and make a launch fail, so that the code around them can be
 * checked. cuda_emu.h (C++) builds the kernels on these declarations.
 */
#ifndef LLAMA_CUDA_RUNTIME_EMU_H
#define LLAMA_CUDA_RUNTIME_EMU_H

#ifdef __cplusplus
extern "C" {
#endif

/* The calls keep the runtime's names in the code and get their own at
 * link time, so that a program holding both the emulator and the real
 * runtime (a test that nvcc links, with the static runtime) has no clash
 * and each caller gets the one it was compiled for. */
#define cudaGetLastError lk_emu_cudaGetLastError
#define cudaPeekAtLastError lk_emu_cudaPeekAtLastError
#define cudaStreamQuery lk_emu_cudaStreamQuery
#define cudaGetErrorString lk_emu_cudaGetErrorString

typedef void *cudaStream_t;
typedef int cudaError_t;
/* The runtime's values of the codes the emulator produces. */
enum {
    cudaSuccess = 0,
    cudaErrorInvalidValue = 1,
    cudaErrorNotReady = 600,
    cudaErrorLaunchFailure = 719
};

cudaError_t cudaGetLastError(void);
cudaError_t cudaPeekAtLastError(void);
cudaError_t cudaStreamQuery(cudaStream_t stream);
const char *cudaGetErrorString(cudaError_t error);

/* ---- test controls ---- */
/* The next `queries` queries of stream report cudaErrorNotReady; then
 * `then` (cudaSuccess: the work is done, else its failure, reported from
 * then on). */
void lk_emu_stream_busy(cudaStream_t stream, int queries, cudaError_t then);
/* The next emulated launch on this thread fails with `error` without
 * running (as a launch with a bad configuration does). */
void lk_emu_fail_next_launch(cudaError_t error);

/* ---- for cuda_emu.h ---- */
/* Records error (nonzero) as the thread's last error. */
void lk_emu_record_error(cudaError_t error);
/* The failure lk_emu_fail_next_launch set for this launch (then cleared),
 * else cudaSuccess. */
cudaError_t lk_emu_take_launch_failure(void);

#ifdef __cplusplus
}
#endif

#endif /* LLAMA_CUDA_RUNTIME_EMU_H */
