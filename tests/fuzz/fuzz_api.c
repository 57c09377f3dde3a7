/* libFuzzer target over every public entry point that takes caller data.
 *
 * An input is a small program: each operation byte picks a call (create a
 * sampler, projector, AdamW or optimizer from fuzzed options; step, project,
 * refresh, update, register parameters, compute LOD, ESD or a memory plan;
 * save and load; free), and the bytes after it give the arguments through
 * fuzz_input.h: options structs with arbitrary fields and struct sizes,
 * tensors with arbitrary shapes, strides and dtypes over small real buffers,
 * counts near 2^64, subnormal, NaN and infinite doubles.
 *
 * Arguments never lie about memory the library cannot check: a tensor
 * whose extent fits in the address space also fits in its buffer (larger
 * ones are shrunk), an options struct is allocated with exactly
 * struct_size bytes, a mask with exactly num_layers, a save buffer with
 * exactly its capacity. So any read or write outside them is the library's
 * bug, and AddressSanitizer reports it.
 *
 * After every call (checked with abort()):
 *   - the status is a documented one (OWL_OK .. OWL_ERR_INTERNAL), and a
 *     failure through a live handle carries a message;
 *   - a descriptor the contract calls invalid (NULL data, flags != 0,
 *     a shape < 1, row_stride < cols, an extent past 2^63 bytes) was
 *     refused;
 *   - a failed call changed nothing: every buffer, every host output and
 *     the saved state of every live handle are byte for byte as before;
 *   - a successful sampler step set exactly the count it reported, gamma
 *     for SYSTEMATIC and REFERENCE, and the optimizer's mask too;
 *   - after a successful call every live handle's state saves, loads back
 *     into it, and saves again to the same bytes.
 */
#include "fuzz_api.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void die(const char *what, owl_status st)
{
    fprintf(stderr, "fuzz_api: %s (status %s = %d)\n", what,
            owl_status_name(st), (int)st);
    abort();
}

/* ---- checks after each call -------------------------------------------- */

static void check_status(owl_status st, const char *call, owl_context *ctx)
{
    if (st < OWL_OK || st > OWL_ERR_INTERNAL) {
        fprintf(stderr, "fuzz_api: %s returned undocumented status %d\n", call,
                (int)st);
        abort();
    }
    if (st == OWL_ERR_INTERNAL)
        die(call, st);
    const char *name = owl_status_name(st);
    if (name == NULL || strncmp(name, "OWL_", 4) != 0)
        die("a documented status without its name", st);
    if (st != OWL_OK && ctx != NULL && owl_context_last_error(ctx)[0] == '\0') {
        fprintf(stderr, "fuzz_api: %s failed (%s) without a message\n", call,
                name);
        abort();
    }
}

static uint64_t count_mask(const uint8_t *mask, uint64_t L)
{
    uint64_t n = 0;
    for (uint64_t l = 0; l < L; l++) {
        if (mask[l] > 1)
            die("a mask byte other than 0 or 1", OWL_OK);
        n += mask[l];
    }
    return n;
}

/* A copy of *opts as the library read them, when the create succeeded:
 * opts must be a block of struct_size bytes. */
#define EFFECTIVE(type, init, dst, given, ssize)                              \
    do {                                                                      \
        type d_;                                                              \
        init(&d_, sizeof d_);                                                 \
        effective((dst), &d_, (given), sizeof(type), (ssize));                \
    } while (0)

/* ---- one operation ---------------------------------------------------- */

typedef struct op_result {
    owl_status st;
    owl_context *ctx;  /* where the message is, NULL when none can be */
    const char *name;
    call_check cc;
    /* Host outputs that a failed call must leave alone. */
    _Alignas(16) uint8_t host[256];
    uint8_t host_before[256];
} op_result;

static owl_context *pick_ctx(fuzz_input *f) { return ctxs[fz_u8(f) % 2]; }

static void op_sampler_create(fuzz_input *f, op_result *r)
{
    const int i = fz_u8(f) % SLOTS;
    owl_sampler_options o;
    double *w = NULL;
    fuzz_sampler_options(f, &o, &w, true);
    const uint64_t ss = pick_struct_size(f, sizeof o);
    void *blk = exact_struct(f, &o, sizeof o, ss, &r->cc);
    owl_context *ctx = pick_ctx(f);
    owl_sampler *s = NULL;
    r->name = "owl_sampler_create";
    r->ctx = ctx;
    r->st = owl_sampler_create(ctx, blk, &s);
    uint64_t bytes = 0;
    if (r->st == OWL_OK && (owl_sampler_state_size(s, &bytes) != OWL_OK ||
                            bytes > LIVE_STATE_MAX)) {
        owl_sampler_free(s);
    } else if (r->st == OWL_OK) {
        owl_sampler_free(samplers[i].h);
        samplers[i].h = s;
        samplers[i].ctx = ctx;
        EFFECTIVE(owl_sampler_options, owl_sampler_options_init, &samplers[i].o,
                  &o, ss);
        samplers[i].o.weights = NULL;
    } else if (s != NULL) {
        die("a failed create returned a handle", r->st);
    }
    free(blk);
    free(w);
}

static void check_sampler_count(const owl_sampler_options *o,
                                const uint8_t *mask, uint64_t reported)
{
    const uint64_t set = count_mask(mask, o->num_layers);
    if (set != reported) {
        fprintf(stderr, "fuzz_api: sampler step reported %llu layers, set %llu\n",
                (unsigned long long)reported, (unsigned long long)set);
        abort();
    }
    if (o->law != OWL_DRAW_BERNOULLI && set != o->gamma) {
        fprintf(stderr, "fuzz_api: sampler step drew %llu layers, gamma %llu\n",
                (unsigned long long)set, (unsigned long long)o->gamma);
        abort();
    }
}

