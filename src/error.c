/* Per-context error messages and the handling of size-carrying options. */
#include "internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

owl_status owl__fail(owl_context *ctx, owl_status status, const char *fmt, ...)
{
    if (ctx != NULL) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(ctx->error, sizeof ctx->error, fmt, ap);
        va_end(ap);
    }
    return status;
}

void owl__clear_error(owl_context *ctx)
{
    if (ctx != NULL)
        ctx->error[0] = '\0';
}

/* No options struct will ever be this large; a bigger size is garbage. */
#define OWL_OPTIONS_MAX_SIZE 4096u

bool owl__struct_size_ok(uint64_t struct_size)
{
    return struct_size >= sizeof(uint64_t) &&
           struct_size <= OWL_OPTIONS_MAX_SIZE && struct_size % 8 == 0;
}

owl_status owl__read_options(owl_context *ctx, void *dst, size_t dst_size,
                             const void *src, const char *what)
{
    uint64_t size;
    memcpy(&size, src, sizeof size);
    if (!owl__struct_size_ok(size))
        return owl__fail(ctx, OWL_ERR_STRUCT_SIZE,
                         "%s.struct_size is %llu; fill it with the options' "
                         "init function (sizes are multiples of 8 up to 4096)",
                         what, (unsigned long long)size);
    if (size > dst_size) {
        const unsigned char *extra = (const unsigned char *)src + dst_size;
        for (size_t i = 0; i < size - dst_size; i++)
            if (extra[i] != 0)
                return owl__fail(ctx, OWL_ERR_STRUCT_SIZE,
                                 "%s sets fields this library version (%s) "
                                 "does not know",
                                 what, OWL_VERSION_STRING);
    }
    size_t n = size < dst_size ? (size_t)size : dst_size;
    /* Keep our own struct_size: fields past the caller's size keep their
     * defaults. */
    memcpy((char *)dst + sizeof(uint64_t), (const char *)src + sizeof(uint64_t),
           n - sizeof(uint64_t));
    return OWL_OK;
}

owl_status owl__init_options(void *opts, uint64_t struct_size,
                             const void *defaults, size_t our_size)
{
    if (opts == NULL)
        return OWL_ERR_NULL_POINTER;
    if (!owl__struct_size_ok(struct_size))
        return OWL_ERR_STRUCT_SIZE;
    size_t n = struct_size < our_size ? (size_t)struct_size : our_size;
    memcpy(opts, defaults, n);
    if (struct_size > our_size)
        memset((char *)opts + our_size, 0, (size_t)struct_size - our_size);
    memcpy(opts, &struct_size, sizeof struct_size);
    return OWL_OK;
}

owl_status owl__create_begin(owl_context *ctx, bool have_out, const void *opts,
                             void *dst, size_t dst_size, const char *what)
{
    if (ctx == NULL)
        return OWL_ERR_NULL_POINTER;
    owl__clear_error(ctx);
    if (!have_out)
        return owl__fail(ctx, OWL_ERR_NULL_POINTER, "out is NULL");
    if (opts == NULL)
        return owl__fail(ctx, OWL_ERR_NULL_POINTER, "opts is NULL");
    return owl__read_options(ctx, dst, dst_size, opts, what);
}
