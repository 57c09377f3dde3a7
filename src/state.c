/* State blobs: CRC-32C, the little-endian writer and bounds-checked reader,
 * frame validation, and atomic file writes (see state.h). */
#include "state.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
#define OWL_HOST_BIG_ENDIAN 1
#else
#define OWL_HOST_BIG_ENDIAN 0
#endif

const char *owl__state_kind_name(uint32_t kind)
{
    switch (kind) {
    case OWL_STATE_SAMPLER: return "sampler";
    case OWL_STATE_GALORE: return "galore";
    case OWL_STATE_ADAMW: return "adamw";
    case OWL_STATE_OPTIMIZER: return "optimizer";
    default: return "unknown";
    }
}

/* ------------------------------------------------------------------ */
/* CRC-32C                                                             */
/* ------------------------------------------------------------------ */

/* The byte-at-a-time table of the reflected polynomial, generated at
 * compile time (eight shift/xor rounds per entry) so it is constant data:
 * no table built at run time, no global mutable state. */
#define P 0x82F63B78u
#define E1(c) (((c) >> 1) ^ (P & (0u - ((c) & 1u))))
#define E8(c) E1(E1(E1(E1(E1(E1(E1(E1(c))))))))
#define R4(b) E8(b), E8(b + 1), E8(b + 2), E8(b + 3)
#define R16(b) R4(b), R4(b + 4), R4(b + 8), R4(b + 12)
#define R64(b) R16(b), R16(b + 16), R16(b + 32), R16(b + 48)
static const uint32_t crc_table0[256] = {
    R64(0u), R64(64u), R64(128u), R64(192u)};
#undef R64
#undef R16
#undef R4
#undef E8
#undef E1
#undef P

uint32_t owl__crc32c(uint32_t crc, const void *data, size_t len)
{
    const uint8_t *p = data;
    crc = ~crc;
    /* Byte-at-a-time over one table: state blobs are checksummed once per
     * save or load, next to a file write or a copy of the same bytes, so
     * this is not the bottleneck (about 1 GB/s). */
    for (size_t i = 0; i < len; i++)
        crc = (crc >> 8) ^ crc_table0[(crc ^ p[i]) & 0xFFu];
    return ~crc;
}

/* ------------------------------------------------------------------ */
/* Writer                                                              */
/* ------------------------------------------------------------------ */

void owl__writer_init(owl_writer *w, void *buf, uint64_t cap)
{
    w->buf = buf;
    w->cap = buf != NULL ? cap : 0;
    w->pos = 0;
    w->overflow = false;
}

uint8_t *owl__put_reserve(owl_writer *w, uint64_t n)
{
    uint8_t *at = NULL;
    if (w->buf != NULL) {
        if (w->pos <= w->cap && n <= w->cap - w->pos)
            at = w->buf + w->pos;
        else
            w->overflow = true;
    }
    /* Saturate rather than wrap: a wrapped count could look small. */
    w->pos = n > UINT64_MAX - w->pos ? UINT64_MAX : w->pos + n;
    return at;
}

void owl__put_u8(owl_writer *w, uint8_t v)
{
    uint8_t *at = owl__put_reserve(w, 1);
    if (at != NULL)
        at[0] = v;
}

void owl__put_u32(owl_writer *w, uint32_t v)
{
    uint8_t *at = owl__put_reserve(w, 4);
    if (at != NULL)
        owl__le_put_u32(at, v);
}

void owl__put_u64(owl_writer *w, uint64_t v)
{
    uint8_t *at = owl__put_reserve(w, 8);
    if (at != NULL)
        owl__le_put_u64(at, v);
}

void owl__put_i64(owl_writer *w, int64_t v)
{
    owl__put_u64(w, (uint64_t)v); /* two's complement bits */
}

void owl__put_f64(owl_writer *w, double v)
{
    uint64_t bits;
    memcpy(&bits, &v, sizeof bits);
    owl__put_u64(w, bits);
}

void owl__put_bytes(owl_writer *w, const void *src, uint64_t n)
{
    uint8_t *at = owl__put_reserve(w, n);
    if (at != NULL && n > 0)
        memcpy(at, src, (size_t)n);
}

