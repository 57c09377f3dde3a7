/* State persistence (spec section 6): the CRC-32C against the published
 * check values, save/load/continue round trips that must match an
 * uninterrupted run bit for bit, every truncation and every single-bit
 * flip of small states, mismatched states, short buffers, and atomic file
 * writes.
 *
 * This program also compiles src/state.c (and src/error.c, which it needs)
 * to call the library's internal CRC-32C directly. */
#include "common/state_ops.h"
#include "common/testutil.h"

#include "../src/state.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ------------------------------------------------------------------ */
/* An independent CRC-32C: bit by bit from the polynomial's definition  */
/* ------------------------------------------------------------------ */

static uint32_t ref_crc32c(const uint8_t *p, size_t n)
{
    uint32_t crc = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) {
        crc ^= p[i];
        for (int k = 0; k < 8; k++)
            crc = (crc & 1u) ? (crc >> 1) ^ 0x82F63B78u : crc >> 1;
    }
    return ~crc;
}

static void test_crc32c_published_values(void **state)
{
    (void)state;
    const char *check = "123456789";
    assert_int_equal(owl__crc32c(0, check, 9), 0xE3069283u);
    assert_int_equal(ref_crc32c((const uint8_t *)check, 9), 0xE3069283u);

    /* RFC 3720 (iSCSI), appendix B.4. */
    uint8_t zeros[32], ones[32], inc[32], dec[32];
    for (int i = 0; i < 32; i++) {
        zeros[i] = 0;
        ones[i] = 0xFF;
        inc[i] = (uint8_t)i;
        dec[i] = (uint8_t)(31 - i);
    }
    assert_int_equal(owl__crc32c(0, zeros, 32), 0x8A9136AAu);
    assert_int_equal(owl__crc32c(0, ones, 32), 0x62A8AB43u);
    assert_int_equal(owl__crc32c(0, inc, 32), 0x46DD794Eu);
    assert_int_equal(owl__crc32c(0, dec, 32), 0x113FDB5Cu);
    assert_int_equal(owl__crc32c(0, NULL, 0), 0u);

    /* Continuing over a split gives the CRC of the whole, and the table
     * agrees with the bitwise definition on arbitrary bytes. */
    uint8_t buf[1000];
    for (size_t i = 0; i < sizeof buf; i++)
        buf[i] = (uint8_t)(i * 131u + (i >> 3) * 7u);
    for (size_t split = 0; split <= sizeof buf; split += 111) {
        uint32_t c = owl__crc32c(0, buf, split);
        c = owl__crc32c(c, buf + split, sizeof buf - split);
        assert_int_equal(c, ref_crc32c(buf, sizeof buf));
    }
}

/* ------------------------------------------------------------------ */
/* Helpers                                                             */
/* ------------------------------------------------------------------ */

typedef struct blob {
    uint8_t *data;
    uint64_t size;
} blob;

static blob snapshot(owl_context *ctx, const state_ops *ops, const void *h)
{
    blob b = {NULL, 0};
    assert_owl_ok(ctx, ops->size(h, &b.size));
    b.data = malloc((size_t)b.size);
    assert_non_null(b.data);
    uint64_t written = 0;
    assert_owl_ok(ctx, ops->save(h, b.data, b.size, &written));
    assert_int_equal(written, b.size);
    /* The blob's trailing CRC is the independent CRC-32C of the rest. */
    uint32_t stored = owl__le_u32(b.data + b.size - 4);
    assert_int_equal(stored, ref_crc32c(b.data, (size_t)b.size - 4));
    return b;
}

static void assert_blob_equal(blob a, blob b)
{
    assert_int_equal(a.size, b.size);
    assert_memory_equal(a.data, b.data, (size_t)a.size);
}

/* Rewrites the CRC after a deliberate edit, so that only the edit is
 * judged. */
static void reseal(uint8_t *data, uint64_t size)
{
    owl__le_put_u32(data + size - 4, ref_crc32c(data, (size_t)size - 4));
}

static owl_sampler *make_sampler(owl_context *ctx, uint64_t L, uint64_t gamma,
                                 uint64_t period, uint64_t seed,
                                 owl_draw_law law, const double *weights)
{
    owl_sampler_options o;
    assert_owl_ok(ctx, owl_sampler_options_init(&o, sizeof o));
    o.num_layers = L;
    o.gamma = gamma;
    o.period = period;
    o.seed = seed;
    o.law = law;
    o.weight_mode = weights ? OWL_WEIGHTS_CUSTOM : OWL_WEIGHTS_UNIFORM;
    o.weights = weights;
    owl_sampler *s = NULL;
    assert_owl_ok(ctx, owl_sampler_create(ctx, &o, &s));
    return s;
}

static owl_galore *make_proj(owl_context *ctx, uint64_t m, uint64_t n,
                             uint64_t r, uint64_t gap, owl_svd_method method)
{
    owl_galore_options o;
    assert_owl_ok(ctx, owl_galore_options_init(&o, sizeof o));
    o.rows = m;
    o.cols = n;
    o.rank = r;
    o.update_gap = gap;
    o.scale = 0.25;
    o.svd_method = method;
    o.oversample = 2;
    o.power_iters = 1;
    o.seed = 11;
    owl_galore *p = NULL;
    assert_owl_ok(ctx, owl_galore_create(ctx, &o, &p));
    return p;
}

