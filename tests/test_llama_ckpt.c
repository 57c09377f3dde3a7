/* LLaMa example checkpoints: the JSON parser, safetensors reading and
 * writing (round trips, rounding to bf16/f16, every malformed case,
 * sharding), llama2.c files (RoPE row permutation) and the real
 * stories260K.bin. References: hand-built files and values exactly
 * representable or rounded by hand, a nearest-value search over the
 * 16-bit formats decoded from their definitions, RoPE computed in double
 * in both conventions, SHA-256 (FIPS 180-4) for the data file, and
 * llama2.c's forward pass in PyTorch (ref/gen_llama2c.py) for the logits
 * of the loaded stories260K model. */
#include "common/refdata.h"
#include "common/testutil.h"

#include "checkpoint.h"
#include "json.h"
#include "safetensors.h"

#include <dirent.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *g_stories_path;
static const char *g_llama2c_ref_path;

/* ---- helpers -------------------------------------------------------- */

static char *make_temp_dir(void)
{
    char tmpl[] = "/tmp/llama_ckpt_XXXXXX";
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

static int count_dir_entries(const char *dir)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
            n++;
    closedir(d);
    return n;
}

static char *path_in(const char *dir, const char *name)
{
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    assert_non_null(p);
    snprintf(p, n, "%s/%s", dir, name);
    return p;
}

