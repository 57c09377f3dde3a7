/*
 * llama --device cuda: the training loop of train.c on the device model.
 *
 * Per step: the optimizer's active layers -> the model's trainable set
 * (its gradient pool bound to exactly those layers, the optimizer's
 * gradients rebound when the set changes) -> forward and backward on the
 * model's stream -> with NCCL, the gradients averaged across ranks -> the
 * optimizer step on the same stream through libowlore's CUDA backend. The
 * host waits for the device once a step, to read the loss.
 *
 * The weights are bf16 and updated with stochastic rounding.
 *
 * Sampled methods (OWLORE, OWLORE_FULL, LISA) run with a frozen policy
 * that keeps no optimizer state on the device for frozen layers: KEEP
 * becomes OFFLOAD (the state waits in pinned host memory and resumes) and
 * RESET becomes FREE (fresh state on activation, as a reset would give).
 *
 * At the end, the memory report: the device bytes of each category at
 * their peak next to owl_memory_plan_compute's prediction for the same
 * model shape and optimizer options, and the device's own view.
 */
#include "train_gpu.h"

#include "gpu.h"
#include "llama_gpu.h"
#ifdef LLAMA_HAVE_NCCL
#include "dist.h"
#endif

#include <cuda_runtime_api.h>

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int train_gpu_check_device(int device, char *err, size_t errlen)
{
    int n = gd_device_count(err, errlen);
    if (n == 0)
        return -1;
    if (device < 0 || device >= n) {
        snprintf(err, errlen, "no CUDA device %d (there are %d)", device, n);
        return -1;
    }
    if (!owl_backend_available(OWL_BACKEND_CUDA)) {
        snprintf(err, errlen, "libowlore was built without its CUDA backend");
        return -1;
    }
    return 0;
}

int train_gpu_rank(void)
{
#ifdef LLAMA_HAVE_NCCL
    int rank = 0, world = 1, local_rank = 0;
    if (llama_dist_from_env(&rank, &world, &local_rank) == 0)
        return rank;
#endif
    return 0;
}

/* Everything a run holds, released in one place. */
typedef struct run_state {
    const train_gpu_run *r;
    int rank, world, local_rank, device;
    int B; /* this rank's sequences per step */
    llama_gpu *m;
    owl_context *ctx;
    owl_optimizer *opt;
    owl_optimizer_options oo;
    owl_sampler_options so;
    owl_galore_options go;
    owl_adamw_options ao;
#ifdef LLAMA_HAVE_NCCL
    llama_dist *dist;
#endif
    int32_t *in, *tg;
    uint8_t *mask, *bound;
    /* Peaks of the optimizer's device bytes over the run. */
    owl_memory_usage peak;
    char *err;
    size_t errlen;
} run_state;

static int fail(run_state *g, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g->err, g->errlen, fmt, ap);
    va_end(ap);
    return -1;
}

static int owl_fail(run_state *g, const char *call, owl_status s)
{
    return fail(g, "%s failed: %s: %s", call, owl_status_name(s),
                owl_context_last_error(g->ctx));
}

