/*
 * The LLaMa example's tokenizer (examples/llama/tokenizer.h).
 *
 * Without arguments: closed forms on small vocabularies written here
 * (GPT-2's published byte-to-character map; merge order, ties, repeated
 * pairs and ignore_merges worked out by hand; the pre-tokenizer splits
 * derived from each regex; added tokens found leftmost-longest), the
 * property decode(encode(x)) == x on random bytes, and every refusal:
 * bad descriptions and hostile tokenizer.json files (each prefix of a
 * valid one, missing merges, merges of unknown tokens, ids out of range or
 * given twice, unknown pre-tokenizers, huge ids, a FIFO) must give a
 * clear error, never a crash.
 *
 * With --hf DIR (tests/llama_tokenizer_hf.sh): the cases of DIR/cases.txt
 * made by tests/ref/gen_tokenizer.py with Hugging Face tokenizers on the
 * real SmolLM2 vocabulary: the same ids on all of tinyshakespeare and on
 * the edge-case file, decode(encode(x)) == x, and tok_save_hf_json's file
 * loaded again gives the same ids (the script then loads it in Hugging
 * Face tokenizers too).
 */
#include "common/testutil.h"

#include "tok_internal.h"
#include "tokenizer.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* ---- helpers --------------------------------------------------------- */

/* The UTF-8 of GPT-2's symbol for byte b. */
static size_t byte_symbol(unsigned char b, char *out)
{
    return tok_utf8_put(tok_byte_char(b), out);
}

/* A tokenizer whose ids 0..255 are the byte symbols, then `extra` tokens
 * given as plain text (each byte mapped to its symbol), with merges given
 * as plain-text pairs "a|b" (mapped the same way). */
typedef struct small_vocab {
    char text[64][32];
    tok_str tokens[300];
    int32_t types[300];
    char merge_text[32][64];
    tok_str merges[32];
    size_t n_tokens, n_merges;
    char sym[256][4];
} small_vocab;

static void map_text(const char *plain, char *out)
{
    size_t o = 0;
    for (const char *p = plain; *p; p++)
        o += byte_symbol((unsigned char)*p, out + o);
    out[o] = '\0';
}

static void small_init(small_vocab *v)
{
    memset(v, 0, sizeof *v);
    for (unsigned b = 0; b < 256; b++) {
        size_t n = byte_symbol((unsigned char)b, v->sym[b]);
        v->tokens[b] = (tok_str){v->sym[b], n};
        v->types[b] = TOK_TYPE_NORMAL;
    }
    v->n_tokens = 256;
}

/* Adds a token: mapped through the byte symbols unless `raw`. */
static int32_t small_add(small_vocab *v, const char *s, int32_t type, int raw)
{
    char *t = v->text[v->n_tokens - 256];
    if (raw)
        snprintf(t, 32, "%s", s);
    else
        map_text(s, t);
    v->tokens[v->n_tokens] = (tok_str){t, strlen(t)};
    v->types[v->n_tokens] = type;
    return (int32_t)v->n_tokens++;
}

static void small_merge(small_vocab *v, const char *a, const char *b)
{
    char ma[32], mb[32];
    map_text(a, ma);
    map_text(b, mb);
    char *m = v->merge_text[v->n_merges];
    snprintf(m, 64, "%s %s", ma, mb);
    v->merges[v->n_merges] = (tok_str){m, strlen(m)};
    v->n_merges++;
}

static tokenizer *small_create(small_vocab *v, const char *pre,
                               int ignore_merges)
{
    tok_spec s;
    tok_spec_init(&s);
    s.model = "gpt2";
    s.pre = pre;
    s.n_tokens = v->n_tokens;
    s.tokens = v->tokens;
    s.token_types = v->types;
    s.n_merges = v->n_merges;
    s.merges = v->merges;
    s.ignore_merges = ignore_merges;
    tokenizer *t = NULL;
    char err[256];
    if (tok_create(&s, &t, err, sizeof err) != 0)
        fail_msg("tok_create: %s", err);
    return t;
}

/* Encodes, failing the test on an error. */
static int32_t *enc(const tokenizer *t, const char *text, size_t len,
                    int add_special, size_t *n)
{
    int32_t *ids;
    char err[256];
    if (tok_encode(t, text, len, add_special, &ids, n, NULL, err,
                   sizeof err) != 0)
        fail_msg("tok_encode: %s", err);
    return ids;
}

/* Encodes text and compares with the expected ids (n of them). */
static void expect_ids(const tokenizer *t, const char *text, size_t len,
                       const int32_t *want, size_t n)
{
    int32_t *ids;
    size_t got;
    char err[256];
    if (tok_encode(t, text, len, 0, &ids, &got, NULL, err, sizeof err) != 0)
        fail_msg("tok_encode: %s", err);
    if (got != n) {
        fprintf(stderr, "encode('%.*s'): %zu ids:", (int)len, text, got);
        for (size_t i = 0; i < got; i++)
            fprintf(stderr, " %d", ids[i]);
        fprintf(stderr, "\n");
    }
    assert_int_equal(got, n);
    for (size_t i = 0; i < n; i++)
        if (ids[i] != want[i])
            fail_msg("encode('%.*s'): id %zu is %d, expected %d", (int)len,
                     text, i, ids[i], want[i]);
    free(ids);
}

#define EXPECT(t, text, ...)                                                   \
    do {                                                                       \
        const int32_t want_[] = {__VA_ARGS__};                                 \
        expect_ids(t, text, strlen(text), want_,                               \
                   sizeof want_ / sizeof want_[0]);                            \
    } while (0)

/* The pre-tokenizer's pieces of text, joined with '|'. */
static void expect_split(tok_pre pre, const char *text, const char *want)
{
    char got[512];
    size_t o = 0, b, e;
    tok_splitter sp;
    for (tok_split_begin(&sp, pre, (const unsigned char *)text, strlen(text));
         tok_split_next(&sp, &b, &e);) {
        assert_true(e > b);
        if (o)
            got[o++] = '|';
        memcpy(got + o, text + b, e - b);
        o += e - b;
        assert_true(o < sizeof got - 2);
    }
    got[o] = '\0';
    if (strcmp(got, want) != 0)
        fail_msg("split(%d, '%s') = '%s', expected '%s'", (int)pre, text, got,
                 want);
}

