/*
 * The data-parallel experiment of test_gpu_llama_nccl.c without a GPU:
 * two replicas of the device model on the emulated device (the GPU path's
 * own model code, bf16 weights, gradients and activations), each on its
 * half of every step's batch, their gradients averaged between backward
 * and step exactly as NCCL's ncclAvg does for bf16 with two ranks (each
 * input halved, which is exact, summed in f32, rounded to bf16 once),
 * against one replica on the whole batch, with the same checks and bounds
 * (llama_dp_experiment.h; the bounds are argued in test_gpu_llama_nccl.c).
 * The optimizer is libowlore's CPU backend on the emulated device's
 * tensors (host memory), since the CUDA backend cannot run emulated.
 *
 * What it shows without a GPU: averaging the replicas' gradients gives
 * the whole batch's gradient and training (so the data slicing, the mean
 * loss per rank and clipping after the average are right), the replicas
 * stay bit-identical, the active layers agree, and the GPU test's bounds
 * hold with room on this very model; and that a rank training on its own
 * half alone (the control) is caught. It cannot show NCCL itself.
 */
#include "llama_dp_experiment.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static float bf16_to_f32(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* Round to nearest even (finite values only). */
static uint16_t f32_to_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

typedef struct replica {
    llama_gpu *m;
    llama_model host; /* download buffer */
    owl_optimizer *opt;
    int first, nseq;  /* its sequences of each step's global batch */
} replica;

static owl_context *ctx;

static void replica_create(replica *r, int which, int first, int nseq)
{
    char err[512] = "";
    llama_gpu_options o;
    llama_gpu_options_default(&o, &test_cfg);
    o.max_batch = nseq;
    o.max_trainable_layers = which == RUN_FULL ? test_cfg.n_layers : GAMMA;
    if (llama_gpu_create(&r->m, &test_cfg, &o, err, sizeof err) != 0)
        fail_msg("llama_gpu_create: %s", err);
    if (llama_create(&r->host, &test_cfg, 1, err, sizeof err) != 0)
        fail_msg("llama_create: %s", err);
    llama_init_random(&r->host, 1, INIT_STD);
    assert_int_equal(llama_gpu_upload(r->m, &r->host.w), 0);
    assert_owl_ok(ctx, dp_optimizer_create(ctx, which, &r->opt));
    if (llama_gpu_register(r->m, r->opt) != 0)
        fail_msg("register: %s", llama_gpu_error(r->m));
    r->first = first;
    r->nseq = nseq;
}

static void replica_free(replica *r)
{
    owl_optimizer_free(r->opt);
    llama_destroy(&r->host);
    llama_gpu_destroy(r->m);
}

static float *download(replica *r)
{
    assert_int_equal(llama_gpu_download(r->m, &r->host.w), 0);
    float *w = malloc(r->host.w.count * sizeof(float));
    assert_non_null(w);
    memcpy(w, r->host.w.base, r->host.w.count * sizeof(float));
    return w;
}

static void forward_backward(replica *r, int step, run_result *res)
{
    const int L = test_cfg.n_layers;
    uint8_t mask[8] = {0};
    assert_owl_ok(ctx, owl_optimizer_active_layers(r->opt, mask, (uint64_t)L,
                                                   NULL));
    memcpy(res->masks[step], mask, (size_t)L);
    if (llama_gpu_set_trainable(r->m, mask) != 0 ||
        llama_gpu_bind_grads(r->m, r->opt) != 0)
        fail_msg("trainable: %s", llama_gpu_error(r->m));
    int32_t tokens[2 * DP_B * DP_T], targets[2 * DP_B * DP_T];
    make_batch(step, r->first, r->nseq, tokens, targets);
    double loss = 0;
    if (llama_gpu_forward(r->m, tokens, targets, r->nseq, DP_T, &loss) != 0 ||
        llama_gpu_backward(r->m) != 0)
        fail_msg("forward/backward: %s", llama_gpu_error(r->m));
    res->losses[step] = loss;
}

