/*
 * Training throughput of the LLaMa example: tokens per second of one
 * training step (forward, backward, owl_optimizer_step) of the C model,
 * next to the same model and batch in PyTorch on the CPU with as many
 * threads as OpenBLAS uses, measured in the same run
 * (bench_llama_torch.py, run as a subprocess with the torch interpreter).
 *
 * Usage: bench_llama TORCH_PYTHON SCRIPT [BATCH [SEQ]]
 * The model is stories15M's shape (dim 288, 6 layers, 6 heads, hidden 768,
 * vocab 32000, tied head: 15.2M parameters) from a random init; ids are
 * random. Each figure is the median of REPS timed steps after WARMUP
 * steps. Methods: FULL (every layer, full-rank AdamW: what the torch step
 * does) and OWLORE (2 of 6 layers sampled, rank 64; its warm-up steps
 * include the first subspace computations). It prints and never fails on
 * speed; it fails only when a call fails.
 *
 * One configuration, one method, this process alone (for
 * tests/bench/vs_torch.py, which runs the C and the PyTorch side in
 * separate processes so that each peak RSS is its own):
 *   bench_llama --one DIM HIDDEN LAYERS HEADS KV_HEADS VOCAB SEQ BATCH TIED
 *               THREADS WARMUP REPS METHOD RANK GAMMA PERIOD UPDATE_GAP
 *               CLIP SCALE
 * (the argument list of bench_llama_torch.py; METHOD full|owlore) prints
 * "c_step_seconds MEDIAN MIN MAX REPS" and "c_peak_rss_kib N".
 */
#include "bench_util.h"

#include "llama.h"
#include "llama_owl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#ifdef OWL_BENCH_OPENBLAS
int openblas_get_num_threads(void);
#endif

enum { WARMUP = 2, REPS = 5 };

typedef struct step_args {
    llama_model *m;
    owl_optimizer *opt;
    const int32_t *tokens, *targets;
    int B, T;
} step_args;

static owl_status train_step(void *arg)
{
    step_args *a = arg;
    uint8_t mask[64];
    owl_status s = owl_optimizer_active_layers(a->opt, mask,
                                               (uint64_t)a->m->cfg.n_layers,
                                               NULL);
    if (s != OWL_OK)
        return s;
    llama_forward(a->m, a->tokens, a->targets, a->B, a->T, NULL, NULL);
    llama_trainable tr = llama_owl_trainable(mask);
    llama_backward(a->m, &tr);
    return owl_optimizer_step(a->opt, 1e-4);
}

/* What the optimizer of a C step is given (train.c's flags of the same
 * names). */
typedef struct step_setup {
    owl_method method;
    int rank, gamma, period, update_gap, warmup, reps;
    double clip, scale;
} step_setup;

static int run_c(owl_context *ctx, llama_model *m, const step_setup *st,
                 const int32_t *tokens, const int32_t *targets, int B, int T,
                 bench_timing *out)
{
    owl_method method = st->method;
    owl_sampler_options so;
    owl_galore_options go;
    owl_optimizer_options oo;
    owl_sampler_options_init(&so, sizeof so);
    owl_galore_options_init(&go, sizeof go);
    owl_optimizer_options_init(&oo, sizeof oo);
    double ratios[64];
    for (int l = 0; l < m->cfg.n_layers; l++)
        ratios[l] = 0.01 * (1 + l % 3); /* fixed outlier ratios */
    so.gamma = (uint64_t)st->gamma;
    so.period = (uint64_t)st->period;
    so.weights = ratios;
    go.rank = (uint64_t)st->rank;
    go.update_gap = (uint64_t)st->update_gap;
    go.scale = st->scale;
    oo.max_grad_norm = st->clip;
    oo.method = method;
    oo.num_layers = (uint64_t)m->cfg.n_layers;
    oo.sampler = method == OWL_METHOD_OWLORE ? &so : NULL;
    oo.galore = &go;
    owl_optimizer *opt = NULL;
    owl_status s = owl_optimizer_create(ctx, &oo, &opt);
    if (s == OWL_OK)
        s = llama_owl_register(opt, m);
    if (s == OWL_OK) {
        step_args a = {m, opt, tokens, targets, B, T};
        s = bench_measure(train_step, &a, st->warmup, st->reps, st->reps, 1e9,
                          out);
    }
    if (s != OWL_OK)
        fprintf(stderr, "bench_llama: %s\n", owl_context_last_error(ctx));
    owl_optimizer_free(opt);
    return s == OWL_OK ? 0 : 1;
}

