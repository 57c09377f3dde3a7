/* owl_lod_compute_async on the CPU backend: the ratio written into a 1 x 1
 * f32 or f64 tensor is owl_lod_compute's (checked against a hand-derived
 * layer, and against the synchronous call on a random pooled layer), and
 * the ratio tensor is validated like any other argument, with nothing
 * written on failure. */
#include "common/testutil.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* A 4 x 4 matrix of ones with one entry of 100 and unit statistics:
 * A = |W|, mean(A) = (15 + 100) / 16 = 7.1875, so with M = 5 the threshold
 * is 35.9375 and exactly one entry of 16 exceeds it. */
static void test_hand_case(void **state)
{
    (void)state;
    owl_context *ctx = test_cpu_context(1);
    float w[16], s[4] = {1, 1, 1, 1};
    for (int i = 0; i < 16; i++)
        w[i] = 1;
    w[6] = -100; /* |W| is what counts */
    owl_tensor wt, st, rt;
    owl_tensor_init(&wt, w, OWL_DTYPE_F32, 4, 4);
    owl_tensor_init(&st, s, OWL_DTYPE_F32, 1, 4);

    double r64 = -1;
    owl_tensor_init(&rt, &r64, OWL_DTYPE_F64, 1, 1);
    assert_owl_ok(ctx, owl_lod_compute_async(ctx, &wt, &st, 1, 5.0, &rt));
    assert_true(r64 == 1.0 / 16.0);

    float r32 = -1;
    owl_tensor_init(&rt, &r32, OWL_DTYPE_F32, 1, 1);
    assert_owl_ok(ctx, owl_lod_compute_async(ctx, &wt, &st, 1, 5.0, &rt));
    assert_true(r32 == 1.0f / 16.0f);

    /* M = 20: the threshold 143.75 is above every score. */
    assert_owl_ok(ctx, owl_lod_compute_async(ctx, &wt, &st, 1, 20.0, &rt));
    assert_true(r32 == 0.0f);
    owl_context_free(ctx);
}

/* Three matrices of different shapes, dtypes and strides, pooled. */
typedef struct {
    float w0[40 * 24];
    uint16_t w1[16 * (40 + 3)]; /* bf16, row stride 43 */
    float w2[8 * 40];
    float s0[24], s2[40];
    double s1[40];
    owl_tensor w[3], s[3];
} layer;

static uint16_t to_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

static void make_layer(layer *l, uint64_t seed)
{
    float tmp[16 * 40];
    test_fill_normal(l->w0, 40 * 24, seed);
    test_fill_normal(tmp, 16 * 40, seed + 1);
    for (int i = 0; i < 16; i++)
        for (int j = 0; j < 43; j++)
            l->w1[i * 43 + j] = j < 40 ? to_bf16(tmp[i * 40 + j]) : 0;
    test_fill_normal(l->w2, 8 * 40, seed + 2);
    test_fill_uniform(l->s0, 24, seed + 3);
    test_fill_uniform(l->s2, 40, seed + 4);
    float t1[40];
    test_fill_uniform(t1, 40, seed + 5);
    for (int j = 0; j < 24; j++)
        l->s0[j] = fabsf(l->s0[j]) * 50;
    for (int j = 0; j < 40; j++) {
        l->s1[j] = fabs((double)t1[j]) * 50;
        l->s2[j] = fabsf(l->s2[j]) * 50;
    }
    l->s0[5] = 4000; /* an outlier feature */
    owl_tensor_init(&l->w[0], l->w0, OWL_DTYPE_F32, 40, 24);
    owl_tensor_init(&l->w[1], l->w1, OWL_DTYPE_BF16, 16, 40);
    l->w[1].row_stride = 43;
    owl_tensor_init(&l->w[2], l->w2, OWL_DTYPE_F32, 8, 40);
    owl_tensor_init(&l->s[0], l->s0, OWL_DTYPE_F32, 1, 24);
    owl_tensor_init(&l->s[1], l->s1, OWL_DTYPE_F64, 1, 40);
    owl_tensor_init(&l->s[2], l->s2, OWL_DTYPE_F32, 1, 40);
}

