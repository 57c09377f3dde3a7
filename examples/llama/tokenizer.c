/* Building a tokenizer from its description (tokenizer.h): every part of
 * the spec is checked and copied, then the lookup tables are made (token
 * strings to ids, merge pairs to ranks, byte symbols, added tokens). */
#include "tok_internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int tok_fail(char *err, size_t errlen, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return -1;
}

const char *tok_quote(char *out, size_t outlen, const char *s, size_t len)
{
    size_t o = 0;
    if (outlen == 0)
        return out;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        char piece[8];
        int n;
        if (c >= 0x20 && c < 0x7F)
            n = snprintf(piece, sizeof piece, "%c", c);
        else
            n = snprintf(piece, sizeof piece, "\\x%02X", c);
        if (o + (size_t)n + 4 >= outlen) { /* room for "..." and the NUL */
            snprintf(out + o, outlen - o, "...");
            return out;
        }
        memcpy(out + o, piece, (size_t)n);
        o += (size_t)n;
    }
    out[o] = '\0';
    return out;
}

void tok_spec_init(tok_spec *spec)
{
    memset(spec, 0, sizeof *spec);
    spec->bos_id = spec->eos_id = spec->unk_id = spec->pad_id = -1;
}

/* ---- GPT-2's byte-to-character map ------------------------------------ */

/* The printable bytes ('!'..'~', 0xA1..0xAC, 0xAE..0xFF) stand for
 * themselves; the others, in increasing order, for U+0100, U+0101, ...
 * so that every byte is a visible character. */
uint32_t tok_byte_char(unsigned char b)
{
    if ((b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE)
        return b;
    uint32_t n = 0; /* the non-printable bytes below b */
    for (unsigned c = 0; c < b; c++)
        if (!((c >= '!' && c <= '~') || (c >= 0xA1 && c <= 0xAC) ||
              c >= 0xAE))
            n++;
    return 256 + n;
}

/* ---- hashing ---------------------------------------------------------- */

static uint64_t hash_bytes(const char *s, size_t len)
{
    uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a */
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)s[i];
        h *= 0x100000001b3ull;
    }
    return h ^ (h >> 29);
}

static uint64_t hash_pair(uint64_t key)
{
    key *= 0x9E3779B97F4A7C15ull;
    return key ^ (key >> 31);
}

static size_t table_size_for(size_t n)
{
    size_t cap = 16;
    while (cap < 2 * n)
        cap *= 2;
    return cap;
}

int32_t tok_lookup(const tokenizer *t, const char *s, size_t len)
{
    size_t i = (size_t)hash_bytes(s, len) & t->vocab_mask;
    for (;;) {
        uint32_t slot = t->vocab_slots[i];
        if (slot == 0)
            return -1;
        size_t id = slot - 1;
        size_t n = t->offset[id + 1] - t->offset[id];
        if (n == len && memcmp(t->text + t->offset[id], s, len) == 0)
            return (int32_t)id;
        i = (i + 1) & t->vocab_mask;
    }
}

static uint64_t pair_key(int32_t left, int32_t right)
{
    return (uint64_t)(uint32_t)left << 32 | (uint32_t)right;
}

int tok_merge_of(const tokenizer *t, int32_t left, int32_t right,
                 uint32_t *rank, int32_t *merged)
{
    if (t->mtab_mask == 0)
        return 0;
    uint64_t key = pair_key(left, right);
    size_t i = (size_t)hash_pair(key) & t->mtab_mask;
    for (;;) {
        uint64_t k = t->mtab_key[i];
        if (k == TOK_NO_PAIR)
            return 0;
        if (k == key) {
            *rank = t->mtab_rank[i];
            *merged = t->mtab_new[i];
            return 1;
        }
        i = (i + 1) & t->mtab_mask;
    }
}

int tok_is_added_type(int32_t type)
{
    return type == TOK_TYPE_CONTROL || type == TOK_TYPE_USER_DEFINED ||
           type == TOK_TYPE_UNKNOWN;
}

/* ---- accessors ---------------------------------------------------------- */

