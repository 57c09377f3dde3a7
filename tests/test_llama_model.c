/*
 * The LLaMa example model (examples/llama/model.c) against PyTorch: the
 * loss, logits, every gradient and the activation statistics of a small
 * grouped-query model written by tests/ref/gen_llama.py, which computes them
 * in float64 with autograd from the same float32 weights. The model is read
 * from the Hugging Face checkpoint (safetensors + config.json) the script
 * wrote, through ckpt_load_hf, as a trainer would. Also a central
 * finite-difference check of the gradients that does not depend on
 * PyTorch, and the forward pass's refusal of unusable arguments.
 *
 * Errors are relative to the reference's scale, per tensor:
 *   err = max_i |c_i - ref_i| / max_i |ref_i|
 * Tolerances: loss 1e-4 (|c - ref| / |ref|), logits 1e-4, gradients 1e-3,
 * statistics 1e-4. PyTorch's own float32 run of the same model lies within
 * 1.3e-6 (logits) and 1.8e-6 (gradients) of the float64 reference (printed
 * by gen_llama.py), so the tolerances leave room for a different order of
 * float32 sums while a wrong formula (a RoPE pair convention, the kv head
 * mapping, a missing 1/sqrt(head_dim), an off-by-one mask) moves the
 * results by far more.
 *
 * Frozen tensors: their gradient buffers are filled with a sentinel before
 * the backward pass and must still hold it, bit for bit, afterwards.
 */
#include "common/refdata.h"
#include "common/testutil.h"

#include "checkpoint.h"
#include "llama.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TOL_LOSS 1e-4
#define TOL_LOGITS 1e-4
#define TOL_GRAD 1e-3
#define TOL_SUMSQ 1e-4
#define SENTINEL 12345.0f

static refdata *g_ref;
static const char *g_hf_dir; /* the checkpoints gen_llama.py wrote */

/* ------------------------------------------------------------------ */
/* The model's tensors by Hugging Face name                            */
/* ------------------------------------------------------------------ */

enum { MAX_TENSORS = 128 };

typedef struct named_tensor {
    char name[96];
    float *data;  /* in the parameters (or gradients) given */
    size_t count;
} named_tensor;

/* Lists every tensor of p with its Hugging Face name; a tied head is not
 * listed separately (it is model.embed_tokens.weight). */
static int list_tensors(const llama_model *m, const llama_params *p,
                        named_tensor *out)
{
    const llama_config *c = &m->cfg;
    size_t dim = (size_t)c->dim, hid = (size_t)c->hidden_dim;
    size_t qdim = (size_t)m->head_dim * c->n_heads;
    size_t kvdim = (size_t)m->head_dim * c->n_kv_heads;
    int n = 0;
#define ADD(ptr, cnt, ...)                                                  \
    do {                                                                    \
        snprintf(out[n].name, sizeof out[n].name, __VA_ARGS__);             \
        out[n].data = (ptr);                                                \
        out[n].count = (cnt);                                               \
        n++;                                                                \
    } while (0)
    ADD(p->embed, (size_t)c->vocab_size * dim, "model.embed_tokens.weight");
    for (int l = 0; l < c->n_layers; l++) {
        const llama_layer *L = &p->layers[l];
        const char *pre = "model.layers.";
        ADD(L->rms_att, dim, "%s%d.input_layernorm.weight", pre, l);
        ADD(L->wq, qdim * dim, "%s%d.self_attn.q_proj.weight", pre, l);
        ADD(L->wk, kvdim * dim, "%s%d.self_attn.k_proj.weight", pre, l);
        ADD(L->wv, kvdim * dim, "%s%d.self_attn.v_proj.weight", pre, l);
        ADD(L->wo, dim * qdim, "%s%d.self_attn.o_proj.weight", pre, l);
        ADD(L->rms_ffn, dim, "%s%d.post_attention_layernorm.weight", pre, l);
        ADD(L->w_gate, hid * dim, "%s%d.mlp.gate_proj.weight", pre, l);
        ADD(L->w_up, hid * dim, "%s%d.mlp.up_proj.weight", pre, l);
        ADD(L->w_down, dim * hid, "%s%d.mlp.down_proj.weight", pre, l);
    }
    ADD(p->rms_final, dim, "model.norm.weight");
    if (!c->tied)
        ADD(p->head, (size_t)c->vocab_size * dim, "lm_head.weight");
#undef ADD
    return n;
}

