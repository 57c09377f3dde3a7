/* The layer sampler: which decoder layers train in each period. */
#include "internal.h"

owl_status owl_sampler_options_init(owl_sampler_options *opts, uint64_t struct_size)
{ return OWL_ERR_UNSUPPORTED; }
owl_status owl_sampler_create(owl_context *ctx, const owl_sampler_options *opts,
                              owl_sampler **out)
{ return owl__fail(ctx, OWL_ERR_UNSUPPORTED, "not implemented"); }
void owl_sampler_free(owl_sampler *sampler) { (void)sampler; }
owl_status owl_sampler_step(owl_sampler *sampler, uint64_t step, uint8_t *mask,
                            uint64_t *num_active, int32_t *resampled)
{ return OWL_ERR_UNSUPPORTED; }
owl_status owl_sampler_probabilities(owl_sampler *sampler, double *p, double *pi)
{ return OWL_ERR_UNSUPPORTED; }
