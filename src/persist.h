/* Each stateful handle's payload inside a state blob, for the handle's own
 * save/load entry points and for containers (the optimizer) that embed
 * handle states in their own blob. See src/state.h for the frame and the
 * two-phase load, docs/state.md for the field layouts.
 *
 * For a handle X (sampler, galore, adamw):
 *
 *   owl__X_state_write(const X *, owl_writer *)
 *       puts X's payload (no frame) at the writer's position. Works in
 *       counting mode. CPU: always OWL_OK. CUDA: downloads device arrays
 *       straight into the buffer (waits for the stream); may fail with
 *       OWL_ERR_DEVICE, after which the writer's bytes are unspecified.
 *
 *   owl__X_state_check(const X *, owl_reader *)
 *       parses X's payload at the reader's position and validates all of
 *       it against the live handle -- shapes, options, dtypes, value
 *       ranges -- changing nothing in X. On success the reader is past the
 *       payload; on failure the error (OWL_ERR_CORRUPT for bytes that
 *       cannot be a valid state, OWL_ERR_MISMATCH naming the field for a
 *       state of another shape or configuration) is recorded on X's
 *       context.
 *
 *   owl__X_state_apply(X *, owl_reader *)
 *       installs the payload; call it only after a successful check, with
 *       a reader positioned where the check started (keep a copy of the
 *       reader). CPU: cannot fail and allocates nothing. CUDA: uploads the
 *       arrays (OWL_ERR_DEVICE possible; then the handle's device arrays
 *       may be partly overwritten).
 *
 * A container loads by checking every embedded state first, then applying
 * them all. */
#ifndef OWLORE_PERSIST_H
#define OWLORE_PERSIST_H

#include "state.h"

owl_status owl__sampler_state_write(const owl_sampler *s, owl_writer *w);
owl_status owl__sampler_state_check(const owl_sampler *s, owl_reader *r);
owl_status owl__sampler_state_apply(owl_sampler *s, owl_reader *r);

owl_status owl__galore_state_write(const owl_galore *p, owl_writer *w);
owl_status owl__galore_state_check(const owl_galore *p, owl_reader *r);
owl_status owl__galore_state_apply(owl_galore *p, owl_reader *r);

owl_status owl__adamw_state_write(const owl_adamw *a, owl_writer *w);
owl_status owl__adamw_state_check(const owl_adamw *a, owl_reader *r);
owl_status owl__adamw_state_apply(owl_adamw *a, owl_reader *r);

#endif /* OWLORE_PERSIST_H */
