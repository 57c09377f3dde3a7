/* Saving and loading an AdamW handle (spec section 6).
 *
 * Payload (little-endian):
 *   f64 beta1, f64 beta2, f64 eps, f64 weight_decay,
 *   u32 semantics, u32 moment_dtype, u32 on_refresh, u32 rounding,
 *   u64 seed                      (the options: must equal the live ones)
 *   u64 rows, u64 cols            (the moment shape: must match)
 *   u64 step_count, u64 bias_step
 *   m[rows * cols], v[rows * cols] in the moment dtype, raw
 *                                 (f32: 4 bytes, bf16: 2 bytes each)
 *
 * On a CUDA context m, v live in device memory, and bias_step counts every
 * call while a device counter (dev_skipped) counts the steps the device
 * skipped for a non-finite gradient since the last reset; the blob holds
 * the effective bias-correction step bias_step - dev_skipped, and a load
 * installs it with the device counter reset to 0. */
#include "galore_internal.h"
#include "persist.h"

#ifdef OWL_HAVE_CUDA
#include "cuda_internal.h"
#endif

#include <string.h>

static uint64_t moment_count(const owl_adamw *a)
{
    return (uint64_t)a->rows * (uint64_t)a->cols;
}

static uint64_t elem_bytes(const owl_adamw *a)
{
    return a->opts.moment_dtype == OWL_DTYPE_F32 ? 4 : 2;
}

static bool on_device(const owl_adamw *a)
{
    return a->ctx->backend == OWL_BACKEND_CUDA;
}

static void put_moment_host(const owl_adamw *a, owl_writer *w, const void *x)
{
    if (a->opts.moment_dtype == OWL_DTYPE_F32)
        owl__put_f32_array(w, x, moment_count(a));
    else
        owl__put_u16_array(w, x, moment_count(a));
}

#ifdef OWL_HAVE_CUDA
/* Untested (no GPU where this was written). */
static owl_status put_moment_device(const owl_adamw *a, owl_writer *w,
                                    const void *dev)
{
    const uint64_t n = moment_count(a), bytes = n * elem_bytes(a);
    uint8_t *at = owl__put_reserve(w, bytes);
    if (at == NULL)
        return OWL_OK; /* counting */
    owl_status st = owl__cuda_download(a->ctx, at, dev, (size_t)bytes);
    if (st != OWL_OK)
        return st;
    if (elem_bytes(a) == 4)
        owl__le_fix_32(at, n);
    else
        owl__le_fix_16(at, n);
    return OWL_OK;
}
#endif

owl_status owl__adamw_state_write(const owl_adamw *a, owl_writer *w)
{
    const owl_adamw_options *o = &a->opts;
    owl__put_f64(w, o->beta1);
    owl__put_f64(w, o->beta2);
    owl__put_f64(w, o->eps);
    owl__put_f64(w, o->weight_decay);
    owl__put_u32(w, (uint32_t)o->semantics);
    owl__put_u32(w, (uint32_t)o->moment_dtype);
    owl__put_u32(w, (uint32_t)o->on_refresh);
    owl__put_u32(w, (uint32_t)o->rounding);
    owl__put_u64(w, o->seed);
    owl__put_u64(w, (uint64_t)a->rows);
    owl__put_u64(w, (uint64_t)a->cols);
    owl__put_u64(w, a->step_count);
    if (!on_device(a)) {
        owl__put_u64(w, a->bias_step);
        put_moment_host(a, w, a->m);
        put_moment_host(a, w, a->v);
        return OWL_OK;
    }
#ifdef OWL_HAVE_CUDA
    /* Untested (no GPU where this was written). */
    uint64_t bias_step = a->bias_step;
    if (w->buf != NULL && a->dev_skipped != NULL) {
        unsigned long long skipped = 0;
        owl_status st = owl__cuda_download(a->ctx, &skipped, a->dev_skipped,
                                           sizeof skipped);
        if (st != OWL_OK)
            return st;
        bias_step = skipped <= bias_step ? bias_step - skipped : 0;
    }
    owl__put_u64(w, bias_step);
    owl_status st = put_moment_device(a, w, a->m);
    if (st == OWL_OK)
        st = put_moment_device(a, w, a->v);
    return st;
#else
    return OWL_ERR_INTERNAL; /* a CUDA context cannot exist in this build */
#endif
}

