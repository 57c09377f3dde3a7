/*
 * The LLaMa example and libowlore on real data (the files of
 * shared/data, README.md there):
 *
 *  (a) stories260K.bin, a pretrained TinyStories LLaMa read with
 *      ckpt_load_llama2c. Its tokenizer is not available, so the id
 *      sequences come from the model itself: sampled with a fixed seed at
 *      temperature 0.4 from the BOS id, they are in-distribution for it.
 *      (Not at temperature 1: on its own samples the expected gradient of
 *      the log-likelihood is zero, so fine-tuning would have nothing to
 *      learn; the sharper samples give it a real target. Each training
 *      sequence is seen once, so the held-out loss measures that target
 *      learnt, not sequences memorised.) The layers' LOD
 *      ratios come from calibration sequences through the forward pass's
 *      activation-statistics hook and owl_lod_compute, pooled over each
 *      layer's seven matrices; they must be finite, in [0, 1] and not all
 *      equal. owl_optimizer (OWLORE, sampler weighted by those ratios)
 *      then fine-tunes the model on the training split, and the loss on
 *      held-out sequences must go down.
 *  (b) tinyshakespeare.txt as byte ids (0..255): a small grouped-query
 *      model from a random init trained briefly by each of the five
 *      methods from the same init on the same batches; each must lower
 *      the held-out loss (the last tenth of the text) below the initial
 *      one.
 *
 * argv[1]: the data directory. The program exits 77 (skipped) when it is
 * absent, and a case whose file is missing is skipped.
 */
#include "common/testutil.h"

#include "checkpoint.h"
#include "llama.h"
#include "llama_owl.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static const char *g_data_dir;

/* splitmix64: the test's own fixed-seed generator for sampling and
 * batch offsets. */
