/*
 * Ten OwLore steps of the LLaMa example model driven by owl_optimizer,
 * against the same ten steps in PyTorch (tests/ref/gen_llama_owlore.py).
 *
 * Setup (read from the reference file, so the two sides cannot drift):
 * method OWLORE, GALORE AdamW semantics, gamma 1 of 3 layers, period K 3,
 * fixed outlier ratios as the sampler weights, rank 4 with update gap 2
 * (projectors refresh within the run), scale 0.25, weight decay 0.01,
 * constant lr, no clipping, frozen policy KEEP. The seven projection
 * matrices of each layer take the low-rank path; the layer norms, the
 * embeddings, the final norm and the LM head train in full rank (the last
 * three at every step). The model is read from the Hugging Face
 * checkpoint the script wrote; each step trains on the script's batch.
 *
 * Checked:
 *  - the optimizer's active layers equal the schedule the reference
 *    trained (the library's sampler, printed by llama_owlore_schedule.c);
 *  - the loss of every step against PyTorch's float64 loss of its model,
 *    relative 1e-4 (the model alone agrees to ~1e-7; ten steps of float32
 *    arithmetic on both the weights and a float32 SVD leave ~1e-6);
 *  - every final weight, max|c - ref| / max|ref| per tensor, 1e-3 (an
 *    update is lr = 4e-3 per step in size, so a wrong bias step, a missed
 *    refresh, a wrong projection side or a frozen layer updated moves a
 *    tensor by far more);
 *  - the loss on the first batch after the last step (the tenth update's
 *    effect), relative 1e-4.
 */
#include "common/refdata.h"
#include "common/testutil.h"

#include "checkpoint.h"
#include "llama.h"
#include "llama_owl.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TOL_LOSS 1e-4
#define TOL_WEIGHT 1e-3

static refdata *g_ref;
static const char *g_hf_dir;
static double g_worst; /* largest weight error seen, for the log */

static double setting(const char *name)
{
    char key[96];
    snprintf(key, sizeof key, "settings/%s", name);
    return refdata_need(g_ref, key)->f64[0];
}

/* Row `row` of an i64 [rows x n] array, as int32 token ids. */
static void ref_row(const char *name, size_t row, int32_t *out, size_t n)
{
    const refarray *a = refdata_need(g_ref, name);
    assert_true(a->kind == 1 && a->count >= (row + 1) * n);
    for (size_t i = 0; i < n; i++)
        out[i] = (int32_t)a->i64[row * n + i];
}

/* Checks one tensor of the model against w/<name>. */
static void check_weight(const char *name, const float *data, size_t count)
{
    char key[160];
    snprintf(key, sizeof key, "w/%s", name);
    const refarray *a = refdata_need(g_ref, key);
    assert_int_equal(a->count, count);
    double diff = 0.0, scale = 0.0;
    for (size_t i = 0; i < count; i++) {
        diff = fmax(diff, fabs((double)data[i] - a->f64[i]));
        scale = fmax(scale, fabs(a->f64[i]));
    }
    g_worst = fmax(g_worst, diff / scale);
    if (diff > TOL_WEIGHT * scale)
        fail_msg("%s after the steps: error %.3g relative to its scale %.3g",
                 name, diff / scale, scale);
}

static void check_all_weights(const llama_model *m)
{
    const llama_config *c = &m->cfg;
    size_t dim = (size_t)c->dim, hid = (size_t)c->hidden_dim;
    size_t qdim = (size_t)m->head_dim * c->n_heads;
    size_t kvdim = (size_t)m->head_dim * c->n_kv_heads;
    char name[128];
    check_weight("model.embed_tokens.weight", m->w.embed,
                 (size_t)c->vocab_size * dim);
    check_weight("model.norm.weight", m->w.rms_final, dim);
    check_weight("lm_head.weight", m->w.head, (size_t)c->vocab_size * dim);
    for (int l = 0; l < c->n_layers; l++) {
        const llama_layer *L = &m->w.layers[l];
        struct { const char *suffix; const float *data; size_t count; } t[] = {
            {"input_layernorm.weight", L->rms_att, dim},
            {"self_attn.q_proj.weight", L->wq, qdim * dim},
            {"self_attn.k_proj.weight", L->wk, kvdim * dim},
            {"self_attn.v_proj.weight", L->wv, kvdim * dim},
            {"self_attn.o_proj.weight", L->wo, dim * qdim},
            {"post_attention_layernorm.weight", L->rms_ffn, dim},
            {"mlp.gate_proj.weight", L->w_gate, hid * dim},
            {"mlp.up_proj.weight", L->w_up, hid * dim},
            {"mlp.down_proj.weight", L->w_down, dim * hid},
        };
        for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
            snprintf(name, sizeof name, "model.layers.%d.%s", l, t[i].suffix);
            check_weight(name, t[i].data, t[i].count);
        }
    }
}

