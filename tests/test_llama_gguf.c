/* The GGUF reader against files written by the gguf Python package
 * (llama.cpp's writer and quantisers), made at test time by
 * ref/gen_gguf.py:
 *   - every tensor type the reader converts, dequantised bit for bit as
 *     gguf.quants.dequantize does, tensor infos as gguf.GGUFReader reads
 *     them, and a type it does not convert refused by name;
 *   - every metadata value type (nested arrays too) read back as written,
 *     and the typed accessors' conversions and refusals;
 *   - a tiny LLaMa written as llama.cpp's converter writes one (q and k
 *     rows in interleaved-RoPE order; tied, untied, quantised): the
 *     Hugging Face weights it stands for exactly, and the logits and loss
 *     of transformers' LlamaForCausalLM in float64;
 *   - the same files cut short anywhere in their header or at either end
 *     of a tensor's data are refused with a message.
 * Usage: test_llama_gguf DIR (the generator's output directory). */
#include "common/refdata.h"
#include "common/testutil.h"

#include "checkpoint.h"
#include "gguf.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *g_dir;

static char *path_in(const char *name)
{
    size_t n = strlen(g_dir) + strlen(name) + 2;
    char *p = malloc(n);
    assert_non_null(p);
    snprintf(p, n, "%s/%s", g_dir, name);
    return p;
}

static refdata *load_ref(const char *name)
{
    char *p = path_in(name);
    refdata *r = refdata_load(p);
    if (!r)
        fail_msg("cannot read %s", p);
    free(p);
    return r;
}

static void open_gguf(gguf_file *f, const char *name)
{
    char err[512];
    char *p = path_in(name);
    if (gguf_open(f, p, err, sizeof err) != 0)
        fail_msg("gguf_open(%s): %s", p, err);
    free(p);
}

static int64_t need_int(const refdata *r, const char *name)
{
    const refarray *a = refdata_need(r, name);
    assert_int_equal(a->kind, 1);
    assert_int_equal(a->count, 1);
    return a->i64[0];
}

static uint32_t f32_bits(float x)
{
    uint32_t b;
    memcpy(&b, &x, sizeof b);
    return b;
}

/* ---- tensors ------------------------------------------------------------ */

static void test_tensor_types(void **state)
{
    (void)state;
    refdata *r = load_ref("types.ref");
    gguf_file f;
    open_gguf(&f, "types.gguf");
    assert_int_equal(f.version, 3);
    assert_int_equal(f.alignment, 64);
    assert_int_equal(f.n_tensors, need_int(r, "tensor_count"));
    char key[200], err[512];
    int converted = 0;
    for (size_t i = 0; i < f.n_tensors; i++) {
        const gguf_tensor *t = &f.tensors[i];
        char name[80];
        snprintf(name, sizeof name, "%.*s", (int)t->name.len, t->name.ptr);
        assert_ptr_equal(gguf_find_tensor(&f, name), t);
        snprintf(key, sizeof key, "tensor/%s/type", name);
        assert_int_equal(t->type, need_int(r, key));
        snprintf(key, sizeof key, "tensor/%s/offset", name);
        assert_int_equal(t->data - f.bytes, need_int(r, key));
        assert_int_equal((t->data - f.bytes) % 64, 0);
        snprintf(key, sizeof key, "tensor/%s/ne", name);
        const refarray *ne = refdata_need(r, key);
        assert_int_equal(t->n_dims, ne->count);
        uint64_t numel = 1;
        for (uint32_t d = 0; d < t->n_dims; d++) {
            assert_int_equal(t->ne[d], ne->i64[d]);
            numel *= t->ne[d];
        }
        assert_int_equal(t->numel, numel);
        float *out = malloc(numel * sizeof *out);
        assert_non_null(out);
        if (strcmp(name, "q5_0.unsupported") == 0) {
            assert_false(gguf_dtype_supported(t->type));
            assert_int_equal(gguf_tensor_to_f32(&f, t, out, err, sizeof err),
                             -1);
            assert_non_null(strstr(err, "q5_0.unsupported"));
            assert_non_null(strstr(err, "Q5_0"));
            free(out);
            continue;
        }
        if (gguf_tensor_to_f32(&f, t, out, err, sizeof err) != 0)
            fail_msg("%s: %s", name, err);
        snprintf(key, sizeof key, "tensor/%s/bits", name);
        const refarray *bits = refdata_need(r, key);
        assert_int_equal(bits->count, numel);
        for (uint64_t k = 0; k < numel; k++)
            if (f32_bits(out[k]) != (uint32_t)bits->i64[k])
                fail_msg("%s (%s) element %llu: 0x%08x (%g), gguf gives "
                         "0x%08x", name, gguf_dtype_name(t->type),
                         (unsigned long long)k, f32_bits(out[k]),
                         (double)out[k], (unsigned)bits->i64[k]);
        free(out);
        converted++;
    }
    /* Every converted type appears (the generator's list). */
    static const uint32_t types[] = {0, 1, 30, 8, 2, 3, 12, 13, 14};
    for (size_t k = 0; k < sizeof types / sizeof types[0]; k++) {
        int seen = 0;
        for (size_t i = 0; i < f.n_tensors; i++)
            seen |= f.tensors[i].type == types[k];
        if (!seen)
            fail_msg("no tensor of type %s", gguf_dtype_name(types[k]));
    }
    assert_int_equal(converted, f.n_tensors - 1); /* all but Q5_0 */
    gguf_close(&f);
    refdata_free(r);
}

