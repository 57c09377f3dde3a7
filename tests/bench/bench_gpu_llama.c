/*
 * The LLaMa example's device model at ~1B parameters on one GPU: training
 * throughput and device memory of OWLORE (gamma 2, rank 128), LISA (gamma
 * 2) and FULL, each next to libowlore's memory planner.
 *
 * The model has TinyLlama-1.1B's shape (dim 2048, MLP 5632, 22 layers, 32
 * heads, 4 KV heads, vocab 32000, untied head) with random weights; the
 * data are random tokens (throughput depends on neither). Drawing 1.1e9
 * normal values on the host (llama_gpu_init_random) would take most of
 * the time box, three times over, so one buffer of uniform values with the
 * same std (0.02), as large as the largest tensor, is made once on the
 * host, kept on the device and copied into every matrix of each model;
 * the norm gains are set to 1. Each method: the model, a CUDA context on
 * the model's stream, an owl_optimizer (OFFLOAD for frozen layers, f32 moments, clipping at
 * 1.0, GaLore's RANDOMIZED refresh so the first step's 14 subspaces fit
 * the time box; refreshes recur every 200 steps, outside the steady state
 * timed here), one first step (lazy optimizer state and the first
 * subspaces; reported apart), one warm-up step, then timed steps: forward
 * (which waits for the loss), backward, optimizer step, as the trainer
 * does. tokens/s = timed steps * B * T / their wall time.
 *
 * Memory per method: the model's categories (llama_gpu_memory_get:
 * weights, gradient pool, activations, workspace), the optimizer's
 * (owl_optimizer_memory: moments, projectors, the context's scratch), their
 * sum, and what the device itself reports used (cudaMemGetInfo, highest
 * after any step, minus what was used before the method began: this also
 * holds the CUDA/cuBLAS runtime's own allocations). The planner
 * (owl_memory_plan_compute) predicts weights, gradients, optimizer state,
 * projectors and workspace, not activations.
 *
 * The whole run keeps to LLAMA_BENCH_BUDGET_S seconds (default 100): each
 * method gets a share of what is left and stops its timed steps when that
 * runs out (at least one). Environment: LLAMA_BENCH_BATCH (default 4),
 * LLAMA_BENCH_SEQ (default 1024), LLAMA_BENCH_STEPS (timed steps, default
 * 5), LLAMA_BENCH_LAYERS (default 22). Exits 77 (SKIP) without a device.
 */
#include "bench_gpu_check.h"
#include "llama.h"
#include "llama_gpu.h"

#include <owlore/owlore.h>

#include <cuda_runtime_api.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define GAMMA 2
#define RANK 128