static int ref_int(const char *name)
{
    const refarray *a = refdata_need(g_ref, name);
    return a->kind == 0 ? (int)a->f64[0] : (int)a->i64[0];
}

static llama_config ref_config(int tied)
{
    llama_config c;
    c.dim = ref_int("config/dim");
    c.hidden_dim = ref_int("config/hidden_dim");
    c.n_layers = ref_int("config/n_layers");
    c.n_heads = ref_int("config/n_heads");
    c.n_kv_heads = ref_int("config/n_kv_heads");
    c.vocab_size = ref_int("config/vocab_size");
    c.seq_len = ref_int("config/seq_len");
    c.rope_theta = (float)refdata_need(g_ref, "config/rope_theta")->f64[0];
    c.norm_eps = (float)refdata_need(g_ref, "config/norm_eps")->f64[0];
    c.tied = tied;
    return c;
}

/* The model of the Hugging Face checkpoint gen_llama.py wrote
 * (<hf dir>/untied or /tied), read with ckpt_load_hf; its configuration and
 * every weight must be the reference's, bit for bit. */
static void load_model(llama_model *m, int tied)
{
    char path[4096], err[256];
    snprintf(path, sizeof path, "%s/%s", g_hf_dir, tied ? "tied" : "untied");
    if (ckpt_load_hf(path, m, ref_int("config/batch"), 0, err, sizeof err) != 0)
        fail_msg("ckpt_load_hf(%s): %s", path, err);
    llama_config c = ref_config(tied);
    assert_int_equal(m->cfg.dim, c.dim);
    assert_int_equal(m->cfg.hidden_dim, c.hidden_dim);
    assert_int_equal(m->cfg.n_layers, c.n_layers);
    assert_int_equal(m->cfg.n_heads, c.n_heads);
    assert_int_equal(m->cfg.n_kv_heads, c.n_kv_heads);
    assert_int_equal(m->cfg.vocab_size, c.vocab_size);
    assert_int_equal(m->cfg.seq_len, c.seq_len);
    assert_true(m->cfg.rope_theta == c.rope_theta);
    assert_true(m->cfg.norm_eps == c.norm_eps);
    assert_int_equal(m->cfg.tied, tied);
    named_tensor t[MAX_TENSORS];
    int n = list_tensors(m, &m->w, t);
    for (int i = 0; i < n; i++) {
        char key[160];
        snprintf(key, sizeof key, "%s%.96s", tied ? "tied/w/" : "w/",
                 t[i].name);
        const refarray *a = refdata_need(g_ref, key);
        assert_int_equal(a->count, t[i].count);
        for (size_t j = 0; j < a->count; j++)
            if (t[i].data[j] != (float)a->f64[j])
                fail_msg("%s[%zu] loaded as %.9g, written as %.9g",
                         t[i].name, j, (double)t[i].data[j], a->f64[j]);
    }
}

/* max|a - b| / max|b| (see the top of the file). */
static double rel_err(const float *a, const double *b, size_t n)
{
    double diff = 0.0, scale = 0.0;
    for (size_t i = 0; i < n; i++) {
        diff = fmax(diff, fabs((double)a[i] - b[i]));
        scale = fmax(scale, fabs(b[i]));
    }
    return diff / scale;
}

static int32_t *ref_ints(const char *name, size_t *count)
{
    const refarray *a = refdata_need(g_ref, name);
    int32_t *v = malloc(a->count * sizeof *v);
    assert_non_null(v);
    for (size_t i = 0; i < a->count; i++)
        v[i] = (int32_t)a->i64[i];
    *count = a->count;
    return v;
}

/* ------------------------------------------------------------------ */
/* Agreement with PyTorch                                              */
/* ------------------------------------------------------------------ */

/* Runs case `name` of gen_llama.py: forward with the statistics hook,
 * backward with the case's trainable set, then compares everything. */
