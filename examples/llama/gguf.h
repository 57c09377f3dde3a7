/* GGUF, the single-file model format of llama.cpp (ggml's docs/gguf.md):
 *
 *   "GGUF" u32 version (2 or 3) u64 n_tensors u64 n_kv
 *   n_kv x     { string key, u32 value type, value }
 *   n_tensors x{ string name, u32 n_dims, u64 ne[n_dims] (innermost
 *                first), u32 ggml type, u64 offset }
 *   padding to general.alignment (32 by default), then the tensor data,
 *   each tensor at data start + offset, a multiple of the alignment.
 *
 * A string is a u64 byte length and its bytes (no NUL). An array is a u32
 * element type, a u64 count and the elements (arrays may nest). Everything
 * is little endian; big-endian files are refused.
 *
 * The reader maps the file and checks all of it at open: every count,
 * length, dimension and offset against the bytes the file has, with
 * overflow-safe arithmetic, before anything is allocated from it; what
 * the reader allocates is bounded by a small multiple of the file size
 * (index_bytes, under 5 times: a key takes at least 13 bytes of the file
 * and 56 of the index). Keys and
 * tensor names must be unique, tensor types known, tensor data aligned,
 * inside the file and not overlapping. Values then stay in the mapped file:
 * strings are (pointer, length) views into it, valid until gguf_close.
 *
 * Functions that can fail return 0 on success, or -1 with a readable
 * message in err (naming the file, the key or tensor, and the problem).
 */
#ifndef LLAMA_GGUF_H
#define LLAMA_GGUF_H

#include "llama.h"

#include <stddef.h>
#include <stdint.h>

/* ---- the file --------------------------------------------------------- */

/* Metadata value types, in the file's numbering. */
typedef enum gguf_type {
    GGUF_TYPE_UINT8 = 0,
    GGUF_TYPE_INT8 = 1,
    GGUF_TYPE_UINT16 = 2,
    GGUF_TYPE_INT16 = 3,
    GGUF_TYPE_UINT32 = 4,
    GGUF_TYPE_INT32 = 5,
    GGUF_TYPE_FLOAT32 = 6,
    GGUF_TYPE_BOOL = 7,
    GGUF_TYPE_STRING = 8,
    GGUF_TYPE_ARRAY = 9,
    GGUF_TYPE_UINT64 = 10,
    GGUF_TYPE_INT64 = 11,
    GGUF_TYPE_FLOAT64 = 12
} gguf_type;
#define GGUF_TYPE_COUNT 13

/* Tensor element types (ggml's numbering) that gguf_dequantize converts
 * to f32. Files may hold any type ggml defines (the reader knows their
 * block sizes, so it checks their bounds too); the others are refused
 * when converted, naming the tensor and the type. */
typedef enum gguf_dtype {
    GGUF_DTYPE_F32 = 0,
    GGUF_DTYPE_F16 = 1,
    GGUF_DTYPE_Q4_0 = 2,
    GGUF_DTYPE_Q4_1 = 3,
    GGUF_DTYPE_Q8_0 = 8,
    GGUF_DTYPE_Q4_K = 12,
    GGUF_DTYPE_Q5_K = 13,
    GGUF_DTYPE_Q6_K = 14,
    GGUF_DTYPE_BF16 = 30
} gguf_dtype;

#define GGUF_MAX_DIMS 4            /* ggml's limit */
#define GGUF_MAX_NESTING 16        /* levels of arrays in arrays; more are
                                    * refused */
#define GGUF_DEFAULT_ALIGNMENT 32

/* Bytes in the mapped file, not NUL-terminated (print with "%.*s"). */
typedef struct gguf_str {
    const char *ptr;
    uint64_t len;
} gguf_str;

/* One metadata value: a view into the mapped file. */
typedef struct gguf_value {
    gguf_type type;
    gguf_type elem_type;       /* ARRAY: the elements' type */
    const unsigned char *data; /* scalar: its little-endian bytes; STRING:
                                * its bytes; ARRAY: the first element */
    uint64_t len;              /* STRING: bytes; ARRAY: elements; else 1 */
    const void *index;         /* private: ARRAY of STRING or ARRAY, where
                                * each element is */
} gguf_value;

typedef struct gguf_kv {
    gguf_str key;
    gguf_value value;
} gguf_kv;

