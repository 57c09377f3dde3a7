/* Saving and loading the optimizer's state (spec section 6).
 *
 * Payload (little-endian), inside an OWL_STATE_OPTIMIZER frame:
 *   u32 method, u32 frozen_policy, u64 num_layers, u64 num_params,
 *   f64 max_grad_norm, u32 refresh_on_activation,
 *   the projector options every low-rank parameter shares:
 *     u64 rank, u64 update_gap, f64 scale, u32 proj_type, u32 svd_method,
 *     u64 oversample, u64 power_iters, u64 seed,
 *   the AdamW options:
 *     f64 beta1, f64 beta2, f64 eps, f64 weight_decay, u32 semantics,
 *     u32 moment_dtype, u32 on_refresh, u32 rounding, u64 seed
 *                                (all of the above must equal the live ones)
 *   u64 step index, u8 has_norm, f64 last_norm,
 *   u8 has_sampler, [the sampler's payload (persist_sampler.c)],
 *   u8 was_active[num_layers]    (the layers the previous step updated)
 *   per parameter, in registration order:
 *     u64 layer, u64 rows, u64 cols, u32 weight dtype, u8 lowrank,
 *                                (must match the live registration)
 *     u8 parked, u8 allocated,
 *     [allocated: the projector's payload when lowrank, then the AdamW
 *      payload (persist_galore.c, persist_adamw.c)]
 *
 * Loading checks the whole blob first -- every field, every embedded
 * state against the live handle's, or, for state the live optimizer has
 * not allocated yet, against fresh state created in the parameter's staging
 * slots -- and only then installs it, so a failed load changes nothing and
 * frees what it staged.
 *
 * CUDA: the gradient norm lives on the device (downloaded by save,
 * uploaded by load). Under OFFLOAD a parked parameter's moments live in its
 * pinned host copies: save waits for the stream and writes them through a
 * temporary device copy (the AdamW payload writer reads device memory);
 * load makes every loaded parameter resident, installs the payloads, and
 * offloads the parked ones again, waiting for the stream before it
 * returns. Saving and loading are allowed to wait and allocate; steps are
 * not. */
#include "optimizer_internal.h"
#include "persist.h"

#ifdef OWL_HAVE_CUDA
#include "cuda_internal.h"
#endif

#include <math.h>

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ */
/* Save                                                                */
/* ------------------------------------------------------------------ */

static void put_options(const owl_optimizer *opt, owl_writer *w)
{
    const owl_galore_options *g = &opt->galore_opts;
    const owl_adamw_options *a = &opt->adamw_opts;
    owl__put_u32(w, (uint32_t)opt->opts.method);
    owl__put_u32(w, (uint32_t)opt->opts.frozen_policy);
    owl__put_u64(w, opt->opts.num_layers);
    owl__put_u64(w, opt->num_params);
    owl__put_f64(w, opt->opts.max_grad_norm);
    owl__put_u32(w, (uint32_t)opt->opts.refresh_on_activation);
    owl__put_u64(w, g->rank);
    owl__put_u64(w, g->update_gap);
    owl__put_f64(w, g->scale);
    owl__put_u32(w, (uint32_t)g->proj_type);
    owl__put_u32(w, (uint32_t)g->svd_method);
    owl__put_u64(w, g->oversample);
    owl__put_u64(w, g->power_iters);
    owl__put_u64(w, g->seed);
    owl__put_f64(w, a->beta1);
    owl__put_f64(w, a->beta2);
    owl__put_f64(w, a->eps);
    owl__put_f64(w, a->weight_decay);
    owl__put_u32(w, (uint32_t)a->semantics);
    owl__put_u32(w, (uint32_t)a->moment_dtype);
    owl__put_u32(w, (uint32_t)a->on_refresh);
    owl__put_u32(w, (uint32_t)a->rounding);
    owl__put_u64(w, a->seed);
}

#ifdef OWL_HAVE_CUDA
static bool on_cuda(const owl_optimizer *opt)
{
    return opt->ctx->backend == OWL_BACKEND_CUDA;
}
#endif

