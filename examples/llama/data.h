/* Training data for the reference trainer: a byte-level tokenizer, text
 * tokenized by a model's tokenizer, files of pre-tokenized ids, a held-out split, reproducible batches, and a small
 * synthetic language (with a shifted variant for fine-tuning). Functions
 * that can fail return 0 on success, or -1 with a readable message in err. */
#ifndef LLAMA_DATA_H
#define LLAMA_DATA_H

#include "tokenizer.h"

#include <stddef.h>
#include <stdint.h>

/* A sequence of token ids. `owned` is 1 when ids was allocated by this
 * module (data_free releases it), 0 for a view into another sequence. */
typedef struct data_ids {
    int32_t *ids;
    size_t n;
    int owned;
} data_ids;

void data_free(data_ids *d);

/* Byte-level tokenizer: byte b is id b (vocabulary 256). */
void data_encode_bytes(const unsigned char *text, size_t len, int32_t *ids);
/* Writes the bytes of ids into out; -1 (err) when an id is not in 0..255. */
int data_decode_bytes(const int32_t *ids, size_t n, unsigned char *out,
                      char *err, size_t errlen);

/* A text file as byte ids. */
int data_load_text(const char *path, data_ids *out, char *err, size_t errlen);
/* A text file tokenized with tok (tok_encode, with the special tokens
 * the tokenizer adds). *n_bytes: the file's size; *dropped: the bytes
 * left out because the vocabulary has no symbol for them (either may be
 * NULL). An empty file, or one that gives no token, is an error. */
int data_load_tokenized(const char *path, const tokenizer *tok,
                        data_ids *out, size_t *n_bytes, size_t *dropped,
                        char *err, size_t errlen);
/* A file of little-endian unsigned ids of `bits` (16 or 32) each; its size
 * must be a multiple of bits/8. Ids above INT32_MAX are rejected. */
int data_load_ids(const char *path, int bits, data_ids *out, char *err,
                  size_t errlen);
/* The largest id in d (-1 when empty). */
int32_t data_max_id(const data_ids *d);

/* Splits all into views: train = the first part, held = the last
 * round(n * heldout) ids. 0 < heldout < 1 and both parts must keep at least
 * min_len ids. */
int data_split(const data_ids *all, double heldout, size_t min_len,
               data_ids *train, data_ids *held, char *err, size_t errlen);

/* Counter-based hash of (seed, step, index): the batch positions are a pure
 * function of these, so any step's batch can be rebuilt (e.g. on resume). */
uint64_t data_hash(uint64_t seed, uint64_t step, uint64_t index);

/* Batch `step`: B windows of T + 1 ids, window b starting at
 * data_hash(seed, step, b) mod (n - T); inputs[b*T + t] = window[t],
 * targets[b*T + t] = window[t + 1]. Needs d->n >= T + 1. */
int data_batch(const data_ids *d, int B, int T, uint64_t seed, uint64_t step,
               int32_t *inputs, int32_t *targets, char *err, size_t errlen);

/* The synthetic language, as bytes, one sentence a line:
 *  - agreement: "the cat near the dogs runs." (the verb agrees with the
 *    subject, not with the nearer noun),
 *  - arithmetic facts: "3+4=7.",
 *  - copy and reverse: "copy kdq>kdq." and "rev kdq>qdk.".
 * The shifted variant (for fine-tuning) uses the same alphabet with other
 * rules: sentences with their word order reversed ("runs dogs the near cat
 * the."), subtraction facts "9-4=5.", and doubling "dup kdq>kkddqq.".
 * Generates exactly nbytes bytes (the last sentence cut) from seed. */
enum { DATA_SYNTH_BASE = 0, DATA_SYNTH_SHIFTED = 1 };
int data_synthetic(uint64_t seed, int variant, size_t nbytes, data_ids *out,
                   char *err, size_t errlen);

#endif /* LLAMA_DATA_H */
