/* What the LLaMa example's loaders do with inputs that are not the
 * checkpoints they expect: models created for the run's sequence length
 * rather than the checkpoint's context, FIFOs where files should be,
 * sizes that the files cannot back or that wrap 64 bits, non-finite
 * weights, Hugging Face's defaults, a tied head stored twice, and a
 * directory holding two checkpoints. References: configurations and
 * files written here by hand, values placed at known indices, the model's
 * own forward pass on a model loaded without the option under test. */
#include "common/testutil.h"

#include "checkpoint.h"
#include "data.h"
#include "safetensors.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- helpers -------------------------------------------------------- */

static char *make_temp_dir(void)
{
    char tmpl[] = "/tmp/llama_guard_XXXXXX";
    char *d = mkdtemp(tmpl);
    assert_non_null(d);
    return strdup(d);
}

static void remove_dir(char *dir)
{
    DIR *d = opendir(dir);
    if (d) {
        struct dirent *e;
        char p[512];
        while ((e = readdir(d)) != NULL) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
                continue;
            snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
            unlink(p);
        }
        closedir(d);
    }
    rmdir(dir);
    free(dir);
}

static char *path_in(const char *dir, const char *name)
{
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    if (!p || !dir || !name)
        abort(); /* out of memory in a test: nothing to report */
    snprintf(p, n, "%s/%s", dir, name);
    return p;
}

static void write_file(const char *path, const void *b, size_t len)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(b, 1, len, f), len);
    fclose(f);
}

static void write_text(const char *path, const char *text)
{
    write_file(path, text, strlen(text));
}

/* dim 8, 2 heads of 4 (1 kv head), hidden 12, 2 layers, vocab 16. */
static llama_config tiny_config(int tied, int seq_len)
{
    llama_config c = {.dim = 8, .hidden_dim = 12, .n_layers = 2,
                      .n_heads = 2, .n_kv_heads = 1, .vocab_size = 16,
                      .seq_len = seq_len, .rope_theta = 10000.0f,
                      .norm_eps = 1e-5f, .tied = tied};
    return c;
}

static void create_model(llama_model *m, const llama_config *c)
{
    char err[512];
    if (llama_create(m, c, 1, err, sizeof err) != 0)
        fail_msg("llama_create: %s", err);
    test_fill_normal(m->w.base, m->w.count, 17 + (uint64_t)c->tied);
}

/* DIR/model.safetensors and DIR/config.json of m. */
static void save_hf(const llama_model *m, const char *dir)
{
    char err[512];
    char *w = path_in(dir, "model.safetensors");
    char *c = path_in(dir, "config.json");
    if (ckpt_save_safetensors(w, m, OWL_DTYPE_F32, c, err, sizeof err) != 0)
        fail_msg("save: %s", err);
    free(w);
    free(c);
}

/* config.json with the tiny model's keys and `extra` members. */
static void write_config(const char *dir, int layers, int context,
                         const char *extra)
{
    char text[2048];
    char ctx[64] = "";
    if (context > 0)
        snprintf(ctx, sizeof ctx, "\"max_position_embeddings\": %d, ",
                 context);
    snprintf(text, sizeof text,
             "{\"hidden_size\": 8, \"intermediate_size\": 12, "
             "\"num_hidden_layers\": %d, \"num_attention_heads\": 2, "
             "\"num_key_value_heads\": 1, \"vocab_size\": 16, %s"
             "\"rms_norm_eps\": 1e-05%s%s}",
             layers, ctx, extra ? ", " : "", extra ? extra : "");
    char *p = path_in(dir, "config.json");
    write_text(p, text);
    free(p);
}

/* ---- the run's sequence length ---------------------------------------- */