/* The last norm as the blob holds it: on CUDA downloaded (NaN there: no
 * step completed on the device yet), only when writing -- the size does
 * not depend on it. */
static owl_status saved_norm(const owl_optimizer *opt, const owl_writer *w,
                             bool *has, double *norm)
{
    *has = opt->has_norm;
    *norm = opt->has_norm ? opt->last_norm : 0.0;
#ifdef OWL_HAVE_CUDA
    if (on_cuda(opt) && opt->has_norm && w->buf != NULL) {
        double v = NAN;
        owl_status st = owl__cuda_download(opt->ctx, &v, opt->dev_stats,
                                           sizeof v);
        if (st != OWL_OK)
            return st;
        *has = !isnan(v);
        *norm = *has ? v : 0.0;
    }
#else
    (void)w;
#endif
    return OWL_OK;
}

/* A parameter's AdamW payload; offloaded moments (CUDA) are read from the
 * pinned copies through a temporary device copy of them. */
static owl_status write_adamw(const owl_optimizer *opt, const owl_opt_param *p,
                              owl_writer *w)
{
#ifdef OWL_HAVE_CUDA
    if (p->offloaded) {
        owl_context *ctx = opt->ctx;
        owl_adamw tmp = *p->adam; /* the same counters and options */
        tmp.m = tmp.v = NULL;
        if (w->buf == NULL)
            return owl__adamw_state_write(&tmp, w); /* counting only */
        const size_t b = (size_t)(owl__adamw_moment_bytes(p->adam) / 2);
        /* the step's copies into the pinned buffers must have landed */
        owl_status st = owl__cuda_synchronize(ctx);
        if (st == OWL_OK)
            st = owl__cuda_alloc(ctx, b, &tmp.m, "saving offloaded moments");
        if (st == OWL_OK)
            st = owl__cuda_alloc(ctx, b, &tmp.v, "saving offloaded moments");
        if (st == OWL_OK)
            st = owl__cuda_upload(ctx, tmp.m, p->host_m, b);
        if (st == OWL_OK)
            st = owl__cuda_upload(ctx, tmp.v, p->host_v, b);
        if (st == OWL_OK)
            st = owl__adamw_state_write(&tmp, w);
        owl__cuda_free(ctx, tmp.m);
        owl__cuda_free(ctx, tmp.v);
        return st;
    }
#else
    (void)opt;
#endif
    return owl__adamw_state_write(p->adam, w);
}

static owl_status write_state(const void *handle, owl_writer *w)
{
    const owl_optimizer *opt = handle;
    bool has_norm;
    double norm;
    owl_status st0 = saved_norm(opt, w, &has_norm, &norm);
    if (st0 != OWL_OK)
        return st0;
    put_options(opt, w);
    owl__put_u64(w, opt->step);
    owl__put_u8(w, has_norm ? 1 : 0);
    owl__put_f64(w, norm);
    owl__put_u8(w, opt->sampler != NULL ? 1 : 0);
    owl_status st = OWL_OK;
    if (opt->sampler != NULL &&
        (st = owl__sampler_state_write(opt->sampler, w)) != OWL_OK)
        return st;
    owl__put_bytes(w, opt->was_active, opt->opts.num_layers);
    for (uint64_t i = 0; i < opt->num_params; i++) {
        const owl_opt_param *p = &opt->params[i];
        owl__put_u64(w, p->layer);
        owl__put_u64(w, (uint64_t)p->weight.rows);
        owl__put_u64(w, (uint64_t)p->weight.cols);
        owl__put_u32(w, (uint32_t)p->weight.dtype);
        owl__put_u8(w, p->lowrank ? 1 : 0);
        owl__put_u8(w, p->parked ? 1 : 0);
        owl__put_u8(w, p->adam != NULL ? 1 : 0);
        if (p->adam == NULL)
            continue;
        if (p->proj != NULL &&
            (st = owl__galore_state_write(p->proj, w)) != OWL_OK)
            return st;
        if ((st = write_adamw(opt, p, w)) != OWL_OK)
            return st;
    }
    return OWL_OK;
}

