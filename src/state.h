/* State blobs: the byte format every stateful handle saves to and loads from
 * (spec section 6; the layout is documented in docs/state.md).
 *
 * A blob is one frame:
 *
 *   offset  size  field
 *   0       8     magic "OWLSTATE"
 *   8       4     format version (u32, OWL_STATE_VERSION)
 *   12      4     kind (u32, owl_state_kind)
 *   16      8     payload length P (u64)
 *   24      P     payload (the handle's fields, see persist.h)
 *   24 + P  4     CRC-32C (Castagnoli) of bytes [0, 24 + P)
 *
 * Every integer and float is little-endian on disk whatever the host; the
 * put/get helpers below convert. Floats travel as their raw IEEE bits, so a
 * save/load round trip is bit-exact.
 *
 * Writing: an owl_writer either counts (buf == NULL: the size query) or
 * writes into a caller's buffer of `cap` bytes. It never writes past cap:
 * once a put does not fit, `overflow` is set and the writer keeps counting,
 * so one pass over the fields gives both the size and the bytes. Save paths
 * count first and refuse a short buffer before writing anything.
 *
 * Reading: owl__frame_open validates the frame in a fixed order -- size >=
 * header, magic, version (OWL_ERR_VERSION), kind (OWL_ERR_MISMATCH), payload
 * length (the blob is exactly one frame), CRC (the others: OWL_ERR_CORRUPT)
 * -- and hands back a reader over the payload. Every getter is
 * bounds-checked: it never reads past the end, reports OWL_ERR_CORRUPT with
 * the field's name and offset, and leaves its output untouched on failure.
 *
 * Loading is two-phase so that a failed load changes nothing: a *_check
 * parses and validates the whole payload against the live handle without
 * changing it, then a *_apply re-reads the same bytes (from a copy of the
 * reader taken before the check) and installs them. Apply runs only after
 * a successful check and cannot fail on the CPU backend.
 *
 * Nothing here is exported. */
#ifndef OWLORE_STATE_H
#define OWLORE_STATE_H

#include "internal.h"

#define OWL_STATE_MAGIC "OWLSTATE"
#define OWL_STATE_MAGIC_LEN 8
/* Bumped whenever any payload layout changes; a loader accepts exactly the
 * versions it knows (today only 1). */
#define OWL_STATE_VERSION 1u
#define OWL_STATE_HEADER_BYTES 24u
#define OWL_STATE_TRAILER_BYTES 4u /* the CRC */

typedef enum owl_state_kind {
    OWL_STATE_SAMPLER = 1,
    OWL_STATE_GALORE = 2,
    OWL_STATE_ADAMW = 3,
    OWL_STATE_OPTIMIZER = 4
} owl_state_kind;

/* "sampler", "galore", "adamw", "optimizer" or "unknown". */
const char *owl__state_kind_name(uint32_t kind);

/* ---- CRC-32C ---------------------------------------------------------- */

/* CRC-32C (Castagnoli, reflected polynomial 0x82F63B78, init and final xor
 * 0xFFFFFFFF): crc32c("123456789") == 0xE3069283. Pass crc = 0 to start;
 * feed the previous result to continue over more bytes. */
uint32_t owl__crc32c(uint32_t crc, const void *data, size_t len);

/* ---- little-endian encoding of single values ---------------------------- */

static inline void owl__le_put_u16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}
static inline void owl__le_put_u32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}
static inline void owl__le_put_u64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}
static inline uint16_t owl__le_u16(const uint8_t *p)
{
    return (uint16_t)(p[0] | (p[1] << 8));
}
static inline uint32_t owl__le_u32(const uint8_t *p)
{
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}
static inline uint64_t owl__le_u64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

/* ---- writer ------------------------------------------------------------- */

typedef struct owl_writer {
    uint8_t *buf;  /* NULL: counting mode */
    uint64_t cap;  /* bytes available at buf */
    uint64_t pos;  /* bytes put so far (also past cap: then overflow) */
    bool overflow; /* a put did not fit; nothing was written past cap */
} owl_writer;

/* buf == NULL (cap ignored) counts only. */
void owl__writer_init(owl_writer *w, void *buf, uint64_t cap);

void owl__put_u8(owl_writer *w, uint8_t v);
void owl__put_u32(owl_writer *w, uint32_t v);
void owl__put_u64(owl_writer *w, uint64_t v);
void owl__put_i64(owl_writer *w, int64_t v);
void owl__put_f64(owl_writer *w, double v); /* raw bits */
void owl__put_bytes(owl_writer *w, const void *src, uint64_t n);
/* Arrays of host values stored little-endian: f32 as raw bits, u16 (bf16
 * and f16 moments) as is. */
void owl__put_f32_array(owl_writer *w, const float *src, uint64_t count);
void owl__put_u16_array(owl_writer *w, const uint16_t *src, uint64_t count);
/* Reserves n bytes and returns where they go in the buffer, for data filled
 * in place (a device download); NULL in counting mode or when they do not
 * fit (the writer still advances). The caller stores them little-endian
 * (owl__le_fix_* below). */
uint8_t *owl__put_reserve(owl_writer *w, uint64_t n);

/* In-place conversion of host-order arrays to little-endian (and back: the
 * operation is its own inverse); a no-op on little-endian hosts. */
void owl__le_fix_32(void *data, uint64_t count);
void owl__le_fix_16(void *data, uint64_t count);

