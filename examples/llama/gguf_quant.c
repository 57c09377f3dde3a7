/*
 * ggml's tensor types: their block sizes, and the conversion of the
 * supported ones to f32. See gguf.h.
 *
 * Every quantised type stores blocks of a fixed number of elements. The
 * block layouts (bytes in order; f16 values little endian):
 *
 *   Q8_0  (32 elements, 34 bytes): d f16, q[32] int8;      x = q * d
 *   Q4_0  (32, 18): d f16, qs[16]; element j < 16 is the low nibble of
 *         qs[j], element 16 + j its high nibble;           x = (q - 8) * d
 *   Q4_1  (32, 20): d f16, m f16, qs[16] as Q4_0;           x = q * d + m
 *   Q4_K  (256, 144): d f16, dmin f16, scales[12], qs[128]. Eight
 *         sub-blocks of 32 with 6-bit scale sc and min mn each (below);
 *         sub-block 2c + s, element e is nibble s of qs[32c + e];
 *         x = (d * sc) * q - (dmin * mn)
 *   Q5_K  (256, 176): d, dmin, scales[12], qh[32], qs[128]: Q4_K's low
 *         four bits, bit 4 of sub-block j, element e is bit j of qh[e]
 *   Q6_K  (256, 210): ql[128], qh[64], scales[16] int8, d f16. For element
 *         i = 128h + r (h = 0, 1): the low four bits are nibble (r / 64)
 *         of ql[64h + r % 64], the high two bits are bit pair (r / 32) of
 *         qh[32h + r % 32]; x = (d * scales[i / 16]) * (q - 32)
 *
 * The K-quants' twelve scale bytes hold eight 6-bit scales and eight 6-bit
 * mins: for j < 4, sc[j] and mn[j] are the low six bits of bytes j and
 * j + 4; for j >= 4, their low four bits are the low and high nibbles of
 * byte j + 4, their high two bits the top two bits of bytes j - 4 and j.
 *
 * The arithmetic is f32, as in ggml's reference dequantisation and the
 * gguf Python package, and the results equal theirs bit for bit: f16
 * scales have 11 significant bits, so Q8_0's, Q4_0's and Q4_1's products
 * with their quants are exact in f32, as are the K-quants' d * sc and
 * dmin * mn (6-bit) and their products with a 4- or 5-bit quant. Each
 * element is thus rounded at most once (by the sum with the min, or by
 * Q6_K's last product: a 19-bit scale times a 6-bit quant), whatever
 * order of operations or fused multiply-adds a compiler picks.
 */
#include "gguf.h"
#include "errmsg.h"
#include "gguf_internal.h"

#include "safetensors.h" /* st_f16_to_f32, st_bf16_to_f32 */

#include <stdio.h>

/* ---- the types ggml defines --------------------------------------------- */

typedef struct dtype_info {
    const char *name;
    uint16_t block_elems, block_bytes;
    uint8_t supported;
} dtype_info;

/* Indexed by ggml's type number; numbers ggml retired or never used are
 * empty (name NULL). */
static const dtype_info dtypes[] = {
    [0] = {"F32", 1, 4, 1},        [1] = {"F16", 1, 2, 1},
    [2] = {"Q4_0", 32, 18, 1},     [3] = {"Q4_1", 32, 20, 1},
    [6] = {"Q5_0", 32, 22, 0},     [7] = {"Q5_1", 32, 24, 0},
    [8] = {"Q8_0", 32, 34, 1},     [9] = {"Q8_1", 32, 36, 0},
    [10] = {"Q2_K", 256, 84, 0},   [11] = {"Q3_K", 256, 110, 0},
    [12] = {"Q4_K", 256, 144, 1},  [13] = {"Q5_K", 256, 176, 1},
    [14] = {"Q6_K", 256, 210, 1},  [15] = {"Q8_K", 256, 292, 0},
    [16] = {"IQ2_XXS", 256, 66, 0}, [17] = {"IQ2_XS", 256, 74, 0},
    [18] = {"IQ3_XXS", 256, 98, 0}, [19] = {"IQ1_S", 256, 50, 0},
    [20] = {"IQ4_NL", 32, 18, 0},  [21] = {"IQ3_S", 256, 110, 0},
    [22] = {"IQ2_S", 256, 82, 0},  [23] = {"IQ4_XS", 256, 136, 0},
    [24] = {"I8", 1, 1, 0},        [25] = {"I16", 1, 2, 0},
    [26] = {"I32", 1, 4, 0},       [27] = {"I64", 1, 8, 0},
    [28] = {"F64", 1, 8, 0},       [29] = {"IQ1_M", 256, 56, 0},
    [30] = {"BF16", 1, 2, 1},      [34] = {"TQ1_0", 256, 54, 0},
    [35] = {"TQ2_0", 256, 66, 0},  [39] = {"MXFP4", 32, 17, 0},
};

static const dtype_info *info(uint32_t type)
{
    if (type >= sizeof dtypes / sizeof dtypes[0] || !dtypes[type].name)
        return NULL;
    return &dtypes[type];
}

const char *gguf_dtype_name(uint32_t type)
{
    const dtype_info *d = info(type);
    return d ? d->name : NULL;
}

int gguf_dtype_supported(uint32_t type)
{
    const dtype_info *d = info(type);
    return d && d->supported;
}

uint32_t gguf_dtype_block_elems(uint32_t type)
{
    const dtype_info *d = info(type);
    return d ? d->block_elems : 0;
}

uint32_t gguf_dtype_block_bytes(uint32_t type)
{
    const dtype_info *d = info(type);
    return d ? d->block_bytes : 0;
}