#define OWL_TRY(g, call)                                                       \
    do {                                                                       \
        owl_status st_ = (call);                                               \
        if (st_ != OWL_OK)                                                     \
            return owl_fail(g, #call, st_);                                    \
    } while (0)

#define MODEL_TRY(g, call)                                                     \
    do {                                                                       \
        if ((call) != 0)                                                       \
            return fail(g, "%s failed: %s", #call, llama_gpu_error((g)->m));   \
    } while (0)

static int is_sampled(owl_method m)
{
    return m == OWL_METHOD_OWLORE || m == OWL_METHOD_OWLORE_FULL ||
           m == OWL_METHOD_LISA;
}

/* The optimizer options of train.c's make_optimizer, with the frozen
 * policy moved off the device for sampled methods. */
static int optimizer_options(run_state *g)
{
    const train_gpu_run *r = g->r;
    int L = r->model->cfg.n_layers;
    OWL_TRY(g, owl_sampler_options_init(&g->so, sizeof g->so));
    OWL_TRY(g, owl_galore_options_init(&g->go, sizeof g->go));
    OWL_TRY(g, owl_adamw_options_init(&g->ao, sizeof g->ao));
    OWL_TRY(g, owl_optimizer_options_init(&g->oo, sizeof g->oo));
    g->so.gamma = (uint64_t)r->gamma;
    g->so.period = (uint64_t)r->period;
    g->so.seed = r->seed;
    if (r->method == OWL_METHOD_OWLORE || r->method == OWL_METHOD_OWLORE_FULL) {
        g->so.weight_mode = OWL_WEIGHTS_OWLORE;
        g->so.weights = r->lod_weights;
    }
    g->go.rank = (uint64_t)r->rank;
    g->go.update_gap = (uint64_t)r->update_gap;
    g->go.scale = r->galore_scale;
    g->ao.moment_dtype = r->moments;
    /* bf16 weights: an update below half a unit in the last place would
     * be lost to round-to-nearest at every step (lr 1e-4 on a weight of
     * 0.05 is under half of bf16's 2.4e-4 spacing there); stochastic
     * rounding keeps the expected weight on the f32 trajectory. */
    g->ao.rounding = OWL_ROUND_STOCHASTIC;
    g->ao.seed = r->seed;
    g->oo.method = r->method;
    g->oo.frozen_policy = r->policy;
    if (is_sampled(r->method)) {
        if (r->policy == OWL_FROZEN_KEEP)
            g->oo.frozen_policy = OWL_FROZEN_OFFLOAD;
        else if (r->policy == OWL_FROZEN_RESET)
            g->oo.frozen_policy = OWL_FROZEN_FREE;
        if (g->oo.frozen_policy != r->policy && g->rank == 0)
            printf("frozen layers' optimizer state: %s on the GPU (no "
                   "device memory while frozen)\n",
                   g->oo.frozen_policy == OWL_FROZEN_OFFLOAD
                       ? "offload (kept in pinned host memory)"
                       : "free (fresh state on activation)");
    }
    g->oo.num_layers = (uint64_t)L;
    g->oo.sampler = &g->so;
    g->oo.galore = &g->go;
    g->oo.adamw = &g->ao;
    g->oo.max_grad_norm = r->clip;
    return 0;
}

static int setup(run_state *g)
{
    const train_gpu_run *r = g->r;
    const llama_config *cfg = &r->model->cfg;
    char err[512];
    g->rank = 0;
    g->world = 1;
    g->local_rank = 0;
    g->device = r->device;
#ifdef LLAMA_HAVE_NCCL
    if (llama_dist_from_env(&g->rank, &g->world, &g->local_rank) != 0)
        return fail(g, "llama_dist_from_env: the rank variables of the "
                    "environment are unusable");
    if (g->world > 1)
        g->device = g->local_rank;
#endif
    if (r->batch % g->world != 0)
        return fail(g, "--batch %d is not a multiple of the %d ranks",
                    r->batch, g->world);
    g->B = r->batch / g->world;
    if (r->gamma > cfg->n_layers)
        return fail(g, "--gamma %d is more than the model's %d layers",
                    r->gamma, cfg->n_layers);
    if (train_gpu_check_device(g->device, err, sizeof err) != 0)
        return fail(g, "%s", err);

    /* The model: the gradient pool holds gamma layers for the sampled
     * methods, every layer otherwise. */
    llama_gpu_options mo;
    llama_gpu_options_default(&mo, cfg);
    mo.device = g->device;
    mo.max_batch = g->B;
    mo.max_trainable_layers = is_sampled(r->method) ? r->gamma
                                                    : cfg->n_layers;
    mo.recompute = r->recompute;
    if (llama_gpu_create(&g->m, cfg, &mo, err, sizeof err) != 0)
        return fail(g, "llama_gpu_create: %s", err);
    MODEL_TRY(g, llama_gpu_upload(g->m, &r->model->w));

    /* The optimizer's context: CUDA, the model's device and stream. */
    owl_context_options co;
    owl_status s = owl_context_options_init(&co, sizeof co);
    if (s != OWL_OK)
        return fail(g, "owl_context_options_init: %s", owl_status_name(s));
    co.backend = OWL_BACKEND_CUDA;
    co.device = g->device;
    s = owl_context_create(&g->ctx, &co);
    if (s != OWL_OK)
        return fail(g, "owl_context_create (CUDA, device %d): %s", g->device,
                    owl_status_name(s));
    OWL_TRY(g, owl_context_set_stream(g->ctx, llama_gpu_stream(g->m)));
    if (optimizer_options(g) != 0)
        return -1;
    OWL_TRY(g, owl_optimizer_create(g->ctx, &g->oo, &g->opt));
    MODEL_TRY(g, llama_gpu_register(g->m, g->opt));
    OWL_TRY(g, owl_memory_usage_init(&g->peak, sizeof g->peak));

#ifdef LLAMA_HAVE_NCCL
    /* One process per GPU; rank 0 publishes NCCL's id in this file. */
    const char *id_path = getenv("LLAMA_NCCL_ID_FILE");
    if (!id_path)
        id_path = "llama-nccl.id";
    if (g->world > 1 &&
        llama_dist_create(&g->dist, g->rank, g->world, id_path, 300.0,
                          llama_gpu_stream(g->m), err, sizeof err) != 0)
        return fail(g, "llama_dist_create (rank %d of %d, id file %s): %s",
                    g->rank, g->world, id_path, err);
    if (g->dist && llama_dist_broadcast_weights(g->dist, g->m, 0) != 0)
        return fail(g, "llama_dist_broadcast_weights: %s",
                    llama_dist_error(g->dist));
#endif

    size_t bt = (size_t)r->batch * (size_t)r->seq;
    int L = cfg->n_layers;
    g->in = malloc(bt * sizeof *g->in);
    g->tg = malloc(bt * sizeof *g->tg);
    g->mask = malloc((size_t)L);
    g->bound = malloc((size_t)L);
    if (!g->in || !g->tg || !g->mask || !g->bound)
        return fail(g, "out of host memory for a batch");
    memset(g->bound, 0xff, (size_t)L); /* no set bound yet */
    return 0;
}

static void teardown(run_state *g)
{
#ifdef LLAMA_HAVE_NCCL
    llama_dist_destroy(g->dist);
#endif
    owl_optimizer_free(g->opt);
    owl_context_free(g->ctx);
    llama_gpu_destroy(g->m);
    free(g->in);
    free(g->tg);
    free(g->mask);
    free(g->bound);
}

/* Mean held-out loss over eval_batches batches of the full B sequences,
 * run in slices of this rank's batch size (every rank computes the same
 * value). */
static int eval_loss(run_state *g, double *out)
{
    const train_gpu_run *r = g->r;
    char err[256];
    double sum = 0.0;
    int T = r->seq;
    for (int i = 0; i < r->eval_batches; i++) {
        if (data_batch(r->held, r->batch, T, r->eval_seed, (uint64_t)i, g->in,
                       g->tg, err, sizeof err) != 0)
            return fail(g, "%s", err);
        double batch_sum = 0.0;
        for (int b = 0; b < r->batch; b += g->B) {
            int nb = r->batch - b < g->B ? r->batch - b : g->B;
            double loss;
            size_t at = (size_t)b * T;
            MODEL_TRY(g, llama_gpu_forward(g->m, g->in + at, g->tg + at, nb,
                                           T, &loss));
            batch_sum += loss * nb;
        }
        sum += batch_sum / r->batch;
    }
    *out = sum / r->eval_batches;
    if (!isfinite(*out))
        return fail(g, "the held-out loss is %g", *out);
    return 0;
}

static void track_peak(run_state *g, const owl_memory_usage *u)
{
#define PEAK(f) g->peak.f = u->f > g->peak.f ? u->f : g->peak.f
    PEAK(device_moments);
    PEAK(device_projectors);
    PEAK(device_workspace);
    PEAK(host_moments);
    PEAK(host_projectors);
    PEAK(host_workspace);
#undef PEAK
}

static int train_loop(run_state *g)
{
    const train_gpu_run *r = g->r;
    int L = r->model->cfg.n_layers, T = r->seq;
    char err[256];
    size_t slice = (size_t)g->rank * g->B * T;
    double before;
    if (eval_loss(g, &before) != 0)
        return -1;
    if (g->rank == 0)
        printf("%d steps of %d x %d tokens on device %d (%d rank%s), "
               "held-out loss %.4f\n", r->steps, r->batch, T, g->device,
               g->world, g->world > 1 ? "s" : "", before);
    double t_start = now_s(), last_eval = NAN;
    for (int step = 0; step < r->steps; step++) {
        double t0 = now_s();
        OWL_TRY(g, owl_optimizer_active_layers(g->opt, g->mask, (uint64_t)L,
                                               NULL));
        if (memcmp(g->mask, g->bound, (size_t)L) != 0) {
            /* A new active set: pool slots to its layers, and the
             * optimizer reads their gradients there. */
            MODEL_TRY(g, llama_gpu_set_trainable(g->m, g->mask));
            MODEL_TRY(g, llama_gpu_bind_grads(g->m, g->opt));
            memcpy(g->bound, g->mask, (size_t)L);
        }
        if (data_batch(r->train, r->batch, T, r->seed, (uint64_t)step, g->in,
                       g->tg, err, sizeof err) != 0)
            return fail(g, "%s", err);
        double loss;
        MODEL_TRY(g, llama_gpu_forward(g->m, g->in + slice, g->tg + slice,
                                       g->B, T, &loss));
        if (!isfinite(loss))
            return fail(g, "step %d: the loss is %g", step, loss);
        MODEL_TRY(g, llama_gpu_backward(g->m));
#ifdef LLAMA_HAVE_NCCL
        if (g->dist && llama_dist_allreduce_grads(g->dist, g->m) != 0)
            return fail(g, "llama_dist_allreduce_grads: %s",
                        llama_dist_error(g->dist));
#endif
        OWL_TRY(g, owl_optimizer_step(g->opt, r->lr[step]));
        double dt = now_s() - t0;

        owl_memory_usage u;
        OWL_TRY(g, owl_memory_usage_init(&u, sizeof u));
        OWL_TRY(g, owl_optimizer_memory(g->opt, &u));
        track_peak(g, &u);
        double eval = NAN;
        int last = step + 1 == r->steps;
        if ((step + 1) % r->eval_every == 0 || last) {
            if (eval_loss(g, &eval) != 0)
                return -1;
            last_eval = eval;
        }
        if (g->rank == 0 &&
            ((step + 1) % r->log_every == 0 || step == 0 || last ||
             isfinite(eval)))
            train_print_step(step + 1, loss, r->lr[step],
                             r->batch * T / dt, g->mask, L,
                             u.device_moments + u.device_projectors +
                                 u.host_moments + u.host_projectors,
                             eval);
    }
    OWL_TRY(g, owl_context_synchronize(g->ctx));
    uint64_t skips = 0;
    OWL_TRY(g, owl_context_nonfinite_skips(g->ctx, &skips));
    if (g->rank == 0) {
        printf("\nsummary: held-out loss %.4f -> %.4f, %.1f s", before,
               last_eval, now_s() - t_start);
        if (skips)
            printf(", %llu step(s) skipped for a non-finite gradient",
                   (unsigned long long)skips);
        printf("\n");
    }
    return 0;
}

static double mib(uint64_t b) { return (double)b / (1024.0 * 1024.0); }

static void report_row(const char *label, double measured, double planned)
{
    printf("  %-38s %10.2f", label, measured);
    if (isfinite(planned))
        printf(" %10.2f\n", planned);
    else
        printf(" %10s\n", "-");
}

/* The memory report: measured peaks by category next to the planner. */
static int memory_report(run_state *g)
{
    const llama_config *c = &g->r->model->cfg;
    owl_model_shape shape;
    owl_memory_plan plan;
    OWL_TRY(g, owl_model_shape_init(&shape, sizeof shape));
    OWL_TRY(g, owl_memory_plan_init(&plan, sizeof plan));
    shape.num_layers = (uint64_t)c->n_layers;
    shape.hidden = (uint64_t)c->dim;
    shape.intermediate = (uint64_t)c->hidden_dim;
    shape.heads = (uint64_t)c->n_heads;
    shape.kv_heads = (uint64_t)c->n_kv_heads;
    shape.vocab = (uint64_t)c->vocab_size;
    shape.weight_dtype = OWL_DTYPE_BF16;
    shape.grad_dtype = OWL_DTYPE_BF16;
    shape.tied_embeddings = c->tied;
    OWL_TRY(g, owl_memory_plan_compute(g->ctx, &shape, &g->oo, &plan));

    llama_gpu_memory mm;
    llama_gpu_memory_get(g->m, &mm);
    cudaError_t e = cudaSetDevice(g->device);
    size_t dev_free = 0, dev_total = 0;
    if (e == cudaSuccess)
        e = cudaMemGetInfo(&dev_free, &dev_total);
    if (e != cudaSuccess)
        return fail(g, "cudaMemGetInfo: %s", cudaGetErrorString(e));
    if (g->rank != 0)
        return 0;
    uint64_t ws = mm.workspace + g->peak.device_workspace;
    uint64_t total = mm.weights + mm.grads + g->peak.device_moments +
                     g->peak.device_projectors + mm.activations + ws;
    char label[96];
    printf("\ndevice memory at peak (MiB)               measured    planned\n");
    report_row("weights (bf16)", mib(mm.weights), mib(plan.weights));
    int pool = is_sampled(g->r->method) ? g->r->gamma : c->n_layers;
    snprintf(label, sizeof label, "gradients (bf16, pool of %d layers)", pool);
    report_row(label, mib(mm.grads), mib(plan.gradients));
    report_row("optimizer state (AdamW moments)", mib(g->peak.device_moments),
               mib(plan.optimizer_state));
    report_row("GaLore projectors", mib(g->peak.device_projectors),
               mib(plan.projectors));
    snprintf(label, sizeof label, "activations (%d x %d tokens%s)", g->B,
             g->r->seq, g->r->recompute ? ", recompute" : "");
    report_row(label, mib(mm.activations), NAN);
    snprintf(label, sizeof label, "workspace (model %.2f + owl %.2f)",
             mib(mm.workspace), mib(g->peak.device_workspace));
    report_row(label, mib(ws), mib(plan.workspace));
    report_row("total", mib(total), mib(plan.total));
    printf("  (planned: owl_memory_plan_compute for this shape and these "
           "optimizer options;\n   it does not model activations)\n");
    printf("  host (pinned): offloaded moments %.2f, projectors %.2f\n",
           mib(g->peak.host_moments), mib(g->peak.host_projectors));
    printf("  device's own view (cudaMemGetInfo): %.2f used of %.2f "
           "(includes the CUDA context, cuBLAS and other processes)\n",
           mib((uint64_t)(dev_total - dev_free)), mib((uint64_t)dev_total));
    return 0;
}

int train_gpu(const train_gpu_run *r, char *err, size_t errlen)
{
    run_state g;
    memset(&g, 0, sizeof g);
    g.r = r;
    g.err = err;
    g.errlen = errlen;
    if (!r || !r->model || !r->train || !r->held || !r->lr) {
        snprintf(err, errlen, "train_gpu: a required argument is NULL");
        return -1;
    }
    int rc = setup(&g);
    if (rc == 0)
        rc = train_loop(&g);
    if (rc == 0)
        rc = memory_report(&g);
    teardown(&g);
    return rc;
}