typedef struct gguf_tensor {
    gguf_str name;
    uint32_t n_dims;              /* 1 .. GGUF_MAX_DIMS */
    uint64_t ne[GGUF_MAX_DIMS];   /* innermost (contiguous) first; 1 past
                                   * n_dims. A PyTorch [rows x cols] weight
                                   * is ne = {cols, rows}. */
    uint32_t type;                /* ggml type (gguf_dtype or another) */
    uint64_t numel;
    uint64_t offset;              /* from the start of the data area */
    uint64_t nbytes;
    const unsigned char *data;    /* in the mapped file */
} gguf_tensor;

typedef struct gguf_file {
    char *name;                   /* the path, for messages */
    const unsigned char *bytes;   /* the whole file */
    uint64_t size;
    void *map;                    /* private: the mapping (gguf_open) */
    uint32_t version;
    uint64_t alignment;           /* general.alignment or 32 */
    uint64_t data_offset;         /* where the data area starts */
    gguf_kv *kvs;                 /* in file order */
    size_t n_kv;
    gguf_tensor *tensors;         /* in file order */
    size_t n_tensors;
    size_t index_bytes;           /* bytes allocated for all of the above */
    const gguf_kv **kv_sorted;    /* private: by key, for lookups */
    const gguf_tensor **tensor_sorted; /* private: by name */
} gguf_file;

/* Maps and checks a GGUF file (a regular file; a FIFO or a directory is
 * refused without blocking). On failure f is left empty (no close). */
int gguf_open(gguf_file *f, const char *path, char *err, size_t errlen);
/* The same over bytes in memory (not copied: they must outlive f). name
 * is used in messages. */
int gguf_open_memory(gguf_file *f, const void *bytes, size_t size,
                     const char *name, char *err, size_t errlen);
void gguf_close(gguf_file *f);
/* 1 when path ends in ".gguf" or the file starts with the GGUF magic. */
int gguf_is_gguf_path(const char *path);

/* "UINT8", ..., "FLOAT64"; "?" for other numbers. */
const char *gguf_type_name(uint32_t type);

/* ---- metadata ----------------------------------------------------------- */

/* The value of key (a NUL-terminated string), or NULL when absent. */
const gguf_value *gguf_get(const gguf_file *f, const char *key);

/*
 * Typed reads of one key. Each returns
 *    0  the key is there and converts: *out is set;
 *    1  the key is absent: *out is untouched, err says "... is missing";
 *   -1  the key has another type, or a value out of out's range: err
 *       names the key, the type found and the one wanted.
 * Integers: any of the eight integer types is accepted when its value fits
 * the requested C type (writers differ: general.alignment is UINT32, a
 * token id may be INT32 or UINT64). Floats: FLOAT32 or FLOAT64 (a FLOAT64
 * that does not fit in a float is out of range). Bools: BOOL only.
 * Strings: STRING only, as a view (gguf_str) into the file.
 */
int gguf_get_u32(const gguf_file *f, const char *key, uint32_t *out,
                 char *err, size_t errlen);
int gguf_get_i32(const gguf_file *f, const char *key, int32_t *out,
                 char *err, size_t errlen);
int gguf_get_u64(const gguf_file *f, const char *key, uint64_t *out,
                 char *err, size_t errlen);
int gguf_get_i64(const gguf_file *f, const char *key, int64_t *out,
                 char *err, size_t errlen);
int gguf_get_f32(const gguf_file *f, const char *key, float *out,
                 char *err, size_t errlen);
int gguf_get_f64(const gguf_file *f, const char *key, double *out,
                 char *err, size_t errlen);
int gguf_get_bool(const gguf_file *f, const char *key, int *out, char *err,
                  size_t errlen);
int gguf_get_str(const gguf_file *f, const char *key, gguf_str *out,
                 char *err, size_t errlen);
/* A token id key: 0 with *out = -1 when absent, 0 with *out the id when
 * it is an integer below count (the vocabulary), -1 with a message
 * otherwise. */
int gguf_get_token_id(const gguf_file *f, const char *key, uint64_t count,
                      int32_t *out, char *err, size_t errlen);
/* An ARRAY key: the array itself (for the element functions below), its
 * element type and length; same return values. */
int gguf_get_array(const gguf_file *f, const char *key,
                   const gguf_value **arr, gguf_type *elem_type,
                   uint64_t *count, char *err, size_t errlen);