static uint64_t rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        fail_msg("%s: %s", path, strerror(errno));
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    buf[n] = '\0';
    *len = (size_t)n;
    return buf;
}

/* Element i of a file of little-endian 32-bit integers. */
static uint32_t le32_at(const char *raw, size_t i)
{
    const unsigned char *p = (const unsigned char *)raw + 4 * i;
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
           (uint32_t)p[3] << 24;
}

static void write_file(const char *path, const char *bytes, size_t len)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(bytes, 1, len, f), len);
    fclose(f);
}

/* ---- closed forms ------------------------------------------------ */

static void test_byte_map(void **state)
{
    (void)state;
    /* GPT-2's bytes_to_unicode: printable Latin-1 stays, the rest moves
     * to U+0100.. in byte order: NUL -> U+0100, ' ' -> U+0120 'Ġ',
     * '\n' -> U+010A 'Ċ', DEL -> U+0121, NBSP -> U+0142, SHY -> U+0143. */
    assert_int_equal(tok_byte_char('!'), '!');
    assert_int_equal(tok_byte_char('~'), '~');
    assert_int_equal(tok_byte_char(0xA1), 0xA1);
    assert_int_equal(tok_byte_char(0xFF), 0xFF);
    assert_int_equal(tok_byte_char(0), 0x100);
    assert_int_equal(tok_byte_char(' '), 0x120);
    assert_int_equal(tok_byte_char('\n'), 0x10A);
    assert_int_equal(tok_byte_char(0x7F), 0x121);
    assert_int_equal(tok_byte_char(0xA0), 0x142);
    assert_int_equal(tok_byte_char(0xAD), 0x143);
    int seen[324] = {0};
    for (unsigned b = 0; b < 256; b++) {
        uint32_t c = tok_byte_char((unsigned char)b);
        assert_true(c < 324);
        assert_int_equal(seen[c], 0);
        seen[c] = 1;
    }
}

static void test_utf8(void **state)
{
    (void)state;
    struct {
        const char *s;
        int32_t cp;
        size_t len;
    } cases[] = {
        {"A", 'A', 1},
        {"\xC3\xA9", 0xE9, 2},
        {"\xE2\x82\xAC", 0x20AC, 3},
        {"\xF0\x9F\x98\x80", 0x1F600, 4},
        {"\xF4\x8F\xBF\xBF", 0x10FFFF, 4},
        {"\x80", -1, 1},          /* continuation byte */
        {"\xC0\xAF", -1, 1},      /* overlong */
        {"\xE0\x80\xAF", -1, 1},  /* overlong */
        {"\xED\xA0\x80", -1, 1},  /* surrogate */
        {"\xF4\x90\x80\x80", -1, 1}, /* past U+10FFFF */
        {"\xF5\x80\x80\x80", -1, 1},
        {"\xE2\x82", -1, 1},      /* truncated */
        {"\xE2\x28\xA1", -1, 1},  /* bad continuation */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int32_t cp;
        size_t n = tok_utf8_next((const unsigned char *)cases[i].s,
                                 strlen(cases[i].s), 0, &cp);
        assert_int_equal(cp, cases[i].cp);
        assert_int_equal(n, cases[i].len);
    }
    /* Classes: letters, numbers, spaces as Oniguruma's \s (no U+001C..F,
     * no U+200B), the rest other. */
    assert_int_equal(tok_uni_class('a'), UNI_LETTER);
    assert_int_equal(tok_uni_class(0x4E16), UNI_LETTER); /* CJK */
    assert_int_equal(tok_uni_class(0x0661), UNI_NUMBER); /* Arabic-Indic 1 */
    assert_int_equal(tok_uni_class(0x00B2), UNI_NUMBER); /* superscript 2 */
    assert_int_equal(tok_uni_class(0x216B), UNI_NUMBER); /* roman 12 */
    assert_int_equal(tok_uni_class(0x3000), UNI_SPACE);
    assert_int_equal(tok_uni_class(0x0085), UNI_SPACE);
    assert_int_equal(tok_uni_class(0x2029), UNI_SPACE);
    assert_int_equal(tok_uni_class(0x001F), UNI_OTHER);
    assert_int_equal(tok_uni_class(0x200B), UNI_OTHER);
    assert_int_equal(tok_uni_class(0x0301), UNI_OTHER); /* combining */
    assert_int_equal(tok_uni_class(0x1F600), UNI_OTHER);
    assert_int_equal(tok_uni_class(-1), UNI_OTHER);
}

static void test_splits(void **state)
{
    (void)state;
    /* GPT-2: ' ?X+' per class, contractions (case-sensitive), and a run
     * of spaces gives all but its last space to \s+(?!\S). */
    expect_split(TOK_PRE_GPT2, "Hello  world's 123",
                 "Hello| | world|'s| 123");
    expect_split(TOK_PRE_GPT2, "I'M can't x'S", "I|'|M| can|'t| x|'|S");
    expect_split(TOK_PRE_GPT2, "a\n\n b  ", "a|\n\n| b|  ");
    expect_split(TOK_PRE_GPT2, "ab12 !!x ?", "ab|12| !!|x| ?");
    expect_split(TOK_PRE_GPT2, "a \tb", "a| |\t|b");
    expect_split(TOK_PRE_GPT2, "x\xff\xfey \xff", "x|\xff\xfe|y| \xff");
    /* Llama 3: case-insensitive contractions, one non-letter before a
     * word, numbers by three, newlines ending a run of spaces. */
    expect_split(TOK_PRE_LLAMA_BPE, "I'M can'T 1234567",
                 "I|'M| can|'T| |123|456|7");
    expect_split(TOK_PRE_LLAMA_BPE, "x'LLama'Sup", "x|'LL|ama|'S|up");
    expect_split(TOK_PRE_LLAMA_BPE, "(hello) \tworld", "(hello|)| |\tworld");
    expect_split(TOK_PRE_LLAMA_BPE, "a  \n\n b", "a|  \n\n| b");
    expect_split(TOK_PRE_LLAMA_BPE, "a\n  b", "a|\n| | b");
    expect_split(TOK_PRE_LLAMA_BPE, "x ...\n\ny", "x| ...\n\n|y");
    expect_split(TOK_PRE_LLAMA_BPE, "a  b   ", "a| | b|   ");
    expect_split(TOK_PRE_LLAMA_BPE, "\nab", "\n|ab");
    /* SmolLM: every number character alone first; GPT-2's regex sees the
     * text between them whole (a space run before a digit ends there). */
    expect_split(TOK_PRE_SMOLLM, "a  1 x12", "a|  |1| x|1|2");
    expect_split(TOK_PRE_SMOLLM, "ab 3.14", "ab| |3|.|1|4");
}

