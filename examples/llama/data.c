#include "data.h"
#include "errmsg.h"

#include "fileio.h"

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void data_free(data_ids *d)
{
    if (!d)
        return;
    if (d->owned)
        free(d->ids);
    d->ids = NULL;
    d->n = 0;
    d->owned = 0;
}

void data_encode_bytes(const unsigned char *text, size_t len, int32_t *ids)
{
    for (size_t i = 0; i < len; i++)
        ids[i] = text[i];
}

int data_decode_bytes(const int32_t *ids, size_t n, unsigned char *out,
                      char *err, size_t errlen)
{
    for (size_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] > 255)
            return llama_fail(err, errlen, "id %ld at position %zu is not a byte "
                        "(0..255)", (long)ids[i], i);
    for (size_t i = 0; i < n; i++)
        out[i] = (unsigned char)ids[i];
    return 0;
}

/* Reads a whole file; *len its size. */
static unsigned char *read_all(const char *path, size_t *len, char *err,
                               size_t errlen)
{
    char *buf;
    if (file_read_all(path, SIZE_MAX - 1, &buf, len, err, errlen) != 0)
        return NULL;
    return (unsigned char *)buf;
}

int data_load_text(const char *path, data_ids *out, char *err, size_t errlen)
{
    size_t len;
    unsigned char *text = read_all(path, &len, err, errlen);
    if (!text)
        return -1;
    if (len == 0) {
        free(text);
        return llama_fail(err, errlen, "%s is empty", path);
    }
    int32_t *ids = malloc(len * sizeof *ids);
    if (!ids) {
        free(text);
        return llama_fail(err, errlen, "out of memory for %zu ids", len);
    }
    data_encode_bytes(text, len, ids);
    free(text);
    *out = (data_ids){ids, len, 1};
    return 0;
}

int data_load_tokenized(const char *path, const tokenizer *tok,
                        data_ids *out, size_t *n_bytes, size_t *dropped,
                        char *err, size_t errlen)
{
    size_t len, lost = 0, n;
    unsigned char *text = read_all(path, &len, err, errlen);
    if (!text)
        return -1;
    if (len == 0) {
        free(text);
        return llama_fail(err, errlen, "%s is empty", path);
    }
    int32_t *ids;
    char terr[512];
    int rc = tok_encode(tok, text, len, 1, &ids, &n, &lost, terr,
                        sizeof terr);
    free(text);
    if (rc != 0)
        return llama_fail(err, errlen, "%s: %s", path, terr);
    if (n == 0) {
        free(ids);
        return llama_fail(err, errlen, "%s: no token in its %zu bytes (none has a "
                    "symbol in the vocabulary)", path, len);
    }
    *out = (data_ids){ids, n, 1};
    if (n_bytes)
        *n_bytes = len;
    if (dropped)
        *dropped = lost;
    return 0;
}

