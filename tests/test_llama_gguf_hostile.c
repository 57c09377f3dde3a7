/* The GGUF reader and LLaMa loader against hostile files, built here byte
 * by byte (no Python needed): cut short at every byte, counts, lengths,
 * dimensions and offsets that lie (up to 2^64 - 1, and products that
 * wrap), unknown types, misaligned, overlapping or out-of-bounds tensor
 * data, duplicate keys and tensor names, nesting too deep, FIFOs and
 * directories, LLaMa files with wrong keys, shapes, extra or missing
 * tensors, unsupported types and NaN or infinite weights, and tokenizer
 * metadata that is missing, mistyped, out of range or of a model not
 * built here (with closed-form encodings of the accepted ones). Each is
 * refused
 * with a message naming the problem; nothing crashes (the suite also runs
 * under ASan and UBSan); every accepted file's index is under 5 times
 * its size. */
#include "common/testutil.h"

#include "gguf.h"
#include "tok_gguf.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- writing GGUF bytes ------------------------------------------------- */

typedef struct wbuf {
    unsigned char *p;
    size_t n, cap;
} wbuf;

static size_t put(wbuf *b, const void *src, size_t n)
{
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
        assert_non_null(b->p);
    }
    size_t at = b->n;
    if (n)
        memcpy(b->p + at, src, n);
    b->n += n;
    return at;
}

static size_t put_u32(wbuf *b, uint32_t v)
{
    unsigned char x[4];
    for (int i = 0; i < 4; i++)
        x[i] = (unsigned char)(v >> (8 * i));
    return put(b, x, 4);
}

static size_t put_u64(wbuf *b, uint64_t v)
{
    unsigned char x[8];
    for (int i = 0; i < 8; i++)
        x[i] = (unsigned char)(v >> (8 * i));
    return put(b, x, 8);
}

/* Returns the offset of the length field. */
static size_t put_str(wbuf *b, const char *s)
{
    size_t at = put_u64(b, strlen(s));
    put(b, s, strlen(s));
    return at;
}

static void patch_u32(wbuf *b, size_t at, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        b->p[at + i] = (unsigned char)(v >> (8 * i));
}

static void patch_u64(wbuf *b, size_t at, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        b->p[at + i] = (unsigned char)(v >> (8 * i));
}

/* A file being written: the header's count fields, then keys, then
 * tensors (infos, padding, data), with each field's offset recorded for
 * the cases that patch it. */
enum { MAX_T = 32 };
typedef struct gg {
    wbuf b;
    size_t at_version, at_n_tensors, at_n_kv;
    uint64_t n_kv;
    size_t n_t;
    size_t at_name[MAX_T], at_ndims[MAX_T], at_ne[MAX_T], at_type[MAX_T],
        at_offset[MAX_T];
    size_t data_start, data_end;
} gg;

static void gg_begin(gg *g)
{
    memset(g, 0, sizeof *g);
    put(&g->b, "GGUF", 4);
    g->at_version = put_u32(&g->b, 3);
    g->at_n_tensors = put_u64(&g->b, 0);
    g->at_n_kv = put_u64(&g->b, 0);
}

/* A key and its type; the caller writes the value. */
static void gg_key(gg *g, const char *key, uint32_t type)
{
    put_str(&g->b, key);
    put_u32(&g->b, type);
    patch_u64(&g->b, g->at_n_kv, ++g->n_kv);
}

typedef struct tspec {
    const char *name;
    uint32_t n_dims;
    uint64_t ne[4];
    uint32_t type;
    const void *data; /* nbytes of it, or zeros when NULL */
    size_t nbytes;
} tspec;

static void gg_tensors(gg *g, const tspec *t, size_t n, uint64_t align)
{
    assert_true(n <= MAX_T);
    patch_u64(&g->b, g->at_n_tensors, n);
    uint64_t off = 0;
    for (size_t i = 0; i < n; i++) {
        g->at_name[i] = put_str(&g->b, t[i].name);
        g->at_ndims[i] = put_u32(&g->b, t[i].n_dims);
        g->at_ne[i] = g->b.n;
        for (uint32_t d = 0; d < t[i].n_dims; d++)
            put_u64(&g->b, t[i].ne[d]);
        g->at_type[i] = put_u32(&g->b, t[i].type);
        g->at_offset[i] = put_u64(&g->b, off);
        off += (t[i].nbytes + align - 1) / align * align;
    }
    static const unsigned char zeros[256];
    while (g->b.n % align)
        put(&g->b, zeros, 1);
    g->data_start = g->b.n;
    for (size_t i = 0; i < n; i++) {
        for (size_t k = 0; k < t[i].nbytes; k++)
            put(&g->b, t[i].data ? (const unsigned char *)t[i].data + k
                                 : zeros, 1);
        while ((g->b.n - g->data_start) % align)
            put(&g->b, zeros, 1);
    }
    g->data_end = g->b.n;
    g->n_t = n;
}

/* ---- the base file of the format cases -------------------------------- */

/* Fields of base() that the cases patch. */
typedef struct base_at {
    size_t align_value, str_len, arr_type, arr_count, strs_count, strs_len0,
        nested_count, nested_inner_count, bool_value, bools_elem,
        f32_type, key0_len;
} base_at;

/* One Q8_0 block: d = 1.0, quants -16 .. 15. */
static unsigned char q8_block[34];
static float f32_data[4] = {1.0f, -2.0f, 0.5f, 3.0f};

static void init_q8_block(void)
{
    q8_block[0] = 0x00;
    q8_block[1] = 0x3C;
    for (int i = 0; i < 32; i++)
        q8_block[2 + i] = (unsigned char)(i - 16);
}

