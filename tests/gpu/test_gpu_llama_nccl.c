/*
 * NCCL data parallelism of the LLaMa example (examples/llama/cuda/dist.c)
 * with the device model (llama_gpu.h) and the optimizer on the CUDA
 * backend. Two modes, two meson tests:
 *
 * test_gpu_llama_nccl one-rank   (any CUDA device; 77 without one)
 *   A communicator of world 1 goes through the same NCCL calls as a real
 *   group: averaging the gradients and broadcasting the weights leave them
 *   bit for bit as they were; a model on another stream, a root out of
 *   range and bad create arguments are refused with a message and change
 *   nothing; a rank that waits for a missing id file times out.
 *
 * test_gpu_llama_nccl two-ranks  (77, with a message, below two devices:
 *   NCCL cannot put two ranks on one GPU)
 *   One process per GPU, as the trainer runs (launch.sh): the parent forks
 *   two rank processes that meet through an id file, and a third process
 *   for the reference; the parent itself never touches CUDA, so the
 *   children start from a clean CUDA state (a process that initialised
 *   CUDA cannot safely fork workers that use it). Threads with
 *   ncclCommInitAll would not exercise the id-file rendezvous nor the
 *   one-process-per-device layout the trainer uses.
 *   Each rank trains a small random LLaMa (4 layers) for N steps on its
 *   slice (B sequences) of a global batch of 2B, with FULL (clipping at
 *   0.5; the step-0 norm is about 2.4, so it acts) and with OWLORE
 *   (gamma 2, period 2, rank 8, OFFLOAD), the same sampler seed on every
 *   rank; rank 1 starts from other weights and gets
 *   rank 0's by broadcast. The reference is one process training the same
 *   model on the whole batch of 2B with no communicator. Checked:
 *   - the broadcast gives rank 1 exactly rank 0's weights;
 *   - every step, both ranks and the reference train the same layers;
 *   - after N steps both ranks hold bit-identical weights (identical
 *     averaged gradients into deterministic kernels: replicas that drift
 *     apart would need their weights synchronised, which data parallelism
 *     here does not do);
 *   - step 0, before the optimizer: each tensor's averaged gradient
 *     against the reference's full-batch gradient, rel. L2 <= 2^-6; the
 *     mean of the ranks' losses against the reference's loss, rel. 2e-3;
 *     the global gradient norm the optimizer measured (the one clipping
 *     uses) against the reference's, rel. 2^-6;
 *   - after N steps, each tensor: ||W_dp - W_ref|| <= tol ||W_ref - W_0||,
 *     tol 0.1 for full-rank updates and 0.5 for OWLORE's low-rank
 *     matrices (a tensor that never trained must be bit-identical to W_0).
 *
 * Tolerances. Gradients are bf16 (8 significant bits, rounding error
 * 2^-9 relative): the averaged gradient carries one rounding in each
 * rank's backward and one after the average, the reference's one; the
 * activations feeding the GEMMs are bf16 in both runs, and GEMMs of
 * different heights (B*T vs 2B*T rows) may sum in another order and round
 * an activation one ulp (2^-8) apart now and then. Together about 2^-7.4
 * in L2; 2^-6 leaves twice that. A sum instead of an average would be
 * off by 1.0, an unreduced gradient by O(1) (other data). Weights: Adam's
 * first updates are close to lr*sign(g), so an element whose gradient is
 * within the gradient error of zero may move the other way (2 lr per step
 * apart), and bf16 weights (an ulp is 1/8 to 1/16 of lr = 1e-3 at |w| ~
 * 0.02) round two slightly different updates one ulp apart now and then;
 * both effects are a few percent of the update norm, hence 10%. GaLore's
 * low-rank matrices are more sensitive: their update lives in the span of
 * the gradient's top-r singular vectors, and where singular values r and
 * r+1 are close, a perturbation of the gradient at its rounding level
 * turns that span noticeably, so the two runs' updates part by more than
 * the gradients do; hence 0.5 there. These bounds were checked against a
 * host simulation of this experiment (the f32 CPU model with bf16 weights
 * and gradients, the average rounded to bf16 as NCCL does, the CPU
 * backend's optimizer; five data seeds): worst step-0 gradient 0.004,
 * FULL weights 0.016, OWLORE full-rank tensors 0.01, low-rank matrices
 * 0.17; a rank's half batch alone (the control) was 0.7 to 1.2 on all of
 * them. The same experiment with this device model on the emulated device
 * (bf16 activations, the GPU path's code) runs in the CPU suite as
 * test_llama_dp_emu, with these very checks (llama_dp_experiment.h); when
 * written it gave 0.004, 0.028, 0.017 and 0.17. (The norm gains, 1.0 in
 * bf16, do not move at this learning rate: an update of 1e-3 is below
 * half an ulp there, so they are checked as unchanged, their gradients at
 * step 0.) The figures are printed beside the bounds, with the control,
 * which the gradient check must reject.
 */
