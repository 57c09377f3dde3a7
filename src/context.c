/* The context: backend choice, worker threads, stream, last error and the
 * scratch its handles share. */
#include "internal.h"
#ifdef OWL_HAVE_CUDA
#include "cuda_internal.h"
#endif

#include <stdlib.h>
#include <unistd.h>

/* More threads than this is a caller's mistake, not a machine. */
#define OWL_MAX_THREADS 1024

static const owl_context_options context_defaults = {
    .struct_size = sizeof(owl_context_options),
    .backend = OWL_BACKEND_CPU,
    .device = 0,
    .num_threads = 0,
    .reserved = 0,
};

owl_status owl_context_options_init(owl_context_options *opts,
                                    uint64_t struct_size)
{
    return owl__init_options(opts, struct_size, &context_defaults,
                             sizeof context_defaults);
}

int32_t owl_backend_available(owl_backend backend)
{
    if (backend == OWL_BACKEND_CPU)
        return 1;
#ifdef OWL_HAVE_CUDA
    if (backend == OWL_BACKEND_CUDA)
        return 1;
#endif
    return 0;
}

static int32_t online_cores(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    if (n < 1)
        return 1;
    return n > OWL_MAX_THREADS ? OWL_MAX_THREADS : (int32_t)n;
}

owl_status owl_context_create(owl_context **out, const owl_context_options *opts)
{
    if (out == NULL)
        return OWL_ERR_NULL_POINTER;
    *out = NULL;
    owl_context_options o = context_defaults;
    if (opts != NULL) {
        owl_status s = owl__read_options(NULL, &o, sizeof o, opts,
                                         "owl_context_options");
        if (s != OWL_OK)
            return s;
    }
    if (o.backend != OWL_BACKEND_CPU && o.backend != OWL_BACKEND_CUDA)
        return OWL_ERR_INVALID_ARGUMENT;
    if (o.num_threads < 0 || o.num_threads > OWL_MAX_THREADS)
        return OWL_ERR_INVALID_ARGUMENT;
    if (o.device < 0 || o.reserved != 0)
        return OWL_ERR_INVALID_ARGUMENT;
    if (o.backend == OWL_BACKEND_CUDA && !owl_backend_available(o.backend))
        return OWL_ERR_UNSUPPORTED;

    owl_context *ctx = calloc(1, sizeof *ctx);
    if (ctx == NULL)
        return OWL_ERR_OUT_OF_MEMORY;
    ctx->backend = o.backend;
    ctx->device = o.device;
    ctx->num_threads = o.num_threads == 0 ? online_cores() : o.num_threads;
    if (ctx->num_threads > 1) {
        ctx->pool = owl__pool_create(ctx->num_threads);
        if (ctx->pool == NULL) {
            free(ctx);
            return OWL_ERR_OUT_OF_MEMORY;
        }
    }
#ifdef OWL_HAVE_CUDA
    if (ctx->backend == OWL_BACKEND_CUDA) {
        owl_status s = owl__cuda_context_create(ctx);
        if (s != OWL_OK) {
            owl__pool_free(ctx->pool);
            free(ctx);
            return s;
        }
    }
#endif
    *out = ctx;
    return OWL_OK;
}

void owl_context_free(owl_context *ctx)
{
    if (ctx == NULL)
        return;
#ifdef OWL_HAVE_CUDA
    owl__cuda_context_free(ctx);
#endif
    owl__pool_free(ctx->pool);
    free(ctx->scratch);
    free(ctx);
}

owl_status owl__context_reserve(owl_context *ctx, size_t bytes)
{
    if (bytes <= ctx->scratch_bytes)
        return OWL_OK;
    size_t rounded = (bytes + 63u) & ~(size_t)63u;
    if (rounded < bytes)
        return owl__fail(ctx, OWL_ERR_OUT_OF_MEMORY,
                         "context scratch: %zu bytes overflows", bytes);
    /* Not zeroed: every user writes before it reads, and untouched pages
     * of a large workspace then cost no memory. The new block is taken
     * before the old one goes, so a failure leaves the old one usable. */
    void *p = aligned_alloc(64, rounded);
    if (p == NULL)
        return owl__fail(ctx, OWL_ERR_OUT_OF_MEMORY,
                         "context scratch: cannot allocate %zu bytes",
                         rounded);
    free(ctx->scratch);
    ctx->scratch = p;
    ctx->scratch_bytes = rounded;
    return OWL_OK;
}

owl_status owl_context_set_stream(owl_context *ctx, void *stream)
{
    if (ctx == NULL)
        return OWL_ERR_NULL_POINTER;
    owl__clear_error(ctx);
    if (ctx->backend == OWL_BACKEND_CPU && stream != NULL)
        return owl__fail(ctx, OWL_ERR_UNSUPPORTED,
                         "a CPU context has no stream; pass NULL");
#ifdef OWL_HAVE_CUDA
    if (ctx->backend == OWL_BACKEND_CUDA)
        return owl__cuda_set_stream(ctx, stream);
#endif
    ctx->stream = stream;
    return OWL_OK;
}

owl_status owl_context_synchronize(owl_context *ctx)
{
    if (ctx == NULL)
        return OWL_ERR_NULL_POINTER;
    owl__clear_error(ctx);
#ifdef OWL_HAVE_CUDA
    if (ctx->backend == OWL_BACKEND_CUDA)
        return owl__cuda_synchronize(ctx);
#endif
    return OWL_OK;
}

owl_status owl_context_nonfinite_skips(owl_context *ctx, uint64_t *count)
{
    if (ctx == NULL)
        return OWL_ERR_NULL_POINTER;
    owl__clear_error(ctx);
    OWL_REQUIRE_PTR(ctx, count);
#ifdef OWL_HAVE_CUDA
    if (ctx->backend == OWL_BACKEND_CUDA)
        return owl__cuda_nonfinite_skips(ctx, count);
#endif
    *count = ctx->nonfinite_skips;
    return OWL_OK;
}

owl_backend owl_context_backend(const owl_context *ctx)
{
    return ctx ? ctx->backend : OWL_BACKEND_CPU;
}

int32_t owl_context_num_threads(const owl_context *ctx)
{
    return ctx ? ctx->num_threads : 1;
}

const char *owl_context_last_error(const owl_context *ctx)
{
    return ctx ? ctx->error : "context is NULL";
}
