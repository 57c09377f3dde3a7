/* Tokenizers of pretrained LLaMa-family models: byte-level BPE (the
 * "gpt2" model of GGUF files, Hugging Face tokenizers' BPE with the
 * ByteLevel pre-tokenizer) with the pre-tokenizer splits of GPT-2,
 * Llama 3 ("llama-bpe") and SmolLM ("smollm").
 *
 * A tokenizer is built from a plain description (tok_spec: the token
 * strings, the merges, the special ids), independent of any file format,
 * or read from a Hugging Face tokenizer.json. Encoding takes any bytes
 * (invalid UTF-8 and NULs included) and gives the ids Hugging Face
 * tokenizers gives for the same text; decoding gives back the bytes, so
 * decode(encode(x)) == x for every x whose bytes all have a symbol in the
 * vocabulary (see tok_spec.unk_id).
 *
 * Functions that can fail return 0 on success, or -1 with a readable
 * message in err (which may be NULL). A tokenizer is immutable once made:
 * several threads may encode and decode with one at the same time. */
#ifndef LLAMA_TOKENIZER_H
#define LLAMA_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

typedef struct tokenizer tokenizer;

/* A byte string that need not be NUL-terminated. */
typedef struct tok_str {
    const char *ptr;
    size_t len;
} tok_str;

/* Token types, numbered as GGUF's tokenizer.ggml.token_type. CONTROL and
 * USER_DEFINED tokens are the "added tokens" of Hugging Face: they are
 * found in the text as they are, before any splitting, and encode as
 * themselves (CONTROL ones are the special tokens: <|endoftext|>, ...). */
enum {
    TOK_TYPE_NORMAL = 1,
    TOK_TYPE_UNKNOWN = 2,
    TOK_TYPE_CONTROL = 3,
    TOK_TYPE_USER_DEFINED = 4,
    TOK_TYPE_UNUSED = 5,
    TOK_TYPE_BYTE = 6
};

/* Limits: larger descriptions are refused with a message. */
#define TOK_MAX_TOKENS ((size_t)1 << 24)
#define TOK_MAX_MERGES ((size_t)1 << 24)
#define TOK_MAX_TOKEN_BYTES 4096

typedef struct tok_spec {
    /* "gpt2": byte-level BPE (the only model so far; GGUF's
     * tokenizer.ggml.model). */
    const char *model;
    /* The pre-tokenizer (GGUF's tokenizer.ggml.pre): "gpt2", "llama-bpe"
     * (Llama 3), "smollm" (each digit alone, then GPT-2's split), or
     * "default" / NULL, which reads as "gpt2" (the split Hugging Face's
     * ByteLevel pre-tokenizer makes by default). */
    const char *pre;
    /* tokens[id] for id in [0, n_tokens): distinct, non-empty. */
    size_t n_tokens;
    const tok_str *tokens;
    /* [n_tokens] TOK_TYPE_* values, or NULL for all NORMAL. */
    const int32_t *token_types;
    /* [n_tokens] or NULL (SentencePiece scores; kept, unused by BPE). */
    const float *scores;
    /* [n_tokens] or NULL: Hugging Face's AddedToken.normalized of each
     * added token (it decides which added tokens are found first). NULL
     * means Hugging Face's defaults: control tokens 0, user-defined 1. */
    const unsigned char *normalized;
    /* The merges "left right", rank = index (a left part may start with a
     * space: the separator is the first space after the first byte). Both
     * parts and their concatenation must be tokens. When a pair repeats,
     * its last rank counts (as in Hugging Face tokenizers). */
    size_t n_merges;
    const tok_str *merges;
    /* -1 when absent. unk_id, when set, stands for a byte whose symbol is
     * not in the vocabulary; without it such a byte is left out (both as
     * Hugging Face's BPE does; SmolLM2's vocabulary lacks 21 of the 256
     * byte symbols, among them the bytes of no valid UTF-8). */
    int32_t bos_id, eos_id, unk_id, pad_id;
    /* tok_encode(..., add_special = 1) puts bos_id first / eos_id last. */
    int add_bos, add_eos;
    /* A pre-token that is itself a token encodes as that token, whatever
     * the merges would give (Hugging Face's BPE ignore_merges; Llama 3's
     * tokenizer.json and llama.cpp's "llama-bpe" set it). */
    int ignore_merges;
} tok_spec;

