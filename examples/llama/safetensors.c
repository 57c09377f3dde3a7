/* Reading (mmap) and writing safetensors files; see safetensors.h. */
#include "safetensors.h"
#include "errmsg.h"

#include "fileio.h"
#include "textbuf.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- conversions ------------------------------------------------------ */

static uint32_t f32_bits(float x)
{
    uint32_t b;
    memcpy(&b, &x, sizeof b);
    return b;
}

static float bits_f32(uint32_t b)
{
    float x;
    memcpy(&x, &b, sizeof x);
    return x;
}

float st_bf16_to_f32(uint16_t h) { return bits_f32((uint32_t)h << 16); }

float st_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t e = (h >> 10) & 0x1F, m = h & 0x3FF;
    if (e == 0) {
        /* zero or subnormal: m * 2^-24, exact in f32 */
        float v = ldexpf((float)m, -24);
        return sign ? -v : v;
    }
    if (e == 31) /* infinity or NaN (payload kept) */
        return bits_f32(sign | 0x7F800000u | (m << 13));
    return bits_f32(sign | ((e - 15 + 127) << 23) | (m << 13));
}

uint16_t st_f32_to_bf16(float x)
{
    uint32_t b = f32_bits(x);
    if ((b & 0x7FFFFFFFu) > 0x7F800000u) /* NaN: keep it a quiet NaN */
        return (uint16_t)((b >> 16) | 0x0040);
    /* Adding 0x7FFF plus the kept part's lowest bit rounds to nearest,
     * ties to even; a carry out of the mantissa bumps the exponent, up to
     * infinity, which is the correct overflow. */
    b += 0x7FFFu + ((b >> 16) & 1);
    return (uint16_t)(b >> 16);
}

uint16_t st_f32_to_f16(float x)
{
    uint32_t b = f32_bits(x);
    uint16_t sign = (uint16_t)((b >> 16) & 0x8000);
    uint32_t a = b & 0x7FFFFFFFu;
    if (a > 0x7F800000u) /* NaN */
        return (uint16_t)(sign | 0x7E00 | ((a >> 13) & 0x3FF));
    /* 65520 is halfway between f16's largest finite value 65504 (odd
     * mantissa) and 65536: it and everything above round to infinity. */
    if (a >= 0x477FF000u)
        return (uint16_t)(sign | 0x7C00);
    uint32_t e = a >> 23;
    if (a < 0x38800000u) {
        /* Below 2^-14: an f16 subnormal q * 2^-24 with
         * q = round(m * 2^(e-150) * 2^24) = round(m / 2^(126-e)). */
        if (e < 102) /* m / 2^25 < 1/2 even at the largest m: rounds to 0 */
            return sign;
        uint32_t m = (a & 0x7FFFFFu) | 0x800000u;
        uint32_t shift = 126 - e; /* 14 .. 24 */
        uint32_t q = m >> shift, rem = m & ((1u << shift) - 1);
        uint32_t half = 1u << (shift - 1);
        if (rem > half || (rem == half && (q & 1)))
            q++; /* q may become 0x400: the smallest normal, encoded right */
        return (uint16_t)(sign | q);
    }
    uint32_t r = ((e - 127 + 15) << 10) | ((a >> 13) & 0x3FF);
    uint32_t rem = a & 0x1FFF;
    if (rem > 0x1000 || (rem == 0x1000 && (r & 1)))
        r++; /* a mantissa carry moves into the exponent, as it should */
    return (uint16_t)(sign | r);
}

/* ---- reading ---------------------------------------------------------- */

size_t st_dtype_size(st_dtype t) { return t == ST_F32 ? 4 : 2; }

const char *st_dtype_name(st_dtype t)
{
    switch (t) {
    case ST_F32: return "F32";
    case ST_BF16: return "BF16";
    case ST_F16: return "F16";
    }
    return "?";
}