#define MOK(m, call)                                                          \
    do {                                                                      \
        if ((call) != 0) {                                                    \
            fprintf(stderr, "%s: %s\n", #call, llama_gpu_error(m));           \
            exit(1);                                                          \
        }                                                                     \
    } while (0)

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int env_int(const char *name, int def, int lo, int hi)
{
    const char *s = getenv(name);
    if (!s || !*s)
        return def;
    char *end = NULL;
    long v = strtol(s, &end, 10);
    if (*end != '\0' || v < lo || v > hi) {
        fprintf(stderr, "%s=%s: expected an integer in [%d, %d]\n", name, s,
                lo, hi);
        exit(2);
    }
    return (int)v;
}

static uint64_t device_used(void)
{
    size_t free_b = 0, total_b = 0;
    CK(cudaMemGetInfo(&free_b, &total_b));
    return (uint64_t)(total_b - free_b);
}

static double gib(uint64_t b)
{
    return (double)b / (1024.0 * 1024.0 * 1024.0);
}

/* bf16 (round to nearest even) of a finite float */
static uint16_t to_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

/* Device buffers the models' weights are copied from: `random` holds
 * uniform values of std 0.02 (as many as the largest tensor), `ones` the
 * norm gains. */
typedef struct weight_source {
    void *random, *ones;
    size_t n_random, n_ones;
} weight_source;

static void source_create(weight_source *w, const llama_config *cfg)
{
    size_t big = (size_t)cfg->vocab_size * (size_t)cfg->dim;
    size_t mlp = (size_t)cfg->hidden_dim * (size_t)cfg->dim;
    w->n_random = big > mlp ? big : mlp;
    w->n_ones = (size_t)cfg->dim;
    uint16_t *h = malloc(w->n_random * sizeof *h);
    if (!h) {
        fprintf(stderr, "out of host memory\n");
        exit(1);
    }
    /* uniform on [-a, a] has std a / sqrt(3) */
    const float a = 0.02f * 1.7320508f;
    uint64_t x = 0x9E3779B97F4A7C15ull;
    for (size_t i = 0; i < w->n_random; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        float u = (float)(x >> 40) * (1.0f / 16777216.0f); /* [0, 1) */
        h[i] = to_bf16((2.0f * u - 1.0f) * a);
    }
    CK(cudaMalloc(&w->random, w->n_random * sizeof *h));
    CK(cudaMemcpy(w->random, h, w->n_random * sizeof *h,
                  cudaMemcpyHostToDevice));
    for (size_t i = 0; i < w->n_ones; i++)
        h[i] = to_bf16(1.0f);
    CK(cudaMalloc(&w->ones, w->n_ones * sizeof *h));
    CK(cudaMemcpy(w->ones, h, w->n_ones * sizeof *h, cudaMemcpyHostToDevice));
    free(h);
}

/* Every weight of m from the source, on the model's stream. */
static void fill_weights(llama_gpu *m, const weight_source *w)
{
    cudaStream_t s = (cudaStream_t)llama_gpu_stream(m);
    for (int64_t i = 0; i < llama_gpu_num_tensors(m); i++) {
        llama_gpu_tensor t;
        MOK(m, llama_gpu_tensor_get(m, i, &t));
        size_t n = (size_t)(t.weight.rows * t.weight.cols);
        int gain = t.weight.rows == 1;
        if (t.weight.dtype != OWL_DTYPE_BF16 ||
            t.weight.row_stride != t.weight.cols ||
            n > (gain ? w->n_ones : w->n_random)) {
            fprintf(stderr, "%s: unexpected %lldx%lld dtype %d\n", t.name,
                    (long long)t.weight.rows, (long long)t.weight.cols,
                    (int)t.weight.dtype);
            exit(1);
        }
        CK(cudaMemcpyAsync(t.weight.data, gain ? w->ones : w->random, n * 2,
                           cudaMemcpyDeviceToDevice, s));
    }
    CK(cudaStreamSynchronize(s));
}

typedef struct method_result {
    const char *name;
    owl_method method;
    int done;
    int timed_steps;
    double first_s, step_s, tokens_per_s, loss_first, loss_last;
    llama_gpu_memory model;
    owl_memory_usage opt;
    uint64_t device_delta;
    owl_memory_plan plan;
} method_result;

/* Random tokens and their next-token targets, fixed by a seed. */
static void fill_tokens(int32_t *tok, int32_t *tgt, int B, int T, int vocab,
                        uint64_t seed)
{
    uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
    for (int b = 0; b < B; b++) {
        int32_t prev = 0;
        for (int t = 0; t <= T; t++) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            int32_t v = (int32_t)(x % (uint64_t)vocab);
            if (t > 0) {
                tok[b * T + t - 1] = prev;
                tgt[b * T + t - 1] = v;
            }
            prev = v;
        }
    }
}

