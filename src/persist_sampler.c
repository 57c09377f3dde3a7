/* Saving and loading a layer sampler's configuration (spec section 6).
 *
 * Payload (little-endian):
 *   u64 num_layers, u64 gamma, u64 period, u64 seed, u32 law,
 *   f64 p[num_layers]   (the normalised weights w_l / sum(w))
 *
 * p is stored rather than the caller's raw weights: the handle keeps only
 * p, and installing p verbatim (instead of normalising it again) keeps the
 * active sets bit-identical after a load. pi and the systematic tables are
 * derived from p and gamma, so they are rebuilt, not stored. */
#include "persist.h"
#include "sampler_internal.h"

#include <float.h>
#include <math.h>
#include <string.h>

owl_status owl__sampler_state_write(const owl_sampler *s, owl_writer *w)
{
    owl__put_u64(w, s->num_layers);
    owl__put_u64(w, s->gamma);
    owl__put_u64(w, s->period);
    owl__put_u64(w, s->seed);
    owl__put_u32(w, (uint32_t)s->law);
    for (uint64_t l = 0; l < s->num_layers; l++)
        owl__put_f64(w, s->p[l]);
    return OWL_OK;
}

static owl_status corrupt(const owl_sampler *s, const char *what,
                          unsigned long long value, const char *need)
{
    return owl__fail(s->ctx, OWL_ERR_CORRUPT,
                     "sampler state is corrupt: %s is %llu; %s", what, value,
                     need);
}

owl_status owl__sampler_state_check(const owl_sampler *s, owl_reader *r)
{
    uint64_t L, gamma, period, seed;
    uint32_t law;
    owl_status st;
    if ((st = owl__get_u64(r, &L, "sampler num_layers")) != OWL_OK ||
        (st = owl__get_u64(r, &gamma, "sampler gamma")) != OWL_OK ||
        (st = owl__get_u64(r, &period, "sampler period")) != OWL_OK ||
        (st = owl__get_u64(r, &seed, "sampler seed")) != OWL_OK ||
        (st = owl__get_u32(r, &law, "sampler law")) != OWL_OK)
        return st;
    (void)seed; /* every seed is valid */
    if (L != s->num_layers)
        return owl__fail(s->ctx, OWL_ERR_MISMATCH,
                         "the sampler state is for num_layers %llu; this "
                         "sampler has %llu",
                         (unsigned long long)L,
                         (unsigned long long)s->num_layers);
    if (gamma < 1 || gamma > L)
        return corrupt(s, "gamma", (unsigned long long)gamma,
                       "need 1 <= gamma <= num_layers");
    if (period < 1)
        return corrupt(s, "period", 0, "need period >= 1");
    if (law > (uint32_t)OWL_DRAW_BERNOULLI)
        return corrupt(s, "law", law, "expected 0, 1 or 2");

    /* p: a probability vector with at least gamma positive entries, as
     * create would have made it (the draws rely on both). */
    const uint8_t *bytes;
    if ((st = owl__get_bytes(r, 8 * L, &bytes, "sampler p")) != OWL_OK)
        return st;
    uint64_t positive = 0;
    double sum = 0;
    for (uint64_t l = 0; l < L; l++) {
        const uint64_t bits = owl__le_u64(bytes + 8 * l);
        double p;
        memcpy(&p, &bits, sizeof p);
        if (!isfinite(p) || p < 0 || p > 1)
            return owl__fail(s->ctx, OWL_ERR_CORRUPT,
                             "sampler state is corrupt: p[%llu] is %g; "
                             "need 0 <= p <= 1",
                             (unsigned long long)l, p);
        positive += p > 0;
        sum += p;
    }
    if (positive < gamma)
        return owl__fail(s->ctx, OWL_ERR_CORRUPT,
                         "sampler state is corrupt: %llu of the p are > 0, "
                         "fewer than gamma (%llu)",
                         (unsigned long long)positive,
                         (unsigned long long)gamma);
    /* Normalised p sum to 1 within rounding: each p_l is off by at most
     * 2 ulps (two divisions) and the sum adds at most L - 1 more, so a
     * bound of 4 L eps admits every state create made, for any L, while
     * a p that is not a probability vector is still refused. */
    const double tolerance = fmax(1e-9, 4.0 * (double)L * DBL_EPSILON);
    if (!(fabs(sum - 1.0) <= tolerance))
        return owl__fail(s->ctx, OWL_ERR_CORRUPT,
                         "sampler state is corrupt: the p sum to %.17g, "
                         "not 1",
                         sum);
    return OWL_OK;
}

