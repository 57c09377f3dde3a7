/* Saving complete model directories (ckpt_save_hf, ckpt_dir.h): the
 * source's config.json kept byte for byte but for the stored dtype, the
 * companion files carried along, a sharded checkpoint replaced by one
 * file and nothing left of it, targets that would lose files refused, and
 * the replacement atomic: a saving process killed at random moments
 * always leaves a directory that is entirely the previous save or
 * entirely the next. References: expected texts built here by string
 * operations on the source, directory listings, the loaded weights
 * against the saved model's, and whole-file comparisons. */
#include "common/testutil.h"

#include "checkpoint.h"
#include "ckpt_dir.h"
#include "json.h"
#include "safetensors.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* ---- helpers -------------------------------------------------------- */

static char *make_temp_dir(void)
{
    char tmpl[] = "/tmp/llama_save_XXXXXX";
    char *d = mkdtemp(tmpl);
    assert_non_null(d);
    return strdup(d);
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

/* rm -r, for the test's own temporary trees (two levels at most). */
static void remove_tree(const char *dir)
{
    DIR *d = opendir(dir);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
                continue;
            char *p = path_in(dir, e->d_name);
            struct stat st;
            if (lstat(p, &st) == 0 && S_ISDIR(st.st_mode))
                remove_tree(p);
            else
                unlink(p);
            free(p);
        }
        closedir(d);
    }
    rmdir(dir);
}

static void write_file(const char *path, const void *b, size_t len)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(b, 1, len, f), len);
    fclose(f);
}

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        fail_msg("cannot open %s: %s", path, strerror(errno));
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)n + 1);
    assert_non_null(b);
    assert_int_equal(fread(b, 1, (size_t)n, f), (size_t)n);
    b[n] = '\0';
    fclose(f);
    *len = (size_t)n;
    return b;
}

/* The directory's entries, sorted, joined by spaces. */
static void listing(const char *dir, char *out, size_t len)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    char names[64][NAME_MAX + 1];
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL && n < 64)
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
            snprintf(names[n++], sizeof names[0], "%s", e->d_name);
    closedir(d);
    for (int i = 0; i < n; i++) /* insertion sort */
        for (int j = i; j > 0 && strcmp(names[j - 1], names[j]) > 0; j--) {
            char t[sizeof names[0]];
            memcpy(t, names[j], sizeof t);
            memcpy(names[j], names[j - 1], sizeof t);
            memcpy(names[j - 1], t, sizeof t);
        }
    out[0] = '\0';
    for (int i = 0; i < n; i++)
        snprintf(out + strlen(out), len - strlen(out), "%s%s", i ? " " : "",
                 names[i]);
}

/* A source config.json as a real model ships one: keys this code never
 * reads, odd spellings of numbers, an escaped string, its own layout. */
static const char k_source[] =
    "{\n"
    "  \"_name_or_path\": \"HuggingFaceTB/SmolLM2-135M-Instruct\",\n"
    "  \"architectures\": [\n"
    "    \"LlamaForCausalLM\"\n"
    "  ],\n"
    "  \"attention_bias\": false,\n"
    "  \"attention_dropout\": 0.0,\n"
    "  \"bos_token_id\": 1,\n"
    "  \"eos_token_id\": 2,\n"
    "  \"hidden_act\": \"silu\",\n"
    "  \"hidden_size\": 8,\n"
    "  \"initializer_range\": 0.041666666666666664,\n"
    "  \"intermediate_size\": 12,\n"
    "  \"is_llama_config\": true,\n"
    "  \"max_position_embeddings\": 8192,\n"
    "  \"model_type\": \"llama\",\n"
    "  \"num_attention_heads\": 2,\n"
    "  \"num_hidden_layers\": 2,\n"
    "  \"num_key_value_heads\": 1,\n"
    "  \"pretraining_tp\": 1,\n"
    "  \"rms_norm_eps\": 1e-05,\n"
    "  \"rope_interleaved\": false,\n"
    "  \"rope_scaling\": null,\n"
    "  \"rope_theta\": 1E5,\n"
    "  \"tie_word_embeddings\": true,\n"
    "  \"torch_dtype\": \"bfloat16\",\n"
    "  \"transformers_version\": \"4.42.3\",\n"
    "  \"use_cache\": true,\n"
    "  \"vocab_size\": 16,\n"
    "  \"note\": \"caf\\u00e9 \\\"quoted\\\"\"\n"
    "}\n";