/* ---- blocks ---------------------------------------------------------------- */

static float f16(const unsigned char *p) { return st_f16_to_f32(gguf_le16(p)); }

static void block_q8_0(const unsigned char *b, float *x)
{
    float d = f16(b);
    for (int j = 0; j < 32; j++)
        x[j] = (float)(int8_t)b[2 + j] * d;
}

static void block_q4_0(const unsigned char *b, float *x)
{
    float d = f16(b);
    const unsigned char *qs = b + 2;
    for (int j = 0; j < 16; j++) {
        x[j] = d * (float)((qs[j] & 0x0F) - 8);
        x[j + 16] = d * (float)((qs[j] >> 4) - 8);
    }
}

static void block_q4_1(const unsigned char *b, float *x)
{
    float d = f16(b), m = f16(b + 2);
    const unsigned char *qs = b + 4;
    for (int j = 0; j < 16; j++) {
        float lo = d * (float)(qs[j] & 0x0F);
        float hi = d * (float)(qs[j] >> 4);
        x[j] = lo + m;
        x[j + 16] = hi + m;
    }
}

/* The eight 6-bit scales and mins of a K-quant block (see the top). */
static void k_scales(const unsigned char *s, int sc[8], int mn[8])
{
    for (int j = 0; j < 4; j++) {
        sc[j] = s[j] & 0x3F;
        mn[j] = s[j + 4] & 0x3F;
        sc[j + 4] = (s[j + 8] & 0x0F) | ((s[j] >> 6) << 4);
        mn[j + 4] = (s[j + 8] >> 4) | ((s[j + 4] >> 6) << 4);
    }
}

/* Q4_K and Q5_K: qh is NULL for Q4_K (no fifth bit). */
static void block_k45(const unsigned char *b, const unsigned char *qh,
                      const unsigned char *qs, float *x)
{
    float d = f16(b), dmin = f16(b + 2);
    int sc[8], mn[8];
    k_scales(b + 4, sc, mn);
    for (int j = 0; j < 8; j++) {
        float dj = d * (float)sc[j];
        float mj = dmin * (float)mn[j];
        const unsigned char *q = qs + 32 * (j / 2);
        int shift = 4 * (j % 2);
        for (int e = 0; e < 32; e++) {
            int v = (q[e] >> shift) & 0x0F;
            if (qh)
                v |= ((qh[e] >> j) & 1) << 4;
            float p = dj * (float)v;
            x[32 * j + e] = p - mj;
        }
    }
}

static void block_q4_k(const unsigned char *b, float *x)
{
    block_k45(b, NULL, b + 16, x);
}

static void block_q5_k(const unsigned char *b, float *x)
{
    block_k45(b, b + 16, b + 48, x);
}

static void block_q6_k(const unsigned char *b, float *x)
{
    const unsigned char *ql = b, *qh = b + 128;
    const signed char *scales = (const signed char *)(b + 192);
    float d = f16(b + 208);
    for (int i = 0; i < 256; i++) {
        int h = i / 128, r = i % 128;
        int lo = (ql[64 * h + r % 64] >> (4 * (r / 64))) & 0x0F;
        int hi = (qh[32 * h + r % 32] >> (2 * (r / 32))) & 0x03;
        float ds = d * (float)scales[i / 16];
        x[i] = ds * (float)((lo | hi << 4) - 32);
    }
}

int gguf_dequantize(uint32_t type, const void *src, uint64_t n, float *out)
{
    const dtype_info *d = info(type);
    if (!d || !d->supported || n % d->block_elems != 0)
        return -1;
    const unsigned char *p = src;
    uint64_t blocks = n / d->block_elems;
    switch (type) {
    case GGUF_DTYPE_F32:
        for (uint64_t i = 0; i < n; i++)
            out[i] = gguf_bits_f32(gguf_le32(p + 4 * i));
        return 0;
    case GGUF_DTYPE_F16:
        for (uint64_t i = 0; i < n; i++)
            out[i] = f16(p + 2 * i);
        return 0;
    case GGUF_DTYPE_BF16:
        for (uint64_t i = 0; i < n; i++)
            out[i] = st_bf16_to_f32(gguf_le16(p + 2 * i));
        return 0;
    default:
        break;
    }
    void (*block)(const unsigned char *, float *) =
        type == GGUF_DTYPE_Q8_0   ? block_q8_0
        : type == GGUF_DTYPE_Q4_0 ? block_q4_0
        : type == GGUF_DTYPE_Q4_1 ? block_q4_1
        : type == GGUF_DTYPE_Q4_K ? block_q4_k
        : type == GGUF_DTYPE_Q5_K ? block_q5_k
                                  : block_q6_k;
    for (uint64_t i = 0; i < blocks; i++)
        block(p + i * d->block_bytes, out + i * d->block_elems);
    return 0;
}

int gguf_tensor_to_f32(const gguf_file *f, const gguf_tensor *t, float *out,
                       char *err, size_t errlen)
{
    char name[GGUF_PRINTABLE_LEN];
    if (!gguf_dtype_supported(t->type)) {
        const char *tn = gguf_dtype_name(t->type);
        llama_set_err(err, errlen, "%s: tensor '%s' has type %s (%u), which this "
                "reader does not convert (F32, F16, BF16, Q8_0, Q4_0, Q4_1, "
                "Q4_K, Q5_K and Q6_K are supported)", f->name,
                gguf_printable(t->name, name), tn ? tn : "unknown", t->type);
        return -1;
    }
    return gguf_dequantize(t->type, t->data, t->numel, out);
}