void tok_free(tokenizer *t)
{
    if (!t)
        return;
    free(t->text);
    free(t->offset);
    free(t->decoded);
    free(t->dec_offset);
    free(t->types);
    free(t->scores);
    free(t->normalized);
    free(t->vocab_slots);
    free(t->merge_left);
    free(t->merge_right);
    free(t->merge_live);
    free(t->mtab_key);
    free(t->mtab_rank);
    free(t->mtab_new);
    free(t->added);
    free(t);
}

size_t tok_vocab_size(const tokenizer *t) { return t->n_tokens; }
int32_t tok_bos_id(const tokenizer *t) { return t->bos_id; }
int32_t tok_eos_id(const tokenizer *t) { return t->eos_id; }
int32_t tok_unk_id(const tokenizer *t) { return t->unk_id; }
int32_t tok_pad_id(const tokenizer *t) { return t->pad_id; }

const char *tok_token(const tokenizer *t, int32_t id, size_t *len)
{
    if (id < 0 || (size_t)id >= t->n_tokens)
        return NULL;
    if (len)
        *len = t->offset[id + 1] - t->offset[id];
    return t->text + t->offset[id];
}

/* ---- building ----------------------------------------------------- */

void tok_describe(const tokenizer *t, char *out, size_t outlen)
{
    if (!out || outlen == 0)
        return;
    static const char *const pre_names[] = {"gpt2", "llama-bpe", "smollm"};
    size_t merges = 0;
    for (size_t r = 0; r < t->n_merges; r++)
        merges += t->merge_live[r];
    char bos[32] = "no bos", eos[32] = "no eos";
    if (t->bos_id >= 0)
        snprintf(bos, sizeof bos, "bos %d", (int)t->bos_id);
    if (t->eos_id >= 0)
        snprintf(eos, sizeof eos, "eos %d", (int)t->eos_id);
    snprintf(out, outlen, "byte-level BPE, pre-tokenizer %s, %zu tokens, "
             "%zu merges, %s, %s, adds %s", pre_names[t->pre], t->n_tokens,
             merges, bos, eos,
             t->add_bos && t->add_eos ? "bos and eos"
             : t->add_bos             ? "bos"
             : t->add_eos             ? "eos"
                                      : "no special tokens");
}

static int known_pre(const char *name, tok_pre *pre)
{
    if (!name || strcmp(name, "default") == 0 || strcmp(name, "gpt2") == 0)
        *pre = TOK_PRE_GPT2;
    else if (strcmp(name, "llama-bpe") == 0)
        *pre = TOK_PRE_LLAMA_BPE;
    else if (strcmp(name, "smollm") == 0)
        *pre = TOK_PRE_SMOLLM;
    else
        return 0;
    return 1;
}

static int copy_tokens(tokenizer *t, const tok_spec *spec, char *err,
                       size_t errlen)
{
    size_t n = spec->n_tokens, total = 0;
    char q[64];
    for (size_t i = 0; i < n; i++) {
        const tok_str *s = &spec->tokens[i];
        if (s->len == 0)
            return tok_fail(err, errlen, "tokenizer: token %zu is empty", i);
        if (!s->ptr)
            return tok_fail(err, errlen, "tokenizer: token %zu has no bytes",
                            i);
        if (s->len > TOK_MAX_TOKEN_BYTES)
            return tok_fail(err, errlen,
                            "tokenizer: token %zu is %zu bytes long (at most "
                            "%d)", i, s->len, TOK_MAX_TOKEN_BYTES);
        total += s->len;
    }
    t->text = malloc(total ? total : 1);
    t->offset = malloc((n + 1) * sizeof *t->offset);
    t->types = malloc(n * sizeof *t->types);
    t->normalized = malloc(n);
    size_t cap = table_size_for(n);
    t->vocab_slots = calloc(cap, sizeof *t->vocab_slots);
    if (!t->text || !t->offset || !t->types || !t->normalized ||
        !t->vocab_slots)
        return tok_fail(err, errlen, "tokenizer: out of memory for %zu tokens",
                        n);
    t->vocab_mask = cap - 1;
    size_t off = 0;
    for (size_t i = 0; i < n; i++) {
        const tok_str *s = &spec->tokens[i];
        t->offset[i] = off;
        memcpy(t->text + off, s->ptr, s->len);
        off += s->len;
        int32_t type = spec->token_types ? spec->token_types[i]
                                         : TOK_TYPE_NORMAL;
        if (type < TOK_TYPE_NORMAL || type > TOK_TYPE_BYTE)
            return tok_fail(err, errlen,
                            "tokenizer: token %zu has type %d (the GGUF token "
                            "types are 1..6)", i, (int)type);
        t->types[i] = type;
        t->normalized[i] = spec->normalized ? spec->normalized[i] != 0
                                            : type == TOK_TYPE_USER_DEFINED;
    }
    t->offset[n] = off;
    t->n_tokens = n;
    for (size_t i = 0; i < n; i++) {
        const char *s = t->text + t->offset[i];
        size_t len = t->offset[i + 1] - t->offset[i];
        int32_t other = tok_lookup(t, s, len);
        if (other >= 0)
            return tok_fail(err, errlen,
                            "tokenizer: tokens %d and %zu are both '%s'",
                            (int)other, i, tok_quote(q, sizeof q, s, len));
        size_t h = (size_t)hash_bytes(s, len) & t->vocab_mask;
        while (t->vocab_slots[h])
            h = (h + 1) & t->vocab_mask;
        t->vocab_slots[h] = (uint32_t)i + 1;
    }
    if (spec->scores) {
        t->scores = malloc(n * sizeof *t->scores);
        if (!t->scores)
            return tok_fail(err, errlen, "tokenizer: out of memory");
        memcpy(t->scores, spec->scores, n * sizeof *t->scores);
    }
    return 0;
}

