/* Helpers for the CUDA tests: skip without a device, and moving test data
 * between host and device. The tests use the CUDA runtime directly for
 * their own buffers, as a host framework would. */
#ifndef OWLORE_TEST_GPU_UTIL_H
#define OWLORE_TEST_GPU_UTIL_H

#include <owlore/owlore.h>

#include <stddef.h>

/* Exit status that meson reports as SKIP. */
#define GPU_SKIP_STATUS 77

/* Exits with 77 (SKIP) unless a CUDA device is usable and the library was
 * built with the CUDA backend; prints why. Call first in main(). */
void gpu_require_device(void);

/* A CUDA context on device 0 (fails the test on error). */
owl_context *gpu_context(void);
/* A CPU context with one thread, for reference results. */
owl_context *cpu_context(void);

/* cudaMalloc + copy from host; returns the device pointer (fails the
 * test on error). */
void *gpu_upload(const void *host, size_t bytes);
/* cudaMalloc'd zeroed device memory. */
void *gpu_alloc(size_t bytes);
/* Copies device memory to host, waiting for the whole device. */
void gpu_download(void *host, const void *dev, size_t bytes);
void gpu_free(void *dev);

#endif /* OWLORE_TEST_GPU_UTIL_H */