/* An empty description: every pointer NULL, every id -1, flags 0. */
void tok_spec_init(tok_spec *spec);

/* Checks spec and builds the tokenizer; the spec's memory is copied, so
 * it can be released afterwards. */
int tok_create(const tok_spec *spec, tokenizer **out, char *err,
               size_t errlen);
void tok_free(tokenizer *t); /* accepts NULL */

size_t tok_vocab_size(const tokenizer *t);
int32_t tok_bos_id(const tokenizer *t); /* -1 when absent */
int32_t tok_eos_id(const tokenizer *t);
int32_t tok_unk_id(const tokenizer *t);
int32_t tok_pad_id(const tokenizer *t);
/* The string of token id (not NUL-terminated) and its length, or NULL
 * when id is out of range. */
const char *tok_token(const tokenizer *t, int32_t id, size_t *len);
/* One line that says what t is, for a log: "byte-level BPE, pre-tokenizer
 * smollm, 49152 tokens, 48900 merges, bos 1, eos 2, adds no special
 * tokens" (cut to fit out, always NUL-terminated). */
void tok_describe(const tokenizer *t, char *out, size_t outlen);

/* Encodes text[0, len) into a new array *ids (free() it) of *n_ids ids.
 * add_special: put the bos / eos ids the tokenizer adds (tok_spec's
 * add_bos / add_eos) around the text, as Hugging Face's
 * encode(add_special_tokens=True) does. dropped (may be NULL): the number
 * of bytes left out because the vocabulary has no symbol for them (see
 * unk_id); decode(encode(x)) is x without those bytes. */
int tok_encode(const tokenizer *t, const void *text, size_t len,
               int add_special, int32_t **ids, size_t *n_ids,
               size_t *dropped, char *err, size_t errlen);

/* Decodes ids into a new buffer *bytes (free() it; NUL-terminated, the
 * NUL not counted in *len). Every token gives its own bytes, special
 * tokens their text; an id out of range is an error. */
int tok_decode(const tokenizer *t, const int32_t *ids, size_t n,
               char **bytes, size_t *len, char *err, size_t errlen);

/* A Hugging Face tokenizer.json: model BPE (vocab + merges, the merges as
 * "a b" strings or as pairs), pre_tokenizer ByteLevel, Sequence[Split(the
 * Llama 3 regex), ByteLevel] or Sequence[Digits(individual), ByteLevel],
 * the added tokens, decoder ByteLevel, and an optional TemplateProcessing
 * post-processor that adds one bos and/or eos token. Anything else (other
 * models, normalizers, regexes, ...) is refused with a message naming it,
 * since encoding it differently would go unnoticed. */
int tok_load_hf_json(const char *path, tokenizer **out, char *err,
                     size_t errlen);
/* The same from a document in memory (text need not be NUL-terminated). */
int tok_load_hf_json_mem(const char *text, size_t len, tokenizer **out,
                         char *err, size_t errlen);

/* Writes a tokenizer.json that Hugging Face tokenizers loads and that
 * encodes as t does, atomically (a temporary file renamed over path).
 * The bos / eos ids go into the post-processor only when t adds them;
 * otherwise they belong in config.json. */
int tok_save_hf_json(const tokenizer *t, const char *path, char *err,
                     size_t errlen);
/* The same document in memory (to be written later, e.g. as a model
 * directory's companion file): *text (free() it), *len bytes,
 * NUL-terminated. */
int tok_hf_json_text(const tokenizer *t, char **text, size_t *len, char *err,
                     size_t errlen);

#endif /* LLAMA_TOKENIZER_H */