/* text with the first `from` replaced by `to` (which must be there). */
static char *replaced(const char *text, const char *from, const char *to)
{
    const char *at = strstr(text, from);
    assert_non_null(at);
    size_t a = (size_t)(at - text), f = strlen(from), t = strlen(to);
    char *out = malloc(strlen(text) - f + t + 1);
    memcpy(out, text, a);
    memcpy(out + a, to, t);
    strcpy(out + a + t, at + f);
    return out;
}

static llama_config tied_config(void)
{
    llama_config c = {.dim = 8, .hidden_dim = 12, .n_layers = 2,
                      .n_heads = 2, .n_kv_heads = 1, .vocab_size = 16,
                      .seq_len = 8, .rope_theta = 1e5f, .norm_eps = 1e-5f,
                      .tied = 1};
    return c;
}

/* A Hugging Face directory: the model's weights as two shards and an
 * index, `config` as config.json, and companion files. */
static void write_sharded_source(const char *dir, const llama_model *m,
                                 const char *config)
{
    char err[512];
    char *single = path_in(dir, "model.safetensors");
    assert_int_equal(ckpt_save_safetensors(single, m, OWL_DTYPE_F32, NULL,
                                           err, sizeof err), 0);
    st_file f;
    assert_int_equal(st_open(&f, single, err, sizeof err), 0);
    /* Shard 1: the first half of the tensors, shard 2 the rest. */
    st_out_tensor t[64];
    float *vals[64];
    for (size_t i = 0; i < f.count; i++) {
        vals[i] = malloc(f.tensors[i].numel * sizeof(float));
        st_read_f32(&f, &f.tensors[i], vals[i]);
        t[i].name = f.tensors[i].name;
        t[i].ndim = f.tensors[i].ndim;
        t[i].shape[0] = f.tensors[i].shape[0];
        t[i].shape[1] = f.tensors[i].shape[1];
        t[i].data = vals[i];
    }
    size_t half = f.count / 2;
    char *s1 = path_in(dir, "model-00001-of-00002.safetensors");
    char *s2 = path_in(dir, "model-00002-of-00002.safetensors");
    assert_int_equal(st_write(s1, t, half, ST_F32, err, sizeof err), 0);
    assert_int_equal(st_write(s2, t + half, f.count - half, ST_F32, err,
                              sizeof err), 0);
    char *ip = path_in(dir, "model.safetensors.index.json");
    FILE *o = fopen(ip, "w");
    assert_non_null(o);
    fprintf(o, "{\"metadata\": {}, \"weight_map\": {");
    for (size_t i = 0; i < f.count; i++)
        fprintf(o, "%s\"%s\": \"model-0000%d-of-00002.safetensors\"",
                i ? ", " : "", t[i].name, i < half ? 1 : 2);
    fprintf(o, "}}");
    fclose(o);
    for (size_t i = 0; i < f.count; i++)
        free(vals[i]);
    st_close(&f);
    unlink(single);
    char *cp = path_in(dir, "config.json");
    write_file(cp, config, strlen(config));
    char *tp = path_in(dir, "tokenizer.json");
    write_file(tp, "{\"model\": {\"type\": \"BPE\"}}", 27);
    char *gp = path_in(dir, "generation_config.json");
    write_file(gp, "{\"bos_token_id\": 1}\n", 20);
    free(single);
    free(s1);
    free(s2);
    free(ip);
    free(cp);
    free(tp);
    free(gp);
}

/* ---- config.json ------------------------------------------------------- */