/* Runs the PyTorch baseline; 0 and its median step time on success. */
static int run_torch(const char *python, const char *script,
                     const llama_config *c, int B, int threads, double *med)
{
    char cmd[8192], line[512];
    snprintf(cmd, sizeof cmd,
             "'%s' '%s' %d %d %d %d %d %d %d %d %d %d %d %d", python, script,
             c->dim, c->hidden_dim, c->n_layers, c->n_heads, c->n_kv_heads,
             c->vocab_size, c->seq_len, B, c->tied, threads, WARMUP, REPS);
    FILE *p = popen(cmd, "r");
    if (!p)
        return 1;
    int found = 0;
    while (fgets(line, sizeof line, p))
        if (sscanf(line, "torch_step_seconds %lf", med) == 1)
            found = 1;
    int rc = pclose(p);
    return rc == 0 && found ? 0 : 1;
}

/* Random ids, the same stream for tokens and targets as the paired mode. */
static void random_ids(int32_t *tokens, int32_t *targets, size_t n, int vocab)
{
    uint64_t s = 12345;
    for (size_t i = 0; i < n; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        tokens[i] = (int32_t)((s >> 33) % (uint64_t)vocab);
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        targets[i] = (int32_t)((s >> 33) % (uint64_t)vocab);
    }
}

/* --one: see the top of the file. */
static int run_one(int argc, char **argv)
{
    if (argc != 21) {
        fprintf(stderr, "usage: bench_llama --one DIM HIDDEN LAYERS HEADS "
                "KV_HEADS VOCAB SEQ BATCH TIED THREADS WARMUP REPS METHOD "
                "RANK GAMMA PERIOD UPDATE_GAP CLIP SCALE\n");
        return 2;
    }
    int v[12];
    for (int i = 0; i < 12; i++)
        v[i] = atoi(argv[2 + i]);
    const char *method = argv[14];
    step_setup st = {OWL_METHOD_FULL, atoi(argv[15]), atoi(argv[16]),
                     atoi(argv[17]), atoi(argv[18]), v[10], v[11],
                     atof(argv[19]), atof(argv[20])};
    if (!strcmp(method, "owlore"))
        st.method = OWL_METHOD_OWLORE;
    else if (strcmp(method, "full")) {
        fprintf(stderr, "bench_llama: method %s is not full or owlore\n",
                method);
        return 2;
    }
    llama_config cfg = {.dim = v[0], .hidden_dim = v[1], .n_layers = v[2],
                        .n_heads = v[3], .n_kv_heads = v[4],
                        .vocab_size = v[5], .seq_len = v[6],
                        .rope_theta = 10000.0f, .norm_eps = 1e-5f,
                        .tied = v[8]};
    int B = v[7], T = v[6], threads = v[9];
    if (cfg.n_layers > 64 || B < 1 || threads < 1 || st.reps < 1) {
        fprintf(stderr, "bench_llama: at most 64 layers; batch, threads and "
                "reps >= 1\n");
        return 2;
    }
    char err[256];
    llama_model m;
    if (llama_create(&m, &cfg, B, err, sizeof err) != 0) {
        fprintf(stderr, "bench_llama: %s\n", err);
        return 1;
    }
    llama_init_random(&m, 1, 0.02f);
    size_t n = (size_t)B * T;
    int32_t *tokens = malloc(n * sizeof *tokens);
    int32_t *targets = malloc(n * sizeof *targets);
    owl_context_options co;
    owl_context_options_init(&co, sizeof co);
    co.num_threads = threads;
    owl_context *ctx = NULL;
    int rc = 1;
    if (tokens && targets && owl_context_create(&ctx, &co) == OWL_OK) {
        random_ids(tokens, targets, n, cfg.vocab_size);
        bench_timing t;
        rc = run_c(ctx, &m, &st, tokens, targets, B, T, &t);
        struct rusage ru;
        getrusage(RUSAGE_SELF, &ru);
        if (rc == 0)
            printf("c_step_seconds %.6f %.6f %.6f %d\nc_peak_rss_kib %ld\n"
                   "params %zu\n", t.median, t.min, t.max, t.reps,
                   ru.ru_maxrss, llama_param_count(&cfg));
    }
    owl_context_free(ctx);
    free(tokens);
    free(targets);
    llama_destroy(&m);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc > 1 && !strcmp(argv[1], "--one"))
        return run_one(argc, argv);
    if (argc < 3) {
        fprintf(stderr, "usage: %s TORCH_PYTHON SCRIPT [BATCH [SEQ]]\n",
                argv[0]);
        return 2;
    }
    int B = argc > 3 ? atoi(argv[3]) : 4;
    int T = argc > 4 ? atoi(argv[4]) : 256;
    llama_config cfg = {.dim = 288, .hidden_dim = 768, .n_layers = 6,
                        .n_heads = 6, .n_kv_heads = 6, .vocab_size = 32000,
                        .seq_len = T, .rope_theta = 10000.0f,
                        .norm_eps = 1e-5f, .tied = 1};
