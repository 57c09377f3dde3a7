/* Full-rank AdamW on the CUDA backend: the optimizer's device state, and
 * the step as three launches on the context's stream: clear the step's
 * non-finite flag, check the gradient, then one fused update that does
 * nothing when the flag is set (src/cuda_internal.h). The coefficients
 * that depend on the bias-correction t are formed on the device, since t
 * counts only the steps the device did not skip. */
#include "cuda_adamw_lod.h"
#include "cuda_internal.h"
#include "galore_internal.h"

#include "../kernels/adamw_kernels.h"

static size_t moment_bytes(const owl_adamw *a)
{
    return (size_t)a->rows * (size_t)a->cols *
           owl__dtype_size(a->opts.moment_dtype);
}

void owl__cuda_adamw_release(owl_adamw *a)
{
    owl_cuda_guard g;
    bool entered = owl__cuda_enter(a->ctx, &g) == OWL_OK;
    owl__cuda_free(a->ctx, a->m);
    owl__cuda_free(a->ctx, a->v);
    owl__cuda_free(a->ctx, a->dev_skipped);
    a->m = a->v = NULL;
    a->dev_skipped = NULL;
    if (entered)
        owl__cuda_leave(&g);
}

owl_status owl__cuda_adamw_alloc(owl_adamw *a)
{
    owl_context *ctx = a->ctx;
    void *skipped = NULL;
    owl_status s = owl__cuda_alloc(ctx, moment_bytes(a), &a->m,
                                   "first moment");
    if (s == OWL_OK)
        s = owl__cuda_alloc(ctx, moment_bytes(a), &a->v, "second moment");
    if (s == OWL_OK)
        s = owl__cuda_alloc(ctx, sizeof *a->dev_skipped, &skipped,
                            "skip counter");
    a->dev_skipped = skipped;
    if (s != OWL_OK)
        owl__cuda_adamw_release(a);
    return s;
}

owl_status owl__cuda_adamw_reset(owl_adamw *a)
{
    owl_context *ctx = a->ctx;
    owl_cuda_guard g;
    owl_status s = owl__cuda_enter(ctx, &g);
    if (s != OWL_OK)
        return s;
    s = owl__cuda_zero_async(ctx, a->m, moment_bytes(a));
    if (s == OWL_OK)
        s = owl__cuda_zero_async(ctx, a->v, moment_bytes(a));
    if (s == OWL_OK)
        s = owl__cuda_zero_async(ctx, a->dev_skipped, sizeof *a->dev_skipped);
    owl__cuda_leave(&g);
    if (s == OWL_OK)
        a->bias_step = 0;
    return s;
}

owl_status owl__cuda_adamw_bias_step(const owl_adamw *a, uint64_t *t)
{
    unsigned long long skipped = 0;
    owl_status s = owl__cuda_download(a->ctx, &skipped, a->dev_skipped,
                                      sizeof skipped);
    if (s == OWL_OK)
        *t = a->bias_step - (uint64_t)skipped;
    return s;
}

owl_status owl__cuda_adamw_get_moment(const owl_adamw *a, int32_t which,
                                      owl_tensor *out)
{
    owl_context *ctx = a->ctx;
    owl_status s = owl__cuda_check_tensor(ctx, out, "out");
    if (s != OWL_OK)
        return s;
    owl_cuda_guard g;
    if ((s = owl__cuda_enter(ctx, &g)) != OWL_OK)
        return s;
    int e = owl__k_adamw_moment_f32(owl__cuda_stream(ctx),
                                    which == 0 ? a->m : a->v,
                                    a->opts.moment_dtype == OWL_DTYPE_BF16,
                                    a->rows, a->cols, (float *)out->data,
                                    out->row_stride);
    owl__cuda_leave(&g);
    return e == 0 ? OWL_OK : owl__cuda_fail(ctx, e, "moment read-out kernel");
}

/* The step's constants as set_coeffs in src/adamw.c forms them (the same
 * f64 expressions rounded to f32 at the same points); the t-dependent
 * ones are left to the device. */
static owl_k_adamw_step step_constants(const owl_adamw *a,
                                       const owl_tensor *weight, double lr)
{
    const owl_adamw_options *o = &a->opts;
    owl_k_adamw_step k = {0};
    k.torch = o->semantics == OWL_ADAMW_TORCH;
    k.b1 = (float)o->beta1;
    k.b2 = (float)o->beta2;
    k.omb1 = (float)(1.0 - o->beta1);
    k.omb2 = (float)(1.0 - o->beta2);
    k.eps = (float)o->eps;
    k.keep1 = 1.0f - k.omb1;
    k.form = !k.torch ? OWL_K_FORM_GALORE
             : k.omb1 < 0.5f ? OWL_K_FORM_LERP_SMALL
                             : OWL_K_FORM_LERP_LARGE;
    k.pre = k.torch ? (float)(1.0 - lr * o->weight_decay) : 1.0f;
    k.post = k.torch ? 0.0f : (float)(-lr * o->weight_decay);
    k.beta1 = o->beta1;
    k.beta2 = o->beta2;
    k.lr = lr;
    k.bias_step = a->bias_step + 1; /* this step counts */
    k.stochastic = o->rounding == OWL_ROUND_STOCHASTIC &&
                   weight->dtype == OWL_DTYPE_BF16;
    k.seed = o->seed;
    k.draw = a->step_count; /* as the CPU: the update's index */
    return k;
}

owl_status owl__cuda_adamw_full(owl_adamw *a, owl_tensor *weight,
                                const owl_tensor *grad, double lr)
{
    owl_context *ctx = a->ctx;
    owl_status s = owl__cuda_check_tensor(ctx, weight, "weight");
    if (s == OWL_OK)
        s = owl__cuda_check_tensor(ctx, grad, "grad");
    if (s != OWL_OK)
        return s;
    owl_k_adamw_step k = step_constants(a, weight, lr);
    owl_cuda_guard g;
    if ((s = owl__cuda_enter(ctx, &g)) != OWL_OK)
        return s;
    void *stream = owl__cuda_stream(ctx);
    int32_t *flag = owl__cuda_flag(ctx);
    s = owl__cuda_step_begin(ctx);
    if (s == OWL_OK) {
        int e = owl__k_adamw_flag_grad(stream, ctx->cuda->sm_count,
                                       grad->data, grad->dtype,
                                       grad->rows, grad->cols,
                                       grad->row_stride, flag);
        if (e != 0)
            s = owl__cuda_fail(ctx, e, "non-finite check kernel");
    }
    if (s == OWL_OK) {
        int e = owl__k_adamw_full(stream, ctx->cuda->sm_count, &k,
                                  weight->data, weight->dtype,
                                  weight->row_stride, grad->data, grad->dtype,
                                  grad->row_stride, a->m, a->v,
                                  a->opts.moment_dtype == OWL_DTYPE_BF16,
                                  a->rows, a->cols, flag, a->dev_skipped);
        if (e != 0) {
            s = owl__cuda_fail(ctx, e, "AdamW update kernel");
        } else {
            /* The update is enqueued and will count as a step (or a
             * skip): the host's counters follow it. */
            a->step_count++;
            a->bias_step++;
            s = owl__cuda_step_end(ctx);
        }
    }
    owl__cuda_leave(&g);
    return s;
}