static uint64_t next_u64(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static double next_u01(uint64_t *s)
{
    return (double)(next_u64(s) >> 11) * 0x1.0p-53;
}

static int data_path(char *out, size_t len, const char *file)
{
    snprintf(out, len, "%s/%s", g_data_dir, file);
    struct stat st;
    return stat(out, &st) == 0;
}

/* Mean loss over n sequences of T+1 ids (inputs then shifted targets),
 * in batches the model holds. */
static double mean_loss(llama_model *m, const int32_t *seqs, int n, int T,
                        int max_batch)
{
    int32_t *in = malloc((size_t)max_batch * T * sizeof *in);
    int32_t *tg = malloc((size_t)max_batch * T * sizeof *tg);
    assert_non_null(in);
    assert_non_null(tg);
    double sum = 0.0;
    for (int s0 = 0; s0 < n; s0 += max_batch) {
        int b = n - s0 < max_batch ? n - s0 : max_batch;
        for (int i = 0; i < b; i++) {
            memcpy(in + (size_t)i * T, seqs + (size_t)(s0 + i) * (T + 1),
                   (size_t)T * sizeof *in);
            memcpy(tg + (size_t)i * T, seqs + (size_t)(s0 + i) * (T + 1) + 1,
                   (size_t)T * sizeof *tg);
        }
        sum += (double)llama_forward(m, in, tg, b, T, NULL, NULL) * b;
    }
    free(in);
    free(tg);
    return sum / n;
}

/* One optimizer step on sequences first..first+B-1 (T+1 ids each). */
static void train_step(owl_context *ctx, owl_optimizer *opt, llama_model *m,
                       const int32_t *seqs, int B, int T, double lr)
{
    uint8_t mask[64];
    uint64_t L = (uint64_t)m->cfg.n_layers;
    int32_t *in = malloc((size_t)B * T * sizeof *in);
    int32_t *tg = malloc((size_t)B * T * sizeof *tg);
    assert_non_null(in);
    assert_non_null(tg);
    for (int i = 0; i < B; i++) {
        memcpy(in + (size_t)i * T, seqs + (size_t)i * (T + 1),
               (size_t)T * sizeof *in);
        memcpy(tg + (size_t)i * T, seqs + (size_t)i * (T + 1) + 1,
               (size_t)T * sizeof *tg);
    }
    assert_owl_ok(ctx, owl_optimizer_active_layers(opt, mask, L, NULL));
    float loss = llama_forward(m, in, tg, B, T, NULL, NULL);
    assert_true(isfinite(loss));
    llama_trainable tr = llama_owl_trainable(mask);
    llama_backward(m, &tr);
    assert_owl_ok(ctx, owl_optimizer_step(opt, lr));
    free(in);
    free(tg);
}

/* ------------------------------------------------------------------ */
/* (a) stories260K: LOD from calibration ids, OWLORE fine-tuning        */
/* ------------------------------------------------------------------ */

enum {
    GEN_SEQS = 144, /* sampled sequences: 128 to train on, 16 held out */
    TRAIN_SEQS = 128,
    HELD_SEQS = 16,
    GEN_T = 48,     /* inputs per sequence (GEN_T + 1 ids) */
    BOS = 1,        /* llama2.c's BOS id */
    FT_BATCH = 8,
    FT_STEPS = 16
};
#define TEMPERATURE 0.4
#define LOD_M 13.0 /* the paper's outlier threshold */
#define FT_LR 3e-4

/* Samples n sequences of T + 1 ids from BOS, all n at once: at length t
 * the forward pass over the first t ids gives the next id's logits. */
static void sample_sequences(llama_model *m, int32_t *seqs, int n, int T,
                             uint64_t seed)
{
    int V = m->cfg.vocab_size;
    int32_t *in = malloc((size_t)n * T * sizeof *in);
    float *logits = malloc((size_t)n * T * V * sizeof *logits);
    double *p = malloc((size_t)V * sizeof *p);
    assert_non_null(in);
    assert_non_null(logits);
    assert_non_null(p);
    for (int i = 0; i < n; i++)
        seqs[(size_t)i * (T + 1)] = BOS;
    for (int t = 1; t <= T; t++) {
        for (int i = 0; i < n; i++)
            memcpy(in + (size_t)i * t, seqs + (size_t)i * (T + 1),
                   (size_t)t * sizeof *in);
        llama_forward(m, in, NULL, n, t, logits, NULL);
        for (int i = 0; i < n; i++) {
            const float *row = logits + ((size_t)i * t + (size_t)(t - 1)) * V;
            double mx = -INFINITY, sum = 0.0;
            for (int v = 0; v < V; v++)
                mx = fmax(mx, row[v]);
            for (int v = 0; v < V; v++)
                sum += p[v] = exp((row[v] - mx) / TEMPERATURE);
            double u = next_u01(&seed) * sum;
            int pick = V - 1;
            for (int v = 0; v < V; v++)
                if ((u -= p[v]) < 0) {
                    pick = v;
                    break;
                }
            seqs[(size_t)i * (T + 1) + t] = pick;
        }
    }
    free(in);
    free(logits);
    free(p);
}

/* The LOD ratio of every layer: the statistics hook over the calibration
 * sequences, then owl_lod_compute over the layer's seven matrices, each
 * with its own input's statistic. */
static void compute_lod(owl_context *ctx, llama_model *m, const int32_t *seqs,
                        int n, int T, double *ratio)
{
    const llama_config *c = &m->cfg;
    int L = c->n_layers, dim = c->dim, hid = c->hidden_dim;
    int qdim = m->head_dim * c->n_heads, kvdim = m->head_dim * c->n_kv_heads;
    double *sums = calloc((size_t)L * (2 * dim + qdim + hid), sizeof *sums);
    owl_tensor *t = malloc(4 * (size_t)L * sizeof *t);
    assert_non_null(sums);
    assert_non_null(t);
    llama_act_stats st = {ctx, t, t + L, t + 2 * L, t + 3 * L};
    double *at = sums;
    for (int l = 0; l < L; l++) {
        owl_tensor_init(&st.attn_in[l], at, OWL_DTYPE_F64, 1, dim); at += dim;
        owl_tensor_init(&st.attn_out[l], at, OWL_DTYPE_F64, 1, qdim); at += qdim;
        owl_tensor_init(&st.mlp_in[l], at, OWL_DTYPE_F64, 1, dim); at += dim;
        owl_tensor_init(&st.mlp_mid[l], at, OWL_DTYPE_F64, 1, hid); at += hid;
    }
    int32_t *in = malloc((size_t)n * T * sizeof *in);
    assert_non_null(in);
    for (int i = 0; i < n; i++)
        memcpy(in + (size_t)i * T, seqs + (size_t)i * (T + 1),
               (size_t)T * sizeof *in);
    for (int s0 = 0; s0 < n; s0 += FT_BATCH) {
        int b = n - s0 < FT_BATCH ? n - s0 : FT_BATCH;
        llama_forward(m, in + (size_t)s0 * T, NULL, b, T, NULL, &st);
    }
    for (int l = 0; l < L; l++) {
        llama_layer *w = &m->w.layers[l];
        owl_tensor W[7], S[7];
        owl_tensor_init(&W[0], w->wq, OWL_DTYPE_F32, qdim, dim);
        owl_tensor_init(&W[1], w->wk, OWL_DTYPE_F32, kvdim, dim);
        owl_tensor_init(&W[2], w->wv, OWL_DTYPE_F32, kvdim, dim);
        owl_tensor_init(&W[3], w->wo, OWL_DTYPE_F32, dim, qdim);
        owl_tensor_init(&W[4], w->w_gate, OWL_DTYPE_F32, hid, dim);
        owl_tensor_init(&W[5], w->w_up, OWL_DTYPE_F32, hid, dim);
        owl_tensor_init(&W[6], w->w_down, OWL_DTYPE_F32, dim, hid);
        S[0] = S[1] = S[2] = st.attn_in[l];
        S[3] = st.attn_out[l];
        S[4] = S[5] = st.mlp_in[l];
        S[6] = st.mlp_mid[l];
        assert_owl_ok(ctx, owl_lod_compute(ctx, W, S, 7, LOD_M, &ratio[l]));
    }
    free(in);
    free(sums);
    free(t);
}

static void test_stories260k(void **state)
{
    (void)state;
    char path[4096], err[256];
    if (!data_path(path, sizeof path, "stories260K.bin"))
        skip();
    /* The file's seq_len (512) would size the attention buffers for 512
     * positions; the sequences here are short, so the weights move into
     * a model created for GEN_T positions (seq_len sizes no parameter). */
    llama_model file, m;
    if (ckpt_load_llama2c(path, &file, 1, 0, err, sizeof err) != 0)
        fail_msg("ckpt_load_llama2c(%s): %s", path, err);
    llama_config cfg = file.cfg;
    cfg.seq_len = GEN_T;
    if (llama_create(&m, &cfg, GEN_SEQS, err, sizeof err) != 0)
        fail_msg("llama_create: %s", err);
    assert_int_equal(m.w.count, file.w.count);
    memcpy(m.w.base, file.w.base, m.w.count * sizeof(float));
    llama_destroy(&file);

    int32_t *seqs = malloc((size_t)GEN_SEQS * (GEN_T + 1) * sizeof *seqs);
    assert_non_null(seqs);
    sample_sequences(&m, seqs, GEN_SEQS, GEN_T, 20240620);
    const int32_t *train = seqs;
    const int32_t *held = seqs + (size_t)TRAIN_SEQS * (GEN_T + 1);

    owl_context *ctx = test_cpu_context(2);
    int L = m.cfg.n_layers;
    double lod[64];
    compute_lod(ctx, &m, train, TRAIN_SEQS, GEN_T, lod);
    int positive = 0, differ = 0;
    for (int l = 0; l < L; l++) {
        printf("layer %d: LOD ratio %.5f (M = %g)\n", l, lod[l], LOD_M);
        assert_true(isfinite(lod[l]) && lod[l] >= 0.0 && lod[l] <= 1.0);
        positive += lod[l] > 0.0;
        differ += lod[l] != lod[0];
    }
    if (differ == 0)
        fail_msg("every layer has the same LOD ratio %g", lod[0]);

    owl_sampler_options so;
    owl_galore_options go;
    owl_optimizer_options oo;
    assert_owl_ok(ctx, owl_sampler_options_init(&so, sizeof so));
    assert_owl_ok(ctx, owl_galore_options_init(&go, sizeof go));
    assert_owl_ok(ctx, owl_optimizer_options_init(&oo, sizeof oo));
    so.gamma = 2;
    so.period = 5;
    so.seed = 3;
    so.weight_mode = OWL_WEIGHTS_OWLORE;
    so.weights = lod;
    assert_true(positive >= 2); /* the sampler needs gamma positive weights */
    go.rank = 8;
    go.update_gap = 10;
    go.scale = 0.25;
    oo.method = OWL_METHOD_OWLORE;
    oo.num_layers = (uint64_t)L;
    oo.sampler = &so;
    oo.galore = &go;
    oo.max_grad_norm = 1.0;
    owl_optimizer *opt = NULL;
    assert_owl_ok(ctx, owl_optimizer_create(ctx, &oo, &opt));
    assert_owl_ok(ctx, llama_owl_register(opt, &m));

    double before = mean_loss(&m, held, HELD_SEQS, GEN_T, GEN_SEQS);
    for (int t = 0; t < FT_STEPS; t++) {
        int first = (t * FT_BATCH) % TRAIN_SEQS;
        train_step(ctx, opt, &m, train + (size_t)first * (GEN_T + 1),
                   FT_BATCH, GEN_T, FT_LR);
    }
    double after = mean_loss(&m, held, HELD_SEQS, GEN_T, GEN_SEQS);
    printf("stories260K held-out loss: %.4f before, %.4f after %d OWLORE "
           "steps\n", before, after, FT_STEPS);
    assert_true(after < before);

    owl_optimizer_free(opt);
    owl_context_free(ctx);
    free(seqs);
    llama_destroy(&m);
}

/* ------------------------------------------------------------------ */
/* (b) tinyshakespeare bytes: the five methods from one init            */
/* ------------------------------------------------------------------ */

enum {
    SH_T = 64,
    SH_BATCH = 8,
    SH_STEPS = 40,
    SH_HELD = 16
};

static unsigned char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *buf = n > 0 ? malloc((size_t)n) : NULL;
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    *len = buf ? (size_t)n : 0;
    return buf;
}