#include "llama_dp_experiment.h"

#include "dist.h"
#include "llama_gpu.h"

#include <cuda_runtime_api.h>
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define CHILD_DEADLINE_S 240.0

/* ------------------------------------------------------------------ */
/* Child side: plain C, messages on stderr, an exit status             */
/* ------------------------------------------------------------------ */

#define CHILD_CHECK(cond, ...)                                                 \
    do {                                                                       \
        if (!(cond)) {                                                         \
            fprintf(stderr, "[%s] ", child_name);                              \
            fprintf(stderr, __VA_ARGS__);                                      \
            fputc('\n', stderr);                                               \
            _exit(1);                                                          \
        }                                                                      \
    } while (0)

static char child_name[32] = "parent";

static float bf16_to_f32(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* The gradients the model holds now, widened to f32 (waits for stream). */
static void snapshot_grads(llama_gpu *m, cudaStream_t stream, run_result *r)
{
    CHILD_CHECK(cudaStreamSynchronize(stream) == cudaSuccess, "sync");
    int64_t n = llama_gpu_num_tensors(m), total = 0;
    r->ngrads = 0;
    for (int64_t i = 0; i < n; i++) {
        llama_gpu_tensor t;
        CHILD_CHECK(llama_gpu_tensor_get(m, i, &t) == 0, "tensor_get: %s",
                    llama_gpu_error(m));
        if (!t.grad.data)
            continue;
        CHILD_CHECK(r->ngrads < 64, "too many gradients");
        r->grad_index[r->ngrads] = i;
        r->grad_count[r->ngrads] = t.grad.rows * t.grad.cols;
        r->ngrads++;
        total += t.grad.rows * t.grad.cols;
    }
    r->grads = malloc((size_t)total * sizeof(float));
    CHILD_CHECK(r->grads != NULL, "out of memory");
    size_t at = 0;
    for (int64_t k = 0; k < r->ngrads; k++) {
        llama_gpu_tensor t;
        llama_gpu_tensor_get(m, r->grad_index[k], &t);
        size_t cnt = (size_t)r->grad_count[k];
        CHILD_CHECK(t.grad.row_stride == t.grad.cols, "%s: strided gradient",
                    t.name);
        if (t.grad.dtype == OWL_DTYPE_F32) {
            CHILD_CHECK(cudaMemcpy(r->grads + at, t.grad.data, cnt * 4,
                                   cudaMemcpyDeviceToHost) == cudaSuccess,
                        "copy %s", t.name);
        } else {
            CHILD_CHECK(t.grad.dtype == OWL_DTYPE_BF16, "%s: grad dtype %d",
                        t.name, (int)t.grad.dtype);
            uint16_t *h = malloc(cnt * 2);
            CHILD_CHECK(h != NULL, "out of memory");
            CHILD_CHECK(cudaMemcpy(h, t.grad.data, cnt * 2,
                                   cudaMemcpyDeviceToHost) == cudaSuccess,
                        "copy %s", t.name);
            for (size_t j = 0; j < cnt; j++)
                r->grads[at + j] = bf16_to_f32(h[j]);
            free(h);
        }
        at += cnt;
    }
}

static float *download(llama_gpu *m, llama_model *host)
{
    CHILD_CHECK(llama_gpu_download(m, &host->w) == 0, "download: %s",
                llama_gpu_error(m));
    float *w = malloc(host->w.count * sizeof(float));
    CHILD_CHECK(w != NULL, "out of memory");
    memcpy(w, host->w.base, host->w.count * sizeof(float));
    return w;
}

static owl_context *cuda_context(int device, void *stream)
{
    owl_context_options co;
    owl_context_options_init(&co, sizeof co);
    co.backend = OWL_BACKEND_CUDA;
    co.device = device;
    owl_context *ctx = NULL;
    CHILD_CHECK(owl_context_create(&ctx, &co) == OWL_OK, "CUDA context");
    CHILD_CHECK(owl_context_set_stream(ctx, stream) == OWL_OK,
                "set_stream: %s", owl_context_last_error(ctx));
    return ctx;
}

/*
 * One training run of `which` on sequences [first, first + nseq) of each
 * step's global batch; with d, gradients are averaged across its ranks
 * and rank 0's weights broadcast first. init_seed: the weights this
 * process starts from before any broadcast.
 */
static void train(int which, int device, cudaStream_t stream, llama_dist *d,
                  int first, int nseq, uint64_t init_seed, run_result *r)
{
    const llama_config *cfg = &test_cfg;
    const int L = cfg->n_layers;
    char err[512] = "";
    llama_gpu_options o;
    llama_gpu_options_default(&o, cfg);
    o.device = device;
    o.stream = stream;
    o.max_batch = nseq;
    o.max_trainable_layers = which == RUN_FULL ? L : GAMMA;
    o.train_embeddings = 1;
    o.train_head = 1;
    llama_gpu *m = NULL;
    CHILD_CHECK(llama_gpu_create(&m, cfg, &o, err, sizeof err) == 0,
                "llama_gpu_create: %s", err);

    llama_model host;
    CHILD_CHECK(llama_create(&host, cfg, 1, err, sizeof err) == 0,
                "llama_create: %s", err);
    /* The weights every rank must end up with: seed 1 through the
     * device's bf16. */
    llama_init_random(&host, 1, INIT_STD);
    CHILD_CHECK(llama_gpu_upload(m, &host.w) == 0, "upload: %s",
                llama_gpu_error(m));
    r->init = download(m, &host);
    r->nweights = host.w.count;
    if (init_seed != 1) {
        llama_init_random(&host, init_seed, INIT_STD);
        CHILD_CHECK(llama_gpu_upload(m, &host.w) == 0, "upload: %s",
                    llama_gpu_error(m));
        float *mine = download(m, &host);
        CHILD_CHECK(memcmp(mine, r->init, r->nweights * 4) != 0,
                    "seeds %llu and 1 gave the same weights",
                    (unsigned long long)init_seed);
        free(mine);
    }
    if (d) {
        CHILD_CHECK(llama_dist_broadcast_weights(d, m, 0) == 0,
                    "broadcast: %s", llama_dist_error(d));
        float *got = download(m, &host);
        size_t bad = 0;
        for (size_t i = 0; i < r->nweights; i++)
            bad += memcmp(&got[i], &r->init[i], 4) != 0;
        CHILD_CHECK(bad == 0, "%s: after the broadcast %zu of %zu weights "
                    "differ from rank 0's", run_names[which], bad,
                    r->nweights);
        free(got);
    }

    owl_context *ctx = cuda_context(device, stream);
    owl_optimizer *opt = NULL;
    CHILD_CHECK(dp_optimizer_create(ctx, which, &opt) == OWL_OK,
                "optimizer: %s", owl_context_last_error(ctx));
    CHILD_CHECK(llama_gpu_register(m, opt) == 0, "register: %s",
                llama_gpu_error(m));

    int32_t tokens[2 * DP_B * DP_T], targets[2 * DP_B * DP_T];
    for (int step = 0; step < STEPS; step++) {
        uint8_t mask[8] = {0};
        CHILD_CHECK(owl_optimizer_active_layers(opt, mask, (uint64_t)L,
                                                NULL) == OWL_OK,
                    "active_layers: %s", owl_context_last_error(ctx));
        memcpy(r->masks[step], mask, (size_t)L);
        CHILD_CHECK(llama_gpu_set_trainable(m, mask) == 0,
                    "set_trainable: %s", llama_gpu_error(m));
        CHILD_CHECK(llama_gpu_bind_grads(m, opt) == 0, "bind_grads: %s",
                    llama_gpu_error(m));
        make_batch(step, first, nseq, tokens, targets);
        double loss = 0;
        CHILD_CHECK(llama_gpu_forward(m, tokens, targets, nseq, DP_T,
                                      &loss) == 0,
                    "forward: %s", llama_gpu_error(m));
        r->losses[step] = loss;
        CHILD_CHECK(llama_gpu_backward(m) == 0, "backward: %s",
                    llama_gpu_error(m));
        if (d)
            CHILD_CHECK(llama_dist_allreduce_grads(d, m) == 0,
                        "allreduce: %s", llama_dist_error(d));
        if (step == 0)
            snapshot_grads(m, stream, r);
        CHILD_CHECK(owl_optimizer_step(opt, LR) == OWL_OK, "step: %s",
                    owl_context_last_error(ctx));
        if (step == 0)
            CHILD_CHECK(owl_optimizer_last_grad_norm(opt, &r->grad_norm0) ==
                            OWL_OK, "grad norm: %s",
                        owl_context_last_error(ctx));
    }
    CHILD_CHECK(owl_context_synchronize(ctx) == OWL_OK, "sync: %s",
                owl_context_last_error(ctx));
    uint64_t skips = 0;
    owl_context_nonfinite_skips(ctx, &skips);
    CHILD_CHECK(skips == 0, "%llu steps skipped as non-finite",
                (unsigned long long)skips);
    r->weights = download(m, &host);

    owl_optimizer_free(opt);
    owl_context_free(ctx);
    llama_destroy(&host);
    llama_gpu_destroy(m);
}

/* ---- result files: the child writes, the parent reads ---- */

static void write_result(const char *path, const run_result *r)
{
    FILE *f = fopen(path, "wb");
    CHILD_CHECK(f != NULL, "cannot write %s", path);
    int64_t total = 0;
    for (int64_t k = 0; k < r->ngrads; k++)
        total += r->grad_count[k];
    int ok = fwrite(r->masks, sizeof r->masks, 1, f) == 1 &&
             fwrite(r->losses, sizeof r->losses, 1, f) == 1 &&
             fwrite(&r->grad_norm0, sizeof r->grad_norm0, 1, f) == 1 &&
             fwrite(&r->ngrads, sizeof r->ngrads, 1, f) == 1 &&
             fwrite(r->grad_index, sizeof r->grad_index, 1, f) == 1 &&
             fwrite(r->grad_count, sizeof r->grad_count, 1, f) == 1 &&
             fwrite(r->grads, sizeof(float), (size_t)total, f) ==
                 (size_t)total &&
             fwrite(&r->nweights, sizeof r->nweights, 1, f) == 1 &&
             fwrite(r->weights, sizeof(float), r->nweights, f) ==
                 r->nweights &&
             fwrite(r->init, sizeof(float), r->nweights, f) == r->nweights;
    CHILD_CHECK(fclose(f) == 0 && ok, "cannot write %s", path);
}

static int read_result(const char *path, run_result *r)
{
    memset(r, 0, sizeof *r);
    FILE *f = fopen(path, "rb");
    if (!f)
        return -1;
    int ok = fread(r->masks, sizeof r->masks, 1, f) == 1 &&
             fread(r->losses, sizeof r->losses, 1, f) == 1 &&
             fread(&r->grad_norm0, sizeof r->grad_norm0, 1, f) == 1 &&
             fread(&r->ngrads, sizeof r->ngrads, 1, f) == 1 &&
             r->ngrads >= 0 && r->ngrads <= 64 &&
             fread(r->grad_index, sizeof r->grad_index, 1, f) == 1 &&
             fread(r->grad_count, sizeof r->grad_count, 1, f) == 1;
    int64_t total = 0;
    for (int64_t k = 0; ok && k < r->ngrads; k++)
        total += r->grad_count[k];
    if (ok) {
        r->grads = malloc((size_t)total * sizeof(float) + 1);
        ok = r->grads && fread(r->grads, sizeof(float), (size_t)total, f) ==
                             (size_t)total &&
             fread(&r->nweights, sizeof r->nweights, 1, f) == 1 &&
             r->nweights > 0 && r->nweights < ((size_t)1 << 28);
    }
    if (ok) {
        r->weights = malloc(r->nweights * sizeof(float));
        r->init = malloc(r->nweights * sizeof(float));
        ok = r->weights && r->init &&
             fread(r->weights, sizeof(float), r->nweights, f) == r->nweights &&
             fread(r->init, sizeof(float), r->nweights, f) == r->nweights;
    }
    fclose(f);
    if (!ok)
        result_free(r);
    return ok ? 0 : -1;
}

static char workdir[256];

static void result_path(char *buf, size_t n, const char *who, int which)
{
    snprintf(buf, n, "%s/%s.%s.bin", workdir, who, run_names[which]);
}

/* Rank `rank` of 2 on device `rank`: both runs on one communicator. */
static void child_rank(int rank)
{
    snprintf(child_name, sizeof child_name, "rank %d", rank);
    CHILD_CHECK(cudaSetDevice(rank) == cudaSuccess, "cudaSetDevice(%d)",
                rank);
    cudaStream_t stream;
    CHILD_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking) ==
                    cudaSuccess, "stream");
    char id_path[512], err[512] = "";
    snprintf(id_path, sizeof id_path, "%s/nccl.id", workdir);
    llama_dist *d = NULL;
    CHILD_CHECK(llama_dist_create(&d, rank, 2, id_path, 120.0, stream, err,
                                  sizeof err) == 0, "dist: %s", err);
    CHILD_CHECK(llama_dist_rank(d) == rank && llama_dist_world(d) == 2,
                "rank %d world %d", llama_dist_rank(d), llama_dist_world(d));
    for (int which = 0; which < NUM_RUNS; which++) {
        run_result r;
        memset(&r, 0, sizeof r);
        train(which, rank, stream, d, rank * DP_B, DP_B, 1 + (uint64_t)rank,
              &r);
        char path[512];
        char who[16];
        snprintf(who, sizeof who, "rank%d", rank);
        result_path(path, sizeof path, who, which);
        write_result(path, &r);
        result_free(&r);
    }
    llama_dist_destroy(d);
    cudaStreamDestroy(stream);
}