static void test_merge_order(void **state)
{
    (void)state;
    small_vocab v;
    /* Lowest rank first: "a b" before "b c" gives ab|c, the other order
     * a|bc. */
    small_init(&v);
    int32_t ab = small_add(&v, "ab", TOK_TYPE_NORMAL, 0);
    int32_t bc = small_add(&v, "bc", TOK_TYPE_NORMAL, 0);
    small_merge(&v, "a", "b");
    small_merge(&v, "b", "c");
    tokenizer *t = small_create(&v, "gpt2", 0);
    EXPECT(t, "abc", ab, 'c');
    tok_free(t);
    small_init(&v);
    ab = small_add(&v, "ab", TOK_TYPE_NORMAL, 0);
    bc = small_add(&v, "bc", TOK_TYPE_NORMAL, 0);
    small_merge(&v, "b", "c");
    small_merge(&v, "a", "b");
    t = small_create(&v, "gpt2", 0);
    EXPECT(t, "abc", 'a', bc);
    tok_free(t);
    /* A repeated pair keeps its last rank: a b, b c, a b -> b c first. */
    small_init(&v);
    ab = small_add(&v, "ab", TOK_TYPE_NORMAL, 0);
    bc = small_add(&v, "bc", TOK_TYPE_NORMAL, 0);
    small_merge(&v, "a", "b");
    small_merge(&v, "b", "c");
    small_merge(&v, "a", "b");
    t = small_create(&v, "gpt2", 0);
    EXPECT(t, "abc", 'a', bc);
    tok_free(t);
    /* Equal ranks: leftmost first. aaa -> aa|a; aaaaa -> aa|aa|a; then
     * "aa aa" (rank 1) joins the pairs. */
    small_init(&v);
    int32_t aa = small_add(&v, "aa", TOK_TYPE_NORMAL, 0);
    int32_t a4 = small_add(&v, "aaaa", TOK_TYPE_NORMAL, 0);
    small_merge(&v, "a", "a");
    small_merge(&v, "aa", "aa");
    t = small_create(&v, "gpt2", 0);
    EXPECT(t, "aaa", aa, 'a');
    EXPECT(t, "aaaaa", a4, 'a');
    EXPECT(t, "aaaaaa", a4, aa);
    /* " aa" is one piece; no merge joins 'Ġ' and "aa". */
    EXPECT(t, " aa", tok_lookup(t, "\xC4\xA0", 2), aa);
    tok_free(t);
    /* ignore_merges: a piece that is a token is that token. */
    small_init(&v);
    ab = small_add(&v, "ab", TOK_TYPE_NORMAL, 0);
    int32_t abc = small_add(&v, "abc", TOK_TYPE_NORMAL, 0);
    small_merge(&v, "a", "b");
    t = small_create(&v, "gpt2", 0);
    EXPECT(t, "abc", ab, 'c');
    tok_free(t);
    t = small_create(&v, "gpt2", 1);
    EXPECT(t, "abc", abc);
    EXPECT(t, "abcab", ab, 'c', ab); /* one piece, not a token: merged */
    tok_free(t);
}

static void test_added_tokens(void **state)
{
    (void)state;
    small_vocab v;
    small_init(&v);
    int32_t s_a = small_add(&v, "<a>", TOK_TYPE_CONTROL, 1);
    int32_t s_ab = small_add(&v, "<ab>", TOK_TYPE_CONTROL, 1);
    int32_t s_lt = small_add(&v, "<a", TOK_TYPE_CONTROL, 1);
    int32_t u = small_add(&v, "xy", TOK_TYPE_USER_DEFINED, 1);
    small_add(&v, "q<a", TOK_TYPE_USER_DEFINED, 1);
    tokenizer *t = small_create(&v, "gpt2", 0);
    int32_t sp = tok_lookup(t, "\xC4\xA0", 2); /* 'Ġ' */
    /* Leftmost-longest: "<ab>" over "<a"; "<a>" over "<a". */
    EXPECT(t, "q<ab>r<a>", 'q', s_ab, 'r', s_a);
    EXPECT(t, "<a<ab>", s_lt, s_ab);
    EXPECT(t, "<ac", s_lt, 'c');
    /* The text between added tokens is split on its own: the spaces
     * before "<a>" end their piece, so they stay one run. */
    EXPECT(t, "a  <a>", 'a', sp, sp, s_a);
    /* Control tokens (not normalized) are found before user-defined
     * ones (normalized): in "x<a>y" no "xy" can form. */
    EXPECT(t, "xy x<a>y", u, sp, 'x', s_a, 'y');
    /* ... even when the user-defined one starts further left. */
    EXPECT(t, "q<a>", 'q', s_a);
    EXPECT(t, "q<a", 'q', s_lt);
    /* Decoding gives the added tokens' text. */
    int32_t ids[] = {'q', s_ab, sp, u};
    char *out;
    size_t n;
    char err[256];
    assert_int_equal(tok_decode(t, ids, 4, &out, &n, err, sizeof err), 0);
    assert_int_equal(n, 8);
    assert_memory_equal(out, "q<ab> xy", 9);
    free(out);
    tok_free(t);
}