static void check_loss(const char *what, int step, double got, double want)
{
    double err = fabs(got - want) / fabs(want);
    printf("%s %d: C %.7f, PyTorch %.7f, relative %.2e\n", what, step, got,
           want, err);
    if (err > TOL_LOSS)
        fail_msg("%s %d: C loss %.7f, PyTorch %.7f (relative %.3g)", what,
                 step, got, want, err);
}

static void test_owlore_steps(void **state)
{
    (void)state;
    int steps = (int)setting("steps");
    int B = (int)setting("batch"), T = (int)setting("seq");
    char err[256];
    llama_model m;
    if (ckpt_load_hf(g_hf_dir, &m, B, 0, err, sizeof err) != 0)
        fail_msg("ckpt_load_hf(%s): %s", g_hf_dir, err);
    assert_true(T <= m.cfg.seq_len);
    uint64_t L = (uint64_t)m.cfg.n_layers;

    owl_context *ctx = test_cpu_context(1);
    const refarray *lod = refdata_need(g_ref, "settings/lod");
    assert_int_equal(lod->count, L);
    owl_sampler_options so;
    owl_galore_options go;
    owl_adamw_options ao;
    owl_optimizer_options oo;
    assert_owl_ok(ctx, owl_sampler_options_init(&so, sizeof so));
    assert_owl_ok(ctx, owl_galore_options_init(&go, sizeof go));
    assert_owl_ok(ctx, owl_adamw_options_init(&ao, sizeof ao));
    assert_owl_ok(ctx, owl_optimizer_options_init(&oo, sizeof oo));
    so.gamma = (uint64_t)setting("gamma");
    so.period = (uint64_t)setting("period");
    so.seed = (uint64_t)setting("seed");
    so.weight_mode = OWL_WEIGHTS_OWLORE;
    so.weights = lod->f64;
    go.rank = (uint64_t)setting("rank");
    go.update_gap = (uint64_t)setting("gap");
    go.scale = setting("scale");
    go.proj_type = OWL_PROJ_STD;
    go.svd_method = OWL_SVD_EXACT;
    ao.semantics = OWL_ADAMW_GALORE;
    ao.eps = setting("eps");
    ao.weight_decay = setting("weight_decay");
    ao.on_refresh = OWL_MOMENTS_KEEP;
    oo.method = OWL_METHOD_OWLORE;
    oo.frozen_policy = OWL_FROZEN_KEEP;
    oo.num_layers = L;
    oo.sampler = &so;
    oo.galore = &go;
    oo.adamw = &ao;
    oo.max_grad_norm = 0.0;
    owl_optimizer *opt = NULL;
    assert_owl_ok(ctx, owl_optimizer_create(ctx, &oo, &opt));
    assert_owl_ok(ctx, llama_owl_register(opt, &m));

    size_t n = (size_t)B * T;
    int32_t *tokens = malloc(n * sizeof *tokens);
    int32_t *targets = malloc(n * sizeof *targets);
    assert_non_null(tokens);
    assert_non_null(targets);
    const refarray *masks = refdata_need(g_ref, "masks");
    const refarray *losses = refdata_need(g_ref, "losses");
    assert_int_equal(masks->count, (size_t)steps * L);
    assert_int_equal(losses->count, (size_t)steps);
    double lr = setting("lr");
    for (int t = 0; t < steps; t++) {
        uint8_t mask[64];
        assert_owl_ok(ctx, owl_optimizer_active_layers(opt, mask, L, NULL));
        for (uint64_t l = 0; l < L; l++)
            if (mask[l] != (uint8_t)masks->i64[(size_t)t * L + l])
                fail_msg("step %d: layer %llu is %s in the optimizer, %s in "
                         "the reference schedule", t, (unsigned long long)l,
                         mask[l] ? "active" : "frozen",
                         mask[l] ? "frozen" : "active");
        ref_row("tokens", (size_t)t, tokens, n);
        ref_row("targets", (size_t)t, targets, n);
        float loss = llama_forward(&m, tokens, targets, B, T, NULL, NULL);
        check_loss("step", t, loss, losses->f64[t]);
        llama_trainable tr = llama_owl_trainable(mask);
        llama_backward(&m, &tr);
        assert_owl_ok(ctx, owl_optimizer_step(opt, lr));
    }
    assert_int_equal(owl_optimizer_step_index(opt), (uint64_t)steps);
    ref_row("tokens", 0, tokens, n);
    ref_row("targets", 0, targets, n);
    float after = llama_forward(&m, tokens, targets, B, T, NULL, NULL);
    check_loss("batch 0 after step", steps - 1, after,
               refdata_need(g_ref, "final_loss")->f64[0]);
    check_all_weights(&m);
    printf("final weights: worst error %.2e relative to each tensor's scale\n",
           g_worst);

    free(tokens);
    free(targets);
    owl_optimizer_free(opt);
    owl_context_free(ctx);
    llama_destroy(&m);
}

int main(int argc, char **argv)
{
    g_ref = refdata_load(test_arg(argc, argv, 1, "llama_owlore.ref"));
    g_hf_dir = test_arg(argc, argv, 2, "llama_owlore_hf");
    if (!g_ref)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_owlore_steps),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    refdata_free(g_ref);
    return rc;
}
