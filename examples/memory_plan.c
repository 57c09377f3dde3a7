/* Plans the memory of fine-tuning LLaMa-2-7B with FULL, GaLore, LISA and
 * OwLore, and prints it next to the totals the OwLore paper measured.
 *
 *   memory_plan [--rank R] [--galore-rank R] [--moments f32|bf16]
 *               [--batch B] [--seq S] [--no-checkpointing]
 *
 * The library's figures (weights ... total) are exact for its own model of
 * a step (docs/memory.md). The activation column is a rough estimate kept
 * apart from them. Sizes are GiB (2^30 bytes). */
#include <owlore/owlore.h>

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define GIB (1024.0 * 1024.0 * 1024.0)

typedef struct {
    uint64_t rank;        /* OwLore's rank */
    uint64_t galore_rank; /* the GaLore baseline's rank */
    owl_dtype moments;
    uint64_t batch, seq;
    int checkpointing;
} settings;

static void usage(const char *argv0)
{
    fprintf(stderr,
            "usage: %s [--rank R] [--galore-rank R] [--moments f32|bf16]\n"
            "          [--batch B] [--seq S] [--no-checkpointing]\n"
            "  --rank          OwLore's GaLore rank (default 128)\n"
            "  --galore-rank   rank of the GaLore baseline (default 8, the\n"
            "                  paper's fine-tuning setting)\n"
            "  --moments       AdamW moment dtype (default f32)\n"
            "  --batch, --seq  for the rough activation estimate only\n"
            "                  (default 1 x 512)\n"
            "  --no-checkpointing  estimate activations without gradient\n"
            "                  checkpointing\n",
            argv0);
}

static int parse_u64(const char *s, uint64_t *out)
{
    char *end = NULL;
    unsigned long long v = strtoull(s, &end, 10);
    if (end == s || *end != '\0' || v == 0 || s[0] == '-')
        return 0;
    *out = (uint64_t)v;
    return 1;
}

static int parse_args(int argc, char **argv, settings *st)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--no-checkpointing") == 0) {
            st->checkpointing = 0;
            continue;
        }
        if (v == NULL)
            return 0;
        int ok;
        if (strcmp(a, "--rank") == 0)
            ok = parse_u64(v, &st->rank);
        else if (strcmp(a, "--galore-rank") == 0)
            ok = parse_u64(v, &st->galore_rank);
        else if (strcmp(a, "--batch") == 0)
            ok = parse_u64(v, &st->batch);
        else if (strcmp(a, "--seq") == 0)
            ok = parse_u64(v, &st->seq);
        else if (strcmp(a, "--moments") == 0) {
            ok = 1;
            if (strcmp(v, "f32") == 0)
                st->moments = OWL_DTYPE_F32;
            else if (strcmp(v, "bf16") == 0)
                st->moments = OWL_DTYPE_BF16;
            else
                ok = 0;
        } else
            ok = 0;
        if (!ok)
            return 0;
        i++;
    }
    return 1;
}

/* A rough activation estimate for one step in bf16 (2 bytes), labelled as
 * such wherever it is printed; it is not part of the library's plan.
 * Per token and decoder layer, the tensors autograd keeps with
 * FlashAttention (no s x s scores): the two RMSNorm inputs and outputs
 * (4h), q (h) and k, v (2 kv_dim), the attention output (h), gate, up,
 * act(gate) and act(gate)*up (4 I). Every layer's activations are needed,
 * whatever gamma is, because the always-trained embeddings put the whole
 * stack on the backward path. With checkpointing, each layer keeps only
 * its input (h) and one layer is recomputed at a time. The logits cost 10
 * bytes per element: bf16, their f32 copy for the loss, its f32 gradient. */
static double activations_bytes(const owl_model_shape *s, const settings *st)
{
    double tokens = (double)st->batch * (double)st->seq;
    double kv_dim = (double)(s->kv_heads * (s->hidden / s->heads));
    double layer = 2.0 * tokens *
                   (6.0 * (double)s->hidden + 2.0 * kv_dim +
                    4.0 * (double)s->intermediate);
    double logits = 10.0 * tokens * (double)s->vocab;
    if (st->checkpointing)
        return (double)s->num_layers * 2.0 * tokens * (double)s->hidden +
               layer + logits;
    return (double)s->num_layers * layer + logits;
}

typedef struct {
    const char *label;
    owl_method method;
    uint64_t gamma; /* 0: not sampled */
    uint64_t rank;  /* 0: full rank */
    int paper_gb;   /* the paper's measured total; 0: none */
    const char *paper_where;
} row;