static void op_sampler_step(fuzz_input *f, op_result *r)
{
    sampler_slot *s = &samplers[fz_u8(f) % SLOTS];
    const uint64_t step = fz_size(f);
    r->name = "owl_sampler_step";
    if (s->h == NULL) {
        r->st = owl_sampler_step(NULL, step, r->host, NULL, NULL);
        if (r->st != OWL_ERR_NULL_POINTER)
            die("a NULL sampler was not refused", r->st);
        return;
    }
    r->ctx = s->ctx;
    const uint64_t L = s->o.num_layers;
    const bool null_mask = L > MAX_MASK || fz_u8(f) > 245;
    uint8_t *mask = null_mask ? NULL : malloc((size_t)L);
    uint64_t n = UINT64_MAX;
    int32_t resampled = -1;
    r->st = owl_sampler_step(s->h, step, mask, fz_bool(f) ? &n : NULL,
                             &resampled);
    if (null_mask && r->st == OWL_OK)
        die("a NULL mask was accepted", r->st);
    if (r->st == OWL_OK) {
        uint64_t n2 = 0;
        if (owl_sampler_step(s->h, step, mask, &n2, NULL) != OWL_OK)
            die("a sampler step failed the second time", OWL_OK);
        check_sampler_count(&s->o, mask, n2);
        if (n != UINT64_MAX && n != n2)
            die("a sampler step is not a pure function of the step", OWL_OK);
        if (resampled != (int32_t)(step % s->o.period == 0))
            die("resampled is wrong", OWL_OK);
    }
    free(mask);
}

static void op_sampler_probabilities(fuzz_input *f, op_result *r)
{
    sampler_slot *s = &samplers[fz_u8(f) % SLOTS];
    r->name = "owl_sampler_probabilities";
    if (s->h == NULL || s->o.num_layers > MAX_MASK)
        return;
    const size_t L = (size_t)s->o.num_layers;
    double *p = fz_bool(f) ? malloc(L * sizeof *p) : NULL;
    double *pi = fz_bool(f) ? malloc(L * sizeof *pi) : NULL;
    r->st = owl_sampler_probabilities(s->h, p, pi);
    if (r->st == OWL_OK) {
        double ps = 0, pis = 0;
        for (size_t l = 0; l < L; l++) {
            if (p && !(p[l] >= 0 && p[l] <= 1))
                die("a probability outside [0, 1]", OWL_OK);
            if (pi && !(pi[l] >= 0 && pi[l] <= 1 + 1e-9))
                die("an inclusion probability outside [0, 1]", OWL_OK);
            ps += p ? p[l] : 0;
            pis += pi ? pi[l] : 0;
        }
        const double tol = 1e-9 + 8.0 * (double)L * DBL_EPSILON;
        if (p && fabs(ps - 1.0) > tol)
            die("the probabilities do not sum to 1", OWL_OK);
        if (pi && fabs(pis - (double)s->o.gamma) > tol * (double)s->o.gamma)
            die("the inclusion probabilities do not sum to gamma", OWL_OK);
    }
    free(p);
    free(pi);
}

static void op_galore_create(fuzz_input *f, op_result *r)
{
    const int i = fz_u8(f) % SLOTS;
    owl_galore_options o;
    fuzz_galore_options(f, &o);
    const uint64_t ss = pick_struct_size(f, sizeof o);
    void *blk = exact_struct(f, &o, sizeof o, ss, &r->cc);
    owl_context *ctx = pick_ctx(f);
    owl_galore *g = NULL;
    r->name = "owl_galore_create";
    r->ctx = ctx;
    r->st = owl_galore_create(ctx, blk, &g);
    if (fuzz_trace)
        fprintf(stderr,
                "  galore %llux%llu rank %llu T %llu scale %g proj %d svd %d "
                "oversample %llu power_iters %llu seed %llu struct_size %llu\n",
                (unsigned long long)o.rows, (unsigned long long)o.cols,
                (unsigned long long)o.rank, (unsigned long long)o.update_gap,
                o.scale, (int)o.proj_type, (int)o.svd_method,
                (unsigned long long)o.oversample,
                (unsigned long long)o.power_iters, (unsigned long long)o.seed,
                (unsigned long long)ss);
    uint64_t bytes = 0;
    if (r->st == OWL_OK && (owl_galore_state_size(g, &bytes) != OWL_OK ||
                            bytes > LIVE_STATE_MAX)) {
        owl_galore_free(g);
    } else if (r->st == OWL_OK) {
        owl_galore_free(galores[i].h);
        galores[i].h = g;
        galores[i].ctx = ctx;
        EFFECTIVE(owl_galore_options, owl_galore_options_init, &galores[i].o,
                  &o, ss);
    } else if (g != NULL) {
        die("a failed create returned a handle", r->st);
    }
    free(blk);
}