static void test_special_and_unknown(void **state)
{
    (void)state;
    small_vocab v;
    small_init(&v);
    int32_t bos = small_add(&v, "<s>", TOK_TYPE_CONTROL, 1);
    int32_t eos = small_add(&v, "</s>", TOK_TYPE_CONTROL, 1);
    tok_spec s;
    tok_spec_init(&s);
    s.model = "gpt2";
    s.n_tokens = v.n_tokens;
    s.tokens = v.tokens;
    s.token_types = v.types;
    s.bos_id = bos;
    s.eos_id = eos;
    s.add_bos = 1;
    s.add_eos = 1;
    tokenizer *t;
    char err[256];
    int32_t *ids;
    size_t n;
    assert_int_equal(tok_create(&s, &t, err, sizeof err), 0);
    assert_int_equal(tok_bos_id(t), bos);
    assert_int_equal(tok_eos_id(t), eos);
    ids = enc(t, "hi", 2, 1, &n);
    assert_int_equal(n, 4);
    assert_int_equal(ids[0], bos);
    assert_int_equal(ids[1], 'h');
    assert_int_equal(ids[3], eos);
    free(ids);
    ids = enc(t, "hi", 2, 0, &n);
    assert_int_equal(n, 2);
    free(ids);
    ids = enc(t, "", 0, 1, &n);
    assert_int_equal(n, 2);
    free(ids);
    ids = enc(t, NULL, 0, 0, &n);
    assert_int_equal(n, 0);
    free(ids);
    int32_t bad[] = {1, (int32_t)v.n_tokens};
    char *out;
    size_t len;
    assert_int_equal(tok_decode(t, bad, 2, &out, &len, err, sizeof err), -1);
    assert_non_null(strstr(err, "out of range"));
    assert_null(out);
    tok_free(t);
    /* A byte without its symbol is left out before the merges (its
     * neighbours merge: "!\xff!" is "!!"), or is the unknown id. */
    small_init(&v);
    int32_t bang2 = small_add(&v, "!!", TOK_TYPE_NORMAL, 0);
    small_merge(&v, "!", "!");
    v.tokens[0xFF] = (tok_str){"<unk>", 5};
    s.tokens = v.tokens;
    s.n_tokens = v.n_tokens;
    s.token_types = NULL;
    s.merges = v.merges;
    s.n_merges = v.n_merges;
    s.bos_id = s.eos_id = -1;
    s.add_bos = s.add_eos = 0;
    size_t dropped;
    assert_int_equal(tok_create(&s, &t, err, sizeof err), 0);
    assert_int_equal(tok_encode(t, "!\xff!", 3, 0, &ids, &n, &dropped, err,
                                sizeof err), 0);
    assert_int_equal(n, 1);
    assert_int_equal(ids[0], bang2);
    assert_int_equal(dropped, 1);
    free(ids);
    assert_int_equal(tok_encode(t, "\xff\xff", 2, 0, &ids, &n, &dropped,
                                err, sizeof err), 0);
    assert_int_equal(n, 0);
    assert_int_equal(dropped, 2);
    free(ids);
    tok_free(t);
    s.unk_id = 0xFF;
    assert_int_equal(tok_create(&s, &t, err, sizeof err), 0);
    assert_int_equal(tok_encode(t, "!\xff!", 3, 0, &ids, &n, &dropped, err,
                                sizeof err), 0);
    assert_int_equal(n, 3);
    assert_int_equal(ids[1], 0xFF);
    assert_int_equal(dropped, 0);
    free(ids);
    tok_free(t);
    tok_free(NULL);
}

/* decode(encode(x)) == x for random bytes under every pre-tokenizer, with
 * merges that make multi-byte tokens of common pairs. */
static void test_round_trip(void **state)
{
    (void)state;
    small_vocab v;
    small_init(&v);
    const char *pairs[][2] = {{"a", "b"}, {" ", "a"}, {"1", "2"},
                              {"\xC3", "\xA9"}, {"ab", "ab"}, {" ", " "}};
    for (size_t i = 0; i < sizeof pairs / sizeof pairs[0]; i++) {
        char joined[16];
        snprintf(joined, sizeof joined, "%s%s", pairs[i][0], pairs[i][1]);
        small_add(&v, joined, TOK_TYPE_NORMAL, 0);
        small_merge(&v, pairs[i][0], pairs[i][1]);
    }
    small_add(&v, "<|x|>", TOK_TYPE_CONTROL, 1);
    const char *pres[] = {"gpt2", "llama-bpe", "smollm"};
    const char alphabet[] = "ab 12\n\t'sS<|x>\xC3\xA9\xE4\xB8\x96\xF0\x9F"
                            "\x98\x80\xff\x80\x00";
    uint64_t seed = 7;
    char text[512];
    for (int p = 0; p < 3; p++) {
        tokenizer *t = small_create(&v, pres[p], p == 1);
        for (int round = 0; round < 3000; round++) {
            size_t len = rng_next(&seed) % sizeof text;
            for (size_t i = 0; i < len; i++) {
                uint64_t r = rng_next(&seed);
                size_t k = (r >> 8) % (sizeof alphabet - 1);
                text[i] = r % 4 == 0 ? (char)(r >> 8) : alphabet[k];
            }
            int32_t *ids;
            size_t n, back_len;
            char *back, err[256];
            ids = enc(t, text, len, 0, &n);
            assert_true(n <= len);
            assert_int_equal(tok_decode(t, ids, n, &back, &back_len, err,
                                        sizeof err), 0);
            assert_int_equal(back_len, len);
            assert_memory_equal(back, text, len);
            free(ids);
            free(back);
        }
        tok_free(t);
    }
}

/* ---- refusals ---------------------------------------------------- */

static void expect_create_error(const tok_spec *s, const char *needle)
{
    tokenizer *t = (tokenizer *)1;
    char err[256] = "";
    assert_int_equal(tok_create(s, &t, err, sizeof err), -1);
    assert_null(t);
    if (!strstr(err, needle))
        fail_msg("error '%s' does not mention '%s'", err, needle);
}

