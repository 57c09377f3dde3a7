/* Saving and loading a GaLore projector (spec section 6).
 *
 * Payload (little-endian):
 *   u64 rows, u64 cols, u64 rank, u64 update_gap, f64 scale,
 *   u32 proj_type, u32 svd_method, u64 oversample, u64 power_iters,
 *   u64 seed                      (the options: must equal the live ones)
 *   u8 has_basis, u8 stale, u64 refresh_count,
 *   f32 basis[rank * d]           (only when has_basis; d = m when the
 *                                  projection is on the left, else n;
 *                                  vectors as rows, as the handle keeps it)
 *
 * The low-rank scratch and the context's workspace are not state. On a
 * CUDA context the basis lives in device memory and travels through
 * owl__cuda_download / owl__cuda_upload. */
#include "galore_internal.h"
#include "persist.h"

#ifdef OWL_HAVE_CUDA
#include "cuda_internal.h"
#endif

#include <math.h>
#include <string.h>

static uint64_t basis_count(const owl_galore *p)
{
    return (uint64_t)p->r * (uint64_t)p->d;
}

static bool on_device(const owl_galore *p)
{
    return p->ctx->backend == OWL_BACKEND_CUDA;
}

owl_status owl__galore_state_write(const owl_galore *p, owl_writer *w)
{
    const owl_galore_options *o = &p->opts;
    owl__put_u64(w, o->rows);
    owl__put_u64(w, o->cols);
    owl__put_u64(w, o->rank);
    owl__put_u64(w, o->update_gap);
    owl__put_f64(w, o->scale);
    owl__put_u32(w, (uint32_t)o->proj_type);
    owl__put_u32(w, (uint32_t)o->svd_method);
    owl__put_u64(w, o->oversample);
    owl__put_u64(w, o->power_iters);
    owl__put_u64(w, o->seed);
    owl__put_u8(w, p->has_basis ? 1 : 0);
    owl__put_u8(w, p->stale ? 1 : 0);
    owl__put_u64(w, p->refresh_count);
    if (!p->has_basis)
        return OWL_OK;
    if (!on_device(p)) {
        owl__put_f32_array(w, p->basis, basis_count(p));
        return OWL_OK;
    }
#ifdef OWL_HAVE_CUDA
    /* Untested (no GPU where this was written): download straight into
     * the blob, then store little-endian. */
    const uint64_t bytes = basis_count(p) * sizeof(float);
    uint8_t *at = owl__put_reserve(w, bytes);
    if (at != NULL) {
        owl_status st = owl__cuda_download(p->ctx, at, p->basis, (size_t)bytes);
        if (st != OWL_OK)
            return st;
        owl__le_fix_32(at, basis_count(p));
    }
    return OWL_OK;
#else
    return OWL_ERR_INTERNAL; /* a CUDA context cannot exist in this build */
#endif
}

/* The payload's fields, read in order; basis points into the blob. */
typedef struct galore_fields {
    uint64_t rows, cols, rank, gap, oversample, power_iters, seed, refreshes;
    double scale;
    uint32_t proj_type, svd_method;
    bool has_basis, stale;
    const uint8_t *basis; /* rank * d little-endian f32, or NULL */
} galore_fields;

static owl_status parse(owl_reader *r, galore_fields *f)
{
    owl_status st;
    f->basis = NULL;
    if ((st = owl__get_u64(r, &f->rows, "galore rows")) != OWL_OK ||
        (st = owl__get_u64(r, &f->cols, "galore cols")) != OWL_OK ||
        (st = owl__get_u64(r, &f->rank, "galore rank")) != OWL_OK ||
        (st = owl__get_u64(r, &f->gap, "galore update_gap")) != OWL_OK ||
        (st = owl__get_f64(r, &f->scale, "galore scale")) != OWL_OK ||
        (st = owl__get_u32(r, &f->proj_type, "galore proj_type")) != OWL_OK ||
        (st = owl__get_u32(r, &f->svd_method, "galore svd_method")) !=
            OWL_OK ||
        (st = owl__get_u64(r, &f->oversample, "galore oversample")) !=
            OWL_OK ||
        (st = owl__get_u64(r, &f->power_iters, "galore power_iters")) !=
            OWL_OK ||
        (st = owl__get_u64(r, &f->seed, "galore seed")) != OWL_OK ||
        (st = owl__get_bool(r, &f->has_basis, "galore has_basis")) !=
            OWL_OK ||
        (st = owl__get_bool(r, &f->stale, "galore stale")) != OWL_OK ||
        (st = owl__get_u64(r, &f->refreshes, "galore refresh_count")) !=
            OWL_OK)
        return st;
    return OWL_OK;
}

