/* The persistence functions of each stateful handle behind one typed-erased
 * table, so tests and the fuzzer can run the same save/load checks over
 * every kind of handle. */
#ifndef OWLORE_TEST_STATE_OPS_H
#define OWLORE_TEST_STATE_OPS_H

#include <owlore/owlore.h>

typedef owl_status (*state_size_fn)(const void *h, uint64_t *bytes);
typedef owl_status (*state_save_fn)(const void *h, void *buf, uint64_t cap,
                                    uint64_t *written);
typedef owl_status (*state_load_fn)(void *h, const void *buf, uint64_t size);
typedef void (*state_free_fn)(void *h);

typedef struct state_ops {
    state_size_fn size;
    state_save_fn save;
    state_load_fn load;
    state_free_fn free;
} state_ops;

#define OWL_TEST_STATE_OPS(kind, type)                                        \
    static owl_status kind##_ops_size(const void *h, uint64_t *b)             \
    {                                                                         \
        return owl_##kind##_state_size((const type *)h, b);                   \
    }                                                                         \
    static owl_status kind##_ops_save(const void *h, void *buf, uint64_t c,   \
                                      uint64_t *w)                            \
    {                                                                         \
        return owl_##kind##_save((const type *)h, buf, c, w);                 \
    }                                                                         \
    static owl_status kind##_ops_load(void *h, const void *buf, uint64_t n)   \
    {                                                                         \
        return owl_##kind##_load((type *)h, buf, n);                          \
    }                                                                         \
    static void kind##_ops_free(void *h)                                      \
    {                                                                         \
        owl_##kind##_free((type *)h);                                         \
    }                                                                         \
    static const state_ops kind##_ops = {kind##_ops_size, kind##_ops_save,    \
                                         kind##_ops_load, kind##_ops_free};

OWL_TEST_STATE_OPS(sampler, owl_sampler)
OWL_TEST_STATE_OPS(galore, owl_galore)
OWL_TEST_STATE_OPS(adamw, owl_adamw)
OWL_TEST_STATE_OPS(optimizer, owl_optimizer)

#endif /* OWLORE_TEST_STATE_OPS_H */