/* The separator of "left right": the first space after the first byte
 * (so a left part may itself be a space). */
static int split_merge(const tok_str *m, size_t *sep)
{
    for (size_t i = 1; i + 1 < m->len; i++)
        if (m->ptr[i] == ' ') {
            *sep = i;
            return 1;
        }
    return 0;
}

static int build_merges(tokenizer *t, const tok_spec *spec, char *err,
                        size_t errlen)
{
    size_t n = spec->n_merges;
    char q[64], q2[64];
    if (n == 0)
        return 0;
    t->merge_left = malloc(n * sizeof *t->merge_left);
    t->merge_right = malloc(n * sizeof *t->merge_right);
    t->merge_live = malloc(n);
    size_t cap = table_size_for(n);
    t->mtab_key = malloc(cap * sizeof *t->mtab_key);
    t->mtab_rank = malloc(cap * sizeof *t->mtab_rank);
    t->mtab_new = malloc(cap * sizeof *t->mtab_new);
    if (!t->merge_left || !t->merge_right || !t->merge_live || !t->mtab_key ||
        !t->mtab_rank || !t->mtab_new)
        return tok_fail(err, errlen, "tokenizer: out of memory for %zu merges",
                        n);
    for (size_t i = 0; i < cap; i++)
        t->mtab_key[i] = TOK_NO_PAIR;
    t->mtab_mask = cap - 1;
    char *joined = malloc(2 * TOK_MAX_TOKEN_BYTES);
    if (!joined)
        return tok_fail(err, errlen, "tokenizer: out of memory");
    int rc = 0;
    for (size_t r = 0; r < n && rc == 0; r++) {
        const tok_str *m = &spec->merges[r];
        size_t sep;
        if (!m->ptr || !split_merge(m, &sep)) {
            rc = tok_fail(err, errlen,
                          "tokenizer: merge %zu '%s' is not two tokens "
                          "separated by a space", r,
                          tok_quote(q, sizeof q, m->ptr ? m->ptr : "",
                                    m->ptr ? m->len : 0));
            break;
        }
        const char *a = m->ptr, *b = m->ptr + sep + 1;
        size_t na = sep, nb = m->len - sep - 1;
        int32_t left = tok_lookup(t, a, na), right = tok_lookup(t, b, nb);
        if (left < 0 || right < 0) {
            rc = tok_fail(err, errlen,
                          "tokenizer: merge %zu '%s': '%s' is not a token", r,
                          tok_quote(q, sizeof q, m->ptr, m->len),
                          left < 0 ? tok_quote(q2, sizeof q2, a, na)
                                   : tok_quote(q2, sizeof q2, b, nb));
            break;
        }
        int32_t merged = -1;
        if (na + nb <= TOK_MAX_TOKEN_BYTES) {
            memcpy(joined, a, na);
            memcpy(joined + na, b, nb);
            merged = tok_lookup(t, joined, na + nb);
        }
        if (merged < 0) {
            rc = tok_fail(err, errlen,
                          "tokenizer: merge %zu '%s': the merged token is not "
                          "in the vocabulary", r,
                          tok_quote(q, sizeof q, m->ptr, m->len));
            break;
        }
        t->merge_left[r] = left;
        t->merge_right[r] = right;
        t->merge_live[r] = 1;
        uint64_t key = pair_key(left, right);
        size_t h = (size_t)hash_pair(key) & t->mtab_mask;
        while (t->mtab_key[h] != TOK_NO_PAIR && t->mtab_key[h] != key)
            h = (h + 1) & t->mtab_mask;
        if (t->mtab_key[h] == key) /* a repeated pair: its last rank wins */
            t->merge_live[t->mtab_rank[h]] = 0;
        t->mtab_key[h] = key;
        t->mtab_rank[h] = (uint32_t)r;
        t->mtab_new[h] = merged;
    }
    free(joined);
    t->n_merges = n;
    return rc;
}

