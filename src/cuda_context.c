/* The CUDA side of a context: device selection, cuBLAS and cuSOLVER
 * handles bound to the context's stream, device scratch, the non-finite
 * step flag, and the error mapping every CUDA entry point uses. */
#include "cuda_internal.h"

#include "../kernels/kernels.h"
#include "../kernels/lod_kernels.h"

#include <cublas_v2.h>
#include <cuda_runtime_api.h>
/* cusolverDn.h declares a function with () rather than (void). */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wstrict-prototypes"
#include <cusolverDn.h>
#pragma GCC diagnostic pop
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

/* Pinned staging for values read back to the host (LOD ratios, counters). */
#define HOST_STAGE_BYTES 4096

owl_status owl__cuda_fail(owl_context *ctx, int cuda_error, const char *what)
{
    cudaError_t e = (cudaError_t)cuda_error;
    owl_status s = e == cudaErrorMemoryAllocation ? OWL_ERR_OUT_OF_MEMORY
                                                  : OWL_ERR_DEVICE;
    return owl__fail(ctx, s, "%s: CUDA error %d (%s)", what, cuda_error,
                     cudaGetErrorString(e));
}

owl_status owl__cublas_fail(owl_context *ctx, int status, const char *what)
{
    cublasStatus_t st = (cublasStatus_t)status;
    owl_status s = st == CUBLAS_STATUS_ALLOC_FAILED ? OWL_ERR_OUT_OF_MEMORY
                                                    : OWL_ERR_DEVICE;
    return owl__fail(ctx, s, "%s: cuBLAS status %d (%s)", what, status,
                     cublasGetStatusString(st));
}

owl_status owl__cusolver_fail(owl_context *ctx, int status, const char *what)
{
    owl_status s = status == CUSOLVER_STATUS_ALLOC_FAILED
                       ? OWL_ERR_OUT_OF_MEMORY
                       : OWL_ERR_DEVICE;
    return owl__fail(ctx, s, "%s: cuSOLVER status %d", what, status);
}

owl_status owl__cuda_check_launch(owl_context *ctx, const char *what)
{
    cudaError_t e = cudaGetLastError();
    return e == cudaSuccess ? OWL_OK : owl__cuda_fail(ctx, e, what);
}

/* ---- device guard ---------------------------------------------------- */

/* The driver's cuCtxGetCurrent and cuCtxSetCurrent, reached through the
 * runtime (cudaGetDriverEntryPointByVersion), so that the library does
 * not link libcuda and still loads where no driver is installed. A
 * CUcontext is a pointer; CUresult an int. Resolved once per process:
 * they are the driver's, which is one per process. */
typedef int (*driver_ctx_get_fn)(void **context);
typedef int (*driver_ctx_set_fn)(void *context);
static driver_ctx_get_fn driver_ctx_get;
static driver_ctx_set_fn driver_ctx_set;
static pthread_once_t driver_once = PTHREAD_ONCE_INIT;

static void *driver_entry(const char *symbol)
{
    void *fn = NULL;
    enum cudaDriverEntryPointQueryResult q = cudaDriverEntryPointSymbolNotFound;
    if (cudaGetDriverEntryPointByVersion(symbol, &fn, CUDART_VERSION,
                                         cudaEnableDefault, &q) !=
            cudaSuccess ||
        q != cudaDriverEntryPointSuccess) {
        (void)cudaGetLastError();
        return NULL;
    }
    return fn;
}

static void resolve_driver(void)
{
    void *get = driver_entry("cuCtxGetCurrent");
    void *set = driver_entry("cuCtxSetCurrent");
    if (get == NULL || set == NULL)
        return;
    /* Object to function pointer: memcpy, which ISO C allows. */
    memcpy(&driver_ctx_get, &get, sizeof get);
    memcpy(&driver_ctx_set, &set, sizeof set);
}

static int current_context(void **context)
{
    return driver_ctx_get(context);
}

static int make_current(void *context)
{
    return driver_ctx_set(context);
}

static int select_device(int device)
{
    cudaError_t e = cudaSetDevice(device);
    if (e != cudaSuccess)
        (void)cudaGetLastError(); /* reported through the guard */
    return (int)e;
}

