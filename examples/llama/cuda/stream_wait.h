/*
 * Waiting for a CUDA stream by polling it, so that the host can watch
 * something else meanwhile (dist.c watches the NCCL communicator, so a
 * failed peer is reported instead of waited on forever). Built against
 * the CUDA runtime, or with LK_EMULATE against the host emulator's
 * (emu/cuda_runtime_emu.h), where the CPU tests check it.
 */
#ifndef LLAMA_STREAM_WAIT_H
#define LLAMA_STREAM_WAIT_H

/*
 * Polls cudaStreamQuery(stream) until the stream's work is done, sleeping
 * poll_ns between polls and calling watch(arg) (when not NULL) after each
 * poll that found the stream busy. Returns 0 once the stream is done, the
 * stream's cudaError_t (> 0) when a query reports a failure, or -1 as soon
 * as watch returns nonzero.
 *
 * A query of a busy stream returns cudaErrorNotReady, and the runtime
 * records it as the thread's last error like any failing status. That one
 * is expected, so the wait clears it: left there, it would be read as
 * their own failure by the next launcher that checks cudaGetLastError()
 * (the first kernel after a weight broadcast would fail with "device not
 * ready"). A real failure is left as the runtime recorded it.
 */
int llama_stream_wait(void *stream, int (*watch)(void *arg), void *arg,
                      long poll_ns);

#endif /* LLAMA_STREAM_WAIT_H */