/* The bytes each token decodes to: added tokens their text; the others
 * each character mapped back to its byte, or (when a character is not one
 * of the 256 byte symbols) the token's text as it is, as Hugging Face's
 * ByteLevel decoder does. */
static int build_decoded(tokenizer *t, char *err, size_t errlen)
{
    unsigned char back[324];
    memset(back, 0, sizeof back);
    int has[324] = {0};
    for (unsigned b = 0; b < 256; b++) {
        uint32_t c = tok_byte_char((unsigned char)b);
        back[c] = (unsigned char)b;
        has[c] = 1;
    }
    size_t total = t->offset[t->n_tokens];
    t->decoded = malloc(total ? total : 1);
    t->dec_offset = malloc((t->n_tokens + 1) * sizeof *t->dec_offset);
    if (!t->decoded || !t->dec_offset)
        return tok_fail(err, errlen, "tokenizer: out of memory");
    size_t o = 0;
    for (size_t i = 0; i < t->n_tokens; i++) {
        const unsigned char *s = (const unsigned char *)t->text + t->offset[i];
        size_t len = t->offset[i + 1] - t->offset[i];
        t->dec_offset[i] = o;
        int mapped = !tok_is_added_type(t->types[i]);
        size_t n = 0;
        for (size_t p = 0; mapped && p < len;) {
            int32_t cp;
            p += tok_utf8_next(s, len, p, &cp);
            if (cp < 0 || cp >= 324 || !has[cp])
                mapped = 0;
            else
                t->decoded[o + n++] = (char)back[cp];
        }
        if (!mapped) {
            memcpy(t->decoded + o, s, len);
            n = len;
        }
        o += n; /* n <= len: a symbol is at least one byte */
    }
    t->dec_offset[t->n_tokens] = o;
    return 0;
}

/* Added tokens sort by (pass, first byte), longest first, then by id. */
typedef struct added_key {
    unsigned key; /* pass * 257 + first byte */
    size_t len;
    int32_t id;
} added_key;

static int added_cmp(const void *pa, const void *pb)
{
    const added_key *a = pa, *b = pb;
    if (a->key != b->key)
        return a->key < b->key ? -1 : 1;
    if (a->len != b->len)
        return a->len > b->len ? -1 : 1;
    return a->id < b->id ? -1 : a->id > b->id;
}