static const owl_device_calls device_calls = {
    current_context, make_current, select_device};

static owl_status enter_device(owl_context *ctx, void *mine,
                               owl_cuda_guard *guard)
{
    const char *failed = "";
    int e = owl__guard_enter(&device_calls, ctx->device, mine, guard,
                             &failed);
    if (e == 0)
        return OWL_OK;
    if (strcmp(failed, "cudaSetDevice") == 0)
        return owl__cuda_fail(ctx, e, failed);
    return owl__fail(ctx, OWL_ERR_DEVICE, "%s: CUDA driver error %d",
                     failed, e);
}

owl_status owl__cuda_enter(owl_context *ctx, owl_cuda_guard *guard)
{
    return enter_device(ctx, ctx->cuda->primary, guard);
}

void owl__cuda_leave(const owl_cuda_guard *guard)
{
    owl__guard_leave(guard);
}

/* ---- context lifetime ------------------------------------------------ */

static void release(owl_cuda *c)
{
    if (c->cublas)
        cublasDestroy((cublasHandle_t)c->cublas);
    if (c->cusolver)
        cusolverDnDestroy((cusolverDnHandle_t)c->cusolver);
    cudaFree(c->scratch);
    cudaFree(c->flag);
    cudaFree(c->skips);
    cudaFreeHost(c->host_stage);
    free(c);
}

/* Creates the CUDA state on the current device (the guard set it). */
static owl_status create_on_device(owl_context *ctx, owl_cuda *c)
{
    cudaError_t e;
    if ((e = cudaDeviceGetAttribute(&c->sm_count,
                                    cudaDevAttrMultiProcessorCount,
                                    ctx->device)) != cudaSuccess)
        return owl__cuda_fail(ctx, e, "cudaDeviceGetAttribute");
    if (cublasCreate((cublasHandle_t *)&c->cublas) != CUBLAS_STATUS_SUCCESS) {
        c->cublas = NULL;
        return owl__fail(ctx, OWL_ERR_DEVICE, "cublasCreate failed");
    }
    if (cusolverDnCreate((cusolverDnHandle_t *)&c->cusolver) !=
        CUSOLVER_STATUS_SUCCESS) {
        c->cusolver = NULL;
        return owl__fail(ctx, OWL_ERR_DEVICE, "cusolverDnCreate failed");
    }
    /* f32 GEMMs stay f32 unless a call asks for tensor-core modes. */
    cublasSetMathMode((cublasHandle_t)c->cublas, CUBLAS_DEFAULT_MATH);
    if ((e = cudaMalloc((void **)&c->flag, sizeof *c->flag)) != cudaSuccess ||
        (e = cudaMalloc((void **)&c->skips, sizeof *c->skips)) != cudaSuccess)
        return owl__cuda_fail(ctx, e, "cudaMalloc (step flag)");
    if ((e = cudaMemset(c->flag, 0, sizeof *c->flag)) != cudaSuccess ||
        (e = cudaMemset(c->skips, 0, sizeof *c->skips)) != cudaSuccess)
        return owl__cuda_fail(ctx, e, "cudaMemset (step flag)");
    if ((e = cudaMallocHost(&c->host_stage, HOST_STAGE_BYTES)) != cudaSuccess)
        return owl__cuda_fail(ctx, e, "cudaMallocHost (staging)");
    c->host_stage_bytes = HOST_STAGE_BYTES;
    /* The LOD passes' workspace (a few KiB, fixed for the device), so that
     * no LOD call grows the scratch; projectors grow it further at their
     * create. */
    size_t lod_bytes = (owl__k_lod_bytes(owl__cuda_lod_blocks(c)) + 255u) &
                       ~(size_t)255u;
    if ((e = cudaMalloc(&c->scratch, lod_bytes)) != cudaSuccess)
        return owl__cuda_fail(ctx, e, "cudaMalloc (scratch)");
    c->scratch_bytes = lod_bytes;
    /* The memsets above ran on the legacy stream; make them visible to any
     * stream the caller sets later. Create time only. */
    if ((e = cudaDeviceSynchronize()) != cudaSuccess)
        return owl__cuda_fail(ctx, e, "cudaDeviceSynchronize (create)");
    return OWL_OK;
}