/* The payload's scalar fields, read in order. */
typedef struct adamw_fields {
    double beta1, beta2, eps, weight_decay;
    uint32_t semantics, moment_dtype, on_refresh, rounding;
    uint64_t seed, rows, cols, step_count, bias_step;
    const uint8_t *m, *v; /* little-endian, in the moment dtype */
} adamw_fields;

static owl_status parse(owl_reader *r, adamw_fields *f)
{
    owl_status st;
    if ((st = owl__get_f64(r, &f->beta1, "adamw beta1")) != OWL_OK ||
        (st = owl__get_f64(r, &f->beta2, "adamw beta2")) != OWL_OK ||
        (st = owl__get_f64(r, &f->eps, "adamw eps")) != OWL_OK ||
        (st = owl__get_f64(r, &f->weight_decay, "adamw weight_decay")) !=
            OWL_OK ||
        (st = owl__get_u32(r, &f->semantics, "adamw semantics")) != OWL_OK ||
        (st = owl__get_u32(r, &f->moment_dtype, "adamw moment_dtype")) !=
            OWL_OK ||
        (st = owl__get_u32(r, &f->on_refresh, "adamw on_refresh")) !=
            OWL_OK ||
        (st = owl__get_u32(r, &f->rounding, "adamw rounding")) != OWL_OK ||
        (st = owl__get_u64(r, &f->seed, "adamw seed")) != OWL_OK ||
        (st = owl__get_u64(r, &f->rows, "adamw rows")) != OWL_OK ||
        (st = owl__get_u64(r, &f->cols, "adamw cols")) != OWL_OK ||
        (st = owl__get_u64(r, &f->step_count, "adamw step_count")) !=
            OWL_OK ||
        (st = owl__get_u64(r, &f->bias_step, "adamw bias_step")) != OWL_OK)
        return st;
    return OWL_OK;
}

/* The moments, after parse and the shape check (their length follows from
 * the live handle). */
static owl_status parse_moments(const owl_adamw *a, owl_reader *r,
                                adamw_fields *f)
{
    const uint64_t bytes = moment_count(a) * elem_bytes(a);
    owl_status st = owl__get_bytes(r, bytes, &f->m, "adamw m");
    if (st == OWL_OK)
        st = owl__get_bytes(r, bytes, &f->v, "adamw v");
    return st;
}

static owl_status match_f64(const owl_adamw *a, const char *field,
                            double saved, double live)
{
    uint64_t sb, lb;
    memcpy(&sb, &saved, sizeof sb);
    memcpy(&lb, &live, sizeof lb);
    if (sb == lb)
        return OWL_OK;
    return owl__fail(a->ctx, OWL_ERR_MISMATCH,
                     "the AdamW state has %s %.17g; this handle has %.17g",
                     field, saved, live);
}

static owl_status match_u64(const owl_adamw *a, const char *field,
                            uint64_t saved, uint64_t live)
{
    if (saved == live)
        return OWL_OK;
    return owl__fail(a->ctx, OWL_ERR_MISMATCH,
                     "the AdamW state has %s %llu; this handle has %llu",
                     field, (unsigned long long)saved,
                     (unsigned long long)live);
}

/* NaN anywhere, or a negative second moment, cannot come from AdamW
 * updates with finite gradients (those are the only ones accepted); Inf
 * can (overflow), so it is allowed. Works on the stored bits: f32, or the
 * top half of one (bf16). */
