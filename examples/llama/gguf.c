/* Opening GGUF files: the header, the metadata and the tensor infos, all
 * checked against the file's size before anything is allocated from
 * them; lookups by key and by tensor name. See gguf.h. */
#include "gguf.h"
#include "errmsg.h"
#include "gguf_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

typedef unsigned long long ull; /* for printf */

const char *gguf_printable(gguf_str s, char *buf)
{
    size_t n = s.len > 64 ? 64 : (size_t)s.len, at = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s.ptr[i];
        buf[at++] = ch >= 0x20 && ch < 0x7F ? (char)ch : '?';
    }
    if (s.len > n) {
        memcpy(buf + at, "...", 3);
        at += 3;
    }
    buf[at] = '\0';
    return buf;
}

const char *gguf_type_name(uint32_t type)
{
    static const char *const names[GGUF_TYPE_COUNT] = {
        "UINT8", "INT8",  "UINT16", "INT16", "UINT32", "INT32",  "FLOAT32",
        "BOOL",  "STRING", "ARRAY", "UINT64", "INT64", "FLOAT64"};
    return type < GGUF_TYPE_COUNT ? names[type] : "?";
}

/* ---- reading with bounds ----------------------------------------------- */

/* The parse position in f, and where a message goes. Every read checks
 * that the bytes it takes are in the file. */
typedef struct cursor {
    gguf_file *f;
    uint64_t pos;
    char *err;
    size_t errlen;
} cursor;

static uint64_t left(const cursor *c) { return c->f->size - c->pos; }

static int need(cursor *c, uint64_t n, const char *what)
{
    if (n > left(c)) {
        llama_set_err(c->err, c->errlen, "%s: truncated: %s needs %llu bytes at "
                "offset %llu, but the file has %llu bytes", c->f->name, what,
                (ull)n, (ull)c->pos, (ull)c->f->size);
        return -1;
    }
    return 0;
}

static int read_u32(cursor *c, uint32_t *v, const char *what)
{
    if (need(c, 4, what))
        return -1;
    *v = gguf_le32(c->f->bytes + c->pos);
    c->pos += 4;
    return 0;
}

static int read_u64(cursor *c, uint64_t *v, const char *what)
{
    if (need(c, 8, what))
        return -1;
    *v = gguf_le64(c->f->bytes + c->pos);
    c->pos += 8;
    return 0;
}

static int read_str(cursor *c, gguf_str *s, const char *what)
{
    uint64_t n;
    if (read_u64(c, &n, what))
        return -1;
    if (n > left(c)) {
        llama_set_err(c->err, c->errlen, "%s: %s claims %llu bytes at offset %llu, "
                "more than the %llu left in the file", c->f->name, what,
                (ull)n, (ull)c->pos, (ull)left(c));
        return -1;
    }
    s->ptr = (const char *)c->f->bytes + c->pos;
    s->len = n;
    c->pos += n;
    return 0;
}

/* ---- metadata values --------------------------------------------------- */

/* Bytes of a fixed-size value; 0 for STRING and ARRAY. */
static const uint8_t scalar_bytes[GGUF_TYPE_COUNT] = {1, 1, 2, 2, 4, 4, 4,
                                                      1, 0, 0, 8, 8, 8};
/* The fewest bytes an array element of each type takes in a file: what
 * bounds a claimed element count before its index is allocated. A
 * string is at least its u64 length, an array its u32 type and u64
 * count. */
static uint64_t min_elem_bytes(gguf_type t)
{
    return t == GGUF_TYPE_STRING ? 8 : t == GGUF_TYPE_ARRAY ? 12
                                                            : scalar_bytes[t];
}

static void free_value(gguf_value *v)
{
    if (v->type != GGUF_TYPE_ARRAY || !v->index)
        return;
    if (v->elem_type == GGUF_TYPE_ARRAY) {
        gguf_value *e = (gguf_value *)v->index;
        for (uint64_t i = 0; i < v->len; i++)
            free_value(&e[i]);
    }
    free((void *)v->index);
    v->index = NULL;
}

