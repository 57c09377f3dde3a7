/* What the GGUF sources share (gguf.c, gguf_meta.c, gguf_quant.c,
 * gguf_llama.c): little-endian loads from unaligned bytes and names made
 * safe to print. Not part of gguf.h. */
#ifndef LLAMA_GGUF_INTERNAL_H
#define LLAMA_GGUF_INTERNAL_H

#include "gguf.h"

#include <stddef.h>
#include <stdint.h>
#include <string.h>

static inline uint16_t gguf_le16(const unsigned char *p)
{
    return (uint16_t)(p[0] | p[1] << 8);
}

static inline uint32_t gguf_le32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
           (uint32_t)p[3] << 24;
}

static inline uint64_t gguf_le64(const unsigned char *p)
{
    return (uint64_t)gguf_le32(p) | (uint64_t)gguf_le32(p + 4) << 32;
}

static inline float gguf_bits_f32(uint32_t b)
{
    float x;
    memcpy(&x, &b, sizeof x);
    return x;
}

/* A key or tensor name for messages: at most 64 bytes of it, bytes
 * outside printable ASCII shown as '?', "..." when cut. buf holds at least
 * GGUF_PRINTABLE_LEN bytes. */
#define GGUF_PRINTABLE_LEN 72
const char *gguf_printable(gguf_str s, char *buf);

#endif /* LLAMA_GGUF_INTERNAL_H */
