/* A tokenizer from a GGUF file's tokenizer.ggml.* keys: the metadata is
 * turned into a tok_spec (views into the mapped file, copied by
 * tok_create) after checking what tok_create cannot see: which keys are
 * there, their types, and that every id and per-token array fits the
 * tokens. See tok_gguf.h. */
#include "tok_gguf.h"
#include "errmsg.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int str_is(gguf_str s, const char *c)
{
    return s.len == strlen(c) && memcmp(s.ptr, c, s.len) == 0;
}

/* llama.cpp's names of the pre-tokenizers built here; *ignore_merges for
 * Llama 3's, whose tokenizer.json sets it. NULL for the others. */
static const char *pre_name(gguf_str s, int *ignore_merges)
{
    *ignore_merges = 0;
    if (str_is(s, "default") || str_is(s, "gpt2") || str_is(s, "gpt-2"))
        return "gpt2";
    if (str_is(s, "smollm"))
        return "smollm";
    if (str_is(s, "llama-bpe") || str_is(s, "llama3") ||
        str_is(s, "llama-v3")) {
        *ignore_merges = 1;
        return "llama-bpe";
    }
    return NULL;
}

/* A string array key as tok_str views; *n 0 and *out NULL when absent
 * and not required. */
static int str_array(const gguf_file *f, const char *key, int required,
                     tok_str **out, size_t *n, size_t max, char *err,
                     size_t errlen)
{
    const gguf_value *arr;
    gguf_type et;
    uint64_t count;
    *out = NULL;
    *n = 0;
    int rc = gguf_get_array(f, key, &arr, &et, &count, err, errlen);
    if (rc == 1 && !required)
        return 0;
    if (rc != 0)
        return -1; /* err says it is missing or not an array */
    if (et != GGUF_TYPE_STRING)
        return llama_fail(err, errlen, "%s: %s is an array of %s, not of STRING",
                    f->name, key, gguf_type_name(et));
    if (count > max)
        return llama_fail(err, errlen, "%s: %s has %llu entries (at most %zu)",
                    f->name, key, (unsigned long long)count, max);
    tok_str *s = malloc((count ? count : 1) * sizeof *s);
    if (!s)
        return llama_fail(err, errlen, "%s: out of memory for %s", f->name, key);
    for (uint64_t i = 0; i < count; i++) {
        gguf_str g;
        gguf_array_str(arr, i, &g); /* in range, of strings: cannot fail */
        s[i].ptr = g.ptr;
        s[i].len = (size_t)g.len;
    }
    *out = s;
    *n = (size_t)count;
    return 0;
}

/* A per-token numeric array (token_type, scores): absent is fine, present
 * it must have one entry per token. */
static int per_token(const gguf_file *f, const char *key, size_t n_tokens,
                     int is_float, void **out, char *err, size_t errlen)
{
    const gguf_value *arr;
    uint64_t count;
    *out = NULL;
    int rc = gguf_get_array(f, key, &arr, NULL, &count, err, errlen);
    if (rc == 1)
        return 0;
    if (rc != 0)
        return -1;
    if (count != n_tokens)
        return llama_fail(err, errlen, "%s: %s has %llu entries for %zu tokens",
                    f->name, key, (unsigned long long)count, n_tokens);
    void *p = malloc((n_tokens ? n_tokens : 1) * 4);
    if (!p)
        return llama_fail(err, errlen, "%s: out of memory for %s", f->name, key);
    char what[128];
    snprintf(what, sizeof what, "%s: %s", f->name, key);
    rc = is_float ? gguf_array_f32(arr, p, what, err, errlen)
                  : gguf_array_i32(arr, p, what, err, errlen);
    if (rc != 0) {
        free(p);
        return -1;
    }
    *out = p;
    return 0;
}

static int flag_key(const gguf_file *f, const char *key, int *out, char *err,
                    size_t errlen)
{
    *out = 0;
    int rc = gguf_get_bool(f, key, out, err, errlen);
    return rc == 1 ? 0 : rc;
}