static void op_galore_call(fuzz_input *f, op_result *r, int which)
{
    galore_slot *g = &galores[fz_u8(f) % SLOTS];
    owl_galore *h = fz_u8(f) > 250 ? NULL : g->h;
    const int64_t m = (int64_t)g->o.rows, n = (int64_t)g->o.cols;
    uint64_t lr = 0, lc = 0;
    if (h != NULL && owl_galore_lowrank_shape(h, &lr, &lc) != OWL_OK)
        die("lowrank_shape of a live projector failed", OWL_OK);
    owl_tensor a, b;
    switch (which) {
    case 0: {
        r->name = "owl_galore_project";
        const owl_tensor *grad = make_tensor(f, &a, m, n, &r->cc);
        owl_tensor *out = make_tensor(f, &b, (int64_t)lr, (int64_t)lc, &r->cc);
        int32_t *refreshed = fz_bool(f) ? (int32_t *)(void *)r->host : NULL;
        r->st = owl_galore_project(h, fz_size(f), grad, out, refreshed);
        break;
    }
    case 1: {
        r->name = "owl_galore_project_back";
        const owl_tensor *low = make_tensor(f, &a, (int64_t)lr, (int64_t)lc, &r->cc);
        owl_tensor *out = make_tensor(f, &b, m, n, &r->cc);
        r->st = owl_galore_project_back(h, low, out);
        break;
    }
    case 2:
        r->name = "owl_galore_refresh";
        r->st = owl_galore_refresh(h, make_tensor(f, &a, m, n, &r->cc));
        break;
    case 3:
        r->name = "owl_galore_invalidate";
        r->st = owl_galore_invalidate(h);
        break;
    default: {
        r->name = "owl_galore_get_basis";
        const bool left = h != NULL && owl_galore_is_left(h);
        const int64_t br = left ? m : (int64_t)(lr < lc ? lr : lc);
        const int64_t bc = left ? (int64_t)(lr < lc ? lr : lc) : n;
        r->st = owl_galore_get_basis(h, make_tensor(f, &a, br, bc, &r->cc));
        break;
    }
    }
    r->ctx = h ? g->ctx : NULL;
    if (h == NULL && r->st != OWL_ERR_NULL_POINTER)
        die("a NULL projector was not refused", r->st);
    (void)owl_galore_refresh_count(h);
}

static void op_adamw_create(fuzz_input *f, op_result *r)
{
    const int i = fz_u8(f) % SLOTS;
    owl_adamw_options o;
    fuzz_adamw_options(f, &o);
    const uint64_t ss = pick_struct_size(f, sizeof o);
    void *blk = exact_struct(f, &o, sizeof o, ss, &r->cc);
    /* Mostly the shape of a projector's low-rank space or a weight. */
    uint64_t rows = fz_dim(f), cols = fz_dim(f);
    galore_slot *g = &galores[fz_u8(f) % SLOTS];
    const uint8_t shape = fz_u8(f);
    if (g->h != NULL && shape < 100)
        owl_galore_lowrank_shape(g->h, &rows, &cols);
    else if (g->h != NULL && shape < 160) {
        rows = g->o.rows;
        cols = g->o.cols;
    }
    owl_context *ctx = pick_ctx(f);
    owl_adamw *a = NULL;
    r->name = "owl_adamw_create";
    r->ctx = ctx;
    r->st = owl_adamw_create(ctx, blk, rows, cols, &a);
    if (fuzz_trace)
        fprintf(stderr,
                "  adamw %llux%llu beta1 %.17g beta2 %.17g eps %g decay %g "
                "semantics %d moments %d on_refresh %d rounding %d "
                "struct_size %llu\n",
                (unsigned long long)rows, (unsigned long long)cols, o.beta1,
                o.beta2, o.eps, o.weight_decay, (int)o.semantics,
                (int)o.moment_dtype, (int)o.on_refresh, (int)o.rounding,
                (unsigned long long)ss);
    uint64_t bytes = 0;
    if (r->st == OWL_OK && (owl_adamw_state_size(a, &bytes) != OWL_OK ||
                            bytes > LIVE_STATE_MAX)) {
        owl_adamw_free(a);
    } else if (r->st == OWL_OK) {
        owl_adamw_free(adamws[i].h);
        adamws[i] = (adamw_slot){a, ctx, rows, cols};
    } else if (a != NULL) {
        die("a failed create returned a handle", r->st);
    }
    free(blk);
}

static void op_adamw_call(fuzz_input *f, op_result *r, int which)
{
    adamw_slot *a = &adamws[fz_u8(f) % SLOTS];
    owl_adamw *h = fz_u8(f) > 250 ? NULL : a->h;
    owl_tensor w, g;
    const double lr = fz_u8(f) < 200 ? 1e-3 * (1 + fz_u8(f) % 10) : fz_double(f);
    switch (which) {
    case 0: {
        r->name = "owl_adamw_full";
        owl_tensor *wt = make_tensor(f, &w, (int64_t)a->rows, (int64_t)a->cols, &r->cc);
        const owl_tensor *gt = make_tensor(f, &g, (int64_t)a->rows, (int64_t)a->cols, &r->cc);
        r->st = owl_adamw_full(h, wt, gt, lr);
        break;
    }
    case 1: {
        r->name = "owl_adamw_lowrank";
        galore_slot *p = &galores[fz_u8(f) % SLOTS];
        owl_tensor *wt = make_tensor(f, &w, (int64_t)p->o.rows, (int64_t)p->o.cols, &r->cc);
        const owl_tensor *gt = make_tensor(f, &g, (int64_t)p->o.rows, (int64_t)p->o.cols, &r->cc);
        r->st = owl_adamw_lowrank(h, p->h, wt, gt, lr);
        if (p->h == NULL && r->st == OWL_OK)
            die("a NULL projector was accepted", r->st);
        break;
    }
    case 2:
        r->name = "owl_adamw_reset";
        r->st = owl_adamw_reset(h);
        break;
    default: {
        r->name = "owl_adamw_get_moment";
        const int32_t m = fz_enum(f, 2);
        r->st = owl_adamw_get_moment(h, m,
                                     make_tensor(f, &w, (int64_t)a->rows,
                                                 (int64_t)a->cols, &r->cc));
        break;
    }
    }
    r->ctx = h ? a->ctx : NULL;
    if (h == NULL && r->st != OWL_ERR_NULL_POINTER)
        die("a NULL AdamW was not refused", r->st);
    (void)owl_adamw_step_count(h);
    (void)owl_adamw_bias_step(h);
}