/* ---- metadata ------------------------------------------------------------ */

/* value v against what the generator wrote under path (kv/<key>[/i...]). */
static void check_value(const refdata *r, const char *path,
                        const gguf_value *v)
{
    char key[300];
    snprintf(key, sizeof key, "%s/type", path);
    int64_t type = need_int(r, key);
    if ((int64_t)v->type != type)
        fail_msg("%s: type %s, written as %s", path, gguf_type_name(v->type),
                 gguf_type_name((uint32_t)type));
    if (v->type == GGUF_TYPE_ARRAY) {
        snprintf(key, sizeof key, "%s/elem_type", path);
        assert_int_equal(v->elem_type, need_int(r, key));
        snprintf(key, sizeof key, "%s/count", path);
        assert_int_equal(v->len, need_int(r, key));
        for (uint64_t i = 0; i < v->len; i++) {
            gguf_value e;
            assert_int_equal(gguf_array_get(v, i, &e), 0);
            snprintf(key, sizeof key, "%s/%llu", path, (unsigned long long)i);
            check_value(r, key, &e);
        }
        gguf_value e;
        assert_int_equal(gguf_array_get(v, v->len, &e), -1);
        return;
    }
    if (v->type == GGUF_TYPE_STRING) {
        snprintf(key, sizeof key, "%s/bytes", path);
        const refarray *b = refdata_need(r, key);
        gguf_str s;
        assert_int_equal(gguf_value_str(v, &s), 0);
        assert_int_equal(s.len, b->count);
        for (uint64_t i = 0; i < s.len; i++)
            assert_int_equal((unsigned char)s.ptr[i], b->i64[i]);
        return;
    }
    if (v->type == GGUF_TYPE_FLOAT32 || v->type == GGUF_TYPE_FLOAT64) {
        snprintf(key, sizeof key, "%s/bits", path);
        int64_t want = need_int(r, key);
        double x;
        assert_int_equal(gguf_value_f64(v, &x), 0);
        if (v->type == GGUF_TYPE_FLOAT32)
            assert_int_equal(f32_bits((float)x), (uint32_t)want);
        else {
            int64_t got;
            memcpy(&got, &x, sizeof got);
            assert_int_equal(got, want);
        }
        return;
    }
    snprintf(key, sizeof key, "%s/int", path);
    int64_t want = need_int(r, key);
    if (v->type == GGUF_TYPE_BOOL) {
        int b;
        assert_int_equal(gguf_value_bool(v, &b), 0);
        assert_int_equal(b, want);
    } else if (v->type == GGUF_TYPE_UINT64) {
        uint64_t u;
        assert_int_equal(gguf_value_u64(v, &u), 0);
        assert_int_equal(u, (uint64_t)want);
    } else {
        int64_t s;
        assert_int_equal(gguf_value_i64(v, &s), 0);
        assert_int_equal(s, want);
    }
}

