/*
 * Rotary position embedding and grouped-query causal self-attention,
 * forward and backward (see model.c for the whole model).
 *
 * RoPE follows Hugging Face's LlamaRotaryEmbedding / rotate_half: within a
 * head, coordinate i is paired with i + head_dim/2 and the pair rotated by
 * the angle t * theta^(-2i/head_dim). The original LLaMa code and llama2.c
 * pair coordinates (2i, 2i+1) instead; the two are the same model up to a
 * permutation of the rows of wq and wk within each head, which is what
 * Hugging Face's conversion script applies. The checkpoint reader does that
 * permutation for llama2.c files, so this file implements only the Hugging
 * Face convention.
 *
 * Attention works on one (sequence, head) pair at a time, with GEMMs on
 * strided views of the token-major q/k/v matrices: head h reads kv head
 * h / (n_heads / n_kv_heads).
 */
#include "model_internal.h"

#include <cblas.h>
#include <math.h>
#include <string.h>

void llama_rope(const llama_model *m, float *x, int n, int T, int heads,
                int inverse)
{
    int hd = m->head_dim, half = hd / 2;
    /* The inverse rotation is the rotation by -angle: flip sin's sign. */
    float sign = inverse ? -1.0f : 1.0f;
    for (int r = 0; r < n; r++) {
        const float *cs = m->acts->rope_cos + (size_t)(r % T) * half;
        const float *sn = m->acts->rope_sin + (size_t)(r % T) * half;
        for (int h = 0; h < heads; h++) {
            float *v = x + (size_t)r * heads * hd + (size_t)h * hd;
            for (int i = 0; i < half; i++) {
                float a = v[i], b = v[i + half], s = sign * sn[i];
                v[i] = a * cs[i] - b * s;
                v[i + half] = b * cs[i] + a * s;
            }
        }
    }
}

/* Row-wise causal softmax of a T x T score matrix in place: row t keeps
 * columns 0..t, the rest become exact zeros. Max subtraction keeps expf in
 * range; the sum is in double. */
static void causal_softmax(float *p, int T)
{
    for (int t = 0; t < T; t++) {
        float *row = p + (size_t)t * T;
        float mx = row[0];
        for (int s = 1; s <= t; s++)
            mx = row[s] > mx ? row[s] : mx;
        double sum = 0.0;
        for (int s = 0; s <= t; s++) {
            row[s] = expf(row[s] - mx);
            sum += row[s];
        }
        float inv = (float)(1.0 / sum);
        for (int s = 0; s <= t; s++)
            row[s] *= inv;
        for (int s = t + 1; s < T; s++)
            row[s] = 0.0f;
    }
}

/* Offsets of one (sequence b, head h) pair in the token-major matrices. */
typedef struct head_view {
    size_t q, kv, probs; /* q/att_out offset, k/v offset, probs_att offset */
    int ldq, ldkv;       /* leading dimensions: qdim, kvdim */
} head_view;

static head_view head_at(const llama_model *m, int b, int h, int T)
{
    const llama_config *c = &m->cfg;
    int hd = m->head_dim, group = c->n_heads / c->n_kv_heads;
    head_view v;
    v.ldq = hd * c->n_heads;
    v.ldkv = hd * c->n_kv_heads;
    v.q = (size_t)b * T * v.ldq + (size_t)h * hd;
    v.kv = (size_t)b * T * v.ldkv + (size_t)(h / group) * hd;
    v.probs = ((size_t)b * c->n_heads + h) * T * T;
    return v;
}

void llama_attention_forward(const llama_model *m, const llama_layer_acts *la,
                             int B, int T)
{
    int hd = m->head_dim;
    float scale = 1.0f / sqrtf((float)hd);
    for (int b = 0; b < B; b++)
        for (int h = 0; h < m->cfg.n_heads; h++) {
            head_view v = head_at(m, b, h, T);
            float *P = la->probs_att + v.probs;
            /* S = Q K^T / sqrt(head_dim), then the causal softmax. The
             * masked upper triangle is computed and discarded: one GEMM is
             * faster than T small ones. */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, T, hd,
                        scale, la->q + v.q, v.ldq, la->k + v.kv, v.ldkv,
                        0.0f, P, T);
            causal_softmax(P, T);
            /* O = P V */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, hd, T,
                        1.0f, P, T, la->v + v.kv, v.ldkv, 0.0f,
                        la->att_out + v.q, v.ldq);
        }
}

/* dS = P * (dP - rowsum(dP * P)): the softmax's backward, in place of dP.
 * Masked entries have P = 0 and so get dS = 0. */
static void softmax_backward(float *dp, const float *p, int T)
{
    for (int t = 0; t < T; t++) {
        float *d = dp + (size_t)t * T;
        const float *pr = p + (size_t)t * T;
        double dot = 0.0;
        for (int s = 0; s <= t; s++)
            dot += (double)d[s] * pr[s];
        for (int s = 0; s < T; s++)
            d[s] = pr[s] * (d[s] - (float)dot);
    }
}

void llama_attention_backward(const llama_model *m,
                              const llama_layer_acts *la, int B, int T)
{
    struct llama_acts *a = m->acts;
    int hd = m->head_dim, n = B * T;
    size_t kv_floats = (size_t)n * hd * m->cfg.n_kv_heads;
    float scale = 1.0f / sqrtf((float)hd);
    float *dS = a->d_scores;
    /* Heads of a group add into the same kv head's gradient. */
    memset(a->d_k, 0, kv_floats * sizeof(float));
    memset(a->d_v, 0, kv_floats * sizeof(float));
    for (int b = 0; b < B; b++)
        for (int h = 0; h < m->cfg.n_heads; h++) {
            head_view v = head_at(m, b, h, T);
            const float *P = la->probs_att + v.probs;
            const float *dO = a->d_att_out + v.q;
            /* O = P V: dP = dO V^T, dV += P^T dO. */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, T, hd,
                        1.0f, dO, v.ldq, la->v + v.kv, v.ldkv, 0.0f, dS, T);
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, T, hd, T,
                        1.0f, P, T, dO, v.ldq, 1.0f, a->d_v + v.kv, v.ldkv);
            softmax_backward(dS, P, T);
            /* S = scale Q K^T: dQ = scale dS K, dK += scale dS^T Q. */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, hd, T,
                        scale, dS, T, la->k + v.kv, v.ldkv, 0.0f,
                        a->d_q + v.q, v.ldq);
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, T, hd, T,
                        scale, dS, T, la->q + v.q, v.ldq, 1.0f,
                        a->d_k + v.kv, v.ldkv);
        }
}