void owl__le_fix_32(void *data, uint64_t count)
{
#if OWL_HOST_BIG_ENDIAN
    uint8_t *p = data;
    for (uint64_t i = 0; i < count; i++, p += 4) {
        uint8_t t = p[0];
        p[0] = p[3];
        p[3] = t;
        t = p[1];
        p[1] = p[2];
        p[2] = t;
    }
#else
    (void)data;
    (void)count;
#endif
}

void owl__le_fix_16(void *data, uint64_t count)
{
#if OWL_HOST_BIG_ENDIAN
    uint8_t *p = data;
    for (uint64_t i = 0; i < count; i++, p += 2) {
        uint8_t t = p[0];
        p[0] = p[1];
        p[1] = t;
    }
#else
    (void)data;
    (void)count;
#endif
}

void owl__put_f32_array(owl_writer *w, const float *src, uint64_t count)
{
    const uint64_t n = count > UINT64_MAX / 4 ? UINT64_MAX : count * 4;
    uint8_t *at = owl__put_reserve(w, n);
    if (at != NULL && n > 0) {
        memcpy(at, src, (size_t)n);
        owl__le_fix_32(at, count);
    }
}

void owl__put_u16_array(owl_writer *w, const uint16_t *src, uint64_t count)
{
    const uint64_t n = count > UINT64_MAX / 2 ? UINT64_MAX : count * 2;
    uint8_t *at = owl__put_reserve(w, n);
    if (at != NULL && n > 0) {
        memcpy(at, src, (size_t)n);
        owl__le_fix_16(at, count);
    }
}

uint64_t owl__frame_begin(owl_writer *w, owl_state_kind kind)
{
    const uint64_t start = w->pos;
    owl__put_bytes(w, OWL_STATE_MAGIC, OWL_STATE_MAGIC_LEN);
    owl__put_u32(w, OWL_STATE_VERSION);
    owl__put_u32(w, (uint32_t)kind);
    owl__put_u64(w, 0); /* payload length, patched by owl__frame_end */
    return start;
}

void owl__frame_end(owl_writer *w, uint64_t start)
{
    const uint64_t payload = w->pos - start - OWL_STATE_HEADER_BYTES;
    if (w->buf != NULL && !w->overflow) {
        owl__le_put_u64(w->buf + start + 16, payload);
        const uint32_t crc =
            owl__crc32c(0, w->buf + start, (size_t)(w->pos - start));
        owl__put_u32(w, crc);
    } else {
        owl__put_u32(w, 0);
    }
}

owl_status owl__state_measure(owl_state_kind kind, owl_state_write_fn write,
                              const void *handle, uint64_t *bytes)
{
    owl_writer w;
    owl__writer_init(&w, NULL, 0);
    const uint64_t start = owl__frame_begin(&w, kind);
    owl_status st = write(handle, &w);
    if (st != OWL_OK)
        return st;
    owl__frame_end(&w, start);
    *bytes = w.pos;
    return OWL_OK;
}

static owl_status write_blob(owl_state_kind kind, owl_state_write_fn write,
                             const void *handle, void *buf, uint64_t cap,
                             uint64_t *written)
{
    owl_writer w;
    owl__writer_init(&w, buf, cap);
    const uint64_t start = owl__frame_begin(&w, kind);
    owl_status st = write(handle, &w);
    if (st != OWL_OK)
        return st;
    owl__frame_end(&w, start);
    if (w.overflow) /* the state grew between the count and the write */
        return OWL_ERR_INTERNAL;
    *written = w.pos;
    return OWL_OK;
}

owl_status owl__state_save(owl_context *ctx, owl_state_kind kind,
                           owl_state_write_fn write, const void *handle,
                           void *buf, uint64_t capacity, uint64_t *written)
{
    uint64_t need = 0;
    owl_status st = owl__state_measure(kind, write, handle, &need);
    if (st != OWL_OK)
        return st;
    if (capacity < need)
        return owl__fail(ctx, OWL_ERR_INVALID_ARGUMENT,
                         "capacity is %llu bytes; the %s state needs %llu",
                         (unsigned long long)capacity,
                         owl__state_kind_name(kind),
                         (unsigned long long)need);
    uint64_t n = 0;
    st = write_blob(kind, write, handle, buf, need, &n);
    if (st == OWL_ERR_INTERNAL)
        return owl__fail(ctx, st, "the %s state changed size while saving",
                         owl__state_kind_name(kind));
    if (st != OWL_OK)
        return st;
    *written = n;
    return OWL_OK;
}