static int build_added(tokenizer *t, char *err, size_t errlen)
{
    size_t n = 0;
    for (size_t i = 0; i < t->n_tokens; i++)
        n += tok_is_added_type(t->types[i]) != 0;
    added_key *keys = malloc((n ? n : 1) * sizeof *keys);
    t->added = malloc((n ? n : 1) * sizeof *t->added);
    if (!keys || !t->added) {
        free(keys);
        return tok_fail(err, errlen, "tokenizer: out of memory");
    }
    n = 0;
    for (size_t i = 0; i < t->n_tokens; i++)
        if (tok_is_added_type(t->types[i])) {
            unsigned pass = t->normalized[i] ? 1 : 0;
            keys[n].key = pass * 257 + (unsigned char)t->text[t->offset[i]];
            keys[n].len = t->offset[i + 1] - t->offset[i];
            keys[n].id = (int32_t)i;
            n++;
        }
    qsort(keys, n, sizeof *keys, added_cmp);
    /* added_first[pass][b]: the first token whose key is at least
     * pass * 257 + b (b = 256 gives the end of the pass). */
    size_t k = 0;
    for (unsigned pass = 0; pass < 2; pass++)
        for (unsigned b = 0; b <= 256; b++) {
            while (k < n && keys[k].key < pass * 257 + b)
                k++;
            t->added_first[pass][b] = k;
        }
    for (size_t i = 0; i < n; i++)
        t->added[i] = keys[i].id;
    t->n_added = n;
    free(keys);
    return 0;
}

static int check_id(const char *what, int32_t id, size_t n, char *err,
                    size_t errlen)
{
    if (id < -1 || (id >= 0 && (size_t)id >= n))
        return tok_fail(err, errlen,
                        "tokenizer: %s id %d is out of range (vocabulary of "
                        "%zu tokens)", what, (int)id, n);
    return 0;
}

int tok_create(const tok_spec *spec, tokenizer **out, char *err,
               size_t errlen)
{
    *out = NULL;
    if (!spec)
        return tok_fail(err, errlen, "tokenizer: no description");
    if (!spec->model || strcmp(spec->model, "gpt2") != 0)
        return tok_fail(err, errlen,
                        "tokenizer: unknown model '%s' (known: gpt2, "
                        "byte-level BPE)", spec->model ? spec->model : "");
    tok_pre pre;
    if (!known_pre(spec->pre, &pre))
        return tok_fail(err, errlen,
                        "tokenizer: unknown pre-tokenizer '%s' (known: gpt2, "
                        "llama-bpe, smollm, default)", spec->pre);
    if (spec->n_tokens == 0 || !spec->tokens)
        return tok_fail(err, errlen, "tokenizer: no tokens");
    if (spec->n_tokens > TOK_MAX_TOKENS)
        return tok_fail(err, errlen,
                        "tokenizer: %zu tokens (at most %zu)", spec->n_tokens,
                        TOK_MAX_TOKENS);
    if (spec->n_merges > TOK_MAX_MERGES)
        return tok_fail(err, errlen, "tokenizer: %zu merges (at most %zu)",
                        spec->n_merges, TOK_MAX_MERGES);
    if (spec->n_merges && !spec->merges)
        return tok_fail(err, errlen, "tokenizer: %zu merges without data",
                        spec->n_merges);
    if (check_id("bos", spec->bos_id, spec->n_tokens, err, errlen) ||
        check_id("eos", spec->eos_id, spec->n_tokens, err, errlen) ||
        check_id("unknown", spec->unk_id, spec->n_tokens, err, errlen) ||
        check_id("padding", spec->pad_id, spec->n_tokens, err, errlen))
        return -1;
    if (spec->add_bos && spec->bos_id < 0)
        return tok_fail(err, errlen, "tokenizer: adds bos but has no bos id");
    if (spec->add_eos && spec->eos_id < 0)
        return tok_fail(err, errlen, "tokenizer: adds eos but has no eos id");

    tokenizer *t = calloc(1, sizeof *t);
    if (!t)
        return tok_fail(err, errlen, "tokenizer: out of memory");
    t->pre = pre;
    t->bos_id = spec->bos_id;
    t->eos_id = spec->eos_id;
    t->unk_id = spec->unk_id;
    t->pad_id = spec->pad_id;
    t->add_bos = spec->add_bos != 0;
    t->add_eos = spec->add_eos != 0;
    t->ignore_merges = spec->ignore_merges != 0;
    if (copy_tokens(t, spec, err, errlen) ||
        build_merges(t, spec, err, errlen) || build_decoded(t, err, errlen) ||
        build_added(t, err, errlen)) {
        tok_free(t);
        return -1;
    }
    for (unsigned b = 0; b < 256; b++) {
        char sym[4];
        size_t n = tok_utf8_put(tok_byte_char((unsigned char)b), sym);
        t->byte_token[b] = tok_lookup(t, sym, n);
    }
    *out = t;
    return 0;
}
