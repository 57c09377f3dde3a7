/* Decoding a fuzzer's input into call arguments, biased towards the values
 * that break validation: sizes at 0, 1, powers of two and near 2^63 and
 * 2^64; doubles that are 0, -0, subnormal, NaN, +-Inf or DBL_MAX; enum
 * values just outside their range. Every byte string decodes to something
 * (an exhausted input reads as zeros), so the fuzzer's mutations always
 * reach the library. Header-only: the API fuzzer and its tools share it. */
#ifndef OWL_FUZZ_INPUT_H
#define OWL_FUZZ_INPUT_H

#include <float.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

typedef struct fuzz_input {
    const uint8_t *p;
    size_t n;
} fuzz_input;

static inline uint8_t fz_u8(fuzz_input *f)
{
    if (f->n == 0)
        return 0;
    f->n--;
    return *f->p++;
}

static inline uint64_t fz_raw64(fuzz_input *f)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v |= (uint64_t)fz_u8(f) << (8 * i);
    return v;
}

static inline int fz_bool(fuzz_input *f) { return fz_u8(f) & 1; }

/* A count or size: mostly small, else the edges of the integer types. */
static inline uint64_t fz_size(fuzz_input *f)
{
    const uint8_t sel = fz_u8(f);
    const uint64_t small = fz_u8(f);
    switch (sel % 16) {
    case 0: case 1: case 2: case 3: case 4: return small % 17;
    case 5: return small % 97;
    case 6: return 0;
    case 7: return 1;
    case 8: return (uint64_t)1 << (small % 64);
    case 9: return ((uint64_t)1 << (small % 64)) + (small >> 6) - 2;
    case 10: return UINT64_MAX - small % 4;
    case 11: return (uint64_t)INT64_MAX - small % 4 + 1;
    case 12: return ((uint64_t)1 << 32) + small % 4 - 2;
    case 13: return UINT64_MAX / 8 + small % 4 - 1;
    case 14: return small * 17 % 4099;
    default: return fz_raw64(f);
    }
}

/* A dimension for shapes that should mostly be workable. */
static inline uint64_t fz_dim(fuzz_input *f)
{
    const uint8_t sel = fz_u8(f);
    if (sel < 200)
        return 1 + sel % 24;
    return fz_size(f);
}

static inline int64_t fz_i64(fuzz_input *f)
{
    const uint8_t sel = fz_u8(f);
    switch (sel % 8) {
    case 0: return -(int64_t)(fz_u8(f) % 3) - 1;
    case 1: return INT64_MIN + fz_u8(f) % 2;
    case 2: return (int64_t)(fz_size(f) & (uint64_t)INT64_MAX);
    default: return (int64_t)(fz_u8(f) % 40);
    }
}

/* An enum value: mostly in range [0, count), else just outside or wild. */
static inline int32_t fz_enum(fuzz_input *f, int32_t count)
{
    const uint8_t sel = fz_u8(f);
    if (sel < 224)
        return (int32_t)(sel % (uint8_t)count);
    switch (sel % 4) {
    case 0: return -1;
    case 1: return count;
    case 2: return INT32_MIN;
    default: return (int32_t)fz_raw64(f);
    }
}

static inline double fz_double_bits(uint64_t bits)
{
    double d;
    memcpy(&d, &bits, sizeof d);
    return d;
}

/* A double: a plausible value or one of the edge cases. */
static inline double fz_double(fuzz_input *f)
{
    const uint8_t sel = fz_u8(f);
    const uint8_t b = fz_u8(f);
    static const double plausible[] = {1e-3, 0.9, 0.999, 1e-6, 1e-8, 0.5,
                                       1.0, 2.0, 13.0, 0.25, 1e-2, 5.0,
                                       0.1, 3.0, 1e2, 7.5};
    switch (sel % 20) {
    case 0: return 0.0;
    case 1: return -0.0;
    case 2: return 5e-324;
    case 3: return DBL_MIN;
    case 4: return fz_double_bits(((uint64_t)b << 40) | 1); /* subnormal */
    case 5: return NAN;
    case 6: return -NAN;
    case 7: return INFINITY;
    case 8: return -INFINITY;
    case 9: return DBL_MAX;
    case 10: return -plausible[b % 16];
    case 11: return ldexp(1.0, (int)(b % 200) - 100);
    case 12: return fz_double_bits(fz_raw64(f));
    case 13: return 1.0 - ldexp(1.0, -(int)(b % 60) - 1); /* just below 1 */
    case 14: return (double)FLT_MAX * (1 + b);
    default: return plausible[b % 16];
    }
}

#endif /* OWL_FUZZ_INPUT_H */
