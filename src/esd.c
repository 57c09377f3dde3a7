/* PL_Alpha_Hill of a weight's empirical spectral density. */
#include "internal.h"

owl_status owl_esd_result_init(owl_esd_result *res, uint64_t struct_size)
{ return OWL_ERR_UNSUPPORTED; }
owl_status owl_esd_alpha_hill(owl_context *ctx, const owl_tensor *weight,
                              owl_xmin_method method, owl_esd_result *result)
{ return owl__fail(ctx, OWL_ERR_UNSUPPORTED, "not implemented"); }
owl_status owl_esd_alpha_hill_eigs(owl_context *ctx, const double *eigenvalues,
                                   uint64_t count, owl_xmin_method method,
                                   owl_esd_result *result)
{ return owl__fail(ctx, OWL_ERR_UNSUPPORTED, "not implemented"); }
