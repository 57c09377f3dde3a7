/* Reading and writing LLaMa checkpoints: Hugging Face safetensors (one file
 * or sharded with model.safetensors.index.json, with config.json; f32, bf16
 * or f16 tensors, converted to f32) and llama2.c .bin files; saving a
 * complete Hugging Face model directory. Every function returns 0 on
 * success, or -1 with a readable message in err. */
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
 * tensor names (dtype: OWL_DTYPE_F32, BF16 or F16; a tied head stored
 * once, as the embedding), and, when config_path is not NULL, a
 * config.json written from the configuration. Each file is written
 * atomically (temp + rename). */
int ckpt_save_safetensors(const char *path, const llama_model *m,
                          owl_dtype dtype, const char *config_path,
                          char *err, size_t errlen);

/* ---- complete model directories ---------------------------------------- */

/* A file a model directory carries besides its weights and config.json
 * (tokenizer files, generation settings: ckpt_dir.h lists them). */
typedef struct ckpt_file {
    char *name;   /* a plain file name */
    char *bytes;
    size_t len;
} ckpt_file;

/* What a saved directory takes from where its model came from, so that
 * it is a complete model that transformers and llama.cpp's converter
 * accept: the source's config.json, whose keys and values a save keeps
 * (only what training changes is rewritten: the stored dtype), and its
 * companion files. Read whole when the model is loaded: by the time of a
 * save the source may be gone, or be the very directory being replaced.
 * A zeroed ckpt_source is an empty one: no config.json (a save writes one
 * from the configuration: a llama2.c file, a fresh model, a GGUF file),
 * no companions. */
typedef struct ckpt_source {
    char *config;        /* config.json text, or NULL */
    size_t config_len;
    ckpt_file *files;
    size_t nfiles;
} ckpt_source;

/* Reads DIR/config.json (required) and every companion file DIR has. */
int ckpt_source_read(const char *dir, ckpt_source *src, char *err,
                     size_t errlen);
/* Adds (or replaces) a companion file, copied: e.g. a tokenizer.json
 * built from another format's metadata. The name must be a companion. */
int ckpt_source_add_file(ckpt_source *src, const char *name,
                         const void *bytes, size_t len, char *err,
                         size_t errlen);
void ckpt_source_free(ckpt_source *src);

/* The config.json a save of m writes (see hf_config_text): the source's
 * text with torch_dtype rewritten, or one from the configuration when
 * src is NULL or has no config. *text is freed by the caller. */
int ckpt_config_text(const llama_model *m, owl_dtype dtype,
                     const ckpt_source *src, char **text, size_t *len,
                     char *err, size_t errlen);

/* Writes a complete Hugging Face model into the existing directory dir:
 * model.safetensors (dtype F32, BF16 or F16), config.json
 * (ckpt_config_text) and the source's companion files (src may be NULL).
 * Each file is written atomically, the directory as a whole is not: a
 * trainer writes into a ckpt_stage (ckpt_dir.h) and commits it. */
int ckpt_save_hf(const char *dir, const llama_model *m, owl_dtype dtype,
                 const ckpt_source *src, char *err, size_t errlen);

#endif /* LLAMA_CHECKPOINT_H */
