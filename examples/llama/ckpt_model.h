/* A model from any of the formats the trainer reads (a Hugging Face
 * directory, a GGUF file, a llama2.c .bin), with what comes with it: its
 * tokenizer, and what a save of it carries along (config.json, the
 * tokenizer files), so that a GGUF model saves as a complete Hugging
 * Face directory. Functions return 0, or -1 with a readable message in
 * err. */
#ifndef LLAMA_CKPT_MODEL_H
#define LLAMA_CKPT_MODEL_H

#include "checkpoint.h"
#include "gguf.h"
#include "tokenizer.h"

#include <stddef.h>

typedef struct ckpt_extras {
    /* What a save of the model carries: a directory's config.json and
     * companion files; for a GGUF file, a config.json written from its
     * configuration and tokenizer ids, and its tokenizer as
     * tokenizer.json and tokenizer_config.json; nothing for llama2.c. */
    ckpt_source source;
    /* The model's tokenizer (the GGUF metadata, or the directory's
     * tokenizer.json), or NULL: the model has none (tok_error empty), or
     * it has one that cannot be built here (tok_error says which and
     * why: SentencePiece models, a tokenizer.model without a
     * tokenizer.json, ...). */
    tokenizer *tok;
    char tok_from[64];    /* "the GGUF metadata", "tokenizer.json" */
    char tok_error[512];
} ckpt_extras;

/* Loads path (a directory: ckpt_load_hf; a GGUF file: gguf_load_llama;
 * anything else: ckpt_load_llama2c) into a new model sized for max_batch
 * x max_seq tokens, and *x (zeroed first; ckpt_extras_free it). A
 * tokenizer that cannot be built is not an error here (the model can
 * still train on ids): it is in x->tok_error. What a save would need and
 * the file gets wrong is: a GGUF bos/eos id outside the vocabulary, a
 * token that tokenizer.json cannot hold (not UTF-8). On failure nothing
 * is left allocated. */
int ckpt_load_model(const char *path, llama_model *m, int max_batch,
                    int max_seq, ckpt_extras *x, char *err, size_t errlen);
void ckpt_extras_free(ckpt_extras *x); /* accepts a zeroed one */

/* What a save of m, loaded from the GGUF file f, carries (into *src,
 * zeroed first): config.json from m's configuration and context with
 * the file's bos / eos ids; with a tokenizer (tok, may be NULL), its
 * tokenizer.json and a tokenizer_config.json naming its special tokens
 * (PreTrainedTokenizerFast, so that transformers' AutoTokenizer encodes
 * as tokenizer.json says; the file's tokenizer.chat_template too). */
int ckpt_source_from_gguf(const gguf_file *f, const llama_model *m,
                          const tokenizer *tok, ckpt_source *src, char *err,
                          size_t errlen);

#endif /* LLAMA_CKPT_MODEL_H */