static uint64_t load_le64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static int parse_dtype(const json_value *v, st_dtype *out)
{
    if (!v || v->type != JSON_STRING)
        return -1;
    if (strcmp(v->string, "F32") == 0)
        *out = ST_F32;
    else if (strcmp(v->string, "BF16") == 0)
        *out = ST_BF16;
    else if (strcmp(v->string, "F16") == 0)
        *out = ST_F16;
    else
        return 0;
    return 1;
}

/* Checks one tensor entry of the header and fills t. */
static int parse_tensor(const char *path, const char *name,
                        const json_value *v, uint64_t data_size,
                        st_tensor *t, char *err, size_t errlen)
{
    memset(t, 0, sizeof *t);
    t->name = name;
    if (v->type != JSON_OBJECT) {
        llama_set_err(err, errlen, "%s: tensor '%s' is a JSON %s, not an object",
                path, name, json_type_name(v->type));
        return -1;
    }
    for (size_t i = 0; i < v->count; i++) {
        const char *k = v->keys[i];
        if (strcmp(k, "dtype") && strcmp(k, "shape") &&
            strcmp(k, "data_offsets")) {
            llama_set_err(err, errlen, "%s: tensor '%s' has an unexpected field "
                    "'%s'", path, name, k);
            return -1;
        }
    }
    const json_value *dt = json_get(v, "dtype");
    int r = parse_dtype(dt, &t->dtype);
    if (r < 0) {
        llama_set_err(err, errlen, "%s: tensor '%s' has %s dtype (a string "
                "expected)", path, name,
                dt ? json_type_name(dt->type) : "no");
        return -1;
    }
    if (r == 0) {
        llama_set_err(err, errlen, "%s: tensor '%s' has unknown or unsupported "
                "dtype '%.32s' (F32, BF16 or F16 expected)", path, name,
                dt->string);
        return -1;
    }
    const json_value *sh = json_get(v, "shape");
    if (!sh || sh->type != JSON_ARRAY) {
        llama_set_err(err, errlen, "%s: tensor '%s' has %s shape (an array "
                "expected)", path, name, sh ? json_type_name(sh->type) : "no");
        return -1;
    }
    if (sh->count > ST_MAX_DIMS) {
        llama_set_err(err, errlen, "%s: tensor '%s' has %zu dimensions (at most "
                "%d)", path, name, sh->count, ST_MAX_DIMS);
        return -1;
    }
    t->ndim = (int)sh->count;
    t->numel = 1;
    for (size_t d = 0; d < sh->count; d++) {
        const json_value *x = &sh->items[d];
        if (x->type != JSON_NUMBER || !x->is_uint) {
            llama_set_err(err, errlen, "%s: tensor '%s': shape entry %zu is not a "
                    "non-negative integer", path, name, d);
            return -1;
        }
        t->shape[d] = x->uint;
        /* Every extent is bounded by the data size unless another one is
         * zero; bound the product so it cannot wrap. */
        if (x->uint != 0 && t->numel > data_size / x->uint &&
            t->numel != 0) {
            llama_set_err(err, errlen, "%s: tensor '%s' has more elements than "
                    "the file's %llu data bytes can hold", path, name,
                    (unsigned long long)data_size);
            return -1;
        }
        t->numel *= x->uint;
    }
    const json_value *off = json_get(v, "data_offsets");
    if (!off || off->type != JSON_ARRAY || off->count != 2 ||
        off->items[0].type != JSON_NUMBER || !off->items[0].is_uint ||
        off->items[1].type != JSON_NUMBER || !off->items[1].is_uint) {
        llama_set_err(err, errlen, "%s: tensor '%s': data_offsets must be an "
                "array of two non-negative integers", path, name);
        return -1;
    }
    t->begin = off->items[0].uint;
    t->end = off->items[1].uint;
    if (t->begin > t->end || t->end > data_size) {
        llama_set_err(err, errlen, "%s: tensor '%s': data_offsets [%llu, %llu] "
                "out of range (the data area has %llu bytes)", path, name,
                (unsigned long long)t->begin, (unsigned long long)t->end,
                (unsigned long long)data_size);
        return -1;
    }
    uint64_t want = t->numel * st_dtype_size(t->dtype); /* <= 4*data_size */
    if (t->end - t->begin != want) {
        llama_set_err(err, errlen, "%s: tensor '%s': data_offsets [%llu, %llu] "
                "span %llu bytes, but %s with %llu elements needs %llu",
                path, name, (unsigned long long)t->begin,
                (unsigned long long)t->end,
                (unsigned long long)(t->end - t->begin),
                st_dtype_name(t->dtype), (unsigned long long)t->numel,
                (unsigned long long)want);
        return -1;
    }
    return 0;
}