static void test_bad_specs(void **state)
{
    (void)state;
    small_vocab v;
    small_init(&v);
    small_add(&v, "ab", TOK_TYPE_NORMAL, 0);
    small_merge(&v, "a", "b");
    tok_spec s;
    tok_spec_init(&s);
    s.model = "gpt2";
    s.n_tokens = v.n_tokens;
    s.tokens = v.tokens;
    s.token_types = v.types;
    s.n_merges = v.n_merges;
    s.merges = v.merges;
    tokenizer *t;
    char err[256];
    assert_int_equal(tok_create(&s, &t, err, sizeof err), 0);
    tok_free(t);

    expect_create_error(NULL, "no description");
    tok_spec b = s;
    b.model = "bert";
    expect_create_error(&b, "unknown model 'bert'");
    b = s;
    b.pre = "qwen2";
    expect_create_error(&b, "unknown pre-tokenizer 'qwen2'");
    b = s;
    b.n_tokens = 0;
    expect_create_error(&b, "no tokens");
    b = s;
    b.n_tokens = TOK_MAX_TOKENS + 1;
    expect_create_error(&b, "tokens (at most");
    b = s;
    b.bos_id = (int32_t)v.n_tokens;
    expect_create_error(&b, "bos id 257 is out of range");
    b = s;
    b.unk_id = -5;
    expect_create_error(&b, "unknown id -5");
    b = s;
    b.add_eos = 1;
    expect_create_error(&b, "no eos id");
    int32_t types[300];
    memcpy(types, v.types, sizeof types);
    types[3] = 9;
    b = s;
    b.token_types = types;
    expect_create_error(&b, "token 3 has type 9");
    tok_str toks[300];
    memcpy(toks, v.tokens, sizeof toks);
    toks[7] = toks[8];
    b = s;
    b.tokens = toks;
    expect_create_error(&b, "tokens 7 and 8 are both");
    memcpy(toks, v.tokens, sizeof toks);
    toks[9].len = 0;
    b.tokens = toks;
    expect_create_error(&b, "token 9 is empty");
    tok_str merges[1] = {{"b a", 3}};
    b = s;
    b.merges = merges;
    b.n_merges = 1;
    expect_create_error(&b, "merge 0 'b a': the merged token is not");
    merges[0] = (tok_str){"Q Z", 3};
    b.n_merges = 1;
    memcpy(toks, v.tokens, sizeof toks);
    toks['Q'] = (tok_str){"QQ", 2};
    b.tokens = toks;
    expect_create_error(&b, "'Q' is not a token");
    merges[0] = (tok_str){"ab", 2};
    expect_create_error(&b, "merge 0 'ab' is not two tokens");
}

/* A small, valid tokenizer.json; the hostile ones are edits of it. */
static const char base_json[] =
    "{\"version\": \"1.0\", \"truncation\": null, \"padding\": null,\n"
    " \"added_tokens\": [{\"id\": 5, \"content\": \"<s>\", \"single_word\": "
    "false, \"lstrip\": false, \"rstrip\": false, \"normalized\": false, "
    "\"special\": true}],\n"
    " \"normalizer\": null,\n"
    " \"pre_tokenizer\": {\"type\": \"ByteLevel\", \"add_prefix_space\": "
    "false, \"trim_offsets\": true, \"use_regex\": true},\n"
    " \"post_processor\": null,\n"
    " \"decoder\": {\"type\": \"ByteLevel\"},\n"
    " \"model\": {\"type\": \"BPE\", \"dropout\": null, \"unk_token\": null, "
    "\"fuse_unk\": false, \"byte_fallback\": false,\n"
    "   \"vocab\": {\"a\": 0, \"b\": 1, \"ab\": 2, \"\\u0120\": 3, "
    "\"\\u0120ab\": 4, \"<s>\": 5},\n"
    "   \"merges\": [\"a b\", \"\\u0120 ab\"]}}\n";

static char tmpdir[64];

static char *temp_path(const char *name)
{
    static char path[128];
    snprintf(path, sizeof path, "%s/%s", tmpdir, name);
    return path;
}

/* base_json with `from` replaced by `to` (from must occur). */
static char *edited(const char *from, const char *to)
{
    const char *at = strstr(base_json, from);
    if (!at)
        fail_msg("'%s' is not in the base document", from);
    size_t n = strlen(base_json) - strlen(from) + strlen(to);
    char *s = malloc(n + 1);
    assert_non_null(s);
    size_t head = (size_t)(at - base_json);
    memcpy(s, base_json, head);
    strcpy(s + head, to);
    strcat(s, at + strlen(from));
    return s;
}

static void expect_load_error(const char *doc, size_t len, const char *needle)
{
    tokenizer *t = (tokenizer *)1;
    char err[512] = "";
    int rc = tok_load_hf_json_mem(doc, len, &t, err, sizeof err);
    if (rc == 0)
        fail_msg("accepted a document that should fail with '%s'",
                 needle ? needle : "an error");
    assert_null(t);
    if (needle && !strstr(err, needle))
        fail_msg("error '%s' does not mention '%s'", err, needle);
    if (!needle && err[0] == '\0')
        fail_msg("an error without a message");
}

static void expect_edit_error(const char *from, const char *to,
                              const char *needle)
{
    char *doc = edited(from, to);
    expect_load_error(doc, strlen(doc), needle);
    free(doc);
}