owl_status owl_optimizer_state_size(const owl_optimizer *opt, uint64_t *bytes)
{
    if (opt == NULL)
        return OWL_ERR_NULL_POINTER;
    owl__clear_error(opt->ctx);
    OWL_REQUIRE_PTR(opt->ctx, bytes);
    return owl__state_measure(OWL_STATE_OPTIMIZER, write_state, opt, bytes);
}

owl_status owl_optimizer_save(const owl_optimizer *opt, void *buf,
                              uint64_t capacity, uint64_t *written)
{
    if (opt == NULL)
        return OWL_ERR_NULL_POINTER;
    owl__clear_error(opt->ctx);
    OWL_REQUIRE_PTR(opt->ctx, buf);
    OWL_REQUIRE_PTR(opt->ctx, written);
    return owl__state_save(opt->ctx, OWL_STATE_OPTIMIZER, write_state, opt,
                           buf, capacity, written);
}

owl_status owl_optimizer_save_file(const owl_optimizer *opt, const char *path)
{
    if (opt == NULL)
        return OWL_ERR_NULL_POINTER;
    owl__clear_error(opt->ctx);
    OWL_REQUIRE_PTR(opt->ctx, path);
    return owl__state_save_file(opt->ctx, OWL_STATE_OPTIMIZER, write_state,
                                opt, path);
}

/* ------------------------------------------------------------------ */
/* Load                                                                */
/* ------------------------------------------------------------------ */

/* The saved options against the live ones: a blob of another
 * configuration is a mismatch. Each field is read and compared as it
 * comes, so the message names the first that differs. */
typedef struct {
    owl_reader *r;
    owl_context *ctx;
    owl_status st;
} opt_cmp;

static void cmp_u32(opt_cmp *c, uint32_t live, const char *what)
{
    uint32_t v;
    if (c->st != OWL_OK)
        return;
    if ((c->st = owl__get_u32(c->r, &v, what)) != OWL_OK)
        return;
    if (v != live)
        c->st = owl__fail(c->ctx, OWL_ERR_MISMATCH,
                          "the optimizer state has %s %" PRIu32
                          "; this optimizer has %" PRIu32,
                          what, v, live);
}

static void cmp_u64(opt_cmp *c, uint64_t live, const char *what)
{
    uint64_t v;
    if (c->st != OWL_OK)
        return;
    if ((c->st = owl__get_u64(c->r, &v, what)) != OWL_OK)
        return;
    if (v != live)
        c->st = owl__fail(c->ctx, OWL_ERR_MISMATCH,
                          "the optimizer state has %s %" PRIu64
                          "; this optimizer has %" PRIu64,
                          what, v, live);
}

static void cmp_f64(opt_cmp *c, double live, const char *what)
{
    double v;
    if (c->st != OWL_OK)
        return;
    if ((c->st = owl__get_f64(c->r, &v, what)) != OWL_OK)
        return;
    /* bitwise: options are copied, never computed */
    if (memcmp(&v, &live, sizeof v) != 0)
        c->st = owl__fail(c->ctx, OWL_ERR_MISMATCH,
                          "the optimizer state has %s %.17g; this optimizer "
                          "has %.17g",
                          what, v, live);
}