static owl_adamw_options adam_opts(owl_dtype moments)
{
    owl_adamw_options o;
    assert_int_equal(owl_adamw_options_init(&o, sizeof o), OWL_OK);
    o.weight_decay = 0.01;
    o.moment_dtype = moments;
    return o;
}

static owl_adamw *make_adam(owl_context *ctx, const owl_adamw_options *o,
                            uint64_t rows, uint64_t cols)
{
    owl_adamw *a = NULL;
    assert_owl_ok(ctx, owl_adamw_create(ctx, o, rows, cols, &a));
    return a;
}

/* The gradient of step k: a fixed function of k. */
static void grad_of_step(float *g, size_t n, uint64_t k)
{
    test_fill_normal(g, n, 1000 + k);
}

/* ------------------------------------------------------------------ */
/* Round trips                                                         */
/* ------------------------------------------------------------------ */

static void check_sampler_round_trip(owl_context *ctx, owl_draw_law law)
{
    enum { L = 12 };
    const double w[L] = {0.3, 0.01, 0.2, 0.05, 0.5, 0.0,
                         0.07, 0.11, 0.9, 0.02, 0.3, 0.13};
    owl_sampler *a = make_sampler(ctx, L, 3, 4, 77, law, w);
    /* Another configuration over the same layers: the load replaces it. */
    owl_sampler *b = make_sampler(ctx, L, 1, 9, 0,
                                  law == OWL_DRAW_SYSTEMATIC
                                      ? OWL_DRAW_BERNOULLI
                                      : OWL_DRAW_SYSTEMATIC,
                                  NULL);
    blob sa = snapshot(ctx, &sampler_ops, a);
    assert_owl_ok(ctx, owl_sampler_load(b, sa.data, sa.size));
    blob sb = snapshot(ctx, &sampler_ops, b);
    assert_blob_equal(sa, sb);

    double pa[L], pia[L], pb[L], pib[L];
    if (law != OWL_DRAW_REFERENCE) {
        assert_owl_ok(ctx, owl_sampler_probabilities(a, pa, pia));
        assert_owl_ok(ctx, owl_sampler_probabilities(b, pb, pib));
        assert_memory_equal(pa, pb, sizeof pa);
        assert_memory_equal(pia, pib, sizeof pia);
    }
    for (uint64_t step = 0; step < 600; step++) {
        uint8_t ma[L], mb[L];
        uint64_t na = 0, nb = 0;
        int32_t ra = 0, rb = 0;
        assert_owl_ok(ctx, owl_sampler_step(a, step, ma, &na, &ra));
        assert_owl_ok(ctx, owl_sampler_step(b, step, mb, &nb, &rb));
        assert_memory_equal(ma, mb, L);
        assert_int_equal(na, nb);
        assert_int_equal(ra, rb);
    }
    free(sa.data);
    free(sb.data);
    owl_sampler_free(a);
    owl_sampler_free(b);
}

static void test_sampler_round_trip(void **state)
{
    (void)state;
    owl_context *ctx = test_cpu_context(1);
    check_sampler_round_trip(ctx, OWL_DRAW_SYSTEMATIC);
    check_sampler_round_trip(ctx, OWL_DRAW_REFERENCE);
    check_sampler_round_trip(ctx, OWL_DRAW_BERNOULLI);
    owl_context_free(ctx);
}

/* One training run of a low-rank (lowrank = 1) or full-rank parameter:
 * steps [k0, k1) on W with the given handles. */
static void run_steps(owl_context *ctx, owl_adamw *a, owl_galore *p,
                      owl_tensor *W, float *g, uint64_t k0, uint64_t k1)
{
    owl_tensor G;
    owl_tensor_init(&G, g, OWL_DTYPE_F32, W->rows, W->cols);
    for (uint64_t k = k0; k < k1; k++) {
        grad_of_step(g, (size_t)(W->rows * W->cols), k);
        const double lr = 0.01 / (1.0 + (double)k);
        if (p != NULL)
            assert_owl_ok(ctx, owl_adamw_lowrank(a, p, W, &G, lr));
        else
            assert_owl_ok(ctx, owl_adamw_full(a, W, &G, lr));
        /* Exercise the stale flag's persistence: invalidate mid-run. */
        if (p != NULL && k == 6)
            assert_owl_ok(ctx, owl_galore_invalidate(p));
    }
}

