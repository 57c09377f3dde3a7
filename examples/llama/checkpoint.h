/* Reading and writing LLaMa checkpoints: Hugging Face safetensors (one file
 * or sharded with model.safetensors.index.json, with config.json; f32, bf16
 * or f16 tensors, converted to f32) and llama2.c .bin files. Every function
 * returns 0 on success, or -1 with a readable message in err. */
#ifndef LLAMA_CHECKPOINT_H
#define LLAMA_CHECKPOINT_H

#include "llama.h"

#include <stddef.h>

/* Loads a Hugging Face checkpoint directory (config.json plus
 * model.safetensors or model.safetensors.index.json and its shards) into a
 * new model created with llama_create(m, &cfg, max_batch, ...), where
 * cfg.seq_len = min(context, max_seq) (max_seq 0: the context), the
 * context being max_position_embeddings (m->context_len keeps it): the
 * activations are sized by the run, not by the checkpoint. */
int ckpt_load_hf(const char *dir, llama_model *m, int max_batch, int max_seq,
                 char *err, size_t errlen);
/* Loads a llama2.c checkpoint (.bin: seven int32 then f32 arrays) into a
 * new model. The context is the file's seq_len, the model created for
 * min(context, max_seq) as above; rope_theta 10000, eps 1e-5. */
int ckpt_load_llama2c(const char *path, llama_model *m, int max_batch,
                      int max_seq, char *err, size_t errlen);
/* Loads weights from one safetensors file into an existing model whose
 * configuration matches the tensors (Hugging Face tensor names). */
int ckpt_load_safetensors(const char *path, llama_model *m, char *err,
                          size_t errlen);
/* Writes the model's weights as one safetensors file with Hugging Face
 * tensor names (dtype: OWL_DTYPE_F32, BF16 or F16), and config.json next to
 * it when config_path is not NULL. Written atomically (temp + rename). */
int ckpt_save_safetensors(const char *path, const llama_model *m,
                          owl_dtype dtype, const char *config_path,
                          char *err, size_t errlen);

#endif /* LLAMA_CHECKPOINT_H */