static void check_case(const char *name)
{
    char key[192];
    snprintf(key, sizeof key, "%s/tied", name);
    int tied = ref_int(key);
    llama_model m;
    load_model(&m, tied);
    const llama_config *c = &m.cfg;
    int B = ref_int("config/batch"), T = c->seq_len;

    size_t nt, ntg, nl;
    snprintf(key, sizeof key, "%s/tokens", name);
    int32_t *tokens = ref_ints(key, &nt);
    snprintf(key, sizeof key, "%s/targets", name);
    int32_t *targets = ref_ints(key, &ntg);
    snprintf(key, sizeof key, "%s/layers", name);
    int32_t *layers32 = ref_ints(key, &nl);
    assert_int_equal(nt, (size_t)B * T);
    assert_int_equal(nl, (size_t)c->n_layers);
    uint8_t layers[64];
    for (size_t l = 0; l < nl; l++)
        layers[l] = (uint8_t)layers32[l];
    llama_trainable tr = {layers, 0, 0};
    snprintf(key, sizeof key, "%s/embeddings", name);
    tr.embeddings = ref_int(key);
    snprintf(key, sizeof key, "%s/head", name);
    tr.head = ref_int(key);

    /* The statistics hook, f64 accumulators starting at zero. */
    owl_context *ctx = test_cpu_context(1);
    int L = c->n_layers, qdim = m.head_dim * c->n_heads;
    int widths[4] = {c->dim, qdim, c->dim, c->hidden_dim};
    const char *hooks[4] = {"attn_in", "attn_out", "mlp_in", "mlp_mid"};
    owl_tensor *st[4];
    double *st_data[4];
    for (int k = 0; k < 4; k++) {
        st[k] = calloc((size_t)L, sizeof(owl_tensor));
        st_data[k] = calloc((size_t)L * widths[k], sizeof(double));
        assert_true(st[k] && st_data[k]);
        for (int l = 0; l < L; l++)
            owl_tensor_init(&st[k][l], st_data[k] + (size_t)l * widths[k],
                            OWL_DTYPE_F64, 1, widths[k]);
    }
    llama_act_stats stats = {ctx, st[0], st[1], st[2], st[3]};

    float *logits = malloc((size_t)B * T * c->vocab_size * sizeof(float));
    assert_non_null(logits);
    for (size_t i = 0; i < m.g.count; i++)
        m.g.base[i] = SENTINEL;
    float loss = llama_forward(&m, tokens, targets, B, T, logits, &stats);
    llama_backward(&m, &tr);

    snprintf(key, sizeof key, "%s/loss", name);
    double ref_loss = refdata_need(g_ref, key)->f64[0];
    double loss_err = fabs(loss - ref_loss) / fabs(ref_loss);
    snprintf(key, sizeof key, "%s/logits", name);
    const refarray *rl = refdata_need(g_ref, key);
    assert_int_equal(rl->count, (size_t)B * T * c->vocab_size);
    double logits_err = rel_err(logits, rl->f64, rl->count);
    printf("%s: loss %.6f (ref %.6f, rel err %.2e), logits rel err %.2e\n",
           name, (double)loss, ref_loss, loss_err, logits_err);
    assert_true(loss_err <= TOL_LOSS);
    assert_true(logits_err <= TOL_LOGITS);

    named_tensor t[MAX_TENSORS];
    int n = list_tensors(&m, &m.g, t);
    double worst = 0.0;
    int trained = 0;
    for (int i = 0; i < n; i++) {
        snprintf(key, sizeof key, "%.64s/g/%.96s", name, t[i].name);
        const refarray *g = refdata_get(g_ref, key);
        if (!g) {
            /* Frozen: the gradient buffer must be untouched. */
            for (size_t j = 0; j < t[i].count; j++)
                if (t[i].data[j] != SENTINEL)
                    fail_msg("%s: frozen %s has a gradient written at %zu",
                             name, t[i].name, j);
            continue;
        }
        assert_int_equal(g->count, t[i].count);
        double e = rel_err(t[i].data, g->f64, g->count);
        if (e > TOL_GRAD)
            fail_msg("%s: gradient of %s: rel err %.3e > %.0e", name,
                     t[i].name, e, TOL_GRAD);
        worst = fmax(worst, e);
        trained++;
    }
    printf("%s: %d trainable tensors, worst gradient rel err %.2e\n", name,
           trained, worst);
    assert_true(trained > 0);

    double worst_st = 0.0;
    for (int k = 0; k < 4; k++)
        for (int l = 0; l < L; l++) {
            snprintf(key, sizeof key, "%s/sumsq/%s/%d", name, hooks[k], l);
            const refarray *r = refdata_need(g_ref, key);
            assert_int_equal(r->count, (size_t)widths[k]);
            float tmp[4096];
            for (int j = 0; j < widths[k]; j++)
                tmp[j] = (float)st_data[k][(size_t)l * widths[k] + j];
            double e = rel_err(tmp, r->f64, r->count);
            worst_st = fmax(worst_st, e);
            if (e > TOL_SUMSQ)
                fail_msg("%s: %s statistics of layer %d: rel err %.3e", name,
                         hooks[k], l, e);
        }
    printf("%s: activation statistics worst rel err %.2e\n", name, worst_st);

    for (int k = 0; k < 4; k++) {
        free(st[k]);
        free(st_data[k]);
    }
    owl_context_free(ctx);
    free(logits);
    free(tokens);
    free(targets);
    free(layers32);
    llama_destroy(&m);
}