static void check_training_round_trip(owl_context *ctx, bool lowrank,
                                      owl_svd_method method, owl_dtype moments,
                                      uint64_t save_at)
{
    enum { M = 24, N = 16, R = 4, GAP = 3, STEPS = 20 };
    float w_straight[M * N], w_resumed[M * N], g[M * N];
    test_fill_uniform(w_straight, M * N, 5);
    memcpy(w_resumed, w_straight, sizeof w_straight);
    owl_tensor W1, W2;
    owl_tensor_init(&W1, w_straight, OWL_DTYPE_F32, M, N);
    owl_tensor_init(&W2, w_resumed, OWL_DTYPE_F32, M, N);
    const owl_adamw_options ao = adam_opts(moments);

    uint64_t lr_rows = M, lr_cols = N;
    owl_galore *p1 = NULL, *p2 = NULL, *p3 = NULL;
    if (lowrank) {
        p1 = make_proj(ctx, M, N, R, GAP, method);
        p2 = make_proj(ctx, M, N, R, GAP, method);
        assert_owl_ok(ctx, owl_galore_lowrank_shape(p1, &lr_rows, &lr_cols));
    }
    owl_adamw *a1 = make_adam(ctx, &ao, lr_rows, lr_cols);
    owl_adamw *a2 = make_adam(ctx, &ao, lr_rows, lr_cols);

    /* Uninterrupted. */
    run_steps(ctx, a1, p1, &W1, g, 0, STEPS);

    /* Interrupted: save, drop the handles, load into fresh ones. */
    run_steps(ctx, a2, p2, &W2, g, 0, save_at);
    blob sa = snapshot(ctx, &adamw_ops, a2);
    blob sp = {NULL, 0};
    if (lowrank)
        sp = snapshot(ctx, &galore_ops, p2);
    owl_adamw_free(a2);
    owl_galore_free(p2);
    owl_adamw *a3 = make_adam(ctx, &ao, lr_rows, lr_cols);
    assert_owl_ok(ctx, owl_adamw_load(a3, sa.data, sa.size));
    if (lowrank) {
        p3 = make_proj(ctx, M, N, R, GAP, method);
        assert_owl_ok(ctx, owl_galore_load(p3, sp.data, sp.size));
    }
    run_steps(ctx, a3, p3, &W2, g, save_at, STEPS);

    assert_memory_equal(w_straight, w_resumed, sizeof w_straight);
    assert_int_equal(owl_adamw_step_count(a1), owl_adamw_step_count(a3));
    assert_int_equal(owl_adamw_bias_step(a1), owl_adamw_bias_step(a3));
    blob s1 = snapshot(ctx, &adamw_ops, a1), s3 = snapshot(ctx, &adamw_ops, a3);
    assert_blob_equal(s1, s3);
    free(s1.data);
    free(s3.data);
    if (lowrank) {
        assert_int_equal(owl_galore_refresh_count(p1),
                         owl_galore_refresh_count(p3));
        s1 = snapshot(ctx, &galore_ops, p1);
        s3 = snapshot(ctx, &galore_ops, p3);
        assert_blob_equal(s1, s3);
        free(s1.data);
        free(s3.data);
    }
    free(sa.data);
    free(sp.data);
    owl_adamw_free(a1);
    owl_adamw_free(a3);
    owl_galore_free(p1);
    owl_galore_free(p3);
}

static void test_training_round_trip(void **state)
{
    (void)state;
    owl_context *ctx = test_cpu_context(1);
    /* Save points off and on the refresh schedule (T = 3), after the
     * invalidation after step 6 (stale pending at 7), and before anything. */
    const uint64_t points[] = {0, 4, 7, 10, 12};
    for (size_t i = 0; i < sizeof points / sizeof points[0]; i++) {
        check_training_round_trip(ctx, true, OWL_SVD_EXACT, OWL_DTYPE_F32,
                                  points[i]);
        check_training_round_trip(ctx, true, OWL_SVD_RANDOMIZED,
                                  OWL_DTYPE_BF16, points[i]);
    }
    check_training_round_trip(ctx, false, OWL_SVD_EXACT, OWL_DTYPE_F32, 10);
    check_training_round_trip(ctx, false, OWL_SVD_EXACT, OWL_DTYPE_BF16, 10);
    owl_context_free(ctx);
}

/* ------------------------------------------------------------------ */
/* Damaged and mismatched states                                       */
/* ------------------------------------------------------------------ */

/* A pair of handles of one kind in different states: `source` provides
 * the blob, `target` must stay exactly as it was after each failed load. */
typedef struct damage_case {
    const char *name;
    const state_ops *ops;
    void *source, *target;
} damage_case;

/* Small handles with history, for the exhaustive damage tests. */
typedef struct small_handles {
    owl_sampler *s1, *s2;
    owl_galore *p1, *p2;
    owl_adamw *a1, *a2;
} small_handles;

static small_handles make_small(owl_context *ctx)
{
    small_handles h;
    const double w[5] = {0.1, 0.4, 0.2, 0.0, 0.3};
    h.s1 = make_sampler(ctx, 5, 2, 3, 9, OWL_DRAW_SYSTEMATIC, w);
    h.s2 = make_sampler(ctx, 5, 3, 7, 1, OWL_DRAW_REFERENCE, NULL);
    h.p1 = make_proj(ctx, 4, 3, 2, 2, OWL_SVD_EXACT);
    h.p2 = make_proj(ctx, 4, 3, 2, 2, OWL_SVD_EXACT);
    const owl_adamw_options ao = adam_opts(OWL_DTYPE_F32);
    h.a1 = make_adam(ctx, &ao, 4, 2);
    h.a2 = make_adam(ctx, &ao, 4, 2);
    float w1[12], w2[12], g[12];
    test_fill_uniform(w1, 12, 1);
    test_fill_uniform(w2, 12, 2);
    owl_tensor W1, W2;
    owl_tensor_init(&W1, w1, OWL_DTYPE_F32, 4, 3);
    owl_tensor_init(&W2, w2, OWL_DTYPE_F32, 4, 3);
    run_steps(ctx, h.a1, h.p1, &W1, g, 0, 3);
    run_steps(ctx, h.a2, h.p2, &W2, g, 40, 41);
    return h;
}