static owl_status check_moment(const owl_adamw *a, const uint8_t *x,
                               const char *name, bool nonnegative)
{
    const uint64_t n = moment_count(a);
    const bool f32 = elem_bytes(a) == 4;
    for (uint64_t i = 0; i < n; i++) {
        const uint32_t bits =
            f32 ? owl__le_u32(x + 4 * i) : (uint32_t)owl__le_u16(x + 2 * i)
                                               << 16;
        const uint32_t mag = bits & 0x7FFFFFFFu;
        const bool nan = mag > 0x7F800000u;
        const bool negative = (bits >> 31) != 0 && mag != 0;
        if (nan || (nonnegative && negative))
            return owl__fail(a->ctx, OWL_ERR_CORRUPT,
                             "AdamW state is corrupt: %s[%llu] is %s", name,
                             (unsigned long long)i,
                             nan ? "NaN" : "negative");
    }
    return OWL_OK;
}

owl_status owl__adamw_state_check(const owl_adamw *a, owl_reader *r)
{
    const owl_adamw_options *o = &a->opts;
    adamw_fields f;
    owl_status st = parse(r, &f);
    if (st != OWL_OK)
        return st;
    if ((st = match_f64(a, "beta1", f.beta1, o->beta1)) != OWL_OK ||
        (st = match_f64(a, "beta2", f.beta2, o->beta2)) != OWL_OK ||
        (st = match_f64(a, "eps", f.eps, o->eps)) != OWL_OK ||
        (st = match_f64(a, "weight_decay", f.weight_decay,
                        o->weight_decay)) != OWL_OK ||
        (st = match_u64(a, "semantics", f.semantics,
                        (uint32_t)o->semantics)) != OWL_OK ||
        (st = match_u64(a, "moment_dtype", f.moment_dtype,
                        (uint32_t)o->moment_dtype)) != OWL_OK ||
        (st = match_u64(a, "on_refresh", f.on_refresh,
                        (uint32_t)o->on_refresh)) != OWL_OK ||
        (st = match_u64(a, "rounding", f.rounding, (uint32_t)o->rounding)) !=
            OWL_OK ||
        (st = match_u64(a, "seed", f.seed, o->seed)) != OWL_OK ||
        (st = match_u64(a, "rows", f.rows, (uint64_t)a->rows)) != OWL_OK ||
        (st = match_u64(a, "cols", f.cols, (uint64_t)a->cols)) != OWL_OK)
        return st;
    /* The moments are zeroed with the bias counter, never the step count,
     * so t never exceeds the updates taken. */
    if (f.bias_step > f.step_count)
        return owl__fail(a->ctx, OWL_ERR_CORRUPT,
                         "AdamW state is corrupt: bias_step %llu exceeds "
                         "step_count %llu",
                         (unsigned long long)f.bias_step,
                         (unsigned long long)f.step_count);
    if ((st = parse_moments(a, r, &f)) != OWL_OK ||
        (st = check_moment(a, f.m, "m", false)) != OWL_OK ||
        (st = check_moment(a, f.v, "v", true)) != OWL_OK)
        return st;
    return OWL_OK;
}

static void copy_moment_host(const owl_adamw *a, void *dst, const uint8_t *x)
{
    const uint64_t n = moment_count(a);
    memcpy(dst, x, (size_t)(n * elem_bytes(a)));
    if (elem_bytes(a) == 4)
        owl__le_fix_32(dst, n);
    else
        owl__le_fix_16(dst, n);
}