int data_load_ids(const char *path, int bits, data_ids *out, char *err,
                  size_t errlen)
{
    if (bits != 16 && bits != 32)
        return llama_fail(err, errlen, "id bits must be 16 or 32, not %d", bits);
    size_t width = (size_t)bits / 8, len;
    unsigned char *raw = read_all(path, &len, err, errlen);
    if (!raw)
        return -1;
    if (len == 0 || len % width != 0) {
        free(raw);
        return llama_fail(err, errlen, "%s has %zu bytes: not a positive multiple "
                    "of %zu (%d-bit ids)", path, len, width, bits);
    }
    size_t n = len / width;
    int32_t *ids = malloc(n * sizeof *ids);
    if (!ids) {
        free(raw);
        return llama_fail(err, errlen, "out of memory for %zu ids", n);
    }
    for (size_t i = 0; i < n; i++) {
        const unsigned char *p = raw + i * width;
        uint32_t v = (uint32_t)p[0] | (uint32_t)p[1] << 8;
        if (bits == 32)
            v |= (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
        if (v > INT32_MAX) {
            free(raw);
            free(ids);
            return llama_fail(err, errlen, "%s: id %lu at position %zu is too "
                        "large", path, (unsigned long)v, i);
        }
        ids[i] = (int32_t)v;
    }
    free(raw);
    *out = (data_ids){ids, n, 1};
    return 0;
}

int32_t data_max_id(const data_ids *d)
{
    int32_t mx = -1;
    for (size_t i = 0; i < d->n; i++)
        if (d->ids[i] > mx)
            mx = d->ids[i];
    return mx;
}

int data_split(const data_ids *all, double heldout, size_t min_len,
               data_ids *train, data_ids *held, char *err, size_t errlen)
{
    if (!(heldout > 0.0 && heldout < 1.0))
        return llama_fail(err, errlen, "held-out fraction %g is not in (0, 1)",
                    heldout);
    size_t nh = (size_t)llround((double)all->n * heldout);
    if (nh < min_len || all->n - nh < min_len)
        return llama_fail(err, errlen, "%zu ids split %zu/%zu: each part needs at "
                    "least %zu", all->n, all->n - nh, nh, min_len);
    *train = (data_ids){all->ids, all->n - nh, 0};
    *held = (data_ids){all->ids + (all->n - nh), nh, 0};
    return 0;
}

/* splitmix64's finaliser: a bijective mixer of 64 bits. */
static uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

uint64_t data_hash(uint64_t seed, uint64_t step, uint64_t index)
{
    uint64_t h = mix64(seed + 0x9e3779b97f4a7c15ull);
    h = mix64(h ^ (step + 0x632be59bd9b4e019ull));
    return mix64(h ^ (index + 0x85157af5a2c8f3b1ull));
}

int data_batch(const data_ids *d, int B, int T, uint64_t seed, uint64_t step,
               int32_t *inputs, int32_t *targets, char *err, size_t errlen)
{
    if (B < 1 || T < 1)
        return llama_fail(err, errlen, "batch %d x %d: both must be >= 1", B, T);
    if (d->n < (size_t)T + 1)
        return llama_fail(err, errlen, "%zu ids are fewer than one window of %d",
                    d->n, T + 1);
    uint64_t starts = (uint64_t)(d->n - (size_t)T);
    for (int b = 0; b < B; b++) {
        size_t off = (size_t)(data_hash(seed, step, (uint64_t)b) % starts);
        memcpy(inputs + (size_t)b * T, d->ids + off, (size_t)T * sizeof *inputs);
        memcpy(targets + (size_t)b * T, d->ids + off + 1,
               (size_t)T * sizeof *targets);
    }
    return 0;
}

/* ---- the synthetic language ------------------------------------------ */

typedef struct gen {
    uint64_t state;
    char *buf;
    size_t len, cap;
} gen;

static uint64_t gen_next(gen *g)
{
    return mix64(g->state += 0x9e3779b97f4a7c15ull);
}

static int gen_pick(gen *g, int n)
{
    return (int)(gen_next(g) % (uint64_t)n);
}

static void put(gen *g, const char *s)
{
    for (; *s && g->len < g->cap; s++)
        g->buf[g->len++] = *s;
}

static const char *const nouns[][2] = {
    {"cat", "cats"}, {"dog", "dogs"}, {"bird", "birds"}, {"child", "children"},
    {"fox", "foxes"}, {"horse", "horses"}, {"mouse", "mice"}, {"girl", "girls"},
};
static const char *const verbs[][2] = {
    {"runs", "run"}, {"sleeps", "sleep"}, {"sings", "sing"}, {"jumps", "jump"},
    {"eats", "eat"}, {"waits", "wait"},
};
static const char *const preps[] = {"near", "behind", "with"};
#define COUNT(a) (int)(sizeof(a) / sizeof((a)[0]))

/* "the cat near the dogs runs." as words, into w[]; returns the count. */
static int agreement_words(gen *g, const char *w[8])
{
    int plural = gen_pick(g, 2), n = 0;
    w[n++] = "the";
    w[n++] = nouns[gen_pick(g, COUNT(nouns))][plural];
    if (gen_pick(g, 2)) { /* an attractor noun of either number */
        w[n++] = preps[gen_pick(g, COUNT(preps))];
        w[n++] = "the";
        w[n++] = nouns[gen_pick(g, COUNT(nouns))][gen_pick(g, 2)];
    }
    w[n++] = verbs[gen_pick(g, COUNT(verbs))][plural];
    return n;
}

static void sentence(gen *g, int variant)
{
    char tmp[64];
    int kind = gen_pick(g, 4);
    if (kind <= 1) {
        const char *w[8];
        int n = agreement_words(g, w);
        for (int i = 0; i < n; i++) {
            put(g, i ? " " : "");
            put(g, w[variant == DATA_SYNTH_SHIFTED ? n - 1 - i : i]);
        }
        put(g, ".\n");
    } else if (kind == 2) {
        int a = gen_pick(g, 10), b = gen_pick(g, 10);
        if (variant == DATA_SYNTH_SHIFTED) { /* a - b with a >= b */
            if (a < b) { int t = a; a = b; b = t; }
            snprintf(tmp, sizeof tmp, "%d-%d=%d.\n", a, b, a - b);
        } else {
            snprintf(tmp, sizeof tmp, "%d+%d=%d.\n", a, b, a + b);
        }
        put(g, tmp);
    } else {
        int len = 2 + gen_pick(g, 4), rev = gen_pick(g, 2);
        char word[8], out[16];
        for (int i = 0; i < len; i++)
            word[i] = (char)('a' + gen_pick(g, 26));
        word[len] = '\0';
        if (variant == DATA_SYNTH_SHIFTED) {
            for (int i = 0; i < len; i++)
                out[2 * i] = out[2 * i + 1] = word[i];
            out[2 * len] = '\0';
            snprintf(tmp, sizeof tmp, "dup %s>%s.\n", word, out);
        } else {
            for (int i = 0; i < len; i++)
                out[i] = rev ? word[len - 1 - i] : word[i];
            out[len] = '\0';
            snprintf(tmp, sizeof tmp, "%s %s>%s.\n", rev ? "rev" : "copy",
                     word, out);
        }
        put(g, tmp);
    }
}

int data_synthetic(uint64_t seed, int variant, size_t nbytes, data_ids *out,
                   char *err, size_t errlen)
{
    if (variant != DATA_SYNTH_BASE && variant != DATA_SYNTH_SHIFTED)
        return llama_fail(err, errlen, "unknown synthetic variant %d", variant);
    if (nbytes == 0)
        return llama_fail(err, errlen, "synthetic corpus of 0 bytes");
    gen g = {seed * 0xd1b54a32d192ed03ull + (uint64_t)variant, NULL, 0,
             nbytes};
    g.buf = malloc(nbytes);
    int32_t *ids = malloc(nbytes * sizeof *ids);
    if (!g.buf || !ids) {
        free(g.buf);
        free(ids);
        return llama_fail(err, errlen, "out of memory for %zu bytes", nbytes);
    }
    while (g.len < nbytes)
        sentence(&g, variant);
    data_encode_bytes((const unsigned char *)g.buf, nbytes, ids);
    free(g.buf);
    *out = (data_ids){ids, nbytes, 1};
    return 0;
}
