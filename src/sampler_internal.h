/* The layer sampler's handle, shared with its persistence code
 * (src/persist_sampler.c). */
#ifndef OWLORE_SAMPLER_INTERNAL_H
#define OWLORE_SAMPLER_INTERNAL_H

#include "internal.h"

struct owl_sampler {
    owl_context *ctx;
    uint64_t num_layers;
    uint64_t gamma;
    uint64_t period;
    uint64_t seed;
    owl_draw_law law;
    double *p;  /* w_l / sum(w) */
    double *pi; /* min(1, c p_l) with sum gamma (SYSTEMATIC, BERNOULLI) */
    /* SYSTEMATIC: layers with pi == 1 are always taken; the others with
     * pi > 0 ("drawable") share the remaining gamma - num_certain draws. */
    uint64_t num_certain;
    size_t num_drawable;
    size_t *drawable;
    double drawable_mass; /* sum of their pi */
    size_t *order;        /* scratch: the drawable layers in a random order */
};

/* Recomputes pi and the systematic draw tables from p, gamma and
 * num_layers (p: finite, >= 0, at least gamma entries > 0). Writes only
 * the handle's existing arrays: it allocates nothing and cannot fail. */
void owl__sampler_rebuild(owl_sampler *s);

/* Checks sampler options as owl_sampler_create does, naming the fields with
 * `prefix`; need_weights false accepts NULL weights for a mode that takes
 * them (sampler.c). */
owl_status owl__sampler_check_options(owl_context *ctx,
                                      const owl_sampler_options *o,
                                      const char *prefix, bool need_weights);

#endif /* OWLORE_SAMPLER_INTERNAL_H */