#ifdef OWL_BENCH_OPENBLAS
    int threads = openblas_get_num_threads();
#else
    const char *env = getenv("OPENBLAS_NUM_THREADS");
    int threads = env ? atoi(env) : 1;
#endif
    if (threads < 1)
        threads = 1;
    char err[256], cpu[128];
    llama_model m;
    if (llama_create(&m, &cfg, B, err, sizeof err) != 0) {
        fprintf(stderr, "bench_llama: %s\n", err);
        return 1;
    }
    llama_init_random(&m, 1, 0.02f);
    size_t n = (size_t)B * T;
    int32_t *tokens = malloc(n * sizeof *tokens);
    int32_t *targets = malloc(n * sizeof *targets);
    if (!tokens || !targets)
        return 1;
    random_ids(tokens, targets, n, cfg.vocab_size);
    owl_context_options co;
    owl_context_options_init(&co, sizeof co);
    co.num_threads = threads;
    owl_context *ctx = NULL;
    if (owl_context_create(&ctx, &co) != OWL_OK)
        return 1;

    bench_cpu_model(cpu, sizeof cpu);
    printf("LLaMa training step: dim %d, %d layers, %d heads, hidden %d, "
           "vocab %d, tied; %.1fM parameters; batch %d x %d tokens\n",
           cfg.dim, cfg.n_layers, cfg.n_heads, cfg.hidden_dim,
           cfg.vocab_size, (double)llama_param_count(&cfg) / 1e6, B, T);
    printf("CPU: %s; %d threads (OpenBLAS, libowlore context, torch)\n", cpu,
           threads);
    bench_timing full, owlore;
    step_setup st = {OWL_METHOD_FULL, 64, 2, 50, 200, WARMUP, REPS, 0.0, 0.25};
    int rc = run_c(ctx, &m, &st, tokens, targets, B, T, &full);
    st.method = OWL_METHOD_OWLORE;
    if (rc == 0)
        rc = run_c(ctx, &m, &st, tokens, targets, B, T, &owlore);
    double torch_med = 0.0;
    if (rc == 0 && run_torch(argv[1], argv[2], &cfg, B, threads, &torch_med)) {
        fprintf(stderr, "bench_llama: the PyTorch baseline failed\n");
        rc = 1;
    }
    if (rc == 0) {
        printf("%-34s %9s %12s\n", "step (median of 5)", "seconds", "tokens/s");
        printf("%-34s %9.3f %12.0f\n", "C model + owl_optimizer FULL",
               full.median, (double)n / full.median);
        printf("%-34s %9.3f %12.0f\n", "C model + owl_optimizer OWLORE",
               owlore.median, (double)n / owlore.median);
        printf("%-34s %9.3f %12.0f\n", "PyTorch + torch.optim.AdamW",
               torch_med, (double)n / torch_med);
        printf("C FULL vs PyTorch: %.2fx the tokens/s (target: > 1)\n",
               torch_med / full.median);
    }
    owl_context_free(ctx);
    free(tokens);
    free(targets);
    llama_destroy(&m);
    return rc;
}