/* The key being parsed, for messages. */
typedef struct where {
    const char *key; /* printable */
} where;

static int parse_value(cursor *c, gguf_type type, int depth,
                       const where *w, gguf_value *v);

static int parse_array(cursor *c, int depth, const where *w, gguf_value *v)
{
    char what[160];
    uint32_t et;
    uint64_t n;
    snprintf(what, sizeof what, "the array header of key '%s'", w->key);
    if (read_u32(c, &et, what) || read_u64(c, &n, what))
        return -1;
    if (et >= GGUF_TYPE_COUNT) {
        llama_set_err(c->err, c->errlen, "%s: key '%s': array of unknown element "
                "type %u", c->f->name, w->key, et);
        return -1;
    }
    if (et == GGUF_TYPE_ARRAY && depth + 1 >= GGUF_MAX_NESTING) {
        llama_set_err(c->err, c->errlen, "%s: key '%s': arrays nested more than "
                "%d deep", c->f->name, w->key, GGUF_MAX_NESTING);
        return -1;
    }
    v->elem_type = (gguf_type)et;
    v->len = n;
    v->data = c->f->bytes + c->pos;
    uint64_t min = min_elem_bytes(v->elem_type);
    if (n > left(c) / min) {
        llama_set_err(c->err, c->errlen, "%s: key '%s': an array of %llu %s "
                "elements (at least %llu bytes each) at offset %llu, but "
                "only %llu bytes are left in the file", c->f->name, w->key,
                (ull)n, gguf_type_name(et), (ull)min, (ull)c->pos,
                (ull)left(c));
        return -1;
    }
    if (scalar_bytes[et]) {
        if (et == GGUF_TYPE_BOOL)
            for (uint64_t i = 0; i < n; i++)
                if (v->data[i] > 1) {
                    llama_set_err(c->err, c->errlen, "%s: key '%s': element %llu "
                            "of a BOOL array is %u (0 or 1 expected)",
                            c->f->name, w->key, (ull)i, v->data[i]);
                    return -1;
                }
        c->pos += n * min;
        return 0;
    }
    /* Strings and arrays vary in size: an index says where each is. Its
     * size is bounded above by the file size (n * min <= left). */
    size_t each = et == GGUF_TYPE_STRING ? sizeof(gguf_str)
                                         : sizeof(gguf_value);
    void *index = calloc(n ? (size_t)n : 1, each);
    if (!index) {
        llama_set_err(c->err, c->errlen, "%s: out of memory for the %llu elements "
                "of key '%s'", c->f->name, (ull)n, w->key);
        return -1;
    }
    v->index = index;
    c->f->index_bytes += (size_t)n * each;
    snprintf(what, sizeof what, "a string in the array of key '%s'", w->key);
    for (uint64_t i = 0; i < n; i++) {
        int rc = et == GGUF_TYPE_STRING
                     ? read_str(c, &((gguf_str *)index)[i], what)
                     : parse_value(c, GGUF_TYPE_ARRAY, depth + 1, w,
                                   &((gguf_value *)index)[i]);
        if (rc)
            return -1; /* the caller frees v, index and all */
    }
    return 0;
}

static int parse_value(cursor *c, gguf_type type, int depth,
                       const where *w, gguf_value *v)
{
    char what[160];
    v->type = type;
    v->len = 1;
    if (type == GGUF_TYPE_ARRAY)
        return parse_array(c, depth, w, v);
    if (type == GGUF_TYPE_STRING) {
        gguf_str s;
        snprintf(what, sizeof what, "the string value of key '%s'", w->key);
        if (read_str(c, &s, what))
            return -1;
        v->data = (const unsigned char *)s.ptr;
        v->len = s.len;
        return 0;
    }
    snprintf(what, sizeof what, "the %s value of key '%s'",
             gguf_type_name(type), w->key);
    if (need(c, scalar_bytes[type], what))
        return -1;
    v->data = c->f->bytes + c->pos;
    if (type == GGUF_TYPE_BOOL && v->data[0] > 1) {
        llama_set_err(c->err, c->errlen, "%s: key '%s': BOOL value %u (0 or 1 "
                "expected)", c->f->name, w->key, v->data[0]);
        return -1;
    }
    c->pos += scalar_bytes[type];
    return 0;
}