static int plan_row(owl_context *ctx, const owl_model_shape *shape,
                    const settings *st, const row *r, owl_frozen_policy policy,
                    owl_memory_plan *plan)
{
    owl_sampler_options so;
    owl_galore_options go;
    owl_adamw_options ao;
    owl_sampler_options_init(&so, sizeof so);
    owl_galore_options_init(&go, sizeof go);
    owl_adamw_options_init(&ao, sizeof ao);
    so.gamma = r->gamma ? r->gamma : 1;
    so.weight_mode = OWL_WEIGHTS_UNIFORM; /* the weights do not change memory */
    go.rank = r->rank ? r->rank : 128;
    ao.moment_dtype = st->moments;
    /* Zero is the documented default of every other field. */
    owl_optimizer_options opts = {.struct_size = sizeof opts};
    opts.method = r->method;
    opts.frozen_policy = policy;
    opts.num_layers = shape->num_layers;
    opts.sampler = &so;
    opts.galore = &go;
    opts.adamw = &ao;
    owl_memory_plan_init(plan, sizeof *plan);
    owl_status s = owl_memory_plan_compute(ctx, shape, &opts, plan);
    if (s != OWL_OK) {
        fprintf(stderr, "%s: %s\n", r->label, owl_context_last_error(ctx));
        return 0;
    }
    return 1;
}

static void print_explanations(const settings *st)
{
    printf(
        "\nWhat the plan models exactly and what it cannot:\n"
        "- weights .. total: the library's plan for one step at peak, with\n"
        "  bf16 weights and gradients, %s AdamW moments and the FREE policy\n"
        "  (only the gamma sampled layers hold optimizer state). 'KEEP' is\n"
        "  the total when frozen layers keep their state, as the reference\n"
        "  code does: after a long run every layer has been drawn.\n"
        "- workspace: the CPU backend's shared scratch (an f32 copy of the\n"
        "  largest projected gradient plus LAPACK gesdd's workspace). On a\n"
        "  GPU the SVD workspace is cuSOLVER's or PyTorch's instead.\n"
        "- act~ is a ROUGH activation estimate (bf16, FlashAttention, batch\n"
        "  %" PRIu64 " x sequence %" PRIu64 ", gradient checkpointing %s).\n"
        "  Activations depend on batch, sequence length, checkpointing and\n"
        "  the attention kernel; the paper measured at 'a token batch size\n"
        "  of 1' without stating the sequence length or checkpointing (the\n"
        "  reference code turns checkpointing and FlashAttention-2 on).\n"
        "- Not modelled at all: the CUDA context and cuBLAS/cuSOLVER handles\n"
        "  (about 0.5-1 GB), the caching allocator's reserve and\n"
        "  fragmentation (PyTorch reports reserved, not live, memory),\n"
        "  temporaries of the framework's optimizer (e.g. a full-size\n"
        "  back-projected update), and any f32 master weights (the paper\n"
        "  trains in pure bf16; mixed precision would add 4 bytes/param).\n"
        "- The reference code keeps frozen layers' optimizer state (it\n"
        "  builds its optimizer once over every parameter); a measurement\n"
        "  over one sampling period sees only the layers drawn so far,\n"
        "  which is what FREE models.\n"
        "- The reference code's moments are bf16 (run with --moments bf16):\n"
        "  compare the per-layer slopes below.\n"
        "- GaLore's paper figure (Table 3) is a fine-tuning run at rank 8\n"
        "  without GaLore's layer-wise weight update; FULL's is 'Full FT' in\n"
        "  Table 3; LISA and OwLore are Table 2 (gamma = 1, 2, 4, 8).\n",
        st->moments == OWL_DTYPE_BF16 ? "bf16" : "f32", st->batch, st->seq,
        st->checkpointing ? "on" : "off");
}

