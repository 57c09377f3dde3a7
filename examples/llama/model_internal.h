/* What model.c and attention.c share: the activations kept for the
 * backward pass and the helpers both use. Not part of the model's
 * interface (llama.h). */
#ifndef LLAMA_MODEL_INTERNAL_H
#define LLAMA_MODEL_INTERNAL_H

#include "llama.h"

#include <stddef.h>
#include <stdint.h>

/* Activations of the last forward pass and the backward pass's scratch,
 * sized at llama_create for max_batch x seq_len tokens. Per-layer
 * quantities are stored layer after layer, each layer's block [B*T x n]
 * for the B x T of the last forward (rows b*T + t). */
struct llama_acts {
    int max_batch;
    int valid;         /* a forward with targets awaits its backward */
    int counted;       /* positions with a target >= 0 */
    int32_t *tokens;   /* [B*T] of the last forward */
    int32_t *targets;  /* [B*T] */
    float *x;          /* [L+1][BT x dim] residual stream entering each
                        * layer; x[L] enters the final norm */
    float *h;          /* [L][BT x dim] residual after attention */
    float *rstd_att;   /* [L][BT] 1/rms of x */
    float *xn_att;     /* [L][BT x dim] rmsnorm(x) * rms_att: q/k/v input */
    float *q;          /* [L][BT x n_heads*head_dim], after RoPE */
    float *k, *v;      /* [L][BT x n_kv_heads*head_dim], k after RoPE */
    float *probs_att;  /* [L][B][n_heads][T x T] attention weights */
    float *att_out;    /* [L][BT x n_heads*head_dim]: wo's input */
    float *rstd_ffn;   /* [L][BT] 1/rms of h */
    float *xn_ffn;     /* [L][BT x dim] rmsnorm(h) * rms_ffn */
    float *gate, *up;  /* [L][BT x hidden] before the gating */
    float *mid;        /* [L][BT x hidden] silu(gate) * up: w_down's input */
    float *rstd_final; /* [BT] */
    float *xn_final;   /* [BT x dim] the head's input */
    float *probs;      /* [BT x vocab] logits, then softmax, then dL/dlogits */
    float *rope_cos, *rope_sin; /* [seq_len x head_dim/2] */
    /* Backward scratch, one layer at a time. */
    float *d_res;      /* [BT x dim] gradient of the residual stream */
    float *d_norm;     /* [BT x dim] gradient of a norm's output */
    float *d_q, *d_k, *d_v, *d_att_out;
    float *d_gate, *d_up; /* [BT x hidden]; d_gate doubles as d_mid */
    float *d_scores;   /* [T x T] one (batch, head) at a time */
};

/* Views of one layer's activations for the current B x T. */
typedef struct llama_layer_acts {
    float *x, *h, *x_next;
    float *rstd_att, *xn_att, *q, *k, *v, *probs_att, *att_out;
    float *rstd_ffn, *xn_ffn, *gate, *up, *mid;
} llama_layer_acts;

void llama_layer_acts_get(const llama_model *m, int l, llama_layer_acts *la);
/* The residual stream after the last layer. */
float *llama_last_x(const llama_model *m);

void llama_linear(float *out, const float *in, const float *w, int n, int K,
                  int M, int accumulate);
void llama_linear_backward(float *d_in, float *d_w, const float *d_out,
                           const float *in, const float *w, int n, int K,
                           int M, int accumulate_d_in);

/* Rotates x [n x heads*head_dim] (row r at position r % T) by RoPE in
 * place; inverse rotates back, which is the backward pass of the rotation
 * (its transpose). */
void llama_rope(const llama_model *m, float *x, int n, int T, int heads,
                int inverse);
/* att_out (and probs_att) from q, k, v of la. */
void llama_attention_forward(const llama_model *m, const llama_layer_acts *la,
                             int B, int T);
/* d_q, d_k, d_v (in m->acts) from d_att_out and the kept activations. */
void llama_attention_backward(const llama_model *m,
                              const llama_layer_acts *la, int B, int T);

#endif
