/* The small live handles the state-loader fuzzer loads into, shared by the
 * fuzz target (fuzz_state.c) and the seed-corpus generator
 * (gen_corpus.c), so the seeds are valid states for exactly these
 * handles. */
#ifndef OWL_FUZZ_HANDLES_H
#define OWL_FUZZ_HANDLES_H

#include <owlore/owlore.h>

#include "../common/state_ops.h"

#include <stdint.h>

/* One loader under test: how to save the handle's state (for the before
 * and after comparison) and how to load bytes into it. */
typedef struct fuzz_target {
    const char *name;
    void *handle;
    const state_ops *ops; /* its size/save/load/free */
} fuzz_target;

#define FUZZ_MAX_TARGETS 8

typedef struct fuzz_handles {
    owl_context *ctx;
    fuzz_target targets[FUZZ_MAX_TARGETS];
    int count;
} fuzz_handles;

/* Creates the context and the handles, each with some history (a basis,
 * moments, counters). Aborts on failure: these are test programs. */
void fuzz_handles_create(fuzz_handles *h);
void fuzz_handles_free(fuzz_handles *h);

#endif