/* The reference (whole batch, no communicator) and the control (rank 0's
 * half alone, no all-reduce), on device 0. */
static void child_reference(void)
{
    snprintf(child_name, sizeof child_name, "reference");
    CHILD_CHECK(cudaSetDevice(0) == cudaSuccess, "cudaSetDevice(0)");
    cudaStream_t stream;
    CHILD_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking) ==
                    cudaSuccess, "stream");
    for (int which = 0; which < NUM_RUNS; which++) {
        char path[512];
        run_result r;
        memset(&r, 0, sizeof r);
        train(which, 0, stream, NULL, 0, 2 * DP_B, 1, &r);
        result_path(path, sizeof path, "reference", which);
        write_result(path, &r);
        result_free(&r);
        memset(&r, 0, sizeof r);
        train(which, 0, stream, NULL, 0, DP_B, 1, &r);
        result_path(path, sizeof path, "control", which);
        write_result(path, &r);
        result_free(&r);
    }
    cudaStreamDestroy(stream);
}

/* ------------------------------------------------------------------ */
/* Parent side: process management                                     */
/* ------------------------------------------------------------------ */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Runs fn(arg) in each of n children and waits for all; when one fails,
 * or the deadline passes, the others are killed (they would wait in NCCL
 * for the one that is gone). Exit statuses in status[]. */