static void op_optimizer_create(fuzz_input *f, op_result *r)
{
    const int i = fz_u8(f) % SLOTS;
    owl_optimizer_options o;
    owl_optimizer_options_init(&o, sizeof o);
    o.method = fz_enum(f, 5);
    o.frozen_policy = fz_enum(f, 4);
    o.num_layers = fz_bool(f) ? 1 + fz_u8(f) % 12 : fz_size(f);
    o.max_grad_norm = fz_u8(f) < 160 ? 0.0 : fz_double(f);
    o.refresh_on_activation = fz_u8(f) < 200 ? fz_bool(f) : (int32_t)fz_raw64(f);
    o.reserved = fz_u8(f) < 240 ? 0 : 1;

    owl_sampler_options so;
    double *w = NULL;
    void *sblk = NULL, *gblk = NULL, *ablk = NULL;
    uint64_t sss = 0;
    if (fz_u8(f) < 200) {
        fuzz_sampler_options(f, &so, &w, false);
        if (w != NULL && o.num_layers > MAX_WEIGHTS)
            o.num_layers = 1 + o.num_layers % MAX_WEIGHTS;
        sss = pick_struct_size(f, sizeof so);
        sblk = exact_struct(f, &so, sizeof so, sss, &r->cc);
        o.sampler = sblk;
    }
    if (fz_u8(f) < 160) {
        owl_galore_options go;
        fuzz_galore_options(f, &go);
        gblk = exact_struct(f, &go, sizeof go, pick_struct_size(f, sizeof go), &r->cc);
        o.galore = gblk;
    }
    if (fz_u8(f) < 160) {
        owl_adamw_options ao;
        fuzz_adamw_options(f, &ao);
        ablk = exact_struct(f, &ao, sizeof ao, pick_struct_size(f, sizeof ao), &r->cc);
        o.adamw = ablk;
    }
    const uint64_t ss = pick_struct_size(f, sizeof o);
    /* reserved counts only where the caller's struct reaches it. */
    if (o.reserved && size_valid(ss) &&
        ss >= offsetof(owl_optimizer_options, reserved) + sizeof o.reserved)
        mark_invalid(&r->cc, "reserved != 0");
    void *blk = exact_struct(f, &o, sizeof o, ss, &r->cc);
    owl_context *ctx = pick_ctx(f);
    owl_optimizer *h = NULL;
    r->name = "owl_optimizer_create";
    r->ctx = ctx;
    r->st = owl_optimizer_create(ctx, blk, &h);
    if (r->st == OWL_OK) {
        owl_optimizer_free(opts[i].h);
        opts[i].h = h;
        opts[i].ctx = ctx;
        EFFECTIVE(owl_optimizer_options, owl_optimizer_options_init, &opts[i].o,
                  &o, ss);
        const owl_method m = opts[i].o.method;
        opts[i].sampled = m == OWL_METHOD_OWLORE || m == OWL_METHOD_OWLORE_FULL ||
                          m == OWL_METHOD_LISA;
        if (opts[i].o.sampler != NULL)
            EFFECTIVE(owl_sampler_options, owl_sampler_options_init, &opts[i].so,
                      &so, sss);
        else
            owl_sampler_options_init(&opts[i].so, sizeof opts[i].so);
        opts[i].so.num_layers = opts[i].o.num_layers;
        opts[i].o.sampler = NULL;
        opts[i].o.galore = NULL;
        opts[i].o.adamw = NULL;
    } else if (h != NULL) {
        die("a failed create returned a handle", r->st);
    }
    free(blk);
    free(sblk);
    free(gblk);
    free(ablk);
    free(w);
}

