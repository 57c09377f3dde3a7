/*
 * The device layer of gpu.h on CUDA: the runtime for memory and copies on
 * one stream, cuBLAS (cublasGemmEx, f32 compute) for the GEMMs. Every
 * runtime and cuBLAS status is checked; a failure names the call.
 *
 * Buffers are reserved once, when the model is created (cudaMalloc: no
 * allocation happens inside a training step), so the synchronous
 * allocator is the right one here.
 */
#include "gpu.h"
#include "gpu_account.h"

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

struct gd_dev {
    int device;
    cudaStream_t stream;
    int own_stream;
    cublasHandle_t blas;
    gd_account acct;
    char err[512];
};

static int fail(gd_dev *d, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(d->err, sizeof d->err, fmt, ap);
    va_end(ap);
    return -1;
}

static int cuda_fail(gd_dev *d, cudaError_t e, const char *what)
{
    return fail(d, "%s: %s (%s)", what, cudaGetErrorString(e),
                cudaGetErrorName(e));
}

static const char *cublas_name(cublasStatus_t s)
{
    switch (s) {
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "CUBLAS_STATUS_ARCH_MISMATCH";
    case CUBLAS_STATUS_MAPPING_ERROR: return "CUBLAS_STATUS_MAPPING_ERROR";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "CUBLAS_STATUS_INTERNAL_ERROR";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    case CUBLAS_STATUS_LICENSE_ERROR: return "CUBLAS_STATUS_LICENSE_ERROR";
    default: return "unknown cuBLAS status";
    }
}

int gd_device_count(char *err, size_t errlen)
{
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        snprintf(err, errlen, "no CUDA device (cudaGetDeviceCount: %s)",
                 cudaGetErrorString(e));
        return 0;
    }
    if (n == 0)
        snprintf(err, errlen, "no CUDA device (cudaGetDeviceCount: 0)");
    return n;
}

int gd_create(gd_dev **out, int device, void *stream, char *err,
               size_t errlen)
{
    if (!out) {
        snprintf(err, errlen, "gd_create: out is NULL");
        return -1;
    }
    *out = NULL;
    int n = gd_device_count(err, errlen);
    if (n == 0)
        return -1;
    if (device < 0 || device >= n) {
        snprintf(err, errlen, "device %d: there are %d CUDA device(s)",
                 device, n);
        return -1;
    }
    gd_dev *d = calloc(1, sizeof *d);
    if (!d) {
        snprintf(err, errlen, "out of host memory for the device state");
        return -1;
    }
    d->device = device;
    cudaError_t e = cudaSetDevice(device);
    if (e != cudaSuccess) {
        snprintf(err, errlen, "cudaSetDevice(%d): %s", device,
                 cudaGetErrorString(e));
        free(d);
        return -1;
    }
    if (stream) {
        d->stream = (cudaStream_t)stream;
    } else {
        e = cudaStreamCreateWithFlags(&d->stream, cudaStreamNonBlocking);
        if (e != cudaSuccess) {
            snprintf(err, errlen, "cudaStreamCreateWithFlags: %s",
                     cudaGetErrorString(e));
            free(d);
            return -1;
        }
        d->own_stream = 1;
    }
    cublasStatus_t s = cublasCreate(&d->blas);
    if (s == CUBLAS_STATUS_SUCCESS)
        s = cublasSetStream(d->blas, d->stream);
    if (s == CUBLAS_STATUS_SUCCESS)
        s = cublasSetPointerMode(d->blas, CUBLAS_POINTER_MODE_HOST);
    if (s != CUBLAS_STATUS_SUCCESS) {
        snprintf(err, errlen, "cublasCreate/cublasSetStream: %s",
                 cublas_name(s));
        if (d->blas)
            cublasDestroy(d->blas);
        if (d->own_stream)
            cudaStreamDestroy(d->stream);
        free(d);
        return -1;
    }
    *out = d;
    return 0;
}

void gd_destroy(gd_dev *d)
{
    if (!d)
        return;
    /* Teardown has no caller to report to: an error here (a kernel that
     * failed earlier) was reported by the call that waited for it. */
    cudaSetDevice(d->device);
    cudaStreamSynchronize(d->stream);
    cublasDestroy(d->blas);
    if (d->own_stream)
        cudaStreamDestroy(d->stream);
    free(d);
}

const char *gd_error(const gd_dev *d) { return d ? d->err : "device is NULL"; }
void *gd_stream(const gd_dev *d) { return (void *)d->stream; }
int gd_device(const gd_dev *d) { return d->device; }

int gd_activate(gd_dev *d)
{
    cudaError_t e = cudaSetDevice(d->device);
    return e == cudaSuccess ? 0 : cuda_fail(d, e, "cudaSetDevice");
}

int gd_mem_info(gd_dev *d, uint64_t *free_bytes, uint64_t *total_bytes)
{
    size_t f = 0, t = 0;
    cudaError_t e = cudaMemGetInfo(&f, &t);
    if (e != cudaSuccess)
        return cuda_fail(d, e, "cudaMemGetInfo");
    *free_bytes = f;
    *total_bytes = t;
    return 0;
}

