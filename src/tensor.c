/* Tensor validation, row conversions to and from f32, non-finite scans and
 * aligned allocation. */
#include "internal.h"
#include "dtype.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void owl_tensor_init(owl_tensor *t, void *data, owl_dtype dtype, int64_t rows,
                     int64_t cols)
{
    if (t == NULL)
        return;
    t->data = data;
    t->rows = rows;
    t->cols = cols;
    t->row_stride = cols;
    t->dtype = dtype;
    t->flags = 0;
}

const char *owl__dtype_name(owl_dtype dt)
{
    switch (dt) {
    case OWL_DTYPE_F32: return "f32";
    case OWL_DTYPE_BF16: return "bf16";
    case OWL_DTYPE_F16: return "f16";
    case OWL_DTYPE_F64: return "f64";
    default: return "unknown";
    }
}

size_t owl__dtype_size(owl_dtype dt)
{
    switch (dt) {
    case OWL_DTYPE_F32: return 4;
    case OWL_DTYPE_BF16: return 2;
    case OWL_DTYPE_F16: return 2;
    case OWL_DTYPE_F64: return 8;
    default: return 0;
    }
}

bool owl__mul_overflows(size_t a, size_t b, size_t *out)
{
    return __builtin_mul_overflow(a, b, out);
}

static void allowed_list(uint32_t mask, char *buf, size_t cap)
{
    buf[0] = '\0';
    for (owl_dtype d = 0; d <= OWL_DTYPE_F64; d++) {
        if (!(mask & OWL_DT_BIT(d)))
            continue;
        size_t len = strlen(buf);
        if (len + 8 >= cap)
            break;
        if (len > 0)
            strcat(buf, "/");
        strcat(buf, owl__dtype_name(d));
    }
}

owl_status owl__check_tensor(owl_context *ctx, const owl_tensor *t,
                             const char *name, uint32_t allowed_mask)
{
    if (t == NULL)
        return owl__fail(ctx, OWL_ERR_NULL_POINTER, "%s is NULL", name);
    if (t->data == NULL)
        return owl__fail(ctx, OWL_ERR_NULL_POINTER, "%s->data is NULL", name);
    if (t->flags != 0)
        return owl__fail(ctx, OWL_ERR_INVALID_ARGUMENT,
                         "%s->flags is %d; it is reserved and must be 0", name,
                         (int)t->flags);
    if (t->dtype < 0 || t->dtype > OWL_DTYPE_F64 ||
        !(allowed_mask & OWL_DT_BIT(t->dtype))) {
        char list[64];
        allowed_list(allowed_mask, list, sizeof list);
        return owl__fail(ctx, OWL_ERR_DTYPE, "%s has dtype %s (%d); expected %s",
                         name, owl__dtype_name(t->dtype), (int)t->dtype, list);
    }
    if (t->rows < 1 || t->cols < 1)
        return owl__fail(ctx, OWL_ERR_SHAPE, "%s is %lldx%lld; both must be >= 1",
                         name, (long long)t->rows, (long long)t->cols);
    if (t->row_stride < t->cols)
        return owl__fail(ctx, OWL_ERR_SHAPE,
                         "%s has row_stride %lld < cols %lld", name,
                         (long long)t->row_stride, (long long)t->cols);
    size_t extent, bytes;
    if (owl__mul_overflows((size_t)(t->rows - 1), (size_t)t->row_stride, &extent) ||
        __builtin_add_overflow(extent, (size_t)t->cols, &extent) ||
        owl__mul_overflows(extent, owl__dtype_size(t->dtype), &bytes) ||
        bytes > (size_t)INT64_MAX)
        return owl__fail(ctx, OWL_ERR_SHAPE,
                         "%s (%lldx%lld, stride %lld) spans more memory than "
                         "can be addressed",
                         name, (long long)t->rows, (long long)t->cols,
                         (long long)t->row_stride);
    return OWL_OK;
}

owl_status owl__check_shape(owl_context *ctx, const owl_tensor *t,
                            const char *name, int64_t rows, int64_t cols)
{
    if (t->rows != rows || t->cols != cols)
        return owl__fail(ctx, OWL_ERR_SHAPE, "%s is %lldx%lld, expected %lldx%lld",
                         name, (long long)t->rows, (long long)t->cols,
                         (long long)rows, (long long)cols);
    return OWL_OK;
}