static void op_optimizer_call(fuzz_input *f, op_result *r, int which)
{
    opt_slot *o = &opts[fz_u8(f) % SLOTS];
    owl_optimizer *h = fz_u8(f) > 250 ? NULL : o->h;
    owl_tensor w, g;
    switch (which) {
    case 0: {
        r->name = "owl_optimizer_add_param";
        const uint8_t ls = fz_u8(f);
        const uint64_t layer = ls < 150 && o->o.num_layers
                                   ? ls % o->o.num_layers
                               : ls < 220 ? OWL_LAYER_ALWAYS
                                          : fz_size(f);
        const int64_t rows = 1 + fz_u8(f) % 20, cols = 1 + fz_u8(f) % 20;
        const owl_tensor *wt = make_tensor(f, &w, rows, cols, &r->cc);
        /* A NULL grad is allowed (bound later): only a descriptor it
         * points to can be invalid. */
        call_check gc = {false, NULL};
        const owl_tensor *gt = fz_u8(f) < 30 ? NULL
                                             : make_tensor(f, &g, rows, cols, &gc);
        if (gt != NULL && gc.invalid_input)
            mark_invalid(&r->cc, gc.why);
        const int32_t lowrank = fz_u8(f) < 220 ? fz_bool(f) : (int32_t)fz_raw64(f);
        uint64_t *index = fz_bool(f) ? (uint64_t *)(void *)r->host : NULL;
        r->st = owl_optimizer_add_param(h, layer, wt, gt, lowrank, index);
        break;
    }
    case 1: {
        r->name = "owl_optimizer_set_grad";
        const uint64_t n = h ? owl_optimizer_num_params(h) : 0;
        const uint64_t idx = fz_u8(f) < 220 && n ? fz_u8(f) % n : fz_size(f);
        const int64_t rows = 1 + fz_u8(f) % 20, cols = 1 + fz_u8(f) % 20;
        r->st = owl_optimizer_set_grad(h, idx, make_tensor(f, &g, rows, cols, &r->cc));
        break;
    }
    case 2: {
        r->name = "owl_optimizer_active_layers";
        const uint64_t L = fz_u8(f) < 240 ? o->o.num_layers : fz_size(f);
        uint8_t *mask = L <= MAX_MASK && L > 0 ? malloc((size_t)L) : NULL;
        if (mask == NULL && L != 0 && L <= MAX_MASK)
            abort();
        int32_t *res = fz_bool(f) ? (int32_t *)(void *)r->host : NULL;
        r->st = owl_optimizer_active_layers(h, mask, mask ? L : 0, res);
        if (r->st == OWL_OK && h != NULL) {
            const uint64_t set = count_mask(mask, L);
            const bool exact = o->sampled && o->so.law != OWL_DRAW_BERNOULLI;
            const uint64_t gamma = o->so.gamma;
            if (!o->sampled && set != L)
                die("a method that does not sample left layers out", OWL_OK);
            if (exact && set != gamma) {
                fprintf(stderr, "fuzz_api: optimizer mask has %llu layers, "
                                "gamma %llu\n",
                        (unsigned long long)set, (unsigned long long)gamma);
                abort();
            }
        }
        free(mask);
        break;
    }
    case 3:
        r->name = "owl_optimizer_step";
        r->st = owl_optimizer_step(h, fz_u8(f) < 200 ? 1e-3 : fz_double(f));
        break;
    default: {
        r->name = "owl_optimizer_memory";
        owl_memory_usage u;
        owl_memory_usage_init(&u, sizeof u);
        const uint64_t ss = pick_struct_size(f, sizeof u);
        void *blk = exact_out_struct(f, &u, sizeof u, ss, &r->cc);
        r->st = owl_optimizer_memory(h, blk);
        free(blk);
        double norm;
        (void)owl_optimizer_last_grad_norm(h, &norm);
        (void)owl_optimizer_num_params(h);
        break;
    }
    }
    r->ctx = h ? o->ctx : NULL;
    if (h == NULL && r->st != OWL_ERR_NULL_POINTER)
        die("a NULL optimizer was not refused", r->st);
}

static void op_lod(fuzz_input *f, op_result *r, int which)
{
    owl_context *ctx = fz_u8(f) > 250 ? NULL : pick_ctx(f);
    r->ctx = ctx;
    owl_tensor ws[MAX_LOD_TENSORS], ss[MAX_LOD_TENSORS], out;
    memset(ws, 0, sizeof ws);
    memset(ss, 0, sizeof ss);
    const uint64_t want = fz_u8(f) < 220 ? 1 + fz_u8(f) % MAX_LOD_TENSORS : fz_size(f);
    /* A count past the arrays is a lie the library cannot check. */
    const uint64_t count = want > MAX_LOD_TENSORS ? (want > UINT64_MAX / 2 ? want : MAX_LOD_TENSORS)
                                                  : want;
    const bool huge = count > MAX_LOD_TENSORS;
    const uint64_t k_make = huge ? 0 : count;
    for (uint64_t k = 0; k < k_make; k++) {
        const int64_t m = 1 + fz_u8(f) % 24, n = 1 + fz_u8(f) % 24;
        owl_tensor *wt = make_tensor(f, &ws[k], m, n, &r->cc);
        owl_tensor *st = make_tensor(f, &ss[k], 1, n, &r->cc);
        if (wt == NULL || st == NULL) {
            /* An array of descriptors cannot hold a NULL: make it NULL data. */
            if (wt == NULL)
                owl_tensor_init(&ws[k], NULL, OWL_DTYPE_F32, m, n);
            if (st == NULL)
                owl_tensor_init(&ss[k], NULL, OWL_DTYPE_F32, 1, n);
        }
    }
    if (huge)
        mark_invalid(&r->cc, "a count no array can hold");
    const double M = fz_u8(f) < 200 ? 1.0 + fz_u8(f) % 14 : fz_double(f);
    const owl_tensor *wp = fz_u8(f) > 250 ? NULL : ws;
    const owl_tensor *sp = fz_u8(f) > 250 ? NULL : ss;
    if (count == 0 || wp == NULL || sp == NULL || ctx == NULL)
        mark_invalid(&r->cc, "a zero count or a NULL argument");
    if (which == 0) {
        r->name = "owl_lod_compute";
        double *ratio = fz_u8(f) > 250 ? NULL : (double *)(void *)r->host;
        if (ratio == NULL)
            mark_invalid(&r->cc, "a NULL ratio");
        r->st = owl_lod_compute(ctx, huge ? ws : wp, huge ? ss : sp, count, M, ratio);
        if (r->st == OWL_OK && !(*ratio >= 0 && *ratio <= 1))
            die("an outlier ratio outside [0, 1]", OWL_OK);
    } else {
        r->name = "owl_lod_compute_async";
        r->st = owl_lod_compute_async(ctx, huge ? ws : wp, huge ? ss : sp, count, M,
                                      make_tensor(f, &out, 1, 1, &r->cc));
    }
}