owl_status owl__cuda_context_create(owl_context *ctx)
{
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess || count == 0) {
        (void)cudaGetLastError(); /* not sticky: clear it */
        return owl__fail(ctx, OWL_ERR_NO_DEVICE,
                         "no usable CUDA device (%s)",
                         e != cudaSuccess ? cudaGetErrorString(e)
                                          : "device count is 0");
    }
    if (ctx->device >= count)
        return owl__fail(ctx, OWL_ERR_NO_DEVICE,
                         "CUDA device %d requested, %d present", ctx->device,
                         count);
    pthread_once(&driver_once, resolve_driver);
    if (driver_ctx_get == NULL || driver_ctx_set == NULL)
        return owl__fail(ctx, OWL_ERR_DEVICE,
                         "the CUDA driver does not provide cuCtxGetCurrent "
                         "and cuCtxSetCurrent");
    owl_cuda *c = calloc(1, sizeof *c);
    if (c == NULL)
        return owl__fail(ctx, OWL_ERR_OUT_OF_MEMORY, "CUDA context state");
    owl_cuda_guard g;
    owl_status s = enter_device(ctx, NULL, &g);
    if (s == OWL_OK) {
        /* The device's primary context, current now: later calls that
         * find it current have nothing to switch. */
        int de = current_context(&c->primary);
        s = de == 0 ? create_on_device(ctx, c)
                    : owl__fail(ctx, OWL_ERR_DEVICE,
                                "cuCtxGetCurrent: CUDA driver error %d", de);
        if (s != OWL_OK)
            release(c);
        owl__cuda_leave(&g);
    } else {
        free(c);
    }
    if (s == OWL_OK)
        ctx->cuda = c;
    return s;
}

void owl__cuda_context_free(owl_context *ctx)
{
    if (ctx->cuda == NULL)
        return;
    owl_cuda_guard g;
    bool entered = owl__cuda_enter(ctx, &g) == OWL_OK;
    release(ctx->cuda);
    ctx->cuda = NULL;
    if (entered)
        owl__cuda_leave(&g);
}

owl_status owl__cuda_set_stream(owl_context *ctx, void *stream)
{
    owl_cuda *c = ctx->cuda;
    cublasStatus_t b = cublasSetStream((cublasHandle_t)c->cublas,
                                       (cudaStream_t)stream);
    if (b != CUBLAS_STATUS_SUCCESS)
        return owl__cublas_fail(ctx, b, "cublasSetStream");
    cusolverStatus_t so = cusolverDnSetStream(
        (cusolverDnHandle_t)c->cusolver, (cudaStream_t)stream);
    if (so != CUSOLVER_STATUS_SUCCESS) {
        /* Keep both handles on one stream. */
        cublasSetStream((cublasHandle_t)c->cublas,
                        (cudaStream_t)ctx->stream);
        return owl__cusolver_fail(ctx, so, "cusolverDnSetStream");
    }
    ctx->stream = stream;
    return OWL_OK;
}

owl_status owl__cuda_synchronize(owl_context *ctx)
{
    owl_cuda_guard g;
    owl_status s = owl__cuda_enter(ctx, &g);
    if (s != OWL_OK)
        return s;
    cudaError_t e = cudaStreamSynchronize((cudaStream_t)ctx->stream);
    owl__cuda_leave(&g);
    return e == cudaSuccess ? OWL_OK
                            : owl__cuda_fail(ctx, e, "cudaStreamSynchronize");
}

owl_status owl__cuda_nonfinite_skips(owl_context *ctx, uint64_t *count)
{
    unsigned long long n = 0;
    owl_status s = owl__cuda_download(ctx, &n, ctx->cuda->skips, sizeof n);
    if (s == OWL_OK)
        *count = (uint64_t)n;
    return s;
}

/* ---- validation ------------------------------------------------------ */

