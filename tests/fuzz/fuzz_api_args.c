/* The API fuzzer's arguments: the real buffers tensors point into, tensor
 * descriptors that never lie about their buffer, options structs of
 * exactly their struct_size, and fuzzed options of every handle. */
#include "fuzz_api.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int fuzz_trace;

/* ---- the real buffers tensors point into --------------------------- */

uint8_t *arena[NBUF];
uint8_t *arena_before[NBUF];

/* Deterministic plausible values, so SVDs and steps see real data. */
static uint64_t mix(uint64_t x)
{
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

static uint16_t f32_top(float v)
{
    uint32_t u;
    memcpy(&u, &v, sizeof u);
    return (uint16_t)(u >> 16);
}

/* mode 0: f32, 1: bf16, 2: f16-ish halves, 3: f64, all in [-1, 1). */
void fill_buffer(uint8_t *b, int mode, uint64_t seed)
{
    const size_t n = BUF_BYTES;
    for (size_t i = 0; i < n / 8; i++) {
        const uint64_t r = mix(seed * 1000003u + i);
        const double u = (double)(r >> 11) * 0x1p-53 * 2.0 - 1.0;
        switch (mode) {
        case 0: {
            float v[2] = {(float)u, (float)(-u * 0.5)};
            memcpy(b + 8 * i, v, 8);
            break;
        }
        case 1: case 2: {
            /* bf16 bits for mode 1; for f16, exponent 14 +- small. */
            uint16_t h[4];
            for (int k = 0; k < 4; k++) {
                const uint16_t bits = (uint16_t)(r >> (16 * k));
                h[k] = mode == 1 ? f32_top((float)u * (float)(k + 1) * 0.25f)
                                 : (uint16_t)((bits & 0x83FF) | 0x3400);
            }
            memcpy(b + 8 * i, h, 8);
            break;
        }
        default:
            memcpy(b + 8 * i, &u, 8);
            break;
        }
    }
}

/* ---- tensors ---------------------------------------------------------- */

size_t dtype_bytes(owl_dtype d)
{
    switch (d) {
    case OWL_DTYPE_F32: return 4;
    case OWL_DTYPE_BF16: case OWL_DTYPE_F16: return 2;
    case OWL_DTYPE_F64: return 8;
    default: return 0;
    }
}

/* True when the contract lets the library address the tensor: non-NULL
 * data, flags 0, a known dtype, shape >= 1, row_stride >= cols and an
 * extent of at most INT64_MAX bytes. *bytes receives that extent. */
bool addressable(const owl_tensor *t, unsigned __int128 *bytes)
{
    const size_t es = dtype_bytes(t->dtype);
    if (t->data == NULL || t->flags != 0 || es == 0 || t->rows < 1 ||
        t->cols < 1 || t->row_stride < t->cols)
        return false;
    const unsigned __int128 extent =
        ((unsigned __int128)(t->rows - 1) * (uint64_t)t->row_stride +
         (uint64_t)t->cols) * es;
    *bytes = extent;
    return extent <= (unsigned __int128)INT64_MAX;
}

void mark_invalid(call_check *cc, const char *why)
{
    if (!cc->invalid_input)
        cc->why = why;
    cc->invalid_input = true;
}

owl_dtype pick_dtype(fuzz_input *f)
{
    const uint8_t s = fz_u8(f);
    if (s < 150)
        return OWL_DTYPE_F32;
    if (s < 190)
        return OWL_DTYPE_BF16;
    if (s < 230)
        return OWL_DTYPE_F16;
    if (s < 245)
        return OWL_DTYPE_F64;
    return fz_enum(f, 6);
}

/* A tensor for an argument whose expected shape is rows x cols (0: none):
 * mostly that shape, dense or strided; else arbitrary fields. Returns
 * NULL for a NULL argument. Shrinks descriptors that would lie about their
 * buffer; records invalid ones. */
owl_tensor *make_tensor(fuzz_input *f, owl_tensor *t, int64_t rows,
                               int64_t cols, call_check *cc)
{
    const uint8_t mode = fz_u8(f);
    const int b = fz_u8(f) % NBUF;
    memset(t, 0, sizeof *t);
    t->dtype = pick_dtype(f);
    if (rows < 1 || cols < 1) {
        rows = (int64_t)fz_dim(f) % 4096;
        cols = (int64_t)fz_dim(f) % 4096;
    }
    switch (mode % 16) {
    case 0: case 1: case 2: case 3: case 4: case 5: case 6: case 7: case 8:
        t->rows = rows;
        t->cols = cols;
        t->row_stride = cols;
        break;
    case 9: case 10:
        t->rows = rows;
        t->cols = cols;
        t->row_stride = cols + (int64_t)(fz_u8(f) % 9);
        break;
    case 11: /* one dimension off */
        t->rows = rows + (fz_bool(f) ? 1 : -1);
        t->cols = cols;
        t->row_stride = cols;
        break;
    case 12: case 13:
        t->rows = fz_i64(f);
        t->cols = fz_i64(f);
        t->row_stride = fz_bool(f) ? t->cols : fz_i64(f);
        break;
    case 14:
        t->rows = rows;
        t->cols = cols;
        t->row_stride = cols;
        t->flags = (int32_t)(1 + fz_u8(f));
        break;
    default:
        if (fz_bool(f)) {
            mark_invalid(cc, "a NULL tensor");
            return NULL;
        }
        t->rows = rows;
        t->cols = cols;
        t->row_stride = cols;
        break;
    }
    const bool null_data = mode % 16 == 15;
    const size_t es = dtype_bytes(t->dtype) ? dtype_bytes(t->dtype) : 4;
    size_t offset = (size_t)(fz_u8(f) % 16) * es;
    t->data = null_data ? NULL : arena[b] + offset;
    unsigned __int128 bytes = 0;
    if (addressable(t, &bytes)) {
        /* Within the address space the library must trust the caller:
         * make the descriptor true. */
        if (bytes + offset > BUF_BYTES) {
            offset = 0;
            t->data = arena[b];
            if ((unsigned __int128)t->cols * es > BUF_BYTES) {
                t->cols = (int64_t)(BUF_BYTES / es);
                if (t->row_stride < t->cols)
                    t->row_stride = t->cols;
            }
            const unsigned __int128 stride_bytes =
                (unsigned __int128)t->row_stride * es;
            const unsigned __int128 last = (unsigned __int128)t->cols * es;
            const unsigned __int128 fit = (BUF_BYTES - last) / stride_bytes + 1;
            if ((unsigned __int128)t->rows > fit)
                t->rows = (int64_t)fit;
        }
        if (!addressable(t, &bytes) || bytes + offset > BUF_BYTES)
            abort(); /* the shrinking above is wrong */
        if (fuzz_trace && t->dtype == OWL_DTYPE_F32) {
            float lo = INFINITY, hi = 0;
            for (int64_t i = 0; i < t->rows; i++)
                for (int64_t j = 0; j < t->cols; j++) {
                    const float v = fabsf(((const float *)t->data)[i * t->row_stride + j]);
                    hi = v > hi ? v : hi;
                    lo = v > 0 && v < lo ? v : lo;
                }
            fprintf(stderr, "  tensor %lldx%lld stride %lld f32: |x| in [%g, %g]\n",
                    (long long)t->rows, (long long)t->cols,
                    (long long)t->row_stride, lo, hi);
        }
    } else {
        mark_invalid(cc, "a tensor descriptor outside the contract");
    }
    return t;
}

/* ---- options structs of exactly struct_size bytes ------------------- */

/* A struct_size: mostly the real one, else the edge cases. */
uint64_t pick_struct_size(fuzz_input *f, size_t real)
{
    const uint8_t s = fz_u8(f);
    if (s < 200)
        return real;
    switch (s % 10) {
    case 0: return 0;
    case 1: return 7;
    case 2: return 8;
    case 3: return real - 8;
    case 4: return real + 8;
    case 5: return 4096;
    case 6: return 4097;
    case 7: return UINT64_MAX;
    case 8: return real - 4;
    default: return 16 + 8 * (uint64_t)(fz_u8(f) % 8);
    }
}

/* Copies the first struct_size bytes of src (sizeof = real; zeros past
 * it, or a fuzzed non-zero byte) into a block of exactly struct_size
 * bytes, which the caller frees. Sizes the library must refuse unread get
 * a block of the real size. */
bool size_in_range(uint64_t struct_size)
{
    return struct_size >= 8 && struct_size <= 4096;
}

/* The sizes the contract accepts: in range and a multiple of 8 (a size
 * that ends inside a field is refused). */
bool size_valid(uint64_t struct_size)
{
    return size_in_range(struct_size) && struct_size % 8 == 0;
}

/* A block of exactly struct_size bytes (or the real size, for sizes the
 * library must refuse unread) holding the first struct_size bytes of src
 * (sizeof = real) and, past the fields this version knows, zeros or a
 * fuzzed non-zero byte (an input struct: refused) or fuzzed bytes (an
 * output struct: the caller's to leave as they are, never an error). */
static void *make_struct(fuzz_input *f, const void *src, size_t real,
                         uint64_t struct_size, call_check *cc, bool output)
{
    const bool in_range = size_in_range(struct_size);
    const size_t n = in_range ? (size_t)struct_size : real;
    uint8_t *blk = calloc(1, n);
    if (blk == NULL)
        abort();
    memcpy(blk, src, n < real ? n : real);
    memcpy(blk, &struct_size, sizeof struct_size);
    if (n > real && output) {
        memset(blk + real, fz_u8(f), n - real);
    } else if (n > real && fz_u8(f) > 230) {
        blk[real + fz_u8(f) % (n - real)] = (uint8_t)(1 + fz_u8(f) % 255);
        mark_invalid(cc, "a non-zero byte past the known fields");
    }
    if (!size_valid(struct_size))
        mark_invalid(cc, "a struct_size outside the contract");
    return blk;
}

void *exact_struct(fuzz_input *f, const void *src, size_t real,
                   uint64_t struct_size, call_check *cc)
{
    return make_struct(f, src, real, struct_size, cc, false);
}

void *exact_out_struct(fuzz_input *f, const void *src, size_t real,
                       uint64_t struct_size, call_check *cc)
{
    return make_struct(f, src, real, struct_size, cc, true);
}

/* The options the library will use: the caller's first struct_size
 * bytes over the defaults (ours start from the same init function). */
void effective(void *dst, const void *defaults, const void *given,
                      size_t real, uint64_t struct_size)
{
    memcpy(dst, defaults, real);
    if (size_valid(struct_size)) {
        const size_t n = struct_size < real ? (size_t)struct_size : real;
        memcpy((uint8_t *)dst + 8, (const uint8_t *)given + 8, n - 8);
    }
}

/* ---- fuzzed options -------------------------------------------------- */

/* Sampler options with a weights array of exactly num_layers doubles
 * (*weights_out, freed by the caller) when the options carry weights. */
void fuzz_sampler_options(fuzz_input *f, owl_sampler_options *o,
                                 double **weights_out, bool own_layers)
{
    owl_sampler_options_init(o, sizeof *o);
    *weights_out = NULL;
    if (own_layers)
        o->num_layers = fz_bool(f) ? 1 + fz_u8(f) % 40 : fz_size(f);
    o->gamma = fz_u8(f) < 200 ? 1 + fz_u8(f) % 6 : fz_size(f);
    o->period = fz_u8(f) < 200 ? 1 + fz_u8(f) % 7 : fz_size(f);
    o->seed = fz_raw64(f);
    o->weight_mode = fz_enum(f, 5);
    o->law = fz_enum(f, 3);
    if (fz_u8(f) < 180) {
        /* Only arrays the caller really has: num_layers of them. */
        const uint64_t L = o->num_layers;
        if (own_layers && (L == 0 || L > MAX_WEIGHTS))
            o->num_layers = 1 + L % MAX_WEIGHTS;
        const size_t n = own_layers ? (size_t)o->num_layers : MAX_WEIGHTS;
        double *w = malloc(n * sizeof *w);
        if (w == NULL)
            abort();
        const uint8_t style = fz_u8(f);
        for (size_t l = 0; l < n; l++)
            w[l] = style % 2 ? fz_double(f) : (double)(1 + fz_u8(f) % 9) * 0.1;
        o->weights = w;
        *weights_out = w;
    }
}

void fuzz_galore_options(fuzz_input *f, owl_galore_options *o)
{
    owl_galore_options_init(o, sizeof *o);
    o->rows = fz_dim(f);
    o->cols = fz_dim(f);
    o->rank = fz_u8(f) < 200 ? 1 + fz_u8(f) % 8 : fz_size(f);
    o->update_gap = fz_u8(f) < 200 ? 1 + fz_u8(f) % 5 : fz_size(f);
    o->scale = fz_u8(f) < 200 ? 0.25 * (1 + fz_u8(f) % 8) : fz_double(f);
    o->proj_type = fz_enum(f, 4);
    o->svd_method = fz_enum(f, 2);
    o->oversample = fz_u8(f) < 200 ? fz_u8(f) % 10 : fz_size(f);
    o->power_iters = fz_u8(f) < 200 ? fz_u8(f) % 4 : fz_size(f);
    o->seed = fz_raw64(f);
}

void fuzz_adamw_options(fuzz_input *f, owl_adamw_options *o)
{
    owl_adamw_options_init(o, sizeof *o);
    if (fz_u8(f) < 128)
        return; /* the defaults */
    o->beta1 = fz_u8(f) < 160 ? 0.9 : fz_double(f);
    o->beta2 = fz_u8(f) < 160 ? 0.999 : fz_double(f);
    o->eps = fz_u8(f) < 160 ? 1e-6 : fz_double(f);
    o->weight_decay = fz_u8(f) < 160 ? 0.01 * (fz_u8(f) % 4) : fz_double(f);
    o->semantics = fz_enum(f, 2);
    o->moment_dtype = fz_u8(f) < 200 ? (fz_bool(f) ? OWL_DTYPE_BF16 : OWL_DTYPE_F32)
                                    : pick_dtype(f);
    o->on_refresh = fz_enum(f, 2);
    o->rounding = fz_enum(f, 2);
    o->seed = fz_raw64(f);
}