static void op_act_norm(fuzz_input *f, op_result *r)
{
    owl_context *ctx = fz_u8(f) > 250 ? NULL : pick_ctx(f);
    r->ctx = ctx;
    r->name = "owl_act_norm_accumulate";
    owl_tensor x, s;
    const int64_t t = 1 + fz_u8(f) % 32, n = 1 + fz_u8(f) % 32;
    const owl_tensor *xt = make_tensor(f, &x, t, n, &r->cc);
    owl_tensor *st = make_tensor(f, &s, 1, n, &r->cc);
    r->st = owl_act_norm_accumulate(ctx, xt, st);
    if (ctx == NULL && r->st == OWL_OK)
        die("a NULL context was accepted", r->st);
}

static void op_esd(fuzz_input *f, op_result *r, int which)
{
    owl_context *ctx = fz_u8(f) > 250 ? NULL : pick_ctx(f);
    r->ctx = ctx;
    owl_esd_result res;
    owl_esd_result_init(&res, sizeof res);
    const uint64_t ss = pick_struct_size(f, sizeof res);
    void *blk = exact_out_struct(f, &res, sizeof res, ss, &r->cc);
    const owl_xmin_method method = fz_enum(f, 3);
    if (which == 0) {
        r->name = "owl_esd_alpha_hill";
        owl_tensor w;
        const int64_t m = 1 + fz_u8(f) % 24, n = 1 + fz_u8(f) % 24;
        r->st = owl_esd_alpha_hill(ctx, make_tensor(f, &w, m, n, &r->cc), method,
                                   fz_u8(f) > 250 ? NULL : blk);
    } else {
        r->name = "owl_esd_alpha_hill_eigs";
        const uint64_t want = fz_size(f);
        const size_t cap = BUF_BYTES / sizeof(double);
        const uint64_t count = want > cap && want <= UINT64_MAX / 8 ? cap : want;
        if (count > UINT64_MAX / 8) /* no array of doubles is that long */
            mark_invalid(&r->cc, "a count no array can hold");
        double *eigs = (double *)(void *)arena[fz_u8(f) % NBUF];
        double *own = NULL;
        if (count <= 512 && fz_u8(f) > 128) {
            /* A spectrum of exactly count values, some fuzzed: NaN, Inf,
             * negative, zero. */
            own = malloc(count ? (size_t)count * sizeof *own : 1);
            if (own == NULL)
                abort();
            for (size_t i = 0; i < count; i++)
                own[i] = i < 16 ? fz_double(f) : eigs[i];
            eigs = own;
        }
        r->st = owl_esd_alpha_hill_eigs(ctx, fz_u8(f) > 250 ? NULL : eigs, count,
                                        method, fz_u8(f) > 250 ? NULL : blk);
        free(own);
    }
    free(blk);
}

static void op_memory_plan(fuzz_input *f, op_result *r)
{
    owl_context *ctx = pick_ctx(f);
    r->ctx = ctx;
    r->name = "owl_memory_plan_compute";
    owl_model_shape shape;
    owl_model_shape_init(&shape, sizeof shape);
    shape.num_layers = fz_size(f);
    shape.hidden = fz_size(f);
    shape.intermediate = fz_size(f);
    shape.heads = fz_size(f);
    shape.kv_heads = fz_size(f);
    shape.vocab = fz_size(f);
    shape.weight_dtype = pick_dtype(f);
    shape.grad_dtype = pick_dtype(f);
    shape.tied_embeddings = fz_u8(f) < 240 ? fz_bool(f) : (int32_t)fz_raw64(f);
    shape.reserved = fz_u8(f) < 240 ? 0 : 1;
    void *sblk = exact_struct(f, &shape, sizeof shape,
                              pick_struct_size(f, sizeof shape), &r->cc);
    owl_optimizer_options o;
    owl_optimizer_options_init(&o, sizeof o);
    o.method = fz_enum(f, 5);
    o.frozen_policy = fz_enum(f, 4);
    o.num_layers = shape.num_layers;
    owl_sampler_options so;
    double *w = NULL;
    void *soblk = NULL;
    if (fz_bool(f)) {
        fuzz_sampler_options(f, &so, &w, false);
        if (w != NULL && o.num_layers > MAX_WEIGHTS) {
            free(w);
            w = NULL;
            so.weights = NULL;
        }
        soblk = exact_struct(f, &so, sizeof so, pick_struct_size(f, sizeof so),
                             &r->cc);
        o.sampler = soblk;
    }
    void *oblk = exact_struct(f, &o, sizeof o, pick_struct_size(f, sizeof o), &r->cc);
    owl_memory_plan plan;
    owl_memory_plan_init(&plan, sizeof plan);
    void *pblk = exact_out_struct(f, &plan, sizeof plan,
                              pick_struct_size(f, sizeof plan), &r->cc);
    r->st = owl_memory_plan_compute(ctx, sblk, oblk, fz_u8(f) > 250 ? NULL : pblk);
    if (r->st == OWL_OK) {
        owl_memory_plan got;
        memcpy(&got, pblk, sizeof got < 8 ? 8 : sizeof got);
        const uint64_t sum = got.weights + got.gradients + got.optimizer_state +
                             got.projectors + got.workspace;
        if (got.struct_size == sizeof got && sum != got.total)
            die("a memory plan whose parts do not add up to its total", OWL_OK);
    }
    free(sblk);
    free(soblk);
    free(oblk);
    free(pblk);
    free(w);
}

