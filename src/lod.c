/* Activation statistics and the layerwise outlier distribution. */
#include "internal.h"

owl_status owl_act_norm_accumulate(owl_context *ctx, const owl_tensor *x,
                                   owl_tensor *sumsq)
{ return owl__fail(ctx, OWL_ERR_UNSUPPORTED, "not implemented"); }

owl_status owl_lod_compute(owl_context *ctx, const owl_tensor *weights,
                           const owl_tensor *input_sumsq, uint64_t count,
                           double M, double *ratio)
{ return owl__fail(ctx, OWL_ERR_UNSUPPORTED, "not implemented"); }