static void run_children(int n, void (*fn)(int), int *status)
{
    pid_t pids[4];
    fflush(stdout);
    fflush(stderr);
    for (int i = 0; i < n; i++) {
        pids[i] = fork();
        if (pids[i] == 0) {
            fn(i);
            fflush(stdout);
            fflush(stderr);
            _exit(0);
        }
        status[i] = pids[i] < 0 ? -1 : -2; /* -2: running */
    }
    const double deadline = now_s() + CHILD_DEADLINE_S;
    for (;;) {
        int running = 0, failed = 0;
        for (int i = 0; i < n; i++) {
            if (status[i] != -2)
                continue;
            int st = 0;
            pid_t p = waitpid(pids[i], &st, WNOHANG);
            if (p == pids[i])
                status[i] = WIFEXITED(st) ? WEXITSTATUS(st)
                                          : 128 + WTERMSIG(st);
            else
                running++;
        }
        for (int i = 0; i < n; i++)
            failed |= status[i] != -2 && status[i] != 0;
        if (!running)
            break;
        if (failed || now_s() > deadline) {
            if (!failed)
                fprintf(stderr, "children still running after %.0f s: "
                        "killed\n", CHILD_DEADLINE_S);
            for (int i = 0; i < n; i++)
                if (status[i] == -2)
                    kill(pids[i], SIGKILL);
        }
        struct timespec ts = {0, 50000000L};
        nanosleep(&ts, NULL);
    }
}