static void run_method(method_result *r, const llama_config *cfg,
                       const weight_source *src, int B, int T, int steps,
                       double budget_s)
{
    const double t_start = now_s();
    const int L = cfg->n_layers;
    const int sampled = r->method != OWL_METHOD_FULL;
    CK(cudaDeviceSynchronize());
    const uint64_t used0 = device_used();

    llama_gpu_options o;
    llama_gpu_options_default(&o, cfg);
    o.device = 0;
    o.stream = NULL; /* the model's own */
    o.max_batch = B;
    o.max_trainable_layers = sampled ? GAMMA : L;
    o.train_embeddings = 1;
    o.train_head = 1;
    o.recompute = 0;
    char err[512] = "";
    llama_gpu *m = NULL;
    if (llama_gpu_create(&m, cfg, &o, err, sizeof err) != 0) {
        fprintf(stderr, "%s: llama_gpu_create: %s\n", r->name, err);
        exit(1);
    }
    fill_weights(m, src);

    owl_context_options co;
    owl_context_options_init(&co, sizeof co);
    co.backend = OWL_BACKEND_CUDA;
    co.device = 0;
    owl_context *ctx = NULL;
    if (owl_context_create(&ctx, &co) != OWL_OK) {
        fprintf(stderr, "cannot create a CUDA context\n");
        exit(1);
    }
    OK(ctx, owl_context_set_stream(ctx, llama_gpu_stream(m)));

    double *ratios = malloc((size_t)L * sizeof(double));
    if (!ratios) {
        fprintf(stderr, "out of host memory\n");
        exit(1);
    }
    for (int l = 0; l < L; l++)
        ratios[l] = 1.0; /* the draw's law does not change the cost */
    owl_sampler_options so;
    owl_sampler_options_init(&so, sizeof so);
    so.gamma = GAMMA;
    so.period = 1000; /* no resampling inside the timed steps */
    so.seed = 0;
    so.weight_mode = r->method == OWL_METHOD_OWLORE ? OWL_WEIGHTS_OWLORE
                                                    : OWL_WEIGHTS_UNIFORM;
    so.weights = r->method == OWL_METHOD_OWLORE ? ratios : NULL;
    owl_galore_options go;
    owl_galore_options_init(&go, sizeof go);
    go.rank = RANK;
    go.update_gap = 200;
    go.scale = 0.25;
    go.svd_method = OWL_SVD_RANDOMIZED;
    owl_optimizer_options oo;
    owl_optimizer_options_init(&oo, sizeof oo);
    oo.method = r->method;
    oo.frozen_policy = OWL_FROZEN_OFFLOAD;
    oo.num_layers = (uint64_t)L;
    oo.sampler = &so;
    oo.galore = &go;
    oo.max_grad_norm = 1.0;
    owl_optimizer *opt = NULL;
    OK(ctx, owl_optimizer_create(ctx, &oo, &opt));
    MOK(m, llama_gpu_register(m, opt));

    /* What the planner predicts for this configuration. */
    owl_model_shape shape;
    owl_model_shape_init(&shape, sizeof shape);
    shape.num_layers = (uint64_t)L;
    shape.hidden = (uint64_t)cfg->dim;
    shape.intermediate = (uint64_t)cfg->hidden_dim;
    shape.heads = (uint64_t)cfg->n_heads;
    shape.kv_heads = (uint64_t)cfg->n_kv_heads;
    shape.vocab = (uint64_t)cfg->vocab_size;
    shape.weight_dtype = OWL_DTYPE_BF16;
    shape.grad_dtype = OWL_DTYPE_BF16;
    shape.tied_embeddings = cfg->tied;
    owl_memory_plan_init(&r->plan, sizeof r->plan);
    OK(ctx, owl_memory_plan_compute(ctx, &shape, &oo, &r->plan));

    int32_t *tok = malloc((size_t)B * T * sizeof(int32_t));
    int32_t *tgt = malloc((size_t)B * T * sizeof(int32_t));
    uint8_t *mask = malloc((size_t)L);
    if (!tok || !tgt || !mask) {
        fprintf(stderr, "out of host memory\n");
        exit(1);
    }
    uint64_t peak_used = 0;
    double loss = 0;

    /* One training step as the trainer takes it. */
#define STEP(seed)                                                            \
    do {                                                                      \
        OK(ctx, owl_optimizer_active_layers(opt, mask, (uint64_t)L, NULL));   \
        MOK(m, llama_gpu_set_trainable(m, mask));                             \
        MOK(m, llama_gpu_bind_grads(m, opt));                                 \
        fill_tokens(tok, tgt, B, T, cfg->vocab_size, (seed));                 \
        MOK(m, llama_gpu_forward(m, tok, tgt, B, T, &loss));                  \
        MOK(m, llama_gpu_backward(m));                                        \
        OK(ctx, owl_optimizer_step(opt, 1e-5));                               \
    } while (0)

    double t0 = now_s();
    STEP(1);
    OK(ctx, owl_context_synchronize(ctx));
    r->first_s = now_s() - t0;
    r->loss_first = loss;
    uint64_t u = device_used();
    peak_used = u > peak_used ? u : peak_used;
    /* A warm-up step, unless the first one already took a third of this
     * method's time (a slow device still reports a timed step). */
    if (r->first_s < budget_s / 3) {
        STEP(2);
        OK(ctx, owl_context_synchronize(ctx));
        u = device_used();
        peak_used = u > peak_used ? u : peak_used;
    }

    t0 = now_s();
    int done = 0;
    while (done < steps) {
        STEP(3 + (uint64_t)done);
        done++;
        if (now_s() - t_start > budget_s)
            break;
    }
    OK(ctx, owl_context_synchronize(ctx));
    double elapsed = now_s() - t0;
    u = device_used();
    peak_used = u > peak_used ? u : peak_used;
#undef STEP

    r->timed_steps = done;
    r->step_s = elapsed / done;
    r->tokens_per_s = (double)done * B * T / elapsed;
    r->loss_last = loss;
    llama_gpu_memory_get(m, &r->model);
    owl_memory_usage_init(&r->opt, sizeof r->opt);
    OK(ctx, owl_optimizer_memory(opt, &r->opt));
    r->device_delta = peak_used > used0 ? peak_used - used0 : 0;
    uint64_t skips = 0;
    OK(ctx, owl_context_nonfinite_skips(ctx, &skips));
    if (skips)
        fprintf(stderr, "%s: %llu steps skipped as non-finite\n", r->name,
                (unsigned long long)skips);
    r->done = 1;
    /* at once, so a run stopped later still leaves this figure */
    printf("%s: %.0f tokens/s, %.1f ms a step (%d timed), first step "
           "%.2f s, device used %.2f GiB\n", r->name, r->tokens_per_s,
           1e3 * r->step_s, r->timed_steps, r->first_s,
           gib(r->device_delta));
    fflush(stdout);

    owl_optimizer_free(opt);
    owl_context_free(ctx);
    llama_gpu_destroy(m);
    free(tok);
    free(tgt);
    free(mask);
    free(ratios);
    CK(cudaDeviceSynchronize());
}