static unsigned char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc(n > 0 ? (size_t)n : 1);
    assert_non_null(b);
    assert_int_equal(fread(b, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *len = (size_t)n;
    return b;
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

static void put_le64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

/* A safetensors file from header text, its declared length and zeroed
 * data bytes. */
#define AUTO_LEN UINT64_MAX /* declare the header's real length */
static void write_raw_st(const char *path, const char *header,
                         uint64_t declared_len, size_t data_len)
{
    size_t h = strlen(header);
    if (declared_len == AUTO_LEN)
        declared_len = h;
    unsigned char *b = calloc(8 + h + data_len, 1);
    assert_non_null(b);
    put_le64(b, declared_len);
    memcpy(b + 8, header, h);
    write_file(path, b, 8 + h + data_len);
    free(b);
}

static llama_config tiny_config(int tied)
{
    llama_config c = {0};
    c.dim = 8;
    c.hidden_dim = 12;
    c.n_layers = 2;
    c.n_heads = 2;
    c.n_kv_heads = 1;
    c.vocab_size = 16;
    c.seq_len = 8;
    c.rope_theta = 500000.0f;
    c.norm_eps = 1e-5f;
    c.tied = tied;
    return c;
}

static void create_model(llama_model *m, const llama_config *c)
{
    char err[256];
    if (llama_create(m, c, 1, err, sizeof err) != 0)
        fail_msg("llama_create: %s", err);
}

static void fill_model(llama_model *m, uint64_t seed)
{
    test_fill_normal(m->w.base, m->w.count, seed);
}

/* The Hugging Face names of the model's tensors, written here from the
 * naming scheme (not taken from the code under test). */
static size_t hf_tensors(const llama_model *m, st_out_tensor *o,
                         char names[][80])
{
    const llama_config *c = &m->cfg;
    uint64_t dim = (uint64_t)c->dim, hid = (uint64_t)c->hidden_dim;
    uint64_t hd = (uint64_t)m->head_dim;
    uint64_t q = hd * (uint64_t)c->n_heads, kv = hd * (uint64_t)c->n_kv_heads;
    size_t n = 0;
#define ADD(nm_fmt, idx, r, cl, ptr)                                         \
    do {                                                                     \
        snprintf(names[n], 80, nm_fmt, idx);                                 \
        o[n].name = names[n];                                                \
        o[n].ndim = (cl) ? 2 : 1;                                            \
        o[n].shape[0] = (r);                                                 \
        o[n].shape[1] = (cl);                                                \
        o[n].data = (ptr);                                                   \
        n++;                                                                 \
    } while (0)
    ADD("model.embed_tokens.weight%.0d", 0, (uint64_t)c->vocab_size, dim,
        m->w.embed);
    for (int l = 0; l < c->n_layers; l++) {
        const llama_layer *L = &m->w.layers[l];
        ADD("model.layers.%d.self_attn.q_proj.weight", l, q, dim, L->wq);
        ADD("model.layers.%d.self_attn.k_proj.weight", l, kv, dim, L->wk);
        ADD("model.layers.%d.self_attn.v_proj.weight", l, kv, dim, L->wv);
        ADD("model.layers.%d.self_attn.o_proj.weight", l, dim, q, L->wo);
        ADD("model.layers.%d.mlp.gate_proj.weight", l, hid, dim, L->w_gate);
        ADD("model.layers.%d.mlp.up_proj.weight", l, hid, dim, L->w_up);
        ADD("model.layers.%d.mlp.down_proj.weight", l, dim, hid, L->w_down);
        ADD("model.layers.%d.input_layernorm.weight", l, dim, 0, L->rms_att);
        ADD("model.layers.%d.post_attention_layernorm.weight", l, dim, 0,
            L->rms_ffn);
    }
    ADD("model.norm.weight%.0d", 0, dim, 0, m->w.rms_final);
    if (!c->tied)
        ADD("lm_head.weight%.0d", 0, (uint64_t)c->vocab_size, dim,
            m->w.head);
#undef ADD
    return n;
}

enum { MAX_TENSORS = 64 };

/* ---- JSON ------------------------------------------------------------- */

static json_value *parse_ok(const char *text)
{
    char err[256];
    size_t n = strlen(text);
    char *copy = malloc(n ? n : 1); /* no NUL: reads past it would show */
    memcpy(copy, text, n);
    json_value *v = json_parse(copy, n, err, sizeof err);
    free(copy);
    if (!v)
        fail_msg("parse of <%s> failed: %s", text, err);
    return v;
}

static void parse_bad(const char *text, size_t n, const char *why)
{
    char err[256] = "";
    char *copy = malloc(n ? n : 1);
    memcpy(copy, text, n);
    json_value *v = json_parse(copy, n, err, sizeof err);
    free(copy);
    if (v) {
        json_free(v);
        fail_msg("<%.*s> (%s) was accepted", (int)n, text, why);
    }
    if (strncmp(err, "JSON: ", 6) != 0 || strlen(err) < 12)
        fail_msg("<%.*s>: unhelpful message '%s'", (int)n, text, err);
}

static void test_json_valid(void **state)
{
    (void)state;
    json_value *v = parse_ok(
        " {\"s\": \"a\\\"b\\\\c\\/d\\b\\f\\n\\r\\t\\u00e9\\u20ac\\ud83d\\ude00\","
        " \"n\": [0, -1.5e3, 2.5E-1, 18446744073709551615, "
        "18446744073709551616, 9007199254740993, -0],"
        " \"t\": true, \"f\": false, \"z\": null, \"e\": {}, \"a\": [],"
        " \"deep\": {\"x\": [[{\"y\": \"\xc3\xa9\"}]]}}\r\n");
    assert_int_equal(v->type, JSON_OBJECT);
    assert_int_equal(v->count, 8);
    const json_value *s = json_get(v, "s");
    assert_non_null(s);
    const char want[] = "a\"b\\c/d\b\f\n\r\t\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80";
    assert_int_equal(s->string_len, sizeof want - 1);
    assert_memory_equal(s->string, want, sizeof want);
    const json_value *n = json_get(v, "n");
    assert_int_equal(n->type, JSON_ARRAY);
    assert_int_equal(n->count, 7);
    assert_true(n->items[0].is_uint && n->items[0].uint == 0);
    assert_true(n->items[1].number == -1500.0 && !n->items[1].is_uint);
    assert_true(n->items[2].number == 0.25);
    assert_true(n->items[3].is_uint && n->items[3].uint == UINT64_MAX);
    assert_false(n->items[4].is_uint);
    assert_true(n->items[4].number == 18446744073709551616.0);
    /* 2^53 + 1: exact as an integer though not as a double */
    assert_true(n->items[5].is_uint &&
                n->items[5].uint == 9007199254740993ULL);
    assert_false(n->items[6].is_uint);
    assert_true(json_get(v, "t")->type == JSON_BOOL &&
                json_get(v, "t")->boolean == 1);
    assert_true(json_get(v, "f")->type == JSON_BOOL &&
                json_get(v, "f")->boolean == 0);
    assert_int_equal(json_get(v, "z")->type, JSON_NULL);
    assert_int_equal(json_get(v, "e")->count, 0);
    assert_int_equal(json_get(v, "a")->type, JSON_ARRAY);
    assert_null(json_get(v, "missing"));
    const json_value *d = json_get(v, "deep");
    const json_value *y = json_get(&json_get(d, "x")->items[0].items[0], "y");
    assert_string_equal(y->string, "\xc3\xa9");
    json_free(v);

    /* Where each value's text is in the input. */
    const char *doc = " {\"k\": [1, {\"x\": \"y\"}] , \"b\":true}\n";
    v = parse_ok(doc);
    assert_int_equal(v->begin, 1);
    assert_int_equal(v->end, strlen(doc) - 1);
    const json_value *k = json_get(v, "k");
    assert_int_equal(k->end - k->begin, strlen("[1, {\"x\": \"y\"}]"));
    assert_memory_equal(doc + k->begin, "[1, {\"x\": \"y\"}]",
                        k->end - k->begin);
    const json_value *x = json_get(&k->items[1], "x");
    assert_memory_equal(doc + x->begin, "\"y\"", 3);
    assert_int_equal(x->end - x->begin, 3);
    assert_memory_equal(doc + k->items[0].begin, "1", 1);
    assert_int_equal(k->items[0].end, k->items[0].begin + 1);
    const json_value *b = json_get(v, "b");
    assert_memory_equal(doc + b->begin, "true", 4);
    assert_int_equal(b->end - b->begin, 4);
    json_free(v);

    /* Scalars at the top level, and exactly the maximum depth. */
    v = parse_ok("42");
    assert_true(v->is_uint && v->uint == 42);
    json_free(v);
    char deep[2 * JSON_MAX_DEPTH + 1];
    memset(deep, '[', JSON_MAX_DEPTH);
    memset(deep + JSON_MAX_DEPTH, ']', JSON_MAX_DEPTH);
    deep[2 * JSON_MAX_DEPTH] = '\0';
    json_free(parse_ok(deep));
    json_free(NULL);
}

static void test_json_malformed(void **state)
{
    (void)state;
    static const struct { const char *text, *why; } bad[] = {
        {"", "empty"},
        {"   ", "only whitespace"},
        {"{", "unterminated object"},
        {"[1,", "unterminated array"},
        {"[1,]", "trailing comma"},
        {"{\"a\":1,}", "trailing comma in object"},
        {"{\"a\":}", "missing value"},
        {"{\"a\" 1}", "missing colon"},
        {"{\"a\":1 \"b\":2}", "missing comma"},
        {"{a:1}", "unquoted key"},
        {"{1:1}", "number key"},
        {"\"abc", "unterminated string"},
        {"\"abc\\", "backslash at the end"},
        {"\"\\x\"", "bad escape"},
        {"\"\\u12G4\"", "bad hex digit"},
        {"\"\\u12\"", "short \\u escape"},
        {"\"\\ud800\"", "lone high surrogate"},
        {"\"\\ud800\\u0041\"", "high surrogate then a non-surrogate"},
        {"\"\\udc00\"", "lone low surrogate"},
        {"\"\\u0000\"", "NUL character"},
        {"\"a\x01\"", "raw control character"},
        {"\"\xff\"", "invalid UTF-8 byte"},
        {"\"\xc0\xaf\"", "overlong UTF-8"},
        {"\"\xed\xa0\x80\"", "UTF-8 surrogate"},
        {"\"\xe2\x82\"", "truncated UTF-8"},
        {"01", "leading zero"},
        {"1.", "no digits after the point"},
        {".5", "no digits before the point"},
        {"-", "lone minus"},
        {"+1", "plus sign"},
        {"1e", "empty exponent"},
        {"1e+", "empty signed exponent"},
        {"0x10", "hex"},
        {"1e400", "huge number"},
        {"-1e400", "huge negative number"},
        {"NaN", "NaN"},
        {"Infinity", "infinity"},
        {"tru", "truncated true"},
        {"nul", "truncated null"},
        {"True", "capitalised literal"},
        {"[1] x", "text after the value"},
        {"{} {}", "two values"},
        {"{\"a\":1,\"a\":2}", "duplicate key"},
        {"[\"a\"\"b\"]", "missing comma in array"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        parse_bad(bad[i].text, strlen(bad[i].text), bad[i].why);

    /* An embedded NUL byte is a control character, not an end. */
    parse_bad("\"a\0b\"", 5, "NUL byte in string");

    /* One level past the limit. */
    char deep[2 * JSON_MAX_DEPTH + 3];
    memset(deep, '[', JSON_MAX_DEPTH + 1);
    memset(deep + JSON_MAX_DEPTH + 1, ']', JSON_MAX_DEPTH + 1);
    parse_bad(deep, 2 * JSON_MAX_DEPTH + 2, "too deep");
    /* Very deep nesting ends at the limit, without exhausting the stack. */
    size_t big = 1000000;
    char *many = malloc(big);
    memset(many, '[', big);
    parse_bad(many, big, "a million open brackets");
    memset(many, '{', big);
    parse_bad(many, big, "a million open braces");
    /* A 400-digit integer: longer than any number we accept. */
    memset(many, '9', 400);
    parse_bad(many, 400, "400-digit number");
    free(many);

    /* Every proper prefix of a valid object is refused. */
    const char *doc = "{\"k\": [1, -2.5e-3, \"x\\u00e9\\n\", true, null, "
                      "{\"n\": false}], \"m\": \"\\ud83d\\ude00\"}";
    json_free(parse_ok(doc));
    for (size_t n = 0; n < strlen(doc); n++)
        parse_bad(doc, n, "truncated");
}

/* ---- conversions against an independent nearest-value search --------- */

/* The value of a 16-bit pattern from the format's definition (sign,
 * exponent bits ebits with bias, mantissa bits mbits). The infinity
 * pattern stands for the next power of two past the largest finite value,
 * which is where round-to-nearest puts the overflow boundary. */
static double decode16(unsigned pattern, int ebits, int mbits)
{
    int bias = (1 << (ebits - 1)) - 1;
    unsigned e = (pattern >> mbits) & ((1u << ebits) - 1);
    unsigned m = pattern & ((1u << mbits) - 1);
    double v = e == 0 ? ldexp((double)m, 1 - bias - mbits)
                      : ldexp(1.0 + ldexp((double)m, -mbits), (int)e - bias);
    return (pattern & 0x8000) ? -v : v;
}

/* Round x to the format by searching the ordered positive patterns. */
static unsigned nearest16(float x, int ebits, int mbits)
{
    unsigned sign = signbit(x) ? 0x8000 : 0;
    double a = fabs((double)x);
    unsigned inf = ((1u << ebits) - 1) << mbits;
    unsigned lo = 0, hi = inf; /* value(lo) <= a < value(hi) */
    if (a >= decode16(inf, ebits, mbits))
        return sign | inf;
    while (hi - lo > 1) {
        unsigned mid = (lo + hi) / 2;
        if (decode16(mid, ebits, mbits) <= a)
            lo = mid;
        else
            hi = mid;
    }
    double dl = a - decode16(lo, ebits, mbits);
    double dh = decode16(hi, ebits, mbits) - a;
    unsigned r = dl < dh ? lo : dh < dl ? hi : ((lo & 1) ? hi : lo);
    return sign | r;
}

static void test_conversions(void **state)
{
    (void)state;
    /* Widening every pattern matches the definition; narrowing it back
     * gives the pattern again (NaNs stay NaN). */
    for (unsigned p = 0; p < 65536; p++) {
        float f = st_f16_to_f32((uint16_t)p);
        float b = st_bf16_to_f32((uint16_t)p);
        int f_nan = ((p >> 10) & 0x1F) == 0x1F && (p & 0x3FF);
        int b_nan = ((p >> 7) & 0xFF) == 0xFF && (p & 0x7F);
        if (f_nan) {
            assert_true(isnan(f));
            assert_true(isnan(st_f16_to_f32(st_f32_to_f16(f))));
        } else {
            if (((p >> 10) & 0x1F) == 0x1F)
                assert_true(isinf(f) && (signbit(f) != 0) == (p >> 15));
            else
                assert_true((double)f == decode16(p, 5, 10));
            assert_int_equal(st_f32_to_f16(f), p);
        }
        if (b_nan) {
            assert_true(isnan(b));
            assert_true(isnan(st_bf16_to_f32(st_f32_to_bf16(b))));
        } else {
            if (((p >> 7) & 0xFF) == 0xFF)
                assert_true(isinf(b) && (signbit(b) != 0) == (p >> 15));
            else
                assert_true((double)b == decode16(p, 8, 7));
            assert_int_equal(st_f32_to_bf16(b), p);
        }
    }
    /* Narrowing random f32 values, and the ties between neighbours. */
    uint64_t s = 0x9E3779B97F4A7C15ULL;
    for (int i = 0; i < 200000; i++) {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        uint32_t bits = (uint32_t)(s >> 11);
        if (i % 4 == 1) /* f16's range, where its rounding matters */
            bits = (bits & 0x80FFFFFFu) | ((uint32_t)(98 + (s >> 40) % 46)
                                           << 23);
        if (i % 4 == 2) /* an exact tie for f16: 12 low bits 0x1000 */
            bits = (bits & ~0x1FFFu) | 0x1000u;
        if (i % 4 == 3) /* an exact tie for bf16 */
            bits = (bits & ~0xFFFFu) | 0x8000u;
        float x;
        memcpy(&x, &bits, sizeof x);
        if (isnan(x))
            continue;
        unsigned want16 = nearest16(x, 5, 10), wantb = nearest16(x, 8, 7);
        if (st_f32_to_f16(x) != want16 || st_f32_to_bf16(x) != wantb)
            fail_msg("x = %a (0x%08x): f16 0x%04x want 0x%04x, bf16 0x%04x "
                     "want 0x%04x", (double)x, bits, st_f32_to_f16(x),
                     want16, st_f32_to_bf16(x), wantb);
    }
}

/* ---- safetensors round trips ------------------------------------------- */

static void save_model(const llama_model *m, const char *dir, owl_dtype dt)
{
    char err[256];
    char *w = path_in(dir, "model.safetensors");
    char *c = path_in(dir, "config.json");
    if (ckpt_save_safetensors(w, m, dt, c, err, sizeof err) != 0)
        fail_msg("save: %s", err);
    free(w);
    free(c);
}

static void assert_same_config(const llama_config *a, const llama_config *b)
{
    assert_int_equal(a->dim, b->dim);
    assert_int_equal(a->hidden_dim, b->hidden_dim);
    assert_int_equal(a->n_layers, b->n_layers);
    assert_int_equal(a->n_heads, b->n_heads);
    assert_int_equal(a->n_kv_heads, b->n_kv_heads);
    assert_int_equal(a->vocab_size, b->vocab_size);
    assert_int_equal(a->seq_len, b->seq_len);
    assert_true(a->rope_theta == b->rope_theta);
    assert_true(a->norm_eps == b->norm_eps);
    assert_int_equal(a->tied, b->tied);
}

static void test_roundtrip_f32(void **state)
{
    (void)state;
    for (int tied = 0; tied <= 1; tied++) {
        llama_config c = tiny_config(tied);
        c.norm_eps = 1e-6f;         /* needs 9 digits' care */
        c.rope_theta = 10000.5f;
        llama_model m, back;
        create_model(&m, &c);
        fill_model(&m, 7 + (uint64_t)tied);
        m.w.embed[3] = -0.0f;       /* bit patterns, not just values */
        m.w.embed[4] = 1e-40f;      /* an f32 subnormal */
        char *dir = make_temp_dir();
        save_model(&m, dir, OWL_DTYPE_F32);
        /* Atomic writes leave no temporary files behind. */
        assert_int_equal(count_dir_entries(dir), 2);

        /* The layout: header length makes the data start 8-aligned; the
         * file is exactly header plus 4 bytes per parameter. */
        char *wpath = path_in(dir, "model.safetensors");
        size_t len;
        unsigned char *b = read_file(wpath, &len);
        uint64_t hlen = 0;
        for (int i = 7; i >= 0; i--)
            hlen = hlen << 8 | b[i];
        assert_int_equal((8 + hlen) % 8, 0);
        assert_int_equal(b[8], '{');
        assert_int_equal(len, 8 + hlen + 4 * llama_param_count(&c));
        /* The first tensor in the data area is the embedding, f32 LE. */
        uint32_t e0 = (uint32_t)b[8 + hlen] | (uint32_t)b[9 + hlen] << 8 |
                      (uint32_t)b[10 + hlen] << 16 |
                      (uint32_t)b[11 + hlen] << 24;
        uint32_t want0;
        memcpy(&want0, &m.w.embed[0], 4);
        assert_int_equal(e0, want0);
        free(b);

        char err[256];
        if (ckpt_load_hf(dir, &back, 2, 0, err, sizeof err) != 0)
            fail_msg("load: %s", err);
        assert_same_config(&back.cfg, &c);
        assert_int_equal(back.w.count, m.w.count);
        assert_memory_equal(back.w.base, m.w.base,
                            m.w.count * sizeof(float));
        if (tied)
            assert_ptr_equal(back.w.head, back.w.embed);

        /* ckpt_load_safetensors into an existing model does the same. */
        memset(back.w.base, 0, back.w.count * sizeof(float));
        if (ckpt_load_safetensors(wpath, &back, err, sizeof err) != 0)
            fail_msg("load: %s", err);
        assert_memory_equal(back.w.base, m.w.base,
                            m.w.count * sizeof(float));

        /* Refused saves: an unwritable place, a dtype with no
         * safetensors meaning here, missing arguments. */
        assert_int_equal(ckpt_save_safetensors("/nonexistent/m.safetensors",
                                               &m, OWL_DTYPE_F32, NULL, err,
                                               sizeof err), -1);
        assert_non_null(strstr(err, "temporary file"));
        assert_int_equal(ckpt_save_safetensors(wpath, &m, OWL_DTYPE_F64,
                                               NULL, err, sizeof err), -1);
        assert_non_null(strstr(err, "not F32, BF16 or F16"));
        assert_int_equal(ckpt_save_safetensors(NULL, &m, OWL_DTYPE_F32,
                                               NULL, err, sizeof err), -1);
        assert_int_equal(ckpt_load_safetensors(wpath, NULL, err,
                                               sizeof err), -1);
        assert_non_null(strstr(err, "model"));

        /* Saving again over the same file replaces it. */
        m.w.rms_final[0] = 123.0f;
        save_model(&m, dir, OWL_DTYPE_F32);
        assert_int_equal(ckpt_load_safetensors(wpath, &back, err,
                                               sizeof err), 0);
        assert_true(back.w.rms_final[0] == 123.0f);
        assert_int_equal(count_dir_entries(dir), 2);
        free(wpath);
        llama_destroy(&back);
        llama_destroy(&m);
        remove_dir(dir);
    }
}

/* Values with known bf16 and f16 images: exact ones, and ties and
 * near-ties rounded by hand (round to nearest, ties to even). */
static const struct {
    float x, bf16, f16;
} k_rounding[] = {
    {0.0f, 0.0f, 0.0f},
    {1.0f, 1.0f, 1.0f},
    {-2.5f, -2.5f, -2.5f},
    {0.375f, 0.375f, 0.375f},
    {1024.0f, 1024.0f, 1024.0f},
    {0x1p-14f, 0x1p-14f, 0x1p-14f},             /* f16's smallest normal */
    {0x1p-24f, 0x1p-24f, 0x1p-24f},             /* f16's smallest subnormal */
    {0x1.01p0f, 0x1p0f, 0x1.01p0f},             /* 1 + 2^-8: bf16 tie -> 1 */
    {0x1.03p0f, 0x1.04p0f, 0x1.03p0f},          /* 1 + 3*2^-8: tie -> even */
    {0x1.0101p0f, 0x1.02p0f, 0x1.01p0f},        /* just above the tie */
    {0x1.002p0f, 0x1p0f, 0x1p0f},               /* 1 + 2^-11: f16 tie -> 1 */
    {0x1.006p0f, 0x1p0f, 0x1.008p0f},           /* 1 + 3*2^-11: -> even */
    {65504.0f, 65536.0f, 65504.0f},             /* f16 max; bf16 rounds up */
    {65519.0f, 65536.0f, 65504.0f},
    {65520.0f, 65536.0f, INFINITY},             /* f16 overflow tie -> inf */
    {0x1p-25f, 0x1p-25f, 0.0f},                 /* tie with zero -> 0 */
    {0x1.8p-24f, 0x1.8p-24f, 0x1p-23f},         /* 1.5 ulp -> 2 ulp (even) */
    {0x1.4p-23f, 0x1.4p-23f, 0x1p-23f},         /* 2.5 ulp -> 2 ulp (even) */
    {-0x1.01p0f, -0x1p0f, -0x1.01p0f},
    {FLT_MAX, INFINITY, INFINITY},              /* past bf16's max: inf */
    {0x1.fep127f, 0x1.fep127f, INFINITY},       /* bf16's max, exact */
};

static void test_roundtrip_16bit(void **state)
{
    (void)state;
    const size_t nk = sizeof k_rounding / sizeof k_rounding[0];
    for (int pass = 0; pass < 2; pass++) {
        owl_dtype dt = pass == 0 ? OWL_DTYPE_BF16 : OWL_DTYPE_F16;
        llama_config c = tiny_config(0);
        llama_model m, back;
        create_model(&m, &c);
        for (size_t i = 0; i < m.w.count; i++)
            m.w.base[i] = 0.5f; /* exact in both */
        /* The values whose image is finite round trip through a load;
         * the loader refuses the others (below). */
        for (size_t i = 0; i < nk; i++) {
            float want = pass == 0 ? k_rounding[i].bf16 : k_rounding[i].f16;
            if (isfinite(want))
                m.w.embed[i] = k_rounding[i].x;
        }
        char *dir = make_temp_dir();
        save_model(&m, dir, dt);
        char *wpath = path_in(dir, "model.safetensors");
        size_t len;
        unsigned char *b = read_file(wpath, &len);
        uint64_t hlen = 0;
        for (int i = 7; i >= 0; i--)
            hlen = hlen << 8 | b[i];
        assert_int_equal(len, 8 + hlen + 2 * llama_param_count(&c));
        const char *tag = pass == 0 ? "\"BF16\"" : "\"F16\"";
        char *header = strndup((const char *)b + 8, (size_t)hlen);
        assert_non_null(strstr(header, tag));
        assert_null(strstr(header, "\"F32\""));
        free(header);
        free(b);
        free(wpath);
        char err[256];
        if (ckpt_load_hf(dir, &back, 1, 0, err, sizeof err) != 0)
            fail_msg("load: %s", err);
        for (size_t i = 0; i < nk; i++) {
            float want = pass == 0 ? k_rounding[i].bf16 : k_rounding[i].f16;
            if (!isfinite(want))
                want = 0.5f;
            if (memcmp(&back.w.embed[i], &want, 4) != 0)
                fail_msg("%s: %a became %a, want %a", tag,
                         (double)k_rounding[i].x, (double)back.w.embed[i],
                         (double)want);
        }
        for (size_t i = nk; i < (size_t)c.vocab_size * c.dim; i++)
            assert_true(back.w.embed[i] == 0.5f);
        for (size_t i = 0; i < (size_t)c.vocab_size * c.dim; i++)
            assert_true(back.w.head[i] == 0.5f);
        assert_true(back.w.layers[1].w_down[5] == 0.5f);
        llama_destroy(&back);

        /* Values that overflow to infinity are stored as infinities (the
         * loader, reading the stored bits, names them), and NaN stays NaN. */
        for (size_t i = 0; i < nk; i++) {
            float want = pass == 0 ? k_rounding[i].bf16 : k_rounding[i].f16;
            if (isfinite(want))
                continue;
            m.w.embed[i] = k_rounding[i].x;
            save_model(&m, dir, dt);
            m.w.embed[i] = 0.5f;
            assert_int_equal(ckpt_load_hf(dir, &back, 1, 0, err, sizeof err),
                             -1);
            char what[128];
            snprintf(what, sizeof what, "'model.embed_tokens.weight' holds "
                     "+Inf at index %zu", i);
            if (!strstr(err, what))
                fail_msg("%s: %a: '%s'", tag, (double)k_rounding[i].x, err);
        }
        m.w.head[0] = NAN;
        save_model(&m, dir, dt);
        assert_int_equal(ckpt_load_hf(dir, &back, 1, 0, err, sizeof err), -1);
        assert_non_null(strstr(err, "'lm_head.weight' holds NaN at index 0"));
        llama_destroy(&m);
        remove_dir(dir);
    }
}

/* ---- malformed safetensors files ----------------------------------------- */

/* Loads path into m and expects a refusal naming `what`, with the model's
 * weights unchanged. */
static void expect_refused(llama_model *m, const char *path, const char *what)
{
    size_t bytes = m->w.count * sizeof(float);
    float *before = malloc(bytes);
    memcpy(before, m->w.base, bytes);
    char err[512] = "";
    int rc = ckpt_load_safetensors(path, m, err, sizeof err);
    if (rc != -1)
        fail_msg("a file with %s was accepted", what);
    if (!strstr(err, what))
        fail_msg("message for %s: '%s'", what, err);
    assert_memory_equal(before, m->w.base, bytes);
    free(before);
}

static void test_malformed_files(void **state)
{
    (void)state;
    llama_config c = tiny_config(0);
    llama_model m;
    create_model(&m, &c);
    fill_model(&m, 3);
    char *dir = make_temp_dir();
    char *p = path_in(dir, "bad.safetensors");

    /* Format-level problems, in hand-written files. */
    write_file(p, "\x08\0\0\0", 4);
    expect_refused(&m, p, "too short");
    write_raw_st(p, "{}      ", 1000, 0);
    expect_refused(&m, p, "past the end");
    write_raw_st(p, "{}      ", (uint64_t)1 << 40, 0);
    expect_refused(&m, p, "limit");
    write_raw_st(p, "{\"x\": [1, 2", AUTO_LEN, 0);
    expect_refused(&m, p, "not valid JSON");
    write_raw_st(p, "[1, 2]  ", 8, 0);
    expect_refused(&m, p, "not an object");
    write_raw_st(p, "{\"t\": 5}", AUTO_LEN, 0);
    expect_refused(&m, p, "not an object");
    write_raw_st(p, "{\"t\":{\"dtype\":\"Q8\",\"shape\":[4],"
                 "\"data_offsets\":[0,4]}}", AUTO_LEN, 4);
    expect_refused(&m, p, "unknown or unsupported dtype 'Q8'");
    write_raw_st(p, "{\"t\":{\"dtype\":7,\"shape\":[4],"
                 "\"data_offsets\":[0,16]}}", AUTO_LEN, 16);
    expect_refused(&m, p, "dtype");
    write_raw_st(p, "{\"t\":{\"dtype\":\"F32\",\"shape\":\"4\","
                 "\"data_offsets\":[0,16]}}", AUTO_LEN, 16);
    expect_refused(&m, p, "shape (an array");
    write_raw_st(p, "{\"t\":{\"dtype\":\"F32\",\"shape\":[-4],"
                 "\"data_offsets\":[0,16]}}", AUTO_LEN, 16);
    expect_refused(&m, p, "not a non-negative integer");
    write_raw_st(p, "{\"t\":{\"dtype\":\"F32\",\"shape\":[4.5],"
                 "\"data_offsets\":[0,16]}}", AUTO_LEN, 16);
    expect_refused(&m, p, "not a non-negative integer");
    write_raw_st(p, "{\"t\":{\"dtype\":\"F32\",\"shape\":[4],"
                 "\"data_offsets\":[0]}}", AUTO_LEN, 16);
    expect_refused(&m, p, "data_offsets must be");
    write_raw_st(p, "{\"t\":{\"dtype\":\"F32\",\"shape\":[4],"
                 "\"data_offsets\":[0,16],\"extra\":1}}", AUTO_LEN, 16);
    expect_refused(&m, p, "unexpected field 'extra'");
    write_raw_st(p, "{\"t\":{\"dtype\":\"F32\",\"shape\":[8],"
                 "\"data_offsets\":[0,32]}}", AUTO_LEN, 16);
    expect_refused(&m, p, "out of range");
    write_raw_st(p, "{\"t\":{\"dtype\":\"F32\",\"shape\":[4],"
                 "\"data_offsets\":[16,0]}}", AUTO_LEN, 16);
    expect_refused(&m, p, "out of range");
    write_raw_st(p, "{\"t\":{\"dtype\":\"F32\",\"shape\":[4],"
                 "\"data_offsets\":[0,12]}}", AUTO_LEN, 16);
    expect_refused(&m, p, "span 12 bytes");
    write_raw_st(p, "{\"t\":{\"dtype\":\"F32\",\"shape\":[4000000000,"
                 "4000000000,4000000000],\"data_offsets\":[0,16]}}", AUTO_LEN, 16);
    expect_refused(&m, p, "more elements");
    write_raw_st(p, "{\"a\":{\"dtype\":\"F32\",\"shape\":[4],"
                 "\"data_offsets\":[0,16]},\"b\":{\"dtype\":\"F32\","
                 "\"shape\":[4],\"data_offsets\":[8,24]}}", AUTO_LEN, 24);
    expect_refused(&m, p, "overlap");
    write_raw_st(p, "{\"a\":{\"dtype\":\"F32\",\"shape\":[4],"
                 "\"data_offsets\":[0,16]},\"b\":{\"dtype\":\"BF16\","
                 "\"shape\":[4],\"data_offsets\":[20,28]}}", AUTO_LEN, 28);
    expect_refused(&m, p, "belong to no tensor");
    write_raw_st(p, "{\"a\":{\"dtype\":\"F32\",\"shape\":[4],"
                 "\"data_offsets\":[0,16]}}", AUTO_LEN, 20);
    expect_refused(&m, p, "belong to no tensor");
    write_raw_st(p, "{\"__metadata__\":{\"format\":1}}", AUTO_LEN, 0);
    expect_refused(&m, p, "__metadata__");
    write_raw_st(p, "{\"a\":{\"dtype\":\"F32\",\"shape\":[4],"
                 "\"data_offsets\":[0,16]},\"a\":{\"dtype\":\"F32\","
                 "\"shape\":[4],\"data_offsets\":[16,32]}}", AUTO_LEN, 32);
    expect_refused(&m, p, "duplicate key");
    expect_refused(&m, "/nonexistent/x.safetensors", "cannot open");

    /* Model-level problems: well-formed files with the wrong tensors. */
    st_out_tensor t[MAX_TENSORS];
    char names[MAX_TENSORS][80];
    char err[256];
    size_t n = hf_tensors(&m, t, names);
    /* missing: drop model.norm.weight */
    st_out_tensor u[MAX_TENSORS + 1];
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (strcmp(t[i].name, "model.norm.weight") != 0)
            u[k++] = t[i];
    assert_int_equal(st_write(p, u, k, ST_F32, err, sizeof err), 0);
    expect_refused(&m, p, "tensor 'model.norm.weight' is missing");
    /* unexpected: an extra bias */
    memcpy(u, t, n * sizeof *t);
    u[n] = t[n - 1];
    u[n].name = "model.layers.0.self_attn.q_proj.bias";
    u[n].ndim = 1;
    u[n].shape[0] = 8;
    assert_int_equal(st_write(p, u, n + 1, ST_BF16, err, sizeof err), 0);
    expect_refused(&m, p,
                   "unexpected tensor 'model.layers.0.self_attn.q_proj.bias'");
    /* wrong shape: down_proj transposed */
    memcpy(u, t, n * sizeof *t);
    for (size_t i = 0; i < n; i++)
        if (strcmp(u[i].name, "model.layers.1.mlp.down_proj.weight") == 0) {
            u[i].shape[0] = 12;
            u[i].shape[1] = 8;
        }
    assert_int_equal(st_write(p, u, n, ST_F16, err, sizeof err), 0);
    expect_refused(&m, p, "has shape [12, 8], the model's configuration "
                          "needs [8, 12]");
    /* a 1-D tensor given as 2-D */
    memcpy(u, t, n * sizeof *t);
    u[n - 2].ndim = 2; /* model.norm.weight as [8, 1] */
    u[n - 2].shape[1] = 1;
    assert_int_equal(st_write(p, u, n, ST_F32, err, sizeof err), 0);
    expect_refused(&m, p, "has shape [8, 1]");
    /* a tied model refuses a file whose lm_head.weight is another matrix
     * than the embedding, and accepts one where it is the same */
    llama_config ct = tiny_config(1);
    llama_model mt;
    create_model(&mt, &ct);
    assert_int_equal(st_write(p, t, n, ST_F32, err, sizeof err), 0);
    expect_refused(&mt, p, "lm_head.weight differs from "
                           "model.embed_tokens.weight at index 0");
    memcpy(u, t, n * sizeof *t);
    u[n - 1].data = t[0].data; /* lm_head.weight = the embedding */
    assert_int_equal(st_write(p, u, n, ST_F32, err, sizeof err), 0);
    if (ckpt_load_safetensors(p, &mt, err, sizeof err) != 0)
        fail_msg("tied, lm_head.weight equal: %s", err);
    assert_memory_equal(mt.w.embed, m.w.embed,
                        (size_t)c.vocab_size * c.dim * sizeof(float));
    /* one element differs */
    size_t ne = (size_t)c.vocab_size * c.dim;
    float *almost = malloc(ne * sizeof *almost);
    memcpy(almost, t[0].data, ne * sizeof *almost);
    almost[3] = nextafterf(almost[3], INFINITY);
    u[n - 1].data = almost;
    assert_int_equal(st_write(p, u, n, ST_F32, err, sizeof err), 0);
    expect_refused(&mt, p, "differs from model.embed_tokens.weight at "
                           "index 3");
    free(almost);
    /* and the full, correct file loads into the untied model */
    assert_int_equal(ckpt_load_safetensors(p, &m, err, sizeof err), 0);
    /* inv_freq buffers of older checkpoints are skipped */
    memcpy(u, t, n * sizeof *t);
    u[n] = t[n - 2];
    u[n].name = "model.layers.0.self_attn.rotary_emb.inv_freq";
    u[n].shape[0] = 2;
    assert_int_equal(st_write(p, u, n + 1, ST_F32, err, sizeof err), 0);
    if (ckpt_load_safetensors(p, &m, err, sizeof err) != 0)
        fail_msg("inv_freq: %s", err);

    llama_destroy(&mt);
    llama_destroy(&m);
    free(p);
    remove_dir(dir);
}

/* config.json: defaults, and what is refused. */
static void test_config_json(void **state)
{
    (void)state;
    llama_config c = tiny_config(0);
    llama_model m, back;
    create_model(&m, &c);
    fill_model(&m, 5);
    char *dir = make_temp_dir();
    save_model(&m, dir, OWL_DTYPE_F32);
    char *cp = path_in(dir, "config.json");
    char err[512];
    /* Absent optional fields take Hugging Face's defaults. */
    write_text(cp, "{\"hidden_size\": 8, \"intermediate_size\": 12, "
               "\"num_hidden_layers\": 2, \"num_attention_heads\": 2, "
               "\"num_key_value_heads\": 1, \"vocab_size\": 16, "
               "\"max_position_embeddings\": 8}");
    if (ckpt_load_hf(dir, &back, 1, 0, err, sizeof err) != 0)
        fail_msg("defaults: %s", err);
    assert_true(back.cfg.rope_theta == 10000.0f);
    assert_true(back.cfg.norm_eps == 1e-6f);
    assert_int_equal(back.cfg.tied, 0);
    assert_int_equal(back.cfg.seq_len, 8);
    llama_destroy(&back);

    static const struct { const char *extra, *what; } bad[] = {
        {"\"rope_scaling\": {\"type\": \"linear\", \"factor\": 2.0}",
         "rope_scaling"},
        {"\"hidden_act\": \"gelu\"", "hidden_act"},
        {"\"tie_word_embeddings\": 1", "tie_word_embeddings"},
        {"\"rms_norm_eps\": -1", "rms_norm_eps"},
        {"\"rope_theta\": \"big\"", "rope_theta"},
        {"\"attention_bias\": true", "attention_bias"},
        {"\"head_dim\": 8", "head_dim"},
        {"\"tie_word_embeddings\": true", "lm_head.weight differs"},
    };
    char text[1024];
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int len = snprintf(text, sizeof text,
                           "{\"hidden_size\": 8, \"intermediate_size\": 12, "
                           "\"num_hidden_layers\": 2, "
                           "\"num_attention_heads\": 2, "
                           "\"num_key_value_heads\": 1, \"vocab_size\": 16, "
                           "\"max_position_embeddings\": 8, %s}",
                           bad[i].extra);
        write_file(cp, text, (size_t)len);
        memset(&back, 0x5A, sizeof back);
        assert_int_equal(ckpt_load_hf(dir, &back, 1, 0, err, sizeof err), -1);
        if (!strstr(err, bad[i].what))
            fail_msg("%s: message '%s'", bad[i].extra, err);
        assert_null(back.w.base); /* no model left behind */
    }
    static const struct { const char *text, *what; } bad_whole[] = {
        {"{\"hidden_size\": 8}", "'intermediate_size' is missing"},
        {"{\"hidden_size\": 8.5, \"intermediate_size\": 12}", "hidden_size"},
        {"{\"hidden_size\": 0}", "hidden_size"},
        {"[]", "not an object"},
        {"{\"hidden_size\": ", "JSON"},
        {"{\"hidden_size\": 8, \"intermediate_size\": 12, "
         "\"num_hidden_layers\": 2, \"num_attention_heads\": 3, "
         "\"vocab_size\": 16, \"max_position_embeddings\": 8}",
         "not a multiple of n_heads"},
    };
    for (size_t i = 0; i < sizeof bad_whole / sizeof bad_whole[0]; i++) {
        write_file(cp, bad_whole[i].text, strlen(bad_whole[i].text));
        assert_int_equal(ckpt_load_hf(dir, &back, 1, 0, err, sizeof err), -1);
        if (!strstr(err, bad_whole[i].what))
            fail_msg("%s: message '%s'", bad_whole[i].text, err);
    }
    unlink(cp);
    assert_int_equal(ckpt_load_hf(dir, &back, 1, 0, err, sizeof err), -1);
    assert_non_null(strstr(err, "config.json"));
    free(cp);
    llama_destroy(&m);
    remove_dir(dir);
}

/* ---- sharded checkpoints ----------------------------------------------- */

static void write_index(const char *dir, const st_out_tensor *t, size_t n,
                        size_t split, const char *override)
{
    char *ip = path_in(dir, "model.safetensors.index.json");
    FILE *f = fopen(ip, "w");
    assert_non_null(f);
    fprintf(f, "{\"metadata\": {\"total_size\": 0}, \"weight_map\": {");
    for (size_t i = 0; i < n; i++)
        fprintf(f, "%s\"%s\": \"%s\"", i ? ", " : "", t[i].name,
                override && i == 0 ? override
                : i < split ? "model-00001-of-00002.safetensors"
                            : "model-00002-of-00002.safetensors");
    fprintf(f, "}}\n");
    fclose(f);
    free(ip);
}

static void test_sharded(void **state)
{
    (void)state;
    llama_config c = tiny_config(0);
    llama_model m, back;
    create_model(&m, &c);
    fill_model(&m, 11);
    char *dir = make_temp_dir();
    save_model(&m, dir, OWL_DTYPE_F32); /* for config.json */
    char *single = path_in(dir, "model.safetensors");
    unlink(single);
    free(single);

    st_out_tensor t[MAX_TENSORS];
    char names[MAX_TENSORS][80];
    char err[512];
    size_t n = hf_tensors(&m, t, names);
    size_t split = n / 2;
    char *s1 = path_in(dir, "model-00001-of-00002.safetensors");
    char *s2 = path_in(dir, "model-00002-of-00002.safetensors");
    assert_int_equal(st_write(s1, t, split, ST_F32, err, sizeof err), 0);
    assert_int_equal(st_write(s2, t + split, n - split, ST_BF16, err,
                              sizeof err), 0);
    write_index(dir, t, n, split, NULL);
    if (ckpt_load_hf(dir, &back, 1, 0, err, sizeof err) != 0)
        fail_msg("sharded: %s", err);
    /* The first shard is f32: bit-exact; the second bf16-rounded. */
    for (size_t i = 0; i < n; i++) {
        const float *got = NULL;
        st_out_tensor bt[MAX_TENSORS];
        char bn[MAX_TENSORS][80];
        hf_tensors(&back, bt, bn);
        got = bt[i].data;
        size_t numel = t[i].shape[0] * (t[i].ndim == 2 ? t[i].shape[1] : 1);
        for (size_t j = 0; j < numel; j++) {
            float want = i < split ? t[i].data[j]
                                   : st_bf16_to_f32(st_f32_to_bf16(
                                         t[i].data[j]));
            if (memcmp(&got[j], &want, 4) != 0)
                fail_msg("%s[%zu]: %a vs %a", t[i].name, j, (double)got[j],
                         (double)want);
        }
    }
    llama_destroy(&back);

    /* Refusals: a shard path leaving the directory, a tensor the index
     * misplaces, one it lacks, and a shard that is missing. */
    write_index(dir, t, n, split, "../model-00001-of-00002.safetensors");
    assert_int_equal(ckpt_load_hf(dir, &back, 1, 0, err, sizeof err), -1);
    assert_non_null(strstr(err, "file name in the same directory"));
    write_index(dir, t, n, split, "model-00002-of-00002.safetensors");
    assert_int_equal(ckpt_load_hf(dir, &back, 1, 0, err, sizeof err), -1);
    assert_non_null(strstr(err, "model.embed_tokens.weight"));
    write_index(dir, t, n - 1, split, NULL);
    assert_int_equal(ckpt_load_hf(dir, &back, 1, 0, err, sizeof err), -1);
    assert_non_null(strstr(err, "'lm_head.weight' is missing from"));
    write_index(dir, t, n, split, NULL);
    unlink(s2);
    assert_int_equal(ckpt_load_hf(dir, &back, 1, 0, err, sizeof err), -1);
    assert_non_null(strstr(err, "model-00002-of-00002.safetensors"));
    assert_null(back.w.base);
    free(s1);
    free(s2);
    llama_destroy(&m);
    remove_dir(dir);
}

/* ---- llama2.c ------------------------------------------------------------ */

/* Interleaved RoPE (llama2.c): pairs (2i, 2i+1), angle pos*theta^(-2i/hd). */
static void rope_interleaved(double *x, int hd, int pos, double theta)
{
    for (int i = 0; i < hd / 2; i++) {
        double a = pos * pow(theta, -2.0 * i / hd);
        double x0 = x[2 * i], x1 = x[2 * i + 1];
        x[2 * i] = x0 * cos(a) - x1 * sin(a);
        x[2 * i + 1] = x0 * sin(a) + x1 * cos(a);
    }
}

/* Hugging Face rotate_half: pairs (i, i + hd/2), same angles. */
static void rope_half(double *x, int hd, int pos, double theta)
{
    int h = hd / 2;
    for (int i = 0; i < h; i++) {
        double a = pos * pow(theta, -2.0 * i / hd);
        double x0 = x[i], x1 = x[i + h];
        x[i] = x0 * cos(a) - x1 * sin(a);
        x[i + h] = x0 * sin(a) + x1 * cos(a);
    }
}

/* rows x cols matrix times vector, in double */
static void matvec(double *out, const float *w, const float *x, int rows,
                   int cols)
{
    for (int r = 0; r < rows; r++) {
        double s = 0;
        for (int k = 0; k < cols; k++)
            s += (double)w[(size_t)r * cols + k] * x[k];
        out[r] = s;
    }
}

typedef struct l2c_dims {
    int dim, hidden, layers, heads, kv, vocab, seq;
} l2c_dims;

/* Writes a llama2.c file whose floats are 0.001 * (index + 1) (so every
 * value tells where it came from), except the legacy freq_cis arrays,
 * filled with 999. Returns the floats (caller frees). */
static float *write_l2c(const char *path, l2c_dims d, int shared,
                        size_t *count, long trim)
{
    int hd = d.dim / d.heads, kvd = hd * d.kv;
    size_t L = (size_t)d.layers, dim = (size_t)d.dim;
    size_t before_freq = (size_t)d.vocab * dim + L * dim + L * dim * dim +
                         2 * L * kvd * dim + L * dim * dim + L * dim +
                         3 * L * (size_t)d.hidden * dim + dim;
    size_t freq = (size_t)d.seq * hd;
    size_t n = before_freq + freq + (shared ? 0 : (size_t)d.vocab * dim);
    float *v = malloc(n * sizeof *v);
    for (size_t i = 0; i < n; i++)
        v[i] = 0.001f * (float)(i + 1);
    for (size_t i = before_freq; i < before_freq + freq; i++)
        v[i] = 999.0f;
    int32_t h[7] = {d.dim, d.hidden, d.layers, d.heads, d.kv,
                    shared ? d.vocab : -d.vocab, d.seq};
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    fwrite(h, 4, 7, f);
    fwrite(v, 4, n - (size_t)trim, f);
    fclose(f);
    *count = n;
    return v;
}

static void test_llama2c_tiny(void **state)
{
    (void)state;
    l2c_dims d = {8, 12, 2, 2, 1, 16, 4};
    int hd = d.dim / d.heads, kvd = hd * d.kv;
    size_t dim = (size_t)d.dim, L = (size_t)d.layers;
    char *dir = make_temp_dir();
    char *p = path_in(dir, "tiny.bin");
    char err[512];
    for (int shared = 0; shared <= 1; shared++) {
        size_t count;
        float *v = write_l2c(p, d, shared, &count, 0);
        llama_model m;
        if (ckpt_load_llama2c(p, &m, 1, 0, err, sizeof err) != 0)
            fail_msg("load: %s", err);
        assert_int_equal(m.cfg.dim, 8);
        assert_int_equal(m.cfg.hidden_dim, 12);
        assert_int_equal(m.cfg.n_layers, 2);
        assert_int_equal(m.cfg.n_heads, 2);
        assert_int_equal(m.cfg.n_kv_heads, 1);
        assert_int_equal(m.cfg.vocab_size, 16);
        assert_int_equal(m.cfg.seq_len, 4);
        assert_int_equal(m.cfg.tied, shared);
        assert_true(m.cfg.rope_theta == 10000.0f);
        assert_true(m.cfg.norm_eps == 1e-5f);

        /* The arrays in file order; the unpermuted ones compared whole. */
        const float *at = v;
        const float *emb = at;           at += (size_t)d.vocab * dim;
        const float *rms_att = at;       at += L * dim;
        const float *wq = at;            at += L * dim * dim;
        const float *wk = at;            at += L * kvd * dim;
        const float *wv = at;            at += L * kvd * dim;
        const float *wo = at;            at += L * dim * dim;
        const float *rms_ffn = at;       at += L * dim;
        const float *w1 = at;            at += L * d.hidden * dim;
        const float *w2 = at;            at += L * d.hidden * dim;
        const float *w3 = at;            at += L * d.hidden * dim;
        const float *rms_final = at;     at += dim;
        at += (size_t)d.seq * hd;
        const float *cls = shared ? emb : at;
        size_t hdim = (size_t)d.hidden * dim;
        assert_memory_equal(m.w.embed, emb, d.vocab * dim * 4);
        assert_memory_equal(m.w.rms_final, rms_final, dim * 4);
        assert_memory_equal(m.w.head, cls, d.vocab * dim * 4);
        for (size_t l = 0; l < L; l++) {
            const llama_layer *ly = &m.w.layers[l];
            assert_memory_equal(ly->rms_att, rms_att + l * dim, dim * 4);
            assert_memory_equal(ly->rms_ffn, rms_ffn + l * dim, dim * 4);
            assert_memory_equal(ly->wv, wv + l * kvd * dim, kvd * dim * 4);
            assert_memory_equal(ly->wo, wo + l * dim * dim, dim * dim * 4);
            assert_memory_equal(ly->w_gate, w1 + l * hdim, hdim * 4);
            assert_memory_equal(ly->w_down, w2 + l * hdim, hdim * 4);
            assert_memory_equal(ly->w_up, w3 + l * hdim, hdim * 4);

            /* RoPE: for an input x and positions p (query) and s (key),
             * HF RoPE on the loaded rows equals the permuted interleaved
             * RoPE on the file's rows, and every attention score agrees. */
            float x[8];
            test_fill_uniform(x, dim, 100 + l);
            for (int pos = 0; pos < 4; pos++) {
                double q_file[8], q_hf[8], k_file[4], k_hf[4];
                matvec(q_file, wq + l * dim * dim, x, d.dim, d.dim);
                matvec(q_hf, ly->wq, x, d.dim, d.dim);
                matvec(k_file, wk + l * kvd * dim, x, kvd, d.dim);
                matvec(k_hf, ly->wk, x, kvd, d.dim);
                for (int h = 0; h < d.heads; h++) {
                    rope_interleaved(q_file + h * hd, hd, pos, 10000.0);
                    rope_half(q_hf + h * hd, hd, pos, 10000.0);
                    for (int i = 0; i < hd / 2; i++) {
                        assert_true(fabs(q_hf[h * hd + i] -
                                         q_file[h * hd + 2 * i]) < 1e-12);
                        assert_true(fabs(q_hf[h * hd + hd / 2 + i] -
                                         q_file[h * hd + 2 * i + 1]) < 1e-12);
                    }
                }
                int kpos = 3 - pos;
                for (int h = 0; h < d.kv; h++) {
                    rope_interleaved(k_file + h * hd, hd, kpos, 10000.0);
                    rope_half(k_hf + h * hd, hd, kpos, 10000.0);
                }
                for (int h = 0; h < d.heads; h++) {
                    int g = h / (d.heads / d.kv);
                    double s_file = 0, s_hf = 0;
                    for (int i = 0; i < hd; i++) {
                        s_file += q_file[h * hd + i] * k_file[g * hd + i];
                        s_hf += q_hf[h * hd + i] * k_hf[g * hd + i];
                    }
                    assert_true(fabs(s_file - s_hf) <=
                                1e-12 * (1 + fabs(s_file)));
                }
            }
        }
        llama_destroy(&m);
        free(v);
    }

    /* Refusals: a short file, bad header values. */
    size_t count;
    free(write_l2c(p, d, 1, &count, 1));
    llama_model m;
    assert_int_equal(ckpt_load_llama2c(p, &m, 1, 0, err, sizeof err), -1);
    if (!strstr(err, "describes"))
        fail_msg("short file: '%s'", err);
    l2c_dims bad_kv = {8, 12, 2, 2, 3, 16, 4};
    free(write_l2c(p, bad_kv, 1, &count, 0));
    assert_int_equal(ckpt_load_llama2c(p, &m, 1, 0, err, sizeof err), -1);
    assert_non_null(strstr(err, "n_kv_heads 3"));
    l2c_dims bad_dim = {9, 12, 2, 2, 1, 16, 4};
    free(write_l2c(p, bad_dim, 1, &count, 0));
    assert_int_equal(ckpt_load_llama2c(p, &m, 1, 0, err, sizeof err), -1);
    assert_non_null(strstr(err, "dim 9"));
    int32_t h[7] = {8, 0, 2, 2, 1, 16, 4};
    write_file(p, h, sizeof h);
    assert_int_equal(ckpt_load_llama2c(p, &m, 1, 0, err, sizeof err), -1);
    assert_non_null(strstr(err, "positive"));
    int32_t huge[7] = {INT32_MAX - 3, INT32_MAX, INT32_MAX, 2, 1,
                       INT32_MIN + 1, INT32_MAX};
    write_file(p, huge, sizeof huge);
    assert_int_equal(ckpt_load_llama2c(p, &m, 1, 0, err, sizeof err), -1);
    if (!strstr(err, "describes"))
        fail_msg("huge header: '%s'", err);
    write_file(p, h, 20);
    assert_int_equal(ckpt_load_llama2c(p, &m, 1, 0, err, sizeof err), -1);
    assert_non_null(strstr(err, "too short for the 28-byte header"));
    assert_null(m.w.base);
    free(p);
    remove_dir(dir);
}

/* ---- SHA-256 (FIPS 180-4), for the data file's published digest ------ */

typedef struct sha256 {
    uint32_t h[8];
    unsigned char block[64];
    size_t fill;
    uint64_t bytes;
} sha256;

static const uint32_t k_sha[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1,
    0x923f82a4, 0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3,
    0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786,
    0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147,
    0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13,
    0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
    0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a,
    0x5b9cca4f, 0x682e6ff3, 0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208,
    0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

static uint32_t ror(uint32_t x, int n) { return x >> n | x << (32 - n); }

static void sha_block(sha256 *s, const unsigned char *p)
{
    uint32_t w[64];
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 |
               (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
    for (int i = 16; i < 64; i++) {
        uint32_t s0 = ror(w[i - 15], 7) ^ ror(w[i - 15], 18) ^ w[i - 15] >> 3;
        uint32_t s1 = ror(w[i - 2], 17) ^ ror(w[i - 2], 19) ^ w[i - 2] >> 10;
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint32_t a = s->h[0], b = s->h[1], c = s->h[2], d = s->h[3];
    uint32_t e = s->h[4], f = s->h[5], g = s->h[6], h = s->h[7];
    for (int i = 0; i < 64; i++) {
        uint32_t t1 = h + (ror(e, 6) ^ ror(e, 11) ^ ror(e, 25)) +
                      ((e & f) ^ (~e & g)) + k_sha[i] + w[i];
        uint32_t t2 = (ror(a, 2) ^ ror(a, 13) ^ ror(a, 22)) +
                      ((a & b) ^ (a & c) ^ (b & c));
        h = g; g = f; f = e; e = d + t1;
        d = c; c = b; b = a; a = t1 + t2;
    }
    s->h[0] += a; s->h[1] += b; s->h[2] += c; s->h[3] += d;
    s->h[4] += e; s->h[5] += f; s->h[6] += g; s->h[7] += h;
}

static void sha256_hex(const unsigned char *p, size_t n, char out[65])
{
    sha256 s = {{0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f,
                 0x9b05688c, 0x1f83d9ab, 0x5be0cd19}, {0}, 0, 0};
    size_t i = 0;
    for (; i + 64 <= n; i += 64)
        sha_block(&s, p + i);
    unsigned char tail[128] = {0};
    size_t r = n - i;
    memcpy(tail, p + i, r);
    tail[r] = 0x80;
    size_t tl = r + 9 <= 64 ? 64 : 128;
    uint64_t bits = (uint64_t)n * 8;
    for (int j = 0; j < 8; j++)
        tail[tl - 1 - j] = (unsigned char)(bits >> (8 * j));
    sha_block(&s, tail);
    if (tl == 128)
        sha_block(&s, tail + 64);
    for (int j = 0; j < 8; j++)
        snprintf(out + 8 * j, 9, "%08x", s.h[j]);
}

static void test_sha256_vectors(void **state)
{
    (void)state;
    char hex[65];
    /* FIPS 180-4 examples: "abc" and the 448-bit two-block message. */
    sha256_hex((const unsigned char *)"abc", 3, hex);
    assert_string_equal(hex, "ba7816bf8f01cfea414140de5dae2223"
                             "b00361a396177a9cb410ff61f20015ad");
    const char *m2 = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    sha256_hex((const unsigned char *)m2, strlen(m2), hex);
    assert_string_equal(hex, "248d6a61d20638b8e5c026930c3e6039"
                             "a33ce45964ff2167f6ecedd419db06c1");
    sha256_hex((const unsigned char *)"", 0, hex);
    assert_string_equal(hex, "e3b0c44298fc1c149afbf4c8996fb924"
                             "27ae41e4649b934ca495991b7852b855");
}

/* ---- the real stories260K.bin --------------------------------------------- */

static void test_stories260k(void **state)
{
    (void)state;
    const char *path = g_stories_path;
    struct stat st;
    if (!path || stat(path, &st) != 0) {
        print_message("stories260K.bin not found (%s): skipped\n",
                      path ? path : "no path given");
        skip();
    }
    size_t len;
    unsigned char *b = read_file(path, &len);
    char hex[65];
    sha256_hex(b, len, hex);
    assert_string_equal(hex, "9414d5a285453a7eab631713d171753232c978f6f976542"
                             "11469aff8be93c8d6");
    int32_t h[7];
    memcpy(h, b, sizeof h);
    assert_true(h[5] > 0); /* positive vocab: the classifier is shared */

    llama_model m;
    char err[512];
    if (ckpt_load_llama2c(path, &m, 1, 0, err, sizeof err) != 0)
        fail_msg("load: %s", err);
    assert_int_equal(m.cfg.dim, 64);
    assert_int_equal(m.cfg.n_layers, 5);
    assert_int_equal(m.cfg.n_heads, 8);
    assert_int_equal(m.cfg.n_kv_heads, 4);
    assert_int_equal(m.cfg.hidden_dim, 172);
    assert_int_equal(m.cfg.vocab_size, 512);
    assert_int_equal(m.cfg.seq_len, 512);
    assert_int_equal(m.cfg.tied, 1);
    assert_ptr_equal(m.w.head, m.w.embed);

    /* Spot checks against the file: the embedding, layer 0's wq rows
     * (even rows of each head first), layer 4's w2 as down, and the
     * final norm just before the freq_cis arrays at the end. */
    const float *f = (const float *)(b + 28); /* the file is 4-aligned */
    assert_memory_equal(m.w.embed, f, 512 * 64 * 4);
    const float *wq0 = f + 512 * 64 + 5 * 64;
    int hd = 8;
    for (int hh = 0; hh < 8; hh++)
        for (int i = 0; i < hd / 2; i++) {
            assert_memory_equal(m.w.layers[0].wq + (hh * hd + i) * 64,
                                wq0 + (hh * hd + 2 * i) * 64, 64 * 4);
            assert_memory_equal(m.w.layers[0].wq + (hh * hd + 4 + i) * 64,
                                wq0 + (hh * hd + 2 * i + 1) * 64, 64 * 4);
        }
    size_t freq = 512 * 8; /* seq_len * head_size, real + imag */
    const float *end = (const float *)(b + len);
    assert_memory_equal(m.w.rms_final, end - freq - 64, 64 * 4);
    const float *w2_4 = end - freq - 64 - 2 * 5 * 172 * 64 + 4 * 172 * 64;
    assert_memory_equal(m.w.layers[4].w_down, w2_4, 172 * 64 * 4);

    /* And it survives a safetensors round trip bit for bit. */
    char *dir = make_temp_dir();
    save_model(&m, dir, OWL_DTYPE_F32);
    llama_model back;
    if (ckpt_load_hf(dir, &back, 1, 0, err, sizeof err) != 0)
        fail_msg("reload: %s", err);
    assert_same_config(&back.cfg, &m.cfg);
    assert_memory_equal(back.w.base, m.w.base, m.w.count * 4);
    llama_destroy(&back);
    remove_dir(dir);
    llama_destroy(&m);
    free(b);
}

/* The loaded llama2.c model computes what llama2.c computes: logits of
 * the model's forward pass (Hugging Face RoPE on the reordered rows)
 * against llama2.c's forward (interleaved RoPE on the file's rows) in
 * PyTorch float64. */
static void test_stories260k_logits(void **state)
{
    (void)state;
    struct stat st;
    refdata *ref = g_llama2c_ref_path ? refdata_load(g_llama2c_ref_path)
                                      : NULL;
    if (!ref || refdata_get(ref, "absent") || !g_stories_path ||
        stat(g_stories_path, &st) != 0) {
        print_message("no stories260K.bin or its reference: skipped\n");
        refdata_free(ref);
        skip();
    }
    const refarray *tok = refdata_need(ref, "tokens");
    const refarray *lg = refdata_need(ref, "logits");
    int T = (int)tok->count;
    llama_model m;
    char err[512];
    if (ckpt_load_llama2c(g_stories_path, &m, 1, 0, err, sizeof err) != 0)
        fail_msg("load: %s", err);
    assert_int_equal(lg->count, (uint64_t)T * m.cfg.vocab_size);
    int32_t *tokens = malloc((size_t)T * sizeof *tokens);
    float *logits = malloc(lg->count * sizeof *logits);
    for (int t = 0; t < T; t++)
        tokens[t] = (int32_t)tok->i64[t];
    llama_forward(&m, tokens, NULL, 1, T, logits, NULL);
    double err_rel = test_max_rel_err(logits, lg->f64, lg->count, 1.0);
    print_message("stories260K logits: max error %.3g of the largest\n",
                  err_rel);
    assert_true(err_rel < 1e-4);
    free(tokens);
    free(logits);
    llama_destroy(&m);
    refdata_free(ref);
}

/* ---- random damage never crashes ----------------------------------------- */

static void test_fuzz_header(void **state)
{
    (void)state;
    llama_config c = tiny_config(0);
    llama_model m;
    create_model(&m, &c);
    fill_model(&m, 21);
    char *dir = make_temp_dir();
    save_model(&m, dir, OWL_DTYPE_BF16);
    char *good = path_in(dir, "model.safetensors");
    size_t len;
    unsigned char *orig = read_file(good, &len);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--)
        hlen = hlen << 8 | orig[i];
    char *p = path_in(dir, "fuzz.safetensors");
    unsigned char *buf = malloc(len);
    uint64_t s = 12345;
    int accepted = 0;
    char err[512];
    for (int it = 0; it < 3000; it++) {
        memcpy(buf, orig, len);
        s ^= s << 13; s ^= s >> 7; s ^= s << 17;
        int flips = 1 + (int)(s % 4);
        for (int k = 0; k < flips; k++) {
            s ^= s << 13; s ^= s >> 7; s ^= s << 17;
            size_t at = (size_t)((s >> 8) % (8 + hlen));
            buf[at] ^= (unsigned char)(1u << ((s >> 3) & 7));
            if (s & 1) /* sometimes a digit or a JSON delimiter instead */
                buf[at] = (unsigned char)"0123456789{}[]\",: -eE\\"[s % 22];
        }
        size_t n = len;
        if (it % 10 == 0) { /* sometimes cut short as well */
            s ^= s << 13; s ^= s >> 7; s ^= s << 17;
            n = (size_t)(s % len);
        }
        write_file(p, buf, n);
        err[0] = '\0';
        int rc = ckpt_load_safetensors(p, &m, err, sizeof err);
        if (rc == 0)
            accepted++;
        else
            assert_true(rc == -1 && strlen(err) > 10);
        /* the parser alone, on an exactly sized heap copy of the header */
        size_t hn = (size_t)hlen;
        char *hcopy = malloc(hn);
        memcpy(hcopy, buf + 8, hn);
        json_value *v = json_parse(hcopy, hn, err, sizeof err);
        json_free(v);
        free(hcopy);
    }
    print_message("fuzz: %d of 3000 damaged files still loaded\n", accepted);
    free(buf);
    free(orig);
    free(good);
    free(p);
    llama_destroy(&m);
    remove_dir(dir);
}

int main(int argc, char **argv)
{
    g_stories_path = argc > 1 ? argv[1] : getenv("LLAMA_STORIES260K");
    g_llama2c_ref_path = argc > 2 ? argv[2] : NULL;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_json_valid),
        cmocka_unit_test(test_json_malformed),
        cmocka_unit_test(test_conversions),
        cmocka_unit_test(test_roundtrip_f32),
        cmocka_unit_test(test_roundtrip_16bit),
        cmocka_unit_test(test_malformed_files),
        cmocka_unit_test(test_config_json),
        cmocka_unit_test(test_sharded),
        cmocka_unit_test(test_llama2c_tiny),
        cmocka_unit_test(test_sha256_vectors),
        cmocka_unit_test(test_stories260k),
        cmocka_unit_test(test_stories260k_logits),
        cmocka_unit_test(test_fuzz_header),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