static void free_small(small_handles *h)
{
    owl_sampler_free(h->s1);
    owl_sampler_free(h->s2);
    owl_galore_free(h->p1);
    owl_galore_free(h->p2);
    owl_adamw_free(h->a1);
    owl_adamw_free(h->a2);
}

static void get_cases(small_handles *h, damage_case cases[3])
{
    cases[0] = (damage_case){"sampler", &sampler_ops, h->s1, h->s2};
    cases[1] = (damage_case){"galore", &galore_ops, h->p1, h->p2};
    cases[2] = (damage_case){"adamw", &adamw_ops, h->a1, h->a2};
}

/* The status a blob with byte i damaged must give: the frame's checks run
 * magic, version, kind, length, then the CRC. */
static owl_status expected_for_byte(uint64_t i)
{
    if (i >= 8 && i < 12)
        return OWL_ERR_VERSION;
    if (i >= 12 && i < 16)
        return OWL_ERR_MISMATCH;
    return OWL_ERR_CORRUPT;
}

static void test_every_truncation(void **state)
{
    (void)state;
    owl_context *ctx = test_cpu_context(1);
    small_handles h = make_small(ctx);
    damage_case cases[3];
    get_cases(&h, cases);
    for (int c = 0; c < 3; c++) {
        blob src = snapshot(ctx, cases[c].ops, cases[c].source);
        blob before = snapshot(ctx, cases[c].ops, cases[c].target);
        /* A fresh copy of exactly len bytes each time, so a read past the
         * end is caught by ASan in sanitizer builds. */
        for (uint64_t len = 0; len < src.size; len++) {
            uint8_t *cut = malloc(len > 0 ? (size_t)len : 1);
            memcpy(cut, src.data, (size_t)len);
            owl_status st = cases[c].ops->load(cases[c].target, cut, len);
            if (st != OWL_ERR_CORRUPT)
                fail_msg("%s truncated to %llu bytes: %s (%s)", cases[c].name,
                         (unsigned long long)len, owl_status_name(st),
                         owl_context_last_error(ctx));
            free(cut);
        }
        /* One byte too many is not a valid blob either. */
        uint8_t *longer = calloc(1, (size_t)src.size + 1);
        memcpy(longer, src.data, (size_t)src.size);
        assert_owl_status(ctx,
                          cases[c].ops->load(cases[c].target, longer,
                                             src.size + 1),
                          OWL_ERR_CORRUPT);
        free(longer);
        blob after = snapshot(ctx, cases[c].ops, cases[c].target);
        assert_blob_equal(before, after);
        free(after.data);
        free(before.data);
        free(src.data);
    }
    free_small(&h);
    owl_context_free(ctx);
}

static void test_every_bit_flip(void **state)
{
    (void)state;
    owl_context *ctx = test_cpu_context(1);
    small_handles h = make_small(ctx);
    damage_case cases[3];
    get_cases(&h, cases);
    for (int c = 0; c < 3; c++) {
        blob src = snapshot(ctx, cases[c].ops, cases[c].source);
        blob before = snapshot(ctx, cases[c].ops, cases[c].target);
        for (uint64_t i = 0; i < src.size; i++) {
            for (int bit = 0; bit < 8; bit++) {
                src.data[i] ^= (uint8_t)(1u << bit);
                owl_status st =
                    cases[c].ops->load(cases[c].target, src.data, src.size);
                src.data[i] ^= (uint8_t)(1u << bit);
                if (st != expected_for_byte(i))
                    fail_msg("%s with bit %d of byte %llu flipped: %s, "
                             "expected %s (%s)",
                             cases[c].name, bit, (unsigned long long)i,
                             owl_status_name(st),
                             owl_status_name(expected_for_byte(i)),
                             owl_context_last_error(ctx));
            }
        }
        blob after = snapshot(ctx, cases[c].ops, cases[c].target);
        assert_blob_equal(before, after);
        /* The intact blob still loads: the flips were the only cause. */
        assert_owl_ok(ctx,
                      cases[c].ops->load(cases[c].target, src.data, src.size));
        blob loaded = snapshot(ctx, cases[c].ops, cases[c].target);
        assert_blob_equal(src, loaded);
        free(loaded.data);
        free(after.data);
        free(before.data);
        free(src.data);
    }
    free_small(&h);
    owl_context_free(ctx);
}

static void test_version_and_kind(void **state)
{
    (void)state;
    owl_context *ctx = test_cpu_context(1);
    small_handles h = make_small(ctx);
    damage_case cases[3];
    get_cases(&h, cases);
    for (int c = 0; c < 3; c++) {
        blob src = snapshot(ctx, cases[c].ops, cases[c].source);
        blob before = snapshot(ctx, cases[c].ops, cases[c].target);
        assert_memory_equal(src.data, "OWLSTATE", 8);
        assert_int_equal(owl__le_u32(src.data + 8), 1);
        assert_int_equal(owl__le_u64(src.data + 16), src.size - 28);
        /* A future version, correctly sealed. */
        owl__le_put_u32(src.data + 8, 2);
        reseal(src.data, src.size);
        assert_owl_status(ctx,
                          cases[c].ops->load(cases[c].target, src.data,
                                             src.size),
                          OWL_ERR_VERSION);
        owl__le_put_u32(src.data + 8, 1);
        reseal(src.data, src.size);
        /* Each other kind's loader refuses it as a mismatch. */
        for (int o = 0; o < 3; o++) {
            if (o == c)
                continue;
            blob other_before = snapshot(ctx, cases[o].ops, cases[o].target);
            assert_owl_status(ctx,
                              cases[o].ops->load(cases[o].target, src.data,
                                                 src.size),
                              OWL_ERR_MISMATCH);
            blob other_after = snapshot(ctx, cases[o].ops, cases[o].target);
            assert_blob_equal(other_before, other_after);
            free(other_before.data);
            free(other_after.data);
        }
        blob after = snapshot(ctx, cases[c].ops, cases[c].target);
        assert_blob_equal(before, after);
        free(after.data);
        free(before.data);
        free(src.data);
    }
    free_small(&h);
    owl_context_free(ctx);
}