/* The basis, after parse: its length follows from the live shape, so the
 * check reads it only once the options matched (a state of another shape
 * is a mismatch, not a truncation). */
static owl_status parse_basis(const owl_galore *p, owl_reader *r,
                              galore_fields *f)
{
    if (!f->has_basis)
        return OWL_OK;
    return owl__get_bytes(r, 4 * basis_count(p), &f->basis, "galore basis");
}

/* One option field against the live handle's. */
static owl_status match_u64(const owl_galore *p, const char *field,
                            uint64_t saved, uint64_t live)
{
    if (saved == live)
        return OWL_OK;
    return owl__fail(p->ctx, OWL_ERR_MISMATCH,
                     "the projector state has %s %llu; this projector has "
                     "%llu",
                     field, (unsigned long long)saved,
                     (unsigned long long)live);
}

owl_status owl__galore_state_check(const owl_galore *p, owl_reader *r)
{
    const owl_galore_options *o = &p->opts;
    galore_fields f;
    owl_status st = parse(r, &f);
    if (st != OWL_OK)
        return st;
    if ((st = match_u64(p, "rows", f.rows, o->rows)) != OWL_OK ||
        (st = match_u64(p, "cols", f.cols, o->cols)) != OWL_OK ||
        (st = match_u64(p, "rank", f.rank, o->rank)) != OWL_OK ||
        (st = match_u64(p, "update_gap", f.gap, o->update_gap)) != OWL_OK)
        return st;
    uint64_t scale_bits, live_bits;
    memcpy(&scale_bits, &f.scale, sizeof f.scale);
    memcpy(&live_bits, &o->scale, sizeof o->scale);
    if (scale_bits != live_bits)
        return owl__fail(p->ctx, OWL_ERR_MISMATCH,
                         "the projector state has scale %.17g; this "
                         "projector has %.17g",
                         f.scale, o->scale);
    if ((st = match_u64(p, "proj_type", f.proj_type,
                        (uint32_t)o->proj_type)) != OWL_OK ||
        (st = match_u64(p, "svd_method", f.svd_method,
                        (uint32_t)o->svd_method)) != OWL_OK ||
        (st = match_u64(p, "oversample", f.oversample, o->oversample)) !=
            OWL_OK ||
        (st = match_u64(p, "power_iters", f.power_iters, o->power_iters)) !=
            OWL_OK ||
        (st = match_u64(p, "seed", f.seed, o->seed)) != OWL_OK)
        return st;
    /* Each subspace computation sets has_basis and counts itself. */
    if (f.has_basis && f.refreshes == 0)
        return owl__fail(p->ctx, OWL_ERR_CORRUPT,
                         "projector state is corrupt: it has a basis but a "
                         "refresh count of 0");
    if ((st = parse_basis(p, r, &f)) != OWL_OK)
        return st;
    /* Singular vectors are finite: a NaN or Inf would poison every
     * later projection. */
    const uint64_t count = f.has_basis ? basis_count(p) : 0;
    for (uint64_t i = 0; i < count; i++) {
        const uint32_t bits = owl__le_u32(f.basis + 4 * i);
        if ((bits & 0x7F800000u) == 0x7F800000u)
            return owl__fail(p->ctx, OWL_ERR_CORRUPT,
                             "projector state is corrupt: basis entry %llu "
                             "is not finite",
                             (unsigned long long)i);
    }
    return OWL_OK;
}

