/* The tokenizer in a GGUF file's metadata (tokenizer.ggml.*), as
 * llama.cpp's converter writes it, built with tok_create. */
#ifndef LLAMA_TOK_GGUF_H
#define LLAMA_TOK_GGUF_H

#include "gguf.h"
#include "tokenizer.h"

#include <stddef.h>

/*
 * Builds the tokenizer of f from its metadata:
 *   tokenizer.ggml.model       "gpt2" (byte-level BPE; the only model built:
 *                              "llama", SentencePiece, is refused by name)
 *   tokenizer.ggml.pre         the pre-tokenizer: "gpt2" / "gpt-2", "smollm",
 *                              "llama-bpe" / "llama3" / "llama-v3" (Llama 3,
 *                              which also takes a pre-token that is a token
 *                              as it is: ignore_merges), "default" or absent
 *                              (GPT-2's split)
 *   tokenizer.ggml.tokens      the token strings (required)
 *   tokenizer.ggml.merges      "left right" (required for "gpt2")
 *   tokenizer.ggml.token_type  one per token (optional; absent: all normal)
 *   tokenizer.ggml.scores      one per token (optional; kept, unused by BPE)
 *   tokenizer.ggml.bos_token_id, .eos_token_id, .padding_token_id
 *   tokenizer.ggml.unknown_token_id  used only when that token's type is
 *                              UNKNOWN: SmolLM2 names its control token
 *                              <|endoftext|> here, which Hugging Face never
 *                              emits for a byte without a symbol
 *   tokenizer.ggml.add_bos_token, .add_eos_token   (absent: false)
 * Every id must be below the number of tokens, every per-token array as
 * long as the tokens.
 * Returns 0 with *out set; 1 when f has no tokenizer (no
 * tokenizer.ggml.model, or "none"), *out NULL; -1 with a message naming
 * the file and the key, *out NULL.
 */
int tok_from_gguf(const gguf_file *f, tokenizer **out, char *err,
                  size_t errlen);

#endif /* LLAMA_TOK_GGUF_H */