owl_status owl__state_save_file(owl_context *ctx, owl_state_kind kind,
                                owl_state_write_fn write, const void *handle,
                                const char *path)
{
    uint64_t need = 0;
    owl_status st = owl__state_measure(kind, write, handle, &need);
    if (st != OWL_OK)
        return st;
    if (need > SIZE_MAX)
        return owl__fail(ctx, OWL_ERR_OUT_OF_MEMORY,
                         "the %s state (%llu bytes) cannot be addressed",
                         owl__state_kind_name(kind), (unsigned long long)need);
    void *buf = malloc((size_t)need);
    if (buf == NULL)
        return owl__fail(ctx, OWL_ERR_OUT_OF_MEMORY,
                         "cannot allocate %llu bytes to save the %s state",
                         (unsigned long long)need, owl__state_kind_name(kind));
    uint64_t n = 0;
    st = write_blob(kind, write, handle, buf, need, &n);
    if (st == OWL_ERR_INTERNAL)
        st = owl__fail(ctx, st, "the %s state changed size while saving",
                       owl__state_kind_name(kind));
    if (st == OWL_OK)
        st = owl__file_write_atomic(ctx, path, buf, n);
    free(buf);
    return st;
}

/* ------------------------------------------------------------------ */
/* Reader                                                              */
/* ------------------------------------------------------------------ */

void owl__reader_init(owl_reader *r, owl_context *ctx, const void *data,
                      uint64_t size)
{
    r->ctx = ctx;
    r->data = data;
    r->size = size;
    r->pos = 0;
    r->base = 0;
}

static owl_status take(owl_reader *r, uint64_t n, const uint8_t **p,
                       const char *what)
{
    if (n > r->size - r->pos)
        return owl__fail(r->ctx, OWL_ERR_CORRUPT,
                         "state blob is corrupt: it ends inside %s (%llu "
                         "bytes needed at offset %llu, %llu left)",
                         what, (unsigned long long)n,
                         (unsigned long long)(r->base + r->pos),
                         (unsigned long long)(r->size - r->pos));
    *p = r->data + r->pos;
    r->pos += n;
    return OWL_OK;
}

owl_status owl__get_u8(owl_reader *r, uint8_t *v, const char *what)
{
    const uint8_t *p = NULL;
    owl_status st = take(r, 1, &p, what);
    if (st == OWL_OK)
        *v = p[0];
    return st;
}

owl_status owl__get_u32(owl_reader *r, uint32_t *v, const char *what)
{
    const uint8_t *p = NULL;
    owl_status st = take(r, 4, &p, what);
    if (st == OWL_OK)
        *v = owl__le_u32(p);
    return st;
}

owl_status owl__get_u64(owl_reader *r, uint64_t *v, const char *what)
{
    const uint8_t *p = NULL;
    owl_status st = take(r, 8, &p, what);
    if (st == OWL_OK)
        *v = owl__le_u64(p);
    return st;
}

owl_status owl__get_i64(owl_reader *r, int64_t *v, const char *what)
{
    uint64_t u;
    owl_status st = owl__get_u64(r, &u, what);
    if (st == OWL_OK)
        memcpy(v, &u, sizeof u);
    return st;
}

owl_status owl__get_f64(owl_reader *r, double *v, const char *what)
{
    uint64_t u;
    owl_status st = owl__get_u64(r, &u, what);
    if (st == OWL_OK)
        memcpy(v, &u, sizeof u);
    return st;
}

