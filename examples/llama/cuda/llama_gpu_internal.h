/* What llama_gpu.c, llama_gpu_forward.c and llama_gpu_backward.c share:
 * the model's device buffers and the helpers of the passes. Not part of
 * the model's interface (llama_gpu.h). */
#ifndef LLAMA_GPU_INTERNAL_H
#define LLAMA_GPU_INTERNAL_H

#include "gpu.h"
#include "lk.h"
#include "llama_gpu.h"

#include <stddef.h>
#include <stdint.h>

/* One decoder layer's tensors (weights, or a pool slot's gradients): bf16
 * device memory in the order of llama_layer. */
typedef struct lg_layer {
    lk_bf16 *rms_att, *wq, *wk, *wv, *wo, *rms_ffn, *w_gate, *w_up, *w_down;
} lg_layer;

/* One layer's activations, kept for the backward pass (one set per layer,
 * or a single set reused by every layer when recomputing). Rows are
 * tokens b*T + t; each buffer holds max_batch*seq_len rows. */
typedef struct lg_acts {
    float *h;                 /* [BT x dim] residual after attention */
    float *rstd_att, *rstd_ffn; /* [BT] */
    float *lse;               /* [B][n_heads][T] attention log-sum-exps */
    lk_bf16 *xn_att;          /* [BT x dim] q/k/v input */
    lk_bf16 *q, *k, *v;       /* after RoPE */
    lk_bf16 *o;               /* [BT x qdim] attention output: wo's input */
    lk_bf16 *xn_ffn;          /* [BT x dim] gate/up input */
    lk_bf16 *gate, *up, *mid; /* [BT x hidden] */
} lg_acts;

enum { LG_MAX_BUFFERS = 64, LG_NAME_LEN = 40 };

struct llama_gpu {
    llama_config cfg;
    llama_gpu_options opt;
    int head_dim, qdim, kvdim;
    size_t bt_max; /* max_batch * seq_len rows */
    gd_dev *dev;
    char err[512];

    /* Every device buffer, for destroy. */
    struct { void *p; size_t bytes; gd_mem_cat cat; } bufs[LG_MAX_BUFFERS];
    int nbufs;

    /* Weights (bf16). */
    lk_bf16 *embed, *rms_final, *head; /* head == embed when tied */
    lg_layer *w;                       /* [n_layers] */

    /* Gradients (bf16): NULL where the tensor does not train. */
    int grad_embed, grad_head;         /* what the backward pass writes */
    lk_bf16 *g_embed, *g_rms_final, *g_head;
    lk_bf16 *pool;                     /* pool_size slots of one layer */
    size_t layer_elems;                /* elements of one layer's tensors */
    lg_layer *g;                       /* [n_layers]; zeroed when frozen */
    uint8_t *trainable;                /* [n_layers] as last set */

    /* Activations. */
    float *x;              /* [L+1][BT x dim] residual entering each layer */
    int act_sets;          /* n_layers, or 1 when recomputing */
    lg_acts *acts;         /* [act_sets] */
    float *rstd_final;     /* [BT] */
    lk_bf16 *xn_final;     /* [BT x dim] */
    lk_bf16 *logits;       /* [BT x vocab]; dL/dlogits after the loss */
    float *row_loss;       /* [BT] */
    int32_t *tokens, *targets; /* [BT] device copies */

    /* Workspace. */
    float *rope_cos, *rope_sin; /* [seq_len x head_dim/2] */
    float *d_res, *d_norm;      /* [BT x dim] f32 */
    lk_bf16 *d_res_b;           /* [BT x dim] bf16 copy of d_res for GEMMs */
    lk_bf16 *d_gate, *d_up;     /* [BT x hidden]; d_gate doubles as d_mid */
    lk_bf16 *d_o, *d_q, *d_k, *d_v;
    float *delta;               /* [B*n_heads*T] attention backward scratch */
    float *gain_acc;            /* [dim] a norm gain's f32 gradient */
    float *d_embed_acc;         /* [vocab x dim] f32 embedding gradient */

    /* Host side. */
    float *host_loss;      /* [BT] row losses read back */
    int B, T;              /* shape of the last forward */
    int valid;             /* a forward with targets awaits backward */
    int counted;           /* targets >= 0 in it */

    /* The optimizer the tensors were registered with. */
    owl_optimizer *optimizer;
    uint64_t *opt_index;   /* [num_tensors]; UINT64_MAX: not registered */
    char (*names)[LG_NAME_LEN]; /* [num_tensors] the tensors' names */
};

/* Sets m->err from the device layer's message; returns -1. */
int lg_fail_dev(llama_gpu *m);
/* Sets m->err; returns -1. */
int lg_fail(llama_gpu *m, const char *fmt, ...);

#define LG_TRY(m, call)                                                        \
    do {                                                                       \
        if ((call) != 0)                                                       \
            return lg_fail_dev(m);                                             \
    } while (0)
/* A kernel launcher's cudaError_t, checked; the message names it. */
#define LG_LK(m, name, call)                                                   \
    do {                                                                       \
        if (gd_check_launch((m)->dev, (call), name) != 0)                     \
            return lg_fail_dev(m);                                             \
    } while (0)

static inline lg_acts *lg_layer_acts(llama_gpu *m, int l)
{
    return &m->acts[m->act_sets == 1 ? 0 : l];
}

static inline float *lg_x(llama_gpu *m, int l)
{
    return m->x + (size_t)l * m->bt_max * (size_t)m->cfg.dim;
}

/* Linear layers on n tokens with a [out x in] weight (bf16 operands, f32
 * compute): out (+)= in . W^T; d_in (+)= d_out . W (f32); dW = d_out^T .
 * in (bf16). beta is 0 or 1. */
int lg_linear(llama_gpu *m, void *out, gd_dtype out_type, float beta,
              const lk_bf16 *in, const lk_bf16 *W, int n, int in_dim,
              int out_dim);
int lg_linear_d_in(llama_gpu *m, float *d_in, float beta,
                   const lk_bf16 *d_out, const lk_bf16 *W, int n, int in_dim,
                   int out_dim);
int lg_linear_d_in_bf16(llama_gpu *m, lk_bf16 *d_in, const lk_bf16 *d_out,
                        const lk_bf16 *W, int n, int in_dim, int out_dim);
int lg_linear_d_w(llama_gpu *m, void *d_w, gd_dtype d_w_type,
                  const lk_bf16 *d_out, const lk_bf16 *in, int n, int in_dim,
                  int out_dim);

/* One decoder layer's forward pass from x_l into its activation set;
 * x_{l+1} is written when write_next (not when recomputing for the
 * backward pass). */
int lg_layer_forward(llama_gpu *m, int l, int B, int T, int write_next);

#endif /* LLAMA_GPU_INTERNAL_H */