static void test_hostile_json(void **state)
{
    (void)state;
    tokenizer *t;
    char err[512];
    assert_int_equal(tok_load_hf_json_mem(base_json, strlen(base_json), &t,
                                          err, sizeof err), 0);
    int32_t ab = 2, sp_ab = 4, s = 5;
    EXPECT(t, "ab ab<s>a", ab, sp_ab, s, 0);
    tok_free(t);

    /* Every prefix of the document: truncated JSON. */
    for (size_t n = 0; n < strlen(base_json) - 1; n++)
        expect_load_error(base_json, n, NULL);
    expect_load_error("[1, 2]", 6, "not an object");

    expect_edit_error(",\n   \"merges\": [\"a b\", \"\\u0120 ab\"]", "",
                      "model.merges is missing");
    expect_edit_error("\"a b\"", "\"a z\"", "'z' is not a token");
    expect_edit_error("\"a b\"", "\"b a\"", "the merged token is not");
    expect_edit_error("\"a b\"", "[\"a\", \"b\", \"c\"]", "merges[0]");
    expect_edit_error("\"a b\"", "\"ab\"", "not two tokens");
    expect_edit_error("\"ab\": 2", "\"ab\": 1", "gives id 1 to both");
    expect_edit_error("\"ab\": 2", "\"ab\": 99999999999", "too large");
    expect_edit_error("\"ab\": 2", "\"ab\": 16777215", "only 7 tokens");
    expect_edit_error("\"ab\": 2", "\"ab\": 6", "no token has id 2");
    expect_edit_error("\"ab\": 2", "\"ab\": -2", "not a non-negative");
    expect_edit_error("\"ab\": 2", "\"ab\": 2.5", "not a non-negative");
    expect_edit_error("{\"id\": 5, \"content\": \"<s>\"",
                      "{\"id\": 2, \"content\": \"<s>\"", "already 'ab'");
    expect_edit_error("{\"id\": 5, \"content\": \"<s>\"",
                      "{\"id\": 77, \"content\": \"<s>\"", "only 7 tokens");
    expect_edit_error("{\"id\": 5, \"content\": \"<s>\"",
                      "{\"content\": \"<s>\"", "no integer id");
    expect_edit_error("\"lstrip\": false", "\"lstrip\": true", "lstrip");
    expect_edit_error("{\"type\": \"ByteLevel\", \"add_prefix_space\": false",
                      "{\"type\": \"Whitespace\", \"add_prefix_space\": "
                      "false", "pre_tokenizer Whitespace");
    expect_edit_error("\"add_prefix_space\": false", "\"add_prefix_space\": "
                      "true", "add_prefix_space");
    expect_edit_error("\"pre_tokenizer\": {\"type\": \"ByteLevel\", "
                      "\"add_prefix_space\": false, \"trim_offsets\": true, "
                      "\"use_regex\": true}",
                      "\"pre_tokenizer\": {\"type\": \"Sequence\", "
                      "\"pretokenizers\": [{\"type\": \"Split\", "
                      "\"pattern\": {\"Regex\": \"\\\\p{L}+\"}, \"behavior\": "
                      "\"Isolated\", \"invert\": false}, {\"type\": "
                      "\"ByteLevel\", \"add_prefix_space\": false, "
                      "\"use_regex\": false}]}",
                      "regex '\\p{L}+' is not one");
    expect_edit_error("\"pre_tokenizer\": {\"type\": \"ByteLevel\", "
                      "\"add_prefix_space\": false, \"trim_offsets\": true, "
                      "\"use_regex\": true}", "\"pre_tokenizer\": null",
                      "no pre_tokenizer");
    expect_edit_error("\"normalizer\": null", "\"normalizer\": {\"type\": "
                      "\"NFC\"}", "normalizer NFC");
    expect_edit_error("\"post_processor\": null", "\"post_processor\": "
                      "{\"type\": \"BertProcessing\"}", "BertProcessing");
    expect_edit_error("\"decoder\": {\"type\": \"ByteLevel\"}",
                      "\"decoder\": {\"type\": \"WordPiece\"}",
                      "decoder WordPiece");
    expect_edit_error("{\"type\": \"BPE\"", "{\"type\": \"Unigram\"",
                      "model Unigram");
    expect_edit_error("\"dropout\": null", "\"dropout\": 0.1", "dropout");
    expect_edit_error("\"byte_fallback\": false", "\"byte_fallback\": true",
                      "byte_fallback");
    expect_edit_error("\"dropout\": null", "\"dropout\": null, \"foo\": 1",
                      "'foo'");
    expect_edit_error("\"unk_token\": null", "\"unk_token\": \"<unk>\"",
                      "unk_token '<unk>' is not in the vocabulary");
    expect_edit_error("\"vocab\": {", "\"vocab\": {\"a\": 0, ",
                      "duplicate key");
    expect_edit_error("\"post_processor\": null", "\"post_processor\": "
                      "{\"type\": \"TemplateProcessing\", \"single\": "
                      "[{\"SpecialToken\": {\"id\": \"<s>\", \"type_id\": 0}},"
                      " {\"Sequence\": {\"id\": \"A\", \"type_id\": 0}}], "
                      "\"special_tokens\": {\"<s>\": {\"id\": \"<s>\", "
                      "\"ids\": [9], \"tokens\": [\"<s>\"]}}}",
                      "bos id 9 is out of range");

    /* A bos template that is fine adds the bos id. */
    char *doc = edited("\"post_processor\": null", "\"post_processor\": "
                       "{\"type\": \"Sequence\", \"processors\": [{\"type\": "
                       "\"ByteLevel\"}, {\"type\": \"TemplateProcessing\", "
                       "\"single\": [{\"SpecialToken\": {\"id\": \"<s>\", "
                       "\"type_id\": 0}}, {\"Sequence\": {\"id\": \"A\", "
                       "\"type_id\": 0}}], \"special_tokens\": {\"<s>\": "
                       "{\"id\": \"<s>\", \"ids\": [5], \"tokens\": "
                       "[\"<s>\"]}}}]}");
    assert_int_equal(tok_load_hf_json_mem(doc, strlen(doc), &t, err,
                                          sizeof err), 0);
    free(doc);
    int32_t *ids;
    size_t n;
    ids = enc(t, "ab", 2, 1, &n);
    assert_int_equal(n, 2);
    assert_int_equal(ids[0], 5);
    assert_int_equal(ids[1], ab);
    free(ids);
    tok_free(t);

    /* Files: missing, a directory, a FIFO (must not hang), empty. */
    t = (tokenizer *)1;
    assert_int_equal(tok_load_hf_json(temp_path("absent.json"), &t, err,
                                      sizeof err), -1);
    assert_null(t);
    assert_non_null(strstr(err, "cannot open"));
    assert_int_equal(tok_load_hf_json(tmpdir, &t, err, sizeof err), -1);
    assert_non_null(strstr(err, "not a regular file"));
    char *fifo = temp_path("fifo.json");
    assert_int_equal(mkfifo(fifo, 0600), 0);
    assert_int_equal(tok_load_hf_json(fifo, &t, err, sizeof err), -1);
    assert_non_null(strstr(err, "not a regular file"));
    unlink(fifo);
    char *empty = temp_path("empty.json");
    write_file(empty, "", 0);
    assert_int_equal(tok_load_hf_json(empty, &t, err, sizeof err), -1);
    assert_non_null(strstr(err, "JSON"));
    unlink(empty);
}

