/* Typed reads of GGUF metadata: scalars, strings and arrays, with their
 * types and ranges checked. See gguf.h. */
#include "gguf.h"
#include "errmsg.h"
#include "gguf_internal.h"

#include <float.h>
#include <math.h>
#include <stdio.h>

/* ---- values ----------------------------------------------------------- */

static int is_unsigned(gguf_type t)
{
    return t == GGUF_TYPE_UINT8 || t == GGUF_TYPE_UINT16 ||
           t == GGUF_TYPE_UINT32 || t == GGUF_TYPE_UINT64;
}

static int is_signed(gguf_type t)
{
    return t == GGUF_TYPE_INT8 || t == GGUF_TYPE_INT16 ||
           t == GGUF_TYPE_INT32 || t == GGUF_TYPE_INT64;
}

static uint64_t raw_unsigned(gguf_type t, const unsigned char *p)
{
    switch (t) {
    case GGUF_TYPE_UINT8: return p[0];
    case GGUF_TYPE_UINT16: return gguf_le16(p);
    case GGUF_TYPE_UINT32: return gguf_le32(p);
    default: return gguf_le64(p);
    }
}

static int64_t raw_signed(gguf_type t, const unsigned char *p)
{
    switch (t) {
    case GGUF_TYPE_INT8: return (int8_t)p[0];
    case GGUF_TYPE_INT16: return (int16_t)gguf_le16(p);
    case GGUF_TYPE_INT32: return (int32_t)gguf_le32(p);
    default: return (int64_t)gguf_le64(p);
    }
}

int gguf_value_u64(const gguf_value *v, uint64_t *out)
{
    if (!v || !out)
        return -1;
    if (is_unsigned(v->type)) {
        *out = raw_unsigned(v->type, v->data);
        return 0;
    }
    if (is_signed(v->type)) {
        int64_t x = raw_signed(v->type, v->data);
        if (x < 0)
            return -1;
        *out = (uint64_t)x;
        return 0;
    }
    return -1;
}

int gguf_value_i64(const gguf_value *v, int64_t *out)
{
    if (!v || !out)
        return -1;
    if (is_signed(v->type)) {
        *out = raw_signed(v->type, v->data);
        return 0;
    }
    if (is_unsigned(v->type)) {
        uint64_t x = raw_unsigned(v->type, v->data);
        if (x > (uint64_t)INT64_MAX)
            return -1;
        *out = (int64_t)x;
        return 0;
    }
    return -1;
}

int gguf_value_f64(const gguf_value *v, double *out)
{
    if (!v || !out)
        return -1;
    if (v->type == GGUF_TYPE_FLOAT32) {
        *out = (double)gguf_bits_f32(gguf_le32(v->data));
        return 0;
    }
    if (v->type == GGUF_TYPE_FLOAT64) {
        uint64_t b = gguf_le64(v->data);
        memcpy(out, &b, sizeof *out);
        return 0;
    }
    return -1;
}

int gguf_value_bool(const gguf_value *v, int *out)
{
    if (!v || !out || v->type != GGUF_TYPE_BOOL)
        return -1;
    *out = v->data[0] != 0;
    return 0;
}

int gguf_value_str(const gguf_value *v, gguf_str *out)
{
    if (!v || !out || v->type != GGUF_TYPE_STRING)
        return -1;
    out->ptr = (const char *)v->data;
    out->len = v->len;
    return 0;
}

/* ---- arrays ------------------------------------------------------------ */

static size_t elem_bytes(gguf_type t)
{
    switch (t) {
    case GGUF_TYPE_UINT8: case GGUF_TYPE_INT8: case GGUF_TYPE_BOOL: return 1;
    case GGUF_TYPE_UINT16: case GGUF_TYPE_INT16: return 2;
    case GGUF_TYPE_UINT32: case GGUF_TYPE_INT32: case GGUF_TYPE_FLOAT32:
        return 4;
    case GGUF_TYPE_UINT64: case GGUF_TYPE_INT64: case GGUF_TYPE_FLOAT64:
        return 8;
    default: return 0;
    }
}

int gguf_array_get(const gguf_value *arr, uint64_t i, gguf_value *out)
{
    if (!arr || !out || arr->type != GGUF_TYPE_ARRAY || i >= arr->len)
        return -1;
    if (arr->elem_type == GGUF_TYPE_ARRAY) {
        *out = ((const gguf_value *)arr->index)[i];
        return 0;
    }
    memset(out, 0, sizeof *out);
    out->type = arr->elem_type;
    if (arr->elem_type == GGUF_TYPE_STRING) {
        const gguf_str *s = &((const gguf_str *)arr->index)[i];
        out->data = (const unsigned char *)s->ptr;
        out->len = s->len;
        return 0;
    }
    out->data = arr->data + i * elem_bytes(arr->elem_type);
    out->len = 1;
    return 0;
}

