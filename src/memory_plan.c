/* The memory planner: peak bytes of one training step of a LLaMa-style
 * decoder under an optimizer configuration, by category. A calculation on
 * the host that allocates nothing. Where the library itself allocates (the
 * projectors, the moments, the context scratch), the sizes follow the same
 * rules as owl_galore_create and owl_adamw_create -- the SVD workspace is
 * planned by the projector's own planner (svd.h), so the figure is the one
 * the context reserves, whatever LAPACK's block sizes are. docs/memory.md
 * describes the model of each category. */
#include "optimizer_internal.h"
#include "svd.h"

#include <math.h>
#include <string.h>

/* Same bound as the options structs: no result struct is ever this big. */

static const owl_model_shape shape_defaults = {
    .struct_size = sizeof(owl_model_shape),
    .weight_dtype = OWL_DTYPE_BF16,
    .grad_dtype = OWL_DTYPE_BF16,
};

/* The documented defaults of owl_optimizer_options: zero everywhere (an
 * OWLORE optimizer, KEEP policy, default sampler/projector/AdamW options);
 * num_layers has none and must be set. */
static const owl_optimizer_options optimizer_defaults = {
    .struct_size = sizeof(owl_optimizer_options),
    .method = OWL_METHOD_OWLORE,
    .frozen_policy = OWL_FROZEN_KEEP,
};

owl_status owl_model_shape_init(owl_model_shape *shape, uint64_t struct_size)
{
    return owl__init_options(shape, struct_size, &shape_defaults,
                             sizeof shape_defaults);
}

owl_status owl_memory_plan_init(owl_memory_plan *plan, uint64_t struct_size)
{
    static const owl_memory_plan zeroed = {.struct_size = sizeof(owl_memory_plan)};
    return owl__init_options(plan, struct_size, &zeroed, sizeof zeroed);
}

/* ---- checked 64-bit arithmetic ---------------------------------------- */

/* Byte counts of huge hypothetical models can overflow; every sum and
 * product goes through these, and one flag reports any overflow. */
typedef struct {
    bool overflow;
} counter;

static uint64_t add(counter *c, uint64_t a, uint64_t b)
{
    uint64_t r;
    if (__builtin_add_overflow(a, b, &r)) {
        c->overflow = true;
        return 0;
    }
    return r;
}

static uint64_t mul(counter *c, uint64_t a, uint64_t b)
{
    uint64_t r;
    if (__builtin_mul_overflow(a, b, &r)) {
        c->overflow = true;
        return 0;
    }
    return r;
}

static uint64_t align64(counter *c, uint64_t bytes)
{
    return add(c, bytes, 63u) & ~(uint64_t)63u;
}

/* ---- the model -------------------------------------------------------- */

/* The seven projection matrices of a decoder layer, m x n (out x in). */
enum { NUM_MATRICES = 7 };
typedef struct {
    const char *name;
    uint64_t m, n;
} matrix;

static void layer_matrices(const owl_model_shape *s, matrix out[NUM_MATRICES])
{
    uint64_t kv_dim = s->kv_heads * (s->hidden / s->heads);
    const matrix mats[NUM_MATRICES] = {
        {"q", s->hidden, s->hidden},       {"k", kv_dim, s->hidden},
        {"v", kv_dim, s->hidden},          {"o", s->hidden, s->hidden},
        {"gate", s->intermediate, s->hidden},
        {"up", s->intermediate, s->hidden},
        {"down", s->hidden, s->intermediate},
    };
    memcpy(out, mats, sizeof mats);
}

/* ---- validation ------------------------------------------------------- */

static bool storage_dtype(owl_dtype dt)
{
    return dt == OWL_DTYPE_F32 || dt == OWL_DTYPE_BF16 || dt == OWL_DTYPE_F16;
}

