/* Activation statistics and LOD on the CUDA backend: host-side checks
 * that the memory is the device's, then the kernels of kernels/lod.cu on
 * the context's stream. */
#include "cuda_adamw_lod.h"
#include "cuda_internal.h"

#include "../kernels/lod_kernels.h"

#include <inttypes.h>
#include <stdio.h>

owl_status owl__cuda_act_norm(owl_context *ctx, const owl_tensor *x,
                              owl_tensor *sumsq)
{
    if (sumsq->dtype != OWL_DTYPE_F32)
        return owl__fail(ctx, OWL_ERR_DTYPE,
                         "sumsq is %s; the CUDA backend accumulates into f32",
                         owl__dtype_name(sumsq->dtype));
    owl_cuda_guard g;
    owl_status s = owl__cuda_enter_checked(ctx, &g, x, "x", sumsq, "sumsq");
    if (s != OWL_OK)
        return s;
    int e = owl__k_act_sumsq(owl__cuda_stream(ctx), x->data, x->dtype, x->rows,
                             x->cols, x->row_stride, (float *)sumsq->data);
    owl__cuda_leave(&g);
    return e == 0 ? OWL_OK : owl__cuda_fail(ctx, e, "sum-of-squares kernel");
}

static owl_status check_device_memory(owl_context *ctx,
                                      const owl_tensor *weights,
                                      const owl_tensor *input_sumsq,
                                      uint64_t count, owl_tensor *ratio_dev)
{
    char name[48];
    for (uint64_t k = 0; k < count; k++) {
        snprintf(name, sizeof name, "weights[%" PRIu64 "]", k);
        owl_status s = owl__cuda_check_tensor(ctx, &weights[k], name);
        if (s != OWL_OK)
            return s;
        snprintf(name, sizeof name, "input_sumsq[%" PRIu64 "]", k);
        if ((s = owl__cuda_check_tensor(ctx, &input_sumsq[k], name)) != OWL_OK)
            return s;
    }
    if (ratio_dev != NULL) {
        if (ratio_dev->dtype != OWL_DTYPE_F32)
            return owl__fail(ctx, OWL_ERR_DTYPE,
                             "ratio is %s; the CUDA backend writes f32",
                             owl__dtype_name(ratio_dev->dtype));
        return owl__cuda_check_tensor(ctx, ratio_dev, "ratio");
    }
    return OWL_OK;
}

/* Enqueues both passes and the ratio over all matrices. */
static owl_status enqueue_lod(owl_context *ctx, const owl_tensor *weights,
                              const owl_tensor *input_sumsq, uint64_t count,
                              double M, uint64_t entries, int32_t blocks,
                              owl_k_lod_state *state, float *ratio_f32)
{
    void *stream = owl__cuda_stream(ctx);
    owl_status s = owl__cuda_zero_async(ctx, state,
                                        offsetof(owl_k_lod_state, threshold));
    if (s != OWL_OK)
        return s;
    int e = 0;
    for (uint64_t k = 0; k < count && e == 0; k++) {
        const owl_tensor *w = &weights[k], *sq = &input_sumsq[k];
        e = owl__k_lod_sum(stream, w->data, w->dtype, w->rows, w->cols,
                           w->row_stride, sq->data, sq->dtype, blocks, k == 0,
                           state);
    }
    if (e == 0)
        e = owl__k_lod_threshold(stream, blocks, entries, M, state);
    for (uint64_t k = 0; k < count && e == 0; k++) {
        const owl_tensor *w = &weights[k], *sq = &input_sumsq[k];
        e = owl__k_lod_count(stream, w->data, w->dtype, w->rows, w->cols,
                             w->row_stride, sq->data, sq->dtype, blocks,
                             state);
    }
    if (e == 0)
        e = owl__k_lod_ratio(stream, entries, state, ratio_f32);
    return e == 0 ? OWL_OK : owl__cuda_fail(ctx, e, "LOD kernels");
}

/* The host's view of a finished computation: its errors, or the ratio. */
static owl_status report(owl_context *ctx, const owl_k_lod_state *st,
                         double *ratio)
{
    if (st->status & OWL_K_LOD_NONFINITE_STAT)
        return owl__fail(ctx, OWL_ERR_NONFINITE,
                         "input_sumsq holds NaN or Inf");
    if (st->status & OWL_K_LOD_NEGATIVE_STAT)
        return owl__fail(ctx, OWL_ERR_INVALID_ARGUMENT,
                         "input_sumsq holds a negative value; a sum of "
                         "squares is >= 0");
    if (st->status & OWL_K_LOD_BAD_WEIGHT)
        return owl__fail(ctx, OWL_ERR_NONFINITE, "weights contain NaN or Inf");
    *ratio = st->ratio;
    return OWL_OK;
}

owl_status owl__cuda_lod(owl_context *ctx, const owl_tensor *weights,
                         const owl_tensor *input_sumsq, uint64_t count,
                         double M, uint64_t entries, double *ratio,
                         owl_tensor *ratio_dev)
{
    owl_status s = check_device_memory(ctx, weights, input_sumsq, count,
                                       ratio_dev);
    if (s != OWL_OK)
        return s;
    const int32_t blocks = owl__cuda_lod_blocks(ctx->cuda);
    /* The context reserved this scratch at create, so no call grows it
     * (growing would free the old block, which waits for the device). */
    if (ctx->cuda->scratch_bytes < owl__k_lod_bytes(blocks))
        return owl__fail(ctx, OWL_ERR_INTERNAL,
                         "LOD scratch: %zu bytes reserved, %zu needed",
                         ctx->cuda->scratch_bytes, owl__k_lod_bytes(blocks));
    owl_k_lod_state *state = owl__cuda_scratch(ctx);
    owl_cuda_guard g;
    if ((s = owl__cuda_enter(ctx, &g)) != OWL_OK)
        return s;
    s = enqueue_lod(ctx, weights, input_sumsq, count, M, entries, blocks,
                    state, ratio_dev != NULL ? (float *)ratio_dev->data : NULL);
    owl__cuda_leave(&g);
    if (s != OWL_OK || ratio == NULL)
        return s;
    owl_k_lod_state host;
    s = owl__cuda_download(ctx, &host, state,
                           offsetof(owl_k_lod_state, partials));
    return s == OWL_OK ? report(ctx, &host, ratio) : s;
}