/* Saving into a buffer of exactly `capacity` bytes, then loading it back. */
static void op_save_load(fuzz_input *f, op_result *r)
{
    live_handle lh[4 * SLOTS];
    const int n = live_handles(lh);
    if (n == 0)
        return;
    const live_handle *h = &lh[fz_u8(f) % n];
    r->name = "owl_*_save";
    uint64_t need = 0;
    if (h->size(h->h, &need) != OWL_OK)
        die("state_size of a live handle failed", OWL_OK);
    const uint8_t sel = fz_u8(f);
    const uint64_t capacity = sel < 128 ? need : sel < 200 ? need - 1 - sel % 8 : 0;
    const size_t real = capacity <= need ? (size_t)capacity : (size_t)need;
    uint8_t *buf = malloc(real ? real : 1);
    uint64_t written = 0;
    r->st = h->save(h->h, buf, real, &written);
    if (r->st == OWL_OK) {
        if (written != need)
            die("a save wrote another size than state_size", r->st);
        /* Truncated: must be refused, with nothing changed. */
        if (written > 0) {
            const owl_status st = h->load(h->h, buf, written - 1 - fz_u8(f) % written);
            if (st == OWL_OK)
                die("a truncated state loaded", st);
        }
    } else if (real >= need) {
        die("a save with enough room failed", r->st);
    }
    r->ctx = NULL;
    free(buf);
}

/* The file variants, into a private directory. */
static char tmpdir[64];

static void op_file(fuzz_input *f, op_result *r)
{
    sampler_slot *s = &samplers[fz_u8(f) % SLOTS];
    if (s->h == NULL)
        return;
    char path[128];
    const uint8_t sel = fz_u8(f);
    if (sel % 4 == 0)
        snprintf(path, sizeof path, "%s/no/such/dir/state", tmpdir);
    else if (sel % 4 == 1)
        snprintf(path, sizeof path, "%s", tmpdir); /* a directory */
    else
        snprintf(path, sizeof path, "%s/state%d", tmpdir, sel % 3);
    r->name = "owl_sampler_save_file/load_file";
    r->st = fz_bool(f) ? owl_sampler_save_file(s->h, path)
                       : owl_sampler_load_file(s->h, path);
    r->ctx = s->ctx;
}

static void op_options_init(fuzz_input *f, op_result *r)
{
    const uint64_t ss = fz_u8(f) < 100 ? 8 + fz_u8(f) % 200 : fz_size(f);
    const bool in_range = size_valid(ss);
    void *blk = malloc(size_in_range(ss) ? (size_t)ss : 8);
    if (blk == NULL)
        abort();
    r->name = "owl_*_options_init";
    switch (fz_u8(f) % 8) {
    case 0: r->st = owl_sampler_options_init(blk, ss); break;
    case 1: r->st = owl_galore_options_init(blk, ss); break;
    case 2: r->st = owl_adamw_options_init(blk, ss); break;
    case 3: r->st = owl_optimizer_options_init(blk, ss); break;
    case 4: r->st = owl_context_options_init(blk, ss); break;
    case 5: r->st = owl_esd_result_init(blk, ss); break;
    case 6: r->st = owl_memory_usage_init(blk, ss); break;
    default: r->st = owl_model_shape_init(blk, ss); break;
    }
    if (!in_range && r->st == OWL_OK)
        die("an options struct size outside the contract was accepted", r->st);
    r->ctx = NULL;
    free(blk);
}

static void op_context_create(fuzz_input *f, op_result *r)
{
    owl_context_options o;
    owl_context_options_init(&o, sizeof o);
    o.backend = fz_enum(f, 2);
    o.device = fz_u8(f) < 200 ? 0 : (int32_t)fz_raw64(f);
    const uint8_t t = fz_u8(f);
    /* Up to 4 workers: a thousand threads per input would only be slow. */
    o.num_threads = t < 200 ? t % 5 : t < 230 ? -1 - t % 3 : 1025 + t;
    o.reserved = fz_u8(f) < 240 ? 0 : 1;
    void *blk = exact_struct(f, &o, sizeof o, pick_struct_size(f, sizeof o), &r->cc);
    owl_context *ctx = NULL;
    r->name = "owl_context_create";
    r->st = owl_context_create(fz_u8(f) > 250 ? NULL : &ctx, blk);
    if (r->st == OWL_OK) {
        if (owl_context_num_threads(ctx) < 1 ||
            owl_context_backend(ctx) != OWL_BACKEND_CPU)
            die("a context's threads or backend are wrong", OWL_OK);
        uint64_t skips = 1;
        if (owl_context_nonfinite_skips(ctx, &skips) != OWL_OK || skips != 0)
            die("a new context has skips", OWL_OK);
        if (owl_context_synchronize(ctx) != OWL_OK)
            die("synchronize failed on the CPU", OWL_OK);
    } else if (ctx != NULL) {
        die("a failed context create returned a handle", r->st);
    }
    owl_context_free(ctx);
    free(blk);
    const owl_status any = (owl_status)fz_raw64(f);
    if (owl_status_name(any) == NULL || owl_status_string(any) == NULL)
        die("a status without a name or string", any);
    r->ctx = NULL;
}

static void op_refill(fuzz_input *f)
{
    /* Fuzzed bytes into a buffer: NaN, Inf and subnormals in the data. */
    uint8_t *b = arena[fz_u8(f) % NBUF];
    const size_t at = (size_t)(fz_u8(f) | (fz_u8(f) << 8)) * 4 % BUF_BYTES;
    const size_t len = 1 + fz_u8(f) % 64;
    for (size_t i = 0; i < len && at + i < BUF_BYTES; i++)
        b[at + i] = fz_u8(f);
}

