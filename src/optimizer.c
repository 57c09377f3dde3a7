/* The optimizer: a whole OwLore step behind one handle (spec sections 2-5).
 *
 * Per step the host asks which layers train (owl_optimizer_active_layers,
 * the sampler's mask for the step index), runs its backward pass for those
 * layers and the OWL_LAYER_ALWAYS parameters, and calls owl_optimizer_step,
 * which in order:
 *   1. checks everything that can fail without changing anything: every
 *      updated parameter has a gradient, the gradients' global L2 norm (one
 *      f64 pass that also finds NaN/Inf), and the state of parameters whose
 *      layer is active for the first time (or again after FREE), allocated
 *      into staging slots;
 *   2. commits: clips the gradients in place (torch.nn.utils.clip_grad_norm_
 *      semantics), applies the frozen-state policy to layers that just froze
 *      or just came back, installs the staged state, and runs the AdamW
 *      primitive (low-rank through the parameter's projector, or full rank)
 *      on every updated parameter;
 *   3. advances the step index.
 *
 * The norm is summed per row (in parallel) and then over rows and
 * parameters in a fixed order, so it, the clipping factor and therefore the
 * weights do not depend on the number of threads.
 *
 * On CUDA the host never waits in a step (except to allocate state): the
 * commit is one guarded device step (owl__cuda_guard_open/close) whose
 * first kernels read every updated gradient once -- NaN/Inf into the
 * context's flag, f64 squares into fixed partial sums -- then form the norm
 * and clipping factor on the device and scale the gradients in place; every
 * later kernel that writes does nothing when the flag is set, and the close
 * counts one skip. The host cannot know of a skip, so its bookkeeping (step
 * index, policy transitions) advances as for a completed step. OFFLOAD
 * moves moments with asynchronous copies on the stream (see below). */
#include "optimizer_internal.h"
#include "sampler_internal.h"

#ifdef OWL_HAVE_CUDA
#include "cuda_internal.h"

#include "../kernels/optimizer_kernels.h"
#endif

#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "dtype.h"

/* Elements per inner chunk of the gradient passes (a stack buffer). */
#define CHUNK 256
/* Elements per thread chunk at least, so small gradients stay on one
 * thread. */
#define GRAIN_ELEMS 65536
/* torch.nn.utils.clip_grad_norm_: coef = max_norm / (total_norm + 1e-6). */
#define CLIP_EPS 1e-6
/* Same bound as the options structs: no result struct is ever this big. */

static const owl_optimizer_options optimizer_defaults = {
    .struct_size = sizeof(owl_optimizer_options),
    .method = OWL_METHOD_OWLORE,
    .frozen_policy = OWL_FROZEN_KEEP,
    .num_layers = 0,
    .sampler = NULL,
    .galore = NULL,
    .adamw = NULL,
    .max_grad_norm = 0.0,
    .refresh_on_activation = 0,
    .reserved = 0,
};

owl_status owl_optimizer_options_init(owl_optimizer_options *opts,
                                      uint64_t struct_size)
{
    return owl__init_options(opts, struct_size, &optimizer_defaults,
                             sizeof optimizer_defaults);
}

owl_status owl_memory_usage_init(owl_memory_usage *usage, uint64_t struct_size)
{
    static const owl_memory_usage zeroed = {.struct_size =
                                                sizeof(owl_memory_usage)};
    return owl__init_options(usage, struct_size, &zeroed, sizeof zeroed);
}

/* ------------------------------------------------------------------ */
/* Create / free                                                       */
/* ------------------------------------------------------------------ */

/* The top-level fields of owl_optimizer_options, shared with the memory
 * planner so both accept the same options. */
owl_status owl__optimizer_check_options(owl_context *ctx,
                                        const owl_optimizer_options *o)
{
    if (o->method < OWL_METHOD_OWLORE || o->method > OWL_METHOD_FULL)
        return owl__fail(ctx, OWL_ERR_INVALID_ARGUMENT,
                         "owl_optimizer_options.method is %d; expected "
                         "OWLORE (0), OWLORE_FULL (1), LISA (2), GALORE (3) "
                         "or FULL (4)",
                         (int)o->method);
    if (o->frozen_policy < OWL_FROZEN_KEEP || o->frozen_policy > OWL_FROZEN_FREE)
        return owl__fail(ctx, OWL_ERR_INVALID_ARGUMENT,
                         "owl_optimizer_options.frozen_policy is %d; expected "
                         "KEEP (0), RESET (1), OFFLOAD (2) or FREE (3)",
                         (int)o->frozen_policy);
    if (o->num_layers < 1 || o->num_layers > (uint64_t)INT32_MAX)
        return owl__fail(ctx, OWL_ERR_INVALID_ARGUMENT,
                         "owl_optimizer_options.num_layers is %" PRIu64
                         "; it must be the decoder layer count, in [1, 2^31)",
                         o->num_layers);
    if (!isfinite(o->max_grad_norm) || !(o->max_grad_norm >= 0))
        return owl__fail(ctx, OWL_ERR_INVALID_ARGUMENT,
                         "owl_optimizer_options.max_grad_norm is %g; it must "
                         "be finite and >= 0 (0 turns clipping off)",
                         o->max_grad_norm);
    if (o->refresh_on_activation != 0 && o->refresh_on_activation != 1)
        return owl__fail(ctx, OWL_ERR_INVALID_ARGUMENT,
                         "owl_optimizer_options.refresh_on_activation is %d; "
                         "expected 0 or 1",
                         (int)o->refresh_on_activation);
    if (o->reserved != 0)
        return owl__fail(ctx, OWL_ERR_INVALID_ARGUMENT,
                         "owl_optimizer_options.reserved is %d; it must be 0",
                         (int)o->reserved);
    return OWL_OK;
}

/* The sampler's options as the method uses them: num_layers from the
 * optimizer, OWLORE weights by default for the OWLORE methods, uniform
 * draws for LISA; then checked as owl_sampler_create checks them (for a
 * method that samples). Shared
 * with the memory planner, which passes need_weights false (the LOD ratios
 * do not change the memory). so->weights still points at the caller's. */
owl_status owl__optimizer_sampler_options(owl_context *ctx,
                                          const owl_optimizer_options *o,
                                          owl_sampler_options *so,
                                          bool need_weights)
{
    const owl_method method = o->method;
    owl_sampler_options_init(so, sizeof *so);
    if (o->sampler != NULL) {
        owl_status s = owl__read_options(ctx, so, sizeof *so, o->sampler,
                                         "owl_optimizer_options.sampler");
        if (s != OWL_OK)
            return s;
    }
    so->num_layers = o->num_layers;
    if (!owl__method_samples(method)) {
        /* GALORE and FULL train every layer: nothing to draw, and the
         * sampler options are not used (nor checked). */
        so->weights = NULL;
        return OWL_OK;
    }
    if (method == OWL_METHOD_LISA) {
        if (so->weight_mode != OWL_WEIGHTS_UNIFORM || so->weights != NULL)
            return owl__fail(ctx, OWL_ERR_INVALID_ARGUMENT,
                             "method LISA samples layers uniformly, but "
                             "sampler->weight_mode is %d and weights %s; use "
                             "OWLORE_FULL for weighted full-rank sampling",
                             (int)so->weight_mode,
                             so->weights ? "are set" : "are NULL");
    } else {
        /* The sampler options' own default (UNIFORM) reads as the OWLORE
         * methods' default, the LOD ratios: a struct left at its default
         * cannot say otherwise, and UNIFORM with weights is an error for
         * the sampler anyway. Other modes are ablations, taken as given. */
        if (so->weight_mode == OWL_WEIGHTS_UNIFORM)
            so->weight_mode = OWL_WEIGHTS_OWLORE;
        if (so->weight_mode == OWL_WEIGHTS_OWLORE && so->weights == NULL &&
            need_weights)
            return owl__fail(ctx, OWL_ERR_NULL_POINTER,
                             "method %s samples layers by their LOD ratios: "
                             "set sampler->weights to the %" PRIu64
                             " layers' outlier ratios (for uniform draws use "
                             "CUSTOM weights of 1, or method LISA)",
                             owl__method_name(method), o->num_layers);
    }
    return owl__sampler_check_options(ctx, so,
                                      "owl_optimizer_options.sampler->",
                                      need_weights);
}