/* Keys of several kinds, a Q8_0 matrix and an F32 vector. */
static void base(gg *g, base_at *at)
{
    gg_begin(g);
    at->key0_len = g->b.n;
    gg_key(g, "general.alignment", GGUF_TYPE_UINT32);
    at->align_value = put_u32(&g->b, 32);
    gg_key(g, "a.string", GGUF_TYPE_STRING);
    at->str_len = put_str(&g->b, "hello");
    gg_key(g, "a.array", GGUF_TYPE_ARRAY);
    at->arr_type = put_u32(&g->b, GGUF_TYPE_UINT32);
    at->arr_count = put_u64(&g->b, 3);
    for (uint32_t i = 1; i <= 3; i++)
        put_u32(&g->b, i);
    gg_key(g, "a.strings", GGUF_TYPE_ARRAY);
    put_u32(&g->b, GGUF_TYPE_STRING);
    at->strs_count = put_u64(&g->b, 2);
    at->strs_len0 = put_str(&g->b, "x");
    put_str(&g->b, "yz");
    gg_key(g, "a.nested", GGUF_TYPE_ARRAY);
    put_u32(&g->b, GGUF_TYPE_ARRAY);
    at->nested_count = put_u64(&g->b, 1);
    put_u32(&g->b, GGUF_TYPE_UINT8);
    at->nested_inner_count = put_u64(&g->b, 2);
    put(&g->b, "\x01\x02", 2);
    gg_key(g, "a.bool", GGUF_TYPE_BOOL);
    at->bool_value = put(&g->b, "\x01", 1);
    gg_key(g, "a.bools", GGUF_TYPE_ARRAY);
    put_u32(&g->b, GGUF_TYPE_BOOL);
    put_u64(&g->b, 3);
    at->bools_elem = put(&g->b, "\x00\x01\x01", 3);
    at->f32_type = g->b.n + 8 + strlen("a.f32");
    gg_key(g, "a.f32", GGUF_TYPE_FLOAT32);
    put_u32(&g->b, 0x3F800000u);
    init_q8_block();
    static unsigned char q8_two[68];
    memcpy(q8_two, q8_block, 34);
    memcpy(q8_two + 34, q8_block, 34);
    tspec t[2] = {
        {"t0", 2, {32, 2, 1, 1}, GGUF_DTYPE_Q8_0, q8_two, 68},
        {"t1", 1, {4, 1, 1, 1}, GGUF_DTYPE_F32, f32_data, 16},
    };
    gg_tensors(g, t, 2, 32);
}

/* ---- checks ------------------------------------------------------------- */

/* The bytes must be refused with a message containing `word`. The buffer
 * is an exact-size copy, so ASan reports any read past its end. */
static void refused_bytes(const unsigned char *p, size_t n, const char *word,
                          const char *what)
{
    unsigned char *copy = malloc(n ? n : 1);
    assert_non_null(copy);
    memcpy(copy, p, n);
    gguf_file f;
    char err[512] = "";
    if (gguf_open_memory(&f, copy, n, "hostile.gguf", err, sizeof err) == 0)
        fail_msg("%s: accepted", what);
    if (!strstr(err, word))
        fail_msg("%s: message '%s' lacks '%s'", what, err, word);
    assert_non_null(strstr(err, "hostile.gguf"));
    if (getenv("GGUF_TEST_VERBOSE"))
        printf("%s\n", err);
    assert_null(f.kvs); /* left empty */
    free(copy);
}

static void refused(const gg *g, const char *word, const char *what)
{
    refused_bytes(g->b.p, g->b.n, word, what);
}

static void accepted(const gg *g, gguf_file *f)
{
    char err[512];
    if (gguf_open_memory(f, g->b.p, g->b.n, "ok.gguf", err, sizeof err))
        fail_msg("refused: %s", err);
    /* Allocations are bounded by the file size (gguf.h). */
    assert_true(f->index_bytes < 5 * f->size);
}

