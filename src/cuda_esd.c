/* PL_Alpha_Hill on CUDA: the singular values of W (f32, cuSOLVER's
 * 64-bit gesvd without vectors) are computed on the device, downloaded,
 * squared in double, and fitted on the host by owl_esd_alpha_hill_eigs on
 * the same context, the fit the CPU backend uses.
 *
 * This is an analysis, not a training step: the call waits for the stream
 * (its result is a host value) and allocates its device workspace (the f32
 * copy of W, and cuSOLVER's workspace) inside the call, freeing it before
 * it returns. */
#include "cuda_galore.h"

#include "cuda_internal.h"

#include <cuda_runtime_api.h>
/* cusolverDn.h declares one function with () rather than (void). */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wstrict-prototypes"
#include <cusolverDn.h>
#pragma GCC diagnostic pop
#include <inttypes.h>
#include <stdlib.h>

typedef struct {
    float *a;        /* the matrix cuSOLVER factors (destroyed) */
    float *copy;     /* W as f32 before its transpose (n < m only) */
    float *sv;       /* min(m, n) singular values */
    int32_t *words;  /* [0] non-finite flag, [1] gesvd info */
    void *dev_work, *host_work;
    cusolverDnParams_t params;
} esd_buffers;

static void release(owl_context *ctx, esd_buffers *b)
{
    owl__cuda_free(ctx, b->a);
    owl__cuda_free(ctx, b->copy);
    owl__cuda_free(ctx, b->sv);
    owl__cuda_free(ctx, b->words);
    owl__cuda_free(ctx, b->dev_work);
    free(b->host_work);
    if (b->params != NULL)
        cusolverDnDestroyParams(b->params);
}

/* Singular values of W into sv_host (k floats), or a failure status. */
static owl_status singular_values(owl_context *ctx, const owl_tensor *w,
                                  esd_buffers *b, float *sv_host)
{
    const int64_t m = w->rows, n = w->cols, k = m < n ? m : n;
    cudaStream_t st = (cudaStream_t)owl__cuda_stream(ctx);
    cusolverDnHandle_t h = (cusolverDnHandle_t)ctx->cuda->cusolver;
    const size_t cells = (size_t)m * (size_t)n * sizeof(float);
    /* gesvd wants rows >= cols: the row-major copy of W is the
     * column-major n x m W^T, usable as it is when n >= m; otherwise its
     * transpose (column-major m x n W). Both have W's singular values. */
    const bool gt = n >= m;
    const int64_t R = gt ? n : m, C = gt ? m : n;
    owl_status s = owl__cuda_alloc(ctx, cells, (void **)&b->a, "ESD copy");
    if (s == OWL_OK && !gt)
        s = owl__cuda_alloc(ctx, cells, (void **)&b->copy, "ESD copy");
    if (s == OWL_OK)
        s = owl__cuda_alloc(ctx, (size_t)k * sizeof(float), (void **)&b->sv,
                            "singular values");
    if (s == OWL_OK)
        s = owl__cuda_alloc(ctx, 2 * sizeof(int32_t), (void **)&b->words,
                            "ESD flags");
    if (s != OWL_OK)
        return s;
    cusolverStatus_t cs = cusolverDnCreateParams(&b->params);
    if (cs != CUSOLVER_STATUS_SUCCESS) {
        b->params = NULL;
        return owl__cusolver_fail(ctx, cs, "cusolverDnCreateParams");
    }

    float *f32 = gt ? b->a : b->copy;
    int e = owl__k_to_f32(st, w->data, w->dtype, m, n, w->row_stride, f32, n,
                          b->words);
    if (e != 0)
        return owl__cuda_fail(ctx, e, "conversion of weight to f32");
    int32_t bad = 0;
    if ((s = owl__cuda_download(ctx, &bad, b->words, sizeof bad)) != OWL_OK)
        return s;
    if (bad)
        return owl__fail(ctx, OWL_ERR_NONFINITE, "weight contains NaN or Inf");
    if (!gt &&
        (e = owl__k_transpose_f32(st, b->copy, m, n, n, b->a, m, NULL)) != 0)
        return owl__cuda_fail(ctx, e, "transpose of weight");

    size_t dev_bytes = 0, host_bytes = 0;
    cs = cusolverDnXgesvd_bufferSize(h, b->params, 'N', 'N', R, C, CUDA_R_32F,
                                     b->a, R, CUDA_R_32F, b->sv, CUDA_R_32F,
                                     NULL, 1, CUDA_R_32F, NULL, 1, CUDA_R_32F,
                                     &dev_bytes, &host_bytes);
    if (cs != CUSOLVER_STATUS_SUCCESS)
        return owl__cusolver_fail(ctx, cs, "cusolverDnXgesvd_bufferSize");
    if ((s = owl__cuda_alloc(ctx, dev_bytes, &b->dev_work,
                             "SVD workspace")) != OWL_OK)
        return s;
    if (host_bytes > 0 && (b->host_work = malloc(host_bytes)) == NULL)
        return owl__fail(ctx, OWL_ERR_OUT_OF_MEMORY,
                         "SVD host workspace: %zu bytes", host_bytes);
    cs = cusolverDnXgesvd(h, b->params, 'N', 'N', R, C, CUDA_R_32F, b->a, R,
                          CUDA_R_32F, b->sv, CUDA_R_32F, NULL, 1, CUDA_R_32F,
                          NULL, 1, CUDA_R_32F, b->dev_work, dev_bytes,
                          b->host_work, host_bytes, b->words + 1);
    if (cs != CUSOLVER_STATUS_SUCCESS)
        return owl__cusolver_fail(ctx, cs, "cusolverDnXgesvd");
    int32_t info = 0;
    if ((s = owl__cuda_download(ctx, &info, b->words + 1, sizeof info)) !=
            OWL_OK ||
        (s = owl__cuda_download(ctx, sv_host, b->sv,
                                (size_t)k * sizeof(float))) != OWL_OK)
        return s;
    if (info > 0)
        return owl__fail(ctx, OWL_ERR_NUMERICAL,
                         "the SVD of weight (%" PRId64 "x%" PRId64 ") did "
                         "not converge (gesvd info %d)",
                         m, n, (int)info);
    if (info < 0)
        return owl__fail(ctx, OWL_ERR_INTERNAL,
                         "gesvd rejected argument %d", (int)-info);
    return OWL_OK;
}