static void test_config_kept(void **state)
{
    (void)state;
    llama_config c = tied_config();
    llama_model m, back;
    char err[1024];
    assert_int_equal(llama_create(&m, &c, 1, err, sizeof err), 0);
    test_fill_normal(m.w.base, m.w.count, 3);
    char *dir = make_temp_dir();
    write_sharded_source(dir, &m, k_source);
    /* The model as a run loads it: 8 of the 8192 positions. */
    if (ckpt_load_hf(dir, &back, 1, 8, err, sizeof err) != 0)
        fail_msg("load: %s", err);
    assert_int_equal(back.cfg.seq_len, 8);
    ckpt_source src;
    if (ckpt_source_read(dir, &src, err, sizeof err) != 0)
        fail_msg("source: %s", err);
    assert_int_equal(src.nfiles, 2); /* tokenizer.json, generation_config */

    char *text;
    size_t len;
    const struct { owl_dtype dt; const char *name; } dts[] = {
        {OWL_DTYPE_F32, "\"float32\""}, {OWL_DTYPE_BF16, "\"bfloat16\""},
        {OWL_DTYPE_F16, "\"float16\""}};
    for (int i = 0; i < 3; i++) {
        assert_int_equal(ckpt_config_text(&back, dts[i].dt, &src, &text,
                                          &len, err, sizeof err), 0);
        char to[64];
        snprintf(to, sizeof to, "\"torch_dtype\": %s", dts[i].name);
        char *want = replaced(k_source, "\"torch_dtype\": \"bfloat16\"", to);
        assert_int_equal(len, strlen(want));
        assert_string_equal(text, want);
        free(want);
        free(text);
    }
    /* Without torch_dtype it is added after the last member; the newer
     * name "dtype", when there, is rewritten too. */
    char *no_dtype = replaced(k_source, "  \"torch_dtype\": \"bfloat16\",\n",
                              "");
    char *with_new = replaced(k_source, "\"use_cache\": true",
                              "\"use_cache\": true,\n  \"dtype\": \"float16\"");
    ckpt_source s2 = {no_dtype, strlen(no_dtype), NULL, 0};
    assert_int_equal(ckpt_config_text(&back, OWL_DTYPE_BF16, &s2, &text, &len,
                                      err, sizeof err), 0);
    char *want = replaced(no_dtype, "\"caf\\u00e9 \\\"quoted\\\"\"",
                          "\"caf\\u00e9 \\\"quoted\\\"\",\n"
                          "  \"torch_dtype\": \"bfloat16\"");
    assert_string_equal(text, want);
    free(want);
    free(text);
    s2.config = with_new;
    s2.config_len = strlen(with_new);
    assert_int_equal(ckpt_config_text(&back, OWL_DTYPE_F32, &s2, &text, &len,
                                      err, sizeof err), 0);
    char *w1 = replaced(with_new, "\"dtype\": \"float16\"",
                        "\"dtype\": \"float32\"");
    want = replaced(w1, "\"torch_dtype\": \"bfloat16\"",
                    "\"torch_dtype\": \"float32\"");
    assert_string_equal(text, want);
    free(w1);
    free(want);
    free(text);
    /* A source that is not this model's configuration is refused. */
    char *other = replaced(k_source, "\"hidden_size\": 8",
                           "\"hidden_size\": 16");
    s2.config = other;
    s2.config_len = strlen(other);
    assert_int_equal(ckpt_config_text(&back, OWL_DTYPE_F32, &s2, &text, &len,
                                      err, sizeof err), -1);
    assert_non_null(strstr(err, "describes another model"));
    free(other);
    other = replaced(k_source, "8192", "4096");
    s2.config = other;
    s2.config_len = strlen(other);
    assert_int_equal(ckpt_config_text(&back, OWL_DTYPE_F32, &s2, &text, &len,
                                      err, sizeof err), -1);
    assert_non_null(strstr(err, "context 4096"));
    free(other);
    free(no_dtype);
    free(with_new);

    /* No source: a config.json written from the configuration, with the
     * checkpoint's context (not the run's 8), that loads back as it. */
    assert_int_equal(ckpt_config_text(&back, OWL_DTYPE_F32, NULL, &text, &len,
                                      err, sizeof err), 0);
    json_value *j = json_parse(text, len, err, sizeof err);
    assert_non_null(j);
    assert_int_equal(json_get(j, "max_position_embeddings")->uint, 8192);
    assert_string_equal(json_get(j, "torch_dtype")->string, "float32");
    assert_true(json_get(j, "tie_word_embeddings")->boolean);
    json_free(j);
    free(text);

    ckpt_source_free(&src);
    llama_destroy(&back);
    llama_destroy(&m);
    remove_tree(dir);
    free(dir);
}