static int cmp_range(const void *a, const void *b)
{
    const st_tensor *x = *(const st_tensor *const *)a;
    const st_tensor *y = *(const st_tensor *const *)b;
    if (x->begin != y->begin)
        return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end)
        return x->end < y->end ? -1 : 1;
    return 0;
}

/* The format requires the tensors to tile the data area: no two share a
 * byte, and no byte belongs to none (so a file cannot hide other data). */
static int check_tiling(const char *path, const st_file *f, char *err,
                        size_t errlen)
{
    if (f->count == 0) {
        if (f->data_size != 0) {
            llama_set_err(err, errlen, "%s: %llu data bytes but no tensors", path,
                    (unsigned long long)f->data_size);
            return -1;
        }
        return 0;
    }
    const st_tensor **order = malloc(f->count * sizeof *order);
    if (!order) {
        llama_set_err(err, errlen, "%s: out of memory", path);
        return -1;
    }
    for (size_t i = 0; i < f->count; i++)
        order[i] = &f->tensors[i];
    qsort(order, f->count, sizeof *order, cmp_range);
    int rc = 0;
    uint64_t covered = 0;
    const st_tensor *last = NULL;
    for (size_t i = 0; i < f->count && rc == 0; i++) {
        const st_tensor *t = order[i];
        if (t->begin < covered) {
            llama_set_err(err, errlen, "%s: tensors '%s' [%llu, %llu) and '%s' "
                    "[%llu, %llu) overlap", path, last->name,
                    (unsigned long long)last->begin,
                    (unsigned long long)last->end, t->name,
                    (unsigned long long)t->begin,
                    (unsigned long long)t->end);
            rc = -1;
        } else if (t->begin > covered) {
            llama_set_err(err, errlen, "%s: data bytes [%llu, %llu) belong to no "
                    "tensor", path, (unsigned long long)covered,
                    (unsigned long long)t->begin);
            rc = -1;
        }
        if (t->end > covered || !last) {
            covered = t->end;
            last = t;
        }
    }
    if (rc == 0 && covered != f->data_size) {
        llama_set_err(err, errlen, "%s: data bytes [%llu, %llu) belong to no "
                "tensor", path, (unsigned long long)covered,
                (unsigned long long)f->data_size);
        rc = -1;
    }
    free(order);
    return rc;
}

static int parse_header(const char *path, st_file *f, const char *text,
                        size_t len, char *err, size_t errlen)
{
    char jerr[200];
    f->header = json_parse(text, len, jerr, sizeof jerr);
    if (!f->header) {
        llama_set_err(err, errlen, "%s: the header is not valid JSON (%s)", path,
                jerr);
        return -1;
    }
    const json_value *h = f->header;
    if (h->type != JSON_OBJECT) {
        llama_set_err(err, errlen, "%s: the header is a JSON %s, not an object",
                path, json_type_name(h->type));
        return -1;
    }
    f->tensors = calloc(h->count ? h->count : 1, sizeof *f->tensors);
    if (!f->tensors) {
        llama_set_err(err, errlen, "%s: out of memory", path);
        return -1;
    }
    for (size_t i = 0; i < h->count; i++) {
        const json_value *v = &h->items[i];
        if (strcmp(h->keys[i], "__metadata__") == 0) {
            int ok = v->type == JSON_OBJECT;
            for (size_t j = 0; ok && j < v->count; j++)
                ok = v->items[j].type == JSON_STRING;
            if (!ok) {
                llama_set_err(err, errlen, "%s: __metadata__ must be an object of "
                        "strings", path);
                return -1;
            }
            continue;
        }
        if (parse_tensor(path, h->keys[i], v, f->data_size,
                         &f->tensors[f->count], err, errlen))
            return -1;
        f->count++;
    }
    return check_tiling(path, f, err, errlen);
}

