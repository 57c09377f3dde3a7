/* The safetensors format (https://github.com/huggingface/safetensors):
 * an 8-byte little-endian header length N, N bytes of JSON mapping tensor
 * names to {"dtype", "shape", "data_offsets": [begin, end]} (plus an
 * optional "__metadata__" object of strings), then the tensor bytes, little
 * endian, offsets relative to the end of the header. This reader accepts
 * the F32, BF16 and F16 dtypes, and checks what the format promises: the
 * offsets of every tensor match its dtype and shape, and the tensors tile
 * the data area exactly, without overlaps or holes. */
#ifndef LLAMA_SAFETENSORS_H
#define LLAMA_SAFETENSORS_H

#include "json.h"

#include <stddef.h>
#include <stdint.h>

/* Largest header accepted (the reference implementation's limit). */
#define ST_MAX_HEADER ((uint64_t)100 * 1000 * 1000)
#define ST_MAX_DIMS 8

typedef enum st_dtype { ST_F32, ST_BF16, ST_F16 } st_dtype;

typedef struct st_tensor {
    const char *name;           /* points into the parsed header */
    st_dtype dtype;
    int ndim;
    uint64_t shape[ST_MAX_DIMS];
    uint64_t numel;
    uint64_t begin, end;        /* byte offsets into the data area */
} st_tensor;

typedef struct st_file {
    void *map;                  /* the whole file, mapped read-only */
    uint64_t file_size;
    const unsigned char *data;  /* the data area (after the header) */
    uint64_t data_size;
    json_value *header;
    st_tensor *tensors;         /* in header order */
    size_t count;
} st_file;

/* Maps and checks a file. 0, or -1 with a message naming the file and the
 * problem (the st_file is then empty and need not be closed). */
/* Maps a whole regular file read-only (munmap(*map, *size) to release);
 * refuses files shorter than min_size ("too short for <min_what>"). */
int map_file(const char *path, uint64_t min_size, const char *min_what,
             void **map, uint64_t *size, char *err, size_t errlen);
int st_open(st_file *f, const char *path, char *err, size_t errlen);
void st_close(st_file *f);
const st_tensor *st_find(const st_file *f, const char *name);
size_t st_dtype_size(st_dtype t);
const char *st_dtype_name(st_dtype t);

/* Converts tensor t (already checked by st_open) to f32 into out[numel]. */
void st_read_f32(const st_file *f, const st_tensor *t, float *out);
/* Element i (< numel) of tensor t, as f32. */
float st_get_f32(const st_file *f, const st_tensor *t, uint64_t i);
/* The first element of t that is NaN or infinite, from its stored bits:
 * 1 with its index and (f32) value, or 0 when every element is finite. */
int st_find_nonfinite(const st_file *f, const st_tensor *t, uint64_t *index,
                      float *value);

/* Exact conversions between f32 and the 16-bit formats: widening is
 * exact; narrowing rounds to nearest, ties to even, overflowing to
 * infinity, keeping NaN a (quiet) NaN, as IEEE 754 and PyTorch do. */
float st_bf16_to_f32(uint16_t h);
float st_f16_to_f32(uint16_t h);
uint16_t st_f32_to_bf16(float x);
uint16_t st_f32_to_f16(float x);

/* One tensor to write: name, shape and its f32 values. */
typedef struct st_out_tensor {
    const char *name;
    int ndim;
    uint64_t shape[ST_MAX_DIMS];
    const float *data;
} st_out_tensor;

/* Writes the tensors, converted to dtype, as one safetensors file,
 * atomically: a temporary file in the same directory is written, flushed
 * to disk and renamed over path. The header is padded with spaces to a
 * multiple of 8 bytes so the data area is aligned. */
int st_write(const char *path, const st_out_tensor *t, size_t count,
             st_dtype dtype, char *err, size_t errlen);

/* Writes `len` bytes to path atomically, the same way. */
int st_write_file_atomic(const char *path, const void *bytes, size_t len,
                         char *err, size_t errlen);

#endif /* LLAMA_SAFETENSORS_H */
