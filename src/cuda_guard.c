/* The device guard's logic (cuda_guard.h). */
#include "cuda_guard.h"

#include <stddef.h>

int owl__guard_enter(const owl_device_calls *calls, int device, void *mine,
                     owl_cuda_guard *guard, const char **failed)
{
    guard->calls = calls;
    guard->previous = NULL;
    guard->switched = false;
    void *current = NULL;
    int e = calls->current(&current);
    if (e != 0) {
        *failed = "cuCtxGetCurrent";
        return e;
    }
    if (mine != NULL && current == mine)
        return 0; /* already on this device: nothing to switch or undo */
    e = calls->select(device);
    if (e != 0) {
        /* cudaSetDevice changes nothing when it fails. */
        *failed = "cudaSetDevice";
        return e;
    }
    guard->previous = current;
    guard->switched = true;
    return 0;
}

void owl__guard_leave(const owl_cuda_guard *guard)
{
    /* Nothing to report to: the caller's work is done either way, and a
     * context that was current a moment ago can be made current again. */
    if (guard->switched)
        (void)guard->calls->make_current(guard->previous);
}