static owl_status check_options(owl_optimizer *opt, owl_reader *r)
{
    const owl_galore_options *g = &opt->galore_opts;
    const owl_adamw_options *a = &opt->adamw_opts;
    opt_cmp c = {r, opt->ctx, OWL_OK};
    cmp_u32(&c, (uint32_t)opt->opts.method, "method");
    cmp_u32(&c, (uint32_t)opt->opts.frozen_policy, "frozen_policy");
    cmp_u64(&c, opt->opts.num_layers, "num_layers");
    cmp_u64(&c, opt->num_params, "a parameter count of");
    cmp_f64(&c, opt->opts.max_grad_norm, "max_grad_norm");
    cmp_u32(&c, (uint32_t)opt->opts.refresh_on_activation,
            "refresh_on_activation");
    cmp_u64(&c, g->rank, "galore rank");
    cmp_u64(&c, g->update_gap, "galore update_gap");
    cmp_f64(&c, g->scale, "galore scale");
    cmp_u32(&c, (uint32_t)g->proj_type, "galore proj_type");
    cmp_u32(&c, (uint32_t)g->svd_method, "galore svd_method");
    cmp_u64(&c, g->oversample, "galore oversample");
    cmp_u64(&c, g->power_iters, "galore power_iters");
    cmp_u64(&c, g->seed, "galore seed");
    cmp_f64(&c, a->beta1, "adamw beta1");
    cmp_f64(&c, a->beta2, "adamw beta2");
    cmp_f64(&c, a->eps, "adamw eps");
    cmp_f64(&c, a->weight_decay, "adamw weight_decay");
    cmp_u32(&c, (uint32_t)a->semantics, "adamw semantics");
    cmp_u32(&c, (uint32_t)a->moment_dtype, "adamw moment_dtype");
    cmp_u32(&c, (uint32_t)a->on_refresh, "adamw on_refresh");
    cmp_u32(&c, (uint32_t)a->rounding, "adamw rounding");
    cmp_u64(&c, a->seed, "adamw seed");
    return c.st;
}

/* What the check phase read, for the apply phase. */
typedef struct {
    uint64_t step;
    bool has_norm;
    double norm;
} saved_scalars;

/* Whether a loaded parameter's moments belong in its pinned copies: OFFLOAD
 * on CUDA keeps a parked parameter's state there (as its freezing put it
 * there). */
#ifdef OWL_HAVE_CUDA
static bool lands_offloaded(const owl_optimizer *opt, bool parked)
{
    return on_cuda(opt) && parked &&
           opt->opts.frozen_policy == OWL_FROZEN_OFFLOAD;
}
#endif

/* What the apply phase needs for a loaded (allocated) parameter's
 * residency: device buffers when its moments are offloaded now (the
 * payload is installed on the device), pinned buffers when they land
 * offloaded and it has none. */
static owl_status stage_residency(owl_optimizer *opt, owl_opt_param *p,
                                  bool parked)
{
#ifdef OWL_HAVE_CUDA
    owl_context *ctx = opt->ctx;
    if (p->adam == NULL && !lands_offloaded(opt, parked))
        return OWL_OK;
    const owl_adamw *a = p->adam != NULL ? p->adam : p->new_adam;
    const size_t b = (size_t)(owl__adamw_moment_bytes(a) / 2);
    owl_status st = OWL_OK;
    if (p->offloaded) {
        st = owl__cuda_alloc(ctx, b, &p->new_dev_m, "first moment");
        if (st == OWL_OK)
            st = owl__cuda_alloc(ctx, b, &p->new_dev_v, "second moment");
    }
    if (st == OWL_OK && lands_offloaded(opt, parked) && p->host_m == NULL) {
        st = owl__cuda_host_alloc(ctx, b, &p->new_host_m,
                                  "offloaded first moment");
        if (st == OWL_OK)
            st = owl__cuda_host_alloc(ctx, b, &p->new_host_v,
                                      "offloaded second moment");
    }
    return st;
#else
    (void)opt;
    (void)p;
    (void)parked;
    return OWL_OK;
#endif
}

