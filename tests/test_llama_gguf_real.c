/* The real SmolLM2-135M-Instruct GGUF (Q4_1 matrices, Q8_0 embedding, F32
 * norms; tests/fetch-smollm2.sh) loaded by the GGUF reader, against the
 * same file converted to a Hugging Face directory by the gguf package
 * (ref/gen_gguf_smollm2.py, which also runs transformers on it):
 *   - the held-out loss of 2 x 64 tokens of English text, and the logits
 *     of four positions, agree with transformers' LlamaForCausalLM in
 *     float64 to f32 accuracy;
 *   - the Hugging Face loader on that directory gives bit-identical
 *     weights, so the same loss;
 *   - the perplexity is that of a language model on English (about 59;
 *     without the q/k row reordering it is about 200, vocabulary 49152).
 * Usage: test_llama_gguf_real DIR MODEL.gguf */
#include "common/refdata.h"
#include "common/testutil.h"

#include "checkpoint.h"
#include "gguf.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *g_dir, *g_model;

enum { B = 2, T = 64 };

typedef struct batch {
    int32_t in[B * T], tg[B * T];
} batch;

static refdata *load_ref(void)
{
    char p[4096];
    snprintf(p, sizeof p, "%s/smollm2.ref", g_dir);
    refdata *r = refdata_load(p);
    if (!r)
        fail_msg("cannot read %s", p);
    return r;
}

static void read_batch(const refdata *r, batch *b)
{
    const refarray *tok = refdata_need(r, "tokens");
    const refarray *tgt = refdata_need(r, "targets");
    assert_int_equal(tok->count, B * T);
    assert_int_equal(tgt->count, B * T);
    for (int i = 0; i < B * T; i++) {
        b->in[i] = (int32_t)tok->i64[i];
        b->tg[i] = (int32_t)tgt->i64[i];
    }
}

/* The loss, and the logits of the reference's rows checked against it. */
static float loss_and_logits(llama_model *m, const refdata *r,
                             const batch *b, double *logit_err)
{
    size_t V = (size_t)m->cfg.vocab_size;
    float *logits = malloc((size_t)B * T * V * sizeof *logits);
    assert_non_null(logits);
    float loss = llama_forward(m, b->in, b->tg, B, T, logits, NULL);
    const refarray *rows = refdata_need(r, "logit_rows");
    const refarray *want = refdata_need(r, "logits");
    assert_int_equal(want->count, rows->count * V);
    *logit_err = 0;
    for (uint64_t i = 0; i < rows->count; i++) {
        double e = test_max_rel_err(logits + (size_t)rows->i64[i] * V,
                                    want->f64 + i * V, V, 1.0);
        *logit_err = e > *logit_err ? e : *logit_err;
    }
    free(logits);
    return loss;
}

static void test_smollm2(void **state)
{
    (void)state;
    refdata *r = load_ref();
    batch b;
    read_batch(r, &b);
    double want = refdata_need(r, "loss")->f64[0];
    double want32 = refdata_need(r, "loss_f32")->f64[0];
    char err[512];

    llama_model g;
    if (ckpt_load_gguf(g_model, &g, B, T, err, sizeof err) != 0)
        fail_msg("%s", err);
    /* SmolLM2-135M's published configuration. */
    const llama_config *c = &g.cfg;
    assert_int_equal(c->n_layers, 30);
    assert_int_equal(c->dim, 576);
    assert_int_equal(c->hidden_dim, 1536);
    assert_int_equal(c->n_heads, 9);
    assert_int_equal(c->n_kv_heads, 3);
    assert_int_equal(c->vocab_size, 49152);
    assert_int_equal(c->tied, 1);
    assert_int_equal(c->seq_len, T); /* the run's, not the file's 8192 */
    assert_true(c->rope_theta == 100000.0f);
    assert_true(c->norm_eps == 1e-5f);
    double gerr;
    float gloss = loss_and_logits(&g, r, &b, &gerr);

    llama_model h;
    char hf[4096];
    snprintf(hf, sizeof hf, "%s/hf", g_dir);
    if (ckpt_load_hf(hf, &h, B, T, err, sizeof err) != 0)
        fail_msg("%s", err);
    assert_int_equal(h.w.count, g.w.count);
    size_t differ = 0;
    for (size_t i = 0; i < g.w.count; i++)
        differ += memcmp(&g.w.base[i], &h.w.base[i], sizeof(float)) != 0;
    double herr;
    float hloss = loss_and_logits(&h, r, &b, &herr);

    printf("loss: GGUF %.6f, Hugging Face directory %.6f, transformers "
           "%.6f (float64), %.6f (float32)\n", (double)gloss, (double)hloss,
           want, want32);
    printf("logits max rel err: GGUF %.2e, Hugging Face directory %.2e; "
           "perplexity %.2f (GGUF), %.2f (transformers); %zu of %zu "
           "weights differ\n", gerr, herr, exp(gloss), exp(want), differ,
           g.w.count);
    assert_int_equal(differ, 0);
    assert_true(fabs(gloss - want) < 1e-4 * want);
    assert_true(fabs(hloss - want) < 1e-4 * want);
    assert_true(gerr < 1e-4);
    assert_true(herr < 1e-4);
    /* A real model on English text: far below the vocabulary's 49152, and
     * below the ~200 that q and k rows left in llama.cpp's order give. */
    assert_true(exp(gloss) < 100.0);
    llama_destroy(&h);
    llama_destroy(&g);
    refdata_free(r);
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s DIR MODEL.gguf (DIR made by "
                "tests/ref/gen_gguf_smollm2.py)\n", argv[0]);
        return 2;
    }
    g_dir = argv[1];
    g_model = argv[2];
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_smollm2),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
