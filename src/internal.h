/* Shared internals of libowlore: the context, error reporting, tensor
 * validation, options handling, memory and the worker pool. Nothing here
 * is exported. */
#ifndef OWLORE_INTERNAL_H
#define OWLORE_INTERNAL_H

#include "owlore/owlore.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct owl_pool owl_pool;

#define OWL_ERROR_CAP 512

struct owl_context {
    owl_backend backend;
    int32_t device;
    int32_t num_threads;
    void *stream;
    owl_pool *pool; /* NULL when num_threads == 1 */
    /* Workspace shared by every handle of the context, for what is only
     * needed during one call (a projector's f32 gradient copy, its SVD
     * workspace, blocked outputs). Handles reserve their need at create, so
     * no step allocates; they fetch the pointer at each use, never keep it,
     * since a later create may move it. Sharing is safe because a context
     * and its handles are used by one thread at a time. 64-byte aligned,
     * contents undefined between calls. */
    void *scratch;
    size_t scratch_bytes;
    /* CUDA contexts: handles, device scratch, step flag (src/cuda_internal.h);
     * NULL for CPU contexts. */
    struct owl_cuda *cuda;
    uint64_t nonfinite_skips; /* CPU: steps refused for NaN/Inf gradients */
    char error[OWL_ERROR_CAP];
};

/* Grows the context's scratch to at least `bytes` (never shrinks; freed
 * with the context). The old contents are not kept. On failure the scratch
 * is unchanged and an error is recorded. */
owl_status owl__context_reserve(owl_context *ctx, size_t bytes);

/* ---- errors ---------------------------------------------------------- */