static void test_max_seq(void **state)
{
    (void)state;
    llama_config c = tiny_config(0, 32);
    llama_model m, full, run, big;
    create_model(&m, &c);
    char *dir = make_temp_dir();
    save_hf(&m, dir);
    char err[1024];
    if (ckpt_load_hf(dir, &full, 2, 0, err, sizeof err) != 0)
        fail_msg("max_seq 0: %s", err);
    assert_int_equal(full.cfg.seq_len, 32);
    assert_int_equal(full.context_len, 32);
    if (ckpt_load_hf(dir, &run, 2, 8, err, sizeof err) != 0)
        fail_msg("max_seq 8: %s", err);
    assert_int_equal(run.cfg.seq_len, 8);
    assert_int_equal(run.context_len, 32);
    if (ckpt_load_hf(dir, &big, 2, 1000, err, sizeof err) != 0)
        fail_msg("max_seq 1000: %s", err);
    assert_int_equal(big.cfg.seq_len, 32); /* never past the context */
    assert_int_equal(ckpt_load_hf(dir, &big, 2, -1, err, sizeof err), -1);

    /* The shorter model computes the same logits for what it can hold. */
    int32_t tok[2 * 8];
    for (int i = 0; i < 16; i++)
        tok[i] = (int32_t)((i * 7 + 3) % 16);
    float a[16 * 16], b[16 * 16];
    llama_forward(&full, tok, NULL, 2, 8, a, NULL);
    llama_forward(&run, tok, NULL, 2, 8, b, NULL);
    assert_memory_equal(a, b, sizeof a);
    llama_destroy(&full);
    llama_destroy(&run);
    llama_destroy(&big);

    /* A context of 2^20 tokens: its attention weights alone would need
     * 2^40 floats per head and layer; the run's 16 tokens load. */
    write_config(dir, 2, 1 << 20, NULL);
    if (ckpt_load_hf(dir, &run, 1, 16, err, sizeof err) != 0)
        fail_msg("long context, max_seq 16: %s", err);
    assert_int_equal(run.cfg.seq_len, 16);
    assert_int_equal(run.context_len, 1 << 20);
    assert_memory_equal(run.w.base, m.w.base, m.w.count * sizeof(float));
    llama_destroy(&run);
    memset(&run, 0x5A, sizeof run);
    assert_int_equal(ckpt_load_hf(dir, &run, 1, 0, err, sizeof err), -1);
    print_message("the whole context: %s\n", err);
    assert_non_null(strstr(err, "lower --seq or --batch"));
    assert_null(run.w.base);

    /* llama2.c: the same, with the file's seq_len as the context. */
    char *bin = path_in(dir, "m.bin");
    {
        int32_t h[7] = {8, 12, 2, 2, 1, 16, 32};
        size_t floats = 16 * 8 + 2 * (8 + 64 + 32 + 32 + 64 + 8 + 3 * 96) +
                        8 + 32 * 4;
        float *v = malloc(floats * sizeof *v);
        test_fill_normal(v, floats, 5);
        FILE *f = fopen(bin, "wb");
        assert_non_null(f);
        fwrite(h, 4, 7, f);
        fwrite(v, 4, floats, f);
        fclose(f);
        free(v);
    }
    if (ckpt_load_llama2c(bin, &run, 1, 8, err, sizeof err) != 0)
        fail_msg("llama2.c max_seq 8: %s", err);
    assert_int_equal(run.cfg.seq_len, 8);
    assert_int_equal(run.context_len, 32);
    if (ckpt_load_llama2c(bin, &full, 1, 0, err, sizeof err) != 0)
        fail_msg("llama2.c max_seq 0: %s", err);
    assert_int_equal(full.cfg.seq_len, 32);
    assert_memory_equal(run.w.base, full.w.base,
                        full.w.count * sizeof(float));
    llama_destroy(&run);
    llama_destroy(&full);
    free(bin);
    llama_destroy(&m);
    remove_dir(dir);
}

/* ---- FIFOs where files belong ------------------------------------------ */

/* A FIFO with no writer: opening it for reading blocks forever unless the
 * reader takes care. SIGALRM's default action ends the test program, so a
 * loader that hangs fails the test instead of stalling the suite. */
static void put_fifo(const char *path)
{
    unlink(path);
    if (mkfifo(path, 0644) != 0)
        fail_msg("mkfifo %s: %s", path, strerror(errno));
}