/* n windows of T + 1 bytes of text[lo, hi) as ids, at offsets drawn from
 * seed (or evenly spaced when seed is 0). */
static void byte_windows(const unsigned char *text, size_t lo, size_t hi,
                         int n, int T, uint64_t seed, int32_t *out)
{
    size_t span = hi - lo - (size_t)T - 1;
    for (int i = 0; i < n; i++) {
        size_t off = lo + (seed ? next_u64(&seed) % span
                                : span / (size_t)n * (size_t)i);
        for (int t = 0; t <= T; t++)
            out[(size_t)i * (T + 1) + t] = text[off + (size_t)t];
    }
}

static void test_tinyshakespeare(void **state)
{
    (void)state;
    char path[4096], err[256];
    if (!data_path(path, sizeof path, "tinyshakespeare.txt"))
        skip();
    size_t len = 0;
    unsigned char *text = read_file(path, &len);
    assert_non_null(text);
    assert_true(len > 100000);
    size_t split = len / 10 * 9; /* the last tenth is held out */

    llama_config cfg = {.dim = 64, .hidden_dim = 172, .n_layers = 4,
                        .n_heads = 4, .n_kv_heads = 2, .vocab_size = 256,
                        .seq_len = SH_T, .rope_theta = 10000.0f,
                        .norm_eps = 1e-5f, .tied = 0};
    llama_model m;
    if (llama_create(&m, &cfg, SH_HELD, err, sizeof err) != 0)
        fail_msg("llama_create: %s", err);
    llama_init_random(&m, 11, 0.05f);
    float *init = malloc(m.w.count * sizeof *init);
    assert_non_null(init);
    memcpy(init, m.w.base, m.w.count * sizeof *init);

    int32_t *held = malloc((size_t)SH_HELD * (SH_T + 1) * sizeof *held);
    int32_t *batches =
        malloc((size_t)SH_STEPS * SH_BATCH * (SH_T + 1) * sizeof *batches);
    assert_non_null(held);
    assert_non_null(batches);
    byte_windows(text, split, len, SH_HELD, SH_T, 0, held);
    byte_windows(text, 0, split, SH_STEPS * SH_BATCH, SH_T, 99, batches);
    double before = mean_loss(&m, held, SH_HELD, SH_T, SH_HELD);
    printf("tinyshakespeare held-out loss at init: %.4f\n", before);

    /* Fixed outlier ratios for the OWLORE methods' sampler (the LOD
     * computation itself is case (a)'s). */
    static const double ratios[4] = {0.02, 0.035, 0.01, 0.025};
    static const struct { owl_method method; const char *name; } methods[] = {
        {OWL_METHOD_OWLORE, "OWLORE"}, {OWL_METHOD_OWLORE_FULL, "OWLORE_FULL"},
        {OWL_METHOD_LISA, "LISA"}, {OWL_METHOD_GALORE, "GALORE"},
        {OWL_METHOD_FULL, "FULL"},
    };
    owl_context *ctx = test_cpu_context(2);
    for (size_t k = 0; k < sizeof methods / sizeof methods[0]; k++) {
        memcpy(m.w.base, init, m.w.count * sizeof *init);
        owl_method method = methods[k].method;
        owl_sampler_options so;
        owl_galore_options go;
        owl_optimizer_options oo;
        assert_owl_ok(ctx, owl_sampler_options_init(&so, sizeof so));
        assert_owl_ok(ctx, owl_galore_options_init(&go, sizeof go));
        assert_owl_ok(ctx, owl_optimizer_options_init(&oo, sizeof oo));
        so.gamma = 2;
        so.period = 5;
        so.seed = 5;
        if (method == OWL_METHOD_OWLORE || method == OWL_METHOD_OWLORE_FULL) {
            so.weight_mode = OWL_WEIGHTS_OWLORE;
            so.weights = ratios;
        }
        go.rank = 16;
        go.update_gap = 20;
        go.scale = 0.25;
        oo.method = method;
        oo.num_layers = (uint64_t)cfg.n_layers;
        oo.sampler = &so;
        oo.galore = &go;
        oo.max_grad_norm = 1.0;
        owl_optimizer *opt = NULL;
        assert_owl_ok(ctx, owl_optimizer_create(ctx, &oo, &opt));
        assert_owl_ok(ctx, llama_owl_register(opt, &m));
        for (int t = 0; t < SH_STEPS; t++)
            train_step(ctx, opt, &m,
                       batches + (size_t)t * SH_BATCH * (SH_T + 1), SH_BATCH,
                       SH_T, 3e-3);
        double after = mean_loss(&m, held, SH_HELD, SH_T, SH_HELD);
        printf("%-11s held-out loss after %d steps: %.4f\n", methods[k].name,
               SH_STEPS, after);
        if (!(after < before))
            fail_msg("%s: held-out loss %.4f, not below the initial %.4f",
                     methods[k].name, after, before);
        owl_optimizer_free(opt);
    }
    owl_context_free(ctx);
    free(init);
    free(held);
    free(batches);
    free(text);
    llama_destroy(&m);
}

int main(int argc, char **argv)
{
    g_data_dir = test_arg(argc, argv, 1, "../shared/data");
    struct stat st;
    if (stat(g_data_dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        printf("data directory %s is absent: skipping\n", g_data_dir);
        return 77;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stories260k),
        cmocka_unit_test(test_tinyshakespeare),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