static owl_status check_shape(owl_context *ctx, const owl_model_shape *s)
{
    const struct {
        const char *name;
        uint64_t value;
    } dims[] = {
        {"num_layers", s->num_layers}, {"hidden", s->hidden},
        {"intermediate", s->intermediate}, {"heads", s->heads},
        {"kv_heads", s->kv_heads}, {"vocab", s->vocab},
    };
    for (size_t i = 0; i < sizeof dims / sizeof dims[0]; i++)
        if (dims[i].value < 1)
            return owl__fail(ctx, OWL_ERR_INVALID_ARGUMENT,
                             "shape->%s is 0; it must be >= 1", dims[i].name);
    if (s->hidden % s->heads != 0)
        return owl__fail(ctx, OWL_ERR_INVALID_ARGUMENT,
                         "shape->hidden %llu is not a multiple of heads %llu",
                         (unsigned long long)s->hidden,
                         (unsigned long long)s->heads);
    if (s->heads % s->kv_heads != 0)
        return owl__fail(ctx, OWL_ERR_INVALID_ARGUMENT,
                         "shape->heads %llu is not a multiple of kv_heads %llu",
                         (unsigned long long)s->heads,
                         (unsigned long long)s->kv_heads);
    if (!storage_dtype(s->weight_dtype))
        return owl__fail(ctx, OWL_ERR_DTYPE,
                         "shape->weight_dtype is %s (%d); expected f32, bf16 "
                         "or f16",
                         owl__dtype_name(s->weight_dtype), (int)s->weight_dtype);
    if (!storage_dtype(s->grad_dtype))
        return owl__fail(ctx, OWL_ERR_DTYPE,
                         "shape->grad_dtype is %s (%d); expected f32, bf16 or "
                         "f16",
                         owl__dtype_name(s->grad_dtype), (int)s->grad_dtype);
    if (s->tied_embeddings != 0 && s->tied_embeddings != 1)
        return owl__fail(ctx, OWL_ERR_INVALID_ARGUMENT,
                         "shape->tied_embeddings is %d; expected 0 or 1",
                         (int)s->tied_embeddings);
    if (s->reserved != 0)
        return owl__fail(ctx, OWL_ERR_INVALID_ARGUMENT,
                         "shape->reserved is %d; it must be 0",
                         (int)s->reserved);
    return OWL_OK;
}

/* What owl_optimizer_create checks, plus the agreement with the shape. */
static owl_status check_optimizer(owl_context *ctx,
                                  const owl_optimizer_options *o,
                                  const owl_model_shape *s)
{
    owl_status st = owl__optimizer_check_options(ctx, o);
    if (st != OWL_OK)
        return st;
    if (o->num_layers != s->num_layers)
        return owl__fail(ctx, OWL_ERR_MISMATCH,
                         "opts->num_layers is %llu but shape->num_layers is "
                         "%llu; they must agree",
                         (unsigned long long)o->num_layers,
                         (unsigned long long)s->num_layers);
    return OWL_OK;
}

/* 1 <= r <= min(m, n) for every matrix that takes the low-rank path, and
 * the sizes BLAS/LAPACK can index. */
static owl_status check_rank(owl_context *ctx, const matrix mats[NUM_MATRICES],
                             uint64_t rank)
{
    for (int i = 0; i < NUM_MATRICES; i++) {
        const matrix *x = &mats[i];
        if (x->m > INT32_MAX || x->n > INT32_MAX)
            return owl__fail(ctx, OWL_ERR_UNSUPPORTED,
                             "the %s projection is %llux%llu; a low-rank "
                             "matrix's sides must be < 2^31 for BLAS/LAPACK",
                             x->name, (unsigned long long)x->m,
                             (unsigned long long)x->n);
        uint64_t mn = x->m < x->n ? x->m : x->n;
        if (rank > mn)
            return owl__fail(ctx, OWL_ERR_INVALID_ARGUMENT,
                             "owl_optimizer_options.galore->rank is %llu but "
                             "the %s projection is %llux%llu; the rank must "
                             "be <= %llu",
                             (unsigned long long)rank, x->name,
                             (unsigned long long)x->m,
                             (unsigned long long)x->n, (unsigned long long)mn);
    }
    return OWL_OK;
}

/* The layers that can ever be drawn: those of weight > 0 when weights are
 * given (already checked), else all of them. */
static uint64_t reachable_layers(const owl_sampler_options *o)
{
    if (o->weights == NULL)
        return o->num_layers;
    uint64_t positive = 0;
    for (uint64_t l = 0; l < o->num_layers; l++)
        positive += o->weights[l] > 0;
    return positive;
}