static void test_matches_sync(void **state)
{
    (void)state;
    owl_context *ctx = test_cpu_context(2);
    layer *l = malloc(sizeof *l);
    assert_non_null(l);
    make_layer(l, 11);
    const double Ms[] = {1.0, 3.0, 5.0};
    for (size_t i = 0; i < sizeof Ms / sizeof Ms[0]; i++) {
        double want = -1;
        assert_owl_ok(ctx, owl_lod_compute(ctx, l->w, l->s, 3, Ms[i], &want));
        assert_true(want > 0 && want < 1); /* a case with outliers */
        double r64 = -1;
        float r32 = -1;
        owl_tensor rt;
        owl_tensor_init(&rt, &r64, OWL_DTYPE_F64, 1, 1);
        assert_owl_ok(ctx, owl_lod_compute_async(ctx, l->w, l->s, 3, Ms[i], &rt));
        assert_true(r64 == want);
        owl_tensor_init(&rt, &r32, OWL_DTYPE_F32, 1, 1);
        assert_owl_ok(ctx, owl_lod_compute_async(ctx, l->w, l->s, 3, Ms[i], &rt));
        assert_true(r32 == (float)want);
    }
    free(l);
    owl_context_free(ctx);
}

/* Every bad ratio tensor, and bad layer arguments, fail with the right
 * status and a message, and leave the ratio as it was. */
static void test_validation(void **state)
{
    (void)state;
    owl_context *ctx = test_cpu_context(1);
    layer *l = malloc(sizeof *l);
    assert_non_null(l);
    make_layer(l, 5);
    double r[2] = {-7, -7};
    uint16_t r16 = 0x1234;
    owl_tensor rt;

    assert_int_equal(owl_lod_compute_async(NULL, l->w, l->s, 3, 5, &rt),
                     OWL_ERR_NULL_POINTER);
    assert_owl_status(ctx, owl_lod_compute_async(ctx, l->w, l->s, 3, 5, NULL),
                      OWL_ERR_NULL_POINTER);
    owl_tensor_init(&rt, NULL, OWL_DTYPE_F64, 1, 1);
    assert_owl_status(ctx, owl_lod_compute_async(ctx, l->w, l->s, 3, 5, &rt),
                      OWL_ERR_NULL_POINTER);
    owl_tensor_init(&rt, r, OWL_DTYPE_F64, 1, 2);
    assert_owl_status(ctx, owl_lod_compute_async(ctx, l->w, l->s, 3, 5, &rt),
                      OWL_ERR_SHAPE);
    assert_non_null(strstr(owl_context_last_error(ctx), "ratio"));
    owl_tensor_init(&rt, r, OWL_DTYPE_F64, 2, 1);
    assert_owl_status(ctx, owl_lod_compute_async(ctx, l->w, l->s, 3, 5, &rt),
                      OWL_ERR_SHAPE);
    owl_tensor_init(&rt, &r16, OWL_DTYPE_BF16, 1, 1);
    assert_owl_status(ctx, owl_lod_compute_async(ctx, l->w, l->s, 3, 5, &rt),
                      OWL_ERR_DTYPE);
    assert_true(r16 == 0x1234);
    owl_tensor_init(&rt, r, OWL_DTYPE_F64, 1, 1);
    rt.flags = 1;
    assert_int_not_equal(owl_lod_compute_async(ctx, l->w, l->s, 3, 5, &rt),
                         OWL_OK);
    rt.flags = 0;

    /* The layer's own arguments, with a valid ratio tensor. */
    assert_owl_status(ctx, owl_lod_compute_async(ctx, l->w, l->s, 0, 5, &rt),
                      OWL_ERR_INVALID_ARGUMENT);
    assert_owl_status(ctx, owl_lod_compute_async(ctx, l->w, l->s, 3, 0, &rt),
                      OWL_ERR_INVALID_ARGUMENT);
    assert_owl_status(ctx, owl_lod_compute_async(ctx, l->w, l->s, 3, NAN, &rt),
                      OWL_ERR_INVALID_ARGUMENT);
    assert_owl_status(ctx, owl_lod_compute_async(ctx, NULL, l->s, 3, 5, &rt),
                      OWL_ERR_NULL_POINTER);
    l->s2[3] = -1;
    assert_owl_status(ctx, owl_lod_compute_async(ctx, l->w, l->s, 3, 5, &rt),
                      OWL_ERR_INVALID_ARGUMENT);
    l->s2[3] = 1;
    l->w2[9] = NAN;
    assert_owl_status(ctx, owl_lod_compute_async(ctx, l->w, l->s, 3, 5, &rt),
                      OWL_ERR_NONFINITE);
    assert_non_null(strstr(owl_context_last_error(ctx), "weights[2]"));
    l->w2[9] = 0;
    assert_true(r[0] == -7 && r[1] == -7); /* never written on failure */

    assert_owl_ok(ctx, owl_lod_compute_async(ctx, l->w, l->s, 3, 5, &rt));
    assert_true(r[0] >= 0 && r[0] <= 1 && r[1] == -7);
    free(l);
    owl_context_free(ctx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hand_case),
        cmocka_unit_test(test_matches_sync),
        cmocka_unit_test(test_validation),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
