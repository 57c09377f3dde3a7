/* The GaLore projector handle: subspace, refresh schedule, projections. */
#include "internal.h"

owl_status owl_galore_options_init(owl_galore_options *opts, uint64_t struct_size)
{ return OWL_ERR_UNSUPPORTED; }
owl_status owl_galore_create(owl_context *ctx, const owl_galore_options *opts,
                             owl_galore **out)
{ return owl__fail(ctx, OWL_ERR_UNSUPPORTED, "not implemented"); }
void owl_galore_free(owl_galore *proj) { (void)proj; }
owl_status owl_galore_lowrank_shape(const owl_galore *proj, uint64_t *rows,
                                    uint64_t *cols)
{ return OWL_ERR_UNSUPPORTED; }
int32_t owl_galore_is_left(const owl_galore *proj) { return 0; }
owl_status owl_galore_project(owl_galore *proj, uint64_t iter,
                              const owl_tensor *grad, owl_tensor *out,
                              int32_t *refreshed)
{ return OWL_ERR_UNSUPPORTED; }
owl_status owl_galore_project_back(owl_galore *proj, const owl_tensor *lowrank,
                                   owl_tensor *out)
{ return OWL_ERR_UNSUPPORTED; }
owl_status owl_galore_refresh(owl_galore *proj, const owl_tensor *grad)
{ return OWL_ERR_UNSUPPORTED; }
owl_status owl_galore_invalidate(owl_galore *proj) { return OWL_ERR_UNSUPPORTED; }
owl_status owl_galore_get_basis(const owl_galore *proj, owl_tensor *out)
{ return OWL_ERR_UNSUPPORTED; }
uint64_t owl_galore_refresh_count(const owl_galore *proj) { return 0; }