static void rank_entry(int i) { child_rank(i); }
static void reference_entry(int i)
{
    (void)i;
    child_reference();
}

/* The device count, asked in a child so that this process stays free of
 * CUDA (and can fork workers that use it). 0 when none. */
static void count_entry(int i)
{
    (void)i;
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess)
        n = 0;
    _exit(n > 100 ? 100 : n);
}

static int device_count(void)
{
    int st = -1;
    run_children(1, count_entry, &st);
    return st < 0 || st > 100 ? 0 : st;
}

/* ------------------------------------------------------------------ */
/* Parent side: the checks (cmocka)                                     */
/* ------------------------------------------------------------------ */

static int rank_status[2], ref_status = -1;
static run_result rank_res[2][NUM_RUNS], ref_res[NUM_RUNS],
    ctl_res[NUM_RUNS];

static void need_children(void)
{
    for (int r = 0; r < 2; r++)
        if (rank_status[r] != 0)
            fail_msg("rank %d exited with status %d (its messages are "
                     "above)", r, rank_status[r]);
    if (ref_status != 0)
        fail_msg("the reference process exited with status %d", ref_status);
}

static void same_active_layers(void **state)
{
    (void)state;
    need_children();
    dp_check_masks(rank_res[0], rank_res[1], ref_res);
}