int gguf_array_str(const gguf_value *arr, uint64_t i, gguf_str *out)
{
    if (!arr || !out || arr->type != GGUF_TYPE_ARRAY ||
        arr->elem_type != GGUF_TYPE_STRING || i >= arr->len)
        return -1;
    *out = ((const gguf_str *)arr->index)[i];
    return 0;
}

int gguf_array_f32(const gguf_value *arr, float *out, const char *what,
                   char *err, size_t errlen)
{
    if (!arr || arr->type != GGUF_TYPE_ARRAY ||
        (arr->elem_type != GGUF_TYPE_FLOAT32 &&
         arr->elem_type != GGUF_TYPE_FLOAT64)) {
        llama_set_err(err, errlen, "%s: an array of FLOAT32 expected, found %s%s",
                what, arr && arr->type == GGUF_TYPE_ARRAY ? "an array of "
                                                          : "",
                !arr ? "nothing"
                     : gguf_type_name(arr->type == GGUF_TYPE_ARRAY
                                          ? arr->elem_type
                                          : arr->type));
        return -1;
    }
    for (uint64_t i = 0; i < arr->len; i++) {
        gguf_value e;
        double x;
        gguf_array_get(arr, i, &e);
        gguf_value_f64(&e, &x);
        if (isfinite(x) && fabs(x) > FLT_MAX) {
            llama_set_err(err, errlen, "%s: element %llu = %g is beyond float's "
                    "range", what, (unsigned long long)i, x);
            return -1;
        }
        out[i] = (float)x;
    }
    return 0;
}

int gguf_array_i32(const gguf_value *arr, int32_t *out, const char *what,
                   char *err, size_t errlen)
{
    if (!arr || arr->type != GGUF_TYPE_ARRAY ||
        (!is_signed(arr->elem_type) && !is_unsigned(arr->elem_type))) {
        llama_set_err(err, errlen, "%s: an array of integers expected, found %s%s",
                what, arr && arr->type == GGUF_TYPE_ARRAY ? "an array of "
                                                          : "",
                !arr ? "nothing"
                     : gguf_type_name(arr->type == GGUF_TYPE_ARRAY
                                          ? arr->elem_type
                                          : arr->type));
        return -1;
    }
    for (uint64_t i = 0; i < arr->len; i++) {
        gguf_value e;
        int64_t x;
        gguf_array_get(arr, i, &e);
        if (gguf_value_i64(&e, &x) != 0 || x < INT32_MIN || x > INT32_MAX) {
            llama_set_err(err, errlen, "%s: element %llu does not fit in INT32",
                    what, (unsigned long long)i);
            return -1;
        }
        out[i] = (int32_t)x;
    }
    return 0;
}

/* ---- keys ---------------------------------------------------------------- */

/* The key's value, or NULL with "missing" in err. */
static const gguf_value *find(const gguf_file *f, const char *key,
                              char *err, size_t errlen)
{
    const gguf_value *v = gguf_get(f, key);
    if (!v)
        llama_set_err(err, errlen, "%s: key '%s' is missing",
                f && f->name ? f->name : "gguf", key ? key : "(null)");
    return v;
}

static const char *fname(const gguf_file *f)
{
    return f->name ? f->name : "gguf";
}

/* An integer key within [lo, hi] (signed) or [0, uhi] (unsigned). */
static int get_int(const gguf_file *f, const char *key, int64_t lo,
                   int64_t hi, uint64_t uhi, int want_signed, int64_t *s,
                   uint64_t *u, const char *want, char *err, size_t errlen)
{
    const gguf_value *v = find(f, key, err, errlen);
    if (!v)
        return 1;
    if (!is_signed(v->type) && !is_unsigned(v->type)) {
        llama_set_err(err, errlen, "%s: key '%s' is a %s, not an integer (%s)",
                fname(f), key, gguf_type_name(v->type), want);
        return -1;
    }
    int ok;
    if (is_signed(v->type)) {
        int64_t x = raw_signed(v->type, v->data);
        ok = want_signed ? x >= lo && x <= hi : x >= 0 && (uint64_t)x <= uhi;
        if (!ok)
            llama_set_err(err, errlen, "%s: key '%s' = %lld does not fit in %s",
                    fname(f), key, (long long)x, want);
        if (want_signed)
            *s = x;
        else
            *u = (uint64_t)x;
    } else {
        uint64_t x = raw_unsigned(v->type, v->data);
        ok = want_signed ? x <= (uint64_t)hi : x <= uhi;
        if (!ok)
            llama_set_err(err, errlen, "%s: key '%s' = %llu does not fit in %s",
                    fname(f), key, (unsigned long long)x, want);
        if (want_signed)
            *s = (int64_t)x;
        else
            *u = x;
    }
    return ok ? 0 : -1;
}

