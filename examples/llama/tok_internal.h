/* The inside of a tokenizer (tokenizer.h), shared by its source files:
 * tokenizer.c (building and checking), tok_encode.c (encoding and
 * decoding), tok_pretok.c (the pre-tokenizer splits) and tok_hf_json.c
 * (Hugging Face's tokenizer.json). */
#ifndef LLAMA_TOK_INTERNAL_H
#define LLAMA_TOK_INTERNAL_H

#include "tokenizer.h"
#include "unicode_tables.h"

#include <stddef.h>
#include <stdint.h>

/* The pre-tokenizer splits (tok_spec.pre). */
typedef enum tok_pre {
    TOK_PRE_GPT2,      /* GPT-2's regex, as Hugging Face's ByteLevel */
    TOK_PRE_LLAMA_BPE, /* Llama 3's regex */
    TOK_PRE_SMOLLM     /* every number character alone, then GPT-2's */
} tok_pre;

struct tokenizer {
    tok_pre pre;
    size_t n_tokens;
    /* Token i is text[offset[i], offset[i + 1]); decoded[dec_offset[i],
     * dec_offset[i + 1]) are the bytes it decodes to. */
    char *text;
    size_t *offset;
    char *decoded;
    size_t *dec_offset;
    int32_t *types;
    float *scores;            /* NULL when the spec had none */
    unsigned char *normalized;
    /* Token strings to ids: open addressing, slots hold id + 1 (0 empty). */
    uint32_t *vocab_slots;
    size_t vocab_mask;
    /* The merges in rank order (ranks are indices); a pair that appears
     * again later is dropped at its earlier place (merge_live 0). */
    size_t n_merges;
    int32_t *merge_left, *merge_right;
    unsigned char *merge_live;
    /* (left << 32 | right) -> rank and the merged token. */
    uint64_t *mtab_key;       /* TOK_NO_PAIR when empty */
    uint32_t *mtab_rank;
    int32_t *mtab_new;
    size_t mtab_mask;
    /* The token of each byte's symbol (GPT-2's byte-to-character map),
     * or -1 when the vocabulary lacks it. */
    int32_t byte_token[256];
    /* Added tokens (control, user-defined and unknown types), found in
     * the text before any splitting, in Hugging Face's two passes: first
     * the not-normalized ones, then the normalized ones in the gaps. Each
     * pass's tokens are sorted by first byte, then longest first:
     * added[added_first[pass][b], added_first[pass][b + 1]). */
    int32_t *added;
    size_t n_added;
    size_t added_first[2][257];
    int32_t bos_id, eos_id, unk_id, pad_id;
    int add_bos, add_eos, ignore_merges;
};

#define TOK_NO_PAIR UINT64_MAX

/* Message helpers (printf-style into err, which may be NULL). */
int tok_fail(char *err, size_t errlen, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
/* s[0, len) for a message: printable ASCII as is, other bytes as \xNN,
 * cut to fit out (always NUL-terminated). */
const char *tok_quote(char *out, size_t outlen, const char *s, size_t len);

/* The id of the token with these bytes, or -1. */
int32_t tok_lookup(const tokenizer *t, const char *s, size_t len);
/* The merge of the pair (left, right): 1 with its rank and result. */
int tok_merge_of(const tokenizer *t, int32_t left, int32_t right,
                 uint32_t *rank, int32_t *merged);
/* Whether id is an added token (found in the text as itself). */
int tok_is_added_type(int32_t type);

/* GPT-2's byte-to-character map: the code point standing for byte b. */
uint32_t tok_byte_char(unsigned char b);

/* UTF-8: the code point starting at s[pos] (pos < len) and its length in
 * bytes; a byte that does not start a valid, shortest-form sequence of a
 * scalar value is one invalid character of its own (*cp = -1). */
size_t tok_utf8_next(const unsigned char *s, size_t len, size_t pos,
                     int32_t *cp);
/* Writes cp (a scalar value) as UTF-8 into out[4]; its length. */
size_t tok_utf8_put(uint32_t cp, char *out);
/* The class of a code point (-1, an invalid byte, is UNI_OTHER). */
uni_class tok_uni_class(int32_t cp);

/* The pre-tokenizer: splits s[0, len) into pieces, in order, covering it.
 * for (tok_split_begin(&sp, ...); tok_split_next(&sp, &b, &e);) ... */
typedef struct tok_splitter {
    tok_pre pre;
    const unsigned char *s;
    size_t len, pos;
    size_t run_end; /* smollm: where the current digit-free run ends */
} tok_splitter;

void tok_split_begin(tok_splitter *sp, tok_pre pre, const unsigned char *s,
                     size_t len);
int tok_split_next(tok_splitter *sp, size_t *begin, size_t *end);

#endif /* LLAMA_TOK_INTERNAL_H */