owl_status owl__sampler_state_apply(owl_sampler *s, owl_reader *r)
{
    uint32_t law = 0;
    /* Checked already: these reads cannot fail. */
    (void)owl__get_u64(r, &s->num_layers, "sampler num_layers");
    (void)owl__get_u64(r, &s->gamma, "sampler gamma");
    (void)owl__get_u64(r, &s->period, "sampler period");
    (void)owl__get_u64(r, &s->seed, "sampler seed");
    (void)owl__get_u32(r, &law, "sampler law");
    s->law = (owl_draw_law)law;
    for (uint64_t l = 0; l < s->num_layers; l++)
        (void)owl__get_f64(r, &s->p[l], "sampler p");
    owl__sampler_rebuild(s); /* reuses the arrays sized for num_layers */
    return OWL_OK;
}

/* ---- public entry points ------------------------------------------------ */

static owl_status write_fn(const void *h, owl_writer *w)
{
    return owl__sampler_state_write(h, w);
}
static owl_status check_fn(const void *h, owl_reader *r)
{
    return owl__sampler_state_check(h, r);
}
static owl_status apply_fn(void *h, owl_reader *r)
{
    return owl__sampler_state_apply(h, r);
}

owl_status owl_sampler_state_size(const owl_sampler *sampler, uint64_t *bytes)
{
    if (sampler == NULL)
        return OWL_ERR_NULL_POINTER;
    owl__clear_error(sampler->ctx);
    OWL_REQUIRE_PTR(sampler->ctx, bytes);
    return owl__state_measure(OWL_STATE_SAMPLER, write_fn, sampler, bytes);
}

owl_status owl_sampler_save(const owl_sampler *sampler, void *buf,
                            uint64_t capacity, uint64_t *written)
{
    if (sampler == NULL)
        return OWL_ERR_NULL_POINTER;
    owl__clear_error(sampler->ctx);
    OWL_REQUIRE_PTR(sampler->ctx, buf);
    OWL_REQUIRE_PTR(sampler->ctx, written);
    return owl__state_save(sampler->ctx, OWL_STATE_SAMPLER, write_fn, sampler,
                           buf, capacity, written);
}

owl_status owl_sampler_load(owl_sampler *sampler, const void *buf,
                            uint64_t size)
{
    if (sampler == NULL)
        return OWL_ERR_NULL_POINTER;
    owl__clear_error(sampler->ctx);
    OWL_REQUIRE_PTR(sampler->ctx, buf);
    return owl__state_load(sampler->ctx, OWL_STATE_SAMPLER, check_fn,
                           apply_fn, sampler, buf, size);
}

owl_status owl_sampler_save_file(const owl_sampler *sampler, const char *path)
{
    if (sampler == NULL)
        return OWL_ERR_NULL_POINTER;
    owl__clear_error(sampler->ctx);
    OWL_REQUIRE_PTR(sampler->ctx, path);
    return owl__state_save_file(sampler->ctx, OWL_STATE_SAMPLER, write_fn,
                                sampler, path);
}

owl_status owl_sampler_load_file(owl_sampler *sampler, const char *path)
{
    if (sampler == NULL)
        return OWL_ERR_NULL_POINTER;
    owl__clear_error(sampler->ctx);
    OWL_REQUIRE_PTR(sampler->ctx, path);
    /* The state's size depends only on num_layers, which must match. */
    uint64_t max_bytes = 0;
    owl_status st = owl__state_measure(OWL_STATE_SAMPLER, write_fn, sampler,
                                       &max_bytes);
    if (st != OWL_OK)
        return st;
    return owl__state_load_file(sampler->ctx, OWL_STATE_SAMPLER, check_fn,
                                apply_fn, sampler, path, max_bytes);
}