owl_status owl__cuda_check_tensor(owl_context *ctx, const owl_tensor *t,
                                  const char *name)
{
    struct cudaPointerAttributes a;
    owl_cuda_guard g;
    owl_status s = owl__cuda_enter(ctx, &g);
    if (s != OWL_OK)
        return s;
    cudaError_t e = cudaPointerGetAttributes(&a, t->data);
    owl__cuda_leave(&g);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        return owl__fail(ctx, OWL_ERR_INVALID_ARGUMENT,
                         "%s: cannot query its memory (%s)", name,
                         cudaGetErrorString(e));
    }
    if (a.type != cudaMemoryTypeDevice && a.type != cudaMemoryTypeManaged)
        return owl__fail(ctx, OWL_ERR_INVALID_ARGUMENT,
                         "%s is not device memory (a CUDA context computes "
                         "on device tensors)",
                         name);
    if (a.type == cudaMemoryTypeDevice && a.device != ctx->device)
        return owl__fail(ctx, OWL_ERR_MISMATCH,
                         "%s lives on device %d, the context on device %d",
                         name, a.device, ctx->device);
    return OWL_OK;
}

owl_status owl__cuda_enter_checked(owl_context *ctx, owl_cuda_guard *guard,
                                   const owl_tensor *a, const char *a_name,
                                   const owl_tensor *b, const char *b_name)
{
    owl_status s = owl__cuda_check_tensor(ctx, a, a_name);
    if (s == OWL_OK && b != NULL)
        s = owl__cuda_check_tensor(ctx, b, b_name);
    if (s == OWL_OK)
        s = owl__cuda_enter(ctx, guard);
    return s;
}

/* ---- memory ---------------------------------------------------------- */

owl_status owl__cuda_reserve(owl_context *ctx, size_t bytes)
{
    owl_cuda *c = ctx->cuda;
    if (bytes <= c->scratch_bytes)
        return OWL_OK;
    size_t rounded = (bytes + 255u) & ~(size_t)255u;
    if (rounded < bytes)
        return owl__fail(ctx, OWL_ERR_OUT_OF_MEMORY,
                         "device scratch: %zu bytes overflows", bytes);
    owl_cuda_guard g;
    owl_status s = owl__cuda_enter(ctx, &g);
    if (s != OWL_OK)
        return s;
    void *p = NULL;
    cudaError_t e = cudaMalloc(&p, rounded);
    if (e == cudaSuccess) {
        /* cudaFree waits for work still using the old block. */
        cudaFree(c->scratch);
        c->scratch = p;
        c->scratch_bytes = rounded;
    }
    owl__cuda_leave(&g);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        return owl__fail(ctx, OWL_ERR_OUT_OF_MEMORY,
                         "device scratch: cannot allocate %zu bytes",
                         rounded);
    }
    return OWL_OK;
}

owl_status owl__cuda_alloc(owl_context *ctx, size_t bytes, void **p,
                           const char *what)
{
    *p = NULL;
    owl_cuda_guard g;
    owl_status s = owl__cuda_enter(ctx, &g);
    if (s != OWL_OK)
        return s;
    cudaError_t e = cudaMalloc(p, bytes ? bytes : 1);
    /* Zeroed and waited for: the caller may switch to another stream
     * before the first step, which must not race this memset. Allocation
     * happens at create time only, where waiting is allowed. */
    if (e == cudaSuccess)
        e = cudaMemsetAsync(*p, 0, bytes, (cudaStream_t)ctx->stream);
    if (e == cudaSuccess)
        e = cudaStreamSynchronize((cudaStream_t)ctx->stream);
    owl__cuda_leave(&g);
    if (e != cudaSuccess) {
        cudaFree(*p);
        *p = NULL;
        (void)cudaGetLastError();
        return owl__fail(ctx, e == cudaErrorMemoryAllocation
                                  ? OWL_ERR_OUT_OF_MEMORY
                                  : OWL_ERR_DEVICE,
                         "%s: cannot allocate %zu bytes of device memory "
                         "(%s)",
                         what, bytes, cudaGetErrorString(e));
    }
    return OWL_OK;
}

void owl__cuda_free(owl_context *ctx, void *p)
{
    if (p == NULL)
        return;
    owl_cuda_guard g;
    bool entered = owl__cuda_enter(ctx, &g) == OWL_OK;
    cudaFree(p); /* freed all the same: nothing may leak */
    if (entered)
        owl__cuda_leave(&g);
}

