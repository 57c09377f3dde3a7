/* See fuzz_handles.h. */
#include "fuzz_handles.h"

#include <stdio.h>
#include <stdlib.h>

static void must(owl_context *ctx, owl_status st, const char *what)
{
    if (st != OWL_OK) {
        fprintf(stderr, "fuzz setup: %s: %s (%s)\n", what, owl_status_name(st),
                ctx ? owl_context_last_error(ctx) : "");
        abort();
    }
}

static void add(fuzz_handles *h, fuzz_target t)
{
    if (h->count >= FUZZ_MAX_TARGETS)
        abort();
    h->targets[h->count++] = t;
}

/* The optimizer's parameters: storage that outlives the handle (it keeps
 * the descriptors). Layer 0: a 4 x 3 low-rank matrix, layer 1: a 3 x 2
 * full-rank one, layer 2: a 2 x 2 low-rank one, and a 1 x 3 always-trained
 * vector. */
enum { OPT_PARAMS = 4 };
static const uint64_t opt_layer[OPT_PARAMS] = {0, 1, 2, OWL_LAYER_ALWAYS};
static const int64_t opt_rows[OPT_PARAMS] = {4, 3, 2, 1};
static const int64_t opt_cols[OPT_PARAMS] = {3, 2, 2, 3};
static const int32_t opt_lowrank[OPT_PARAMS] = {1, 0, 1, 0};
static float opt_w[OPT_PARAMS][12], opt_g[OPT_PARAMS][12];

/* OWLORE over 3 layers (one drawn per period of 2), rank 1, clipping,
 * after 5 steps: some parameters allocated (projector and moments), some
 * parked, maybe some never drawn. */
static owl_optimizer *make_optimizer(owl_context *ctx)
{
    static const double lod[3] = {0.3, 0.2, 0.1};
    owl_sampler_options so;
    owl_galore_options go;
    owl_optimizer_options oo;
    must(ctx, owl_sampler_options_init(&so, sizeof so), "sampler options");
    must(ctx, owl_galore_options_init(&go, sizeof go), "galore options");
    must(ctx, owl_optimizer_options_init(&oo, sizeof oo), "options");
    so.gamma = 1;
    so.period = 2;
    so.seed = 3;
    so.weights = lod;
    go.rank = 1;
    go.update_gap = 2;
    oo.method = OWL_METHOD_OWLORE;
    oo.num_layers = 3;
    oo.max_grad_norm = 1.0;
    oo.sampler = &so;
    oo.galore = &go;
    owl_optimizer *opt = NULL;
    must(ctx, owl_optimizer_create(ctx, &oo, &opt), "optimizer");
    for (int i = 0; i < OPT_PARAMS; i++) {
        owl_tensor w, g;
        for (int k = 0; k < 12; k++)
            opt_w[i][k] = (float)((k * 5 + i * 3) % 7) * 0.2f - 0.6f;
        owl_tensor_init(&w, opt_w[i], OWL_DTYPE_F32, opt_rows[i], opt_cols[i]);
        owl_tensor_init(&g, opt_g[i], OWL_DTYPE_F32, opt_rows[i], opt_cols[i]);
        must(ctx, owl_optimizer_add_param(opt, opt_layer[i], &w, &g,
                                          opt_lowrank[i], NULL),
             "add_param");
    }
    for (int s = 0; s < 5; s++) {
        for (int i = 0; i < OPT_PARAMS; i++)
            for (int k = 0; k < 12; k++)
                opt_g[i][k] = opt_w[i][k] - (float)((k + s) % 3) * 0.3f;
        must(ctx, owl_optimizer_step(opt, 0.05), "optimizer step");
    }
    return opt;
}

void fuzz_handles_create(fuzz_handles *h)
{
    owl_context_options co;
    must(NULL, owl_context_options_init(&co, sizeof co), "context options");
    co.num_threads = 1;
    h->count = 0;
    must(NULL, owl_context_create(&h->ctx, &co), "context");
    owl_context *ctx = h->ctx;

    /* Sampler: 5 layers, custom weights with a zero. */
    static const double w[5] = {0.1, 0.4, 0.2, 0.0, 0.3};
    owl_sampler_options so;
    must(ctx, owl_sampler_options_init(&so, sizeof so), "sampler options");
    so.num_layers = 5;
    so.gamma = 2;
    so.period = 3;
    so.seed = 9;
    so.weight_mode = OWL_WEIGHTS_CUSTOM;
    so.weights = w;
    owl_sampler *s = NULL;
    must(ctx, owl_sampler_create(ctx, &so, &s), "sampler");

    /* Projector 4 x 3, rank 2, with AdamW (f32 moments) on its low-rank
     * shape, and a full-rank AdamW with bf16 moments, after a few
     * steps. */
    owl_galore_options go;
    must(ctx, owl_galore_options_init(&go, sizeof go), "galore options");
    go.rows = 4;
    go.cols = 3;
    go.rank = 2;
    go.update_gap = 2;
    owl_galore *p = NULL;
    must(ctx, owl_galore_create(ctx, &go, &p), "galore");
    uint64_t lr_rows = 0, lr_cols = 0;
    must(ctx, owl_galore_lowrank_shape(p, &lr_rows, &lr_cols), "shape");
    owl_adamw_options ao;
    must(ctx, owl_adamw_options_init(&ao, sizeof ao), "adamw options");
    ao.weight_decay = 0.01;
    owl_adamw *a32 = NULL, *a16 = NULL;
    must(ctx, owl_adamw_create(ctx, &ao, lr_rows, lr_cols, &a32), "adamw");
    ao.moment_dtype = OWL_DTYPE_BF16;
    must(ctx, owl_adamw_create(ctx, &ao, 4, 3, &a16), "adamw");

    float wt[12], g[12];
    owl_tensor W, G;
    owl_tensor_init(&W, wt, OWL_DTYPE_F32, 4, 3);
    owl_tensor_init(&G, g, OWL_DTYPE_F32, 4, 3);
    for (int i = 0; i < 12; i++)
        wt[i] = (float)(i % 5) * 0.25f - 0.5f;
    for (int k = 0; k < 3; k++) {
        for (int i = 0; i < 12; i++)
            g[i] = (float)((i * 7 + k * 3) % 11) * 0.1f - 0.5f;
        must(ctx, owl_adamw_lowrank(a32, p, &W, &G, 0.01), "step");
        must(ctx, owl_adamw_full(a16, &W, &G, 0.01), "step");
    }
    add(h, (fuzz_target){"sampler", s, &sampler_ops});
    add(h, (fuzz_target){"galore", p, &galore_ops});
    add(h, (fuzz_target){"adamw-f32", a32, &adamw_ops});
    add(h, (fuzz_target){"adamw-bf16", a16, &adamw_ops});
    add(h, (fuzz_target){"optimizer", make_optimizer(ctx), &optimizer_ops});
}

void fuzz_handles_free(fuzz_handles *h)
{
    for (int i = 0; i < h->count; i++)
        h->targets[i].ops->free(h->targets[i].handle);
    h->count = 0;
    owl_context_free(h->ctx);
    h->ctx = NULL;
}
