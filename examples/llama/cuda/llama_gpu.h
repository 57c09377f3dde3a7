/*
 * The LLaMa model of llama.h on a CUDA device: bf16 weights, f32
 * accumulation, cuBLAS GEMMs and the kernels of lk.h, all on one stream.
 * Gradient buffers exist only for what trains: the embeddings and head
 * when asked, and a pool of max_trainable_layers decoder layers that the
 * trainer binds to the active layers each step, so device memory grows
 * with gamma, not with the number of layers.
 *
 * The same code also runs on the host through the emulated device
 * (gpu_emu.c and emu/), which is how the CPU tests check it against the
 * f32 model of model.c.
 *
 * Every function returns 0 on success, else -1 with a message that
 * llama_gpu_error() returns.
 */
#ifndef LLAMA_GPU_H
#define LLAMA_GPU_H

#include "../llama.h"

#include <owlore/owlore.h>

#include <stddef.h>
#include <stdint.h>

typedef struct llama_gpu llama_gpu;

typedef struct llama_gpu_options {
    int device;               /* CUDA device ordinal */
    void *stream;             /* cudaStream_t to run on; NULL: the model's own */
    int max_batch;            /* sequences per forward, each <= cfg.seq_len */
    int max_trainable_layers; /* gradient pool size: gamma (OWLORE, LISA)
                               * or n_layers (FULL, GALORE) */
    int train_embeddings;     /* gradient buffers for the token embedding */
    int train_head;           /* ... for the final norm and the LM head */
    int recompute;            /* 1: keep only each layer's input and
                               * recompute the rest in the backward pass */
} llama_gpu_options;

/* Default options: device 0, own stream, max_batch 1, pool = n_layers,
 * embeddings and head trained, no recomputation. */
void llama_gpu_options_default(llama_gpu_options *o, const llama_config *cfg);

/* Creates the model and reserves every buffer (weights, gradient pool,
 * activations, workspace) up front; *out is NULL on failure, with the
 * message in err. */
int llama_gpu_create(llama_gpu **out, const llama_config *cfg,
                     const llama_gpu_options *o, char *err, size_t errlen);
void llama_gpu_destroy(llama_gpu *m); /* NULL is fine */
const char *llama_gpu_error(const llama_gpu *m);
void *llama_gpu_stream(const llama_gpu *m);
const llama_config *llama_gpu_config(const llama_gpu *m);

/* Weights from / to the f32 host layout of llama.h (rounded to bf16 on the
 * way up). Both wait for the stream. */
int llama_gpu_upload(llama_gpu *m, const llama_params *w);
int llama_gpu_download(llama_gpu *m, llama_params *w);
/* Weights N(0, std^2) from a seed, norm gains 1 (for benchmarks of models
 * too large to build on the host: drawn on the host one tensor at a time
 * and uploaded, so the host never holds the whole model). */
int llama_gpu_init_random(llama_gpu *m, uint64_t seed, float std);

/* Which decoder layers train in the next backward pass (mask[l] = 1;
 * NULL: none): binds a pool buffer to each, at most max_trainable_layers.
 * A layer that is not trainable has no gradient buffer. */
int llama_gpu_set_trainable(llama_gpu *m, const uint8_t *mask);

/* Forward over B x T tokens (host arrays, B <= max_batch, T <= seq_len).
 * With targets, *loss (may be NULL) receives the mean cross-entropy over
 * the positions with target >= 0 and the activations are kept for
 * llama_gpu_backward; waits for the stream to read the loss. */
int llama_gpu_forward(llama_gpu *m, const int32_t *tokens,
                      const int32_t *targets, int B, int T, double *loss);
/* Backward of the last forward with targets: overwrites the gradients of
 * the trainable tensors (embeddings/head as created, layers as set).
 * Enqueued on the stream; does not wait. */
int llama_gpu_backward(llama_gpu *m);

/* The model's tensors, for an optimizer or a communicator: index i in
 * [0, llama_gpu_num_tensors) in a fixed order (embedding, each layer's
 * rms_att wq wk wv wo rms_ffn w_gate w_up w_down, rms_final, head unless
 * tied). grad is NULL while the tensor has no gradient buffer. */
typedef struct llama_gpu_tensor {
    const char *name;  /* e.g. "layers.3.wq" */
    int64_t layer;     /* decoder layer, or -1 for embedding / final / head */
    int64_t rows, cols;/* a norm gain is 1 x dim */
    int matrix;        /* 1 for the seven projections of a layer */
    owl_tensor weight; /* device memory, bf16 */
    owl_tensor grad;   /* device memory; data NULL when not trainable */
} llama_gpu_tensor;

int64_t llama_gpu_num_tensors(const llama_gpu *m);
int llama_gpu_tensor_get(const llama_gpu *m, int64_t i, llama_gpu_tensor *t);

/* Registers every trainable tensor with opt: all decoder layers' tensors
 * (matrices low-rank, norm gains full rank), and the embedding, final norm
 * and head as OWL_LAYER_ALWAYS when they were created trainable (one with
 * no gradient buffer could never step). Binds the current gradients;
 * llama_gpu_bind_grads rebinds them after set_trainable. */
int llama_gpu_register(llama_gpu *m, owl_optimizer *opt);
int llama_gpu_bind_grads(llama_gpu *m, owl_optimizer *opt);

/* Device bytes the model holds by category: now and the peak since create
 * (activations and workspace at their high-water mark). */
typedef struct llama_gpu_memory {
    uint64_t weights, grads, activations, workspace;
    uint64_t peak_total; /* model's own peak (not the optimizer's) */
} llama_gpu_memory;
void llama_gpu_memory_get(const llama_gpu *m, llama_gpu_memory *mem);

#endif /* LLAMA_GPU_H */