/* Frames: begin writes the header with a placeholder length and returns
 * the frame's start offset; end patches the payload length and appends the
 * CRC. Both work in counting mode (end then only counts the CRC). A frame
 * must start at offset 0 of a buffer-mode writer for its CRC to be right;
 * nested handle states are plain payload inside the outer frame. */
uint64_t owl__frame_begin(owl_writer *w, owl_state_kind kind);
void owl__frame_end(owl_writer *w, uint64_t start);

/* A whole save: counts the blob written by `write` (its payload, inside a
 * frame of `kind`), sets *bytes. Used by every *_state_size. */
typedef owl_status (*owl_state_write_fn)(const void *handle, owl_writer *w);
owl_status owl__state_measure(owl_state_kind kind, owl_state_write_fn write,
                              const void *handle, uint64_t *bytes);
/* Counts, then -- only when capacity suffices, else
 * OWL_ERR_INVALID_ARGUMENT naming both sizes and nothing written --
 * writes the framed blob into buf and sets *written. */
owl_status owl__state_save(owl_context *ctx, owl_state_kind kind,
                           owl_state_write_fn write, const void *handle,
                           void *buf, uint64_t capacity, uint64_t *written);
/* Counts, writes into a temporary heap buffer, and writes it atomically
 * to path (owl__file_write_atomic). */
owl_status owl__state_save_file(owl_context *ctx, owl_state_kind kind,
                                owl_state_write_fn write, const void *handle,
                                const char *path);

/* ---- reader ------------------------------------------------------------- */

typedef struct owl_reader {
    owl_context *ctx;    /* receives the error messages */
    const uint8_t *data;
    uint64_t size;
    uint64_t pos;
    uint64_t base;       /* offset of data[0] in the blob, for messages */
} owl_reader;

void owl__reader_init(owl_reader *r, owl_context *ctx, const void *data,
                      uint64_t size);
static inline uint64_t owl__reader_remaining(const owl_reader *r)
{
    return r->size - r->pos;
}

/* Each getter: OWL_ERR_CORRUPT ("state blob ends inside <what> at offset
 * N") when the value does not fit in what is left; the output is written
 * only on success. */
owl_status owl__get_u8(owl_reader *r, uint8_t *v, const char *what);
owl_status owl__get_u32(owl_reader *r, uint32_t *v, const char *what);
owl_status owl__get_u64(owl_reader *r, uint64_t *v, const char *what);
owl_status owl__get_i64(owl_reader *r, int64_t *v, const char *what);
owl_status owl__get_f64(owl_reader *r, double *v, const char *what);
/* A bool stored as a u8 that must be 0 or 1. */
owl_status owl__get_bool(owl_reader *r, bool *v, const char *what);
/* n bytes in place: *p points into the blob (no copy). Read elements with
 * owl__le_u16/u32 or copy them out with the array getters. */
owl_status owl__get_bytes(owl_reader *r, uint64_t n, const uint8_t **p,
                          const char *what);
/* count elements converted to host order into dst. */
owl_status owl__get_f32_array(owl_reader *r, float *dst, uint64_t count,
                              const char *what);
owl_status owl__get_u16_array(owl_reader *r, uint16_t *dst, uint64_t count,
                              const char *what);
/* OWL_ERR_CORRUPT unless every byte has been read. */
owl_status owl__reader_expect_end(owl_reader *r, const char *what);

/* Validates a whole blob of `size` bytes as one frame of `kind` (order in
 * the comment at the top) and sets *payload to a reader over its payload.
 * Errors go to ctx with a message naming what failed. */
owl_status owl__frame_open(owl_context *ctx, const void *blob, uint64_t size,
                           owl_state_kind kind, owl_reader *payload);

/* A whole load of a standalone handle: frame_open, then check (which must
 * consume the whole payload), then apply from a copy of the reader taken
 * before the check. Nothing changes unless everything passed. */
typedef owl_status (*owl_state_check_fn)(const void *handle, owl_reader *r);
typedef owl_status (*owl_state_apply_fn)(void *handle, owl_reader *r);
owl_status owl__state_load(owl_context *ctx, owl_state_kind kind,
                           owl_state_check_fn check, owl_state_apply_fn apply,
                           void *handle, const void *buf, uint64_t size);
/* The same from a file of at most max_bytes (owl__state_read_file). */
owl_status owl__state_load_file(owl_context *ctx, owl_state_kind kind,
                                owl_state_check_fn check,
                                owl_state_apply_fn apply, void *handle,
                                const char *path, uint64_t max_bytes);

/* ---- files -------------------------------------------------------------- */

/* Writes size bytes to path atomically: a temporary file next to it
 * (mkstemp on "<path>.XXXXXX"), every byte written, fsync, rename over
 * path, fsync of the directory. New files are 0600; a replaced file keeps
 * its mode. On any failure the temporary file is removed and an existing
 * file at path is left as it was; the error is OWL_ERR_IO with the failing
 * step, the path and strerror(errno). */
owl_status owl__file_write_atomic(owl_context *ctx, const char *path,
                                  const void *data, uint64_t size);
/* Reads a whole state file of at most max_bytes into a new buffer
 * (*data, release with free(); set only on success). OWL_ERR_IO for a file
 * that cannot be opened or read. A file larger than max_bytes is not read
 * whole: its header is validated as a frame of `kind` (so a foreign file
 * or another version is reported as such) and OWL_ERR_MISMATCH names both
 * sizes. */
owl_status owl__state_read_file(owl_context *ctx, const char *path,
                                owl_state_kind kind, uint64_t max_bytes,
                                void **data, uint64_t *size);

#endif /* OWLORE_STATE_H */