/* Loads blob into h, expecting `status` with `needle` in the message, and
 * checks that h's state did not change. */
static void expect_refused(owl_context *ctx, const state_ops *ops, void *h,
                           blob b, owl_status status, const char *needle)
{
    blob before = snapshot(ctx, ops, h);
    assert_owl_status(ctx, ops->load(h, b.data, b.size), status);
    if (strstr(owl_context_last_error(ctx), needle) == NULL)
        fail_msg("message '%s' does not name '%s'",
                 owl_context_last_error(ctx), needle);
    blob after = snapshot(ctx, ops, h);
    assert_blob_equal(before, after);
    free(before.data);
    free(after.data);
}

static void test_mismatched_shapes_and_options(void **state)
{
    (void)state;
    owl_context *ctx = test_cpu_context(1);
    small_handles h = make_small(ctx);

    /* Sampler over another number of layers. */
    owl_sampler *s7 = make_sampler(ctx, 7, 2, 3, 9, OWL_DRAW_SYSTEMATIC, NULL);
    blob b = snapshot(ctx, &sampler_ops, s7);
    expect_refused(ctx, &sampler_ops, h.s2, b, OWL_ERR_MISMATCH, "num_layers");
    free(b.data);
    owl_sampler_free(s7);

    /* Projectors differing in one option each. */
    struct {
        uint64_t m, n, r, gap;
        owl_svd_method method;
        const char *field;
    } pv[] = {
        {5, 3, 2, 2, OWL_SVD_EXACT, "rows"},
        {4, 4, 2, 2, OWL_SVD_EXACT, "cols"},
        {4, 3, 1, 2, OWL_SVD_EXACT, "rank"},
        {4, 3, 2, 5, OWL_SVD_EXACT, "update_gap"},
        {4, 3, 2, 2, OWL_SVD_RANDOMIZED, "svd_method"},
    };
    for (size_t i = 0; i < sizeof pv / sizeof pv[0]; i++) {
        owl_galore *q = make_proj(ctx, pv[i].m, pv[i].n, pv[i].r, pv[i].gap,
                                  pv[i].method);
        /* A basis too: its length differs with the shape. */
        float g[20];
        owl_tensor G;
        test_fill_normal(g, (size_t)(pv[i].m * pv[i].n), 3);
        owl_tensor_init(&G, g, OWL_DTYPE_F32, (int64_t)pv[i].m,
                        (int64_t)pv[i].n);
        assert_owl_ok(ctx, owl_galore_refresh(q, &G));
        b = snapshot(ctx, &galore_ops, q);
        expect_refused(ctx, &galore_ops, h.p2, b, OWL_ERR_MISMATCH,
                       pv[i].field);
        free(b.data);
        owl_galore_free(q);
    }

    /* AdamW: another shape, another moment dtype, other hyperparameters. */
    owl_adamw_options ao = adam_opts(OWL_DTYPE_F32);
    owl_adamw *a = make_adam(ctx, &ao, 2, 4);
    b = snapshot(ctx, &adamw_ops, a);
    expect_refused(ctx, &adamw_ops, h.a2, b, OWL_ERR_MISMATCH, "rows");
    free(b.data);
    owl_adamw_free(a);
    ao = adam_opts(OWL_DTYPE_BF16);
    a = make_adam(ctx, &ao, 4, 2);
    b = snapshot(ctx, &adamw_ops, a);
    expect_refused(ctx, &adamw_ops, h.a2, b, OWL_ERR_MISMATCH, "moment_dtype");
    free(b.data);
    owl_adamw_free(a);
    ao = adam_opts(OWL_DTYPE_F32);
    ao.beta1 = 0.8;
    a = make_adam(ctx, &ao, 4, 2);
    b = snapshot(ctx, &adamw_ops, a);
    expect_refused(ctx, &adamw_ops, h.a2, b, OWL_ERR_MISMATCH, "beta1");
    free(b.data);
    owl_adamw_free(a);
    ao = adam_opts(OWL_DTYPE_F32);
    ao.semantics = OWL_ADAMW_TORCH;
    a = make_adam(ctx, &ao, 4, 2);
    b = snapshot(ctx, &adamw_ops, a);
    expect_refused(ctx, &adamw_ops, h.a2, b, OWL_ERR_MISMATCH, "semantics");
    free(b.data);
    owl_adamw_free(a);
    free_small(&h);
    owl_context_free(ctx);
}