owl_status owl__cuda_esd_alpha_hill(owl_context *ctx,
                                    const owl_tensor *weight,
                                    owl_xmin_method method,
                                    owl_esd_result *result)
{
    if (weight->dtype == OWL_DTYPE_F64)
        return owl__fail(ctx, OWL_ERR_DTYPE,
                         "weight is f64; the CUDA backend takes f32, bf16 or "
                         "f16 weights");
    owl_status s = owl__cuda_check_tensor(ctx, weight, "weight");
    if (s != OWL_OK)
        return s;
    const int64_t m = weight->rows, n = weight->cols, k = m < n ? m : n;
    float *sv = malloc((size_t)k * sizeof(float));
    double *lam = malloc((size_t)k * sizeof(double));
    if (sv == NULL || lam == NULL) {
        free(sv);
        free(lam);
        return owl__fail(ctx, OWL_ERR_OUT_OF_MEMORY,
                         "singular values of a %" PRId64 "x%" PRId64
                         " weight",
                         m, n);
    }
    owl_cuda_guard g;
    s = owl__cuda_enter(ctx, &g);
    if (s == OWL_OK) {
        esd_buffers b = {0};
        s = singular_values(ctx, weight, &b, sv);
        /* A failure may leave work queued that uses the buffers: wait
         * before freeing them (cudaFree would too; this keeps the error of
         * that work from surfacing in a later call). */
        if (s != OWL_OK)
            (void)cudaStreamSynchronize((cudaStream_t)owl__cuda_stream(ctx));
        release(ctx, &b);
        owl__cuda_leave(&g);
    }
    if (s == OWL_OK) {
        for (int64_t i = 0; i < k; i++)
            lam[i] = (double)sv[i] * (double)sv[i];
        /* The CPU backend's fit (it clears and reports on ctx itself). */
        s = owl_esd_alpha_hill_eigs(ctx, lam, (uint64_t)k, method, result);
    }
    free(sv);
    free(lam);
    return s;
}
