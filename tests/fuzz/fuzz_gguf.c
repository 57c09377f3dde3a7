/* libFuzzer target for the GGUF reader of the LLaMa example
 * (examples/llama/gguf.h): the input is parsed as a GGUF file from
 * memory; when it opens, every metadata value is read through every
 * accessor (arrays element by element, nested ones too), every tensor of
 * a converted type is dequantised, and the file is loaded as a LLaMa.
 * Properties, checked with abort():
 *   - no crash, no sanitizer report, no read outside the input (an
 *     exact-size copy);
 *   - a refused input comes with a message, and leaves the file empty;
 *   - the reader's index of an accepted file is under 5 times its size,
 *     and every key and tensor name is found by lookup;
 *   - a loaded model's weights are finite; a refused load leaves the
 *     model zeroed;
 *   - the tokenizer metadata builds a tokenizer or is refused with a
 *     message, and a built one encodes and decodes a fixed text, every id
 *     in its vocabulary.
 * Seeds: tests/fuzz/corpus/gguf (tests/ref/gen_gguf.py --corpus). */
#include "gguf.h"
#include "tok_gguf.h"
#include "tokenizer.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Every accessor on v; arrays recursively. */
static void walk(const gguf_value *v)
{
    uint64_t u;
    int64_t s;
    double d;
    int b;
    gguf_str str;
    int ok = (gguf_value_u64(v, &u) == 0) + (gguf_value_i64(v, &s) == 0) +
             (gguf_value_f64(v, &d) == 0) + (gguf_value_bool(v, &b) == 0) +
             (gguf_value_str(v, &str) == 0);
    if (v->type == GGUF_TYPE_STRING && (ok != 1 || str.len != v->len))
        abort();
    if (v->type != GGUF_TYPE_ARRAY)
        return;
    if (ok != 0)
        abort();
    for (uint64_t i = 0; i < v->len; i++) {
        gguf_value e;
        if (gguf_array_get(v, i, &e) != 0 || e.type != v->elem_type)
            abort();
        if (v->elem_type == GGUF_TYPE_STRING &&
            (gguf_array_str(v, i, &str) != 0 || str.len != e.len ||
             (const unsigned char *)str.ptr != e.data))
            abort();
        walk(&e);
    }
    gguf_value past;
    if (gguf_array_get(v, v->len, &past) == 0)
        abort();
    /* The whole-array conversions (bounded: len <= input size). */
    float *f = malloc((v->len ? v->len : 1) * sizeof *f);
    int32_t *i32 = malloc((v->len ? v->len : 1) * sizeof *i32);
    if (!f || !i32)
        abort();
    char err[256];
    gguf_array_f32(v, f, "fuzz", err, sizeof err);
    gguf_array_i32(v, i32, "fuzz", err, sizeof err);
    free(f);
    free(i32);
}

/* A NUL-terminated copy of s (NULL when s holds a NUL: no C lookup can
 * name it). */
static char *cstr(gguf_str s)
{
    if (memchr(s.ptr, 0, (size_t)s.len))
        return NULL;
    char *c = malloc((size_t)s.len + 1);
    if (!c)
        abort();
    memcpy(c, s.ptr, (size_t)s.len);
    c[s.len] = '\0';
    return c;
}

static void check_file(const gguf_file *f)
{
    if (f->index_bytes >= 5 * f->size)
        abort();
    for (size_t i = 0; i < f->n_kv; i++) {
        walk(&f->kvs[i].value);
        char *key = cstr(f->kvs[i].key);
        if (key) {
            if (gguf_get(f, key) != &f->kvs[i].value)
                abort();
            char err[256];
            uint32_t u32;
            int32_t i32;
            uint64_t u64;
            int64_t i64;
            float x;
            double y;
            int b;
            gguf_str s;
            const gguf_value *arr;
            gguf_get_u32(f, key, &u32, err, sizeof err);
            gguf_get_i32(f, key, &i32, err, sizeof err);
            gguf_get_u64(f, key, &u64, err, sizeof err);
            gguf_get_i64(f, key, &i64, err, sizeof err);
            gguf_get_f32(f, key, &x, err, sizeof err);
            gguf_get_f64(f, key, &y, err, sizeof err);
            gguf_get_bool(f, key, &b, err, sizeof err);
            gguf_get_str(f, key, &s, err, sizeof err);
            gguf_get_array(f, key, &arr, NULL, NULL, err, sizeof err);
            free(key);
        }
    }
    for (size_t i = 0; i < f->n_tensors; i++) {
        const gguf_tensor *t = &f->tensors[i];
        if (t->data < f->bytes || t->nbytes > f->size ||
            (uint64_t)(t->data - f->bytes) > f->size - t->nbytes)
            abort();
        char *name = cstr(t->name);
        if (name) {
            if (gguf_find_tensor(f, name) != t)
                abort();
            free(name);
        }
        /* Quantised types hold 4 bits or more per element, so numel is
         * bounded by the input; cap it anyway for speed. */
        if (t->numel > (1u << 20))
            continue;
        float *out = malloc((t->numel ? t->numel : 1) * sizeof *out);
        if (!out)
            abort();
        char err[256];
        int rc = gguf_tensor_to_f32(f, t, out, err, sizeof err);
        if (rc != 0 && (gguf_dtype_supported(t->type) || !err[0]))
            abort();
        free(out);
    }
}

static void check_llama(const gguf_file *f)
{
    llama_model m;
    char err[512] = "";
    if (gguf_load_llama(f, &m, 1, 8, err, sizeof err) != 0) {
        if (!err[0] || m.w.base || m.acts)
            abort();
        return;
    }
    for (size_t i = 0; i < m.w.count; i++)
        if (!isfinite(m.w.base[i]))
            abort();
    if (m.cfg.seq_len > 8)
        abort();
    llama_destroy(&m);
}

static void check_tokenizer(const gguf_file *f)
{
    tokenizer *tok = (tokenizer *)f; /* not NULL: a refusal must clear it */
    char err[512] = "";
    const int rc = tok_from_gguf(f, &tok, err, sizeof err);
    if (rc != 0) {
        if (tok != NULL || (rc < 0 && !err[0]))
            abort();
        return;
    }
    static const char text[] = "Hello, world! 1234 'tis\n\t caf\xc3\xa9 \xff";
    int32_t *ids = NULL;
    size_t n = 0, dropped = 0;
    if (tok_encode(tok, text, sizeof text - 1, 1, &ids, &n, &dropped, err,
                   sizeof err) == 0) {
        const size_t vocab = tok_vocab_size(tok);
        for (size_t i = 0; i < n; i++)
            if (ids[i] < 0 || (size_t)ids[i] >= vocab)
                abort();
        char *bytes = NULL;
        size_t len = 0;
        if (tok_decode(tok, ids, n, &bytes, &len, err, sizeof err) == 0)
            free(bytes);
        free(ids);
    } else if (!err[0]) {
        abort();
    }
    tok_free(tok);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* An exact-size copy: ASan sees any read past its end. */
    uint8_t *copy = malloc(size ? size : 1);
    if (!copy)
        abort();
    if (size)
        memcpy(copy, data, size);
    gguf_file f;
    char err[512] = "";
    if (gguf_open_memory(&f, copy, size, "fuzz.gguf", err, sizeof err) !=
        0) {
        if (!err[0] || f.kvs || f.tensors || f.name)
            abort();
        free(copy);
        return 0;
    }
    check_file(&f);
    check_llama(&f);
    check_tokenizer(&f);
    gguf_close(&f);
    free(copy);
    return 0;
}