owl_status owl__get_bool(owl_reader *r, bool *v, const char *what)
{
    const uint64_t at = r->base + r->pos;
    uint8_t b;
    owl_status st = owl__get_u8(r, &b, what);
    if (st != OWL_OK)
        return st;
    if (b > 1)
        return owl__fail(r->ctx, OWL_ERR_CORRUPT,
                         "state blob is corrupt: %s is %u at offset %llu; "
                         "expected 0 or 1",
                         what, (unsigned)b, (unsigned long long)at);
    *v = b != 0;
    return OWL_OK;
}

owl_status owl__get_bytes(owl_reader *r, uint64_t n, const uint8_t **p,
                          const char *what)
{
    return take(r, n, p, what);
}

owl_status owl__get_f32_array(owl_reader *r, float *dst, uint64_t count,
                              const char *what)
{
    const uint8_t *p = NULL;
    if (count > UINT64_MAX / 4)
        return owl__fail(r->ctx, OWL_ERR_CORRUPT,
                         "state blob is corrupt: %s is too long", what);
    owl_status st = take(r, count * 4, &p, what);
    if (st != OWL_OK)
        return st;
    if (count > 0) {
        memcpy(dst, p, (size_t)(count * 4));
        owl__le_fix_32(dst, count);
    }
    return OWL_OK;
}

owl_status owl__get_u16_array(owl_reader *r, uint16_t *dst, uint64_t count,
                              const char *what)
{
    const uint8_t *p = NULL;
    if (count > UINT64_MAX / 2)
        return owl__fail(r->ctx, OWL_ERR_CORRUPT,
                         "state blob is corrupt: %s is too long", what);
    owl_status st = take(r, count * 2, &p, what);
    if (st != OWL_OK)
        return st;
    if (count > 0) {
        memcpy(dst, p, (size_t)(count * 2));
        owl__le_fix_16(dst, count);
    }
    return OWL_OK;
}

owl_status owl__reader_expect_end(owl_reader *r, const char *what)
{
    if (r->pos != r->size)
        return owl__fail(r->ctx, OWL_ERR_CORRUPT,
                         "state blob is corrupt: %llu unread bytes after the "
                         "%s at offset %llu",
                         (unsigned long long)(r->size - r->pos), what,
                         (unsigned long long)(r->base + r->pos));
    return OWL_OK;
}

/* ------------------------------------------------------------------ */
/* Frames                                                              */
/* ------------------------------------------------------------------ */

/* Magic, version and kind of a header (at least OWL_STATE_HEADER_BYTES);
 * also used on the head of a file too large to read whole. */
static owl_status check_header(owl_context *ctx, const uint8_t *b,
                               owl_state_kind kind)
{
    if (memcmp(b, OWL_STATE_MAGIC, OWL_STATE_MAGIC_LEN) != 0)
        return owl__fail(ctx, OWL_ERR_CORRUPT,
                         "not a libowlore state: the magic number is wrong");
    const uint32_t version = owl__le_u32(b + 8);
    if (version != OWL_STATE_VERSION)
        return owl__fail(ctx, OWL_ERR_VERSION,
                         "state format version %u; this library (%s) reads "
                         "version %u",
                         version, OWL_VERSION_STRING, OWL_STATE_VERSION);
    const uint32_t got = owl__le_u32(b + 12);
    if (got != (uint32_t)kind)
        return owl__fail(ctx, OWL_ERR_MISMATCH,
                         "the state is of a %s (kind %u); expected a %s "
                         "state",
                         owl__state_kind_name(got), got,
                         owl__state_kind_name(kind));
    return OWL_OK;
}