/* The same conversions on a value (a key's, or an array element from
 * gguf_array_get): 0, or -1 when the type or range does not fit (no
 * message: the caller knows the key). */
int gguf_value_u64(const gguf_value *v, uint64_t *out);
int gguf_value_i64(const gguf_value *v, int64_t *out);
int gguf_value_f64(const gguf_value *v, double *out);
int gguf_value_bool(const gguf_value *v, int *out);
int gguf_value_str(const gguf_value *v, gguf_str *out);

/* Element i of an array, of any element type (nested arrays too), as a
 * value; -1 when arr is not an array or i >= its length. O(1). */
int gguf_array_get(const gguf_value *arr, uint64_t i, gguf_value *out);
/* Element i of an array of strings; -1 when it is not one or i is out of
 * range. O(1). */
int gguf_array_str(const gguf_value *arr, uint64_t i, gguf_str *out);
/* All elements of a numeric array converted, into out[arr->len]:
 * gguf_array_f32 takes FLOAT32 or FLOAT64 elements (FLOAT64 rounded to
 * float; a value beyond float's range is refused); gguf_array_i32 any
 * integer type whose every value fits an int32_t. -1 with a message
 * (naming `what`, e.g. the key) otherwise; out is then unspecified. */
int gguf_array_f32(const gguf_value *arr, float *out, const char *what,
                   char *err, size_t errlen);
int gguf_array_i32(const gguf_value *arr, int32_t *out, const char *what,
                   char *err, size_t errlen);

/* ---- tensors ------------------------------------------------------------ */

/* The tensor named name (NUL-terminated), or NULL. */
const gguf_tensor *gguf_find_tensor(const gguf_file *f, const char *name);

/* ggml's name of a tensor type ("Q4_K"), or NULL for a number ggml does
 * not define. */
const char *gguf_dtype_name(uint32_t type);
/* 1 when gguf_dequantize converts the type. */
int gguf_dtype_supported(uint32_t type);
/* Elements per block and bytes per block of a type ggml defines (F32: 1
 * and 4, Q4_K: 256 and 144); 0 for other numbers. */
uint32_t gguf_dtype_block_elems(uint32_t type);
uint32_t gguf_dtype_block_bytes(uint32_t type);

/* Converts n elements (a multiple of the type's block size) of a
 * supported type, stored at src (n / block_elems * block_bytes bytes, any
 * alignment), to f32. The results are exactly those of ggml's reference
 * dequantisation (and of the gguf Python package's). -1 when the type is
 * not supported or n is not a whole number of blocks. */
int gguf_dequantize(uint32_t type, const void *src, uint64_t n, float *out);
/* The whole tensor t of f to f32 (out[t->numel]); -1 with a message that
 * names the tensor and its type when the type is not supported. */
int gguf_tensor_to_f32(const gguf_file *f, const gguf_tensor *t, float *out,
                       char *err, size_t errlen);

/* ---- LLaMa ---------------------------------------------------------------- */

/*
 * Loads a LLaMa (general.architecture "llama") into a new model created
 * with llama_create(m, &cfg, max_batch, ...). The configuration comes from
 * the llama.* keys, the weights from the tensors by llama.cpp's names
 * (token_embd, blk.N.attn_q/k/v/output, blk.N.ffn_gate/up/down,
 * blk.N.attn_norm/ffn_norm, output_norm, output; the head is tied when
 * output.weight is absent), dequantised to f32. llama.cpp's converter
 * stores q and k with the rows of each head in interleaved-RoPE order;
 * they are put back in the Hugging Face (rotate_half) order the model
 * uses. seq_len is llama.context_length, or min(context_length, max_seq)
 * when max_seq > 0 (activations are sized by it: pass the run's sequence
 * length). Everything is checked before the model is allocated (keys,
 * every tensor's presence, shape and type, no extra tensors), and weights
 * that are NaN or infinite are refused, naming the tensor and the first
 * bad index (in the file's order). On failure *m is left zeroed.
 */
int ckpt_load_gguf(const char *path, llama_model *m, int max_batch,
                   int max_seq, char *err, size_t errlen);
/* The same from an open file (to read its tokenizer from the same f). */
int gguf_load_llama(const gguf_file *f, llama_model *m, int max_batch,
                    int max_seq, char *err, size_t errlen);

#endif /* LLAMA_GGUF_H */
