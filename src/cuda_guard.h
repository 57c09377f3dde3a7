/* The device guard of the CUDA backend: what a call on a CUDA context does
 * to the calling thread's current device, apart from the CUDA calls that
 * carry it out, so that it builds and is tested without CUDA
 * (tests/test_cuda_guard.c). src/cuda_context.c fills the calls with the
 * driver's and the runtime's.
 *
 * Why the driver's current context and not cudaGetDevice: a thread that
 * never selected a device has no current context, and cudaGetDevice says
 * 0 for it all the same. Restoring "device 0" with cudaSetDevice on such a
 * thread creates GPU 0's primary context (some hundreds of MB of device
 * memory, in every process of a multi-GPU job). cuCtxGetCurrent tells the
 * two cases apart at the cost of a thread-local read, and
 * cuCtxSetCurrent(previous) restores exactly what the caller had: its
 * context, another device's, or none at all, creating nothing. */
#ifndef OWLORE_CUDA_GUARD_H
#define OWLORE_CUDA_GUARD_H

#include <stdbool.h>

typedef struct owl_device_calls {
    /* The calling thread's current context (cuCtxGetCurrent), NULL when
     * none is. 0, or the error code. */
    int (*current)(void **context);
    /* Makes context current on the calling thread (cuCtxSetCurrent; NULL
     * leaves none current). 0, or the error code. */
    int (*make_current)(void *context);
    /* Makes device's primary context current, creating it on first use
     * (cudaSetDevice). 0, or the error code. */
    int (*select)(int device);
} owl_device_calls;

typedef struct owl_cuda_guard {
    const owl_device_calls *calls;
    void *previous; /* the caller's current context; NULL: none was */
    bool switched;  /* leaving makes `previous` current again */
} owl_cuda_guard;

/* Makes `device` current for the calling thread, unless its primary
 * context `mine` (NULL while not known) already is, and remembers the
 * caller's context. 0, or the error code of the failing call (then the
 * thread's current context is unchanged and *failed names the call, and
 * the guard is not held). */
int owl__guard_enter(const owl_device_calls *calls, int device, void *mine,
                     owl_cuda_guard *guard, const char **failed);
/* Gives the caller back the context it had at enter (nothing is created:
 * a thread that had none has none again). */
void owl__guard_leave(const owl_cuda_guard *guard);

#endif /* OWLORE_CUDA_GUARD_H */