void st_close(st_file *f)
{
    if (!f)
        return;
    if (f->map)
        munmap(f->map, (size_t)f->file_size);
    json_free(f->header);
    free(f->tensors);
    memset(f, 0, sizeof *f);
}

int map_file(const char *path, uint64_t min_size, const char *min_what,
             void **map_out, uint64_t *size_out, char *err, size_t errlen)
{
    uint64_t size;
    int fd = file_open_regular(path, &size, err, errlen);
    if (fd < 0)
        return -1;
    if (size < min_size) {
        llama_set_err(err, errlen, "%s: %llu bytes, too short for %s", path,
                (unsigned long long)size, min_what);
        close(fd);
        return -1;
    }
    if (size > (uint64_t)SIZE_MAX) {
        llama_set_err(err, errlen, "%s: too large to map", path);
        close(fd);
        return -1;
    }
    void *map = mmap(NULL, (size_t)size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (map == MAP_FAILED) {
        llama_set_err(err, errlen, "%s: cannot map: %s", path, strerror(errno));
        return -1;
    }
    *map_out = map;
    *size_out = size;
    return 0;
}

int st_open(st_file *f, const char *path, char *err, size_t errlen)
{
    memset(f, 0, sizeof *f);
    void *map;
    uint64_t size;
    if (map_file(path, 8, "the 8-byte header length", &map, &size, err,
                 errlen) != 0)
        return -1;
    f->map = map;
    f->file_size = size;
    const unsigned char *bytes = map;
    uint64_t n = load_le64(bytes);
    if (n > ST_MAX_HEADER) {
        llama_set_err(err, errlen, "%s: header length %llu is larger than the "
                "%llu-byte limit", path, (unsigned long long)n,
                (unsigned long long)ST_MAX_HEADER);
        goto fail;
    }
    if (n > size - 8) {
        llama_set_err(err, errlen, "%s: header length %llu runs past the end of "
                "the file (%llu bytes after the length)", path,
                (unsigned long long)n, (unsigned long long)(size - 8));
        goto fail;
    }
    f->data = bytes + 8 + n;
    f->data_size = size - 8 - n;
    if (parse_header(path, f, (const char *)bytes + 8, (size_t)n, err,
                     errlen))
        goto fail;
    return 0;
fail:
    st_close(f);
    return -1;
}

const st_tensor *st_find(const st_file *f, const char *name)
{
    for (size_t i = 0; i < f->count; i++)
        if (strcmp(f->tensors[i].name, name) == 0)
            return &f->tensors[i];
    return NULL;
}

void st_read_f32(const st_file *f, const st_tensor *t, float *out)
{
    const unsigned char *p = f->data + t->begin;
    uint64_t n = t->numel;
    switch (t->dtype) {
    case ST_F32:
        for (uint64_t i = 0; i < n; i++, p += 4)
            out[i] = bits_f32((uint32_t)p[0] | (uint32_t)p[1] << 8 |
                              (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24);
        break;
    case ST_BF16:
        for (uint64_t i = 0; i < n; i++, p += 2)
            out[i] = st_bf16_to_f32((uint16_t)(p[0] | p[1] << 8));
        break;
    case ST_F16:
        for (uint64_t i = 0; i < n; i++, p += 2)
            out[i] = st_f16_to_f32((uint16_t)(p[0] | p[1] << 8));
        break;
    }
}

float st_get_f32(const st_file *f, const st_tensor *t, uint64_t i)
{
    const unsigned char *p = f->data + t->begin + i * st_dtype_size(t->dtype);
    switch (t->dtype) {
    case ST_F32:
        return bits_f32((uint32_t)p[0] | (uint32_t)p[1] << 8 |
                        (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24);
    case ST_BF16:
        return st_bf16_to_f32((uint16_t)(p[0] | p[1] << 8));
    case ST_F16:
        return st_f16_to_f32((uint16_t)(p[0] | p[1] << 8));
    }
    return 0.0f;
}

int st_find_nonfinite(const st_file *f, const st_tensor *t, uint64_t *index,
                      float *value)
{
    /* A value is NaN or infinite when its exponent bits are all ones; the
     * widening conversions keep both, so the f32 value names the kind. */
    const unsigned char *p = f->data + t->begin;
    uint64_t n = t->numel;
    for (uint64_t i = 0; i < n; i++) {
        int bad;
        switch (t->dtype) {
        case ST_F32:
            bad = (p[4 * i + 3] & 0x7F) == 0x7F && (p[4 * i + 2] & 0x80);
            break;
        case ST_BF16:
            bad = (p[2 * i + 1] & 0x7F) == 0x7F && (p[2 * i] & 0x80);
            break;
        default: /* ST_F16: 5 exponent bits */
            bad = (p[2 * i + 1] & 0x7C) == 0x7C;
            break;
        }
        if (bad) {
            *index = i;
            *value = st_get_f32(f, t, i);
            return 1;
        }
    }
    return 0;
}

/* ---- writing ---------------------------------------------------------- */

typedef struct atomic_out {
    int fd;
    char *tmp;
} atomic_out;

static int write_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;
    while (len > 0) {
        ssize_t w = write(fd, p, len);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += w;
        len -= (size_t)w;
    }
    return 0;
}

/* Creates the temporary file next to path (same directory, so the final
 * rename stays on one file system and is atomic). */
static int atomic_begin(atomic_out *o, const char *path, char *err,
                        size_t errlen)
{
    size_t n = strlen(path);
    o->tmp = malloc(n + 16);
    if (!o->tmp) {
        llama_set_err(err, errlen, "%s: out of memory", path);
        return -1;
    }
    snprintf(o->tmp, n + 16, "%s.tmp-XXXXXX", path);
    o->fd = mkstemp(o->tmp);
    if (o->fd < 0) {
        llama_set_err(err, errlen, "%s: cannot create a temporary file: %s", path,
                strerror(errno));
        free(o->tmp);
        o->tmp = NULL;
        return -1;
    }
    fchmod(o->fd, 0644); /* mkstemp makes it 0600; this is a data file */
    return 0;
}

static void atomic_abort(atomic_out *o)
{
    if (o->fd >= 0)
        close(o->fd);
    if (o->tmp) {
        unlink(o->tmp);
        free(o->tmp);
    }
    o->fd = -1;
    o->tmp = NULL;
}

/* Flushes the data to disk, renames it over path, and flushes the
 * directory so the rename itself survives a crash. */
static int atomic_commit(atomic_out *o, const char *path, char *err,
                         size_t errlen)
{
    if (fsync(o->fd) != 0) {
        llama_set_err(err, errlen, "%s: fsync failed: %s", path, strerror(errno));
        atomic_abort(o);
        return -1;
    }
    int rc = close(o->fd);
    o->fd = -1;
    if (rc != 0) {
        llama_set_err(err, errlen, "%s: close failed: %s", path, strerror(errno));
        atomic_abort(o);
        return -1;
    }
    if (rename(o->tmp, path) != 0) {
        llama_set_err(err, errlen, "%s: rename from %s failed: %s", path, o->tmp,
                strerror(errno));
        atomic_abort(o);
        return -1;
    }
    free(o->tmp);
    o->tmp = NULL;
    /* The directory: the part of path before its last '/', or ".". */
    const char *slash = strrchr(path, '/');
    char *dir = slash ? strndup(path, slash == path ? 1 : (size_t)(slash - path))
                      : strdup(".");
    if (dir) {
        int dfd = open(dir, O_RDONLY);
        if (dfd >= 0) {
            fsync(dfd); /* best effort: some file systems refuse it */
            close(dfd);
        }
        free(dir);
    }
    return 0;
}

int st_write_file_atomic(const char *path, const void *bytes, size_t len,
                         char *err, size_t errlen)
{
    atomic_out o = {-1, NULL};
    if (atomic_begin(&o, path, err, errlen))
        return -1;
    if (write_all(o.fd, bytes, len) != 0) {
        llama_set_err(err, errlen, "%s: write failed: %s", path, strerror(errno));
        atomic_abort(&o);
        return -1;
    }
    return atomic_commit(&o, path, err, errlen);
}

int st_write(const char *path, const st_out_tensor *t, size_t count,
             st_dtype dtype, char *err, size_t errlen)
{
    size_t esize = st_dtype_size(dtype);
    textbuf hb = {0};
    tb_printf(&hb, "{\"__metadata__\":{\"format\":\"pt\"}");
    uint64_t offset = 0;
    for (size_t i = 0; i < count; i++) {
        uint64_t numel = 1;
        tb_printf(&hb, ",");
        tb_json_string(&hb, t[i].name, strlen(t[i].name));
        tb_printf(&hb, ":{\"dtype\":\"%s\",\"shape\":[", st_dtype_name(dtype));
        for (int d = 0; d < t[i].ndim; d++) {
            tb_printf(&hb, "%s%llu", d ? "," : "",
                   (unsigned long long)t[i].shape[d]);
            numel *= t[i].shape[d];
        }
        tb_printf(&hb, "],\"data_offsets\":[%llu,%llu]}",
               (unsigned long long)offset,
               (unsigned long long)(offset + numel * esize));
        offset += numel * esize;
    }
    tb_printf(&hb, "}");
    /* Spaces (JSON whitespace) pad the header so the data area starts at a
     * multiple of 8 bytes from the start of the file. */
    while (!hb.oom && hb.len % 8 != 0)
        tb_printf(&hb, " ");
    if (hb.oom) {
        free(hb.s);
        llama_set_err(err, errlen, "%s: out of memory", path);
        return -1;
    }
    unsigned char len8[8];
    for (int i = 0; i < 8; i++)
        len8[i] = (unsigned char)((uint64_t)hb.len >> (8 * i));

    enum { CHUNK = 16384 };
    unsigned char *buf = malloc(CHUNK * 4);
    atomic_out o = {-1, NULL};
    if (!buf) {
        free(hb.s);
        llama_set_err(err, errlen, "%s: out of memory", path);
        return -1;
    }
    if (atomic_begin(&o, path, err, errlen)) {
        free(hb.s);
        free(buf);
        return -1;
    }
    int bad = write_all(o.fd, len8, 8) || write_all(o.fd, hb.s, hb.len);
    for (size_t i = 0; i < count && !bad; i++) {
        uint64_t numel = 1;
        for (int d = 0; d < t[i].ndim; d++)
            numel *= t[i].shape[d];
        for (uint64_t s = 0; s < numel && !bad; s += CHUNK) {
            size_t n = (size_t)(numel - s < CHUNK ? numel - s : CHUNK);
            const float *src = t[i].data + s;
            unsigned char *p = buf;
            for (size_t j = 0; j < n; j++) {
                if (dtype == ST_F32) {
                    uint32_t v = f32_bits(src[j]);
                    for (int k = 0; k < 4; k++)
                        *p++ = (unsigned char)(v >> (8 * k));
                } else {
                    uint16_t v = dtype == ST_BF16 ? st_f32_to_bf16(src[j])
                                                  : st_f32_to_f16(src[j]);
                    *p++ = (unsigned char)v;
                    *p++ = (unsigned char)(v >> 8);
                }
            }
            bad = write_all(o.fd, buf, n * esize);
        }
    }
    free(hb.s);
    free(buf);
    if (bad) {
        llama_set_err(err, errlen, "%s: write failed: %s", path, strerror(errno));
        atomic_abort(&o);
        return -1;
    }
    return atomic_commit(&o, path, err, errlen);
}