static void ranks_bit_identical(void **state)
{
    (void)state;
    need_children();
    dp_check_identical(rank_res[0], rank_res[1]);
}

static void step0_matches_whole_batch(void **state)
{
    (void)state;
    need_children();
    dp_check_step0(rank_res[0], rank_res[1], ref_res, ctl_res);
}

static void weights_match_whole_batch(void **state)
{
    (void)state;
    need_children();
    dp_check_weights(rank_res[0], ref_res, ctl_res);
}

/* ------------------------------------------------------------------ */
/* One rank: the same code path at world 1                             */
/* ------------------------------------------------------------------ */

typedef struct one_rank {
    cudaStream_t stream;
    llama_gpu *m;
    llama_model host;
    llama_dist *d;
} one_rank;

static one_rank one;

static void grads_bytes(llama_gpu *m, unsigned char **out, size_t *len)
{
    size_t total = 0;
    for (int64_t i = 0; i < llama_gpu_num_tensors(m); i++) {
        llama_gpu_tensor t;
        assert_int_equal(llama_gpu_tensor_get(m, i, &t), 0);
        if (t.grad.data)
            total += (size_t)(t.grad.rows * t.grad.cols) *
                     (t.grad.dtype == OWL_DTYPE_F32 ? 4 : 2);
    }
    unsigned char *buf = malloc(total + 1);
    assert_non_null(buf);
    size_t at = 0;
    assert_int_equal(cudaStreamSynchronize(one.stream), cudaSuccess);
    for (int64_t i = 0; i < llama_gpu_num_tensors(m); i++) {
        llama_gpu_tensor t;
        llama_gpu_tensor_get(m, i, &t);
        if (!t.grad.data)
            continue;
        size_t n = (size_t)(t.grad.rows * t.grad.cols) *
                   (t.grad.dtype == OWL_DTYPE_F32 ? 4 : 2);
        assert_int_equal(cudaMemcpy(buf + at, t.grad.data, n,
                                    cudaMemcpyDeviceToHost), cudaSuccess);
        at += n;
    }
    assert_true(at > 0);
    *out = buf;
    *len = total;
}

static int one_setup(void **state)
{
    (void)state;
    char err[512] = "";
    if (cudaSetDevice(0) != cudaSuccess ||
        cudaStreamCreateWithFlags(&one.stream, cudaStreamNonBlocking) !=
            cudaSuccess)
        return -1;
    llama_gpu_options o;
    llama_gpu_options_default(&o, &test_cfg);
    o.stream = one.stream;
    o.max_batch = DP_B;
    if (llama_gpu_create(&one.m, &test_cfg, &o, err, sizeof err) != 0 ||
        llama_create(&one.host, &test_cfg, 1, err, sizeof err) != 0) {
        fprintf(stderr, "setup: %s\n", err);
        return -1;
    }
    llama_init_random(&one.host, 3, INIT_STD);
    if (llama_gpu_upload(one.m, &one.host.w) != 0)
        return -1;
    if (llama_dist_create(&one.d, 0, 1, NULL, 0.0, one.stream, err,
                          sizeof err) != 0) {
        fprintf(stderr, "llama_dist_create: %s\n", err);
        return -1;
    }
    return 0;
}