static void op_free(fuzz_input *f)
{
    const int i = fz_u8(f) % SLOTS;
    switch (fz_u8(f) % 4) {
    case 0: owl_sampler_free(samplers[i].h); samplers[i].h = NULL; break;
    case 1: owl_galore_free(galores[i].h); galores[i].h = NULL; break;
    case 2: owl_adamw_free(adamws[i].h); adamws[i].h = NULL; break;
    default: owl_optimizer_free(opts[i].h); opts[i].h = NULL; break;
    }
}

enum { OPS = 34 };

static void run_op(uint8_t code, fuzz_input *f, op_result *r)
{
    switch (code % OPS) {
    case 0: op_sampler_create(f, r); break;
    case 1: case 2: op_sampler_step(f, r); break;
    case 3: op_sampler_probabilities(f, r); break;
    case 4: op_galore_create(f, r); break;
    case 5: case 6: op_galore_call(f, r, 0); break;
    case 7: op_galore_call(f, r, 1); break;
    case 8: op_galore_call(f, r, 2); break;
    case 9: op_galore_call(f, r, 3); break;
    case 10: op_galore_call(f, r, 4); break;
    case 11: op_adamw_create(f, r); break;
    case 12: case 13: op_adamw_call(f, r, 0); break;
    case 14: case 15: op_adamw_call(f, r, 1); break;
    case 16: op_adamw_call(f, r, 2); break;
    case 17: op_adamw_call(f, r, 3); break;
    case 18: op_optimizer_create(f, r); break;
    case 19: case 20: op_optimizer_call(f, r, 0); break;
    case 21: op_optimizer_call(f, r, 1); break;
    case 22: op_optimizer_call(f, r, 2); break;
    case 23: case 24: op_optimizer_call(f, r, 3); break;
    case 25: op_optimizer_call(f, r, 4); break;
    case 26: op_lod(f, r, fz_bool(f)); break;
    case 27: op_act_norm(f, r); break;
    case 28: op_esd(f, r, fz_bool(f)); break;
    case 29: op_memory_plan(f, r); break;
    case 30: op_save_load(f, r); break;
    case 31: op_file(f, r); break;
    case 32: op_options_init(f, r); break;
    default:
        switch (fz_u8(f) % 3) {
        case 0: op_context_create(f, r); break;
        case 1: op_refill(f); break;
        default: op_free(f); break;
        }
        break;
    }
}

static void setup(void)
{
    for (int b = 0; b < NBUF; b++) {
        arena[b] = aligned_alloc(64, BUF_BYTES);
        arena_before[b] = malloc(BUF_BYTES);
        if (arena[b] == NULL || arena_before[b] == NULL)
            abort();
    }
    for (int i = 0; i < 2; i++) {
        owl_context_options o;
        owl_context_options_init(&o, sizeof o);
        o.num_threads = i == 0 ? 1 : 3;
        owl_status st = owl_context_create(&ctxs[i], &o);
        if (st != OWL_OK)
            die("context create", st);
    }
    snprintf(tmpdir, sizeof tmpdir, "/tmp/owl-fuzz-api-%ld", (long)getpid());
    char cmd[96];
    snprintf(cmd, sizeof cmd, "mkdir -p %s", tmpdir);
    if (system(cmd) != 0)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int ready, trace;
    if (!ready) {
        setup();
        /* FUZZ_API_TRACE=1: each call, its status and message on stderr,
         * to read a reproducer. */
        trace = getenv("FUZZ_API_TRACE") != NULL;
        fuzz_trace = trace;
        ready = 1;
    }
    fuzz_input in = {data, size};
    const uint8_t fills = fz_u8(&in);
    const uint64_t seed = fz_u8(&in);
    for (int b = 0; b < NBUF; b++)
        fill_buffer(arena[b], (fills >> (2 * b)) & 3, seed + (uint64_t)b);

    for (int k = 0; k < MAX_OPS && in.n > 0; k++) {
        const uint8_t code = fz_u8(&in);
        op_result r;
        memset(&r, 0, sizeof r);
        memset(r.host, 0x5A, sizeof r.host);
        memcpy(r.host_before, r.host, sizeof r.host);
        r.st = OWL_OK;
        snapshot snap;
        snapshot_take(&snap);
        run_op(code, &in, &r);
        if (r.name == NULL) { /* an operation with nothing to call */
            snapshot_free(&snap);
            continue;
        }
        if (trace)
            fprintf(stderr, "fuzz_api: %s -> %s%s: %s\n", r.name,
                    owl_status_name(r.st),
                    r.cc.invalid_input ? " (invalid input)" : "",
                    r.ctx ? owl_context_last_error(r.ctx) : "");
        check_status(r.st, r.name, r.ctx);
        if (r.cc.invalid_input && r.st == OWL_OK) {
            fprintf(stderr, "fuzz_api: %s accepted an invalid argument: %s\n",
                    r.name, r.cc.why);
            abort();
        }
        if (r.st != OWL_OK) {
            snapshot_check_unchanged(&snap, r.name);
            if (memcmp(r.host, r.host_before, sizeof r.host) != 0) {
                fprintf(stderr, "fuzz_api: failed %s wrote an output\n", r.name);
                abort();
            }
        } else {
            check_states_load_back();
        }
        snapshot_free(&snap);
    }
    free_handles();
    return 0;
}