owl_status owl__frame_open(owl_context *ctx, const void *blob, uint64_t size,
                           owl_state_kind kind, owl_reader *payload)
{
    const uint8_t *b = blob;
    const uint64_t overhead = OWL_STATE_HEADER_BYTES + OWL_STATE_TRAILER_BYTES;
    if (size < OWL_STATE_HEADER_BYTES)
        return owl__fail(ctx, OWL_ERR_CORRUPT,
                         "state blob is corrupt: %llu bytes, shorter than "
                         "its %u-byte header",
                         (unsigned long long)size, OWL_STATE_HEADER_BYTES);
    owl_status st = check_header(ctx, b, kind);
    if (st != OWL_OK)
        return st;
    const uint64_t length = owl__le_u64(b + 16);
    if (size < overhead || length != size - overhead)
        return owl__fail(ctx, OWL_ERR_CORRUPT,
                         "state blob is corrupt: its header announces a "
                         "%llu-byte payload but %llu bytes were given "
                         "(%llu expected; truncated or extended)",
                         (unsigned long long)length, (unsigned long long)size,
                         length <= UINT64_MAX - overhead
                             ? (unsigned long long)(length + overhead)
                             : 0ull);
    const uint32_t stored = owl__le_u32(b + size - OWL_STATE_TRAILER_BYTES);
    const uint32_t crc =
        owl__crc32c(0, b, (size_t)(size - OWL_STATE_TRAILER_BYTES));
    if (stored != crc)
        return owl__fail(ctx, OWL_ERR_CORRUPT,
                         "state blob is corrupt: CRC-32C is 0x%08x, the blob "
                         "says 0x%08x",
                         crc, stored);
    owl__reader_init(payload, ctx, b + OWL_STATE_HEADER_BYTES, length);
    payload->base = OWL_STATE_HEADER_BYTES;
    return OWL_OK;
}

/* ------------------------------------------------------------------ */
/* Files                                                               */
/* ------------------------------------------------------------------ */

static owl_status io_fail(owl_context *ctx, const char *step,
                          const char *path, int err)
{
    return owl__fail(ctx, OWL_ERR_IO, "%s '%s' failed: %s", step, path,
                     strerror(err));
}

/* The directory holding path ("." when it has no slash), for its fsync. */
static char *dir_of(const char *path)
{
    const char *slash = strrchr(path, '/');
    if (slash == NULL)
        return strdup(".");
    if (slash == path)
        return strdup("/");
    size_t n = (size_t)(slash - path);
    char *d = malloc(n + 1);
    if (d != NULL) {
        memcpy(d, path, n);
        d[n] = '\0';
    }
    return d;
}

owl_status owl__file_write_atomic(owl_context *ctx, const char *path,
                                  const void *data, uint64_t size)
{
    const size_t plen = strlen(path);
    if (plen == 0)
        return owl__fail(ctx, OWL_ERR_INVALID_ARGUMENT, "path is empty");
    char *tmp = malloc(plen + 8);
    char *dir = dir_of(path);
    if (tmp == NULL || dir == NULL) {
        free(tmp);
        free(dir);
        return owl__fail(ctx, OWL_ERR_OUT_OF_MEMORY,
                         "cannot allocate a file name");
    }
    memcpy(tmp, path, plen);
    memcpy(tmp + plen, ".XXXXXX", 8);

    owl_status st = OWL_OK;
    int fd = mkstemp(tmp);
    if (fd < 0) {
        st = io_fail(ctx, "creating a temporary file next to", path, errno);
        goto done;
    }
    /* mkstemp creates the file 0600 (owner only), which new state files
     * keep; a replaced file keeps its permissions. (Reading the umask
     * would mean setting it, a process-wide change other threads could
     * observe.) */
    struct stat old;
    if (stat(path, &old) == 0 && S_ISREG(old.st_mode))
        (void)fchmod(fd, old.st_mode & 07777);

    const uint8_t *p = data;
    uint64_t left = size;
    while (left > 0) {
        size_t chunk = left > (1u << 30) ? (1u << 30) : (size_t)left;
        ssize_t n = write(fd, p, chunk);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            st = io_fail(ctx, "writing", tmp, n < 0 ? errno : EIO);
            goto fail;
        }
        p += n;
        left -= (uint64_t)n;
    }
    if (fsync(fd) != 0) {
        st = io_fail(ctx, "flushing (fsync)", tmp, errno);
        goto fail;
    }
    if (close(fd) != 0) {
        fd = -1;
        st = io_fail(ctx, "closing", tmp, errno);
        goto fail;
    }
    fd = -1;
    if (rename(tmp, path) != 0) {
        st = io_fail(ctx, "renaming the temporary file over", path, errno);
        goto fail;
    }
    /* The rename is durable once the directory entry is. */
    int dfd = open(dir, O_RDONLY);
    if (dfd >= 0) {
        if (fsync(dfd) != 0 && errno != EINVAL) {
            int err = errno;
            close(dfd);
            st = io_fail(ctx, "flushing (fsync) the directory of", path, err);
            goto done; /* the new file is in place; only durability failed */
        }
        close(dfd);
    }
    goto done;
