/* A LLaMa decoder in plain C, f32, on the CPU: token embedding, RMSNorm,
 * RoPE, grouped-query causal attention, SwiGLU MLP, final norm, LM head
 * (tied or not), cross-entropy loss; forward and backward. It is the model
 * of the reference trainer (train.c) and knows nothing of libowlore except
 * the optional activation-statistics hook of the forward pass, which calls
 * the public owl_act_norm_accumulate. */
#ifndef LLAMA_H
#define LLAMA_H

#include <owlore/owlore.h>

#include <stddef.h>
#include <stdint.h>

typedef struct llama_config {
    int dim;          /* hidden size */
    int hidden_dim;   /* MLP intermediate size */
    int n_layers;
    int n_heads;
    int n_kv_heads;   /* divides n_heads (grouped-query attention) */
    int vocab_size;
    int seq_len;      /* longest sequence the model is run on */
    float rope_theta; /* 10000 for LLaMa-2 */
    float norm_eps;   /* RMSNorm epsilon (1e-5 for LLaMa-2) */
    int tied;         /* 1: the LM head is the token embedding */
} llama_config;

/* One decoder layer's tensors. Matrices are row-major [out x in], as
 * PyTorch's nn.Linear.weight and Hugging Face checkpoints store them. */
typedef struct llama_layer {
    float *rms_att;        /* [dim] */
    float *wq;             /* [n_heads*head_dim x dim] */
    float *wk, *wv;        /* [n_kv_heads*head_dim x dim] */
    float *wo;             /* [dim x n_heads*head_dim] */
    float *rms_ffn;        /* [dim] */
    float *w_gate, *w_up;  /* [hidden_dim x dim] */
    float *w_down;         /* [dim x hidden_dim] */
} llama_layer;

/* Every parameter of the model (or every gradient: the same layout). All
 * arrays are views into one contiguous block `base` of `count` floats. */
typedef struct llama_params {
    float *embed;          /* [vocab x dim] */
    llama_layer *layers;   /* [n_layers] */
    float *rms_final;      /* [dim] */
    float *head;           /* [vocab x dim]; == embed when tied */
    float *base;
    size_t count;
} llama_params;

/* Activation-statistics hook: when set, the forward pass adds the squared
 * column norms of each linear layer's input into these 1 x n f32/f64
 * tensors with owl_act_norm_accumulate (q/k/v share one input, gate/up
 * share one, o and down each have their own). Arrays of n_layers. */
typedef struct llama_act_stats {
    owl_context *ctx;
    owl_tensor *attn_in;  /* 1 x dim */
    owl_tensor *attn_out; /* 1 x n_heads*head_dim */
    owl_tensor *mlp_in;   /* 1 x dim */
    owl_tensor *mlp_mid;  /* 1 x hidden_dim */
} llama_act_stats;

typedef struct llama_model {
    llama_config cfg;
    int head_dim;
    int context_len;     /* the checkpoint's context length (Hugging Face
                          * max_position_embeddings), which a save writes
                          * back; cfg.seq_len, the longest sequence this
                          * run allocates for, may be shorter. llama_create
                          * sets it to cfg.seq_len, a loader to the file's. */
    llama_params w;      /* weights */
    llama_params g;      /* gradients, same layout */
    struct llama_acts *acts; /* activations of the last forward (private) */
    int batch, seq;      /* shape of the last forward */
} llama_model;

/* Checks the configuration; 0 when usable, else -1 with a message. */
int llama_config_check(const llama_config *c, char *err, size_t errlen);

/* The bytes llama_create allocates, by what they hold. */
typedef struct llama_memory {
    uint64_t weights;     /* the f32 parameters and the layer tables */
    uint64_t gradients;   /* the same layout again */
    uint64_t activations; /* what the forward pass keeps for the backward
                           * pass (and the logits), for max_batch x seq_len
                           * tokens */
    uint64_t workspace;   /* the backward pass's scratch, RoPE tables */
    uint64_t total;
} llama_memory;

/* The memory of llama_create(cfg, max_batch), computed from the
 * configuration alone; 0, or -1 with a message when the configuration is
 * unusable or a size does not fit in a size_t (no product wraps). */
int llama_memory_plan(const llama_config *c, int max_batch,
                      llama_memory *out, char *err, size_t errlen);
/* 0 when the plan of llama_create(cfg, max_batch) fits in MemAvailable
 * of /proc/meminfo (or that cannot be read); else -1 with both figures,
 * the plan's parts and the trainer flags that size it. */
int llama_memory_check(const llama_config *c, int max_batch, char *err,
                       size_t errlen);
/* Allocates weights and gradients (zeroed) for cfg, and activations for
 * up to max_batch sequences of cfg.seq_len tokens. 0 on success. Before
 * allocating, llama_memory_check: a model that does not fit is refused. */
int llama_create(llama_model *m, const llama_config *cfg, int max_batch,
                 char *err, size_t errlen);
void llama_destroy(llama_model *m);
/* Weights drawn N(0, std^2) from a seed (norm gains set to 1), as a fresh
 * model for pre-training. */
void llama_init_random(llama_model *m, uint64_t seed, float std);
/* Number of floats in the parameters (the head counted once when tied);
 * 0 when it does not fit in a size_t. */
size_t llama_param_count(const llama_config *c);

/*
 * Forward pass over B sequences of T tokens (tokens[b*T + t] in
 * [0, vocab)); keeps the activations for llama_backward. With targets
 * (same shape; a negative target is ignored), returns the mean
 * cross-entropy loss over the counted positions, else 0. logits (may be
 * NULL): [B*T x vocab] output. stats (may be NULL): the LOD hook.
 */
float llama_forward(llama_model *m, const int32_t *tokens,
                    const int32_t *targets, int B, int T, float *logits,
                    const llama_act_stats *stats);

/* What the backward pass computes gradients for. */
typedef struct llama_trainable {
    const uint8_t *layers; /* [n_layers]: 1 = the layer's weights get
                            * gradients; NULL = every layer */
    int embeddings;        /* token embedding */
    int head;              /* final norm and LM head */
} llama_trainable;

/*
 * Backward pass of the last forward (which had targets): writes the
 * gradient of the mean loss into m->g for the trainable tensors (previous
 * contents overwritten; the other tensors' gradients are left as they
 * are). A frozen layer gets no weight gradient: its backward only passes
 * the activation gradient down, and the pass stops below the lowest
 * trainable layer when the embeddings are not trainable.
 */
void llama_backward(llama_model *m, const llama_trainable *tr);

#endif /* LLAMA_H */