static owl_status check_param(owl_optimizer *opt, uint64_t i, owl_reader *r)
{
    owl_context *ctx = opt->ctx;
    owl_opt_param *p = &opt->params[i];
    uint64_t layer, rows, cols;
    uint32_t dtype;
    bool lowrank, parked, allocated;
    owl_status st;
    if ((st = owl__get_u64(r, &layer, "parameter layer")) != OWL_OK ||
        (st = owl__get_u64(r, &rows, "parameter rows")) != OWL_OK ||
        (st = owl__get_u64(r, &cols, "parameter cols")) != OWL_OK ||
        (st = owl__get_u32(r, &dtype, "parameter dtype")) != OWL_OK ||
        (st = owl__get_bool(r, &lowrank, "parameter lowrank")) != OWL_OK)
        return st;
    if (layer != p->layer || rows != (uint64_t)p->weight.rows ||
        cols != (uint64_t)p->weight.cols ||
        dtype != (uint32_t)p->weight.dtype || lowrank != p->lowrank)
        return owl__fail(ctx, OWL_ERR_MISMATCH,
                         "the optimizer state's parameter %" PRIu64
                         " is a %" PRIu64 "x%" PRIu64 " %s %s weight of "
                         "layer %" PRId64 "; this optimizer's is a %" PRId64
                         "x%" PRId64 " %s %s weight of layer %" PRId64,
                         i, rows, cols, owl__dtype_name((owl_dtype)dtype),
                         lowrank ? "low-rank" : "full-rank",
                         layer == OWL_LAYER_ALWAYS ? -1 : (int64_t)layer,
                         p->weight.rows, p->weight.cols,
                         owl__dtype_name(p->weight.dtype),
                         p->lowrank ? "low-rank" : "full-rank",
                         p->layer == OWL_LAYER_ALWAYS ? -1
                                                      : (int64_t)p->layer);
    if ((st = owl__get_bool(r, &parked, "parameter parked")) != OWL_OK ||
        (st = owl__get_bool(r, &allocated, "parameter allocated")) != OWL_OK)
        return st;
    if (!allocated)
        return OWL_OK;
    const owl_adamw *adam = p->adam;
    const owl_galore *proj = p->proj;
    if (adam == NULL) {
        /* Not allocated here yet: check against fresh state, kept staged
         * for the apply phase (freed if anything fails). */
        st = owl__optimizer_new_state(opt, p, &p->new_adam, &p->new_proj);
        if (st != OWL_OK)
            return st;
        adam = p->new_adam;
        proj = p->new_proj;
    }
    if (proj != NULL && (st = owl__galore_state_check(proj, r)) != OWL_OK)
        return st;
    if ((st = owl__adamw_state_check(adam, r)) != OWL_OK)
        return st;
    return stage_residency(opt, p, parked);
}

static owl_status check_state(owl_optimizer *opt, owl_reader *r,
                              saved_scalars *sv)
{
    owl_context *ctx = opt->ctx;
    owl_status st = check_options(opt, r);
    uint8_t b;
    if (st == OWL_OK)
        st = owl__get_u64(r, &sv->step, "step index");
    if (st == OWL_OK)
        st = owl__get_bool(r, &sv->has_norm, "has_norm");
    if (st == OWL_OK)
        st = owl__get_f64(r, &sv->norm, "last gradient norm");
    if (st == OWL_OK)
        st = owl__get_u8(r, &b, "has_sampler");
    if (st != OWL_OK)
        return st;
    /* A norm is a finite f64 >= 0 (squares of finite values); without one
     * the writer puts +0.0, the only canonical value. */
    const uint64_t zero_bits = 0;
    if (sv->has_norm ? !(isfinite(sv->norm) && sv->norm >= 0)
                     : memcmp(&sv->norm, &zero_bits, sizeof sv->norm) != 0)
        return owl__fail(ctx, OWL_ERR_CORRUPT,
                         "optimizer state is corrupt: the last gradient norm "
                         "is %g with has_norm %d",
                         sv->norm, sv->has_norm ? 1 : 0);
    if (b != (opt->sampler != NULL ? 1 : 0))
        return owl__fail(ctx, OWL_ERR_CORRUPT,
                         "optimizer state is corrupt: has_sampler is %u for "
                         "method %d",
                         (unsigned)b, (int)opt->opts.method);
    if (opt->sampler != NULL &&
        (st = owl__sampler_state_check(opt->sampler, r)) != OWL_OK)
        return st;
    const uint8_t *was;
    if ((st = owl__get_bytes(r, opt->opts.num_layers, &was,
                             "was_active mask")) != OWL_OK)
        return st;
    for (uint64_t l = 0; l < opt->opts.num_layers; l++)
        if (was[l] > 1)
            return owl__fail(ctx, OWL_ERR_CORRUPT,
                             "optimizer state is corrupt: was_active[%" PRIu64
                             "] is %u; expected 0 or 1",
                             l, (unsigned)was[l]);
    for (uint64_t i = 0; i < opt->num_params; i++)
        if ((st = check_param(opt, i, r)) != OWL_OK)
            return st;
    return owl__reader_expect_end(r, "optimizer");
}

