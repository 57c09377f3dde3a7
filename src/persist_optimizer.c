/* Saving and loading the optimizer's state (spec section 6). */
#include "optimizer_internal.h"

static owl_status unsupported(const owl_optimizer *opt)
{
    if (opt == NULL)
        return OWL_ERR_NULL_POINTER;
    owl__clear_error(opt->ctx);
    return owl__fail(opt->ctx, OWL_ERR_UNSUPPORTED,
                     "optimizer state persistence is not built yet");
}

owl_status owl_optimizer_state_size(const owl_optimizer *opt, uint64_t *bytes)
{
    (void)bytes;
    return unsupported(opt);
}

owl_status owl_optimizer_save(const owl_optimizer *opt, void *buf,
                              uint64_t capacity, uint64_t *written)
{
    (void)buf;
    (void)capacity;
    (void)written;
    return unsupported(opt);
}

owl_status owl_optimizer_load(owl_optimizer *opt, const void *buf,
                              uint64_t size)
{
    (void)buf;
    (void)size;
    return unsupported(opt);
}

owl_status owl_optimizer_save_file(const owl_optimizer *opt, const char *path)
{
    (void)path;
    return unsupported(opt);
}

owl_status owl_optimizer_load_file(owl_optimizer *opt, const char *path)
{
    (void)path;
    return unsupported(opt);
}