static void test_full(void **state)
{
    (void)state;
    check_case("full");
}

static void test_frozen(void **state)
{
    (void)state;
    check_case("frozen");
}

static void test_frozen_head(void **state)
{
    (void)state;
    check_case("frozen_head");
}

static void test_embed_only(void **state)
{
    (void)state;
    check_case("embed_only");
}

static void test_tied(void **state)
{
    (void)state;
    check_case("tied");
}

/* A shorter, smaller batch than the model was created for: the second
 * sequence alone, its first T/2 tokens. Attention is causal, so its logits
 * are the reference's logits of those positions. */
static void test_prefix(void **state)
{
    (void)state;
    llama_model m;
    load_model(&m, 0);
    int T = m.cfg.seq_len, V = m.cfg.vocab_size, half = T / 2;
    size_t nt;
    int32_t *tokens = ref_ints("full/tokens", &nt);
    float *logits = malloc((size_t)half * V * sizeof(float));
    assert_non_null(logits);
    float loss = llama_forward(&m, tokens + T, NULL, 1, half, logits, NULL);
    assert_true(loss == 0.0f); /* no targets */
    const refarray *rl = refdata_need(g_ref, "full/logits");
    double e = rel_err(logits, rl->f64 + (size_t)T * V, (size_t)half * V);
    printf("prefix: logits rel err %.2e\n", e);
    assert_true(e <= TOL_LOGITS);
    free(logits);
    free(tokens);
    llama_destroy(&m);
}

/* ------------------------------------------------------------------ */
/* Finite differences                                                  */
/* ------------------------------------------------------------------ */

/*
 * Central differences (L(w + h) - L(w - h)) / 2h on a tiny model with
 * random weights, for a few entries of every tensor, against the backward
 * pass. Independent of PyTorch. The loss is f32 (~6e-8 relative), so
 * with h = 1e-2 the difference quotient carries ~1e-5 of rounding and
 * O(h^2) truncation; each entry must agree within 2e-2 of the tensor's
 * largest gradient.
 */
static void test_finite_differences(void **state)
{
    (void)state;
    llama_config c = {8, 12, 2, 2, 1, 11, 6, 10000.0f, 1e-5f, 1};
    llama_model m;
    char err[256];
    assert_int_equal(llama_create(&m, &c, 2, err, sizeof err), 0);
    llama_init_random(&m, 7, 0.5f);
    /* Gains away from 1, so their gradients are not special. */
    float gains[16];
    test_fill_uniform(gains, 16, 3);
    for (int i = 0; i < c.dim; i++) {
        m.w.rms_final[i] = 1.0f + 0.3f * gains[i];
        m.w.layers[1].rms_att[i] = 1.0f + 0.3f * gains[i + 8];
    }
    int32_t tokens[12] = {1, 5, 3, 9, 0, 10, 2, 2, 7, 4, 8, 6};
    int32_t targets[12] = {5, 3, -1, 0, 10, 2, 2, 7, 4, -1, 6, 1};
    llama_trainable tr = {NULL, 1, 1};
    llama_forward(&m, tokens, targets, 2, 6, NULL, NULL);
    llama_backward(&m, &tr);

    named_tensor w[MAX_TENSORS], g[MAX_TENSORS];
    int n = list_tensors(&m, &m.w, w);
    list_tensors(&m, &m.g, g);
    const float h = 1e-2f;
    double worst = 0.0;
    for (int i = 0; i < n; i++) {
        double scale = 0.0;
        for (size_t j = 0; j < g[i].count; j++)
            scale = fmax(scale, fabs(g[i].data[j]));
        assert_true(scale > 0.0);
        /* Three entries spread over the tensor. */
        for (int s = 0; s < 3; s++) {
            size_t j = (g[i].count - 1) * (size_t)s / 2;
            float keep = w[i].data[j];
            w[i].data[j] = keep + h;
            double up = llama_forward(&m, tokens, targets, 2, 6, NULL, NULL);
            w[i].data[j] = keep - h;
            double down = llama_forward(&m, tokens, targets, 2, 6, NULL, NULL);
            w[i].data[j] = keep;
            double fd = (up - down) / (2.0 * (double)h);
            double e = fabs(fd - g[i].data[j]) / scale;
            worst = fmax(worst, e);
            if (e > 2e-2)
                fail_msg("%s[%zu]: backward %.6g, finite difference %.6g",
                         w[i].name, j, (double)g[i].data[j], fd);
        }
    }
    printf("finite differences: worst error %.2e of the tensor's scale\n",
           worst);
    llama_destroy(&m);
}