#define EXPECT_FIFO_REFUSED(call, err)                                     \
    do {                                                                   \
        alarm(20);                                                         \
        int rc_ = (call);                                                  \
        alarm(0);                                                          \
        assert_int_equal(rc_, -1);                                         \
        if (!strstr((err), "not a regular file (a FIFO)"))                 \
            fail_msg("%s: '%s'", #call, (err));                            \
    } while (0)

static void test_fifo_refused(void **state)
{
    (void)state;
    llama_config c = tiny_config(0, 8);
    llama_model m, back;
    create_model(&m, &c);
    char *dir = make_temp_dir();
    char err[1024];
    char *cfg = path_in(dir, "config.json");
    char *single = path_in(dir, "model.safetensors");
    char *index = path_in(dir, "model.safetensors.index.json");
    char *shard = path_in(dir, "model-00001-of-00001.safetensors");

    /* config.json */
    save_hf(&m, dir);
    put_fifo(cfg);
    EXPECT_FIFO_REFUSED(ckpt_load_hf(dir, &back, 1, 0, err, sizeof err),
                        err);
    /* model.safetensors */
    save_hf(&m, dir);
    put_fifo(single);
    EXPECT_FIFO_REFUSED(ckpt_load_hf(dir, &back, 1, 0, err, sizeof err),
                        err);
    EXPECT_FIFO_REFUSED(ckpt_load_safetensors(single, &m, err, sizeof err),
                        err);
    /* the shard index, then a shard it names */
    unlink(single);
    put_fifo(index);
    EXPECT_FIFO_REFUSED(ckpt_load_hf(dir, &back, 1, 0, err, sizeof err),
                        err);
    unlink(index);
    save_hf(&m, dir);
    assert_int_equal(rename(single, shard), 0);
    {
        st_file f;
        assert_int_equal(st_open(&f, shard, err, sizeof err), 0);
        FILE *o = fopen(index, "w");
        assert_non_null(o);
        fprintf(o, "{\"weight_map\": {");
        for (size_t i = 0; i < f.count; i++)
            fprintf(o, "%s\"%s\": \"model-00001-of-00001.safetensors\"",
                    i ? ", " : "", f.tensors[i].name);
        fprintf(o, "}}");
        fclose(o);
        st_close(&f);
    }
    if (ckpt_load_hf(dir, &back, 1, 0, err, sizeof err) != 0)
        fail_msg("the sharded directory before the FIFO: %s", err);
    llama_destroy(&back);
    put_fifo(shard);
    EXPECT_FIFO_REFUSED(ckpt_load_hf(dir, &back, 1, 0, err, sizeof err),
                        err);
    /* a llama2.c file, a text file and an id file */
    char *bin = path_in(dir, "m.bin");
    put_fifo(bin);
    EXPECT_FIFO_REFUSED(ckpt_load_llama2c(bin, &back, 1, 0, err,
                                          sizeof err), err);
    data_ids d;
    EXPECT_FIFO_REFUSED(data_load_text(bin, &d, err, sizeof err), err);
    EXPECT_FIFO_REFUSED(data_load_ids(bin, 16, &d, err, sizeof err), err);
    /* a companion file read for a later save */
    char *tok = path_in(dir, "tokenizer.json");
    put_fifo(tok);
    ckpt_source src;
    EXPECT_FIFO_REFUSED(ckpt_source_read(dir, &src, err, sizeof err), err);
    unlink(tok);
    if (ckpt_source_read(dir, &src, err, sizeof err) != 0)
        fail_msg("no companion files: %s", err);
    assert_int_equal(src.nfiles, 0);
    assert_non_null(src.config);
    ckpt_source_free(&src);
    free(tok);

    free(bin);
    free(cfg);
    free(single);
    free(index);
    free(shard);
    llama_destroy(&m);
    remove_dir(dir);
}

/* ---- sizes bounded by the files, products that wrap --------------------- */

/* A million layers beside a checkpoint of a few kilobytes: refused from
 * the file sizes, before a table of 9 million tensors is allocated (and
 * compared), for the single file and for shards. */
static void test_layers_bounded_by_files(void **state)
{
    (void)state;
    llama_config c = tiny_config(0, 8);
    llama_model m, back;
    create_model(&m, &c);
    char *dir = make_temp_dir();
    char err[1024];
    save_hf(&m, dir);
    write_config(dir, 1000000, 8, NULL);
    memset(&back, 0x5A, sizeof back);
    assert_int_equal(ckpt_load_hf(dir, &back, 1, 0, err, sizeof err), -1);
    print_message("%s\n", err);
    assert_non_null(strstr(err, "config.json describes"));
    assert_non_null(strstr(err, "1000000 layers"));
    assert_null(back.w.base);
    /* sharded: the shards' sizes add up, and they are still too few */
    char *single = path_in(dir, "model.safetensors");
    char *shard = path_in(dir, "model-00001-of-00002.safetensors");
    char *shard2 = path_in(dir, "model-00002-of-00002.safetensors");
    char *index = path_in(dir, "model.safetensors.index.json");
    assert_int_equal(rename(single, shard), 0);
    write_file(shard2, "\x02\0\0\0\0\0\0\0{}", 10);
    write_text(index, "{\"weight_map\": {\"a\": "
               "\"model-00001-of-00002.safetensors\", \"b\": "
               "\"model-00002-of-00002.safetensors\", \"c\": "
               "\"model-00001-of-00002.safetensors\"}}");
    assert_int_equal(ckpt_load_hf(dir, &back, 1, 0, err, sizeof err), -1);
    assert_non_null(strstr(err, "config.json describes"));
    /* the sum is the two shards' sizes */
    struct stat s1, s2;
    assert_int_equal(stat(shard, &s1), 0);
    assert_int_equal(stat(shard2, &s2), 0);
    char want[64];
    snprintf(want, sizeof want, "hold %lld bytes",
             (long long)(s1.st_size + s2.st_size));
    if (!strstr(err, want))
        fail_msg("'%s' does not say '%s'", err, want);
    free(single);
    free(shard);
    free(shard2);
    free(index);
    llama_destroy(&m);
    remove_dir(dir);
}

static void test_huge_sizes_refused(void **state)
{
    (void)state;
    llama_config c = tiny_config(0, 8);
    llama_model m, back;
    create_model(&m, &c);
    char *dir = make_temp_dir();
    char err[1024];
    save_hf(&m, dir);
    /* The parameter count itself past 2^64. */
    char *cp = path_in(dir, "config.json");
    write_text(cp, "{\"hidden_size\": 1073741824, \"intermediate_size\": "
               "2147483647, \"num_hidden_layers\": 2147483647, "
               "\"num_attention_heads\": 2, \"vocab_size\": 16}");
    assert_int_equal(ckpt_load_hf(dir, &back, 1, 0, err, sizeof err), -1);
    assert_non_null(strstr(err, "more than 2^64 parameters"));
    free(cp);
    llama_destroy(&m);
    remove_dir(dir);
}

/* head_dim 2^63 + 8 with 2 heads: times 2 it wraps to 16, the hidden size,
 * which a check by multiplication accepts. */
static void test_head_dim_wrap_refused(void **state)
{
    (void)state;
    llama_config c = tiny_config(0, 8);
    c.dim = 16; /* 2 heads of 8 */
    llama_model m, back;
    create_model(&m, &c);
    char *dir = make_temp_dir();
    char err[1024];
    save_hf(&m, dir);
    char *cp = path_in(dir, "config.json");
    const char *base = "{\"hidden_size\": 16, \"intermediate_size\": 12, "
                       "\"num_hidden_layers\": 2, \"num_attention_heads\": 2, "
                       "\"num_key_value_heads\": 1, \"vocab_size\": 16, "
                       "\"max_position_embeddings\": 8, \"head_dim\": %s}";
    char text[512];
    snprintf(text, sizeof text, base, "8"); /* the true value loads */
    write_text(cp, text);
    if (ckpt_load_hf(dir, &back, 1, 0, err, sizeof err) != 0)
        fail_msg("head_dim 8: %s", err);
    llama_destroy(&back);
    snprintf(text, sizeof text, base, "9223372036854775816");
    write_text(cp, text);
    assert_int_equal(ckpt_load_hf(dir, &back, 1, 0, err, sizeof err), -1);
    assert_non_null(strstr(err, "head_dim must be hidden_size / "
                                "num_attention_heads = 16 / 2"));
    snprintf(text, sizeof text, base, "4");
    write_text(cp, text);
    assert_int_equal(ckpt_load_hf(dir, &back, 1, 0, err, sizeof err), -1);
    assert_non_null(strstr(err, "head_dim"));
    free(cp);
    llama_destroy(&m);
    remove_dir(dir);
}

/* ---- Hugging Face's defaults ------------------------------------------- */

/* LlamaConfig's max_position_embeddings defaults to 2048. */
static void test_default_context(void **state)
{
    (void)state;
    llama_config c = tiny_config(0, 8);
    llama_model m, back;
    create_model(&m, &c);
    char *dir = make_temp_dir();
    char err[1024];
    save_hf(&m, dir);
    write_config(dir, 2, 0, NULL);
    if (ckpt_load_hf(dir, &back, 1, 64, err, sizeof err) != 0)
        fail_msg("no max_position_embeddings: %s", err);
    assert_int_equal(back.context_len, 2048);
    assert_int_equal(back.cfg.seq_len, 64);
    llama_destroy(&back);
    if (ckpt_load_hf(dir, &back, 1, 0, err, sizeof err) != 0)
        fail_msg("no max_position_embeddings, max_seq 0: %s", err);
    assert_int_equal(back.cfg.seq_len, 2048);
    llama_destroy(&back);
    write_config(dir, 2, 0, "\"max_position_embeddings\": null");
    if (ckpt_load_hf(dir, &back, 1, 64, err, sizeof err) != 0)
        fail_msg("max_position_embeddings null: %s", err);
    assert_int_equal(back.context_len, 2048);
    llama_destroy(&back);
    llama_destroy(&m);
    remove_dir(dir);
}

/* ---- non-finite weights ---------------------------------------------- */

/* Writes m as DIR/model.safetensors in dtype (the Hugging Face names
 * from the table the loader uses are not needed: ckpt_save_safetensors
 * writes them), with `value` placed at index `at` of the q projection of
 * layer 1 first. */
static void save_with_value(llama_model *m, const char *dir, owl_dtype dt,
                            size_t at, float value)
{
    float keep = m->w.layers[1].wq[at];
    m->w.layers[1].wq[at] = value;
    char err[512];
    char *w = path_in(dir, "model.safetensors");
    char *c = path_in(dir, "config.json");
    if (ckpt_save_safetensors(w, m, dt, c, err, sizeof err) != 0)
        fail_msg("save: %s", err);
    m->w.layers[1].wq[at] = keep;
    free(w);
    free(c);
}

static void test_nonfinite_refused(void **state)
{
    (void)state;
    llama_config c = tiny_config(0, 8);
    llama_model m, back;
    create_model(&m, &c);
    char *dir = make_temp_dir();
    char *wpath = path_in(dir, "model.safetensors");
    char err[1024], want[256];
    const owl_dtype dts[3] = {OWL_DTYPE_F32, OWL_DTYPE_BF16, OWL_DTYPE_F16};
    const float bad[3] = {NAN, INFINITY, -INFINITY};
    const char *names[3] = {"NaN", "+Inf", "-Inf"};
    for (int d = 0; d < 3; d++)
        for (int k = 0; k < 3; k++) {
            size_t at = (size_t)(13 + 7 * k + d); /* row 1, 2 or 3 of 8 */
            save_with_value(&m, dir, dts[d], at, bad[k]);
            memset(&back, 0x5A, sizeof back);
            assert_int_equal(ckpt_load_hf(dir, &back, 1, 0, err, sizeof err),
                             -1);
            snprintf(want, sizeof want, "tensor 'model.layers.1.self_attn."
                     "q_proj.weight' holds %s at index %zu (row %zu, column "
                     "%zu)", names[k], at, at / 8, at % 8);
            if (!strstr(err, want))
                fail_msg("dtype %d: '%s' does not say \"%s\"", d, err, want);
            assert_null(back.w.base);
            /* into an existing model: refused, the model unchanged */
            llama_model into;
            create_model(&into, &c);
            float *before = malloc(into.w.count * sizeof(float));
            memcpy(before, into.w.base, into.w.count * sizeof(float));
            assert_int_equal(ckpt_load_safetensors(wpath, &into, err,
                                                   sizeof err), -1);
            assert_non_null(strstr(err, want));
            assert_memory_equal(before, into.w.base,
                                into.w.count * sizeof(float));
            free(before);
            llama_destroy(&into);
        }
    /* The largest finite values load. */
    save_with_value(&m, dir, OWL_DTYPE_F16, 0, 65504.0f);
    if (ckpt_load_hf(dir, &back, 1, 0, err, sizeof err) != 0)
        fail_msg("f16 max: %s", err);
    assert_true(back.w.layers[1].wq[0] == 65504.0f);
    llama_destroy(&back);

    /* llama2.c: a NaN in layer 1's w2 and an Inf in the classifier. */
    char *bin = path_in(dir, "m.bin");
    int32_t h[7] = {8, 12, 2, 2, 1, -16, 4}; /* negative: own classifier */
    size_t emb = 16 * 8, layer_w2 = 12 * 8;
    size_t before_w2 = emb + 2 * (8 + 64 + 32 + 32 + 64 + 8 + 96);
    size_t freq = 4 * 4, total = before_w2 + 2 * 96 * 2 + 8 + freq + emb;
    float *v = malloc(total * sizeof *v);
    test_fill_normal(v, total, 9);
    for (int pass = 0; pass < 3; pass++) {
        float *x = malloc(total * sizeof *x);
        memcpy(x, v, total * sizeof *x);
        if (pass == 0)
            x[before_w2 + layer_w2 + 5] = NAN; /* w2 of layer 1, index 5 */
        if (pass == 1)
            x[total - emb + 100] = -INFINITY;  /* wcls, index 100 */
        if (pass == 2) /* the freq_cis arrays are not weights */
            x[before_w2 + 2 * 96 * 2 + 8 + 3] = NAN;
        FILE *f = fopen(bin, "wb");
        assert_non_null(f);
        fwrite(h, 4, 7, f);
        fwrite(x, 4, total, f);
        fclose(f);
        free(x);
        int rc = ckpt_load_llama2c(bin, &back, 1, 0, err, sizeof err);
        if (pass == 2) {
            if (rc != 0)
                fail_msg("NaN in freq_cis: %s", err);
            llama_destroy(&back);
            continue;
        }
        assert_int_equal(rc, -1);
        const char *w = pass == 0 ? "tensor 'w2' of layer 1 holds NaN at "
                                    "index 5"
                                  : "tensor 'wcls' holds -Inf at index 100";
        if (!strstr(err, w))
            fail_msg("'%s' does not say \"%s\"", err, w);
    }
    free(v);
    free(bin);
    free(wpath);
    llama_destroy(&m);
    remove_dir(dir);
}

/* ---- a tied head stored twice ----------------------------------------- */

static void test_tied_head_stored(void **state)
{
    (void)state;
    llama_config c = tiny_config(1, 8);
    llama_model m, back;
    create_model(&m, &c);
    char *dir = make_temp_dir();
    char err[1024];
    save_hf(&m, dir); /* config.json (tied) and the tensors without a head */
    /* Shards: the embedding in one, lm_head.weight (equal) in another,
     * in bf16 where the embedding is f32 (equal values, other dtype). */
    for (size_t i = 0; i < (size_t)c.vocab_size * c.dim; i++)
        m.w.embed[i] = st_bf16_to_f32(st_f32_to_bf16(m.w.embed[i]));
    save_hf(&m, dir);
    char *single = path_in(dir, "model.safetensors");
    char *s1 = path_in(dir, "model-00001-of-00002.safetensors");
    char *s2 = path_in(dir, "model-00002-of-00002.safetensors");
    char *index = path_in(dir, "model.safetensors.index.json");
    assert_int_equal(rename(single, s1), 0);
    st_out_tensor head = {"lm_head.weight", 2, {16, 8}, m.w.embed};
    assert_int_equal(st_write(s2, &head, 1, ST_BF16, err, sizeof err), 0);
    {
        st_file f;
        assert_int_equal(st_open(&f, s1, err, sizeof err), 0);
        FILE *o = fopen(index, "w");
        assert_non_null(o);
        fprintf(o, "{\"weight_map\": {\"lm_head.weight\": "
                   "\"model-00002-of-00002.safetensors\"");
        for (size_t i = 0; i < f.count; i++)
            fprintf(o, ", \"%s\": \"model-00001-of-00002.safetensors\"",
                    f.tensors[i].name);
        fprintf(o, "}}");
        fclose(o);
        st_close(&f);
    }
    if (ckpt_load_hf(dir, &back, 1, 0, err, sizeof err) != 0)
        fail_msg("tied, equal lm_head.weight in another shard: %s", err);
    assert_true(back.cfg.tied);
    assert_ptr_equal(back.w.head, back.w.embed);
    assert_memory_equal(back.w.base, m.w.base, m.w.count * sizeof(float));
    llama_destroy(&back);
    /* One value apart: refused, saying where and what to do. */
    float *other = malloc(16 * 8 * sizeof *other);
    memcpy(other, m.w.embed, 16 * 8 * sizeof *other);
    other[77] = -other[77] + 1.0f;
    head.data = other;
    assert_int_equal(st_write(s2, &head, 1, ST_F32, err, sizeof err), 0);
    memset(&back, 0x5A, sizeof back);
    assert_int_equal(ckpt_load_hf(dir, &back, 1, 0, err, sizeof err), -1);
    print_message("%s\n", err);
    assert_non_null(strstr(err, "lm_head.weight differs from "
                                "model.embed_tokens.weight at index 77"));
    assert_non_null(strstr(err, "set tie_word_embeddings to false"));
    assert_null(back.w.base);
    free(other);
    free(single);
    free(s1);
    free(s2);
    free(index);
    llama_destroy(&m);
    remove_dir(dir);
}

/* ---- two checkpoints in one directory ---------------------------------- */

static void test_single_and_index_refused(void **state)
{
    (void)state;
    llama_config c = tiny_config(0, 8);
    llama_model m, back;
    create_model(&m, &c);
    char *dir = make_temp_dir();
    char err[1024];
    save_hf(&m, dir);
    char *index = path_in(dir, "model.safetensors.index.json");
    char *shard = path_in(dir, "model-00001-of-00001.safetensors");
    char *single = path_in(dir, "model.safetensors");
    {
        /* a complete sharded copy of the same weights */
        FILE *in = fopen(single, "rb"), *out = fopen(shard, "wb");
        assert_non_null(in);
        assert_non_null(out);
        int ch;
        while ((ch = fgetc(in)) != EOF)
            fputc(ch, out);
        fclose(in);
        fclose(out);
        st_file f;
        assert_int_equal(st_open(&f, shard, err, sizeof err), 0);
        FILE *o = fopen(index, "w");
        assert_non_null(o);
        fprintf(o, "{\"weight_map\": {");
        for (size_t i = 0; i < f.count; i++)
            fprintf(o, "%s\"%s\": \"model-00001-of-00001.safetensors\"",
                    i ? ", " : "", f.tensors[i].name);
        fprintf(o, "}}");
        fclose(o);
        st_close(&f);
    }
    memset(&back, 0x5A, sizeof back);
    assert_int_equal(ckpt_load_hf(dir, &back, 1, 0, err, sizeof err), -1);
    assert_non_null(strstr(err, "holds both model.safetensors and "
                                "model.safetensors.index.json"));
    assert_null(back.w.base);
    /* either alone loads */
    unlink(single);
    if (ckpt_load_hf(dir, &back, 1, 0, err, sizeof err) != 0)
        fail_msg("the index alone: %s", err);
    llama_destroy(&back);
    free(index);
    free(shard);
    free(single);
    llama_destroy(&m);
    remove_dir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_max_seq),
        cmocka_unit_test(test_fifo_refused),
        cmocka_unit_test(test_layers_bounded_by_files),
        cmocka_unit_test(test_huge_sizes_refused),
        cmocka_unit_test(test_head_dim_wrap_refused),
        cmocka_unit_test(test_default_context),
        cmocka_unit_test(test_nonfinite_refused),
        cmocka_unit_test(test_tied_head_stored),
        cmocka_unit_test(test_single_and_index_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
