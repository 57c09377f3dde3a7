/* Encoding and decoding (tokenizer.h), in Hugging Face tokenizers' order:
 * the added tokens are found first (the not-normalized ones, then the
 * normalized ones in the gaps; each pass leftmost-longest); every gap is
 * split by the pre-tokenizer; every piece, as bytes, starts as one symbol
 * per byte and is merged pair by pair, the lowest-ranked pair first
 * (leftmost among equals), with a heap, so a long piece costs
 * O(n log n). */
#include "tok_internal.h"

#include <stdlib.h>
#include <string.h>

typedef struct candidate {
    uint32_t rank;
    uint32_t pos;   /* the left symbol */
    int32_t merged; /* the token the pair was found to merge into */
} candidate;

typedef struct encoder {
    const tokenizer *t;
    int32_t *ids;
    size_t n, cap;
    /* The symbols of the current piece: a linked list over its bytes;
     * a symbol merged into its left neighbour has id -1. */
    struct symbol {
        int32_t id, prev, next;
    } *sym;
    size_t sym_cap;
    candidate *heap;
    size_t heap_n, heap_cap;
    char *mapped; /* the piece as byte symbols (ignore_merges) */
    size_t mapped_cap;
    size_t dropped; /* bytes without a token (nor an unknown token) */
    char *err;
    size_t errlen;
    int failed;
} encoder;

static void fail_oom(encoder *e)
{
    if (!e->failed)
        tok_fail(e->err, e->errlen, "tokenizer: out of memory while encoding");
    e->failed = 1;
}

static int grow(void **p, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap)
        return 0;
    size_t c = *cap ? *cap : 64;
    while (c < need) {
        if (c > SIZE_MAX / 2 / elem)
            return -1;
        c *= 2;
    }
    void *q = realloc(*p, c * elem);
    if (!q)
        return -1;
    *p = q;
    *cap = c;
    return 0;
}

static void emit(encoder *e, int32_t id)
{
    if (e->failed)
        return;
    if (grow((void **)&e->ids, &e->cap, e->n + 1, sizeof *e->ids)) {
        fail_oom(e);
        return;
    }
    e->ids[e->n++] = id;
}

/* ---- the heap of candidate merges, ordered by (rank, pos) ------------ */

static int before(const candidate *a, const candidate *b)
{
    return a->rank != b->rank ? a->rank < b->rank : a->pos < b->pos;
}

static void heap_push(encoder *e, candidate c)
{
    if (grow((void **)&e->heap, &e->heap_cap, e->heap_n + 1,
             sizeof *e->heap)) {
        fail_oom(e);
        return;
    }
    size_t i = e->heap_n++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!before(&c, &e->heap[parent]))
            break;
        e->heap[i] = e->heap[parent];
        i = parent;
    }
    e->heap[i] = c;
}

static candidate heap_pop(encoder *e)
{
    candidate top = e->heap[0], last = e->heap[--e->heap_n];
    size_t i = 0, n = e->heap_n;
    for (;;) {
        size_t child = 2 * i + 1;
        if (child >= n)
            break;
        if (child + 1 < n && before(&e->heap[child + 1], &e->heap[child]))
            child++;
        if (!before(&e->heap[child], &last))
            break;
        e->heap[i] = e->heap[child];
        i = child;
    }
    if (n > 0)
        e->heap[i] = last;
    return top;
}

/* Queues the pair starting at symbol pos (when it has a merge). */
static void consider(encoder *e, int32_t pos)
{
    int32_t right = e->sym[pos].next;
    uint32_t rank;
    int32_t merged;
    if (right >= 0 &&
        tok_merge_of(e->t, e->sym[pos].id, e->sym[right].id, &rank, &merged))
        heap_push(e, (candidate){rank, (uint32_t)pos, merged});
}

/* ---- one piece ---------------------------------------------------------- */

static int32_t whole_piece(encoder *e, const unsigned char *w, size_t n)
{
    if (grow((void **)&e->mapped, &e->mapped_cap, 2 * n, 1)) {
        fail_oom(e);
        return -1;
    }
    size_t m = 0;
    for (size_t i = 0; i < n; i++)
        m += tok_utf8_put(tok_byte_char(w[i]), e->mapped + m);
    return tok_lookup(e->t, e->mapped, m);
}