/* Saving: the file loads again and encodes the same; a save that cannot
 * be made leaves nothing behind. */
static void test_save(void **state)
{
    (void)state;
    small_vocab v;
    small_init(&v);
    small_add(&v, "ab", TOK_TYPE_NORMAL, 0);
    small_add(&v, " ab", TOK_TYPE_NORMAL, 0);
    small_add(&v, "<|x|>", TOK_TYPE_CONTROL, 1);
    small_add(&v, "q\"\\", TOK_TYPE_USER_DEFINED, 1);
    small_merge(&v, "a", "b");
    small_merge(&v, " ", "ab");
    const char *pres[] = {"gpt2", "llama-bpe", "smollm"};
    for (int p = 0; p < 3; p++) {
        tok_spec s;
        tok_spec_init(&s);
        s.model = "gpt2";
        s.pre = pres[p];
        s.n_tokens = v.n_tokens;
        s.tokens = v.tokens;
        s.token_types = v.types;
        s.n_merges = v.n_merges;
        s.merges = v.merges;
        s.bos_id = 256 + 2;
        s.add_bos = p == 1;
        s.ignore_merges = p == 2;
        tokenizer *t, *back;
        char err[512];
        assert_int_equal(tok_create(&s, &t, err, sizeof err), 0);
        char *path = temp_path("saved.json");
        if (tok_save_hf_json(t, path, err, sizeof err) != 0)
            fail_msg("save: %s", err);
        if (tok_load_hf_json(path, &back, err, sizeof err) != 0)
            fail_msg("load of the saved file: %s", err);
        assert_int_equal(tok_vocab_size(back), tok_vocab_size(t));
        const char *text = "ab ab <|x|>q\"\\ 12 x'S  \n\n\xff\x80 abab";
        int32_t *a, *b;
        size_t na, nb;
        a = enc(t, text, strlen(text), 1, &na);
        b = enc(back, text, strlen(text), 1, &nb);
        assert_int_equal(na, nb);
        assert_memory_equal(a, b, na * sizeof *a);
        assert_int_equal(a[0] == 258, p == 1);
        free(a);
        free(b);
        tok_free(back);
        unlink(path);
        assert_int_equal(tok_save_hf_json(t, "/nonexistent-dir/tok.json", err,
                                          sizeof err), -1);
        assert_non_null(strstr(err, "/nonexistent-dir/tok.json"));
        tok_free(t);
    }
    /* Tokens that are not UTF-8 text cannot go into JSON: refused. */
    small_vocab w;
    small_init(&w);
    small_add(&w, "\xff\xfe", TOK_TYPE_USER_DEFINED, 1);
    tokenizer *t = small_create(&w, "gpt2", 0);
    char err[256];
    assert_int_equal(tok_save_hf_json(t, temp_path("bad.json"), err,
                                      sizeof err), -1);
    assert_non_null(strstr(err, "not UTF-8"));
    assert_int_equal(access(temp_path("bad.json"), F_OK), -1);
    tok_free(t);
    /* Nothing but the files the test removed is left in the directory. */
    char cmd[128];
    snprintf(cmd, sizeof cmd, "test -z \"$(ls -A %s)\"", tmpdir);
    assert_int_equal(system(cmd), 0);
}

/* ---- against Hugging Face tokenizers (--hf DIR) ------------------------ */

static const char *hf_dir;