int main(int argc, char **argv)
{
    settings st = {128, 8, OWL_DTYPE_F32, 1, 512, 1};
    if (!parse_args(argc, argv, &st)) {
        usage(argv[0]);
        return 2;
    }

    owl_model_shape shape;
    owl_model_shape_init(&shape, sizeof shape); /* bf16 weights and grads */
    shape.num_layers = 32;
    shape.hidden = 4096;
    shape.intermediate = 11008;
    shape.heads = 32;
    shape.kv_heads = 32;
    shape.vocab = 32000;

    owl_context_options co;
    owl_context_options_init(&co, sizeof co);
    co.num_threads = 1;
    owl_context *ctx = NULL;
    if (owl_context_create(&ctx, &co) != OWL_OK) {
        fprintf(stderr, "cannot create a CPU context\n");
        return 1;
    }

    const row rows[] = {
        {"FULL", OWL_METHOD_FULL, 0, 0, 61, "T3"},
        {"GALORE", OWL_METHOD_GALORE, 0, st.galore_rank, 36, "T3"},
        {"LISA", OWL_METHOD_LISA, 1, 0, 23, "T2"},
        {"LISA", OWL_METHOD_LISA, 2, 0, 24, "T2"},
        {"LISA", OWL_METHOD_LISA, 4, 0, 27, "T2"},
        {"LISA", OWL_METHOD_LISA, 8, 0, 32, "T2"},
        {"OWLORE", OWL_METHOD_OWLORE, 1, st.rank, 21, "T2"},
        {"OWLORE", OWL_METHOD_OWLORE, 2, st.rank, 22, "T2"},
        {"OWLORE", OWL_METHOD_OWLORE, 4, st.rank, 23, "T2"},
        {"OWLORE", OWL_METHOD_OWLORE, 8, st.rank, 25, "T2"},
    };
    const double act = activations_bytes(&shape, &st);

    printf("LLaMa-2-7B (32 layers, hidden 4096, intermediate 11008, vocab "
           "32000, untied), bf16 weights and gradients, %s moments.\n"
           "GiB (2^30 bytes); the paper's figures are its own 'G'.\n\n",
           st.moments == OWL_DTYPE_BF16 ? "bf16" : "f32");
    printf("%-7s %3s %4s | %7s %6s %6s %6s %6s %7s | %6s %7s | %-7s | %6s\n",
           "method", "g", "r", "weights", "grads", "optim", "proj", "work",
           "total", "act~", "+act~", "paper", "KEEP");
    printf("--------------------------------------------------------------"
           "--------------------------------------\n");
    int status = 0;
    /* totals at gamma 1 and 8, for the per-layer slopes */
    double lisa1 = 0, lisa8 = 0, owl1 = 0, owl8 = 0;
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        const row *r = &rows[i];
        owl_memory_plan p, keep;
        if (!plan_row(ctx, &shape, &st, r, OWL_FROZEN_FREE, &p) ||
            !plan_row(ctx, &shape, &st, r, OWL_FROZEN_KEEP, &keep)) {
            status = 1;
            continue;
        }
        char g[24] = "-", rk[24] = "-", keep_s[24] = "-";
        if (r->gamma) {
            snprintf(g, sizeof g, "%" PRIu64, r->gamma);
            snprintf(keep_s, sizeof keep_s, "%6.2f", keep.total / GIB);
        }
        if (r->method == OWL_METHOD_LISA && r->gamma == 1)
            lisa1 = (double)p.total;
        if (r->method == OWL_METHOD_LISA && r->gamma == 8)
            lisa8 = (double)p.total;
        if (r->method == OWL_METHOD_OWLORE && r->gamma == 1)
            owl1 = (double)p.total;
        if (r->method == OWL_METHOD_OWLORE && r->gamma == 8)
            owl8 = (double)p.total;
        if (r->rank)
            snprintf(rk, sizeof rk, "%" PRIu64, r->rank);
        printf("%-7s %3s %4s | %7.2f %6.2f %6.2f %6.2f %6.2f %7.2f | %6.2f "
               "%7.2f | %3dG %s | %6s\n",
               r->label, g, rk, p.weights / GIB, p.gradients / GIB,
               p.optimizer_state / GIB, p.projectors / GIB,
               p.workspace / GIB, p.total / GIB, act / GIB,
               (p.total + act) / GIB, r->paper_gb,
               r->paper_where, keep_s);
    }
    printf("\npaper: T2 = its Table 2 (LISA/OwLore vs gamma), T3 = its Table 3 "
           "(LLaMa2-7B 'Mem.' column)\n");
    /* The paper's 'G' is not defined; its slopes are printed in its unit
     * beside the plan's in both GB and GiB. */
    if (status == 0)
        printf("\nPer extra sampled layer, gamma 1 -> 8 (the constant "
               "offsets cancel):\n"
               "  LISA:   plan %.2f GB = %.2f GiB, paper (32-23)/7 = %.2f G\n"
               "  OwLore: plan %.2f GB = %.2f GiB, paper (25-21)/7 = %.2f G\n",
               (lisa8 - lisa1) / 7 / 1e9, (lisa8 - lisa1) / 7 / GIB, 9.0 / 7,
               (owl8 - owl1) / 7 / 1e9, (owl8 - owl1) / 7 / GIB, 4.0 / 7);
    print_explanations(&st);
    owl_context_free(ctx);
    return status;
}
