/* The optimizer handle (src/optimizer.c) and what its persistence
 * (src/persist_optimizer.c) needs of it. */
#ifndef OWLORE_OPTIMIZER_INTERNAL_H
#define OWLORE_OPTIMIZER_INTERNAL_H

#include "galore_internal.h"

/* One registered parameter. Its state (adam, and proj on the low-rank
 * path) is NULL until its layer is first active, and again after the FREE
 * policy released it. */
typedef struct owl_opt_param {
    uint64_t layer;    /* decoder layer, or OWL_LAYER_ALWAYS */
    owl_tensor weight; /* the caller's descriptors (memory stays theirs) */
    owl_tensor grad;
    bool has_grad;
    bool lowrank;      /* takes the low-rank path under this method */
    bool lowrank_asked; /* as registered (kept for the saved header) */
    owl_adamw *adam;
    owl_galore *proj;
    /* The layer froze since this parameter's last update: the policy's
     * activation work (RESET: zero the moments; OFFLOAD: bring them back;
     * refresh_on_activation: invalidate the subspace) is due. */
    bool parked;
    /* CUDA, OFFLOAD: pinned host copies of m and v, and whether the
     * moments live there now (adam->m and adam->v are then NULL). */
    void *host_m, *host_v;
    bool offloaded;
    /* Staging of the current step (allocated before anything changes):
     * fresh state; on CUDA, device buffers for moments coming back when no
     * spare fits, and the pinned copies of a first offload. */
    owl_adamw *new_adam;
    owl_galore *new_proj;
    void *new_dev_m, *new_dev_v;
    void *new_host_m, *new_host_v;
} owl_opt_param;

struct owl_optimizer {
    owl_context *ctx;
    owl_optimizer_options opts; /* pointer fields cleared; copies below */
    owl_sampler_options sampler_opts; /* as used (weights -> sampler_weights) */
    double *sampler_weights;          /* num_layers values, or NULL */
    owl_galore_options galore_opts;
    owl_adamw_options adamw_opts;
    owl_sampler *sampler; /* NULL for GALORE and FULL */

    owl_opt_param *params;
    uint64_t num_params, cap_params;
    int64_t max_rows; /* the tallest gradient: size of row_sumsq */
    double *row_sumsq; /* per-row sums of squares of one gradient */

    uint64_t step;        /* index of the next step */
    uint8_t *mask;        /* active layers of step `mask_step` */
    bool mask_valid;
    uint64_t mask_step;
    int32_t mask_resampled;
    uint8_t *was_active;  /* layers updated by the previous step */
    bool has_norm;
    double last_norm; /* CPU; on CUDA the norm lives in dev_stats */

    /* CUDA. dev_stats: [0] the last completed step's gradient norm (NaN
     * before any), [1] its clipping factor. dev_partials: the gradient
     * pass's partial sums, OWL_K_OPT_PARTIALS per parameter, sized with
     * the parameter table (add_param), so a step allocates nothing. */
    double *dev_stats;
    double *dev_partials;
    uint64_t partial_params;
    /* CUDA, OFFLOAD: device moment buffers released by frozen parameters
     * and not yet taken by a returning one (spare_bytes 0: an empty slot),
     * and the staging plan's copy of their sizes. Room for 4 per
     * parameter: the spares left by earlier steps (at most 2 per
     * parameter) plus those the current step's freezing adds. */
    void **spare_ptr;
    size_t *spare_bytes;
    size_t *plan_bytes;
    uint64_t num_spares, cap_spares;
};

/* What each method does: its name in messages, whether it samples layers,
 * whether it projects (shared by the optimizer and the memory planner). */
static inline const char *owl__method_name(owl_method m)
{
    switch (m) {
    case OWL_METHOD_OWLORE: return "OWLORE";
    case OWL_METHOD_OWLORE_FULL: return "OWLORE_FULL";
    case OWL_METHOD_LISA: return "LISA";
    case OWL_METHOD_GALORE: return "GALORE";
    case OWL_METHOD_FULL: return "FULL";
    default: return "unknown";
    }
}

static inline bool owl__method_samples(owl_method m)
{
    return m == OWL_METHOD_OWLORE || m == OWL_METHOD_OWLORE_FULL ||
           m == OWL_METHOD_LISA;
}

static inline bool owl__method_lowrank(owl_method m)
{
    return m == OWL_METHOD_OWLORE || m == OWL_METHOD_GALORE;
}

/* The option checks of owl_optimizer_create, shared with the memory
 * planner so both accept the same options: the top-level fields, and the
 * sampler's options as the method uses them (read over their defaults into
 * *so; need_weights false accepts missing LOD ratios). optimizer.c. */
owl_status owl__optimizer_check_options(owl_context *ctx,
                                        const owl_optimizer_options *o);
owl_status owl__optimizer_sampler_options(owl_context *ctx,
                                          const owl_optimizer_options *o,
                                          owl_sampler_options *so,
                                          bool need_weights);

/* Fresh state for parameter p (a projector on the low-rank path, and
 * AdamW moments of the projected or full shape), not yet installed. On
 * failure both are NULL. */
owl_status owl__optimizer_new_state(owl_optimizer *opt, const owl_opt_param *p,
                                    owl_adamw **adam, owl_galore **proj);

/* Frees every parameter's staged state (new_adam, new_proj and the new_*
 * moment buffers) and clears the pointers: the undo of a step's or a
 * load's staging when a later check fails, and the cleanup after either. */
void owl__optimizer_drop_staging(owl_optimizer *opt);

/* Bytes of a projector's own buffers (basis, next basis, low-rank
 * scratch), as galore.c allocates them. */
static inline uint64_t owl__galore_bytes(const owl_galore *p)
{
    return (uint64_t)(2 * p->r * p->d + p->lr_rows * p->lr_cols) *
           sizeof(float);
}

/* Bytes of a moment pair (m and v). */
static inline uint64_t owl__adamw_moment_bytes(const owl_adamw *a)
{
    return 2u * (uint64_t)a->rows * (uint64_t)a->cols *
           owl__dtype_size(a->opts.moment_dtype);
}

#endif /* OWLORE_OPTIMIZER_INTERNAL_H */