/* Correctly sealed blobs whose contents no handle could have produced. */
static void test_invalid_contents(void **state)
{
    (void)state;
    owl_context *ctx = test_cpu_context(1);
    small_handles h = make_small(ctx);
    const uint64_t P = OWL_STATE_HEADER_BYTES; /* payload offset */

    /* Sampler: gamma 0, gamma > L, period 0, law 3, a negative p, NaN p,
     * p not summing to 1. Fields: L@0 gamma@8 period@16 seed@24 law@32
     * p@36. */
    struct {
        uint64_t off;
        int width;
        uint64_t value;
        const char *needle;
    } sv[] = {
        {8, 8, 0, "gamma"},
        {8, 8, 6, "gamma"},
        {16, 8, 0, "period"},
        {32, 4, 3, "law"},
        {36, 8, 0xBFF0000000000000ull, "p[0]"},  /* -1.0 */
        {36, 8, 0x7FF8000000000000ull, "p[0]"},  /* NaN */
        {36, 8, 0x3FE0000000000000ull, "sum"},   /* 0.5 */
    };
    for (size_t i = 0; i < sizeof sv / sizeof sv[0]; i++) {
        blob b = snapshot(ctx, &sampler_ops, h.s1);
        if (sv[i].width == 8)
            owl__le_put_u64(b.data + P + sv[i].off, sv[i].value);
        else
            owl__le_put_u32(b.data + P + sv[i].off, (uint32_t)sv[i].value);
        reseal(b.data, b.size);
        expect_refused(ctx, &sampler_ops, h.s2, b, OWL_ERR_CORRUPT,
                       sv[i].needle);
        free(b.data);
    }

    /* Projector: a flag that is neither 0 nor 1, a basis with a NaN.
     * has_basis@72 stale@73 refresh_count@74 basis@82. */
    blob b = snapshot(ctx, &galore_ops, h.p1);
    b.data[P + 73] = 2;
    reseal(b.data, b.size);
    expect_refused(ctx, &galore_ops, h.p2, b, OWL_ERR_CORRUPT, "stale");
    free(b.data);
    b = snapshot(ctx, &galore_ops, h.p1);
    owl__le_put_u32(b.data + P + 82 + 4, 0x7FC00000u);
    reseal(b.data, b.size);
    expect_refused(ctx, &galore_ops, h.p2, b, OWL_ERR_CORRUPT, "basis");
    free(b.data);

    /* AdamW: bias_step > step_count, a negative v, a NaN m.
     * step_count@72 bias_step@80 m@88 v@88+32. */
    b = snapshot(ctx, &adamw_ops, h.a1);
    owl__le_put_u64(b.data + P + 80, 1000);
    reseal(b.data, b.size);
    expect_refused(ctx, &adamw_ops, h.a2, b, OWL_ERR_CORRUPT, "bias_step");
    free(b.data);
    b = snapshot(ctx, &adamw_ops, h.a1);
    owl__le_put_u32(b.data + P + 120 + 8, 0xBF800000u); /* v[2] = -1 */
    reseal(b.data, b.size);
    expect_refused(ctx, &adamw_ops, h.a2, b, OWL_ERR_CORRUPT, "v[2]");
    free(b.data);
    b = snapshot(ctx, &adamw_ops, h.a1);
    owl__le_put_u32(b.data + P + 88 + 4, 0x7FC00000u); /* m[1] = NaN */
    reseal(b.data, b.size);
    expect_refused(ctx, &adamw_ops, h.a2, b, OWL_ERR_CORRUPT, "m[1]");
    free(b.data);

    free_small(&h);
    owl_context_free(ctx);
}

static void test_buffer_too_small(void **state)
{
    (void)state;
    owl_context *ctx = test_cpu_context(1);
    small_handles h = make_small(ctx);
    damage_case cases[3];
    get_cases(&h, cases);
    for (int c = 0; c < 3; c++) {
        uint64_t need = 0;
        assert_owl_ok(ctx, cases[c].ops->size(cases[c].source, &need));
        uint8_t *buf = malloc((size_t)need + 64);
        const uint64_t caps[] = {0, 1, 23, 24, need / 2, need - 4, need - 1};
        for (size_t i = 0; i < sizeof caps / sizeof caps[0]; i++) {
            memset(buf, 0xA5, (size_t)need + 64);
            uint64_t written = 12345;
            assert_owl_status(ctx,
                              cases[c].ops->save(cases[c].source, buf, caps[i],
                                                 &written),
                              OWL_ERR_INVALID_ARGUMENT);
            assert_int_equal(written, 12345);
            for (uint64_t k = 0; k < need + 64; k++)
                if (buf[k] != 0xA5)
                    fail_msg("%s save with capacity %llu wrote byte %llu",
                             cases[c].name, (unsigned long long)caps[i],
                             (unsigned long long)k);
        }
        /* Exactly enough works and writes nothing beyond. */
        memset(buf, 0xA5, (size_t)need + 64);
        uint64_t written = 0;
        assert_owl_ok(ctx, cases[c].ops->save(cases[c].source, buf, need,
                                              &written));
        assert_int_equal(written, need);
        for (uint64_t k = need; k < need + 64; k++)
            assert_int_equal(buf[k], 0xA5);
        free(buf);
    }
    free_small(&h);
    owl_context_free(ctx);
}