/* Records a formatted message on ctx (if any) and returns status. */
owl_status owl__fail(owl_context *ctx, owl_status status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Clears the last error; every entry point calls this first. */
void owl__clear_error(owl_context *ctx);

#define OWL_REQUIRE_PTR(ctx, p)                                               \
    do {                                                                      \
        if ((p) == NULL)                                                      \
            return owl__fail((ctx), OWL_ERR_NULL_POINTER, "%s is NULL", #p);  \
    } while (0)

/* ---- dtypes and tensors ---------------------------------------------- */

#define OWL_DT_BIT(dt) (1u << (unsigned)(dt))
#define OWL_DT_HALVES (OWL_DT_BIT(OWL_DTYPE_BF16) | OWL_DT_BIT(OWL_DTYPE_F16))
#define OWL_DT_FLOATS (OWL_DT_BIT(OWL_DTYPE_F32) | OWL_DT_HALVES)

const char *owl__dtype_name(owl_dtype dt);
size_t owl__dtype_size(owl_dtype dt); /* 0 for an unknown dtype */

/* Validates a tensor argument: non-NULL, data non-NULL, rows/cols >= 1,
 * row_stride >= cols, flags == 0, dtype within allowed_mask, and the byte
 * extent fits in size_t. `name` appears in the message. */
owl_status owl__check_tensor(owl_context *ctx, const owl_tensor *t,
                             const char *name, uint32_t allowed_mask);
/* Checks that t is rows x cols, naming both tensors on failure. */
owl_status owl__check_shape(owl_context *ctx, const owl_tensor *t,
                            const char *name, int64_t rows, int64_t cols);
/* Requires row_stride == cols. */
owl_status owl__check_dense(owl_context *ctx, const owl_tensor *t,
                            const char *name);
/* OWL_ERR_INVALID_ARGUMENT (naming both) when two checked tensors' byte
 * ranges [data, data + extent) overlap. A call that writes one tensor
 * while reading another would otherwise read its own writes: an in-place
 * update of a weight that aliases its gradient turns the moments into
 * NaN. Conservative for strided views that interleave without sharing an
 * element; those are refused too. */
owl_status owl__check_disjoint(owl_context *ctx, const owl_tensor *a,
                               const char *a_name, const owl_tensor *b,
                               const char *b_name);

static inline void *owl__row_ptr(const owl_tensor *t, int64_t row)
{
    return (char *)t->data +
           (size_t)row * (size_t)t->row_stride * owl__dtype_size(t->dtype);
}

/* Row conversions between a tensor row (any float dtype) and f32. */
void owl__load_row_f32(const owl_tensor *t, int64_t row, float *dst);
/* Elements [j0, j0 + len) of a row as f32. */
void owl__load_span_f32(const owl_tensor *t, int64_t row, int64_t j0,
                        int64_t len, float *dst);
/* true when x[0..n) holds a NaN or Inf (exponent bits all ones; branch-free
 * so compilers vectorise it). */
bool owl__f32_has_nonfinite(const float *x, int64_t n);
void owl__store_row_f32(const owl_tensor *t, int64_t row, const float *src);

/* true when every element of t is finite (uses the context's threads). */
bool owl__all_finite(owl_context *ctx, const owl_tensor *t);

/* Gradients a step takes: every entry finite and of magnitude below
 * OWL_STEP_LIMIT = 2^48 (2.8e14). Past it the step is refused like a NaN
 * (OWL_ERR_NONFINITE, nothing changed): a larger entry could overflow
 * AdamW's f32 moments (v holds g^2; a projected entry is at most
 * sqrt(min(m, n)) < 2^15.5 times G's largest, so below 2^64 and its square
 * below f32's 2^128), and v = Inf or m = Inf turn into NaN at a later
 * step. No trained model's gradient comes near it. */
#define OWL_STEP_LIMIT 0x1p48
/* true when x[0..n) holds a NaN, an Inf or |x| >= OWL_STEP_LIMIT. */
bool owl__f32_outside_step(const float *x, int64_t n);
/* true when every element of t is a gradient a step takes (threads). */
bool owl__grad_in_range(owl_context *ctx, const owl_tensor *t);

/* ---- options structs ------------------------------------------------- */

/* True for a struct_size the library accepts: 8 to 4096 and a multiple of
 * 8. Every struct of the API holds a uint64_t, so its sizeof, in any
 * version of the header, is a multiple of 8; a size between two multiples
 * would end inside a field (half a pointer), so it is refused rather than
 * read. */
bool owl__struct_size_ok(uint64_t struct_size);

/* Validates a caller's options struct (first field: uint64_t struct_size)
 * and copies it over `dst`, which already holds the defaults. A caller's
 * struct smaller than ours keeps our defaults for the missing fields; a
 * larger one (newer header) is accepted only if the extra bytes are 0. */
owl_status owl__read_options(owl_context *ctx, void *dst, size_t dst_size,
                             const void *src, const char *what);
/* The common start of every *_create: ctx non-NULL (else
 * OWL_ERR_NULL_POINTER without a message), its error cleared, the out
 * pointer and opts present, and the caller's options read over `dst`
 * (which holds the defaults). The caller clears *out first. */
owl_status owl__create_begin(owl_context *ctx, bool have_out, const void *opts,
                             void *dst, size_t dst_size, const char *what);
/* Common body of the *_options_init functions: checks struct_size, writes
 * defaults (first min(size, ours) bytes), zeroes the rest, sets the size. */
owl_status owl__init_options(void *opts, uint64_t struct_size,
                             const void *defaults, size_t our_size);

/* ---- memory ---------------------------------------------------------- */

/* 64-byte aligned, zeroed allocation; records an error on failure. */
void *owl__alloc(owl_context *ctx, size_t count, size_t elem_size,
                 const char *what);
void owl__free(void *p);
/* a * b with overflow detection. */
bool owl__mul_overflows(size_t a, size_t b, size_t *out);
/* Lays out one array of a workspace: `count` elements of `elem` bytes at
 * the next 64-byte boundary after *end; its offset goes to *off and *end
 * moves past it. false on overflow (nothing is meaningful then). */
static inline bool owl__place(size_t *end, int64_t count, size_t elem,
                              size_t *off)
{
    size_t start = (*end + 63u) & ~(size_t)63u, bytes;
    if (start < *end || count < 0 ||
        owl__mul_overflows((size_t)count, elem, &bytes) ||
        __builtin_add_overflow(start, bytes, end))
        return false;
    *off = start;
    return true;
}

/* ---- threads --------------------------------------------------------- */

typedef void (*owl_range_fn)(void *arg, int64_t begin, int64_t end);

owl_pool *owl__pool_create(int32_t num_threads);
void owl__pool_free(owl_pool *pool);
/* Runs fn over [0, n) split into contiguous chunks of at least `grain`
 * items across the context's threads; returns when all are done. */
void owl__parallel_for(owl_context *ctx, int64_t n, int64_t grain,
                       owl_range_fn fn, void *arg);

/* ---- deterministic random numbers ------------------------------------ */

/* A 64-bit mix (SplitMix64 finaliser): a counter-based generator, so every
 * random value is a pure function of its (seed, stream, index). */
static inline uint64_t owl__mix64(uint64_t x)
{
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}
static inline uint64_t owl__hash3(uint64_t a, uint64_t b, uint64_t c)
{
    return owl__mix64(owl__mix64(owl__mix64(a) ^ b) ^ c);
}
/* Uniform double in [0, 1) from 53 random bits. */
static inline double owl__u01(uint64_t bits)
{
    return (double)(bits >> 11) * (1.0 / 9007199254740992.0);
}

#endif /* OWLORE_INTERNAL_H */