/* ---- the plan --------------------------------------------------------- */

/* The context scratch one projector of an m x n matrix reserves: the f32
 * gradient copy, then the SVD workspace at the next 64 bytes, rounded to
 * 64 bytes as owl__context_reserve allocates it (galore.c's create). */
static owl_status projector_scratch(owl_context *ctx, const matrix *x,
                                    const owl_galore_options *g, bool left,
                                    counter *c, uint64_t *bytes)
{
    owl_svd_work w;
    owl_status s = owl__svd_init(ctx, &w, g->svd_method, (int64_t)x->m,
                                 (int64_t)x->n, (int64_t)g->rank, left,
                                 g->oversample, g->power_iters, g->seed);
    if (s != OWL_OK)
        return s;
    uint64_t g32 = align64(c, mul(c, mul(c, x->m, x->n), sizeof(float)));
    *bytes = align64(c, add(c, g32, (uint64_t)w.bytes));
    return OWL_OK;
}

/* Reads an optional nested options struct over the defaults in dst. */
static owl_status read_nested(owl_context *ctx, void *dst, size_t size,
                              const void *src, const char *what)
{
    return src == NULL ? OWL_OK : owl__read_options(ctx, dst, size, src, what);
}

owl_status owl_memory_plan_compute(owl_context *ctx,
                                   const owl_model_shape *shape,
                                   const owl_optimizer_options *opts,
                                   owl_memory_plan *plan)
{
    if (ctx == NULL)
        return OWL_ERR_NULL_POINTER;
    owl__clear_error(ctx);
    OWL_REQUIRE_PTR(ctx, shape);
    OWL_REQUIRE_PTR(ctx, opts);
    OWL_REQUIRE_PTR(ctx, plan);
    if (!owl__struct_size_ok(plan->struct_size))
        return owl__fail(ctx, OWL_ERR_STRUCT_SIZE,
                         "plan->struct_size is %llu; fill it with "
                         "owl_memory_plan_init",
                         (unsigned long long)plan->struct_size);

    /* The options are checked by the optimizer's own functions, in
     * owl_optimizer_create's order, so the planner accepts what create
     * accepts. The one exception: the OWLORE methods' LOD ratios may be
     * left out, as they do not change the memory (a plan is often made
     * before they are known). */
    owl_model_shape s = shape_defaults;
    owl_optimizer_options o = optimizer_defaults;
    owl_sampler_options so;
    owl_galore_options go;
    owl_adamw_options ao;
    owl_galore_options_init(&go, sizeof go);
    owl_adamw_options_init(&ao, sizeof ao);
    owl_status st = owl__read_options(ctx, &s, sizeof s, shape,
                                      "owl_model_shape");
    if (st == OWL_OK)
        st = check_shape(ctx, &s);
    if (st == OWL_OK)
        st = owl__read_options(ctx, &o, sizeof o, opts,
                               "owl_optimizer_options");
    if (st == OWL_OK)
        st = check_optimizer(ctx, &o, &s);
    if (st == OWL_OK)
        st = read_nested(ctx, &go, sizeof go, o.galore,
                         "owl_optimizer_options.galore");
    if (st == OWL_OK)
        st = read_nested(ctx, &ao, sizeof ao, o.adamw,
                         "owl_optimizer_options.adamw");
    if (st == OWL_OK && owl__method_lowrank(o.method))
        st = owl__galore_check_options(ctx, &go,
                                       "owl_optimizer_options.galore->", false);
    if (st == OWL_OK)
        st = owl__adamw_check_options(ctx, &ao,
                                      "owl_optimizer_options.adamw->");
    if (st == OWL_OK)
        st = owl__optimizer_sampler_options(ctx, &o, &so, false);
    if (st != OWL_OK)
        return st;

    const uint64_t L = s.num_layers;
    const bool sampled = owl__method_samples(o.method);
    const bool lowrank = owl__method_lowrank(o.method);
    matrix mats[NUM_MATRICES];
    layer_matrices(&s, mats);

    /* Layers whose gradients exist at peak, and layers whose optimizer
     * state sits where the backend computes at peak. */
    uint64_t trained = L, held = L;
    if (sampled) {
        trained = so.gamma;
        /* KEEP and RESET keep the state of every layer ever drawn: over a
         * long run, every layer that can be drawn. */
        held = o.frozen_policy == OWL_FROZEN_KEEP ||
                       o.frozen_policy == OWL_FROZEN_RESET
                   ? reachable_layers(&so)
                   : so.gamma;
    }
    if (lowrank && (st = check_rank(ctx, mats, go.rank)) != OWL_OK)
        return st;

    counter c = {false};
    const uint64_t h = s.hidden;
    uint64_t layer_numel = mul(&c, 2, h); /* the two RMSNorms */
    uint64_t layer_moments = layer_numel; /* moment elements of one layer */
    uint64_t layer_proj = 0;              /* projector bytes of one layer */
    uint64_t workspace = 0;
    for (int i = 0; i < NUM_MATRICES; i++) {
        const matrix *x = &mats[i];
        uint64_t numel = mul(&c, x->m, x->n);
        layer_numel = add(&c, layer_numel, numel);
        if (!lowrank) {
            layer_moments = add(&c, layer_moments, numel);
            continue;
        }
        bool left = owl__galore_projects_left(go.proj_type, x->m, x->n);
        uint64_t d = left ? x->m : x->n;             /* basis vector length */
        uint64_t low = mul(&c, go.rank, left ? x->n : x->m); /* R's numel */
        layer_moments = add(&c, layer_moments, low);
        /* basis and next_basis (r x d each) and the low-rank scratch, f32 */
        uint64_t proj = add(&c, mul(&c, 2, mul(&c, go.rank, d)), low);
        layer_proj = add(&c, layer_proj, mul(&c, proj, sizeof(float)));
        uint64_t scratch = 0;
        if ((st = projector_scratch(ctx, x, &go, left, &c, &scratch)) != OWL_OK)
            return st;
        if (scratch > workspace)
            workspace = scratch;
    }
    /* Embeddings, the final norm and the LM head (unless tied). */
    uint64_t always = add(&c, mul(&c, s.vocab, h), h);
    if (!s.tied_embeddings)
        always = add(&c, always, mul(&c, s.vocab, h));

    const uint64_t wsize = owl__dtype_size(s.weight_dtype);
    const uint64_t gsize = owl__dtype_size(s.grad_dtype);
    const uint64_t msize = owl__dtype_size(ao.moment_dtype);
    owl_memory_plan p = {.struct_size = sizeof p};
    p.weights = mul(&c, add(&c, mul(&c, L, layer_numel), always), wsize);
    p.gradients = mul(&c, add(&c, mul(&c, trained, layer_numel), always), gsize);
    p.optimizer_state =
        mul(&c, mul(&c, 2, msize), add(&c, mul(&c, held, layer_moments), always));
    p.projectors = mul(&c, held, layer_proj);
    p.workspace = workspace;
    p.total = add(&c, add(&c, add(&c, p.weights, p.gradients),
                          add(&c, p.optimizer_state, p.projectors)),
                  p.workspace);
    if (c.overflow)
        return owl__fail(ctx, OWL_ERR_INVALID_ARGUMENT,
                         "the byte counts of a %llu-layer model of hidden "
                         "%llu, intermediate %llu and vocab %llu overflow 64 "
                         "bits (method %s)",
                         (unsigned long long)L, (unsigned long long)h,
                         (unsigned long long)s.intermediate,
                         (unsigned long long)s.vocab,
                         owl__method_name(o.method));

    /* The fields that fit in the caller's struct (an older, smaller one
     * gets only those it knows). */
    uint64_t size = plan->struct_size;
#define OWL_PUT(field)                                                         \
    do {                                                                       \
        if (offsetof(owl_memory_plan, field) + sizeof plan->field <= size)     \
            plan->field = p.field;                                             \
    } while (0)
    OWL_PUT(weights);
    OWL_PUT(gradients);
    OWL_PUT(optimizer_state);
    OWL_PUT(projectors);
    OWL_PUT(workspace);
    OWL_PUT(total);
#undef OWL_PUT
    return OWL_OK;
}
