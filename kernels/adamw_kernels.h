/* C entry points of the full-rank AdamW kernels (kernels/adamw_full.cu).
 * Same conventions as kernels.h: `stream` first, work enqueued there,
 * the launch's cudaError_t returned (0 on success), nothing waits. */
#ifndef OWLORE_ADAMW_KERNELS_H
#define OWLORE_ADAMW_KERNELS_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* How a first moment is updated (as src/adamw.c): GaLore's EMA, or torch's
 * lerp in its small- or large-weight form. */
enum { OWL_K_FORM_GALORE = 0, OWL_K_FORM_LERP_SMALL = 1,
       OWL_K_FORM_LERP_LARGE = 2 };

/* Everything about one full-rank step the host knows. The coefficients
 * that depend on the bias-correction t (which counts only the steps the
 * device did not skip) are formed on the device from bias_step, the
 * host's count of calls including this one, minus *skipped. */
typedef struct owl_k_adamw_step {
    /* the AdamW constants, each rounded to f32 as the CPU does */
    float b1, b2, omb1, omb2, keep1, eps;
    int32_t form;    /* OWL_K_FORM_* */
    int32_t torch;   /* 1: TORCH semantics (pre below), 0: GALORE (post) */
    float pre;       /* TORCH: 1 - lr*wd; GALORE: 1 */
    float post;      /* GALORE: -lr*wd; TORCH: 0 */
    double beta1, beta2, lr; /* for the t-dependent coefficients */
    uint64_t bias_step;
    /* stochastic bf16 weight rounding (bf16 weights only) */
    int32_t stochastic;
    int32_t reserved;
    uint64_t seed, draw;
} owl_k_adamw_step;

/* One fused full-rank step over a rows x cols weight: reads w, g, m, v,
 * writes w, m, v. w and g: dtype an owl_dtype (F32, BF16, F16), row
 * strides ldw and ldg elements; m and v: dense rows x cols, bf16 when
 * moments_bf16, else f32. When *flag is set (a non-finite gradient) the
 * kernel writes nothing and adds one to *skipped; otherwise it uses
 * t = bias_step - *skipped. sm_count (the device's multiprocessors) sizes
 * the grid to one resident wave. */
int owl__k_adamw_full(void *stream, int32_t sm_count,
                      const owl_k_adamw_step *step,
                      void *w, int32_t w_dtype, int64_t ldw,
                      const void *g, int32_t g_dtype, int64_t ldg,
                      void *m, void *v, int32_t moments_bf16,
                      int64_t rows, int64_t cols, const int32_t *flag,
                      unsigned long long *skipped);

/* *flag = 1 when the rows x cols gradient holds a NaN or Inf: the same
 * result as owl__k_flag_nonfinite, with wide loads and no per-element
 * division when g is dense and 16-byte aligned (else it calls that). */
int owl__k_adamw_flag_grad(void *stream, int32_t sm_count, const void *g,
                           int32_t g_dtype,
                           int64_t rows, int64_t cols, int64_t ldg,
                           int32_t *flag);

/* out (rows x cols f32, row stride ldo) = a dense moment, f32 or bf16. */
int owl__k_adamw_moment_f32(void *stream, const void *moment,
                            int32_t moment_bf16, int64_t rows, int64_t cols,
                            float *out, int64_t ldo);

#ifdef __cplusplus
}
#endif

#endif /* OWLORE_ADAMW_KERNELS_H */