static void test_metadata_values(void **state)
{
    (void)state;
    refdata *r = load_ref("types.ref");
    gguf_file f;
    open_gguf(&f, "types.gguf");
    assert_int_equal(f.n_kv, need_int(r, "kv_count"));
    for (size_t i = 0; i < f.n_kv; i++) {
        char path[200];
        snprintf(path, sizeof path, "kv/%.*s", (int)f.kvs[i].key.len,
                 f.kvs[i].key.ptr);
        assert_ptr_equal(gguf_get(&f, path + 3), &f.kvs[i].value);
        check_value(r, path, &f.kvs[i].value);
    }
    gguf_close(&f);
    refdata_free(r);
}

#define ASSERT_REFUSED(call, word)                                           \
    do {                                                                     \
        err[0] = '\0';                                                       \
        assert_int_equal((call), -1);                                        \
        if (!strstr(err, (word)))                                            \
            fail_msg("%s: message '%s' lacks '%s'", #call, err, (word));     \
    } while (0)

/* The typed accessors: conversions within range, refusals outside it. */
static void test_metadata_accessors(void **state)
{
    (void)state;
    gguf_file f;
    open_gguf(&f, "types.gguf");
    char err[512];
    uint32_t u32;
    int32_t i32;
    uint64_t u64;
    int64_t i64;
    float f32;
    double f64;
    int b;
    gguf_str s;
    assert_int_equal(gguf_get_u32(&f, "test.uint16", &u32, err, 512), 0);
    assert_int_equal(u32, 65535);
    assert_int_equal(gguf_get_u32(&f, "test.uint32", &u32, err, 512), 0);
    assert_int_equal(u32, UINT32_MAX);
    assert_int_equal(gguf_get_u32(&f, "test.int32", &u32, err, 512), 0);
    assert_int_equal(u32, INT32_MAX);
    ASSERT_REFUSED(gguf_get_i32(&f, "test.uint32", &i32, err, 512),
                   "test.uint32");
    ASSERT_REFUSED(gguf_get_u32(&f, "test.int32.small", &u32, err, 512),
                   "-7");
    assert_int_equal(gguf_get_i32(&f, "test.int32.small", &i32, err, 512), 0);
    assert_int_equal(i32, -7);
    assert_int_equal(gguf_get_i32(&f, "test.int8.small", &i32, err, 512), 0);
    assert_int_equal(i32, 127);
    assert_int_equal(gguf_get_u64(&f, "test.uint64", &u64, err, 512), 0);
    assert_true(u64 == UINT64_MAX);
    ASSERT_REFUSED(gguf_get_i64(&f, "test.uint64", &i64, err, 512),
                   "does not fit");
    ASSERT_REFUSED(gguf_get_u32(&f, "test.uint64.small", &u32, err, 512),
                   "1099511627776");
    assert_int_equal(gguf_get_i64(&f, "test.int64", &i64, err, 512), 0);
    assert_true(i64 == INT64_MAX);
    ASSERT_REFUSED(gguf_get_u64(&f, "test.int64.small", &u64, err, 512),
                   "does not fit");
    assert_int_equal(gguf_get_f32(&f, "test.float32", &f32, err, 512), 0);
    assert_true(f32 == 3.14159f);
    assert_int_equal(gguf_get_f64(&f, "test.float32", &f64, err, 512), 0);
    assert_true(f64 == (double)3.14159f);
    ASSERT_REFUSED(gguf_get_f32(&f, "test.float64", &f32, err, 512),
                   "range");
    assert_int_equal(gguf_get_f64(&f, "test.float64", &f64, err, 512), 0);
    assert_true(f64 == 1e300);
    assert_int_equal(gguf_get_f32(&f, "test.float64.small", &f32, err, 512),
                     0);
    assert_true(f32 == 0.1f);
    ASSERT_REFUSED(gguf_get_u32(&f, "test.float32", &u32, err, 512),
                   "FLOAT32");
    ASSERT_REFUSED(gguf_get_f32(&f, "test.uint8", &f32, err, 512), "UINT8");
    assert_int_equal(gguf_get_bool(&f, "test.bool.true", &b, err, 512), 0);
    assert_int_equal(b, 1);
    assert_int_equal(gguf_get_bool(&f, "test.bool.false", &b, err, 512), 0);
    assert_int_equal(b, 0);
    ASSERT_REFUSED(gguf_get_bool(&f, "test.uint8", &b, err, 512), "BOOL");
    ASSERT_REFUSED(gguf_get_u32(&f, "test.bool.true", &u32, err, 512),
                   "BOOL");
    assert_int_equal(gguf_get_str(&f, "test.string", &s, err, 512), 0);
    const char *hello = "h\xc3\xa9llo w\xc3\xb6rld \xe2\x9c\x93 \xf0\x9f\x98\x80";
    assert_int_equal(s.len, strlen(hello));
    assert_memory_equal(s.ptr, hello, s.len);
    assert_int_equal(gguf_get_str(&f, "test.string.empty", &s, err, 512), 0);
    assert_int_equal(s.len, 0);
    ASSERT_REFUSED(gguf_get_str(&f, "test.uint8", &s, err, 512), "STRING");
    /* Absent keys: 1, *out untouched, a message saying so. */
    u32 = 77;
    assert_int_equal(gguf_get_u32(&f, "no.such.key", &u32, err, 512), 1);
    assert_int_equal(u32, 77);
    assert_non_null(strstr(err, "missing"));
    assert_null(gguf_get(&f, "no.such.key"));
    assert_null(gguf_get(&f, "test.uint")); /* a prefix of real keys */

    /* Arrays. */
    const gguf_value *arr;
    gguf_type et;
    uint64_t n;
    assert_int_equal(gguf_get_array(&f, "test.array.string", &arr, &et, &n,
                                    err, 512), 0);
    assert_int_equal(et, GGUF_TYPE_STRING);
    assert_int_equal(n, 5);
    const char *strs[] = {"alpha", "", "\xc4\xa0the", "a\nb\tc",
                          "\xe4\xb8\xad\xe6\x96\x87"};
    for (uint64_t i = 0; i < n; i++) {
        assert_int_equal(gguf_array_str(arr, i, &s), 0);
        assert_int_equal(s.len, strlen(strs[i]));
        assert_memory_equal(s.ptr, strs[i], s.len);
    }
    assert_int_equal(gguf_array_str(arr, 5, &s), -1);
    ASSERT_REFUSED(gguf_get_array(&f, "test.string", &arr, &et, &n, err, 512),
                   "ARRAY");
    assert_int_equal(gguf_get_array(&f, "tokenizer.ggml.scores", &arr, &et,
                                    &n, err, 512), 0);
    assert_int_equal(gguf_array_str(arr, 0, &s), -1); /* not strings */
    float scores[3];
    assert_int_equal(gguf_array_f32(arr, scores, "scores", err, 512), 0);
    assert_true(scores[0] == 0.0f && scores[1] == -1.25f &&
                scores[2] == -3.5f);
    assert_int_equal(gguf_get_array(&f, "tokenizer.ggml.token_type", &arr,
                                    &et, &n, err, 512), 0);
    int32_t types[3];
    assert_int_equal(gguf_array_i32(arr, types, "types", err, 512), 0);
    assert_true(types[0] == 1 && types[1] == 3 && types[2] == 6);
    ASSERT_REFUSED(gguf_array_f32(arr, scores, "types", err, 512), "INT32");
    gguf_get_array(&f, "test.array.uint16", &arr, &et, &n, err, 512);
    int32_t u16s[3];
    assert_int_equal(gguf_array_i32(arr, u16s, "u16", err, 512), 0);
    assert_true(u16s[0] == 0 && u16s[1] == 65535 && u16s[2] == 513);
    gguf_get_array(&f, "test.array.uint64", &arr, &et, &n, err, 512);
    int32_t big[3];
    ASSERT_REFUSED(gguf_array_i32(arr, big, "u64s", err, 512), "element 1");
    gguf_get_array(&f, "test.array.float64", &arr, &et, &n, err, 512);
    float f64s[3];
    ASSERT_REFUSED(gguf_array_f32(arr, f64s, "f64s", err, 512), "element 1");
    gguf_get_array(&f, "test.array.float32", &arr, &et, &n, err, 512);
    float f32s[4];
    assert_int_equal(gguf_array_f32(arr, f32s, "f32s", err, 512), 0);
    assert_true(f32s[0] == 1.5f && f32s[1] == 0.0f && signbit(f32s[1]) &&
                f32s[2] == 3e38f && f32s[3] == 1e-40f);
    gguf_get_array(&f, "test.array.string", &arr, &et, &n, err, 512);
    ASSERT_REFUSED(gguf_array_i32(arr, big, "strs", err, 512), "STRING");
    /* Nested: [[[1], [2, 3]], [[4, 5, 6]]]. */
    gguf_get_array(&f, "test.array.nested3", &arr, &et, &n, err, 512);
    assert_int_equal(et, GGUF_TYPE_ARRAY);
    assert_int_equal(n, 2);
    gguf_value a0, a01, x;
    assert_int_equal(gguf_array_get(arr, 0, &a0), 0);
    assert_int_equal(a0.type, GGUF_TYPE_ARRAY);
    assert_int_equal(a0.elem_type, GGUF_TYPE_ARRAY);
    assert_int_equal(gguf_array_get(&a0, 1, &a01), 0);
    assert_int_equal(a01.elem_type, GGUF_TYPE_INT32);
    assert_int_equal(a01.len, 2);
    int32_t pair[2];
    assert_int_equal(gguf_array_i32(&a01, pair, "a01", err, 512), 0);
    assert_true(pair[0] == 2 && pair[1] == 3);
    assert_int_equal(gguf_array_get(&a01, 1, &x), 0);
    assert_int_equal(gguf_value_i64(&x, &i64), 0);
    assert_int_equal(i64, 3);
    gguf_close(&f);
}

/* ---- the tiny LLaMa ---------------------------------------------------- */

enum { TINY_B = 2, TINY_T = 12 };

/* The model's tensors with their Hugging Face names (written here from
 * the naming scheme, not taken from the loader). */
typedef struct named {
    char name[80];
    const float *data;
    size_t count;
} named;

static size_t hf_named(const llama_model *m, named *out)
{
    const llama_config *c = &m->cfg;
    size_t dim = (size_t)c->dim, hid = (size_t)c->hidden_dim;
    size_t hd = (size_t)m->head_dim, V = (size_t)c->vocab_size;
    size_t q = hd * (size_t)c->n_heads, kv = hd * (size_t)c->n_kv_heads;
    size_t n = 0;
#define ADD(ptr, cnt, ...)                                                   \
    (snprintf(out[n].name, sizeof out[n].name, __VA_ARGS__),                 \
     out[n].data = (ptr), out[n].count = (cnt), n++)
    ADD(m->w.embed, V * dim, "model.embed_tokens.weight");
    for (int l = 0; l < c->n_layers; l++) {
        const llama_layer *L = &m->w.layers[l];
        const char *p = "model.layers";
        ADD(L->wq, q * dim, "%s.%d.self_attn.q_proj.weight", p, l);
        ADD(L->wk, kv * dim, "%s.%d.self_attn.k_proj.weight", p, l);
        ADD(L->wv, kv * dim, "%s.%d.self_attn.v_proj.weight", p, l);
        ADD(L->wo, dim * q, "%s.%d.self_attn.o_proj.weight", p, l);
        ADD(L->w_gate, hid * dim, "%s.%d.mlp.gate_proj.weight", p, l);
        ADD(L->w_up, hid * dim, "%s.%d.mlp.up_proj.weight", p, l);
        ADD(L->w_down, dim * hid, "%s.%d.mlp.down_proj.weight", p, l);
        ADD(L->rms_att, dim, "%s.%d.input_layernorm.weight", p, l);
        ADD(L->rms_ffn, dim, "%s.%d.post_attention_layernorm.weight", p, l);
    }
    ADD(m->w.rms_final, dim, "model.norm.weight");
    if (!c->tied)
        ADD(m->w.head, V * dim, "lm_head.weight");
#undef ADD
    return n;
}

static void check_tiny(const char *variant, int tied)
{
    refdata *r = load_ref("tiny.ref");
    char file[64], key[256], err[512];
    snprintf(file, sizeof file, "tiny_%s.gguf", variant);
    char *path = path_in(file);
    llama_model m;
    if (ckpt_load_gguf(path, &m, TINY_B, TINY_T, err, sizeof err) != 0)
        fail_msg("%s: %s", path, err);
    /* The configuration from the llama.* keys (gen_gguf.py's TINY). */
    const llama_config *c = &m.cfg;
    assert_int_equal(c->dim, 64);
    assert_int_equal(c->hidden_dim, 96);
    assert_int_equal(c->n_layers, 2);
    assert_int_equal(c->n_heads, 4);
    assert_int_equal(c->n_kv_heads, 2);
    assert_int_equal(c->vocab_size, 83);
    assert_int_equal(c->seq_len, TINY_T); /* min(context 48, max_seq) */
    assert_true(c->rope_theta == 50000.0f);
    assert_true(c->norm_eps == 1e-5f);
    assert_int_equal(c->tied, tied);

    /* The weights: exactly the Hugging Face ones the file stands for. */
    named t[32];
    size_t n = hf_named(&m, t);
    for (size_t i = 0; i < n; i++) {
        snprintf(key, sizeof key, "%s/w/%.80s", variant, t[i].name);
        const refarray *w = refdata_need(r, key);
        assert_int_equal(w->count, t[i].count);
        for (size_t k = 0; k < t[i].count; k++)
            if (t[i].data[k] != (float)w->f64[k])
                fail_msg("%s %s[%zu] = %.9g, the file stands for %.9g",
                         variant, t[i].name, k, (double)t[i].data[k],
                         w->f64[k]);
    }

    /* Logits and loss against transformers in float64. */
    snprintf(key, sizeof key, "%s/tokens", variant);
    const refarray *tok = refdata_need(r, key);
    snprintf(key, sizeof key, "%s/targets", variant);
    const refarray *tgt = refdata_need(r, key);
    assert_int_equal(tok->count, TINY_B * TINY_T);
    int32_t in[TINY_B * TINY_T], tg[TINY_B * TINY_T];
    for (int i = 0; i < TINY_B * TINY_T; i++) {
        in[i] = (int32_t)tok->i64[i];
        tg[i] = (int32_t)tgt->i64[i];
    }
    size_t nl = (size_t)TINY_B * TINY_T * (size_t)c->vocab_size;
    float *logits = malloc(nl * sizeof *logits);
    assert_non_null(logits);
    float loss = llama_forward(&m, in, tg, TINY_B, TINY_T, logits, NULL);
    snprintf(key, sizeof key, "%s/logits", variant);
    const refarray *want = refdata_need(r, key);
    assert_int_equal(want->count, nl);
    double rel = test_max_rel_err(logits, want->f64, nl, 1.0);
    snprintf(key, sizeof key, "%s/loss", variant);
    double want_loss = refdata_need(r, key)->f64[0];
    printf("%s: loss %.7f (transformers %.7f), logits max rel err %.2e\n",
           variant, (double)loss, want_loss, rel);
    assert_true(rel < 2e-5);
    assert_true(fabs(loss - want_loss) < 2e-5 * want_loss);
    free(logits);
    llama_destroy(&m);
    free(path);
    refdata_free(r);
}

static void test_tiny_untied(void **state)
{
    (void)state;
    check_tiny("f32_untied", 0);
}

static void test_tiny_tied(void **state)
{
    (void)state;
    check_tiny("f32_tied", 1);
}

static void test_tiny_quantised(void **state)
{
    (void)state;
    check_tiny("quant_tied", 1);
}

/* The sequence length follows the run, bounded by the file's context;
 * and the GGUF and the Hugging Face directory of the same model load to
 * the same numbers. */
static void test_tiny_sizes_and_hf(void **state)
{
    (void)state;
    char err[512];
    char *path = path_in("tiny_f32_untied.gguf");
    llama_model m, h;
    assert_int_equal(ckpt_load_gguf(path, &m, 1, 0, err, sizeof err), 0);
    assert_int_equal(m.cfg.seq_len, 48);
    llama_destroy(&m);
    assert_int_equal(ckpt_load_gguf(path, &m, 1, 1000, err, sizeof err), 0);
    assert_int_equal(m.cfg.seq_len, 48);
    llama_destroy(&m);
    assert_int_equal(ckpt_load_gguf(path, &m, 3, 5, err, sizeof err), 0);
    assert_int_equal(m.cfg.seq_len, 5);
    char *dir = path_in("tiny_f32_untied_hf");
    if (ckpt_load_hf(dir, &h, 1, 0, err, sizeof err) != 0)
        fail_msg("%s: %s", dir, err);
    assert_int_equal(h.w.count, m.w.count);
    assert_memory_equal(h.w.base, m.w.base, m.w.count * sizeof(float));
    llama_destroy(&h);
    llama_destroy(&m);
    free(dir);
    free(path);
}

/* ---- cut short ------------------------------------------------------------ */

static unsigned char *read_whole(const char *name, size_t *len)
{
    char *p = path_in(name);
    FILE *fp = fopen(p, "rb");
    assert_non_null(fp);
    fseek(fp, 0, SEEK_END);
    long n = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    unsigned char *b = malloc((size_t)n);
    assert_non_null(b);
    assert_int_equal(fread(b, 1, (size_t)n, fp), (size_t)n);
    fclose(fp);
    free(p);
    *len = (size_t)n;
    return b;
}

static void refuse_prefix(const unsigned char *whole, size_t n,
                          const char *name)
{
    unsigned char *part = malloc(n ? n : 1);
    assert_non_null(part);
    memcpy(part, whole, n);
    gguf_file f;
    char err[512] = "";
    if (gguf_open_memory(&f, part, n, name, err, sizeof err) == 0)
        fail_msg("%s cut to %zu bytes was accepted", name, n);
    assert_true(strlen(err) > 10);
    free(part);
}

/* Cut anywhere in the header, metadata and tensor infos, and at both ends
 * of every tensor's data: refused with a message. Each prefix is an
 * exact-size copy, so ASan sees any read past it. */
static void check_prefixes(const char *name)
{
    size_t len;
    unsigned char *whole = read_whole(name, &len);
    gguf_file f;
    char err[512];
    assert_int_equal(gguf_open_memory(&f, whole, len, name, err, 512), 0);
    for (size_t n = 0; n <= f.data_offset; n++)
        refuse_prefix(whole, n, name);
    for (size_t i = 0; i < f.n_tensors; i++) {
        if (f.tensors[i].nbytes < 2)
            continue;
        size_t begin = (size_t)(f.tensors[i].data - f.bytes);
        size_t end = begin + (size_t)f.tensors[i].nbytes;
        refuse_prefix(whole, begin + 1, name);
        refuse_prefix(whole, end - 1, name);
    }
    gguf_close(&f);
    free(whole);
}

static void test_truncated(void **state)
{
    (void)state;
    check_prefixes("types.gguf");
    check_prefixes("tiny_quant_tied.gguf");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s DIR (made by tests/ref/gen_gguf.py)\n",
                argv[0]);
        return 2;
    }
    g_dir = argv[1];
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tensor_types),
        cmocka_unit_test(test_metadata_values),
        cmocka_unit_test(test_metadata_accessors),
        cmocka_unit_test(test_tiny_untied),
        cmocka_unit_test(test_tiny_tied),
        cmocka_unit_test(test_tiny_quantised),
        cmocka_unit_test(test_tiny_sizes_and_hf),
        cmocka_unit_test(test_truncated),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