owl_status owl__adamw_state_apply(owl_adamw *a, owl_reader *r)
{
    adamw_fields f;
    /* Checked already: cannot fail. */
    (void)parse(r, &f);
    (void)parse_moments(a, r, &f);
    if (!on_device(a)) {
        copy_moment_host(a, a->m, f.m);
        copy_moment_host(a, a->v, f.v);
        a->step_count = f.step_count;
        a->bias_step = f.bias_step;
        return OWL_OK;
    }
#ifdef OWL_HAVE_CUDA
    /* Untested (no GPU where this was written). The blob is little-endian,
     * the host's order on every CUDA platform, so it is uploaded as is. A
     * failed upload can leave the device moments partly overwritten; the
     * counters then keep their old values. */
    const size_t bytes = (size_t)(moment_count(a) * elem_bytes(a));
    owl_status st = owl__cuda_upload(a->ctx, a->m, f.m, bytes);
    if (st == OWL_OK)
        st = owl__cuda_upload(a->ctx, a->v, f.v, bytes);
    if (st == OWL_OK && a->dev_skipped != NULL) {
        const unsigned long long zero = 0;
        st = owl__cuda_upload(a->ctx, a->dev_skipped, &zero, sizeof zero);
    }
    if (st != OWL_OK)
        return st;
    a->step_count = f.step_count;
    a->bias_step = f.bias_step;
    return OWL_OK;
#else
    return OWL_ERR_INTERNAL;
#endif
}

/* ---- public entry points ------------------------------------------------ */

static owl_status write_fn(const void *h, owl_writer *w)
{
    return owl__adamw_state_write(h, w);
}
static owl_status check_fn(const void *h, owl_reader *r)
{
    return owl__adamw_state_check(h, r);
}
static owl_status apply_fn(void *h, owl_reader *r)
{
    return owl__adamw_state_apply(h, r);
}

owl_status owl_adamw_state_size(const owl_adamw *adam, uint64_t *bytes)
{
    if (adam == NULL)
        return OWL_ERR_NULL_POINTER;
    owl__clear_error(adam->ctx);
    OWL_REQUIRE_PTR(adam->ctx, bytes);
    return owl__state_measure(OWL_STATE_ADAMW, write_fn, adam, bytes);
}

owl_status owl_adamw_save(const owl_adamw *adam, void *buf, uint64_t capacity,
                          uint64_t *written)
{
    if (adam == NULL)
        return OWL_ERR_NULL_POINTER;
    owl__clear_error(adam->ctx);
    OWL_REQUIRE_PTR(adam->ctx, buf);
    OWL_REQUIRE_PTR(adam->ctx, written);
    return owl__state_save(adam->ctx, OWL_STATE_ADAMW, write_fn, adam, buf,
                           capacity, written);
}

owl_status owl_adamw_load(owl_adamw *adam, const void *buf, uint64_t size)
{
    if (adam == NULL)
        return OWL_ERR_NULL_POINTER;
    owl__clear_error(adam->ctx);
    OWL_REQUIRE_PTR(adam->ctx, buf);
    return owl__state_load(adam->ctx, OWL_STATE_ADAMW, check_fn, apply_fn,
                           adam, buf, size);
}

owl_status owl_adamw_save_file(const owl_adamw *adam, const char *path)
{
    if (adam == NULL)
        return OWL_ERR_NULL_POINTER;
    owl__clear_error(adam->ctx);
    OWL_REQUIRE_PTR(adam->ctx, path);
    return owl__state_save_file(adam->ctx, OWL_STATE_ADAMW, write_fn, adam,
                                path);
}

owl_status owl_adamw_load_file(owl_adamw *adam, const char *path)
{
    if (adam == NULL)
        return OWL_ERR_NULL_POINTER;
    owl__clear_error(adam->ctx);
    OWL_REQUIRE_PTR(adam->ctx, path);
    /* The state's size is fixed by the shape and dtype, which must match. */
    uint64_t max_bytes = 0;
    owl_status st =
        owl__state_measure(OWL_STATE_ADAMW, write_fn, adam, &max_bytes);
    if (st != OWL_OK)
        return st;
    return owl__state_load_file(adam->ctx, OWL_STATE_ADAMW, check_fn,
                                apply_fn, adam, path, max_bytes);
}
