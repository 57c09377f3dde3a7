/* libFuzzer target for the LLaMa example's tokenizer
 * (examples/llama/tokenizer.h). Properties, checked with abort():
 *   - no crash, no sanitizer report, no read outside the input;
 *   - input starting with '{' is a tokenizer.json: loading it either
 *     fails with a message or gives a tokenizer that encodes the input
 *     itself, decodes it back to the input without the bytes it counted
 *     as dropped, and saves a tokenizer.json that loads again and encodes
 *     the same;
 *   - any other input is text: byte 0 picks the pre-tokenizer (gpt2,
 *     llama-bpe, smollm) of a small tokenizer that has every byte symbol,
 *     the pieces tile the text, and decode(encode(text)) == text.
 */
#include "tok_internal.h"
#include "tokenizer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static tokenizer *small[3];
static char saved_path[64];

/* ids 0..255 the byte symbols, then a few merged tokens and added
 * tokens, so merges, added-token matching and ties all happen. */
static tokenizer *make_small(const char *pre)
{
    static const char *const pairs[][2] = {
        {"a", "b"}, {"ab", "a"}, {"b", "a"}, {"aba", "b"}, {" ", "a"},
        {"1", "1"}, {"\xC3", "\xA9"}, {" ", " "}, {"'", "s"}};
    enum { n_pairs = sizeof pairs / sizeof pairs[0] };
    static char text[256 + n_pairs + 2][16];
    static char merge_text[n_pairs][40];
    tok_str tokens[256 + n_pairs + 2];
    int32_t types[256 + n_pairs + 2];
    tok_str merges[n_pairs];
    size_t n = 0;
    for (unsigned b = 0; b < 256; b++, n++) {
        size_t len = tok_utf8_put(tok_byte_char((unsigned char)b), text[n]);
        tokens[n] = (tok_str){text[n], len};
        types[n] = TOK_TYPE_NORMAL;
    }
    for (size_t i = 0; i < n_pairs; i++, n++) {
        char a[16], b[16];
        size_t la = 0, lb = 0;
        for (const char *p = pairs[i][0]; *p; p++)
            la += tok_utf8_put(tok_byte_char((unsigned char)*p), a + la);
        for (const char *p = pairs[i][1]; *p; p++)
            lb += tok_utf8_put(tok_byte_char((unsigned char)*p), b + lb);
        memcpy(text[n], a, la);
        memcpy(text[n] + la, b, lb);
        tokens[n] = (tok_str){text[n], la + lb};
        types[n] = TOK_TYPE_NORMAL;
        memcpy(merge_text[i], a, la);
        merge_text[i][la] = ' ';
        memcpy(merge_text[i] + la + 1, b, lb);
        merges[i] = (tok_str){merge_text[i], la + 1 + lb};
    }
    tokens[n] = (tok_str){"<|x|>", 5};
    types[n++] = TOK_TYPE_CONTROL;
    tokens[n] = (tok_str){"<|", 2};
    types[n++] = TOK_TYPE_USER_DEFINED;
    tok_spec s;
    tok_spec_init(&s);
    s.model = "gpt2";
    s.pre = pre;
    s.n_tokens = n;
    s.tokens = tokens;
    s.token_types = types;
    s.n_merges = n_pairs;
    s.merges = merges;
    tokenizer *t;
    char err[256];
    if (tok_create(&s, &t, err, sizeof err) != 0) {
        fprintf(stderr, "fuzz_tokenizer: %s\n", err);
        abort();
    }
    return t;
}

/* Encodes and decodes text. Without an unknown token, decoding gives
 * the text back less the bytes encode reports as dropped (those with no
 * symbol in the vocabulary): every token made from byte symbols by merges
 * decodes to its bytes, an added token to its text. */
static void round_trip(const tokenizer *t, const uint8_t *text, size_t len)
{
    int32_t *ids;
    size_t n, dropped, back_len;
    char *back, err[256];
    if (tok_encode(t, text, len, 0, &ids, &n, &dropped, err, sizeof err))
        abort(); /* no input makes encoding fail short of memory */
    if (tok_decode(t, ids, n, &back, &back_len, err, sizeof err))
        abort();
    if (t->unk_id < 0) {
        if (back_len + dropped != len)
            abort();
        if (dropped == 0 && memcmp(back, text, len) != 0)
            abort();
    }
    free(ids);
    free(back);
}

static void split_tiles(tok_pre pre, const uint8_t *text, size_t len)
{
    tok_splitter sp;
    size_t b, e, at = 0;
    for (tok_split_begin(&sp, pre, text, len); tok_split_next(&sp, &b, &e);) {
        if (b != at || e <= b || e > len)
            abort();
        at = e;
    }
    if (at != len)
        abort();
}

static void fuzz_json(const uint8_t *data, size_t size)
{
    tokenizer *t, *back;
    char err[512];
    if (tok_load_hf_json_mem((const char *)data, size, &t, err, sizeof err)) {
        if (err[0] == '\0')
            abort(); /* a refusal always says why */
        return;
    }
    round_trip(t, data, size);
    if (tok_save_hf_json(t, saved_path, err, sizeof err) == 0) {
        if (tok_load_hf_json(saved_path, &back, err, sizeof err))
            abort(); /* what we write, we read */
        int32_t *a, *b;
        size_t na, nb;
        if (tok_encode(t, data, size, 1, &a, &na, NULL, err, sizeof err) ||
            tok_encode(back, data, size, 1, &b, &nb, NULL, err, sizeof err))
            abort();
        if (na != nb || memcmp(a, b, na * sizeof *a) != 0)
            abort();
        free(a);
        free(b);
        tok_free(back);
        unlink(saved_path);
    }
    tok_free(t);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!small[0]) {
        small[0] = make_small("gpt2");
        small[1] = make_small("llama-bpe");
        small[2] = make_small("smollm");
        snprintf(saved_path, sizeof saved_path, "/tmp/fuzz_tokenizer-%d.json",
                 (int)getpid());
    }
    if (size == 0)
        return 0;
    /* An exact-size copy: ASan sees any read past its end. */
    uint8_t *copy = malloc(size);
    if (!copy)
        abort();
    memcpy(copy, data, size);
    if (copy[0] == '{') {
        fuzz_json(copy, size);
    } else {
        int which = copy[0] % 3;
        static const tok_pre pres[3] = {TOK_PRE_GPT2, TOK_PRE_LLAMA_BPE,
                                        TOK_PRE_SMOLLM};
        size_t dropped;
        int32_t *ids;
        size_t n;
        char err[256];
        split_tiles(pres[which], copy + 1, size - 1);
        round_trip(small[which], copy + 1, size - 1);
        /* Every byte has a symbol here: nothing may be dropped. */
        if (tok_encode(small[which], copy + 1, size - 1, 0, &ids, &n,
                       &dropped, err, sizeof err) || dropped != 0)
            abort();
        free(ids);
    }
    free(copy);
    return 0;
}