static void test_null_arguments(void **state)
{
    (void)state;
    owl_context *ctx = test_cpu_context(1);
    small_handles h = make_small(ctx);
    uint8_t buf[8];
    uint64_t n;
    assert_int_equal(owl_sampler_state_size(NULL, &n), OWL_ERR_NULL_POINTER);
    assert_int_equal(owl_galore_save(NULL, buf, 8, &n), OWL_ERR_NULL_POINTER);
    assert_int_equal(owl_adamw_load(NULL, buf, 8), OWL_ERR_NULL_POINTER);
    assert_int_equal(owl_adamw_save_file(NULL, "x"), OWL_ERR_NULL_POINTER);
    assert_int_equal(owl_galore_load_file(NULL, "x"), OWL_ERR_NULL_POINTER);
    assert_owl_status(ctx, owl_sampler_state_size(h.s1, NULL),
                      OWL_ERR_NULL_POINTER);
    assert_owl_status(ctx, owl_galore_save(h.p1, NULL, 8, &n),
                      OWL_ERR_NULL_POINTER);
    assert_owl_status(ctx, owl_galore_save(h.p1, buf, 8, NULL),
                      OWL_ERR_NULL_POINTER);
    assert_owl_status(ctx, owl_adamw_load(h.a1, NULL, 8),
                      OWL_ERR_NULL_POINTER);
    assert_owl_status(ctx, owl_sampler_save_file(h.s1, NULL),
                      OWL_ERR_NULL_POINTER);
    assert_owl_status(ctx, owl_adamw_load_file(h.a1, NULL),
                      OWL_ERR_NULL_POINTER);
    free_small(&h);
    owl_context_free(ctx);
}

/* ------------------------------------------------------------------ */
/* Files                                                               */
/* ------------------------------------------------------------------ */

static char *make_temp_dir(void)
{
    const char *base = getenv("TMPDIR");
    char tmpl[512];
    snprintf(tmpl, sizeof tmpl, "%s/owl_state_XXXXXX",
             base && *base ? base : "/tmp");
    char *dir = mkdtemp(tmpl);
    assert_non_null(dir);
    return strdup(dir);
}

/* Entries of dir other than . and .. */
static int count_entries(const char *dir)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
            n++;
    closedir(d);
    return n;
}