static void check_case(const char *json, const char *text_name,
                       const char *ids_name)
{
    char path[8192], saved[4096], err[512];
    snprintf(path, sizeof path, "%s/%s", hf_dir, json);
    snprintf(saved, sizeof saved, "%s/saved-%s", hf_dir, json);
    tokenizer *t, *back;
    if (tok_load_hf_json(path, &t, err, sizeof err) != 0)
        fail_msg("%s", err);
    if (text_name[0] == '/')
        snprintf(path, sizeof path, "%s", text_name);
    else
        snprintf(path, sizeof path, "%s/%s", hf_dir, text_name);
    size_t len, ref_bytes;
    char *text = read_file(path, &len);
    snprintf(path, sizeof path, "%s/%s", hf_dir, ids_name);
    char *ref_raw = read_file(path, &ref_bytes);
    size_t n_ref = ref_bytes / 4;
    int32_t *ref = malloc((n_ref ? n_ref : 1) * sizeof *ref);
    for (size_t i = 0; i < n_ref; i++)
        ref[i] = (int32_t)le32_at(ref_raw, i);

    int32_t *ids;
    size_t n;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    if (tok_encode(t, text, len, 1, &ids, &n, NULL, err, sizeof err) != 0)
        fail_msg("encode: %s", err);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double secs = (double)(t1.tv_sec - t0.tv_sec) +
                  1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    for (size_t i = 0; i < n && i < n_ref; i++)
        if (ids[i] != ref[i]) {
            size_t tl, rl;
            const char *ts = tok_token(t, ids[i], &tl);
            const char *rs = tok_token(t, ref[i], &rl);
            fail_msg("%s on %s: id %zu is %d '%.*s', Hugging Face gives %d "
                     "'%.*s'", json, text_name, i, ids[i], (int)tl, ts,
                     ref[i], (int)rl, rs ? rs : "?");
        }
    if (n != n_ref)
        fail_msg("%s on %s: %zu ids, Hugging Face gives %zu", json, text_name,
                 n, n_ref);
    printf("  %s on %s: %zu bytes -> %zu ids, equal to Hugging Face's; "
           "encoded in %.3f s (%.2f MB/s)\n", json, text_name, len, n, secs,
           (double)len / 1e6 / (secs > 0 ? secs : 1e-9));

    /* Decoding gives the text back, without the bytes that have no
     * symbol in this vocabulary (SmolLM2 lacks 21; Hugging Face leaves
     * them out too), which encode counts. */
    int present[256];
    for (unsigned c = 0; c < 256; c++) {
        char sym[4];
        size_t k = byte_symbol((unsigned char)c, sym);
        present[c] = tok_lookup(t, sym, k) >= 0;
    }
    char *kept = malloc(len + 1);
    size_t n_kept = 0;
    for (size_t i = 0; i < len; i++)
        if (present[(unsigned char)text[i]])
            kept[n_kept++] = text[i];
    int32_t *again;
    size_t n_again, dropped;
    assert_int_equal(tok_encode(t, text, len, 1, &again, &n_again, &dropped,
                                err, sizeof err), 0);
    assert_int_equal(dropped, len - n_kept);
    free(again);
    char *back_text;
    size_t back_len;
    assert_int_equal(tok_decode(t, ids, n, &back_text, &back_len, err,
                                sizeof err), 0);
    assert_int_equal(back_len, n_kept);
    assert_memory_equal(back_text, kept, n_kept);
    printf("    decoded back: %zu bytes (%zu without a symbol left out)\n",
           back_len, len - n_kept);
    free(back_text);
    free(kept);

    if (tok_save_hf_json(t, saved, err, sizeof err) != 0)
        fail_msg("save: %s", err);
    if (tok_load_hf_json(saved, &back, err, sizeof err) != 0)
        fail_msg("load of the saved file: %s", err);
    int32_t *ids2;
    size_t n2;
    assert_int_equal(tok_encode(back, text, len, 1, &ids2, &n2, NULL, err,
                                sizeof err), 0);
    assert_int_equal(n2, n_ref);
    assert_memory_equal(ids2, ref, n_ref * sizeof *ref);
    free(ids2);
    tok_free(back);
    free(ids);
    free(ref);
    free(ref_raw);
    free(text);
    tok_free(t);
}

/* The pre-tokenizer's pieces against those of Hugging Face. */
static void check_split(const char *pre_name, const char *text_name,
                        const char *ends_name)
{
    tok_pre pre = strcmp(pre_name, "smollm") == 0      ? TOK_PRE_SMOLLM
                  : strcmp(pre_name, "llama-bpe") == 0 ? TOK_PRE_LLAMA_BPE
                                                       : TOK_PRE_GPT2;
    char path[8192];
    size_t len, ref_bytes;
    snprintf(path, sizeof path, "%s/%s", hf_dir, text_name);
    char *text = read_file(path, &len);
    snprintf(path, sizeof path, "%s/%s", hf_dir, ends_name);
    char *raw = read_file(path, &ref_bytes);
    size_t n_ref = ref_bytes / 4, k = 0, b, e;
    tok_splitter sp;
    for (tok_split_begin(&sp, pre, (const unsigned char *)text, len);
         tok_split_next(&sp, &b, &e); k++) {
        uint32_t want = k < n_ref ? le32_at(raw, k) : 0;
        if (k >= n_ref || e != want)
            fail_msg("%s split of %s: piece %zu [%zu, %zu) '%.*s', Hugging "
                     "Face's ends at %u", pre_name, text_name, k, b, e,
                     (int)(e - b), text + b, (unsigned)want);
    }
    assert_int_equal(k, n_ref);
    printf("  %s split of %s: the same %zu pieces as Hugging Face\n",
           pre_name, text_name, k);
    free(raw);
    free(text);
}

static void test_hf_splits(void **state)
{
    (void)state;
    char path[4096];
    snprintf(path, sizeof path, "%s/splits.txt", hf_dir);
    FILE *f = fopen(path, "r");
    if (!f)
        fail_msg("%s: %s", path, strerror(errno));
    char pre[64], text[4096], ends[256];
    int cases = 0;
    while (fscanf(f, "%63s %4095s %255s", pre, text, ends) == 3) {
        check_split(pre, text, ends);
        cases++;
    }
    fclose(f);
    assert_true(cases >= 6);
}

static void test_hf_cases(void **state)
{
    (void)state;
    char path[4096];
    snprintf(path, sizeof path, "%s/cases.txt", hf_dir);
    FILE *f = fopen(path, "r");
    if (!f)
        fail_msg("%s: %s", path, strerror(errno));
    char json[256], text[4096], ids[256];
    int cases = 0;
    while (fscanf(f, "%255s %4095s %255s", json, text, ids) == 3) {
        check_case(json, text, ids);
        cases++;
    }
    fclose(f);
    assert_true(cases >= 6);
}

static int make_tmpdir(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/test_llama_tokenizer_XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int remove_tmpdir(void **state)
{
    (void)state;
    return rmdir(tmpdir);
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "--hf") == 0) {
        hf_dir = argv[2];
        const struct CMUnitTest hf[] = {cmocka_unit_test(test_hf_splits),
                                        cmocka_unit_test(test_hf_cases)};
        return cmocka_run_group_tests(hf, NULL, NULL);
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_byte_map),
        cmocka_unit_test(test_utf8),
        cmocka_unit_test(test_splits),
        cmocka_unit_test(test_merge_order),
        cmocka_unit_test(test_added_tokens),
        cmocka_unit_test(test_special_and_unknown),
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_bad_specs),
        cmocka_unit_test(test_hostile_json),
        cmocka_unit_test(test_save),
    };
    return cmocka_run_group_tests(tests, make_tmpdir, remove_tmpdir);
}
