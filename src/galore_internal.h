/* The GaLore projector and AdamW handles, and the projector's internal
 * entry points used by the fused low-rank AdamW step. */
#ifndef OWLORE_GALORE_INTERNAL_H
#define OWLORE_GALORE_INTERNAL_H

#include "internal.h"
#include "svd.h"

struct owl_galore {
    owl_context *ctx;
    owl_galore_options opts; /* as validated at create */
    int64_t m, n, r;
    bool left;         /* R = P^T G (r x n) rather than R = G Q^T (m x r) */
    int64_t d;         /* basis vector length: m (left) or n (right) */
    int64_t lr_rows, lr_cols; /* low-rank shape */
    float scale;

    bool has_basis;
    bool stale;        /* owl_galore_invalidate(): recompute at next project */
    uint64_t refresh_count;
    /* r x d, vectors as rows: P^T (left) or Q (right), canonical signs. */
    float *basis;
    float *next_basis; /* a refresh writes here, swapped in on success */

    float *lowrank;    /* lr_rows x lr_cols f32 scratch (dense) */
    int64_t block_rows;
    owl_svd_work svd;  /* the plan; its arrays live in the context scratch */
    size_t svd_offset; /* where they start in it (after the gradient copy) */

    /* CUDA contexts: the device plan and state (src/cuda_galore.h); basis,
     * next_basis and lowrank above are then device memory, and svd,
     * svd_offset and block_rows are unused. NULL on the CPU. */
    struct owl_galore_cuda *cuda;
};

/* A projector owns only O(r (m + n)) memory: basis, next_basis and the
 * low-rank scratch. What a single call needs beyond that lives in the
 * context's shared scratch, reserved at create and fetched at each use:
 *   [0, 4 m n)            the f32 gradient copy (the gesdd input), or,
 *                         when back-projecting, a block_rows x n f32 block;
 *   [svd_offset, ...)     the SVD workspace (svd.bytes). */
static inline float *owl__galore_g32(const owl_galore *p)
{
    return (float *)p->ctx->scratch;
}
static inline float *owl__galore_block(const owl_galore *p)
{
    return (float *)p->ctx->scratch;
}
static inline void *owl__galore_svd_scratch(const owl_galore *p)
{
    return (char *)p->ctx->scratch + p->svd_offset;
}
/* The streaming kernels' packed rows (r * ceil8(n) floats) borrow the SVD
 * workspace, free outside a refresh; owl__svd_init keeps room for them. */
static inline float *owl__galore_packed(const owl_galore *p)
{
    return (float *)owl__galore_svd_scratch(p);
}

struct owl_adamw {
    owl_context *ctx;
    owl_adamw_options opts; /* as validated at create */
    int64_t rows, cols;     /* moment shape */
    void *m, *v;            /* dense rows x cols, f32 or bf16 (uint16) */
    uint64_t step_count;    /* every update; never reset */
    uint64_t bias_step;     /* t of the bias correction */
    /* CUDA: m and v above are device memory, and this device counter holds
     * the steps skipped for a non-finite gradient since the last reset.
     * step_count and bias_step count every call (the host cannot know of a
     * skip without waiting), so a step's kernels use
     * t = bias_step - *dev_skipped, read on the device. */
    unsigned long long *dev_skipped;
};

/* STD projects the smaller side: right when m >= n, left otherwise. */
static inline bool owl__galore_projects_left(owl_proj_type t, uint64_t m,
                                             uint64_t n)
{
    switch (t) {
    case OWL_PROJ_STD: return m < n;
    case OWL_PROJ_REVERSE_STD: return m >= n;
    case OWL_PROJ_LEFT: return true;
    default: return false;
    }
}

/* Check a projector's / AdamW's options as their create functions do,
 * naming the fields with `prefix` (galore.c, adamw.c). Without check_shape
 * the rows, cols and rank <= min(rows, cols) are left to the caller. */
owl_status owl__galore_check_options(owl_context *ctx,
                                     const owl_galore_options *o,
                                     const char *prefix, bool check_shape);
owl_status owl__adamw_check_options(owl_context *ctx,
                                    const owl_adamw_options *o,
                                    const char *prefix);

/* Brings the subspace up to date for the parameter's update `iter` (the
 * refresh rule of owl_galore_project) and writes R = project(G) as f32 into
 * dst (low-rank shape, row stride ldd). grad must already be validated
 * (m x n, a float dtype); this checks it for NaN/Inf, in the same pass as
 * its conversion to f32 where there is one, before anything else is
 * written. A non-finite G returns OWL_ERR_NONFINITE without a message (the
 * caller words it). On any failure nothing observable changed. *refreshed
 * says whether the subspace was recomputed. */
owl_status owl__galore_project_f32(owl_galore *p, uint64_t iter,
                                   const owl_tensor *grad, float *dst,
                                   int64_t ldd, bool *refreshed);

/* C = alpha * back(low)[row0 : row0+rows, :] + beta * C for rows of the
 * m x n back-projection (without the scale; the caller folds it into
 * alpha). low: low-rank shape, row stride ldl. C: rows x n, stride ldc. */
void owl__galore_back_rows(const owl_galore *p, const float *low, int64_t ldl,
                           int64_t row0, int64_t rows, float alpha, float beta,
                           float *c, int64_t ldc);

/* ---- small ranks: streaming kernels (lowrank_stream.c) ---------------
 * At small rank the projection and the back-projection of a step are
 * bound by memory; one pass of these kernels over G (and one over W in the
 * AdamW step) beats sgemm there. Up to OWL_STREAM_RANK they always do;
 * right projections up to OWL_STREAM_MAX_RANK do once G no longer fits
 * the last-level cache (OWL_STREAM_LARGE elements); above, sgemm's
 * blocking wins (owl__galore_streams has the measurements). */
#define OWL_STREAM_RANK 8
#define OWL_STREAM_MAX_RANK 16
#define OWL_STREAM_LARGE ((int64_t)1 << 22)

/* true when the projector's products take the streaming kernels. */
bool owl__galore_streams(const owl_galore *p);
/* R = project(G) (low-rank shape, row stride ldd) from an f32 G (row
 * stride ldg), with the context's threads. A NaN or Inf in G makes some
 * element of R NaN or Inf (every element of G enters a sum of R). */
void owl__galore_stream_project(const owl_galore *p, const float *g,
                                int64_t ldg, float *dst, int64_t ldd);
/* Row `row` of alpha * back(low) is sum_c coef[c] * b[c][:], b being r
 * rows of n floats: Q (right) or N (left). This packs b into
 * owl__galore_packed(p) (layout in lowrank_stream.c) and returns it;
 * stream_coefs fills coef[0..r) for a row. */
const float *owl__galore_stream_pack_back(const owl_galore *p,
                                          const float *low, int64_t ldl);
void owl__galore_stream_coefs(const owl_galore *p, const float *low,
                              int64_t ldl, int64_t row, float alpha,
                              float *coef);
/* s[8 g + l] = sum_c coef[c] * b[c][8 (g0 + g) + l] for g < groups, summed
 * in order of c, from pk = the packed b + 8 r g0. The best variant for
 * this CPU. */
typedef void (*owl_stream_combine_fn)(const float *coef, int64_t r,
                                      const float *pk, int64_t groups,
                                      float *s);
owl_stream_combine_fn owl__stream_combine_fn(void);

#endif /* OWLORE_GALORE_INTERNAL_H */