/* What ncclAllReduce(ncclAvg) leaves in both replicas' gradients. */
static void average(replica *a, replica *b)
{
    for (int64_t i = 0; i < llama_gpu_num_tensors(a->m); i++) {
        llama_gpu_tensor ta, tb;
        assert_int_equal(llama_gpu_tensor_get(a->m, i, &ta), 0);
        assert_int_equal(llama_gpu_tensor_get(b->m, i, &tb), 0);
        assert_true((ta.grad.data == NULL) == (tb.grad.data == NULL));
        if (!ta.grad.data)
            continue;
        assert_int_equal(ta.grad.dtype, OWL_DTYPE_BF16);
        uint16_t *ga = ta.grad.data, *gb = tb.grad.data;
        size_t n = (size_t)(ta.grad.rows * ta.grad.cols);
        for (size_t j = 0; j < n; j++) {
            float v = 0.5f * bf16_to_f32(ga[j]) + 0.5f * bf16_to_f32(gb[j]);
            ga[j] = gb[j] = f32_to_bf16(v);
        }
    }
}

static void snapshot_grads(replica *r, run_result *res)
{
    int64_t total = 0;
    res->ngrads = 0;
    for (int64_t i = 0; i < llama_gpu_num_tensors(r->m); i++) {
        llama_gpu_tensor t;
        assert_int_equal(llama_gpu_tensor_get(r->m, i, &t), 0);
        if (!t.grad.data)
            continue;
        assert_true(res->ngrads < 64);
        res->grad_index[res->ngrads] = i;
        res->grad_count[res->ngrads] = t.grad.rows * t.grad.cols;
        res->ngrads++;
        total += t.grad.rows * t.grad.cols;
    }
    res->grads = malloc((size_t)total * sizeof(float));
    assert_non_null(res->grads);
    size_t at = 0;
    for (int64_t k = 0; k < res->ngrads; k++) {
        llama_gpu_tensor t;
        llama_gpu_tensor_get(r->m, res->grad_index[k], &t);
        const uint16_t *g = t.grad.data;
        for (int64_t j = 0; j < res->grad_count[k]; j++)
            res->grads[at + (size_t)j] = bf16_to_f32(g[j]);
        at += (size_t)res->grad_count[k];
    }
}

/* ranks 0 and 1, the whole batch, and rank 0's half alone */
static run_result res[4][NUM_RUNS];

static int run_experiment(void **state)
{
    (void)state;
    owl_context_options co;
    owl_context_options_init(&co, sizeof co);
    co.num_threads = 1;
    if (owl_context_create(&ctx, &co) != OWL_OK)
        return -1;
    for (int w = 0; w < NUM_RUNS; w++) {
        replica rep[4];
        memset(rep, 0, sizeof rep);
        replica_create(&rep[0], w, 0, DP_B);
        replica_create(&rep[1], w, DP_B, DP_B);
        replica_create(&rep[2], w, 0, 2 * DP_B);
        replica_create(&rep[3], w, 0, DP_B);
        for (int k = 0; k < 4; k++) {
            res[k][w].init = download(&rep[k]);
            res[k][w].nweights = rep[k].host.w.count;
        }
        for (int step = 0; step < STEPS; step++) {
            for (int k = 0; k < 4; k++)
                forward_backward(&rep[k], step, &res[k][w]);
            average(&rep[0], &rep[1]);
            if (step == 0)
                for (int k = 0; k < 4; k++)
                    snapshot_grads(&rep[k], &res[k][w]);
            for (int k = 0; k < 4; k++) {
                assert_owl_ok(ctx, owl_optimizer_step(rep[k].opt, LR));
                if (step == 0)
                    assert_owl_ok(ctx, owl_optimizer_last_grad_norm(
                                           rep[k].opt, &res[k][w].grad_norm0));
            }
        }
        for (int k = 0; k < 4; k++) {
            res[k][w].weights = download(&rep[k]);
            replica_free(&rep[k]);
        }
    }
    return 0;
}

static int free_experiment(void **state)
{
    (void)state;
    for (int k = 0; k < 4; k++)
        for (int w = 0; w < NUM_RUNS; w++)
            result_free(&res[k][w]);
    owl_context_free(ctx);
    return 0;
}

static void same_active_layers(void **state)
{
    (void)state;
    dp_check_masks(res[0], res[1], res[2]);
}

static void replicas_bit_identical(void **state)
{
    (void)state;
    dp_check_identical(res[0], res[1]);
}

static void step0_matches_whole_batch(void **state)
{
    (void)state;
    dp_check_step0(res[0], res[1], res[2], res[3]);
}

static void weights_match_whole_batch(void **state)
{
    (void)state;
    dp_check_weights(res[0], res[2], res[3]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(same_active_layers),
        cmocka_unit_test(replicas_bit_identical),
        cmocka_unit_test(step0_matches_whole_batch),
        cmocka_unit_test(weights_match_whole_batch),
    };
    return cmocka_run_group_tests(tests, run_experiment, free_experiment);
}
