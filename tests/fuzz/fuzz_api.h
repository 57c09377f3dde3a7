/* The pieces of the API fuzzer (fuzz_api.c) shared by its files: the
 * real buffers tensors point into and the argument makers
 * (fuzz_api_args.c), the handles of one input and their snapshots
 * (fuzz_api_handles.c). */
#ifndef OWL_FUZZ_API_H
#define OWL_FUZZ_API_H

#include "fuzz_input.h"

#include <owlore/owlore.h>

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define NBUF 4
#define BUF_BYTES ((size_t)64 * 1024)
#define SLOTS 2
#define MAX_OPS 48
#define MAX_WEIGHTS 64    /* sampler weights the fuzzer passes at most */
#define MAX_MASK 4096     /* layers a mask buffer is made for at most */
#define MAX_LOD_TENSORS 4
/* A created handle whose state is larger is freed at once: its create was
 * the test, and saving and comparing it after every call would only slow
 * the fuzzer down. */
#define LIVE_STATE_MAX ((uint64_t)1 << 20)

/* FUZZ_API_TRACE set: each call and its arguments' ranges on stderr. */
extern int fuzz_trace;

/* Reports a broken property and aborts (libFuzzer records the input). */
void die(const char *what, owl_status st);

/* ---- arguments (fuzz_api_args.c) ------------------------------------ */

extern uint8_t *arena[NBUF];
extern uint8_t *arena_before[NBUF];

typedef struct call_check {
    bool invalid_input; /* some argument the contract calls invalid */
    const char *why;    /* which, for the report */
} call_check;

/* Fills a buffer with plausible values: mode 0 f32, 1 bf16, 2 f16, 3 f64. */
void fill_buffer(uint8_t *b, int mode, uint64_t seed);
size_t dtype_bytes(owl_dtype d);
/* True when the contract lets the library address t (*bytes: its extent). */
bool addressable(const owl_tensor *t, unsigned __int128 *bytes);
/* Records that an argument is one the call must refuse. */
void mark_invalid(call_check *cc, const char *why);
owl_dtype pick_dtype(fuzz_input *f);
/* A tensor argument, mostly rows x cols over the arena; NULL for a NULL
 * argument. Never lies about its buffer; records invalid descriptors. */
owl_tensor *make_tensor(fuzz_input *f, owl_tensor *t, int64_t rows,
                               int64_t cols, call_check *cc);
/* A struct_size: mostly the real one, else the edge cases. */
uint64_t pick_struct_size(fuzz_input *f, size_t real);
bool size_in_range(uint64_t struct_size);
/* The struct sizes the contract accepts (8..4096, multiples of 8). */
bool size_valid(uint64_t struct_size);
/* An input options struct of exactly struct_size bytes (free() it). */
void *exact_struct(fuzz_input *f, const void *src, size_t real,
                          uint64_t struct_size, call_check *cc);
/* An output struct of exactly struct_size bytes (free() it). */
void *exact_out_struct(fuzz_input *f, const void *src, size_t real,
                              uint64_t struct_size, call_check *cc);
/* The options the library reads: the given struct_size bytes over the
 * defaults. */
void effective(void *dst, const void *defaults, const void *given,
                      size_t real, uint64_t struct_size);
/* Fuzzed options of each handle (weights: exactly num_layers doubles). */
void fuzz_sampler_options(fuzz_input *f, owl_sampler_options *o,
                                 double **weights_out, bool own_layers);
void fuzz_galore_options(fuzz_input *f, owl_galore_options *o);
void fuzz_adamw_options(fuzz_input *f, owl_adamw_options *o);

/* ---- handles (fuzz_api_handles.c) ----------------------------------- */

extern owl_context *ctxs[2];

typedef struct sampler_slot {
    owl_sampler *h;
    owl_context *ctx;
    owl_sampler_options o; /* as the library read them */
} sampler_slot;

typedef struct galore_slot {
    owl_galore *h;
    owl_context *ctx;
    owl_galore_options o;
} galore_slot;

typedef struct adamw_slot {
    owl_adamw *h;
    owl_context *ctx;
    uint64_t rows, cols;
} adamw_slot;

typedef struct opt_slot {
    owl_optimizer *h;
    owl_context *ctx;
    owl_optimizer_options o;
    bool sampled;          /* OWLORE, OWLORE_FULL or LISA */
    owl_sampler_options so; /* as the library read them, when sampled */
} opt_slot;

extern sampler_slot samplers[SLOTS];
extern galore_slot galores[SLOTS];
extern adamw_slot adamws[SLOTS];
extern opt_slot opts[SLOTS];

typedef owl_status (*size_fn)(const void *, uint64_t *);
typedef owl_status (*save_fn)(const void *, void *, uint64_t, uint64_t *);
typedef owl_status (*load_fn)(void *, const void *, uint64_t);

typedef struct live_handle {
    void *h;
    const char *kind;   /* for reports */
    owl_context *ctx;   /* where its messages are */
    size_fn size;
    save_fn save;
    load_fn load;
} live_handle;

typedef struct snapshot {
    int count;
    live_handle lh[4 * SLOTS];
    uint8_t *state[4 * SLOTS];
    uint64_t size[4 * SLOTS];
} snapshot;

/* The live handles of the input, with their state operations. */
int live_handles(live_handle *out);
uint8_t *save_all(const live_handle *lh, uint64_t *size);
/* Every buffer and live handle state, before a call ... */
void snapshot_take(snapshot *s);
/* ... and unchanged after a failed one (else abort). */
void snapshot_check_unchanged(const snapshot *s, const char *call);
void snapshot_free(snapshot *s);
/* Every live state loads back and saves the same (else abort). */
void check_states_load_back(void);
/* Frees the input's handles, optimizers first. */
void free_handles(void);

#endif /* OWL_FUZZ_API_H */