owl_status owl__check_dense(owl_context *ctx, const owl_tensor *t,
                            const char *name)
{
    if (t->row_stride != t->cols)
        return owl__fail(ctx, OWL_ERR_SHAPE,
                         "%s must be dense (row_stride %lld != cols %lld)",
                         name, (long long)t->row_stride, (long long)t->cols);
    return OWL_OK;
}

/* The bytes a checked tensor spans: [lo, hi). */
static void tensor_span(const owl_tensor *t, uintptr_t *lo, uintptr_t *hi)
{
    const size_t extent = ((size_t)(t->rows - 1) * (size_t)t->row_stride +
                           (size_t)t->cols) *
                          owl__dtype_size(t->dtype);
    *lo = (uintptr_t)t->data;
    *hi = *lo + extent;
}

owl_status owl__check_disjoint(owl_context *ctx, const owl_tensor *a,
                               const char *a_name, const owl_tensor *b,
                               const char *b_name)
{
    uintptr_t a_lo, a_hi, b_lo, b_hi;
    tensor_span(a, &a_lo, &a_hi);
    tensor_span(b, &b_lo, &b_hi);
    if (a_lo < b_hi && b_lo < a_hi)
        return owl__fail(ctx, OWL_ERR_INVALID_ARGUMENT,
                         "%s (data %p, %zu bytes) and %s (data %p, %zu bytes) "
                         "share memory; a tensor the call writes must not "
                         "overlap its other tensors",
                         a_name, a->data, (size_t)(a_hi - a_lo), b_name, b->data,
                         (size_t)(b_hi - b_lo));
    return OWL_OK;
}

void owl__load_span_f32(const owl_tensor *t, int64_t row, int64_t j0,
                        int64_t len, float *dst)
{
    const char *base = owl__row_ptr(t, row);
    switch (t->dtype) {
    case OWL_DTYPE_F32:
        memcpy(dst, (const float *)(const void *)base + j0,
               (size_t)len * sizeof(float));
        break;
    case OWL_DTYPE_BF16: {
        const uint16_t *h = (const uint16_t *)(const void *)base + j0;
        for (int64_t j = 0; j < len; j++)
            dst[j] = owl_bf16_to_f32(h[j]);
        break;
    }
    case OWL_DTYPE_F16: {
        const uint16_t *h = (const uint16_t *)(const void *)base + j0;
        for (int64_t j = 0; j < len; j++)
            dst[j] = owl_f16_to_f32(h[j]);
        break;
    }
    case OWL_DTYPE_F64: {
        const double *d = (const double *)(const void *)base + j0;
        for (int64_t j = 0; j < len; j++)
            dst[j] = (float)d[j];
        break;
    }
    }
}

void owl__load_row_f32(const owl_tensor *t, int64_t row, float *dst)
{
    owl__load_span_f32(t, row, 0, t->cols, dst);
}

bool owl__f32_has_nonfinite(const float *x, int64_t n)
{
    const uint32_t *u = (const uint32_t *)(const void *)x;
    uint32_t acc = 0;
    for (int64_t j = 0; j < n; j++)
        acc |= ((u[j] & 0x7f800000u) == 0x7f800000u);
    return acc != 0;
}

/* f32 bits with the sign cleared compare as magnitudes: 0x57800000 is
 * 2^48, and NaN and Inf lie above it. */
bool owl__f32_outside_step(const float *x, int64_t n)
{
    const uint32_t *u = (const uint32_t *)(const void *)x;
    uint32_t acc = 0;
    for (int64_t j = 0; j < n; j++)
        acc |= (u[j] & 0x7fffffffu) >= 0x57800000u;
    return acc != 0;
}