static owl_status prepare_sampler(owl_context *ctx, owl_optimizer *opt,
                                  const owl_optimizer_options *caller)
{
    owl_sampler_options *so = &opt->sampler_opts;
    owl_status s = owl__optimizer_sampler_options(ctx, caller, so, true);
    if (s != OWL_OK || !owl__method_samples(caller->method))
        return s;
    if (so->weights != NULL) {
        /* Copied, so the caller's array may go away after create. */
        opt->sampler_weights = owl__alloc(ctx, (size_t)so->num_layers,
                                          sizeof(double), "sampler weights");
        if (opt->sampler_weights == NULL)
            return OWL_ERR_OUT_OF_MEMORY;
        memcpy(opt->sampler_weights, so->weights,
               (size_t)so->num_layers * sizeof(double));
        so->weights = opt->sampler_weights;
    }
    return owl_sampler_create(ctx, so, &opt->sampler);
}

void owl_optimizer_free(owl_optimizer *opt)
{
    if (opt == NULL)
        return;
#ifdef OWL_HAVE_CUDA
    /* Copies into or out of the pinned buffers may still be in flight. */
    if (opt->ctx->backend == OWL_BACKEND_CUDA)
        (void)owl__cuda_synchronize(opt->ctx);
#endif
    for (uint64_t i = 0; i < opt->num_params; i++) {
        owl_opt_param *p = &opt->params[i];
        owl_adamw_free(p->adam);
        owl_galore_free(p->proj);
#ifdef OWL_HAVE_CUDA
        owl__cuda_host_free(opt->ctx, p->host_m);
        owl__cuda_host_free(opt->ctx, p->host_v);
#endif
    }
#ifdef OWL_HAVE_CUDA
    for (uint64_t i = 0; i < opt->num_spares; i++)
        owl__cuda_free(opt->ctx, opt->spare_ptr ? opt->spare_ptr[i] : NULL);
    owl__cuda_free(opt->ctx, opt->dev_stats);
    owl__cuda_free(opt->ctx, opt->dev_partials);
#endif
    owl__free(opt->spare_ptr);
    owl__free(opt->spare_bytes);
    owl__free(opt->plan_bytes);
    owl__free(opt->params);
    owl__free(opt->row_sumsq);
    owl__free(opt->mask);
    owl__free(opt->was_active);
    owl__free(opt->sampler_weights);
    owl_sampler_free(opt->sampler);
    owl__free(opt);
}

owl_status owl_optimizer_create(owl_context *ctx,
                                const owl_optimizer_options *opts,
                                owl_optimizer **out)
{
    if (out != NULL)
        *out = NULL; /* also when ctx is NULL: no stale handle escapes */
    owl_optimizer_options o = optimizer_defaults;
    owl_status s = owl__create_begin(ctx, out != NULL, opts, &o, sizeof o,
                                     "owl_optimizer_options");
    if (s != OWL_OK)
        return s;
    if ((s = owl__optimizer_check_options(ctx, &o)) != OWL_OK)
        return s;

    owl_optimizer *opt = owl__alloc(ctx, 1, sizeof *opt, "owl_optimizer");
    if (opt == NULL)
        return OWL_ERR_OUT_OF_MEMORY;
    opt->ctx = ctx;
    opt->opts = o;
    opt->opts.sampler = NULL;
    opt->opts.galore = NULL;
    opt->opts.adamw = NULL;

    owl_galore_options_init(&opt->galore_opts, sizeof opt->galore_opts);
    owl_adamw_options_init(&opt->adamw_opts, sizeof opt->adamw_opts);
    if (o.galore != NULL)
        s = owl__read_options(ctx, &opt->galore_opts, sizeof opt->galore_opts,
                              o.galore, "owl_optimizer_options.galore");
    if (s == OWL_OK && o.adamw != NULL)
        s = owl__read_options(ctx, &opt->adamw_opts, sizeof opt->adamw_opts,
                              o.adamw, "owl_optimizer_options.adamw");
    /* The projector options every low-rank parameter shares are checked
     * once here, so a bad value is reported at create rather than at a
     * layer's first step; rank <= min(m, n) waits for add_param. */
    if (s == OWL_OK && owl__method_lowrank(o.method))
        s = owl__galore_check_options(ctx, &opt->galore_opts,
                                      "owl_optimizer_options.galore->", false);
    if (s == OWL_OK)
        s = owl__adamw_check_options(ctx, &opt->adamw_opts,
                                     "owl_optimizer_options.adamw->");
    if (s == OWL_OK)
        s = prepare_sampler(ctx, opt, &o);
    if (s == OWL_OK) {
        opt->mask = owl__alloc(ctx, (size_t)o.num_layers, 1, "layer mask");
        opt->was_active = owl__alloc(ctx, (size_t)o.num_layers, 1,
                                     "layer mask");
        if (opt->mask == NULL || opt->was_active == NULL)
            s = OWL_ERR_OUT_OF_MEMORY;
    }
#ifdef OWL_HAVE_CUDA
    if (s == OWL_OK && ctx->backend == OWL_BACKEND_CUDA) {
        /* No norm yet (NaN), clipping factor 1. */
        const double init[2] = {NAN, 1.0};
        void *stats = NULL;
        s = owl__cuda_alloc(ctx, sizeof init, &stats, "gradient norm");
        opt->dev_stats = stats;
        if (s == OWL_OK)
            s = owl__cuda_upload(ctx, opt->dev_stats, init, sizeof init);
    }
#endif
    if (s != OWL_OK) {
        owl_optimizer_free(opt);
        return s;
    }
    *out = opt;
    return OWL_OK;
}

/* ------------------------------------------------------------------ */
/* Parameters                                                          */
/* ------------------------------------------------------------------ */

/* A tensor of the backend's memory: host memory on CPU, device memory
 * usable from the context's device on CUDA. */
static owl_status check_param_tensor(owl_context *ctx, const owl_tensor *t,
                                     const char *name)
{
    owl_status s = owl__check_tensor(ctx, t, name, OWL_DT_FLOATS);
#ifdef OWL_HAVE_CUDA
    if (s == OWL_OK && ctx->backend == OWL_BACKEND_CUDA)
        s = owl__cuda_check_tensor(ctx, t, name);
#endif
    return s;
}

static owl_status check_grad(owl_context *ctx, const owl_tensor *grad,
                             const owl_tensor *weight)
{
    owl_status s = check_param_tensor(ctx, grad, "grad");
    if (s != OWL_OK)
        return s;
    if (grad->rows != weight->rows || grad->cols != weight->cols)
        return owl__fail(ctx, OWL_ERR_SHAPE,
                         "grad is %" PRId64 "x%" PRId64 ", weight is %" PRId64
                         "x%" PRId64,
                         grad->rows, grad->cols, weight->rows, weight->cols);
    return OWL_OK;
}

