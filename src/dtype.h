/* Scalar conversions between f32 and the 16-bit storage formats. Written
 * out by hand (no _Float16 / __bf16) so they behave the same with every
 * compiler and on every host. */
#ifndef OWLORE_DTYPE_H
#define OWLORE_DTYPE_H

#include <stdint.h>
#include <string.h>

static inline uint32_t owl__f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static inline float owl__bits_f32(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static inline float owl_bf16_to_f32(uint16_t h)
{
    return owl__bits_f32((uint32_t)h << 16);
}

/* Round to nearest, ties to even; NaN stays NaN (quiet). */
static inline uint16_t owl_f32_to_bf16(float f)
{
    uint32_t u = owl__f32_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((u >> 16) | 0x0040u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

/* Stochastic rounding: adds 16 random bits below the kept mantissa, so the
 * result rounds up with probability equal to the dropped fraction. */
static inline uint16_t owl_f32_to_bf16_stochastic(float f, uint32_t rnd16)
{
    uint32_t u = owl__f32_bits(f);
    if ((u & 0x7f800000u) == 0x7f800000u) /* Inf/NaN: as nearest */
        return owl_f32_to_bf16(f);
    uint32_t r = u + (rnd16 & 0xffffu);
    if ((r & 0x7f800000u) == 0x7f800000u) /* would overflow to Inf */
        return (uint16_t)(u >> 16);
    return (uint16_t)(r >> 16);
}

static inline float owl_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t man = h & 0x3ffu;
    uint32_t u;
    if (exp == 0) {
        if (man == 0) {
            u = sign;
        } else { /* subnormal: normalise */
            int e = -1;
            do {
                e++;
                man <<= 1;
            } while ((man & 0x400u) == 0);
            u = sign | ((uint32_t)(127 - 15 - e) << 23) | ((man & 0x3ffu) << 13);
        }
    } else if (exp == 0x1f) {
        u = sign | 0x7f800000u | (man << 13);
    } else {
        u = sign | ((exp + 127 - 15) << 23) | (man << 13);
    }
    return owl__bits_f32(u);
}

/* Round to nearest, ties to even, with subnormals and overflow to Inf. */
static inline uint16_t owl_f32_to_f16(float f)
{
    uint32_t u = owl__f32_bits(f);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u)
        return (uint16_t)(sign | 0x7e00u); /* NaN */
    if (a >= 0x477ff000u)                 /* >= 65520 rounds to Inf */
        return (uint16_t)(sign | 0x7c00u);
    if (a < 0x38800000u) { /* below the smallest normal half: subnormal */
        if (a < 0x33000000u) /* < 2^-25: rounds to zero */
            return sign;
        uint32_t exp = a >> 23;
        uint32_t man = (a & 0x7fffffu) | 0x800000u;
        uint32_t shift = 126u - exp; /* 14..24 */
        uint32_t half = man >> shift;
        uint32_t rem = man & ((1u << shift) - 1u);
        uint32_t mid = 1u << (shift - 1u);
        if (rem > mid || (rem == mid && (half & 1u)))
            half++;
        return (uint16_t)(sign | half);
    }
    uint32_t h = ((a >> 13) - ((127u - 15u) << 10));
    uint32_t rem = a & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1u)))
        h++;
    return (uint16_t)(sign | h);
}

#endif /* OWLORE_DTYPE_H */