fail:
    if (fd >= 0)
        close(fd);
    unlink(tmp);
done:
    free(tmp);
    free(dir);
    return st;
}

owl_status owl__state_read_file(owl_context *ctx, const char *path,
                                owl_state_kind kind, uint64_t max_bytes,
                                void **data, uint64_t *size)
{
    /* O_NONBLOCK: opening a FIFO for reading would otherwise wait for a
     * writer, forever; it is refused below as not a regular file. For a
     * regular file the flag changes nothing. */
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0)
        return io_fail(ctx, "opening", path, errno);
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        int err = errno;
        close(fd);
        return io_fail(ctx, "reading the size of", path, err);
    }
    if (!S_ISREG(sb.st_mode)) {
        close(fd);
        return owl__fail(ctx, OWL_ERR_IO, "'%s' is not a regular file", path);
    }
    const uint64_t fsize = (uint64_t)sb.st_size;
    /* A file too large for this handle: read just the header, so another
     * format or kind is reported as such, else a shape mismatch. */
    const bool too_big = fsize > max_bytes || fsize > SIZE_MAX;
    const uint64_t want = too_big ? OWL_STATE_HEADER_BYTES : fsize;
    uint8_t *buf = malloc(want > 0 ? (size_t)want : 1);
    if (buf == NULL) {
        close(fd);
        return owl__fail(ctx, OWL_ERR_OUT_OF_MEMORY,
                         "cannot allocate %llu bytes to read '%s'",
                         (unsigned long long)want, path);
    }
    uint64_t got = 0;
    while (got < want) {
        size_t chunk = want - got > (1u << 30) ? (1u << 30)
                                               : (size_t)(want - got);
        ssize_t n = read(fd, buf + got, chunk);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            int err = errno;
            close(fd);
            free(buf);
            return io_fail(ctx, "reading", path, err);
        }
        if (n == 0)
            break; /* shrank under us: the frame check reports it */
        got += (uint64_t)n;
    }
    close(fd);
    if (too_big) {
        owl_status st = got < OWL_STATE_HEADER_BYTES
                            ? owl__fail(ctx, OWL_ERR_CORRUPT,
                                        "state file '%s' is corrupt", path)
                            : check_header(ctx, buf, kind);
        free(buf);
        if (st != OWL_OK)
            return st;
        return owl__fail(ctx, OWL_ERR_MISMATCH,
                         "state file '%s' is %llu bytes; a state of this %s "
                         "is at most %llu",
                         path, (unsigned long long)fsize,
                         owl__state_kind_name(kind),
                         (unsigned long long)max_bytes);
    }
    *data = buf;
    *size = got;
    return OWL_OK;
}

/* ------------------------------------------------------------------ */
/* Whole loads                                                         */
/* ------------------------------------------------------------------ */

owl_status owl__state_load(owl_context *ctx, owl_state_kind kind,
                           owl_state_check_fn check, owl_state_apply_fn apply,
                           void *handle, const void *buf, uint64_t size)
{
    owl_reader r;
    owl_status st = owl__frame_open(ctx, buf, size, kind, &r);
    if (st != OWL_OK)
        return st;
    const owl_reader start = r;
    st = check(handle, &r);
    if (st != OWL_OK)
        return st;
    st = owl__reader_expect_end(&r, owl__state_kind_name(kind));
    if (st != OWL_OK)
        return st;
    r = start;
    return apply(handle, &r);
}

owl_status owl__state_load_file(owl_context *ctx, owl_state_kind kind,
                                owl_state_check_fn check,
                                owl_state_apply_fn apply, void *handle,
                                const char *path, uint64_t max_bytes)
{
    void *data = NULL;
    uint64_t size = 0;
    owl_status st =
        owl__state_read_file(ctx, path, kind, max_bytes, &data, &size);
    if (st != OWL_OK)
        return st;
    st = owl__state_load(ctx, kind, check, apply, handle, data, size);
    free(data);
    return st;
}