/* ---- what a checkpoint directory may hold -------------------------------- */

static void test_dir_owns_and_check(void **state)
{
    (void)state;
    static const struct { const char *name; int owned; } names[] = {
        {"model.safetensors", 1}, {"model.safetensors.index.json", 1},
        {"model-00001-of-00003.safetensors", 1}, {"config.json", 1},
        {"tokenizer.json", 1}, {"tokenizer.model", 1}, {"merges.txt", 1},
        {"generation_config.json", 1}, {"optimizer.state", 1},
        {"trainer.txt", 1}, {"model.safetensors.tmp-a1B2c3", 1},
        {"optimizer.state.Xy12ab", 1}, {"trainer.txt.tmp", 1},
        {"README.md", 0}, {"pytorch_model.bin", 0},
        {"adapter_model.safetensors", 0}, {"model-1-of-x.safetensors", 0},
        {"config.json.backup", 0}, {"config.json.tmp-abc", 0},
        {".gitattributes", 0}, {"model.gguf", 0},
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (ckpt_dir_owns(names[i].name) != names[i].owned)
            fail_msg("ckpt_dir_owns(%s) should be %d", names[i].name,
                     names[i].owned);

    char *dir = make_temp_dir();
    char err[1024];
    char *ck = path_in(dir, "ck");
    assert_int_equal(ckpt_dir_check(ck, err, sizeof err), 0); /* absent */
    assert_int_equal(mkdir(ck, 0755), 0);
    assert_int_equal(ckpt_dir_check(ck, err, sizeof err), 0); /* empty */
    char *f = path_in(ck, "config.json");
    write_file(f, "{}", 2);
    free(f);
    char *slashed = malloc(strlen(ck) + 3);
    if (!slashed)
        abort();
    sprintf(slashed, "%s//", ck);
    assert_int_equal(ckpt_dir_check(slashed, err, sizeof err), 0);
    free(slashed);
    f = path_in(ck, "README.md");
    write_file(f, "# model\n", 8);
    assert_int_equal(ckpt_dir_check(ck, err, sizeof err), -1);
    assert_non_null(strstr(err, "the file 'README.md', which is not part "
                                "of a checkpoint"));
    unlink(f);
    free(f);
    f = path_in(ck, "tokenizer.json");
    assert_int_equal(mkdir(f, 0755), 0); /* a directory of that name */
    assert_int_equal(ckpt_dir_check(ck, err, sizeof err), -1);
    assert_non_null(strstr(err, "the directory 'tokenizer.json'"));
    rmdir(f);
    free(f);
    f = path_in(dir, "plain");
    write_file(f, "x", 1);
    assert_int_equal(ckpt_dir_check(f, err, sizeof err), -1);
    assert_non_null(strstr(err, "not a directory"));
    char *below = path_in(f, "ck"); /* under a file */
    assert_int_equal(ckpt_dir_check(below, err, sizeof err), -1);
    free(below);
    free(f);
    below = path_in(dir, "no/such/ck");
    assert_int_equal(ckpt_dir_check(below, err, sizeof err), -1);
    assert_non_null(strstr(err, "parent"));
    free(below);
    const char *nameless[] = {".", "..", "/", "", "a/..", "a/./"};
    for (size_t i = 0; i < sizeof nameless / sizeof nameless[0]; i++) {
        assert_int_equal(ckpt_dir_check(nameless[i], err, sizeof err), -1);
        assert_non_null(strstr(err, "a name of its own"));
    }
    free(ck);
    remove_tree(dir);
    free(dir);
}

/* ---- saving over a sharded checkpoint ------------------------------------ */

/* One save of m into target through a stage, with trainer.txt holding
 * `tag` (standing for the trainer's own files). */
static void save_dir(const char *target, const llama_model *m, owl_dtype dt,
                     const ckpt_source *src, const char *tag)
{
    char err[1024];
    ckpt_stage s;
    if (ckpt_stage_begin(&s, target, err, sizeof err) != 0)
        fail_msg("begin: %s", err);
    if (ckpt_save_hf(s.tmp, m, dt, src, err, sizeof err) != 0)
        fail_msg("save: %s", err);
    char *t = path_in(s.tmp, "trainer.txt");
    write_file(t, tag, strlen(tag));
    free(t);
    if (ckpt_stage_commit(&s, err, sizeof err) != 0)
        fail_msg("commit: %s", err);
}

/* No DIR.saving-* or DIR.old-* left beside the target. */
static void assert_no_leftovers(const char *parent)
{
    char names[4096];
    listing(parent, names, sizeof names);
    if (strstr(names, ".saving-") || strstr(names, ".old-"))
        fail_msg("left behind in %s: %s", parent, names);
}

static void test_save_replaces_sharded(void **state)
{
    (void)state;
    llama_config c = tied_config();
    llama_model m, back;
    char err[1024], names[4096];
    assert_int_equal(llama_create(&m, &c, 1, err, sizeof err), 0);
    test_fill_normal(m.w.base, m.w.count, 5);
    char *parent = make_temp_dir();
    char *dir = path_in(parent, "model");
    assert_int_equal(mkdir(dir, 0755), 0);
    write_sharded_source(dir, &m, k_source);
    llama_model run;
    if (ckpt_load_hf(dir, &run, 1, 8, err, sizeof err) != 0)
        fail_msg("load: %s", err);
    ckpt_source src;
    assert_int_equal(ckpt_source_read(dir, &src, err, sizeof err), 0);
    /* "training" */
    for (size_t i = 0; i < run.w.count; i++)
        run.w.base[i] = run.w.base[i] * 0.5f + 0.25f;

    for (int pass = 0; pass < 2; pass++) {
        ckpt_dir_exchange_disabled = pass; /* the two-rename path too */
        save_dir(dir, &run, OWL_DTYPE_F32, &src, "step 1\n");
        listing(dir, names, sizeof names);
        assert_string_equal(names, "config.json generation_config.json "
                                   "model.safetensors tokenizer.json "
                                   "trainer.txt");
        assert_no_leftovers(parent);
        if (ckpt_load_hf(dir, &back, 1, 8, err, sizeof err) != 0)
            fail_msg("reload: %s", err);
        assert_memory_equal(back.w.base, run.w.base,
                            run.w.count * sizeof(float));
        assert_int_equal(back.context_len, 8192);
        llama_destroy(&back);
        size_t len;
        char *cfg = path_in(dir, "config.json");
        char *text = read_file(cfg, &len);
        char *want = replaced(k_source, "\"bfloat16\"", "\"float32\"");
        assert_string_equal(text, want);
        free(want);
        free(text);
        free(cfg);
        char *tok = path_in(dir, "tokenizer.json");
        text = read_file(tok, &len);
        assert_string_equal(text, "{\"model\": {\"type\": \"BPE\"}}");
        free(text);
        free(tok);
    }
    ckpt_dir_exchange_disabled = 0;

    /* Through a symbolic link: the directory it points to is replaced,
     * the link stays a link. */
    char *link = path_in(parent, "link");
    assert_int_equal(symlink(dir, link), 0);
    run.w.base[0] = 42.0f;
    save_dir(link, &run, OWL_DTYPE_BF16, &src, "step 2\n");
    struct stat st;
    assert_int_equal(lstat(link, &st), 0);
    assert_true(S_ISLNK(st.st_mode));
    if (ckpt_load_hf(dir, &back, 1, 8, err, sizeof err) != 0)
        fail_msg("reload through the link: %s", err);
    assert_true(back.w.base[0] == 42.0f);
    llama_destroy(&back);
    assert_no_leftovers(parent);

    /* An aborted stage leaves nothing, and the directory as it was. */
    ckpt_stage s;
    assert_int_equal(ckpt_stage_begin(&s, dir, err, sizeof err), 0);
    assert_int_equal(ckpt_save_hf(s.tmp, &run, OWL_DTYPE_F32, &src, err,
                                  sizeof err), 0);
    ckpt_stage_abort(&s);
    assert_no_leftovers(parent);
    if (ckpt_load_hf(dir, &back, 1, 8, err, sizeof err) != 0)
        fail_msg("after abort: %s", err);
    assert_true(back.w.base[0] == 42.0f);
    llama_destroy(&back);
    /* A target that would lose a file is refused at begin. */
    char *readme = path_in(dir, "README.md");
    write_file(readme, "x", 1);
    assert_int_equal(ckpt_stage_begin(&s, dir, err, sizeof err), -1);
    assert_non_null(strstr(err, "README.md"));
    free(readme);

    ckpt_source_free(&src);
    llama_destroy(&run);
    llama_destroy(&m);
    free(link);
    free(dir);
    remove_tree(parent);
    free(parent);
}

/* ---- killed while saving ------------------------------------------------- */

/* Whether DIR is entirely save A (f32 weights a, config float32,
 * trainer.txt "A") or entirely save B (bf16 weights b, bfloat16, "B"):
 * returns 'A', 'B', or 0 when the directory does not exist. */
static int which_save(const char *dir, const llama_model *a,
                      const llama_model *b_rounded)
{
    struct stat st;
    if (stat(dir, &st) != 0)
        return 0;
    char err[1024];
    llama_model back;
    if (ckpt_load_hf(dir, &back, 1, 8, err, sizeof err) != 0)
        fail_msg("after a kill the directory does not load: %s", err);
    size_t len;
    char *t = path_in(dir, "trainer.txt");
    char *tag = read_file(t, &len);
    char *cp = path_in(dir, "config.json");
    char *cfg = read_file(cp, &len);
    int is_a = memcmp(back.w.base, a->w.base, a->w.count * 4) == 0;
    int is_b = memcmp(back.w.base, b_rounded->w.base, a->w.count * 4) == 0;
    int r = 0;
    if (is_a && !strcmp(tag, "A") && strstr(cfg, "\"float32\""))
        r = 'A';
    else if (is_b && !strcmp(tag, "B") && strstr(cfg, "\"bfloat16\""))
        r = 'B';
    else
        fail_msg("a mixture: weights of %s, trainer.txt '%s', config %s",
                 is_a ? "A" : is_b ? "B" : "neither", tag,
                 strstr(cfg, "\"float32\"") ? "float32" : "bfloat16");
    free(t);
    free(tag);
    free(cp);
    free(cfg);
    llama_destroy(&back);
    return r;
}

/* The saving child: A and B in turn until it is killed. A failure ends
 * the process at once (the test runner must not go on in a child). */
static void child_saves(const char *dir, const llama_model *a,
                        const llama_model *b)
{
    char err[1024];
    for (int k = 0;; k++) {
        const llama_model *m = k % 2 == 0 ? b : a;
        ckpt_stage s;
        if (ckpt_stage_begin(&s, dir, err, sizeof err) != 0 ||
            ckpt_save_hf(s.tmp, m, k % 2 == 0 ? OWL_DTYPE_BF16 : OWL_DTYPE_F32,
                         NULL, err, sizeof err) != 0)
            _exit(2);
        char *t = path_in(s.tmp, "trainer.txt");
        FILE *f = fopen(t, "w");
        if (!f || fputs(k % 2 == 0 ? "B" : "A", f) < 0 || fclose(f) != 0)
            _exit(2);
        free(t);
        if (ckpt_stage_commit(&s, err, sizeof err) != 0)
            _exit(2);
    }
}

/* The first entry of parent whose name starts with prefix, or NULL. */
static char *sibling(const char *parent, const char *prefix)
{
    DIR *d = opendir(parent);
    assert_non_null(d);
    char *found = NULL;
    struct dirent *e;
    while (!found && (e = readdir(d)) != NULL)
        if (strncmp(e->d_name, prefix, strlen(prefix)) == 0)
            found = path_in(parent, e->d_name);
    closedir(d);
    return found;
}

static void test_killed_while_saving(void **state)
{
    (void)state;
    /* Large enough that a save takes a while (about 3 MB of weights). */
    llama_config c = {.dim = 128, .hidden_dim = 352, .n_layers = 4,
                      .n_heads = 4, .n_kv_heads = 2, .vocab_size = 1024,
                      .seq_len = 8, .rope_theta = 1e4f, .norm_eps = 1e-5f,
                      .tied = 1};
    llama_model a, b, b16;
    char err[1024];
    assert_int_equal(llama_create(&a, &c, 1, err, sizeof err), 0);
    assert_int_equal(llama_create(&b, &c, 1, err, sizeof err), 0);
    assert_int_equal(llama_create(&b16, &c, 1, err, sizeof err), 0);
    test_fill_normal(a.w.base, a.w.count, 1);
    test_fill_normal(b.w.base, b.w.count, 2);
    for (size_t i = 0; i < b.w.count; i++)
        b16.w.base[i] = st_bf16_to_f32(st_f32_to_bf16(b.w.base[i]));
    char *parent = make_temp_dir();
    char *dir = path_in(parent, "ck");
    uint64_t rng = 0x9E3779B97F4A7C15ull;
    int seen[3] = {0, 0, 0};
    for (int round = 0; round < 24; round++) {
        for (int pass = 0; pass < 2; pass++) {
            /* pass 0 with a directory from a first, complete save; pass 1
             * of a later round also kills first saves. */
            if (pass == 1 && round % 4 != 0)
                continue;
            remove_tree(dir);
            if (pass == 0)
                save_dir(dir, &a, OWL_DTYPE_F32, NULL, "A");
            ckpt_dir_exchange_disabled = round % 2 && pass == 0;
            pid_t pid = fork();
            assert_true(pid >= 0);
            if (pid == 0) /* never returns: killed */
                child_saves(dir, &a, &b);
            rng = rng * 6364136223846793005ull + 1442695040888963407ull;
            struct timespec ts = {0, (long)((rng >> 33) % 40000000)};
            nanosleep(&ts, NULL);
            kill(pid, SIGKILL);
            int status;
            waitpid(pid, &status, 0);
            int w = which_save(dir, &a, &b16);
            /* Only the two-rename path may leave no directory, between
             * its renames: then the previous save is whole beside it. */
            if (w == 0 && pass == 0) {
                if (!ckpt_dir_exchange_disabled)
                    fail_msg("round %d: the directory is gone", round);
                char *old = sibling(parent, "ck.old-");
                if (!old || !which_save(old, &a, &b16))
                    fail_msg("round %d: no directory, and no complete "
                             "previous save beside it", round);
                free(old);
            }
            seen[w == 'A' ? 1 : w == 'B' ? 2 : 0]++;
            /* leftovers of the killed saves, removed for the next round */
            DIR *d = opendir(parent);
            struct dirent *e;
            while ((e = readdir(d)) != NULL)
                if (strstr(e->d_name, ".saving-") ||
                    strstr(e->d_name, ".old-")) {
                    char *p = path_in(parent, e->d_name);
                    remove_tree(p);
                    free(p);
                }
            closedir(d);
        }
    }
    ckpt_dir_exchange_disabled = 0;
    print_message("after kills: %d times save A, %d times save B, %d times "
                  "no directory\n", seen[1], seen[2], seen[0]);
    free(dir);
    remove_tree(parent);
    free(parent);
    llama_destroy(&a);
    llama_destroy(&b);
    llama_destroy(&b16);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config_kept),
        cmocka_unit_test(test_dir_owns_and_check),
        cmocka_unit_test(test_save_replaces_sharded),
        cmocka_unit_test(test_killed_while_saving),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