static int one_teardown(void **state)
{
    (void)state;
    llama_dist_destroy(one.d);
    llama_gpu_destroy(one.m);
    llama_destroy(&one.host);
    cudaStreamDestroy(one.stream);
    return 0;
}

static void one_rank_average_is_identity(void **state)
{
    (void)state;
    assert_int_equal(llama_dist_rank(one.d), 0);
    assert_int_equal(llama_dist_world(one.d), 1);
    uint8_t all[8];
    memset(all, 1, sizeof all);
    assert_int_equal(llama_gpu_set_trainable(one.m, all), 0);
    int32_t tokens[DP_B * DP_T], targets[DP_B * DP_T];
    make_batch(0, 0, DP_B, tokens, targets);
    double loss = 0;
    assert_int_equal(llama_gpu_forward(one.m, tokens, targets, DP_B, DP_T,
                                       &loss), 0);
    assert_true(isfinite(loss) && loss > 0);
    assert_int_equal(llama_gpu_backward(one.m), 0);
    unsigned char *before, *after;
    size_t n0, n1;
    grads_bytes(one.m, &before, &n0);
    if (llama_dist_allreduce_grads(one.d, one.m) != 0)
        fail_msg("allreduce: %s", llama_dist_error(one.d));
    grads_bytes(one.m, &after, &n1);
    assert_int_equal(n0, n1);
    /* NCCL's average over one rank: the sum of one term, times 1 */
    assert_memory_equal(before, after, n0);
    /* the gradients were not all zero, so a cleared buffer would show */
    size_t nonzero = 0;
    for (size_t i = 0; i < n0; i++)
        nonzero += before[i] != 0;
    assert_true(nonzero > n0 / 4);
    free(before);
    free(after);
}

static void one_rank_broadcast_is_identity(void **state)
{
    (void)state;
    float *w0 = malloc(one.host.w.count * 4);
    float *w1 = malloc(one.host.w.count * 4);
    assert_non_null(w0);
    assert_non_null(w1);
    assert_int_equal(llama_gpu_download(one.m, &one.host.w), 0);
    memcpy(w0, one.host.w.base, one.host.w.count * 4);
    if (llama_dist_broadcast_weights(one.d, one.m, 0) != 0)
        fail_msg("broadcast: %s", llama_dist_error(one.d));
    assert_int_equal(llama_gpu_download(one.m, &one.host.w), 0);
    memcpy(w1, one.host.w.base, one.host.w.count * 4);
    assert_memory_equal(w0, w1, one.host.w.count * 4);
    free(w0);
    free(w1);
}

