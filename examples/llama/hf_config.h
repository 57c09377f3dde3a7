/* config.json of a Hugging Face LLaMa checkpoint: read into a
 * llama_config, and written either from a source's text, rewritten in
 * place, or from the configuration alone. Functions return 0, or -1 with
 * a readable message in err. */
#ifndef LLAMA_HF_CONFIG_H
#define LLAMA_HF_CONFIG_H

#include "json.h"
#include "llama.h"

#include <stddef.h>
#include <stdint.h>

/* The configuration of a parsed config.json (path names it in messages);
 * seq_len is its context, max_position_embeddings (2048 when absent, as
 * in LlamaConfig). Architectures this model does not implement are
 * refused. */
int hf_config_parse(const json_value *j, const char *path, llama_config *c,
                    char *err, size_t errlen);

/* The config.json of a saved model of configuration c, context
 * context_len, weights stored as dtype (F32, BF16 or F16):
 *  - with a source (its config.json text, source_len bytes), that text
 *    byte for byte except the values a save changes: torch_dtype (and
 *    dtype, newer transformers' name for it, where present), rewritten,
 *    or added when absent. Every other key keeps its value and its
 *    spelling. The source must describe c and context_len;
 *  - without one (source NULL), a config.json written from c.
 * *out (free it) holds *out_len bytes, NUL-terminated. */
int hf_config_text(const char *source, size_t source_len,
                   const llama_config *c, int context_len, owl_dtype dtype,
                   char **out, size_t *out_len, char *err, size_t errlen);

/* A config.json written from c alone (LlamaForCausalLM, model_type
 * llama, every key the architecture needs, max_position_embeddings =
 * context_len), with bos_token_id / eos_token_id when they are >= 0:
 * the config of a model that came without one (a GGUF file, llama2.c, a
 * fresh model). *out as above. */
int hf_config_write(const llama_config *c, int context_len, owl_dtype dtype,
                    int32_t bos_id, int32_t eos_id, char **out,
                    size_t *out_len, char *err, size_t errlen);

#endif /* LLAMA_HF_CONFIG_H */