int gguf_get_u32(const gguf_file *f, const char *key, uint32_t *out,
                 char *err, size_t errlen)
{
    uint64_t u;
    int rc = get_int(f, key, 0, 0, UINT32_MAX, 0, NULL, &u, "UINT32", err,
                     errlen);
    if (rc == 0)
        *out = (uint32_t)u;
    return rc;
}

int gguf_get_i32(const gguf_file *f, const char *key, int32_t *out,
                 char *err, size_t errlen)
{
    int64_t s;
    int rc = get_int(f, key, INT32_MIN, INT32_MAX, 0, 1, &s, NULL, "INT32",
                     err, errlen);
    if (rc == 0)
        *out = (int32_t)s;
    return rc;
}

int gguf_get_u64(const gguf_file *f, const char *key, uint64_t *out,
                 char *err, size_t errlen)
{
    uint64_t u;
    int rc = get_int(f, key, 0, 0, UINT64_MAX, 0, NULL, &u, "UINT64", err,
                     errlen);
    if (rc == 0)
        *out = u;
    return rc;
}

int gguf_get_i64(const gguf_file *f, const char *key, int64_t *out,
                 char *err, size_t errlen)
{
    int64_t s;
    int rc = get_int(f, key, INT64_MIN, INT64_MAX, 0, 1, &s, NULL, "INT64",
                     err, errlen);
    if (rc == 0)
        *out = s;
    return rc;
}

int gguf_get_token_id(const gguf_file *f, const char *key, uint64_t count,
                      int32_t *out, char *err, size_t errlen)
{
    int64_t v;
    *out = -1;
    int rc = gguf_get_i64(f, key, &v, err, errlen);
    if (rc == 1)
        return 0;
    if (rc != 0)
        return -1;
    if (v < 0 || (uint64_t)v >= count || v > INT32_MAX)
        return llama_fail(err, errlen, "%s: %s = %lld is out of range (%llu "
                          "tokens)", fname(f), key, (long long)v,
                          (unsigned long long)count);
    *out = (int32_t)v;
    return 0;
}

int gguf_get_f64(const gguf_file *f, const char *key, double *out,
                 char *err, size_t errlen)
{
    const gguf_value *v = find(f, key, err, errlen);
    if (!v)
        return 1;
    if (gguf_value_f64(v, out) != 0) {
        llama_set_err(err, errlen, "%s: key '%s' is a %s, not a FLOAT32 or FLOAT64",
                fname(f), key, gguf_type_name(v->type));
        return -1;
    }
    return 0;
}

int gguf_get_f32(const gguf_file *f, const char *key, float *out,
                 char *err, size_t errlen)
{
    double x;
    int rc = gguf_get_f64(f, key, &x, err, errlen);
    if (rc != 0)
        return rc;
    if (isfinite(x) && fabs(x) > FLT_MAX) {
        llama_set_err(err, errlen, "%s: key '%s' = %g is beyond float's range",
                fname(f), key, x);
        return -1;
    }
    *out = (float)x;
    return 0;
}

int gguf_get_bool(const gguf_file *f, const char *key, int *out, char *err,
                  size_t errlen)
{
    const gguf_value *v = find(f, key, err, errlen);
    if (!v)
        return 1;
    if (gguf_value_bool(v, out) != 0) {
        llama_set_err(err, errlen, "%s: key '%s' is a %s, not a BOOL", fname(f),
                key, gguf_type_name(v->type));
        return -1;
    }
    return 0;
}

int gguf_get_str(const gguf_file *f, const char *key, gguf_str *out,
                 char *err, size_t errlen)
{
    const gguf_value *v = find(f, key, err, errlen);
    if (!v)
        return 1;
    if (gguf_value_str(v, out) != 0) {
        llama_set_err(err, errlen, "%s: key '%s' is a %s, not a STRING", fname(f),
                key, gguf_type_name(v->type));
        return -1;
    }
    return 0;
}

int gguf_get_array(const gguf_file *f, const char *key,
                   const gguf_value **arr, gguf_type *elem_type,
                   uint64_t *count, char *err, size_t errlen)
{
    const gguf_value *v = find(f, key, err, errlen);
    if (!v)
        return 1;
    if (v->type != GGUF_TYPE_ARRAY) {
        llama_set_err(err, errlen, "%s: key '%s' is a %s, not an ARRAY", fname(f),
                key, gguf_type_name(v->type));
        return -1;
    }
    if (arr)
        *arr = v;
    if (elem_type)
        *elem_type = v->elem_type;
    if (count)
        *count = v->len;
    return 0;
}