static void encode_piece(encoder *e, const unsigned char *w, size_t n)
{
    const tokenizer *t = e->t;
    if (e->failed || n == 0)
        return;
    if (n > INT32_MAX) { /* symbol links are 32-bit */
        tok_fail(e->err, e->errlen, "tokenizer: a piece of %zu bytes", n);
        e->failed = 1;
        return;
    }
    if (t->ignore_merges && n > 1) {
        int32_t id = whole_piece(e, w, n);
        if (id >= 0) {
            emit(e, id);
            return;
        }
    }
    if (grow((void **)&e->sym, &e->sym_cap, n, sizeof *e->sym)) {
        fail_oom(e);
        return;
    }
    /* A byte whose symbol is not a token is the unknown token, or, when
     * there is none, left out: its neighbours become adjacent and may
     * merge (Hugging Face's BPE does the same). */
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        int32_t id = t->byte_token[w[i]];
        if (id < 0)
            id = t->unk_id;
        if (id < 0) {
            e->dropped++;
            continue;
        }
        e->sym[m].id = id;
        e->sym[m].prev = (int32_t)m - 1;
        e->sym[m].next = (int32_t)m + 1;
        m++;
    }
    if (m == 0)
        return;
    e->sym[m - 1].next = -1;
    e->heap_n = 0;
    for (size_t i = 0; i + 1 < m; i++)
        consider(e, (int32_t)i);
    while (e->heap_n > 0 && !e->failed) {
        candidate c = heap_pop(e);
        struct symbol *s = &e->sym[c.pos];
        /* Stale: the left symbol was merged into its neighbour, is last
         * now, or the pair it makes now merges into something else. */
        if (s->id < 0 || s->next < 0)
            continue;
        struct symbol *r = &e->sym[s->next];
        uint32_t rank;
        int32_t merged;
        if (!tok_merge_of(t, s->id, r->id, &rank, &merged) ||
            merged != c.merged)
            continue;
        s->id = merged;
        r->id = -1;
        s->next = r->next;
        if (s->next >= 0)
            e->sym[s->next].prev = (int32_t)c.pos;
        if (s->prev >= 0)
            consider(e, s->prev);
        consider(e, (int32_t)c.pos);
    }
    for (int32_t i = 0; i >= 0 && !e->failed; i = e->sym[i].next)
        emit(e, e->sym[i].id);
}

/* ---- text between added tokens, and the added tokens ------------------- */

static void encode_plain(encoder *e, const unsigned char *s, size_t len)
{
    tok_splitter sp;
    size_t b, end;
    for (tok_split_begin(&sp, e->t->pre, s, len);
         !e->failed && tok_split_next(&sp, &b, &end);)
        encode_piece(e, s + b, end - b);
}

static void encode_pass(encoder *e, const unsigned char *s, size_t len,
                        int pass)
{
    const tokenizer *t = e->t;
    if (pass == 2 || t->added_first[pass][0] == t->added_first[pass][256]) {
        if (pass < 2)
            encode_pass(e, s, len, pass + 1);
        else
            encode_plain(e, s, len);
        return;
    }
    size_t gap = 0, p = 0;
    while (p < len && !e->failed) {
        size_t lo = t->added_first[pass][s[p]];
        size_t hi = t->added_first[pass][s[p] + 1];
        size_t found = 0;
        for (size_t k = lo; k < hi; k++) { /* longest first */
            int32_t id = t->added[k];
            size_t n = t->offset[id + 1] - t->offset[id];
            const char *tok = t->text + t->offset[id];
            if (n <= len - p && memcmp(s + p, tok, n) == 0) {
                encode_pass(e, s + gap, p - gap, pass + 1);
                emit(e, id);
                found = n;
                break;
            }
        }
        if (found) {
            p += found;
            gap = p;
        } else {
            p++;
        }
    }
    encode_pass(e, s + gap, len - gap, pass + 1);
}

int tok_encode(const tokenizer *t, const void *text, size_t len,
               int add_special, int32_t **ids, size_t *n_ids,
               size_t *dropped, char *err, size_t errlen)
{
    *ids = NULL;
    *n_ids = 0;
    if (dropped)
        *dropped = 0;
    if (len > 0 && !text)
        return tok_fail(err, errlen, "tokenizer: no text");
    encoder e = {0};
    e.t = t;
    e.err = err;
    e.errlen = errlen;
    if (add_special && t->add_bos)
        emit(&e, t->bos_id);
    if (len > 0)
        encode_pass(&e, text, len, 0);
    if (add_special && t->add_eos)
        emit(&e, t->eos_id);
    free(e.sym);
    free(e.heap);
    free(e.mapped);
    if (e.failed) {
        free(e.ids);
        return -1;
    }
    if (!e.ids) { /* an empty result is still an array to free() */
        e.ids = malloc(sizeof *e.ids);
        if (!e.ids)
            return tok_fail(err, errlen, "tokenizer: out of memory");
    }
    *ids = e.ids;
    *n_ids = e.n;
    if (dropped)
        *dropped = e.dropped;
    return 0;
}

int tok_decode(const tokenizer *t, const int32_t *ids, size_t n,
               char **bytes, size_t *len, char *err, size_t errlen)
{
    *bytes = NULL;
    *len = 0;
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        if (ids[i] < 0 || (size_t)ids[i] >= t->n_tokens)
            return tok_fail(err, errlen,
                            "tokenizer: id %d at %zu is out of range "
                            "(vocabulary of %zu tokens)", (int)ids[i], i,
                            t->n_tokens);
        total += t->dec_offset[ids[i] + 1] - t->dec_offset[ids[i]];
    }
    char *out = malloc(total + 1);
    if (!out)
        return tok_fail(err, errlen, "tokenizer: out of memory for %zu bytes",
                        total);
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        size_t a = t->dec_offset[ids[i]], b = t->dec_offset[ids[i] + 1];
        memcpy(out + o, t->decoded + a, b - a);
        o += b - a;
    }
    out[o] = '\0';
    *bytes = out;
    *len = o;
    return 0;
}