#ifdef OWL_HAVE_CUDA
/* Before a load installs anything on CUDA: every copy and kernel that uses
 * the pinned copies or the spare buffers has finished, and the spares are
 * released (a load may wait). */
static owl_status settle_for_load(owl_optimizer *opt)
{
    owl_status st = owl__cuda_synchronize(opt->ctx);
    if (st != OWL_OK)
        return st;
    for (uint64_t i = 0; i < opt->num_spares; i++)
        owl__cuda_free(opt->ctx, opt->spare_ptr[i]);
    opt->num_spares = 0;
    return OWL_OK;
}

/* A loaded parameter that lands offloaded: its just-installed device
 * moments go to the pinned copies (waiting), and the device buffers are
 * released. */
static owl_status offload_loaded(owl_optimizer *opt, owl_opt_param *p)
{
    owl_context *ctx = opt->ctx;
    owl_adamw *a = p->adam;
    if (p->new_host_m != NULL) {
        p->host_m = p->new_host_m;
        p->host_v = p->new_host_v;
        p->new_host_m = p->new_host_v = NULL;
    }
    const size_t b = (size_t)(owl__adamw_moment_bytes(a) / 2);
    owl_status st = owl__cuda_download(ctx, p->host_m, a->m, b);
    if (st == OWL_OK)
        st = owl__cuda_download(ctx, p->host_v, a->v, b);
    if (st != OWL_OK)
        return st; /* still resident: consistent, merely not offloaded */
    owl__cuda_free(ctx, a->m);
    owl__cuda_free(ctx, a->v);
    a->m = a->v = NULL;
    p->offloaded = true;
    return OWL_OK;
}
#endif

/* Installs a blob that check_state accepted; on the CPU backend this
 * cannot fail. */