/* A step writes every weight (and scales the gradients when clipping):
 * no weight may share memory with its gradient, another weight, or another
 * parameter's gradient, or the step would read its own writes. Gradients
 * may share memory with each other (a pool of buffers rebound with
 * owl_optimizer_set_grad to the active layers only). */
static owl_status check_weight_memory(const owl_optimizer *opt,
                                      const owl_tensor *weight,
                                      const owl_tensor *grad)
{
    owl_context *ctx = opt->ctx;
    owl_status s = OWL_OK;
    if (grad != NULL)
        s = owl__check_disjoint(ctx, weight, "weight", grad, "grad");
    for (uint64_t i = 0; i < opt->num_params && s == OWL_OK; i++) {
        const owl_opt_param *p = &opt->params[i];
        s = owl__check_disjoint(ctx, weight, "weight", &p->weight,
                                "a registered parameter's weight");
        if (s == OWL_OK && p->has_grad)
            s = owl__check_disjoint(ctx, weight, "weight", &p->grad,
                                    "a registered parameter's grad");
        if (s == OWL_OK && grad != NULL)
            s = owl__check_disjoint(ctx, grad, "grad", &p->weight,
                                    "a registered parameter's weight");
    }
    return s;
}

/* A gradient rebound to parameter `index`: apart from every weight. */
static owl_status check_grad_memory(const owl_optimizer *opt, uint64_t index,
                                    const owl_tensor *grad)
{
    owl_status s = OWL_OK;
    for (uint64_t i = 0; i < opt->num_params && s == OWL_OK; i++)
        s = owl__check_disjoint(opt->ctx, grad, "grad", &opt->params[i].weight,
                                i == index ? "its weight"
                                           : "another parameter's weight");
    return s;
}

/* The CUDA step's per-parameter tables, sized with the parameter table's
 * capacity so steps never allocate them: the gradient pass's partial sums
 * (device) and the OFFLOAD spare list and its staging plan (host). */
static owl_status grow_device_tables(owl_optimizer *opt)
{
#ifdef OWL_HAVE_CUDA
    owl_context *ctx = opt->ctx;
    if (ctx->backend != OWL_BACKEND_CUDA ||
        opt->partial_params >= opt->cap_params)
        return OWL_OK;
    const uint64_t cap = opt->cap_params;
    void *partials = NULL;
    owl_status s = owl__cuda_alloc(ctx,
                                   (size_t)cap * OWL_K_OPT_PARTIALS *
                                       sizeof(double),
                                   &partials, "gradient norm partials");
    if (s != OWL_OK)
        return s;
    void **ptr = owl__alloc(ctx, (size_t)(4 * cap), sizeof *ptr, "spares");
    size_t *bytes = owl__alloc(ctx, (size_t)(4 * cap), sizeof *bytes,
                               "spares");
    size_t *plan = owl__alloc(ctx, (size_t)(4 * cap), sizeof *plan,
                              "spares");
    if (ptr == NULL || bytes == NULL || plan == NULL) {
        owl__cuda_free(ctx, partials);
        owl__free(ptr);
        owl__free(bytes);
        owl__free(plan);
        return OWL_ERR_OUT_OF_MEMORY;
    }
    /* Before the first step: nothing in flight uses the old buffers. */
    for (uint64_t i = 0; i < opt->num_spares; i++) {
        ptr[i] = opt->spare_ptr[i];
        bytes[i] = opt->spare_bytes[i];
    }
    owl__cuda_free(opt->ctx, opt->dev_partials);
    owl__free(opt->spare_ptr);
    owl__free(opt->spare_bytes);
    owl__free(opt->plan_bytes);
    opt->dev_partials = partials;
    opt->partial_params = cap;
    opt->spare_ptr = ptr;
    opt->spare_bytes = bytes;
    opt->plan_bytes = plan;
    opt->cap_spares = 4 * cap;
#else
    (void)opt;
#endif
    return OWL_OK;
}

#ifdef OWL_HAVE_CUDA
/* Bytes of one of a parameter's moments (m or v) as its AdamW handle will
 * hold them: the projected shape on the low-rank path (galore.c's
 * lr_rows x lr_cols), else the weight's. */
static size_t param_moment_bytes(const owl_optimizer *opt,
                                 const owl_opt_param *p)
{
    uint64_t rows = (uint64_t)p->weight.rows, cols = (uint64_t)p->weight.cols;
    if (p->lowrank) {
        const uint64_t r = opt->galore_opts.rank;
        if (owl__galore_projects_left(opt->galore_opts.proj_type, rows, cols))
            rows = r;
        else
            cols = r;
    }
    return (size_t)(rows * cols *
                    owl__dtype_size(opt->adamw_opts.moment_dtype));
}

/* OFFLOAD on CUDA: the pinned host copies of a sampled parameter's
 * moments, reserved when it is registered, so that no step calls
 * cudaMallocHost (which waits for the device and can take long for large
 * buffers). */
static owl_status reserve_pinned(owl_optimizer *opt, owl_opt_param *p)
{
    owl_context *ctx = opt->ctx;
    if (ctx->backend != OWL_BACKEND_CUDA ||
        opt->opts.frozen_policy != OWL_FROZEN_OFFLOAD ||
        p->layer == OWL_LAYER_ALWAYS || !owl__method_samples(opt->opts.method))
        return OWL_OK;
    const size_t b = param_moment_bytes(opt, p);
    owl_status s = owl__cuda_host_alloc(ctx, b, &p->host_m,
                                        "offloaded first moment");
    if (s == OWL_OK)
        s = owl__cuda_host_alloc(ctx, b, &p->host_v,
                                 "offloaded second moment");
    if (s != OWL_OK) {
        owl__cuda_host_free(ctx, p->host_m);
        p->host_m = NULL;
    }
    return s;
}
#endif