#define CASE(patch, word)                                                    \
    do {                                                                     \
        gg g_;                                                               \
        base_at a_;                                                          \
        base(&g_, &a_);                                                      \
        gg *g = &g_;                                                         \
        base_at *at = &a_;                                                   \
        (void)at;                                                            \
        patch;                                                               \
        refused(g, (word), #patch);                                          \
        free(g_.b.p);                                                        \
    } while (0)

static void test_base_reads(void **state)
{
    (void)state;
    gg g;
    base_at at;
    base(&g, &at);
    gguf_file f;
    accepted(&g, &f);
    assert_int_equal(f.n_kv, 8);
    assert_int_equal(f.n_tensors, 2);
    assert_int_equal(f.data_offset, g.data_start);
    const gguf_tensor *t0 = gguf_find_tensor(&f, "t0");
    assert_non_null(t0);
    float out[64];
    char err[256];
    assert_int_equal(gguf_tensor_to_f32(&f, t0, out, err, sizeof err), 0);
    for (int i = 0; i < 64; i++)
        assert_true(out[i] == (float)(i % 32 - 16));
    const gguf_tensor *t1 = gguf_find_tensor(&f, "t1");
    assert_int_equal(gguf_tensor_to_f32(&f, t1, out, err, sizeof err), 0);
    assert_memory_equal(out, f32_data, sizeof f32_data);
    gguf_close(&f);
    /* Version 2 has the same layout. */
    patch_u32(&g.b, g.at_version, 2);
    accepted(&g, &f);
    assert_int_equal(f.version, 2);
    gguf_close(&f);
    free(g.b.p);
}

static void test_truncated_everywhere(void **state)
{
    (void)state;
    gg g;
    base_at at;
    base(&g, &at);
    /* The last tensor's data ends before the final padding. */
    size_t end = g.data_start + 96 + 16;
    for (size_t n = 0; n < end; n++) {
        char what[64];
        snprintf(what, sizeof what, "cut to %zu bytes", n);
        refused_bytes(g.b.p, n, n < 4 ? "magic" : "", what);
    }
    free(g.b.p);
}

static void test_header_lies(void **state)
{
    (void)state;
    CASE(memcpy(g->b.p, "GGUG", 4), "magic");
    CASE(patch_u32(&g->b, g->at_version, 1), "version 1");
    CASE(patch_u32(&g->b, g->at_version, 4), "unknown GGUF version 4");
    CASE(patch_u32(&g->b, g->at_version, 0x03000000u), "big-endian");
    CASE(patch_u64(&g->b, g->at_n_tensors, UINT64_MAX), "claims");
    CASE(patch_u64(&g->b, g->at_n_tensors, 1ull << 63), "claims");
    CASE(patch_u64(&g->b, g->at_n_kv, UINT64_MAX), "claims");
    CASE(patch_u64(&g->b, g->at_n_kv, g->b.n / 13), "claims");
    /* Counts a little too high: the parse runs into what follows. */
    CASE(patch_u64(&g->b, g->at_n_kv, 9), "");
    CASE(patch_u64(&g->b, g->at_n_tensors, 3), "");
    CASE(patch_u64(&g->b, g->at_n_kv, 7), "");
}

static void test_metadata_lies(void **state)
{
    (void)state;
    CASE(patch_u64(&g->b, at->key0_len, UINT64_MAX), "claims");
    CASE(patch_u64(&g->b, at->key0_len, 1ull << 63), "claims");
    CASE(patch_u64(&g->b, at->key0_len, g->b.n), "claims");
    CASE(patch_u64(&g->b, at->str_len, UINT64_MAX), "claims");
    CASE(patch_u64(&g->b, at->str_len, g->b.n - at->str_len - 8 + 1),
         "claims");
    CASE(patch_u32(&g->b, at->f32_type, 13), "unknown value type 13");
    CASE(patch_u32(&g->b, at->f32_type, UINT32_MAX), "unknown value type");
    CASE(patch_u32(&g->b, at->arr_type, 13), "unknown element type");
    CASE(patch_u64(&g->b, at->arr_count, UINT64_MAX), "a.array");
    CASE(patch_u64(&g->b, at->arr_count, 1ull << 62), "a.array"); /* *4 */
    CASE((patch_u32(&g->b, at->arr_type, GGUF_TYPE_UINT64),
          patch_u64(&g->b, at->arr_count, 1ull << 61)), "a.array"); /* *8 */
    CASE(patch_u64(&g->b, at->strs_count, UINT64_MAX), "a.strings");
    CASE(patch_u64(&g->b, at->strs_count, 1ull << 61), "a.strings");
    CASE(patch_u64(&g->b, at->strs_len0, UINT64_MAX), "a.strings");
    CASE(patch_u64(&g->b, at->nested_count, UINT64_MAX), "a.nested");
    CASE(patch_u64(&g->b, at->nested_inner_count, 1ull << 63), "a.nested");
    CASE(g->b.p[at->bool_value] = 2, "BOOL value 2");
    CASE(g->b.p[at->bools_elem + 2] = 0xFF, "element 2 of a BOOL array");
    CASE(patch_u32(&g->b, at->align_value, 0), "power of two");
    CASE(patch_u32(&g->b, at->align_value, 48), "power of two");
    CASE(patch_u32(&g->b, at->align_value, 1u << 31), "past the end");
    /* t1 is at data offset 96, not a multiple of 64. */
    CASE(patch_u32(&g->b, at->align_value, 64), "not a multiple");
}

/* Keys and tensor names must be unique; alignment must be an integer. */
static void test_duplicates_and_types(void **state)
{
    (void)state;
    gg g;
    gg_begin(&g);
    gg_key(&g, "k", GGUF_TYPE_UINT8);
    put(&g.b, "\x01", 1);
    gg_key(&g, "k", GGUF_TYPE_UINT8);
    put(&g.b, "\x02", 1);
    gg_tensors(&g, NULL, 0, 32);
    refused(&g, "'k' appears more than once", "duplicate key");
    free(g.b.p);

    gg_begin(&g);
    tspec twice[2] = {{"w", 1, {4, 1, 1, 1}, GGUF_DTYPE_F32, NULL, 16},
                      {"w", 1, {4, 1, 1, 1}, GGUF_DTYPE_F32, NULL, 16}};
    gg_tensors(&g, twice, 2, 32);
    refused(&g, "'w' appears more than once", "duplicate tensor");
    free(g.b.p);

    gg_begin(&g);
    gg_key(&g, "general.alignment", GGUF_TYPE_STRING);
    put_str(&g.b, "32");
    gg_tensors(&g, NULL, 0, 32);
    refused(&g, "general.alignment", "alignment as a string");
    free(g.b.p);

    /* GGUF_MAX_NESTING levels of arrays, and one more. */
    for (int depth = GGUF_MAX_NESTING; depth <= GGUF_MAX_NESTING + 1;
         depth++) {
        gg_begin(&g);
        gg_key(&g, "deep", GGUF_TYPE_ARRAY);
        for (int d = 1; d < depth; d++) {
            put_u32(&g.b, GGUF_TYPE_ARRAY);
            put_u64(&g.b, 1);
        }
        put_u32(&g.b, GGUF_TYPE_UINT8);
        put_u64(&g.b, 1);
        put(&g.b, "\x07", 1);
        gg_tensors(&g, NULL, 0, 32);
        if (depth <= GGUF_MAX_NESTING) {
            gguf_file f;
            accepted(&g, &f);
            gguf_close(&f);
        } else {
            refused(&g, "nested more than", "nesting too deep");
        }
        free(g.b.p);
    }

    /* Empty arrays and strings are valid. */
    gg_begin(&g);
    gg_key(&g, "empty", GGUF_TYPE_ARRAY);
    put_u32(&g.b, GGUF_TYPE_STRING);
    put_u64(&g.b, 0);
    gg_key(&g, "", GGUF_TYPE_STRING);
    put_str(&g.b, "");
    gg_tensors(&g, NULL, 0, 32);
    gguf_file f;
    accepted(&g, &f);
    const gguf_value *v = gguf_get(&f, "empty");
    assert_non_null(v);
    assert_int_equal(v->len, 0);
    gguf_str s;
    assert_int_equal(gguf_array_str(v, 0, &s), -1);
    assert_non_null(gguf_get(&f, ""));
    gguf_close(&f);
    free(g.b.p);
}

static void test_tensor_lies(void **state)
{
    (void)state;
    CASE(patch_u32(&g->b, g->at_ndims[1], 0), "0 dimensions");
    CASE(patch_u32(&g->b, g->at_ndims[1], 5), "5 dimensions");
    CASE(patch_u32(&g->b, g->at_ndims[0], UINT32_MAX), "dimensions");
    /* at_ne[i] is tensor i's ne[0]; t0's ne[1] follows it. */
    CASE(patch_u64(&g->b, g->at_ne[0] + 8, 1ull << 63), "2^63");
    CASE((patch_u64(&g->b, g->at_ne[0], 1ull << 32),
          patch_u64(&g->b, g->at_ne[0] + 8, 1ull << 32)), "2^63");
    CASE(patch_u64(&g->b, g->at_ne[1], (1ull << 63) - 1), "2^64 bytes");
    CASE(patch_u64(&g->b, g->at_ne[0] + 8, 1ull << 40), "data area has");
    CASE(patch_u64(&g->b, g->at_ne[0] + 8, 3), "overlap");
    CASE(patch_u64(&g->b, g->at_ne[0], 33), "whole Q8_0 blocks");
    CASE(patch_u64(&g->b, g->at_ne[0], 16), "whole Q8_0 blocks");
    CASE(patch_u32(&g->b, g->at_type[0], 99), "type 99");
    CASE(patch_u32(&g->b, g->at_type[0], 31), "ggml does not define");
    CASE(patch_u32(&g->b, g->at_type[0], UINT32_MAX), "ggml does not define");
    CASE(patch_u64(&g->b, g->at_offset[1], 97), "not a multiple");
    CASE(patch_u64(&g->b, g->at_offset[1], 128), "data area has");
    CASE(patch_u64(&g->b, g->at_offset[1], UINT64_MAX - 31), "data area has");
    CASE(patch_u64(&g->b, g->at_offset[1], 1ull << 63), "data area has");
    /* offset + nbytes wraps past 2^64 to 4: must not pass as in bounds. */
    CASE(patch_u64(&g->b, g->at_offset[0], 0 - 64ull), "data area has");
    CASE(patch_u64(&g->b, g->at_offset[1], 64), "overlap");
    CASE(patch_u64(&g->b, g->at_offset[1], 0), "overlap");
    CASE(patch_u64(&g->b, g->at_name[1], UINT64_MAX), "claims");
    /* Data cut inside the last tensor. */
    CASE(g->b.n = g->data_start + 96 + 15, "data area has");
}

/* A type ggml defines but the reader does not convert: the file opens,
 * the conversion is refused naming the tensor and the type. */
static void test_unsupported_type(void **state)
{
    (void)state;
    gg g;
    gg_begin(&g);
    tspec t = {"blk.0.q5", 2, {32, 2, 1, 1}, 6 /* Q5_0 */, NULL, 44};
    gg_tensors(&g, &t, 1, 32);
    gguf_file f;
    accepted(&g, &f);
    char err[512];
    float out[64];
    assert_int_equal(gguf_tensor_to_f32(&f, &f.tensors[0], out, err, 512),
                     -1);
    assert_non_null(strstr(err, "blk.0.q5"));
    assert_non_null(strstr(err, "Q5_0"));
    gguf_close(&f);
    free(g.b.p);
}

static void test_not_files(void **state)
{
    (void)state;
    char dir[] = "/tmp/gguf_hostile_XXXXXX";
    assert_non_null(mkdtemp(dir));
    char fifo[64], empty[64], missing[64];
    snprintf(fifo, sizeof fifo, "%s/fifo.gguf", dir);
    snprintf(empty, sizeof empty, "%s/empty.gguf", dir);
    snprintf(missing, sizeof missing, "%s/none.gguf", dir);
    assert_int_equal(mkfifo(fifo, 0600), 0);
    FILE *fp = fopen(empty, "wb");
    assert_non_null(fp);
    fclose(fp);
    gguf_file f;
    char err[512];
    llama_model m;
    /* Opening a FIFO for reading would block until a writer comes. */
    assert_int_equal(gguf_open(&f, fifo, err, sizeof err), -1);
    assert_non_null(strstr(err, "not a regular file"));
    assert_int_equal(ckpt_load_gguf(fifo, &m, 1, 8, err, sizeof err), -1);
    assert_non_null(strstr(err, "not a regular file"));
    assert_int_equal(gguf_open(&f, dir, err, sizeof err), -1);
    assert_non_null(strstr(err, "not a regular file"));
    assert_int_equal(gguf_open(&f, empty, err, sizeof err), -1);
    assert_non_null(strstr(err, "not a GGUF file"));
    assert_int_equal(gguf_open(&f, missing, err, sizeof err), -1);
    assert_non_null(strstr(err, "cannot open"));
    /* Recognised by name or by magic, without blocking on the FIFO. */
    assert_int_equal(gguf_is_gguf_path(fifo), 1); /* the name says so */
    char fifo2[64];
    snprintf(fifo2, sizeof fifo2, "%s/fifo.bin", dir);
    assert_int_equal(mkfifo(fifo2, 0600), 0);
    assert_int_equal(gguf_is_gguf_path(fifo2), 0);
    char magic[64];
    snprintf(magic, sizeof magic, "%s/model.bin", dir);
    fp = fopen(magic, "wb");
    assert_non_null(fp);
    fputs("GGUF", fp);
    fclose(fp);
    assert_int_equal(gguf_is_gguf_path(magic), 1);
    assert_int_equal(gguf_is_gguf_path(empty), 1);
    assert_int_equal(gguf_is_gguf_path(dir), 0);
    unlink(fifo);
    unlink(fifo2);
    unlink(empty);
    unlink(magic);
    rmdir(dir);
}

/* ---- LLaMa files ---------------------------------------------------------- */

/* A valid tiny LLaMa in F32: dim 32, one layer, 2 heads (head size 16),
 * one kv head, MLP 32, vocab 5, context 16, untied. The cases change one
 * key or tensor each. */
enum { DIM = 32, HID = 32, VOCAB = 5, KVD = 16 };

typedef struct kvspec {
    const char *key;
    uint32_t type; /* UINT32, FLOAT32 or STRING */
    uint32_t u;
    float f;
    const char *s;
} kvspec;

typedef struct llama_spec {
    kvspec kv[16];
    size_t n_kv;
    tspec t[16];
    size_t n_t;
    float *data; /* backing of every tensor */
} llama_spec;

static void llama_base(llama_spec *s)
{
    memset(s, 0, sizeof *s);
    const kvspec kv[] = {
        {"general.architecture", GGUF_TYPE_STRING, 0, 0, "llama"},
        {"llama.block_count", GGUF_TYPE_UINT32, 1, 0, NULL},
        {"llama.context_length", GGUF_TYPE_UINT32, 16, 0, NULL},
        {"llama.embedding_length", GGUF_TYPE_UINT32, DIM, 0, NULL},
        {"llama.feed_forward_length", GGUF_TYPE_UINT32, HID, 0, NULL},
        {"llama.attention.head_count", GGUF_TYPE_UINT32, 2, 0, NULL},
        {"llama.attention.head_count_kv", GGUF_TYPE_UINT32, 1, 0, NULL},
        {"llama.rope.freq_base", GGUF_TYPE_FLOAT32, 0, 10000.0f, NULL},
        {"llama.attention.layer_norm_rms_epsilon", GGUF_TYPE_FLOAT32, 0,
         1e-5f, NULL},
        {"llama.rope.dimension_count", GGUF_TYPE_UINT32, 16, 0, NULL},
        {"llama.vocab_size", GGUF_TYPE_UINT32, VOCAB, 0, NULL},
    };
    s->n_kv = sizeof kv / sizeof kv[0];
    memcpy(s->kv, kv, sizeof kv);
    s->data = malloc(DIM * DIM * sizeof(float));
    assert_non_null(s->data);
    test_fill_uniform(s->data, DIM * DIM, 5);
    const tspec t[] = {
        {"token_embd.weight", 2, {DIM, VOCAB, 1, 1}, 0, NULL, 0},
        {"blk.0.attn_norm.weight", 1, {DIM, 1, 1, 1}, 0, NULL, 0},
        {"blk.0.attn_q.weight", 2, {DIM, DIM, 1, 1}, 0, NULL, 0},
        {"blk.0.attn_k.weight", 2, {DIM, KVD, 1, 1}, 0, NULL, 0},
        {"blk.0.attn_v.weight", 2, {DIM, KVD, 1, 1}, 0, NULL, 0},
        {"blk.0.attn_output.weight", 2, {DIM, DIM, 1, 1}, 0, NULL, 0},
        {"blk.0.ffn_norm.weight", 1, {DIM, 1, 1, 1}, 0, NULL, 0},
        {"blk.0.ffn_gate.weight", 2, {DIM, HID, 1, 1}, 0, NULL, 0},
        {"blk.0.ffn_up.weight", 2, {DIM, HID, 1, 1}, 0, NULL, 0},
        {"blk.0.ffn_down.weight", 2, {HID, DIM, 1, 1}, 0, NULL, 0},
        {"output_norm.weight", 1, {DIM, 1, 1, 1}, 0, NULL, 0},
        {"output.weight", 2, {DIM, VOCAB, 1, 1}, 0, NULL, 0},
    };
    s->n_t = sizeof t / sizeof t[0];
    memcpy(s->t, t, sizeof t);
    for (size_t i = 0; i < s->n_t; i++) {
        s->t[i].data = s->data;
        s->t[i].nbytes = s->t[i].ne[0] * s->t[i].ne[1] * sizeof(float);
    }
}

static void llama_write(const llama_spec *s, gg *g)
{
    gg_begin(g);
    for (size_t i = 0; i < s->n_kv; i++) {
        const kvspec *k = &s->kv[i];
        gg_key(g, k->key, k->type);
        if (k->type == GGUF_TYPE_STRING) {
            put_str(&g->b, k->s);
        } else if (k->type == GGUF_TYPE_FLOAT32) {
            uint32_t b;
            memcpy(&b, &k->f, 4);
            put_u32(&g->b, b);
        } else {
            put_u32(&g->b, k->u);
        }
    }
    gg_tensors(g, s->t, s->n_t, 32);
}

static kvspec *find_kv(llama_spec *s, const char *key)
{
    for (size_t i = 0; i < s->n_kv; i++)
        if (!strcmp(s->kv[i].key, key))
            return &s->kv[i];
    fail_msg("no key %s", key);
    return NULL;
}

static void drop_kv(llama_spec *s, const char *key)
{
    kvspec *k = find_kv(s, key);
    size_t i = (size_t)(k - s->kv);
    memmove(&s->kv[i], &s->kv[i + 1], (s->n_kv - i - 1) * sizeof *k);
    s->n_kv--;
}

static tspec *find_t(llama_spec *s, const char *name)
{
    for (size_t i = 0; i < s->n_t; i++)
        if (!strcmp(s->t[i].name, name))
            return &s->t[i];
    fail_msg("no tensor %s", name);
    return NULL;
}

static void drop_t(llama_spec *s, const char *name)
{
    tspec *t = find_t(s, name);
    size_t i = (size_t)(t - s->t);
    memmove(&s->t[i], &s->t[i + 1], (s->n_t - i - 1) * sizeof *t);
    s->n_t--;
}

/* Loads the spec's file; returns the load's result, message in err. */
static int llama_try(const llama_spec *s, llama_model *m, int max_seq,
                     char *err, size_t errlen)
{
    gg g;
    llama_write(s, &g);
    gguf_file f;
    char e[512];
    if (gguf_open_memory(&f, g.b.p, g.b.n, "llama.gguf", e, sizeof e))
        fail_msg("the file itself was refused: %s", e);
    int rc = gguf_load_llama(&f, m, 2, max_seq, err, errlen);
    gguf_close(&f);
    free(g.b.p);
    return rc;
}

#define LLAMA_CASE(change, word)                                             \
    do {                                                                     \
        llama_spec s_;                                                       \
        llama_base(&s_);                                                     \
        llama_spec *s = &s_;                                                 \
        change;                                                              \
        llama_model m_;                                                      \
        char err_[512] = "";                                                 \
        if (llama_try(s, &m_, 8, err_, sizeof err_) == 0)                    \
            fail_msg("%s: accepted", #change);                               \
        if (!strstr(err_, (word)))                                           \
            fail_msg("%s: message '%s' lacks '%s'", #change, err_, (word));  \
        if (getenv("GGUF_TEST_VERBOSE"))                                     \
            printf("%s\n", err_);                                            \
        assert_null(m_.w.base); /* nothing allocated is left */              \
        free(s_.data);                                                       \
    } while (0)

static void test_llama_valid(void **state)
{
    (void)state;
    llama_spec s;
    llama_base(&s);
    llama_model m;
    char err[512];
    if (llama_try(&s, &m, 8, err, sizeof err) != 0)
        fail_msg("%s", err);
    assert_int_equal(m.cfg.seq_len, 8);
    assert_int_equal(m.cfg.tied, 0);
    assert_memory_equal(m.w.layers[0].w_up, s.data, DIM * HID * 4);
    llama_destroy(&m);
    /* Tied when output.weight is absent. */
    drop_t(&s, "output.weight");
    assert_int_equal(llama_try(&s, &m, 0, err, sizeof err), 0);
    assert_int_equal(m.cfg.tied, 1);
    assert_int_equal(m.cfg.seq_len, 16);
    assert_ptr_equal(m.w.head, m.w.embed);
    llama_destroy(&m);
    free(s.data);
}

static void test_llama_keys(void **state)
{
    (void)state;
    LLAMA_CASE(find_kv(s, "general.architecture")->s = "qwen2",
               "only 'llama'");
    LLAMA_CASE(drop_kv(s, "general.architecture"), "general.architecture");
    LLAMA_CASE(drop_kv(s, "llama.block_count"), "block_count' is missing");
    LLAMA_CASE(drop_kv(s, "llama.context_length"), "context_length");
    LLAMA_CASE(drop_kv(s, "llama.attention.layer_norm_rms_epsilon"),
               "layer_norm_rms_epsilon");
    LLAMA_CASE(find_kv(s, "llama.block_count")->u = 1000000,
               "needs 9000003 tensors, the file has 12");
    LLAMA_CASE(find_kv(s, "llama.block_count")->u = 0, "block_count = 0");
    LLAMA_CASE((find_kv(s, "llama.block_count")->type = GGUF_TYPE_STRING,
                find_kv(s, "llama.block_count")->s = "1"),
               "not an integer");
    LLAMA_CASE(find_kv(s, "llama.block_count")->u = 2, "needs 21 tensors");
    LLAMA_CASE((find_kv(s, "llama.embedding_length")->u = 48,
                drop_kv(s, "llama.rope.dimension_count")),
               "'token_embd.weight' has dimensions [32, 5]");
    LLAMA_CASE(find_kv(s, "llama.attention.head_count")->u = 3,
               "not a multiple of n_heads 3");
    LLAMA_CASE(find_kv(s, "llama.attention.head_count_kv")->u = 2,
               "blk.0.attn_k.weight");
    LLAMA_CASE(find_kv(s, "llama.rope.dimension_count")->u = 8,
               "rope.dimension_count = 8");
    LLAMA_CASE(find_kv(s, "llama.vocab_size")->u = 6, "vocab_size = 6");
    LLAMA_CASE(find_kv(s, "llama.rope.freq_base")->f = -1.0f, "freq_base");
    LLAMA_CASE(find_kv(s, "llama.rope.freq_base")->f = NAN, "freq_base");
    LLAMA_CASE(find_kv(s, "llama.context_length")->u = 0x80000000u,
               "context_length");
    LLAMA_CASE((s->kv[s->n_kv++] = (kvspec){"llama.rope.scaling.type",
                                            GGUF_TYPE_STRING, 0, 0,
                                            "linear"}),
               "rope.scaling.type 'linear'");
    LLAMA_CASE((s->kv[s->n_kv++] = (kvspec){"llama.expert_count",
                                            GGUF_TYPE_UINT32, 8, 0, NULL}),
               "experts");
}

static void test_llama_tensors(void **state)
{
    (void)state;
    LLAMA_CASE(find_t(s, "blk.0.ffn_up.weight")->name = "blk.0.ffn_upx.weight",
               "'blk.0.ffn_up.weight' is missing");
    LLAMA_CASE(drop_t(s, "blk.0.ffn_up.weight"), "needs 12 tensors");
    LLAMA_CASE(drop_t(s, "token_embd.weight"), "token_embd.weight");
    LLAMA_CASE((s->t[s->n_t++] = (tspec){"rope_freqs.weight", 1,
                                         {8, 1, 1, 1}, 0, NULL, 32}),
               "unexpected tensor 'rope_freqs.weight'");
    /* Transposed: [out, in] listed outermost first, as PyTorch would. */
    LLAMA_CASE((find_t(s, "blk.0.attn_k.weight")->ne[0] = KVD,
                find_t(s, "blk.0.attn_k.weight")->ne[1] = DIM),
               "needs [32, 16]");
    LLAMA_CASE((find_t(s, "blk.0.attn_norm.weight")->n_dims = 2),
               "'blk.0.attn_norm.weight' has dimensions [32, 1]");
    LLAMA_CASE((find_t(s, "blk.0.ffn_gate.weight")->type = 6,
                find_t(s, "blk.0.ffn_gate.weight")->nbytes = 32 * 22),
               "'blk.0.ffn_gate.weight' has type Q5_0");
}

/* NaN and infinities are refused at load, naming the tensor and the first
 * bad element in the file's order (q's rows are reordered on loading: the
 * index is still the file's). */
static void test_llama_not_finite(void **state)
{
    (void)state;
    float *bad = malloc(DIM * DIM * sizeof(float));
    assert_non_null(bad);
    LLAMA_CASE((memcpy(bad, s->data, DIM * DIM * 4), bad[37] = NAN,
                bad[600] = INFINITY,
                find_t(s, "blk.0.attn_q.weight")->data = bad),
               "'blk.0.attn_q.weight' (F32) is not finite at element 37 "
               "(row 1, column 5");
    LLAMA_CASE((memcpy(bad, s->data, DIM * DIM * 4), bad[7] = -INFINITY,
                find_t(s, "token_embd.weight")->data = bad),
               "'token_embd.weight' (F32) is not finite at element 7");
    LLAMA_CASE((memcpy(bad, s->data, DIM * DIM * 4), bad[31] = NAN,
                find_t(s, "output_norm.weight")->data = bad),
               "'output_norm.weight' (F32) is not finite at element 31");
    /* An f16 infinity in a Q8_0 block's scale. */
    static unsigned char q8[DIM * 34];
    init_q8_block();
    for (int r = 0; r < DIM; r++) {
        memcpy(q8 + r * 34, q8_block, 34);
        q8[r * 34 + 1] = 0x3C;
    }
    q8[3 * 34 + 1] = 0x7C; /* row 3's scale: +inf */
    q8[3 * 34 + 0] = 0x00;
    LLAMA_CASE((find_t(s, "blk.0.ffn_up.weight")->type = GGUF_DTYPE_Q8_0,
                find_t(s, "blk.0.ffn_up.weight")->data = q8,
                find_t(s, "blk.0.ffn_up.weight")->nbytes = sizeof q8),
               "'blk.0.ffn_up.weight' (Q8_0) is not finite at element 96");
    free(bad);
}

/* ---- tokenizer metadata ---------------------------------------------------- */

/* tokenizer.ggml.* as llama.cpp's converter writes them, each field
 * changeable by a case. A small byte-level vocabulary: a control token,
 * the byte symbols of a, b, c, the merges "a b" (only: "abc" is a token
 * that no merge makes, which tells ignore_merges apart) and an unknown
 * token. */
enum { TOK_N = 7 };
typedef struct tokmeta {
    const char *model, *pre;          /* NULL: the key is absent */
    uint32_t model_type;              /* STRING, or another to mistype */
    const char *tokens[16];
    size_t n_tokens;                  /* 0 with no_tokens: absent */
    int no_tokens;
    uint32_t tokens_elem;             /* STRING, or another */
    const char *merges[8];
    size_t n_merges;
    int no_merges;
    int32_t types[16];
    size_t n_types;                   /* 0: absent */
    int types_as_strings;
    int64_t bos, eos, unk, pad;       /* -1: absent; written as UINT32 */
    int add_bos, add_eos;             /* -1: absent */
    int add_bos_as_u32;
} tokmeta;

static void tok_base(tokmeta *t)
{
    memset(t, 0, sizeof *t);
    t->model = "gpt2";
    t->model_type = GGUF_TYPE_STRING;
    t->pre = "smollm";
    const char *tokens[TOK_N] = {"<|endoftext|>", "a", "b", "c", "ab", "abc",
                                 "<unk>"};
    memcpy(t->tokens, tokens, sizeof tokens);
    t->n_tokens = TOK_N;
    t->tokens_elem = GGUF_TYPE_STRING;
    t->merges[0] = "a b";
    t->n_merges = 1;
    const int32_t types[TOK_N] = {3, 1, 1, 1, 1, 1, 2};
    memcpy(t->types, types, sizeof types);
    t->n_types = TOK_N;
    t->bos = t->eos = 0;
    t->unk = 6;
    t->pad = -1;
    t->add_bos = 0;
    t->add_eos = -1;
}

static void tok_write(const tokmeta *t, gg *g)
{
    gg_begin(g);
    if (t->model) {
        gg_key(g, "tokenizer.ggml.model", t->model_type);
        if (t->model_type == GGUF_TYPE_STRING)
            put_str(&g->b, t->model);
        else
            put_u32(&g->b, 7);
    }
    if (t->pre) {
        gg_key(g, "tokenizer.ggml.pre", GGUF_TYPE_STRING);
        put_str(&g->b, t->pre);
    }
    if (!t->no_tokens) {
        gg_key(g, "tokenizer.ggml.tokens", GGUF_TYPE_ARRAY);
        put_u32(&g->b, t->tokens_elem);
        put_u64(&g->b, t->n_tokens);
        for (size_t i = 0; i < t->n_tokens; i++) {
            if (t->tokens_elem == GGUF_TYPE_STRING)
                put_str(&g->b, t->tokens[i]);
            else
                put_u32(&g->b, (uint32_t)i);
        }
    }
    if (!t->no_merges) {
        gg_key(g, "tokenizer.ggml.merges", GGUF_TYPE_ARRAY);
        put_u32(&g->b, GGUF_TYPE_STRING);
        put_u64(&g->b, t->n_merges);
        for (size_t i = 0; i < t->n_merges; i++)
            put_str(&g->b, t->merges[i]);
    }
    if (t->n_types) {
        gg_key(g, "tokenizer.ggml.token_type", GGUF_TYPE_ARRAY);
        put_u32(&g->b, t->types_as_strings ? GGUF_TYPE_STRING
                                           : GGUF_TYPE_INT32);
        put_u64(&g->b, t->n_types);
        for (size_t i = 0; i < t->n_types; i++) {
            if (t->types_as_strings)
                put_str(&g->b, "1");
            else
                put_u32(&g->b, (uint32_t)t->types[i]);
        }
    }
    const struct { const char *key; int64_t v; } ids[] = {
        {"tokenizer.ggml.bos_token_id", t->bos},
        {"tokenizer.ggml.eos_token_id", t->eos},
        {"tokenizer.ggml.unknown_token_id", t->unk},
        {"tokenizer.ggml.padding_token_id", t->pad},
    };
    for (size_t i = 0; i < 4; i++)
        if (ids[i].v >= 0) {
            gg_key(g, ids[i].key, GGUF_TYPE_UINT32);
            put_u32(&g->b, (uint32_t)ids[i].v);
        }
    const struct { const char *key; int v; } flags[] = {
        {"tokenizer.ggml.add_bos_token", t->add_bos},
        {"tokenizer.ggml.add_eos_token", t->add_eos},
    };
    for (size_t i = 0; i < 2; i++)
        if (flags[i].v >= 0) {
            int as_u32 = i == 0 && t->add_bos_as_u32;
            gg_key(g, flags[i].key, as_u32 ? GGUF_TYPE_UINT32
                                           : GGUF_TYPE_BOOL);
            if (as_u32)
                put_u32(&g->b, (uint32_t)flags[i].v);
            else
                put(&g->b, flags[i].v ? "\x01" : "\x00", 1);
        }
    gg_tensors(g, NULL, 0, 32);
}

/* tok_from_gguf on the metadata; its result, *tok, message in err. */
static int tok_try(const tokmeta *t, tokenizer **tok, char *err,
                   size_t errlen)
{
    gg g;
    tok_write(t, &g);
    gguf_file f;
    char e[512];
    if (gguf_open_memory(&f, g.b.p, g.b.n, "tok.gguf", e, sizeof e))
        fail_msg("the file itself was refused: %s", e);
    int rc = tok_from_gguf(&f, tok, err, errlen);
    gguf_close(&f);
    free(g.b.p);
    return rc;
}

/* The ids of text under the metadata (which must be accepted). */
static size_t tok_ids(const tokmeta *t, const char *text, int add_special,
                      int32_t *ids, size_t cap, size_t *dropped)
{
    tokenizer *tok;
    char err[512];
    if (tok_try(t, &tok, err, sizeof err) != 0)
        fail_msg("refused: %s", err);
    int32_t *got;
    size_t n;
    if (tok_encode(tok, text, strlen(text), add_special, &got, &n, dropped,
                   err, sizeof err) != 0)
        fail_msg("encode: %s", err);
    assert_true(n <= cap);
    memcpy(ids, got, n * sizeof *ids);
    free(got);
    tok_free(tok);
    return n;
}

#define TOK_CASE(change, word)                                               \
    do {                                                                     \
        tokmeta t_;                                                          \
        tok_base(&t_);                                                       \
        tokmeta *t = &t_;                                                    \
        change;                                                              \
        tokenizer *tok_ = (tokenizer *)&t_; /* must be reset to NULL */      \
        char err_[512] = "";                                                 \
        if (tok_try(t, &tok_, err_, sizeof err_) != -1)                      \
            fail_msg("%s: not refused", #change);                            \
        if (!strstr(err_, (word)) || !strstr(err_, "tok.gguf"))              \
            fail_msg("%s: message '%s' lacks '%s'", #change, err_, (word));  \
        if (getenv("GGUF_TEST_VERBOSE"))                                     \
            printf("%s\n", err_);                                            \
        assert_null(tok_);                                                   \
    } while (0)

#define ASSERT_IDS(got, n, ...)                                              \
    do {                                                                     \
        const int32_t want_[] = {__VA_ARGS__};                               \
        size_t nw_ = sizeof want_ / sizeof want_[0];                         \
        assert_int_equal((n), nw_);                                          \
        for (size_t k_ = 0; k_ < nw_; k_++)                                  \
            assert_int_equal((got)[k_], want_[k_]);                          \
    } while (0)

static void test_tok_valid(void **state)
{
    (void)state;
    tokmeta t;
    int32_t ids[16];
    size_t n, dropped;
    tok_base(&t);
    /* "a b" merges; nothing makes "abc" from "ab c". */
    n = tok_ids(&t, "abc", 1, ids, 16, &dropped);
    ASSERT_IDS(ids, n, 4, 3);
    assert_int_equal(dropped, 0);
    /* The control token is found in the text first. */
    n = tok_ids(&t, "b<|endoftext|>ab", 1, ids, 16, &dropped);
    ASSERT_IDS(ids, n, 2, 0, 4);
    /* 'd' has no symbol: the unknown token, whose type is UNKNOWN. */
    n = tok_ids(&t, "abd", 1, ids, 16, &dropped);
    ASSERT_IDS(ids, n, 4, 6);
    assert_int_equal(dropped, 0);
    /* An unknown_token_id that names a control token (SmolLM2's 0) is
     * not an unknown token: the byte is left out and counted. */
    t.unk = 0;
    n = tok_ids(&t, "abd", 1, ids, 16, &dropped);
    ASSERT_IDS(ids, n, 4);
    assert_int_equal(dropped, 1);
    t.unk = -1;
    n = tok_ids(&t, "dabd", 1, ids, 16, &dropped);
    ASSERT_IDS(ids, n, 4);
    assert_int_equal(dropped, 2);
    /* Llama 3's pre-tokenizer, under each of llama.cpp's names, takes a
     * pre-token that is a token as it is (ignore_merges); GPT-2's does
     * not. */
    const char *llama3[] = {"llama-bpe", "llama3", "llama-v3"};
    for (int i = 0; i < 3; i++) {
        t.pre = llama3[i];
        n = tok_ids(&t, "abc", 1, ids, 16, &dropped);
        ASSERT_IDS(ids, n, 5);
    }
    const char *gpt2[] = {"gpt2", "gpt-2", "default", NULL};
    for (int i = 0; i < 4; i++) {
        t.pre = gpt2[i];
        n = tok_ids(&t, "abc", 1, ids, 16, &dropped);
        ASSERT_IDS(ids, n, 4, 3);
    }
    /* bos and eos added only as the metadata says, and only with
     * add_special. */
    tok_base(&t);
    n = tok_ids(&t, "ab", 1, ids, 16, &dropped);
    ASSERT_IDS(ids, n, 4);
    t.add_bos = 1;
    t.eos = 6;
    t.add_eos = 1;
    n = tok_ids(&t, "ab", 1, ids, 16, &dropped);
    ASSERT_IDS(ids, n, 0, 4, 6);
    n = tok_ids(&t, "ab", 0, ids, 16, &dropped);
    ASSERT_IDS(ids, n, 4);
    /* Without token types every token is normal: "<|endoftext|>" is then
     * no added token, and has no byte symbols to be made of. */
    tok_base(&t);
    t.n_types = 0;
    n = tok_ids(&t, "<|endoftext|>", 1, ids, 16, &dropped);
    assert_int_equal(n, 0);
    assert_int_equal(dropped, 13);
    /* The accepted tokenizer reports what it is. */
    tok_base(&t);
    tokenizer *tok;
    char err[512], desc[256];
    assert_int_equal(tok_try(&t, &tok, err, sizeof err), 0);
    assert_int_equal(tok_vocab_size(tok), TOK_N);
    assert_int_equal(tok_bos_id(tok), 0);
    assert_int_equal(tok_unk_id(tok), 6);
    assert_int_equal(tok_pad_id(tok), -1);
    tok_describe(tok, desc, sizeof desc);
    assert_string_equal(desc, "byte-level BPE, pre-tokenizer smollm, 7 "
                              "tokens, 1 merges, bos 0, eos 0, adds no "
                              "special tokens");
    tok_free(tok);
}

static void test_tok_absent(void **state)
{
    (void)state;
    tokmeta t;
    tokenizer *tok = (tokenizer *)&t;
    char err[512];
    tok_base(&t);
    t.model = NULL;
    assert_int_equal(tok_try(&t, &tok, err, sizeof err), 1);
    assert_null(tok);
    tok_base(&t);
    t.model = "none";
    tok = (tokenizer *)&t;
    assert_int_equal(tok_try(&t, &tok, err, sizeof err), 1);
    assert_null(tok);
}

static void test_tok_refused(void **state)
{
    (void)state;
    TOK_CASE(t->model = "llama", "SentencePiece");
    TOK_CASE(t->model = "bert", "'bert' is not implemented");
    TOK_CASE(t->model_type = GGUF_TYPE_UINT32, "not a STRING");
    TOK_CASE(t->pre = "qwen2", "tokenizer.ggml.pre 'qwen2' is not");
    TOK_CASE(t->no_tokens = 1, "'tokenizer.ggml.tokens' is missing");
    TOK_CASE(t->tokens_elem = GGUF_TYPE_UINT32, "array of UINT32, not of "
             "STRING");
    TOK_CASE(t->n_tokens = 0, "tokenizer.ggml.tokens is empty");
    TOK_CASE(t->tokens[2] = "a", "tokens 1 and 2 are both 'a'");
    TOK_CASE(t->tokens[3] = "", "token 3 is empty");
    TOK_CASE(t->no_merges = 1, "tokenizer.ggml.merges is missing");
    TOK_CASE(t->merges[0] = "a x", "'x' is not a token");
    TOK_CASE(t->merges[0] = "ab", "not two tokens");
    TOK_CASE((t->merges[1] = "b c", t->n_merges = 2),
             "the merged token is not in the vocabulary");
    TOK_CASE(t->n_types = 3, "token_type has 3 entries for 7 tokens");
    TOK_CASE(t->types[4] = 9, "token 4 has type 9");
    TOK_CASE(t->types_as_strings = 1, "an array of integers expected");
    TOK_CASE(t->bos = 7, "tokenizer.ggml.bos_token_id = 7 is out of range "
             "(7 tokens)");
    TOK_CASE(t->eos = 4294967295u, "eos_token_id = 4294967295 is out of "
             "range");
    TOK_CASE(t->unk = 100, "unknown_token_id = 100 is out of range");
    TOK_CASE(t->pad = 8, "padding_token_id = 8 is out of range");
    TOK_CASE((t->bos = -1, t->add_bos = 1), "add_bos_token is true but "
             "there is no tokenizer.ggml.bos_token_id");
    TOK_CASE((t->eos = -1, t->add_eos = 1), "add_eos_token is true");
    TOK_CASE((t->add_bos = 1, t->add_bos_as_u32 = 1), "not a BOOL");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_base_reads),
        cmocka_unit_test(test_truncated_everywhere),
        cmocka_unit_test(test_header_lies),
        cmocka_unit_test(test_metadata_lies),
        cmocka_unit_test(test_duplicates_and_types),
        cmocka_unit_test(test_tensor_lies),
        cmocka_unit_test(test_unsupported_type),
        cmocka_unit_test(test_not_files),
        cmocka_unit_test(test_llama_valid),
        cmocka_unit_test(test_llama_keys),
        cmocka_unit_test(test_llama_tensors),
        cmocka_unit_test(test_llama_not_finite),
        cmocka_unit_test(test_tok_valid),
        cmocka_unit_test(test_tok_absent),
        cmocka_unit_test(test_tok_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
