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
 * frees what it staged. */
#include "optimizer_internal.h"
#include "persist.h"

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

static owl_status write_state(const void *handle, owl_writer *w)
{
    const owl_optimizer *opt = handle;
    put_options(opt, w);
    owl__put_u64(w, opt->step);
    owl__put_u8(w, opt->has_norm ? 1 : 0);
    owl__put_f64(w, opt->has_norm ? opt->last_norm : 0.0);
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
        if ((st = owl__adamw_state_write(p->adam, w)) != OWL_OK)
            return st;
    }
    return OWL_OK;
}

/* Moments parked in host memory (OFFLOAD on CUDA) are not where the AdamW
 * payload writer reads them. */
static owl_status check_saveable(const owl_optimizer *opt)
{
    for (uint64_t i = 0; i < opt->num_params; i++)
        if (opt->params[i].offloaded)
            return owl__fail(opt->ctx, OWL_ERR_UNSUPPORTED,
                             "parameter %" PRIu64 "'s moments are offloaded "
                             "to host memory; saving them is not supported "
                             "yet (save while its layer is active, or use "
                             "KEEP)",
                             i);
    return OWL_OK;
}

owl_status owl_optimizer_state_size(const owl_optimizer *opt, uint64_t *bytes)
{
    if (opt == NULL)
        return OWL_ERR_NULL_POINTER;
    owl__clear_error(opt->ctx);
    OWL_REQUIRE_PTR(opt->ctx, bytes);
    owl_status st = check_saveable(opt);
    if (st != OWL_OK)
        return st;
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
    owl_status st = check_saveable(opt);
    if (st != OWL_OK)
        return st;
    return owl__state_save(opt->ctx, OWL_STATE_OPTIMIZER, write_state, opt,
                           buf, capacity, written);
}

owl_status owl_optimizer_save_file(const owl_optimizer *opt, const char *path)
{
    if (opt == NULL)
        return OWL_ERR_NULL_POINTER;
    owl__clear_error(opt->ctx);
    OWL_REQUIRE_PTR(opt->ctx, path);
    owl_status st = check_saveable(opt);
    if (st != OWL_OK)
        return st;
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
    if (p->offloaded)
        return owl__fail(ctx, OWL_ERR_UNSUPPORTED,
                         "parameter %" PRIu64 "'s moments are offloaded to "
                         "host memory; loading over them is not supported "
                         "yet",
                         i);
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
    return owl__adamw_state_check(adam, r);
}

static void drop_load_staging(owl_optimizer *opt)
{
    for (uint64_t i = 0; i < opt->num_params; i++) {
        owl_opt_param *p = &opt->params[i];
        owl_adamw_free(p->new_adam);
        owl_galore_free(p->new_proj);
        p->new_adam = NULL;
        p->new_proj = NULL;
    }
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
            /* the saved run had no state here (not yet active, or FREE) */
            owl_adamw_free(p->adam);
            owl_galore_free(p->proj);
            p->adam = NULL;
            p->proj = NULL;
            continue;
        }
        if (p->adam == NULL) {
            p->adam = p->new_adam;
            p->proj = p->new_proj;
            p->new_adam = NULL;
            p->new_proj = NULL;
        }
        if (p->proj != NULL)
            st = owl__galore_state_apply(p->proj, r);
        if (st == OWL_OK)
            st = owl__adamw_state_apply(p->adam, r);
    }
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
        drop_load_staging(opt);
        return st;
    }
    r = start;
    st = apply_state(opt, &r, &sv);
    drop_load_staging(opt); /* empty unless apply failed (CUDA only) */
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