owl_status owl_optimizer_add_param(owl_optimizer *opt, uint64_t layer,
                                   const owl_tensor *weight,
                                   const owl_tensor *grad, int32_t lowrank,
                                   uint64_t *index)
{
    if (opt == NULL)
        return OWL_ERR_NULL_POINTER;
    owl_context *ctx = opt->ctx;
    owl__clear_error(ctx);
    if (opt->step > 0)
        return owl__fail(ctx, OWL_ERR_STATE,
                         "owl_optimizer_add_param after %" PRIu64
                         " step(s); register every parameter before the "
                         "first step",
                         opt->step);
    if (layer != OWL_LAYER_ALWAYS && layer >= opt->opts.num_layers)
        return owl__fail(ctx, OWL_ERR_INVALID_ARGUMENT,
                         "layer is %" PRIu64 "; expected a decoder layer in "
                         "[0, %" PRIu64 ") or OWL_LAYER_ALWAYS",
                         layer, opt->opts.num_layers);
    if (lowrank != 0 && lowrank != 1)
        return owl__fail(ctx, OWL_ERR_INVALID_ARGUMENT,
                         "lowrank is %d; expected 0 or 1", (int)lowrank);
    owl_status s = check_param_tensor(ctx, weight, "weight");
    if (s == OWL_OK && grad != NULL)
        s = check_grad(ctx, grad, weight);
    if (s != OWL_OK)
        return s;
    for (uint64_t i = 0; i < opt->num_params; i++)
        if (opt->params[i].weight.data == weight->data)
            return owl__fail(ctx, OWL_ERR_INVALID_ARGUMENT,
                             "weight (data %p) is already registered as "
                             "parameter %" PRIu64
                             "; it would be updated twice per step",
                             weight->data, i);
    s = check_weight_memory(opt, weight, grad);
    if (s != OWL_OK)
        return s;

    const bool takes_lowrank = lowrank == 1 && layer != OWL_LAYER_ALWAYS &&
                               owl__method_lowrank(opt->opts.method);
    if (takes_lowrank) {
        const uint64_t m = (uint64_t)weight->rows, n = (uint64_t)weight->cols;
        const uint64_t mn = m < n ? m : n;
        const uint64_t r = opt->galore_opts.rank;
        if (r > mn)
            return owl__fail(ctx, OWL_ERR_INVALID_ARGUMENT,
                             "the GaLore rank %" PRIu64 " exceeds min(m, n) "
                             "= %" PRIu64 " of this %" PRIu64 "x%" PRIu64
                             " weight; register it with lowrank = 0 (full "
                             "rank) or lower galore->rank",
                             r, mn, m, n);
        if (m > INT32_MAX || n > INT32_MAX)
            return owl__fail(ctx, OWL_ERR_UNSUPPORTED,
                             "weight is %" PRIu64 "x%" PRIu64 "; a low-rank "
                             "parameter's sides must be < 2^31 for "
                             "BLAS/LAPACK",
                             m, n);
    }

    if (opt->num_params == opt->cap_params) {
        uint64_t cap = opt->cap_params ? 2 * opt->cap_params : 16;
        owl_opt_param *grown = owl__alloc(ctx, (size_t)cap, sizeof *grown,
                                          "parameter table");
        if (grown == NULL)
            return OWL_ERR_OUT_OF_MEMORY;
        if (opt->num_params)
            memcpy(grown, opt->params,
                   (size_t)opt->num_params * sizeof *grown);
        owl__free(opt->params);
        opt->params = grown;
        opt->cap_params = cap;
    }
    if ((s = grow_device_tables(opt)) != OWL_OK)
        return s;
    if (weight->rows > opt->max_rows) {
        /* Workspace of the gradient norm, sized here where it is known. */
        double *rows = owl__alloc(ctx, (size_t)weight->rows, sizeof(double),
                                  "gradient norm workspace");
        if (rows == NULL)
            return OWL_ERR_OUT_OF_MEMORY;
        owl__free(opt->row_sumsq);
        opt->row_sumsq = rows;
        opt->max_rows = weight->rows;
    }

    owl_opt_param *p = &opt->params[opt->num_params];
    memset(p, 0, sizeof *p);
    p->layer = layer;
    p->weight = *weight;
    if (grad != NULL) {
        p->grad = *grad;
        p->has_grad = true;
    }
    p->lowrank = takes_lowrank;
    p->lowrank_asked = lowrank == 1;
#ifdef OWL_HAVE_CUDA
    if ((s = reserve_pinned(opt, p)) != OWL_OK)
        return s; /* not registered: the slot is reused by the next call */
#endif
    if (index != NULL)
        *index = opt->num_params;
    opt->num_params++;
    return OWL_OK;
}

owl_status owl_optimizer_set_grad(owl_optimizer *opt, uint64_t index,
                                  const owl_tensor *grad)
{
    if (opt == NULL)
        return OWL_ERR_NULL_POINTER;
    owl__clear_error(opt->ctx);
    if (index >= opt->num_params)
        return owl__fail(opt->ctx, OWL_ERR_INVALID_ARGUMENT,
                         "index is %" PRIu64 "; %" PRIu64
                         " parameter(s) are registered",
                         index, opt->num_params);
    OWL_REQUIRE_PTR(opt->ctx, grad);
    owl_opt_param *p = &opt->params[index];
    owl_status s = check_grad(opt->ctx, grad, &p->weight);
    if (s == OWL_OK)
        s = check_grad_memory(opt, index, grad);
    if (s != OWL_OK)
        return s;
    p->grad = *grad;
    p->has_grad = true;
    return OWL_OK;
}

/* ------------------------------------------------------------------ */
/* Active layers                                                       */
/* ------------------------------------------------------------------ */

/* Fills opt->mask for the current step (once per step). */
static owl_status current_mask(owl_optimizer *opt)
{
    if (opt->mask_valid && opt->mask_step == opt->step)
        return OWL_OK;
    if (opt->sampler != NULL) {
        owl_status s = owl_sampler_step(opt->sampler, opt->step, opt->mask,
                                        NULL, &opt->mask_resampled);
        if (s != OWL_OK)
            return s;
    } else {
        memset(opt->mask, 1, (size_t)opt->opts.num_layers);
        opt->mask_resampled = opt->step == 0;
    }
    opt->mask_valid = true;
    opt->mask_step = opt->step;
    return OWL_OK;
}

owl_status owl_optimizer_active_layers(owl_optimizer *opt, uint8_t *mask,
                                       uint64_t num_layers, int32_t *resampled)
{
    if (opt == NULL)
        return OWL_ERR_NULL_POINTER;
    owl__clear_error(opt->ctx);
    OWL_REQUIRE_PTR(opt->ctx, mask);
    if (num_layers != opt->opts.num_layers)
        return owl__fail(opt->ctx, OWL_ERR_SHAPE,
                         "num_layers is %" PRIu64 " but the optimizer has %"
                         PRIu64 " layers (mask needs that many bytes)",
                         num_layers, opt->opts.num_layers);
    owl_status s = current_mask(opt);
    if (s != OWL_OK)
        return s;
    memcpy(mask, opt->mask, (size_t)num_layers);
    if (resampled != NULL)
        *resampled = opt->mask_resampled;
    return OWL_OK;
}

static bool is_updated(const owl_optimizer *opt, const owl_opt_param *p)
{
    return p->layer == OWL_LAYER_ALWAYS || opt->mask[p->layer] != 0;
}

/* ------------------------------------------------------------------ */
/* Gradient norm and clipping                                          */
/* ------------------------------------------------------------------ */

typedef struct {
    const owl_tensor *g;
    double *row_sumsq;
    float coef; /* clipping */
} grad_job;

/* Sum of squares of one row in f64, eight running sums in a fixed order
 * (independent of the thread split). */