static blob read_whole(const char *path)
{
    blob b = {NULL, 0};
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    b.size = (uint64_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    b.data = malloc((size_t)b.size + 1);
    assert_int_equal(fread(b.data, 1, (size_t)b.size, f), b.size);
    fclose(f);
    return b;
}

static void test_file_round_trip(void **state)
{
    (void)state;
    owl_context *ctx = test_cpu_context(1);
    small_handles h = make_small(ctx);
    char *dir = make_temp_dir();
    char path[600];

    snprintf(path, sizeof path, "%s/sampler.owl", dir);
    assert_owl_ok(ctx, owl_sampler_save_file(h.s1, path));
    assert_owl_ok(ctx, owl_sampler_load_file(h.s2, path));
    blob a = snapshot(ctx, &sampler_ops, h.s1);
    blob b = snapshot(ctx, &sampler_ops, h.s2);
    assert_blob_equal(a, b);
    blob f = read_whole(path);
    assert_blob_equal(a, f); /* the file is exactly the blob */
    free(a.data);
    free(b.data);
    free(f.data);

    snprintf(path, sizeof path, "%s/galore.owl", dir);
    assert_owl_ok(ctx, owl_galore_save_file(h.p1, path));
    assert_owl_ok(ctx, owl_galore_load_file(h.p2, path));
    a = snapshot(ctx, &galore_ops, h.p1);
    b = snapshot(ctx, &galore_ops, h.p2);
    assert_blob_equal(a, b);
    free(a.data);
    free(b.data);

    snprintf(path, sizeof path, "%s/adamw.owl", dir);
    assert_owl_ok(ctx, owl_adamw_save_file(h.a1, path));
    /* Saving again replaces the file. */
    assert_owl_ok(ctx, owl_adamw_save_file(h.a2, path));
    assert_owl_ok(ctx, owl_adamw_load_file(h.a1, path));
    a = snapshot(ctx, &adamw_ops, h.a1);
    b = snapshot(ctx, &adamw_ops, h.a2);
    assert_blob_equal(a, b);
    free(a.data);
    free(b.data);
    assert_int_equal(count_entries(dir), 3); /* no temporary left over */

    /* A new file is private to its owner; a replaced one keeps its mode. */
    struct stat sb;
    assert_int_equal(stat(path, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0600);
    assert_int_equal(chmod(path, 0640), 0);
    assert_owl_ok(ctx, owl_adamw_save_file(h.a2, path));
    assert_int_equal(stat(path, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0640);

    /* A larger AdamW state in the file: a mismatch, not read whole. */
    owl_adamw_options ao = adam_opts(OWL_DTYPE_F32);
    owl_adamw *big = make_adam(ctx, &ao, 40, 40);
    snprintf(path, sizeof path, "%s/big.owl", dir);
    assert_owl_ok(ctx, owl_adamw_save_file(big, path));
    blob before = snapshot(ctx, &adamw_ops, h.a1);
    assert_owl_status(ctx, owl_adamw_load_file(h.a1, path), OWL_ERR_MISMATCH);
    /* A sampler file given to an AdamW handle: the kind is wrong. */
    snprintf(path, sizeof path, "%s/sampler.owl", dir);
    assert_owl_status(ctx, owl_adamw_load_file(h.a1, path), OWL_ERR_MISMATCH);
    /* A missing file. */
    snprintf(path, sizeof path, "%s/missing.owl", dir);
    assert_owl_status(ctx, owl_adamw_load_file(h.a1, path), OWL_ERR_IO);
    assert_non_null(strstr(owl_context_last_error(ctx), "missing.owl"));
    assert_owl_status(ctx, owl_sampler_load_file(h.s2, path), OWL_ERR_IO);
    assert_owl_status(ctx, owl_galore_load_file(h.p2, path), OWL_ERR_IO);
    /* A directory is not a state file. */
    assert_owl_status(ctx, owl_adamw_load_file(h.a1, dir), OWL_ERR_IO);
    blob after = snapshot(ctx, &adamw_ops, h.a1);
    assert_blob_equal(before, after);
    free(before.data);
    free(after.data);
    owl_adamw_free(big);

    /* Clean up. */
    const char *names[] = {"sampler.owl", "galore.owl", "adamw.owl",
                           "big.owl"};
    for (size_t i = 0; i < 4; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        assert_int_equal(unlink(path), 0);
    }
    assert_int_equal(rmdir(dir), 0);
    free(dir);
    free_small(&h);
    owl_context_free(ctx);
}

static void test_failed_save_keeps_old_file(void **state)
{
    (void)state;
    owl_context *ctx = test_cpu_context(1);
    small_handles h = make_small(ctx);
    char *dir = make_temp_dir();
    char path[600];

    snprintf(path, sizeof path, "%s/adamw.owl", dir);
    assert_owl_ok(ctx, owl_adamw_save_file(h.a1, path));
    blob old = read_whole(path);

    /* A path in a missing directory. */
    char missing[700];
    snprintf(missing, sizeof missing, "%s/no/such/dir/adamw.owl", dir);
    assert_owl_status(ctx, owl_adamw_save_file(h.a2, missing), OWL_ERR_IO);
    assert_non_null(strstr(owl_context_last_error(ctx), strerror(ENOENT)));

    /* A read-only directory (root may write anyway: then not checked). */
    if (geteuid() != 0) {
        assert_int_equal(chmod(dir, 0555), 0);
        assert_owl_status(ctx, owl_adamw_save_file(h.a2, path), OWL_ERR_IO);
        assert_non_null(strstr(owl_context_last_error(ctx), strerror(EACCES)));
        assert_int_equal(chmod(dir, 0755), 0);
    }

    /* A failure at the very end (the rename: the target is a non-empty
     * directory) must remove the temporary file it had fully written. */
    char blocker[700], inner[800];
    snprintf(blocker, sizeof blocker, "%s/blocked.owl", dir);
    snprintf(inner, sizeof inner, "%s/keep", blocker);
    assert_int_equal(mkdir(blocker, 0755), 0);
    FILE *f = fopen(inner, "w");
    assert_non_null(f);
    fclose(f);
    assert_owl_status(ctx, owl_adamw_save_file(h.a2, blocker), OWL_ERR_IO);
    assert_non_null(strstr(owl_context_last_error(ctx), "renam"));

    blob now = read_whole(path);
    assert_blob_equal(old, now);
    assert_int_equal(count_entries(dir), 2); /* adamw.owl and blocked.owl */
    assert_int_equal(count_entries(blocker), 1);

    unlink(inner);
    rmdir(blocker);
    unlink(path);
    assert_int_equal(rmdir(dir), 0);
    free(old.data);
    free(now.data);
    free(dir);
    free_small(&h);
    owl_context_free(ctx);
}

/* A FIFO (or any special file) named as a state file is refused at once:
 * a blocking open would wait forever for a writer. The alarm turns a hang
 * into a failure rather than a test timeout. */
static void test_fifo_is_refused_without_blocking(void **state)
{
    (void)state;
    owl_context *ctx = test_cpu_context(1);
    small_handles h = make_small(ctx);
    char *dir = make_temp_dir();
    char path[600];
    snprintf(path, sizeof path, "%s/state.owl", dir);
    assert_int_equal(mkfifo(path, 0600), 0);
    alarm(20);
    assert_owl_status(ctx, owl_sampler_load_file(h.s1, path), OWL_ERR_IO);
    assert_non_null(strstr(owl_context_last_error(ctx), "not a regular file"));
    assert_owl_status(ctx, owl_adamw_load_file(h.a1, path), OWL_ERR_IO);
    alarm(0);
    unlink(path);
    assert_int_equal(rmdir(dir), 0);
    free(dir);
    free_small(&h);
    owl_context_free(ctx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_crc32c_published_values),
        cmocka_unit_test(test_sampler_round_trip),
        cmocka_unit_test(test_training_round_trip),
        cmocka_unit_test(test_every_truncation),
        cmocka_unit_test(test_every_bit_flip),
        cmocka_unit_test(test_version_and_kind),
        cmocka_unit_test(test_mismatched_shapes_and_options),
        cmocka_unit_test(test_invalid_contents),
        cmocka_unit_test(test_buffer_too_small),
        cmocka_unit_test(test_null_arguments),
        cmocka_unit_test(test_file_round_trip),
        cmocka_unit_test(test_failed_save_keeps_old_file),
        cmocka_unit_test(test_fifo_is_refused_without_blocking),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