/* ------------------------------------------------------------------ */
/* Arguments                                                           */
/* ------------------------------------------------------------------ */

static void test_forward_refuses(void **state)
{
    (void)state;
    llama_config c = {8, 12, 1, 2, 1, 11, 4, 10000.0f, 1e-5f, 0};
    llama_model m;
    char err[256];
    assert_int_equal(llama_create(&m, &c, 1, err, sizeof err), 0);
    llama_init_random(&m, 1, 0.1f);
    int32_t ok[4] = {1, 2, 3, 4}, bad[4] = {1, 2, 11, 4}, neg[4] = {1, -1, 0, 0};
    int32_t bad_target[4] = {1, 2, 3, 11};
    assert_false(isnan(llama_forward(&m, ok, ok, 1, 4, NULL, NULL)));
    assert_true(isnan(llama_forward(&m, bad, NULL, 1, 4, NULL, NULL)));
    assert_true(isnan(llama_forward(&m, neg, NULL, 1, 4, NULL, NULL)));
    assert_true(isnan(llama_forward(&m, ok, bad_target, 1, 4, NULL, NULL)));
    assert_true(isnan(llama_forward(&m, ok, NULL, 2, 4, NULL, NULL)));
    assert_true(isnan(llama_forward(&m, ok, NULL, 1, 5, NULL, NULL)));
    assert_true(isnan(llama_forward(&m, NULL, NULL, 1, 4, NULL, NULL)));
    /* A failed forward leaves nothing for backward: gradients untouched. */
    for (size_t i = 0; i < m.g.count; i++)
        m.g.base[i] = SENTINEL;
    llama_trainable tr = {NULL, 1, 1};
    llama_backward(&m, &tr);
    for (size_t i = 0; i < m.g.count; i++)
        assert_true(m.g.base[i] == SENTINEL);

    /* Configurations. */
    llama_config bad_cfg = c;
    bad_cfg.n_kv_heads = 3;
    assert_int_equal(llama_config_check(&bad_cfg, err, sizeof err), -1);
    bad_cfg = c;
    bad_cfg.dim = 6; /* head_dim 3: odd, RoPE needs pairs */
    assert_int_equal(llama_config_check(&bad_cfg, err, sizeof err), -1);
    bad_cfg = c;
    bad_cfg.norm_eps = 0.0f;
    assert_int_equal(llama_config_check(&bad_cfg, err, sizeof err), -1);
    llama_destroy(&m);
}

int main(int argc, char **argv)
{
    g_ref = refdata_load(test_arg(argc, argv, 1, "llama_model.ref"));
    g_hf_dir = test_arg(argc, argv, 2, "llama_model_hf");
    if (!g_ref)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_full),
        cmocka_unit_test(test_frozen),
        cmocka_unit_test(test_frozen_head),
        cmocka_unit_test(test_embed_only),
        cmocka_unit_test(test_tied),
        cmocka_unit_test(test_prefix),
        cmocka_unit_test(test_finite_differences),
        cmocka_unit_test(test_forward_refuses),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    refdata_free(g_ref);
    return rc;
}
