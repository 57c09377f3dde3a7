/* Waiting for a stream by polling it (stream_wait.h). */
#include "stream_wait.h"

#ifdef LK_EMULATE
#include "emu/cuda_runtime_emu.h"
#else
#include <cuda_runtime_api.h>
#endif

#include <time.h>

int llama_stream_wait(void *stream, int (*watch)(void *arg), void *arg,
                      long poll_ns)
{
    for (;;) {
        cudaError_t e = cudaStreamQuery((cudaStream_t)stream);
        if (e == cudaSuccess)
            return 0;
        if (e != cudaErrorNotReady)
            return (int)e;
        /* Expected, and not this thread's error to keep (see the header). */
        (void)cudaGetLastError();
        if (watch && watch(arg) != 0)
            return -1;
        if (poll_ns > 0) {
            struct timespec ts = {poll_ns / 1000000000L,
                                  poll_ns % 1000000000L};
            nanosleep(&ts, NULL);
        }
    }
}