int gd_alloc(gd_dev *d, void **p, size_t bytes, gd_mem_cat cat,
              const char *what)
{
    *p = NULL;
    if ((unsigned)cat >= GD_MEM_NUM_CATS)
        return fail(d, "gd_alloc (%s): category %d", what, (int)cat);
    if (bytes == 0)
        return 0;
    cudaError_t e = cudaMalloc(p, bytes);
    if (e != cudaSuccess) {
        *p = NULL;
        return fail(d, "cudaMalloc (%s, %zu bytes): %s", what, bytes,
                    cudaGetErrorString(e));
    }
    gd_account_alloc(&d->acct, cat, bytes);
    return 0;
}

void gd_free(gd_dev *d, void *p, size_t bytes, gd_mem_cat cat)
{
    if (!p || !d || (unsigned)cat >= GD_MEM_NUM_CATS)
        return;
    /* cudaFree waits for the device: the stream's work on p is done. Only
     * destroy frees, and it has nowhere to report a failure. */
    cudaFree(p);
    gd_account_free(&d->acct, cat, bytes);
}

void gd_mem_usage(const gd_dev *d, uint64_t now[GD_MEM_NUM_CATS],
                   uint64_t peak[GD_MEM_NUM_CATS], uint64_t *peak_total)
{
    gd_account_usage(&d->acct, now, peak, peak_total);
}

int gd_upload(gd_dev *d, void *dst, const void *src, size_t bytes)
{
    if (!bytes)
        return 0;
    /* From pageable memory the call returns once src has been staged, so
     * the caller may reuse it at once. */
    cudaError_t e = cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice,
                                    d->stream);
    return e == cudaSuccess ? 0 : cuda_fail(d, e, "cudaMemcpyAsync (upload)");
}

int gd_download(gd_dev *d, void *dst, const void *src, size_t bytes)
{
    if (!bytes)
        return 0;
    cudaError_t e = cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost,
                                    d->stream);
    if (e != cudaSuccess)
        return cuda_fail(d, e, "cudaMemcpyAsync (download)");
    e = cudaStreamSynchronize(d->stream);
    return e == cudaSuccess
               ? 0
               : cuda_fail(d, e, "cudaStreamSynchronize (after a download)");
}

int gd_memset(gd_dev *d, void *dst, int value, size_t bytes)
{
    if (!bytes)
        return 0;
    cudaError_t e = cudaMemsetAsync(dst, value, bytes, d->stream);
    return e == cudaSuccess ? 0 : cuda_fail(d, e, "cudaMemsetAsync");
}

int gd_copy(gd_dev *d, void *dst, const void *src, size_t bytes)
{
    if (!bytes)
        return 0;
    cudaError_t e = cudaMemcpyAsync(dst, src, bytes,
                                    cudaMemcpyDeviceToDevice, d->stream);
    return e == cudaSuccess ? 0
                            : cuda_fail(d, e, "cudaMemcpyAsync (device copy)");
}

int gd_sync(gd_dev *d)
{
    cudaError_t e = cudaStreamSynchronize(d->stream);
    return e == cudaSuccess ? 0 : cuda_fail(d, e, "cudaStreamSynchronize");
}

int gd_check_launch(gd_dev *d, int cuda_error, const char *what)
{
    if (cuda_error == 0)
        return 0;
    return cuda_fail(d, (cudaError_t)cuda_error, what);
}

int gd_gemm(gd_dev *d, int transa, int transb, int M, int N, int K,
             float alpha, const void *A, int lda, const void *B, int ldb,
             gd_dtype ab_type, float beta, void *C, int ldc,
             gd_dtype c_type)
{
    if (gd_gemm_check(d->err, sizeof d->err, M, N, K, A, lda, transa, B, ldb,
                       transb, C, ldc, ab_type, c_type) != 0)
        return -1;
    gd_colmajor_gemm g = gd_gemm_to_colmajor(transa, transb, M, N, K, A,
                                               lda, B, ldb);
    cudaDataType_t tab = ab_type == GD_BF16 ? CUDA_R_16BF : CUDA_R_32F;
    cudaDataType_t tc = c_type == GD_BF16 ? CUDA_R_16BF : CUDA_R_32F;
    cublasStatus_t s = cublasGemmEx(
        d->blas, g.trans_first ? CUBLAS_OP_T : CUBLAS_OP_N,
        g.trans_second ? CUBLAS_OP_T : CUBLAS_OP_N, g.m, g.n, g.k, &alpha,
        g.first, tab, g.ld_first, g.second, tab, g.ld_second, &beta, C, tc,
        ldc, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
    if (s != CUBLAS_STATUS_SUCCESS)
        return fail(d, "cublasGemmEx (row-major %dx%dx%d, transa %d, transb "
                    "%d, %s operands, %s output): %s", M, N, K, transa,
                    transb, ab_type == GD_BF16 ? "bf16" : "f32",
                    c_type == GD_BF16 ? "bf16" : "f32", cublas_name(s));
    return 0;
}