static void one_rank_refusals(void **state)
{
    (void)state;
    char err[512];
    /* a model on its own stream: the collectives would race its backward */
    llama_gpu_options o;
    llama_gpu_options_default(&o, &test_cfg);
    o.max_batch = 1;
    llama_gpu *other = NULL;
    assert_int_equal(llama_gpu_create(&other, &test_cfg, &o, err, sizeof err),
                     0);
    assert_true(llama_gpu_stream(other) != (void *)one.stream);
    assert_int_equal(llama_dist_allreduce_grads(one.d, other), -1);
    if (!strstr(llama_dist_error(one.d), "stream"))
        fail_msg("message: %s", llama_dist_error(one.d));
    assert_int_equal(llama_dist_broadcast_weights(one.d, other, 0), -1);
    llama_gpu_destroy(other);
    /* a root that is not a rank */
    assert_int_equal(llama_dist_broadcast_weights(one.d, one.m, 1), -1);
    if (!strstr(llama_dist_error(one.d), "root 1"))
        fail_msg("message: %s", llama_dist_error(one.d));
    assert_int_equal(llama_dist_allreduce_grads(one.d, NULL), -1);
    /* the communicator still works after refusals */
    assert_int_equal(llama_dist_allreduce_grads(one.d, one.m), 0);
    assert_int_equal(cudaStreamSynchronize(one.stream), cudaSuccess);

    /* bad create arguments: -1, *out NULL, a message */
    llama_dist *d = (llama_dist *)&d;
    err[0] = '\0';
    assert_int_equal(llama_dist_create(&d, 2, 2, "/tmp/x", 1.0, one.stream,
                                       err, sizeof err), -1);
    assert_null(d);
    if (!strstr(err, "rank 2 of world 2"))
        fail_msg("message: %s", err);
    assert_int_equal(llama_dist_create(&d, 1, 2, NULL, 1.0, one.stream, err,
                                       sizeof err), -1);
    assert_int_equal(llama_dist_create(&d, 0, 1, NULL, NAN, one.stream, err,
                                       sizeof err), -1);
    assert_int_equal(llama_dist_create(NULL, 0, 1, NULL, 1.0, one.stream, err,
                                       sizeof err), -1);
    /* rank 1 of 2 whose rank 0 never comes: the id file times out */
    char path[300];
    snprintf(path, sizeof path, "%s/missing.id",
             getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    unlink(path);
    assert_int_equal(llama_dist_create(&d, 1, 2, path, 0.2, one.stream, err,
                                       sizeof err), -1);
    assert_null(d);
    if (!strstr(err, "did not appear"))
        fail_msg("message: %s", err);
    llama_dist_destroy(NULL);
}

/* ------------------------------------------------------------------ */

static int usage(void)
{
    fprintf(stderr, "usage: test_gpu_llama_nccl one-rank|two-ranks\n");
    return 2;
}

int main(int argc, char **argv)
{
    if (argc != 2)
        return usage();
    const int two = !strcmp(argv[1], "two-ranks");
    if (!two && strcmp(argv[1], "one-rank"))
        return usage();
    if (!owl_backend_available(OWL_BACKEND_CUDA)) {
        printf("SKIP: libowlore was built without the CUDA backend\n");
        return 77;
    }
    const int devices = device_count();
    if (devices < 1) {
        printf("SKIP: no CUDA device\n");
        return 77;
    }
    if (!two) {
        const struct CMUnitTest tests[] = {
            cmocka_unit_test(one_rank_average_is_identity),
            cmocka_unit_test(one_rank_broadcast_is_identity),
            cmocka_unit_test(one_rank_refusals),
        };
        return cmocka_run_group_tests(tests, one_setup, one_teardown);
    }
    if (devices < 2) {
        printf("SKIP: %d CUDA device; two ranks need two GPUs (NCCL cannot "
               "put two ranks of one communicator on one device)\n", devices);
        return 77;
    }

    snprintf(workdir, sizeof workdir, "%s/llama_nccl_XXXXXX",
             getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!mkdtemp(workdir)) {
        fprintf(stderr, "mkdtemp: %s\n", strerror(errno));
        return 1;
    }
    run_children(2, rank_entry, rank_status);
    if (rank_status[0] == 0 && rank_status[1] == 0)
        run_children(1, reference_entry, &ref_status);
    for (int w = 0; w < NUM_RUNS; w++) {
        char path[512];
        static const char *const who[2] = {"rank0", "rank1"};
        for (int r = 0; r < 2; r++) {
            result_path(path, sizeof path, who[r], w);
            if (rank_status[r] == 0 && read_result(path, &rank_res[r][w]))
                rank_status[r] = 200; /* wrote no readable result */
            unlink(path);
        }
        result_path(path, sizeof path, "reference", w);
        if (ref_status == 0 && read_result(path, &ref_res[w]))
            ref_status = 200;
        unlink(path);
        result_path(path, sizeof path, "control", w);
        if (ref_status == 0 && read_result(path, &ctl_res[w]))
            ref_status = 200;
        unlink(path);
    }
    char id_path[512];
    snprintf(id_path, sizeof id_path, "%s/nccl.id", workdir);
    unlink(id_path); /* only there if rank 0 failed before removing it */
    rmdir(workdir);

    const struct CMUnitTest tests[] = {
        cmocka_unit_test(same_active_layers),
        cmocka_unit_test(ranks_bit_identical),
        cmocka_unit_test(step0_matches_whole_batch),
        cmocka_unit_test(weights_match_whole_batch),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    for (int w = 0; w < NUM_RUNS; w++) {
        result_free(&rank_res[0][w]);
        result_free(&rank_res[1][w]);
        result_free(&ref_res[w]);
        result_free(&ctl_res[w]);
    }
    return rc;
}
