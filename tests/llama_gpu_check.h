/* The device model (examples/llama/cuda/llama_gpu.h) against the f32 CPU
 * model (llama.h) on the same weights and batch: shared by the emulated
 * test (suite 'cpu') and the GPU test (suite 'gpu'), which differ only in
 * how device memory is read back. */
#ifndef LLAMA_GPU_CHECK_H
#define LLAMA_GPU_CHECK_H

#include "llama.h"
#include "llama_gpu.h"

#include <stddef.h>
#include <stdint.h>

/* Copies device memory to the host (after the model's work is done). */
typedef void (*lgc_read_fn)(void *host, const void *dev, size_t bytes);

/* One comparison. */
typedef struct lgc_case {
    llama_config cfg;
    int B, T;               /* batch; T <= cfg.seq_len */
    const uint8_t *mask;    /* trainable layers (NULL: all) */
    int train_embeddings, train_head;
    int pool;               /* max_trainable_layers */
    int recompute;
    uint64_t seed;
    float std;              /* weights N(0, std^2), rounded to bf16 */
} lgc_case;

/* The comparisons' usual case: a 4-layer GQA model (4 heads, 2 kv heads)
 * of width dim, MLP hidden, vocabulary vocab and T positions, B = 2, every
 * tensor trainable, weights N(0, 0.05^2) (the trainer's initialisation)
 * from seed 11. */
lgc_case lgc_base_case(int tied, int dim, int hidden, int vocab, int T);

/* What the comparison found: the loss on both sides and, per tensor of
 * the device model (llama_gpu_tensor_get order), the relative Frobenius
 * error ||g_gpu - g_cpu|| / ||g_cpu|| (NaN for a tensor without a
 * gradient) and whether the device has a gradient buffer for it. */
enum { LGC_MAX_TENSORS = 256 };
typedef struct lgc_result {
    double loss_gpu, loss_cpu;
    int64_t num_tensors;
    double rel_err[LGC_MAX_TENSORS];
    int has_grad[LGC_MAX_TENSORS];
    int expect_grad[LGC_MAX_TENSORS]; /* the CPU model trains it */
    char name[LGC_MAX_TENSORS][48];
    size_t offset[LGC_MAX_TENSORS], count[LGC_MAX_TENSORS]; /* in grads */
    float *grads;          /* every device gradient, concatenated (f32) */
    size_t grads_count;
} lgc_result;

/* Runs the case on both models; fails the cmocka test on an error. The
 * caller frees r->grads. */
void lgc_run(const lgc_case *c, lgc_read_fn read, lgc_result *r);

/* Fails the test unless the loss is within tol_loss (relative), every
 * tensor the CPU trains has a device gradient within tol_grad (relative
 * Frobenius) and every other tensor has none. Prints the worst error. */
void lgc_check(const lgc_result *r, double tol_loss, double tol_grad);

/* ||a - b|| / ||b|| over n values (sqrt(||a||^2) when b is 0). */
double lgc_rel_frobenius(const float *a, const float *b, size_t n);

/*
 * OWLORE steps on the device model with an optimizer on dctx (bf16
 * weights, stochastic rounding) and on the f32 CPU model (same weights
 * rounded to bf16) with an optimizer on cctx: the same sampler (gamma of
 * the layers, fixed LOD weights and seed), OFFLOAD, rank-8 GaLore, the
 * same batches of the synthetic language. Fails the test unless the
 * active layers agree at every step, the losses stay within tol, both
 * runs lower the first batch's loss by more than min_drop (evaluated
 * again after the last step, where they must still agree), frozen layers
 * have no
 * gradient buffer, and the gradient and weight bytes equal
 * owl_memory_plan_compute's.
 */
enum { LGC_MAX_STEPS = 64 };
typedef struct lgc_train_case {
    int dim, hidden, layers, heads, kv_heads; /* vocab is 256 (bytes) */
    int gamma, period, steps, B, T;
    double lr, tol, min_drop;
} lgc_train_case;
typedef struct lgc_train_result {
    double loss_dev[LGC_MAX_STEPS], loss_cpu[LGC_MAX_STEPS];
    double final_dev, final_cpu; /* the first batch after the last step */
    int offloaded;           /* some layer went from active to frozen */
    owl_memory_usage peak;   /* the device optimizer's, per field */
    owl_memory_plan plan;
    llama_gpu_memory mem;
} lgc_train_result;
void lgc_train(owl_context *dctx, owl_context *cctx, const lgc_train_case *tc,
               lgc_train_result *res);

/* Rounds x to the nearest bf16 value (ties to even). */
float lgc_round_bf16(float x);

#endif