int tok_from_gguf(const gguf_file *f, tokenizer **out, char *err,
                  size_t errlen)
{
    if (!out)
        return llama_fail(err, errlen, "tok_from_gguf: out is NULL");
    *out = NULL;
    if (!f)
        return llama_fail(err, errlen, "tok_from_gguf: no file");
    gguf_str model, pre = {"default", 7};
    int rc = gguf_get_str(f, "tokenizer.ggml.model", &model, err, errlen);
    if (rc == 1 || (rc == 0 && str_is(model, "none"))) {
        llama_fail(err, errlen, "%s: no tokenizer (tokenizer.ggml.model)", f->name);
        return 1;
    }
    if (rc != 0)
        return -1;
    if (str_is(model, "llama"))
        return llama_fail(err, errlen, "%s: tokenizer.ggml.model 'llama' (a "
                    "SentencePiece tokenizer, as Llama 2's) is not "
                    "implemented; only 'gpt2' (byte-level BPE) is",
                    f->name);
    if (!str_is(model, "gpt2"))
        return llama_fail(err, errlen, "%s: tokenizer.ggml.model '%.*s' is not "
                    "implemented; only 'gpt2' (byte-level BPE) is", f->name,
                    (int)(model.len > 64 ? 64 : model.len), model.ptr);
    if (gguf_get_str(f, "tokenizer.ggml.pre", &pre, err, errlen) < 0)
        return -1;
    tok_spec spec;
    tok_spec_init(&spec);
    spec.model = "gpt2";
    spec.pre = pre_name(pre, &spec.ignore_merges);
    if (!spec.pre)
        return llama_fail(err, errlen, "%s: tokenizer.ggml.pre '%.*s' is not "
                    "implemented (known: gpt2, smollm, llama-bpe, default)",
                    f->name, (int)(pre.len > 64 ? 64 : pre.len), pre.ptr);

    tok_str *tokens = NULL, *merges = NULL;
    int32_t *types = NULL;
    float *scores = NULL;
    int32_t unk = -1;
    rc = -1;
    if (str_array(f, "tokenizer.ggml.tokens", 1, &tokens, &spec.n_tokens,
                  TOK_MAX_TOKENS, err, errlen))
        goto done;
    if (spec.n_tokens == 0) {
        llama_fail(err, errlen, "%s: tokenizer.ggml.tokens is empty", f->name);
        goto done;
    }
    if (gguf_get(f, "tokenizer.ggml.merges") == NULL) {
        llama_fail(err, errlen, "%s: tokenizer.ggml.merges is missing: a "
             "byte-level BPE is its merges", f->name);
        goto done;
    }
    if (str_array(f, "tokenizer.ggml.merges", 1, &merges, &spec.n_merges,
                  TOK_MAX_MERGES, err, errlen) ||
        per_token(f, "tokenizer.ggml.token_type", spec.n_tokens, 0,
                  (void **)&types, err, errlen) ||
        per_token(f, "tokenizer.ggml.scores", spec.n_tokens, 1,
                  (void **)&scores, err, errlen) ||
        gguf_get_token_id(f, "tokenizer.ggml.bos_token_id", spec.n_tokens,
                          &spec.bos_id, err, errlen) ||
        gguf_get_token_id(f, "tokenizer.ggml.eos_token_id", spec.n_tokens,
                          &spec.eos_id, err, errlen) ||
        gguf_get_token_id(f, "tokenizer.ggml.unknown_token_id", spec.n_tokens,
                          &unk, err, errlen) ||
        gguf_get_token_id(f, "tokenizer.ggml.padding_token_id", spec.n_tokens,
                          &spec.pad_id, err, errlen) ||
        flag_key(f, "tokenizer.ggml.add_bos_token", &spec.add_bos, err,
                 errlen) ||
        flag_key(f, "tokenizer.ggml.add_eos_token", &spec.add_eos, err,
                 errlen))
        goto done;
    if (spec.add_bos && spec.bos_id < 0) {
        llama_fail(err, errlen, "%s: tokenizer.ggml.add_bos_token is true but "
             "there is no tokenizer.ggml.bos_token_id", f->name);
        goto done;
    }
    if (spec.add_eos && spec.eos_id < 0) {
        llama_fail(err, errlen, "%s: tokenizer.ggml.add_eos_token is true but "
             "there is no tokenizer.ggml.eos_token_id", f->name);
        goto done;
    }
    /* A byte without a symbol becomes the unknown token only when there
     * is a token of that type, as Hugging Face's BPE has an unk_token
     * only then; otherwise it is left out. */
    if (unk >= 0 && types && types[unk] == TOK_TYPE_UNKNOWN)
        spec.unk_id = unk;
    spec.tokens = tokens;
    spec.merges = merges;
    spec.token_types = types;
    spec.scores = scores;
    char terr[512];
    if (tok_create(&spec, out, terr, sizeof terr) != 0) {
        llama_fail(err, errlen, "%s: %s", f->name, terr);
        goto done;
    }
    rc = 0;
done:
    free(tokens);
    free(merges);
    free(types);
    free(scores);
    return rc;
}