/* ---- sorted views: duplicates and lookups -------------------------------- */

static int cmp_str(gguf_str a, gguf_str b)
{
    size_t n = (size_t)(a.len < b.len ? a.len : b.len);
    int r = n ? memcmp(a.ptr, b.ptr, n) : 0;
    if (r)
        return r;
    return a.len < b.len ? -1 : a.len > b.len;
}

static int cmp_kv(const void *a, const void *b)
{
    return cmp_str((*(const gguf_kv *const *)a)->key,
                   (*(const gguf_kv *const *)b)->key);
}

static int cmp_tensor_name(const void *a, const void *b)
{
    return cmp_str((*(const gguf_tensor *const *)a)->name,
                   (*(const gguf_tensor *const *)b)->name);
}

static int cmp_tensor_offset(const void *a, const void *b)
{
    const gguf_tensor *x = *(const gguf_tensor *const *)a;
    const gguf_tensor *y = *(const gguf_tensor *const *)b;
    if (x->offset != y->offset)
        return x->offset < y->offset ? -1 : 1;
    return x->nbytes < y->nbytes ? -1 : x->nbytes > y->nbytes;
}

static gguf_str cstr(const char *s)
{
    gguf_str r = {s, strlen(s)};
    return r;
}

const gguf_value *gguf_get(const gguf_file *f, const char *key)
{
    if (!f || !key || !f->kv_sorted)
        return NULL;
    gguf_str k = cstr(key);
    size_t lo = 0, hi = f->n_kv;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int r = cmp_str(f->kv_sorted[mid]->key, k);
        if (r == 0)
            return &f->kv_sorted[mid]->value;
        if (r < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

const gguf_tensor *gguf_find_tensor(const gguf_file *f, const char *name)
{
    if (!f || !name || !f->tensor_sorted)
        return NULL;
    gguf_str k = cstr(name);
    size_t lo = 0, hi = f->n_tensors;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int r = cmp_str(f->tensor_sorted[mid]->name, k);
        if (r == 0)
            return f->tensor_sorted[mid];
        if (r < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

/* ---- the file ---------------------------------------------------------- */

/* The bound gguf.h promises: each item's index entry is under 5 times the
 * fewest bytes the item takes in the file. */
_Static_assert(sizeof(gguf_kv) + sizeof(gguf_kv *) < 5 * 13,
               "a key's index entry");
_Static_assert(sizeof(gguf_tensor) + sizeof(gguf_tensor *) < 5 * 32,
               "a tensor's index entry");
_Static_assert(sizeof(gguf_value) < 5 * 12 && sizeof(gguf_str) < 5 * 8,
               "an array element's index entry");

static int parse_kvs(cursor *c, uint64_t n_kv)
{
    gguf_file *f = c->f;
    f->kvs = calloc(n_kv ? (size_t)n_kv : 1, sizeof *f->kvs);
    f->kv_sorted = calloc(n_kv ? (size_t)n_kv : 1, sizeof *f->kv_sorted);
    if (!f->kvs || !f->kv_sorted) {
        llama_set_err(c->err, c->errlen, "%s: out of memory for %llu metadata "
                "keys", f->name, (ull)n_kv);
        return -1;
    }
    f->index_bytes += (size_t)n_kv * (sizeof *f->kvs + sizeof *f->kv_sorted);
    f->n_kv = (size_t)n_kv; /* calloc'd: gguf_close frees what was read */
    for (size_t i = 0; i < f->n_kv; i++) {
        gguf_kv *kv = &f->kvs[i];
        char what[80], key[GGUF_PRINTABLE_LEN];
        uint32_t type;
        snprintf(what, sizeof what, "the key of metadata entry %zu", i);
        if (read_str(c, &kv->key, what))
            return -1;
        where w = {gguf_printable(kv->key, key)};
        snprintf(what, sizeof what, "the type of key '%s'", w.key);
        if (read_u32(c, &type, what))
            return -1;
        if (type >= GGUF_TYPE_COUNT) {
            llama_set_err(c->err, c->errlen, "%s: key '%s' has unknown value type "
                    "%u", f->name, w.key, type);
            return -1;
        }
        if (parse_value(c, (gguf_type)type, 0, &w, &kv->value))
            return -1;
        f->kv_sorted[i] = kv;
    }
    qsort(f->kv_sorted, f->n_kv, sizeof *f->kv_sorted, cmp_kv);
    for (size_t i = 1; i < f->n_kv; i++)
        if (cmp_str(f->kv_sorted[i - 1]->key, f->kv_sorted[i]->key) == 0) {
            char key[GGUF_PRINTABLE_LEN];
            llama_set_err(c->err, c->errlen, "%s: key '%s' appears more than once",
                    f->name, gguf_printable(f->kv_sorted[i]->key, key));
            return -1;
        }
    return 0;
}

static int parse_alignment(cursor *c)
{
    gguf_file *f = c->f;
    uint32_t a;
    int rc = gguf_get_u32(f, "general.alignment", &a, c->err, c->errlen);
    if (rc < 0)
        return -1;
    if (rc == 1) {
        f->alignment = GGUF_DEFAULT_ALIGNMENT;
        return 0;
    }
    if (a == 0 || (a & (a - 1)) != 0) {
        llama_set_err(c->err, c->errlen, "%s: general.alignment is %u, not a power "
                "of two", f->name, a);
        return -1;
    }
    f->alignment = a;
    return 0;
}

/* One tensor info: name, dimensions, type, offset; its size from them. */
static int parse_tensor_info(cursor *c, size_t i, gguf_tensor *t)
{
    gguf_file *f = c->f;
    char what[160], name[GGUF_PRINTABLE_LEN];
    snprintf(what, sizeof what, "the name of tensor %zu", i);
    if (read_str(c, &t->name, what))
        return -1;
    gguf_printable(t->name, name);
    snprintf(what, sizeof what, "the info of tensor '%s'", name);
    if (read_u32(c, &t->n_dims, what))
        return -1;
    if (t->n_dims < 1 || t->n_dims > GGUF_MAX_DIMS) {
        llama_set_err(c->err, c->errlen, "%s: tensor '%s' has %u dimensions (1 to "
                "%d supported)", f->name, name, t->n_dims, GGUF_MAX_DIMS);
        return -1;
    }
    t->numel = 1;
    int zero = 0;
    for (int d = 0; d < GGUF_MAX_DIMS; d++) {
        t->ne[d] = 1;
        if ((uint32_t)d < t->n_dims && read_u64(c, &t->ne[d], what))
            return -1;
        /* ggml counts elements in int64_t: the product must fit there. */
        if (t->ne[d] == 0)
            zero = 1;
        else if (!zero && t->numel > (uint64_t)INT64_MAX / t->ne[d]) {
            llama_set_err(c->err, c->errlen, "%s: tensor '%s': dimensions "
                    "[%llu, %llu, %llu, %llu] have more than 2^63 elements",
                    f->name, name, (ull)t->ne[0], (ull)t->ne[1],
                    (ull)(d >= 2 ? t->ne[2] : 1),
                    (ull)(d >= 3 ? t->ne[3] : 1));
            return -1;
        } else
            t->numel *= t->ne[d];
    }
    if (zero)
        t->numel = 0;
    if (read_u32(c, &t->type, what) || read_u64(c, &t->offset, what))
        return -1;
    const char *tn = gguf_dtype_name(t->type);
    uint64_t be = gguf_dtype_block_elems(t->type);
    uint64_t bb = gguf_dtype_block_bytes(t->type);
    if (!tn || !be) {
        llama_set_err(c->err, c->errlen, "%s: tensor '%s' has type %u, which ggml "
                "does not define", f->name, name, t->type);
        return -1;
    }
    if (t->ne[0] % be != 0) {
        llama_set_err(c->err, c->errlen, "%s: tensor '%s': its rows of %llu "
                "elements are not whole %s blocks of %llu", f->name, name,
                (ull)t->ne[0], tn, (ull)be);
        return -1;
    }
    uint64_t blocks = t->numel / be; /* exact: ne[0] is a multiple */
    if (blocks > UINT64_MAX / bb) {
        llama_set_err(c->err, c->errlen, "%s: tensor '%s' needs more than 2^64 "
                "bytes", f->name, name);
        return -1;
    }
    t->nbytes = blocks * bb;
    return 0;
}

/* Where each tensor's bytes are: aligned, inside the file, and no two
 * tensors sharing a byte. */
static int place_tensors(cursor *c)
{
    gguf_file *f = c->f;
    char name[GGUF_PRINTABLE_LEN], other[GGUF_PRINTABLE_LEN];
    uint64_t a = f->alignment;
    if (c->pos > UINT64_MAX - (a - 1)) {
        llama_set_err(c->err, c->errlen, "%s: the data area's offset overflows",
                f->name);
        return -1;
    }
    f->data_offset = (c->pos + (a - 1)) / a * a;
    if (f->n_tensors == 0)
        return 0;
    if (f->data_offset > f->size) {
        llama_set_err(c->err, c->errlen, "%s: the data area would start at byte "
                "%llu (tensor infos end at %llu, aligned to %llu), past the "
                "end of the file (%llu bytes)", f->name, (ull)f->data_offset,
                (ull)c->pos, (ull)a, (ull)f->size);
        return -1;
    }
    uint64_t room = f->size - f->data_offset;
    for (size_t i = 0; i < f->n_tensors; i++) {
        gguf_tensor *t = &f->tensors[i];
        gguf_printable(t->name, name);
        if (t->offset % a != 0) {
            llama_set_err(c->err, c->errlen, "%s: tensor '%s': offset %llu is not "
                    "a multiple of the alignment %llu", f->name, name,
                    (ull)t->offset, (ull)a);
            return -1;
        }
        if (t->offset > room || t->nbytes > room - t->offset) {
            llama_set_err(c->err, c->errlen, "%s: tensor '%s': %llu bytes at data "
                    "offset %llu, but the data area has %llu bytes", f->name,
                    name, (ull)t->nbytes, (ull)t->offset, (ull)room);
            return -1;
        }
        t->data = f->bytes + f->data_offset + t->offset;
    }
    const gguf_tensor **order = malloc(f->n_tensors * sizeof *order);
    if (!order) {
        llama_set_err(c->err, c->errlen, "%s: out of memory", f->name);
        return -1;
    }
    for (size_t i = 0; i < f->n_tensors; i++)
        order[i] = &f->tensors[i];
    qsort(order, f->n_tensors, sizeof *order, cmp_tensor_offset);
    int rc = 0;
    for (size_t i = 1; i < f->n_tensors && rc == 0; i++) {
        const gguf_tensor *p = order[i - 1], *t = order[i];
        /* Empty tensors occupy no byte, so they overlap nothing. */
        if (p->nbytes && t->nbytes && t->offset < p->offset + p->nbytes) {
            llama_set_err(c->err, c->errlen, "%s: tensors '%s' [%llu, %llu) and "
                    "'%s' [%llu, %llu) overlap", f->name,
                    gguf_printable(p->name, other), (ull)p->offset,
                    (ull)(p->offset + p->nbytes),
                    gguf_printable(t->name, name), (ull)t->offset,
                    (ull)(t->offset + t->nbytes));
            rc = -1;
        }
        if (t->nbytes == 0 && p->nbytes)
            order[i] = p; /* keep the last non-empty one to compare with */
    }
    free(order);
    return rc;
}

static int parse_tensors(cursor *c, uint64_t n)
{
    gguf_file *f = c->f;
    /* A tensor info takes at least 32 bytes (a one-dimensional tensor
     * with an empty name). */
    if (n > left(c) / 32) {
        llama_set_err(c->err, c->errlen, "%s: the header claims %llu tensors, but "
                "the %llu bytes after the metadata hold at most %llu tensor "
                "infos", f->name, (ull)n, (ull)left(c), (ull)(left(c) / 32));
        return -1;
    }
    f->tensors = calloc(n ? (size_t)n : 1, sizeof *f->tensors);
    f->tensor_sorted = calloc(n ? (size_t)n : 1, sizeof *f->tensor_sorted);
    if (!f->tensors || !f->tensor_sorted) {
        llama_set_err(c->err, c->errlen, "%s: out of memory for %llu tensor infos",
                f->name, (ull)n);
        return -1;
    }
    f->index_bytes += (size_t)n * (sizeof *f->tensors +
                                   sizeof *f->tensor_sorted);
    f->n_tensors = (size_t)n;
    for (size_t i = 0; i < f->n_tensors; i++) {
        if (parse_tensor_info(c, i, &f->tensors[i]))
            return -1;
        f->tensor_sorted[i] = &f->tensors[i];
    }
    qsort(f->tensor_sorted, f->n_tensors, sizeof *f->tensor_sorted,
          cmp_tensor_name);
    for (size_t i = 1; i < f->n_tensors; i++)
        if (cmp_str(f->tensor_sorted[i - 1]->name,
                    f->tensor_sorted[i]->name) == 0) {
            char name[GGUF_PRINTABLE_LEN];
            llama_set_err(c->err, c->errlen, "%s: tensor name '%s' appears more "
                    "than once", f->name,
                    gguf_printable(f->tensor_sorted[i]->name, name));
            return -1;
        }
    return place_tensors(c);
}

static uint32_t bswap32(uint32_t x)
{
    return x >> 24 | (x >> 8 & 0xFF00) | (x << 8 & 0xFF0000) | x << 24;
}

static int parse_file(gguf_file *f, char *err, size_t errlen)
{
    cursor c = {f, 0, err, errlen};
    if (f->size < 4 || memcmp(f->bytes, "GGUF", 4) != 0) {
        llama_set_err(err, errlen, "%s: not a GGUF file (it does not start with "
                "the magic \"GGUF\")", f->name);
        return -1;
    }
    c.pos = 4;
    uint64_t n_tensors, n_kv;
    if (read_u32(&c, &f->version, "the version"))
        return -1;
    if (f->version != 2 && f->version != 3) {
        uint32_t swapped = bswap32(f->version);
        if (swapped >= 1 && swapped <= 3)
            llama_set_err(err, errlen, "%s: a big-endian GGUF file; only "
                    "little-endian files are supported", f->name);
        else if (f->version == 1)
            llama_set_err(err, errlen, "%s: GGUF version 1 is not supported (2 and "
                    "3 are)", f->name);
        else
            llama_set_err(err, errlen, "%s: unknown GGUF version %u (2 and 3 are "
                    "supported)", f->name, f->version);
        return -1;
    }
    if (read_u64(&c, &n_tensors, "the tensor count") ||
        read_u64(&c, &n_kv, "the metadata key count"))
        return -1;
    /* A key takes at least 13 bytes (empty name, type, a one-byte value),
     * a tensor info 32: both counts are bounded before any allocation. */
    if (n_kv > left(&c) / 13 || n_tensors > left(&c) / 32 ||
        n_kv * 13 + n_tensors * 32 > left(&c)) {
        llama_set_err(err, errlen, "%s: the header claims %llu metadata keys and "
                "%llu tensors, more than the %llu bytes after it can hold",
                f->name, (ull)n_kv, (ull)n_tensors, (ull)left(&c));
        return -1;
    }
    if (parse_kvs(&c, n_kv) || parse_alignment(&c) ||
        parse_tensors(&c, n_tensors))
        return -1;
    return 0;
}

void gguf_close(gguf_file *f)
{
    if (!f)
        return;
    for (size_t i = 0; f->kvs && i < f->n_kv; i++)
        free_value(&f->kvs[i].value);
    free(f->kvs);
    free(f->kv_sorted);
    free(f->tensors);
    free(f->tensor_sorted);
    free(f->name);
    if (f->map)
        munmap(f->map, (size_t)f->size);
    memset(f, 0, sizeof *f);
}

static int open_common(gguf_file *f, char *err, size_t errlen)
{
    if (parse_file(f, err, errlen) != 0) {
        gguf_close(f);
        return -1;
    }
    return 0;
}

int gguf_open_memory(gguf_file *f, const void *bytes, size_t size,
                     const char *name, char *err, size_t errlen)
{
    if (!f) {
        llama_set_err(err, errlen, "gguf_open_memory: f is NULL");
        return -1;
    }
    memset(f, 0, sizeof *f);
    if (!bytes && size) {
        llama_set_err(err, errlen, "gguf_open_memory: bytes is NULL");
        return -1;
    }
    f->name = strdup(name ? name : "(memory)");
    if (!f->name) {
        llama_set_err(err, errlen, "out of memory");
        return -1;
    }
    f->bytes = bytes;
    f->size = size;
    return open_common(f, err, errlen);
}

/* Opens path without blocking (a FIFO would block a plain open) and
 * returns the descriptor of a regular file, or -1 with a message. */
static int open_regular(const char *path, struct stat *st, char *err,
                        size_t errlen)
{
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
        llama_set_err(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return -1;
    }
    if (fstat(fd, st) != 0 || !S_ISREG(st->st_mode)) {
        llama_set_err(err, errlen, "%s: not a regular file", path);
        close(fd);
        return -1;
    }
    return fd;
}

int gguf_open(gguf_file *f, const char *path, char *err, size_t errlen)
{
    if (!f || !path) {
        llama_set_err(err, errlen, "gguf_open: %s is NULL", !f ? "f" : "path");
        return -1;
    }
    memset(f, 0, sizeof *f);
    struct stat st;
    int fd = open_regular(path, &st, err, errlen);
    if (fd < 0)
        return -1;
    if (st.st_size < 4) {
        llama_set_err(err, errlen, "%s: not a GGUF file (%lld bytes)", path,
                (long long)st.st_size);
        close(fd);
        return -1;
    }
    if ((uint64_t)st.st_size > SIZE_MAX) {
        llama_set_err(err, errlen, "%s: too large to map", path);
        close(fd);
        return -1;
    }
    void *map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    int map_errno = errno;
    close(fd);
    if (map == MAP_FAILED) {
        llama_set_err(err, errlen, "%s: cannot map: %s", path, strerror(map_errno));
        return -1;
    }
    f->map = map;
    f->bytes = map;
    f->size = (uint64_t)st.st_size;
    f->name = strdup(path);
    if (!f->name) {
        llama_set_err(err, errlen, "%s: out of memory", path);
        gguf_close(f);
        return -1;
    }
    return open_common(f, err, errlen);
}

int gguf_is_gguf_path(const char *path)
{
    if (!path)
        return 0;
    size_t n = strlen(path);
    if (n >= 5 && strcmp(path + n - 5, ".gguf") == 0)
        return 1;
    struct stat st;
    int fd = open_regular(path, &st, NULL, 0);
    if (fd < 0)
        return 0;
    unsigned char magic[4];
    ssize_t got = read(fd, magic, sizeof magic);
    close(fd);
    return got == 4 && memcmp(magic, "GGUF", 4) == 0;
}
