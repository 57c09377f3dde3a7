/* C entry points of the GaLore projector, fused low-rank AdamW and ESD
 * kernels (kernels/galore.cu). As every launcher in kernels/: the
 * cudaStream_t comes first as `stream`, the work is enqueued there, the
 * return value is the launch's cudaError_t (0 on success) and nothing
 * waits. Matrices are row-major with a leading dimension (row stride) in
 * elements; dtypes are owl_dtype values. `flag` is the context's
 * non-finite step flag (src/cuda_internal.h). */
#ifndef OWLORE_GALORE_KERNELS_H
#define OWLORE_GALORE_KERNELS_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* What the host knows of a low-rank step; the device turns it into
 * owl_lowrank_coeffs once it knows the bias-correction t (which depends on
 * the device's count of skipped steps). */
typedef struct owl_lowrank_hparams {
    double beta1, beta2, eps, weight_decay, lr, scale;
    uint64_t bias_step;    /* the host's count after this call */
    int32_t torch;         /* OWL_ADAMW_TORCH semantics */
    int32_t reset;         /* moments zeroed by this step's refresh */
    int32_t direct;        /* f32 weight updated by one GEMM (beta = keep) */
    int32_t reserved;
} owl_lowrank_hparams;

/* The step's f32 coefficients, exactly as set_coeffs in src/adamw.c forms
 * them, in device memory. gemm_alpha and gemm_beta are adjacent so cuBLAS
 * can read them in device pointer mode. */
typedef struct owl_lowrank_coeffs {
    float b1, b2, omb1, omb2, eps, keep1, bc2_sqrt;
    int32_t form; /* 0 GALORE, 1 torch lerp (small), 2 torch lerp (large) */
    float pre, step, post;
    float gemm_alpha, gemm_beta;
    int32_t reserved[3];
} owl_lowrank_coeffs;

/* dst (rows x cols f32, stride ldd) = src converted; when flag is not
 * NULL, *flag = 1 if any element is NaN or Inf (never cleared). */
int owl__k_to_f32(void *stream, const void *src, int32_t dtype, int64_t rows,
                  int64_t cols, int64_t lds, float *dst, int64_t ldd,
                  int32_t *flag);

/* dst (cols x rows, stride ldd) = src^T (src rows x cols, stride lds), or
 * zeros when zero_if is not NULL and *zero_if is set. */
int owl__k_transpose_f32(void *stream, const float *src, int64_t rows,
                         int64_t cols, int64_t lds, float *dst, int64_t ldd,
                         const int32_t *zero_if);

/* dst = src (rows x cols f32), or zeros when *zero_if is set; src == dst
 * (same stride) zeroes in place or does nothing. Keeps a NaN/Inf
 * gradient, which the step flag already rejects, away from cuSOLVER,
 * whose iterations need not end on one. */
int owl__k_copy_or_zero(void *stream, const int32_t *zero_if,
                        const float *src, int64_t lds, float *dst,
                        int64_t ldd, int64_t rows, int64_t cols);

/* dst (rows x cols of dtype, stride ldd) = src (f32) rounded to nearest. */
int owl__k_store_f32(void *stream, const float *src, int64_t rows,
                     int64_t cols, int64_t lds, void *dst, int32_t dtype,
                     int64_t ldd);

/* x[i] = standard normal from hash3(seed, draw, i), i < count: the
 * Box-Muller draw of src/svd.c, in double, bit for bit the same bits. */
int owl__k_gaussian(void *stream, float *x, int64_t count, uint64_t seed,
                    uint64_t draw);

/* Flips each of `count` rows (length len, dense) so its largest-magnitude
 * entry (first on ties) is positive, as owl__canonical_signs. Sets *flag
 * when a row holds NaN/Inf, or when info is not NULL and *info != 0 (a
 * failed factorisation): such a basis must not be used. */
int owl__k_canonical_signs(void *stream, float *rows, int64_t count,
                           int64_t len, const int32_t *info, int32_t *flag);

/* When *flag is clear: dst = src (rows x cols f32). Otherwise nothing is
 * written. */
int owl__k_guarded_copy(void *stream, const int32_t *flag, const float *src,
                        int64_t lds, float *dst, int64_t ldd, int64_t rows,
                        int64_t cols);

/* *flag = 1 when the first basis vector (len floats) is all zero: the
 * basis was never written (no refresh succeeded, nothing loaded), and a
 * step without a subspace changes nothing. A written basis has unit
 * vectors. */
int owl__k_require_basis(void *stream, const float *first, int64_t len,
                         int32_t *flag);

/* One thread: *out from hp, t = reset ? 1 : hp.bias_step - *skipped. When
 * *flag is set the GEMM scalars become (0, direct ? 1 : 0). */
int owl__k_lowrank_coeffs(void *stream, owl_lowrank_hparams hp,
                          const int32_t *flag,
                          const unsigned long long *skipped,
                          owl_lowrank_coeffs *out);

/* The low-rank moments: r (count f32, dense) holds R on entry and N on
 * return; m, v are f32 or bf16 (moment_dtype), treated as zero when
 * `reset`. When *flag is set, m and v are left alone and N = 0. */
int owl__k_lowrank_moments(void *stream, const owl_lowrank_coeffs *c,
                           const int32_t *flag, float *r, void *m, void *v,
                           int32_t moment_dtype, int64_t count,
                           int32_t reset);

/* W = pre*W + gemm_alpha*s; W += post*W over rows x cols (s = back(N),
 * f32 dense with stride cols: the CPU's GEMM output alpha*s formed here,
 * one rounding as there), stored as dtype with nearest rounding, or stochastic bf16
 * rounding from hash3(seed, draw, flat >> 2) as src/adamw.c. Nothing when
 * *flag is set. */
int owl__k_lowrank_apply(void *stream, const owl_lowrank_coeffs *c,
                         const int32_t *flag, const float *s, void *w,
                         int32_t dtype, int64_t rows, int64_t cols,
                         int64_t ldw, int32_t stochastic, uint64_t seed,
                         uint64_t draw);

/* The device's skipped-step counter after the step (see struct owl_adamw):
 * skipped: += 1 (and, with reset, -= bias_prev so that bias_step - skipped
 * stays the moments' t); not skipped with reset: = 0. */
int owl__k_lowrank_finish(void *stream, const int32_t *flag,
                          unsigned long long *skipped, int32_t reset,
                          uint64_t bias_prev);

#ifdef __cplusplus
}
#endif

#endif /* OWLORE_GALORE_KERNELS_H */
