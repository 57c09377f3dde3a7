/* AdamW: full-rank and fused GaLore low-rank steps. */
#include "internal.h"

owl_status owl_adamw_options_init(owl_adamw_options *opts, uint64_t struct_size)
{ return OWL_ERR_UNSUPPORTED; }
owl_status owl_adamw_create(owl_context *ctx, const owl_adamw_options *opts,
                            uint64_t rows, uint64_t cols, owl_adamw **out)
{ return owl__fail(ctx, OWL_ERR_UNSUPPORTED, "not implemented"); }
void owl_adamw_free(owl_adamw *adam) { (void)adam; }
owl_status owl_adamw_lowrank(owl_adamw *adam, owl_galore *proj,
                             owl_tensor *weight, const owl_tensor *grad, double lr)
{ return OWL_ERR_UNSUPPORTED; }
owl_status owl_adamw_full(owl_adamw *adam, owl_tensor *weight,
                          const owl_tensor *grad, double lr)
{ return OWL_ERR_UNSUPPORTED; }
uint64_t owl_adamw_step_count(const owl_adamw *adam) { return 0; }
uint64_t owl_adamw_bias_step(const owl_adamw *adam) { return 0; }
owl_status owl_adamw_reset(owl_adamw *adam) { return OWL_ERR_UNSUPPORTED; }
owl_status owl_adamw_get_moment(const owl_adamw *adam, int32_t which,
                                owl_tensor *out)
{ return OWL_ERR_UNSUPPORTED; }