int main(void)
{
    int devices = 0;
    if (!owl_backend_available(OWL_BACKEND_CUDA) ||
        cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
        printf("SKIP: no CUDA backend or device\n");
        return 77;
    }
    const int B = env_int("LLAMA_BENCH_BATCH", 4, 1, 1024);
    const int T = env_int("LLAMA_BENCH_SEQ", 1024, 16, 2048);
    const int steps = env_int("LLAMA_BENCH_STEPS", 5, 1, 1000);
    const int layers = env_int("LLAMA_BENCH_LAYERS", 22, GAMMA, 22);
    const double budget = env_int("LLAMA_BENCH_BUDGET_S", 100, 10, 3600);
    const double t_begin = now_s();

    /* TinyLlama-1.1B */
    llama_config cfg = {
        .dim = 2048, .hidden_dim = 5632, .n_layers = layers, .n_heads = 32,
        .n_kv_heads = 4, .vocab_size = 32000, .seq_len = T,
        .rope_theta = 10000.0f, .norm_eps = 1e-5f, .tied = 0,
    };
    char err[256];
    if (llama_config_check(&cfg, err, sizeof err) != 0) {
        fprintf(stderr, "config: %s\n", err);
        return 1;
    }
    struct cudaDeviceProp prop;
    CK(cudaSetDevice(0));
    CK(cudaGetDeviceProperties(&prop, 0));
    const double params = (double)llama_param_count(&cfg);
    printf("device: %s, %.1f GiB\n", prop.name, gib(prop.totalGlobalMem));
    printf("model: TinyLlama-1.1B shape, %d layers, %.3f B parameters, bf16 "
           "weights and gradients, f32 moments; batch %d x %d tokens\n",
           layers, params / 1e9, B, T);

    method_result res[3] = {
        {.name = "OWLORE", .method = OWL_METHOD_OWLORE},
        {.name = "LISA", .method = OWL_METHOD_LISA},
        {.name = "FULL", .method = OWL_METHOD_FULL},
    };
    weight_source src;
    source_create(&src, &cfg);
    for (int i = 0; i < 3; i++) {
        double left = budget - (now_s() - t_begin);
        double share = left / (3 - i);
        if (left < 5) {
            printf("%s: not run, the time budget is spent\n", res[i].name);
            continue;
        }
        run_method(&res[i], &cfg, &src, B, T, steps, share);
        fprintf(stderr, "%s done after %.1f s\n", res[i].name,
                now_s() - t_begin);
    }

    printf("\n### Throughput (batch %d x %d = %d tokens per step)\n\n", B, T,
           B * T);
    printf("| method | trained layers | first step s | timed steps | step ms "
           "| tokens/s | loss first -> last |\n");
    printf("|---|---|---|---|---|---|---|\n");
    for (int i = 0; i < 3; i++) {
        const method_result *r = &res[i];
        if (!r->done)
            continue;
        char trained[32];
        if (r->method == OWL_METHOD_FULL)
            snprintf(trained, sizeof trained, "%d", layers);
        else
            snprintf(trained, sizeof trained, "%d of %d", GAMMA, layers);
        printf("| %s | %s | %.2f | %d | %.1f | %.0f | %.3f -> %.3f |\n",
               r->name, trained, r->first_s, r->timed_steps, 1e3 * r->step_s,
               r->tokens_per_s, r->loss_first, r->loss_last);
    }

    printf("\n### Device memory (GiB): measured, and the planner's "
           "prediction\n\n");
    printf("| method | source | weights | grads | opt. state | projectors "
           "| workspace | activations | total | device used (cudaMemGetInfo) "
           "|\n");
    printf("|---|---|---|---|---|---|---|---|---|---|\n");
    for (int i = 0; i < 3; i++) {
        const method_result *r = &res[i];
        if (!r->done)
            continue;
        uint64_t ws = r->model.workspace + r->opt.device_workspace;
        uint64_t sum = r->model.weights + r->model.grads +
                       r->opt.device_moments + r->opt.device_projectors + ws +
                       r->model.activations;
        printf("| %s | measured | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f | "
               "%.2f | %.2f |\n", r->name, gib(r->model.weights),
               gib(r->model.grads), gib(r->opt.device_moments),
               gib(r->opt.device_projectors), gib(ws),
               gib(r->model.activations), gib(sum), gib(r->device_delta));
        printf("| %s | planner | %.2f | %.2f | %.2f | %.2f | %.2f | - | "
               "%.2f | - |\n", r->name, gib(r->plan.weights),
               gib(r->plan.gradients), gib(r->plan.optimizer_state),
               gib(r->plan.projectors), gib(r->plan.workspace),
               gib(r->plan.total));
    }
    printf("\nmodel peak (llama_gpu_memory_get): ");
    for (int i = 0; i < 3; i++)
        printf("%s %.2f GiB%s", res[i].name, gib(res[i].model.peak_total),
               i < 2 ? ", " : "\n");
    printf("host (pinned) moments of frozen layers under OFFLOAD: ");
    for (int i = 0; i < 3; i++)
        printf("%s %.2f GiB%s", res[i].name, gib(res[i].opt.host_moments),
               i < 2 ? ", " : "\n");
    printf("wall time %.1f s (budget %.0f s)\n", now_s() - t_begin, budget);
    CK(cudaFree(src.random));
    CK(cudaFree(src.ones));
    return 0;
}