owl_status owl__galore_state_apply(owl_galore *p, owl_reader *r)
{
    galore_fields f;
    /* Checked already: cannot fail. */
    (void)parse(r, &f);
    (void)parse_basis(p, r, &f);
    p->has_basis = f.has_basis;
    p->stale = f.stale;
    p->refresh_count = f.refreshes;
    if (!f.has_basis)
        return OWL_OK; /* the old basis is unused until the next refresh */
    const uint64_t count = basis_count(p);
    if (!on_device(p)) {
        memcpy(p->basis, f.basis, (size_t)(4 * count));
        owl__le_fix_32(p->basis, count);
        return OWL_OK;
    }
#ifdef OWL_HAVE_CUDA
    /* Untested (no GPU where this was written). The blob's floats are
     * little-endian, the host's order on every CUDA platform. */
    return owl__cuda_upload(p->ctx, p->basis, f.basis, (size_t)(4 * count));
#else
    return OWL_ERR_INTERNAL;
#endif
}

/* ---- public entry points ------------------------------------------------ */

static owl_status write_fn(const void *h, owl_writer *w)
{
    return owl__galore_state_write(h, w);
}
static owl_status check_fn(const void *h, owl_reader *r)
{
    return owl__galore_state_check(h, r);
}
static owl_status apply_fn(void *h, owl_reader *r)
{
    return owl__galore_state_apply(h, r);
}

owl_status owl_galore_state_size(const owl_galore *proj, uint64_t *bytes)
{
    if (proj == NULL)
        return OWL_ERR_NULL_POINTER;
    owl__clear_error(proj->ctx);
    OWL_REQUIRE_PTR(proj->ctx, bytes);
    return owl__state_measure(OWL_STATE_GALORE, write_fn, proj, bytes);
}

owl_status owl_galore_save(const owl_galore *proj, void *buf,
                           uint64_t capacity, uint64_t *written)
{
    if (proj == NULL)
        return OWL_ERR_NULL_POINTER;
    owl__clear_error(proj->ctx);
    OWL_REQUIRE_PTR(proj->ctx, buf);
    OWL_REQUIRE_PTR(proj->ctx, written);
    return owl__state_save(proj->ctx, OWL_STATE_GALORE, write_fn, proj, buf,
                           capacity, written);
}

owl_status owl_galore_load(owl_galore *proj, const void *buf, uint64_t size)
{
    if (proj == NULL)
        return OWL_ERR_NULL_POINTER;
    owl__clear_error(proj->ctx);
    OWL_REQUIRE_PTR(proj->ctx, buf);
    return owl__state_load(proj->ctx, OWL_STATE_GALORE, check_fn, apply_fn,
                           proj, buf, size);
}

owl_status owl_galore_save_file(const owl_galore *proj, const char *path)
{
    if (proj == NULL)
        return OWL_ERR_NULL_POINTER;
    owl__clear_error(proj->ctx);
    OWL_REQUIRE_PTR(proj->ctx, path);
    return owl__state_save_file(proj->ctx, OWL_STATE_GALORE, write_fn, proj,
                                path);
}

owl_status owl_galore_load_file(owl_galore *proj, const char *path)
{
    if (proj == NULL)
        return OWL_ERR_NULL_POINTER;
    owl__clear_error(proj->ctx);
    OWL_REQUIRE_PTR(proj->ctx, path);
    /* The largest state this projector takes: its own, with a basis. */
    uint64_t max_bytes = 0;
    owl_status st =
        owl__state_measure(OWL_STATE_GALORE, write_fn, proj, &max_bytes);
    if (st != OWL_OK)
        return st;
    if (!proj->has_basis)
        max_bytes += 4 * basis_count(proj);
    return owl__state_load_file(proj->ctx, OWL_STATE_GALORE, check_fn,
                                apply_fn, proj, path, max_bytes);
}