owl_status owl__cuda_host_alloc(owl_context *ctx, size_t bytes, void **p,
                                const char *what)
{
    *p = NULL;
    owl_cuda_guard g;
    owl_status s = owl__cuda_enter(ctx, &g);
    if (s != OWL_OK)
        return s;
    cudaError_t e = cudaMallocHost(p, bytes ? bytes : 1);
    owl__cuda_leave(&g);
    if (e != cudaSuccess) {
        *p = NULL;
        (void)cudaGetLastError();
        return owl__fail(ctx, OWL_ERR_OUT_OF_MEMORY,
                         "%s: cannot allocate %zu bytes of pinned memory "
                         "(%s)",
                         what, bytes, cudaGetErrorString(e));
    }
    return OWL_OK;
}

void owl__cuda_host_free(owl_context *ctx, void *p)
{
    if (p == NULL)
        return;
    owl_cuda_guard g;
    bool entered = owl__cuda_enter(ctx, &g) == OWL_OK;
    cudaFreeHost(p);
    if (entered)
        owl__cuda_leave(&g);
}

static owl_status copy_and_wait(owl_context *ctx, void *dst, const void *src,
                                size_t bytes, enum cudaMemcpyKind kind,
                                const char *what)
{
    owl_cuda_guard g;
    owl_status s = owl__cuda_enter(ctx, &g);
    if (s != OWL_OK)
        return s;
    cudaStream_t st = (cudaStream_t)ctx->stream;
    cudaError_t e = cudaMemcpyAsync(dst, src, bytes, kind, st);
    if (e == cudaSuccess)
        e = cudaStreamSynchronize(st);
    owl__cuda_leave(&g);
    return e == cudaSuccess ? OWL_OK : owl__cuda_fail(ctx, e, what);
}

owl_status owl__cuda_download(owl_context *ctx, void *host, const void *dev,
                              size_t bytes)
{
    return copy_and_wait(ctx, host, dev, bytes, cudaMemcpyDeviceToHost,
                         "copy to host");
}

owl_status owl__cuda_upload(owl_context *ctx, void *dev, const void *host,
                            size_t bytes)
{
    return copy_and_wait(ctx, dev, host, bytes, cudaMemcpyHostToDevice,
                         "copy to device");
}

owl_status owl__cuda_copy_async(owl_context *ctx, void *dst, const void *src,
                                size_t bytes)
{
    cudaError_t e = cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice,
                                    (cudaStream_t)ctx->stream);
    return e == cudaSuccess ? OWL_OK
                            : owl__cuda_fail(ctx, e, "device copy");
}

owl_status owl__cuda_zero_async(owl_context *ctx, void *dst, size_t bytes)
{
    cudaError_t e = cudaMemsetAsync(dst, 0, bytes, (cudaStream_t)ctx->stream);
    return e == cudaSuccess ? OWL_OK
                            : owl__cuda_fail(ctx, e, "device memset");
}

/* ---- non-finite step skipping ---------------------------------------- */

static owl_status clear_flag(owl_context *ctx)
{
    return owl__cuda_zero_async(ctx, ctx->cuda->flag, sizeof(int32_t));
}

static owl_status count_skip(owl_context *ctx)
{
    int e = owl__k_count_skip(ctx->stream, ctx->cuda->flag, ctx->cuda->skips);
    return e == 0 ? OWL_OK : owl__cuda_fail(ctx, e, "skip counter");
}

owl_status owl__cuda_step_begin(owl_context *ctx)
{
    return ctx->cuda->guard_depth > 0 ? OWL_OK : clear_flag(ctx);
}

owl_status owl__cuda_step_end(owl_context *ctx)
{
    return ctx->cuda->guard_depth > 0 ? OWL_OK : count_skip(ctx);
}

owl_status owl__cuda_guard_open(owl_context *ctx)
{
    if (ctx->cuda->guard_depth == 0) {
        owl_status s = clear_flag(ctx);
        if (s != OWL_OK)
            return s;
    }
    ctx->cuda->guard_depth++;
    return OWL_OK;
}

owl_status owl__cuda_guard_close(owl_context *ctx)
{
    if (ctx->cuda->guard_depth == 0)
        return owl__fail(ctx, OWL_ERR_INTERNAL, "step guard closed twice");
    if (--ctx->cuda->guard_depth > 0)
        return OWL_OK;
    return count_skip(ctx);
}