static double row_sumsq(const float *x, int64_t n)
{
    double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int64_t j = 0;
    for (; j + 8 <= n; j += 8)
        for (int k = 0; k < 8; k++)
            acc[k] += (double)x[j + k] * (double)x[j + k];
    for (; j < n; j++)
        acc[0] += (double)x[j] * (double)x[j];
    return ((acc[0] + acc[1]) + (acc[2] + acc[3])) +
           ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

static void sumsq_range(void *arg, int64_t begin, int64_t end)
{
    const grad_job *job = arg;
    const owl_tensor *g = job->g;
    float buf[CHUNK];
    for (int64_t i = begin; i < end; i++) {
        double acc = 0;
        if (g->dtype == OWL_DTYPE_F32) {
            acc = row_sumsq((const float *)owl__row_ptr(g, i), g->cols);
        } else {
            for (int64_t j0 = 0; j0 < g->cols; j0 += CHUNK) {
                int64_t len = g->cols - j0 < CHUNK ? g->cols - j0 : CHUNK;
                owl__load_span_f32(g, i, j0, len, buf);
                acc += row_sumsq(buf, len);
            }
        }
        job->row_sumsq[i] = acc;
    }
}

static void scale_range(void *arg, int64_t begin, int64_t end)
{
    const grad_job *job = arg;
    const owl_tensor *g = job->g;
    const float c = job->coef;
    for (int64_t i = begin; i < end; i++) {
        void *row = owl__row_ptr(g, i);
        if (g->dtype == OWL_DTYPE_F32) {
            float *x = row;
            for (int64_t j = 0; j < g->cols; j++)
                x[j] *= c;
        } else if (g->dtype == OWL_DTYPE_BF16) {
            uint16_t *x = row;
            for (int64_t j = 0; j < g->cols; j++)
                x[j] = owl_f32_to_bf16(owl_bf16_to_f32(x[j]) * c);
        } else {
            uint16_t *x = row;
            for (int64_t j = 0; j < g->cols; j++)
                x[j] = owl_f32_to_f16(owl_f16_to_f32(x[j]) * c);
        }
    }
}

static int64_t row_grain(int64_t cols)
{
    return cols >= GRAIN_ELEMS ? 1 : GRAIN_ELEMS / cols;
}

/* Sum of squares of a whole gradient: rows in parallel, then summed in
 * order. */
static double grad_sumsq(owl_optimizer *opt, const owl_tensor *g)
{
    grad_job job = {.g = g, .row_sumsq = opt->row_sumsq};
    owl__parallel_for(opt->ctx, g->rows, row_grain(g->cols), sumsq_range,
                      &job);
    double sum = 0;
    for (int64_t i = 0; i < g->rows; i++)
        sum += opt->row_sumsq[i];
    return sum;
}

/* ------------------------------------------------------------------ */
/* State: staging, policies                                            */
/* ------------------------------------------------------------------ */

static bool on_cuda(const owl_optimizer *opt)
{
    return opt->ctx->backend == OWL_BACKEND_CUDA;
}

void owl__optimizer_drop_staging(owl_optimizer *opt)
{
    for (uint64_t i = 0; i < opt->num_params; i++) {
        owl_opt_param *p = &opt->params[i];
        owl_adamw_free(p->new_adam);
        owl_galore_free(p->new_proj);
        p->new_adam = NULL;
        p->new_proj = NULL;
#ifdef OWL_HAVE_CUDA
        owl__cuda_free(opt->ctx, p->new_dev_m);
        owl__cuda_free(opt->ctx, p->new_dev_v);
        owl__cuda_host_free(opt->ctx, p->new_host_m);
        owl__cuda_host_free(opt->ctx, p->new_host_v);
#endif
        p->new_dev_m = p->new_dev_v = NULL;
        p->new_host_m = p->new_host_v = NULL;
    }
}

/* Fresh state for a parameter: a projector (low-rank path) and AdamW
 * moments of the projected or the full shape. */
owl_status owl__optimizer_new_state(owl_optimizer *opt, const owl_opt_param *p,
                                    owl_adamw **adam, owl_galore **proj)
{
    owl_context *ctx = opt->ctx;
    *adam = NULL;
    *proj = NULL;
    uint64_t rows = (uint64_t)p->weight.rows, cols = (uint64_t)p->weight.cols;
    if (p->lowrank) {
        owl_galore_options go = opt->galore_opts;
        go.rows = rows;
        go.cols = cols;
        owl_status s = owl_galore_create(ctx, &go, proj);
        if (s == OWL_OK)
            s = owl_galore_lowrank_shape(*proj, &rows, &cols);
        if (s != OWL_OK) {
            owl_galore_free(*proj);
            *proj = NULL;
            return s;
        }
    }
    owl_status s = owl_adamw_create(ctx, &opt->adamw_opts, rows, cols, adam);
    if (s != OWL_OK) {
        owl_galore_free(*proj);
        *proj = NULL;
    }
    return s;
}

/* A parameter whose layer was updated by the previous step and is not
 * active now: its layer has just frozen. */
static bool freezing(const owl_optimizer *opt, const owl_opt_param *p)
{
    return p->layer != OWL_LAYER_ALWAYS && !is_updated(opt, p) &&
           opt->was_active[p->layer];
}

#ifdef OWL_HAVE_CUDA
/* ---- OFFLOAD on CUDA --------------------------------------------------
 *
 * A freezing parameter's moments are copied to its pinned host buffers
 * (allocated at its first offload, kept) by cudaMemcpyAsync on the
 * context's stream, and its two device buffers become spares. A returning
 * parameter takes spares (the smallest that fits, first in order on a
 * tie) and its moments are copied back, again on the stream. No host
 * wait: the stream orders every copy before any later kernel or copy that
 * reuses the buffer, and the host never touches the pinned copies except
 * in save, load and free, which synchronize first.
 *
 * Freezing happens before re-activation within a step, so in a transformer
 * (every layer the same shapes) the layers leaving hand their buffers to
 * those arriving and the device holds only the active layers' moments.
 * The staging phase replays that matching on sizes alone (plan_bytes) to
 * allocate, before anything changes, a device buffer for each one no
 * spare will fit (this allocation waits for the device). A layer's first
 * activation creates fresh state, which allocates and waits anyway: such
 * a step also releases the spares left over at its end (cudaFree
 * synchronizes the device), so spares never pile up while layers are
 * being seen for the first time. */

static size_t half_moment_bytes(const owl_adamw *a)
{
    return (size_t)(owl__adamw_moment_bytes(a) / 2);
}

/* Index of the smallest entry >= want (0 entries are empty), the first on
 * a tie; -1 when none fits. */
static int64_t best_fit(const size_t *bytes, uint64_t n, size_t want)
{
    int64_t best = -1;
    for (uint64_t i = 0; i < n; i++)
        if (bytes[i] >= want && bytes[i] != 0 &&
            (best < 0 || bytes[i] < bytes[(uint64_t)best]))
            best = (int64_t)i;
    return best;
}

/* One device buffer of `bytes` for a returning parameter, planned: from
 * the spares the plan will hold, else allocated now into *staged. */
static owl_status plan_buffer(owl_optimizer *opt, uint64_t *n, size_t bytes,
                              void **staged, const char *what)
{
    int64_t j = best_fit(opt->plan_bytes, *n, bytes);
    if (j >= 0) {
        opt->plan_bytes[j] = 0;
        return OWL_OK;
    }
    return owl__cuda_alloc(opt->ctx, bytes, staged, what);
}

/* The OFFLOAD part of staging: pinned buffers for first offloads, device
 * buffers for returns no spare will fit. Changes nothing else. */
static owl_status stage_offload(owl_optimizer *opt)
{
    owl_context *ctx = opt->ctx;
    uint64_t n = opt->num_spares;
    memcpy(opt->plan_bytes, opt->spare_bytes, (size_t)n * sizeof(size_t));
    owl_status s = OWL_OK;
    for (uint64_t i = 0; i < opt->num_params && s == OWL_OK; i++) {
        owl_opt_param *p = &opt->params[i];
        if (!freezing(opt, p) || p->adam == NULL || p->offloaded)
            continue;
        const size_t b = half_moment_bytes(p->adam);
        if (p->host_m == NULL) {
            s = owl__cuda_host_alloc(ctx, b, &p->new_host_m,
                                     "offloaded first moment");
            if (s == OWL_OK)
                s = owl__cuda_host_alloc(ctx, b, &p->new_host_v,
                                         "offloaded second moment");
        }
        opt->plan_bytes[n++] = b;
        opt->plan_bytes[n++] = b;
    }
    for (uint64_t i = 0; i < opt->num_params && s == OWL_OK; i++) {
        owl_opt_param *p = &opt->params[i];
        if (!is_updated(opt, p) || p->adam == NULL || !p->offloaded)
            continue;
        const size_t b = half_moment_bytes(p->adam);
        s = plan_buffer(opt, &n, b, &p->new_dev_m, "first moment");
        if (s == OWL_OK)
            s = plan_buffer(opt, &n, b, &p->new_dev_v, "second moment");
    }
    return s;
}

static void spare_put(owl_optimizer *opt, void *ptr, size_t bytes)
{
    /* Room (checked by the callers all the same): every spare is a moment
     * buffer, and there are at most 2 per parameter of those. A buffer is
     * allocated only when no spare fits, i.e. when every buffer at least
     * that large is in use by a resident parameter, so for any size the
     * buffers at least that large number at most 2 per parameter; steps
     * that create fresh state end with no spares. cap_spares is twice
     * that. */
    opt->spare_ptr[opt->num_spares] = ptr;
    opt->spare_bytes[opt->num_spares] = bytes;
    opt->num_spares++;
}

static void *spare_take(owl_optimizer *opt, size_t bytes)
{
    int64_t j = best_fit(opt->spare_bytes, opt->num_spares, bytes);
    if (j < 0)
        return NULL;
    void *ptr = opt->spare_ptr[j];
    opt->spare_ptr[j] = NULL;
    opt->spare_bytes[j] = 0;
    return ptr;
}

/* The end of a step's OFFLOAD work: empty slots squeezed out, and when
 * the step has waited for the device already (it created fresh state),
 * the spares nobody took released. */
static void settle_spares(owl_optimizer *opt, bool release)
{
    uint64_t k = 0;
    /* A spare's offload copy may be in flight: wait for it explicitly
     * rather than rely on cudaFree's implicit synchronization. If the wait
     * fails the spares are kept (the error surfaces at the next call). */
    if (release && opt->num_spares > 0 &&
        owl__cuda_synchronize(opt->ctx) != OWL_OK)
        release = false;
    for (uint64_t i = 0; i < opt->num_spares; i++) {
        if (opt->spare_bytes[i] == 0)
            continue;
        if (release) {
            owl__cuda_free(opt->ctx, opt->spare_ptr[i]);
            continue;
        }
        opt->spare_ptr[k] = opt->spare_ptr[i];
        opt->spare_bytes[k] = opt->spare_bytes[i];
        k++;
    }
    opt->num_spares = k;
}

static owl_status copy_status(owl_context *ctx, int e, const char *what)
{
    return e == 0 ? OWL_OK : owl__cuda_fail(ctx, e, what);
}

/* The moments to the pinned copies (enqueued), the device buffers to the
 * spares. */
static owl_status offload(owl_optimizer *opt, owl_opt_param *p)
{
    owl_context *ctx = opt->ctx;
    owl_adamw *a = p->adam;
    if (p->offloaded)
        return OWL_OK;
    if (p->new_host_m != NULL) {
        p->host_m = p->new_host_m;
        p->host_v = p->new_host_v;
        p->new_host_m = p->new_host_v = NULL;
    }
    if (p->host_m == NULL || p->host_v == NULL)
        return owl__fail(ctx, OWL_ERR_INTERNAL,
                         "offload without pinned buffers");
    const size_t b = half_moment_bytes(a);
    if (opt->num_spares + 2 > opt->cap_spares)
        return owl__fail(ctx, OWL_ERR_INTERNAL,
                         "spare moment buffers: %" PRIu64 " of %" PRIu64
                         " slots in use",
                         opt->num_spares, opt->cap_spares);
    void *stream = owl__cuda_stream(ctx);
    owl_status s = copy_status(
        ctx, owl__k_opt_copy_to_host(stream, p->host_m, a->m, b),
        "offloading the first moment");
    if (s == OWL_OK)
        s = copy_status(ctx,
                        owl__k_opt_copy_to_host(stream, p->host_v, a->v, b),
                        "offloading the second moment");
    if (s != OWL_OK)
        return s; /* the moments stay on the device */
    spare_put(opt, a->m, b);
    spare_put(opt, a->v, b);
    a->m = a->v = NULL;
    p->offloaded = true;
    return OWL_OK;
}

/* Device buffers (staged, or spares) and the copies back, enqueued. */
static owl_status bring_back(owl_optimizer *opt, owl_opt_param *p)
{
    owl_context *ctx = opt->ctx;
    owl_adamw *a = p->adam;
    const size_t b = half_moment_bytes(a);
    void *m = p->new_dev_m != NULL ? p->new_dev_m : spare_take(opt, b);
    p->new_dev_m = NULL;
    void *v = p->new_dev_v != NULL ? p->new_dev_v : spare_take(opt, b);
    p->new_dev_v = NULL;
    if (m == NULL || v == NULL) {
        /* staging planned one for each: cannot happen */
        owl__cuda_free(ctx, m);
        owl__cuda_free(ctx, v);
        return owl__fail(ctx, OWL_ERR_INTERNAL,
                         "no device buffer for returning moments");
    }
    a->m = m;
    a->v = v;
    p->offloaded = false;
    void *stream = owl__cuda_stream(ctx);
    owl_status s = copy_status(
        ctx, owl__k_opt_copy_to_device(stream, a->m, p->host_m, b),
        "restoring the first moment");
    if (s == OWL_OK)
        s = copy_status(ctx,
                        owl__k_opt_copy_to_device(stream, a->v, p->host_v, b),
                        "restoring the second moment");
    return s;
}
#endif

/* Everything this step's commit needs that can fail: new state for
 * parameters without any; on CUDA with OFFLOAD, pinned and device room for
 * moments leaving and coming back. *fresh says whether any state was
 * created. */
static owl_status stage(owl_optimizer *opt, bool *fresh)
{
    owl_status s = OWL_OK;
    *fresh = false;
    for (uint64_t i = 0; i < opt->num_params && s == OWL_OK; i++) {
        owl_opt_param *p = &opt->params[i];
        if (!is_updated(opt, p) || p->adam != NULL)
            continue;
        s = owl__optimizer_new_state(opt, p, &p->new_adam, &p->new_proj);
        *fresh = true;
    }
#ifdef OWL_HAVE_CUDA
    if (s == OWL_OK && on_cuda(opt) &&
        opt->opts.frozen_policy == OWL_FROZEN_OFFLOAD)
        s = stage_offload(opt);
#endif
    if (s != OWL_OK)
        owl__optimizer_drop_staging(opt);
    return s;
}

/* A parameter whose layer has just frozen. */
static owl_status freeze(owl_optimizer *opt, owl_opt_param *p)
{
    p->parked = true;
    if (p->adam == NULL)
        return OWL_OK;
    switch (opt->opts.frozen_policy) {
    case OWL_FROZEN_FREE:
        /* on CUDA, cudaFree synchronizes the device */
        owl_adamw_free(p->adam);
        owl_galore_free(p->proj);
        p->adam = NULL;
        p->proj = NULL;
        return OWL_OK;
    case OWL_FROZEN_OFFLOAD:
#ifdef OWL_HAVE_CUDA
        if (on_cuda(opt))
            return offload(opt, p);
#endif
        return OWL_OK; /* CPU: the moments already live in host memory */
    default:
        return OWL_OK; /* KEEP, and RESET (zeroed on re-activation) */
    }
}

/* A parameter about to be updated: installs staged state, or applies the
 * policy's re-activation work to state that sat out a frozen period. */
static owl_status activate(owl_optimizer *opt, owl_opt_param *p)
{
    if (p->new_adam != NULL) {
        p->adam = p->new_adam;
        p->proj = p->new_proj;
        p->new_adam = NULL;
        p->new_proj = NULL;
        p->parked = false;
        return OWL_OK;
    }
    owl_status s = OWL_OK;
#ifdef OWL_HAVE_CUDA
    /* Offloaded state is brought back even when not parked (a loaded
     * state may say so). */
    if (p->offloaded)
        s = bring_back(opt, p);
#endif
    if (!p->parked || s != OWL_OK)
        return s;
    if (opt->opts.frozen_policy == OWL_FROZEN_RESET)
        s = owl_adamw_reset(p->adam);
    if (s == OWL_OK && opt->opts.refresh_on_activation && p->proj != NULL)
        s = owl_galore_invalidate(p->proj);
    if (s == OWL_OK)
        p->parked = false;
    return s;
}

/* ------------------------------------------------------------------ */
/* The step                                                            */
/* ------------------------------------------------------------------ */

/* Every updated parameter has a gradient bound. */
static owl_status check_grads_bound(owl_optimizer *opt)
{
    for (uint64_t i = 0; i < opt->num_params; i++) {
        const owl_opt_param *p = &opt->params[i];
        if (is_updated(opt, p) && !p->has_grad) {
            if (p->layer == OWL_LAYER_ALWAYS)
                return owl__fail(opt->ctx, OWL_ERR_STATE,
                                 "parameter %" PRIu64 " (OWL_LAYER_ALWAYS) "
                                 "has no gradient bound; pass it to "
                                 "add_param or set_grad",
                                 i);
            return owl__fail(opt->ctx, OWL_ERR_STATE,
                             "parameter %" PRIu64 " (layer %" PRIu64
                             ", active at step %" PRIu64 ") has no gradient "
                             "bound; pass it to add_param or set_grad",
                             i, p->layer, opt->step);
        }
    }
    return OWL_OK;
}

/* The factor clipping scales the gradients by: max_grad_norm / (norm +
 * 1e-6) when that is below 1 (torch's clip_grad_norm_), else 1. */
static double clip_coef(const owl_optimizer *opt, double norm)
{
    if (!(opt->opts.max_grad_norm > 0))
        return 1.0;
    const double coef = opt->opts.max_grad_norm / (norm + CLIP_EPS);
    return coef < 1.0 ? coef : 1.0;
}

/* The global L2 norm over the updated parameters' gradients, f64. A NaN or
 * Inf anywhere makes it non-finite (squares of finite f32 values cannot
 * overflow f64), which is how the step finds them; *bad names the first
 * such parameter. *largest: the largest parameter's sum of squares. */
static double global_norm(owl_optimizer *opt, uint64_t *bad, double *largest,
                          uint64_t *largest_at)
{
    double total = 0;
    *bad = UINT64_MAX;
    *largest = 0;
    *largest_at = 0;
    for (uint64_t i = 0; i < opt->num_params; i++) {
        const owl_opt_param *p = &opt->params[i];
        if (!is_updated(opt, p))
            continue;
        double s = grad_sumsq(opt, &p->grad);
        if (!isfinite(s) && *bad == UINT64_MAX)
            *bad = i;
        if (s > *largest) {
            *largest = s;
            *largest_at = i;
        }
        total += s;
    }
    return sqrt(total);
}

/* Whether every updated gradient, once clipped, is one AdamW takes: each
 * entry below OWL_STEP_LIMIT (internal.h), else a parameter's update would
 * refuse it halfway through the step. A parameter's entries are at most
 * its norm, so the step is refused before anything changes when a clipped
 * norm reaches half the limit (the margin covers the f32 rounding of the
 * clipping scale); gradients of trained models are many orders below. */
static bool norms_in_range(const owl_optimizer *opt, double norm,
                           double largest)
{
    return sqrt(largest) * clip_coef(opt, norm) < OWL_STEP_LIMIT / 2;
}

static void clip(owl_optimizer *opt, double norm)
{
    const double coef = clip_coef(opt, norm);
    if (!(coef < 1.0))
        return; /* torch multiplies by the clamped 1.0: no change */
    for (uint64_t i = 0; i < opt->num_params; i++) {
        const owl_opt_param *p = &opt->params[i];
        if (!is_updated(opt, p))
            continue;
        grad_job job = {.g = &p->grad, .coef = (float)coef};
        owl__parallel_for(opt->ctx, p->grad.rows, row_grain(p->grad.cols),
                          scale_range, &job);
    }
}

static owl_status update(owl_opt_param *p, double lr)
{
    if (p->proj != NULL)
        return owl_adamw_lowrank(p->adam, p->proj, &p->weight, &p->grad, lr);
    return owl_adamw_full(p->adam, &p->weight, &p->grad, lr);
}

/* The policy's transitions (freezing first, so a returning layer can take
 * the buffers a leaving one released), then every updated parameter's
 * activation work and update. */
static owl_status transitions_and_updates(owl_optimizer *opt, double lr)
{
    owl_status s = OWL_OK;
    for (uint64_t i = 0; i < opt->num_params && s == OWL_OK; i++) {
        owl_opt_param *p = &opt->params[i];
        if (freezing(opt, p))
            s = freeze(opt, p);
    }
    for (uint64_t i = 0; i < opt->num_params && s == OWL_OK; i++) {
        owl_opt_param *p = &opt->params[i];
        if (!is_updated(opt, p))
            continue;
        s = activate(opt, p);
        if (s == OWL_OK)
            s = update(p, lr);
    }
    return s;
}

#ifdef OWL_HAVE_CUDA
/* The CUDA gradient pass, enqueued inside the step's guard: every updated
 * gradient read once (NaN/Inf into the context's flag, squares into its
 * partials), the norm and clipping factor formed on the device, and with
 * clipping on each gradient scaled in place -- by kernels that do nothing
 * when the flag is set. */
static owl_status cuda_grad_pass(owl_optimizer *opt)
{
    owl_context *ctx = opt->ctx;
    void *stream = owl__cuda_stream(ctx);
    int32_t *flag = owl__cuda_flag(ctx);
    uint64_t count = 0;
    int e = 0;
    for (uint64_t i = 0; i < opt->num_params && e == 0; i++) {
        const owl_opt_param *p = &opt->params[i];
        if (!is_updated(opt, p))
            continue;
        const owl_tensor *g = &p->grad;
        e = owl__k_opt_grad_sumsq(stream, g->data, g->dtype, g->rows,
                                  g->cols, g->row_stride,
                                  opt->dev_partials +
                                      count * OWL_K_OPT_PARTIALS,
                                  flag);
        count++;
    }
    if (e != 0)
        return owl__cuda_fail(ctx, e, "gradient norm kernel");
    e = owl__k_opt_grad_norm(stream, opt->dev_partials, count,
                             opt->opts.max_grad_norm, flag, opt->dev_stats);
    if (e != 0)
        return owl__cuda_fail(ctx, e, "gradient norm reduction");
    if (!(opt->opts.max_grad_norm > 0))
        return OWL_OK;
    for (uint64_t i = 0; i < opt->num_params && e == 0; i++) {
        const owl_opt_param *p = &opt->params[i];
        if (!is_updated(opt, p))
            continue;
        const owl_tensor *g = &p->grad;
        e = owl__k_opt_grad_scale(stream, ctx->cuda->sm_count, g->data,
                                  g->dtype, g->rows, g->cols, g->row_stride,
                                  opt->dev_stats, flag);
    }
    return e == 0 ? OWL_OK : owl__cuda_fail(ctx, e, "gradient clipping kernel");
}

/* The CUDA commit: one non-finite guard over the whole step, so a NaN/Inf
 * in any updated gradient skips every update of the step on the device
 * (and counts one skip); nothing here waits for the device unless staging
 * created state or released spares. */
static owl_status cuda_commit(owl_optimizer *opt, double lr, bool fresh)
{
    owl_context *ctx = opt->ctx;
    owl_cuda_guard g;
    owl_status s = owl__cuda_enter(ctx, &g);
    if (s != OWL_OK)
        return s;
    if ((s = owl__cuda_guard_open(ctx)) == OWL_OK) {
        s = cuda_grad_pass(opt);
        if (s == OWL_OK)
            s = transitions_and_updates(opt, lr);
        const owl_status c = owl__cuda_guard_close(ctx);
        if (s == OWL_OK)
            s = c;
    }
    if (opt->opts.frozen_policy == OWL_FROZEN_OFFLOAD)
        settle_spares(opt, fresh);
    owl__cuda_leave(&g);
    return s;
}
#endif

owl_status owl_optimizer_step(owl_optimizer *opt, double lr)
{
    if (opt == NULL)
        return OWL_ERR_NULL_POINTER;
    owl_context *ctx = opt->ctx;
    owl__clear_error(ctx);
    if (!isfinite(lr) || !(lr >= 0))
        return owl__fail(ctx, OWL_ERR_INVALID_ARGUMENT,
                         "lr is %g; it must be finite and >= 0", lr);
    if (opt->num_params == 0)
        return owl__fail(ctx, OWL_ERR_STATE,
                         "no parameter is registered; call "
                         "owl_optimizer_add_param first");
    owl_status s = current_mask(opt);
    if (s == OWL_OK)
        s = check_grads_bound(opt);
    if (s != OWL_OK)
        return s;

    /* 1. Checks that change nothing (on CUDA the gradients are checked on
     * the device, inside the commit). */
    double norm = NAN;
    if (!on_cuda(opt)) {
        uint64_t bad, largest_at;
        double largest;
        norm = global_norm(opt, &bad, &largest, &largest_at);
        if (bad == UINT64_MAX && !norms_in_range(opt, norm, largest)) {
            const owl_opt_param *p = &opt->params[largest_at];
            ctx->nonfinite_skips++;
            return owl__fail(ctx, OWL_ERR_NONFINITE,
                             "the gradient of parameter %" PRIu64
                             " (%" PRId64 "x%" PRId64 ") has norm %g, which "
                             "clipping leaves at 2^47 or more (its entries' "
                             "squares could overflow the f32 moments); step %"
                             PRIu64
                             " was skipped and nothing changed",
                             largest_at, p->grad.rows, p->grad.cols,
                             sqrt(largest), opt->step);
        }
        if (bad != UINT64_MAX) {
            const owl_opt_param *p = &opt->params[bad];
            ctx->nonfinite_skips++;
            return owl__fail(ctx, OWL_ERR_NONFINITE,
                             "the gradient of parameter %" PRIu64
                             " (%" PRId64 "x%" PRId64 ") contains NaN or "
                             "Inf; step %" PRIu64 " was skipped and nothing "
                             "changed",
                             bad, p->grad.rows, p->grad.cols, opt->step);
        }
    }
    bool fresh = false;
    if ((s = stage(opt, &fresh)) != OWL_OK)
        return s;

    /* 2. Commit. */
#ifdef OWL_HAVE_CUDA
    if (on_cuda(opt)) {
        s = cuda_commit(opt, lr, fresh);
    } else
#endif
    {
        if (opt->opts.max_grad_norm > 0)
            clip(opt, norm);
        s = transitions_and_updates(opt, lr);
    }
    /* Only left over after a failure above. */
    owl__optimizer_drop_staging(opt);
    if (s != OWL_OK)
        return s;

    /* 3. Advance. On CUDA this happens whether or not the device skips the
     * step: the host cannot know without waiting. */
    memcpy(opt->was_active, opt->mask, (size_t)opt->opts.num_layers);
    opt->last_norm = norm;
    opt->has_norm = true;
    opt->step++;
    return OWL_OK;
}

/* ------------------------------------------------------------------ */
/* Getters                                                             */
/* ------------------------------------------------------------------ */

uint64_t owl_optimizer_step_index(const owl_optimizer *opt)
{
    return opt ? opt->step : 0;
}

uint64_t owl_optimizer_num_params(const owl_optimizer *opt)
{
    return opt ? opt->num_params : 0;
}

owl_status owl_optimizer_last_grad_norm(const owl_optimizer *opt, double *norm)
{
    if (opt == NULL)
        return OWL_ERR_NULL_POINTER;
    owl__clear_error(opt->ctx);
    OWL_REQUIRE_PTR(opt->ctx, norm);
    if (!opt->has_norm)
        return owl__fail(opt->ctx, OWL_ERR_STATE,
                         "no step has been taken yet");
#ifdef OWL_HAVE_CUDA
    if (on_cuda(opt)) {
        /* The last completed step's norm: waits for the stream. */
        double v = NAN;
        owl_status s = owl__cuda_download(opt->ctx, &v, opt->dev_stats,
                                          sizeof v);
        if (s != OWL_OK)
            return s;
        if (isnan(v))
            return owl__fail(opt->ctx, OWL_ERR_STATE,
                             "every step so far was skipped for a "
                             "non-finite gradient: no norm yet");
        *norm = v;
        return OWL_OK;
    }
#endif
    *norm = opt->last_norm;
    return OWL_OK;
}

owl_status owl_optimizer_memory(const owl_optimizer *opt,
                                owl_memory_usage *usage)
{
    if (opt == NULL)
        return OWL_ERR_NULL_POINTER;
    owl_context *ctx = opt->ctx;
    owl__clear_error(ctx);
    OWL_REQUIRE_PTR(ctx, usage);
    if (!owl__struct_size_ok(usage->struct_size))
        return owl__fail(ctx, OWL_ERR_STRUCT_SIZE,
                         "usage->struct_size is %" PRIu64
                         "; fill it with owl_memory_usage_init",
                         usage->struct_size);
    owl_memory_usage u = {.struct_size = sizeof u};
    const bool cuda = on_cuda(opt);
    for (uint64_t i = 0; i < opt->num_params; i++) {
        const owl_opt_param *p = &opt->params[i];
        if (p->adam != NULL) {
            uint64_t b = owl__adamw_moment_bytes(p->adam);
            if (!cuda)
                u.host_moments += b;
            else if (!p->offloaded)
                u.device_moments += b;
        }
#ifdef OWL_HAVE_CUDA
        /* OFFLOAD's pinned copies, reserved at registration (while
         * offloaded they hold the moments) */
        if (cuda && p->host_m != NULL)
            u.host_moments += 2u * (uint64_t)param_moment_bytes(opt, p);
#endif
        if (p->proj != NULL) {
            if (cuda)
                u.device_projectors += owl__galore_bytes(p->proj);
            else
                u.host_projectors += owl__galore_bytes(p->proj);
        }
    }
    u.host_workspace = (uint64_t)ctx->scratch_bytes;
#ifdef OWL_HAVE_CUDA
    if (cuda) {
        u.device_workspace = (uint64_t)ctx->cuda->scratch_bytes;
        /* OFFLOAD's spare device buffers are moment memory too */
        for (uint64_t i = 0; i < opt->num_spares; i++)
            u.device_moments += opt->spare_bytes[i];
    }
#endif
    /* Only the fields that fit in the caller's struct. */
    uint64_t size = usage->struct_size;
#define OWL_PUT(field)                                                         \
    do {                                                                       \
        if (offsetof(owl_memory_usage, field) + sizeof usage->field <= size)   \
            usage->field = u.field;                                            \
    } while (0)
    OWL_PUT(device_moments);
    OWL_PUT(device_projectors);
    OWL_PUT(device_workspace);
    OWL_PUT(host_moments);
    OWL_PUT(host_projectors);
    OWL_PUT(host_workspace);
#undef OWL_PUT
    return OWL_OK;
}