static owl_status apply_state(owl_optimizer *opt, owl_reader *r,
                              const saved_scalars *sv)
{
    /* The options were compared already; step over them again. */
    saved_scalars skip;
    owl_status st = check_options(opt, r);
    uint8_t b;
    (void)owl__get_u64(r, &skip.step, "step index");
    (void)owl__get_bool(r, &skip.has_norm, "has_norm");
    (void)owl__get_f64(r, &skip.norm, "last gradient norm");
    (void)owl__get_u8(r, &b, "has_sampler");
    if (st == OWL_OK && opt->sampler != NULL)
        st = owl__sampler_state_apply(opt->sampler, r);
    const uint8_t *was = NULL;
    if (st == OWL_OK)
        st = owl__get_bytes(r, opt->opts.num_layers, &was, "was_active mask");
#ifdef OWL_HAVE_CUDA
    if (st == OWL_OK && on_cuda(opt))
        st = settle_for_load(opt);
#endif
    if (st != OWL_OK)
        return st;
    memcpy(opt->was_active, was, (size_t)opt->opts.num_layers);
    for (uint64_t i = 0; i < opt->num_params && st == OWL_OK; i++) {
        owl_opt_param *p = &opt->params[i];
        uint64_t u64;
        uint32_t u32;
        bool lowrank, parked, allocated;
        (void)owl__get_u64(r, &u64, "parameter layer");
        (void)owl__get_u64(r, &u64, "parameter rows");
        (void)owl__get_u64(r, &u64, "parameter cols");
        (void)owl__get_u32(r, &u32, "parameter dtype");
        (void)owl__get_bool(r, &lowrank, "parameter lowrank");
        (void)owl__get_bool(r, &parked, "parameter parked");
        (void)owl__get_bool(r, &allocated, "parameter allocated");
        p->parked = parked;
        if (!allocated) {
            /* the saved run had no state here (not yet active, or FREE);
             * OFFLOAD's pinned copies stay reserved (registration made
             * them, and no step may) */
            owl_adamw_free(p->adam);
            owl_galore_free(p->proj);
            p->adam = NULL;
            p->proj = NULL;
            p->offloaded = false;
            continue;
        }
        if (p->adam == NULL) {
            p->adam = p->new_adam;
            p->proj = p->new_proj;
            p->new_adam = NULL;
            p->new_proj = NULL;
        }
#ifdef OWL_HAVE_CUDA
        if (p->offloaded) {
            /* resident for the payload (device buffers staged) */
            p->adam->m = p->new_dev_m;
            p->adam->v = p->new_dev_v;
            p->new_dev_m = p->new_dev_v = NULL;
            p->offloaded = false;
        }
#endif
        if (p->proj != NULL)
            st = owl__galore_state_apply(p->proj, r);
        if (st == OWL_OK)
            st = owl__adamw_state_apply(p->adam, r);
#ifdef OWL_HAVE_CUDA
        if (st == OWL_OK && lands_offloaded(opt, parked))
            st = offload_loaded(opt, p);
#endif
    }
#ifdef OWL_HAVE_CUDA
    if (st == OWL_OK && on_cuda(opt)) {
        const double norm = sv->has_norm ? sv->norm : NAN;
        st = owl__cuda_upload(opt->ctx, opt->dev_stats, &norm, sizeof norm);
    }
#endif
    opt->step = sv->step;
    opt->has_norm = sv->has_norm;
    opt->last_norm = sv->has_norm ? sv->norm : 0.0;
    opt->mask_valid = false;
    return st;
}

owl_status owl_optimizer_load(owl_optimizer *opt, const void *buf,
                              uint64_t size)
{
    if (opt == NULL)
        return OWL_ERR_NULL_POINTER;
    owl_context *ctx = opt->ctx;
    owl__clear_error(ctx);
    OWL_REQUIRE_PTR(ctx, buf);
    owl_reader r;
    owl_status st = owl__frame_open(ctx, buf, size, OWL_STATE_OPTIMIZER, &r);
    if (st != OWL_OK)
        return st;
    const owl_reader start = r;
    saved_scalars sv;
    st = check_state(opt, &r, &sv);
    if (st != OWL_OK) {
        owl__optimizer_drop_staging(opt);
        return st;
    }
    r = start;
    st = apply_state(opt, &r, &sv);
    /* Empty unless apply failed (CUDA only). */
    owl__optimizer_drop_staging(opt);
    return st;
}

/* The largest blob this optimizer can have written: every parameter
 * allocated, each projector basis bounded by its weight's size (r <=
 * min(m, n)), f32 moments bounded by the full shape. It bounds what a
 * load reads from a file. */
static uint64_t max_state_bytes(const owl_optimizer *opt)
{
    uint64_t total = 4096 + 16 * opt->opts.num_layers;
    for (uint64_t i = 0; i < opt->num_params; i++) {
        const owl_opt_param *p = &opt->params[i];
        uint64_t mn = (uint64_t)p->weight.rows * (uint64_t)p->weight.cols;
        total += 1024 + 12 * mn;
    }
    return total;
}

owl_status owl_optimizer_load_file(owl_optimizer *opt, const char *path)
{
    if (opt == NULL)
        return OWL_ERR_NULL_POINTER;
    owl_context *ctx = opt->ctx;
    owl__clear_error(ctx);
    OWL_REQUIRE_PTR(ctx, path);
    void *data = NULL;
    uint64_t size = 0;
    owl_status st = owl__state_read_file(ctx, path, OWL_STATE_OPTIMIZER,
                                         max_state_bytes(opt), &data, &size);
    if (st != OWL_OK)
        return st;
    st = owl_optimizer_load(opt, data, size);
    free(data);
    return st;
}
