#include "gpu_util.h"

#include <cuda_runtime_api.h>
#include <stdio.h>
#include <stdlib.h>

static void die(const char *what, cudaError_t e)
{
    fprintf(stderr, "%s: %s\n", what, cudaGetErrorString(e));
    exit(1);
}

void gpu_require_device(void)
{
    if (!owl_backend_available(OWL_BACKEND_CUDA)) {
        printf("SKIP: this build has no CUDA backend\n");
        exit(GPU_SKIP_STATUS);
    }
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess || n == 0) {
        printf("SKIP: no CUDA device (%s)\n",
               e != cudaSuccess ? cudaGetErrorString(e) : "count is 0");
        exit(GPU_SKIP_STATUS);
    }
}

owl_context *gpu_context(void)
{
    owl_context_options o;
    owl_context_options_init(&o, sizeof o);
    o.backend = OWL_BACKEND_CUDA;
    owl_context *ctx = NULL;
    owl_status s = owl_context_create(&ctx, &o);
    if (s != OWL_OK) {
        fprintf(stderr, "CUDA context: %s\n", owl_status_name(s));
        exit(1);
    }
    return ctx;
}

owl_context *cpu_context(void)
{
    owl_context_options o;
    owl_context_options_init(&o, sizeof o);
    o.num_threads = 1;
    owl_context *ctx = NULL;
    if (owl_context_create(&ctx, &o) != OWL_OK) {
        fprintf(stderr, "CPU context failed\n");
        exit(1);
    }
    return ctx;
}

void *gpu_alloc(size_t bytes)
{
    void *p = NULL;
    cudaError_t e = cudaMalloc(&p, bytes ? bytes : 1);
    if (e != cudaSuccess)
        die("cudaMalloc", e);
    if ((e = cudaMemset(p, 0, bytes)) != cudaSuccess)
        die("cudaMemset", e);
    return p;
}

void *gpu_upload(const void *host, size_t bytes)
{
    void *p = gpu_alloc(bytes);
    cudaError_t e = cudaMemcpy(p, host, bytes, cudaMemcpyHostToDevice);
    if (e != cudaSuccess)
        die("cudaMemcpy to device", e);
    return p;
}

void gpu_download(void *host, const void *dev, size_t bytes)
{
    cudaError_t e = cudaDeviceSynchronize();
    if (e != cudaSuccess)
        die("cudaDeviceSynchronize", e);
    if ((e = cudaMemcpy(host, dev, bytes, cudaMemcpyDeviceToHost)) !=
        cudaSuccess)
        die("cudaMemcpy to host", e);
}

void gpu_free(void *dev)
{
    cudaFree(dev);
}