void owl__store_row_f32(const owl_tensor *t, int64_t row, const float *src)
{
    void *dst = owl__row_ptr(t, row);
    int64_t n = t->cols;
    switch (t->dtype) {
    case OWL_DTYPE_F32:
        memcpy(dst, src, (size_t)n * sizeof(float));
        break;
    case OWL_DTYPE_BF16: {
        uint16_t *h = dst;
        for (int64_t j = 0; j < n; j++)
            h[j] = owl_f32_to_bf16(src[j]);
        break;
    }
    case OWL_DTYPE_F16: {
        uint16_t *h = dst;
        for (int64_t j = 0; j < n; j++)
            h[j] = owl_f32_to_f16(src[j]);
        break;
    }
    case OWL_DTYPE_F64: {
        double *d = dst;
        for (int64_t j = 0; j < n; j++)
            d[j] = src[j];
        break;
    }
    }
}

typedef struct {
    const owl_tensor *t;
    bool step; /* the gradient range (owl__grad_in_range), not just finite */
    int bad;   /* written only as 0 -> 1; read after the join */
} finite_job;

/* Tests on the raw bits: branch-free and vectorisable. Finite: exponent
 * not all ones. In the step range: the magnitude's bits below 2^48's
 * (f16 cannot reach it: only its Inf and NaN are out). */
static bool rows_finite(const owl_tensor *t, int64_t r0, int64_t r1,
                        bool step)
{
    int64_t n = t->cols;
    for (int64_t i = r0; i < r1; i++) {
        const void *row = owl__row_ptr(t, i);
        uint32_t acc = 0;
        switch (t->dtype) {
        case OWL_DTYPE_F32:
            acc = step ? owl__f32_outside_step(row, n)
                       : owl__f32_has_nonfinite(row, n);
            break;
        case OWL_DTYPE_BF16: {
            const uint16_t *u = row;
            if (step)
                for (int64_t j = 0; j < n; j++)
                    acc |= (u[j] & 0x7fffu) >= 0x5780u;
            else
                for (int64_t j = 0; j < n; j++)
                    acc |= ((u[j] & 0x7f80u) == 0x7f80u);
            break;
        }
        case OWL_DTYPE_F16: {
            const uint16_t *u = row;
            for (int64_t j = 0; j < n; j++)
                acc |= ((u[j] & 0x7c00u) == 0x7c00u);
            break;
        }
        case OWL_DTYPE_F64: {
            const double *d = row;
            if (step)
                for (int64_t j = 0; j < n; j++)
                    acc |= !(fabs(d[j]) < OWL_STEP_LIMIT);
            else
                for (int64_t j = 0; j < n; j++)
                    acc |= !isfinite(d[j]);
            break;
        }
        }
        if (acc)
            return false;
    }
    return true;
}

static void finite_range(void *arg, int64_t begin, int64_t end)
{
    finite_job *job = arg;
    if (!rows_finite(job->t, begin, end, job->step))
        __atomic_store_n(&job->bad, 1, __ATOMIC_RELAXED);
}

static bool scan(owl_context *ctx, const owl_tensor *t, bool step)
{
    finite_job job = {t, step, 0};
    int64_t grain = t->cols >= 65536 ? 1 : 65536 / t->cols;
    owl__parallel_for(ctx, t->rows, grain, finite_range, &job);
    return __atomic_load_n(&job.bad, __ATOMIC_RELAXED) == 0;
}

bool owl__all_finite(owl_context *ctx, const owl_tensor *t)
{
    return scan(ctx, t, false);
}

bool owl__grad_in_range(owl_context *ctx, const owl_tensor *t)
{
    return scan(ctx, t, true);
}

void *owl__alloc(owl_context *ctx, size_t count, size_t elem_size,
                 const char *what)
{
    size_t bytes;
    if (owl__mul_overflows(count, elem_size, &bytes)) {
        owl__fail(ctx, OWL_ERR_OUT_OF_MEMORY, "%s: size overflows", what);
        return NULL;
    }
    if (bytes == 0)
        bytes = 1;
    size_t rounded = (bytes + 63u) & ~(size_t)63u;
    if (rounded < bytes) {
        owl__fail(ctx, OWL_ERR_OUT_OF_MEMORY, "%s: size overflows", what);
        return NULL;
    }
    void *p = aligned_alloc(64, rounded);
    if (p == NULL) {
        owl__fail(ctx, OWL_ERR_OUT_OF_MEMORY,
                  "%s: cannot allocate %zu bytes", what, rounded);
        return NULL;
    }
    memset(p, 0, rounded);
    return p;
}

void owl__free(void *p) { free(p); }
