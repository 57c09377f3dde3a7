/* Versions, status codes, contexts and the size-carrying options structs. */
#include "common/testutil.h"

#include <stdio.h>
#include <string.h>

static void test_versions_agree(void **state)
{
    (void)state;
    assert_int_equal(owl_version_number(), OWL_VERSION_NUMBER);
    assert_string_equal(owl_version_string(), OWL_VERSION_STRING);
    char buf[32];
    snprintf(buf, sizeof buf, "%d.%d.%d", OWL_VERSION_MAJOR, OWL_VERSION_MINOR,
             OWL_VERSION_PATCH);
    assert_string_equal(buf, owl_version_string());
}

static void test_status_names_are_stable(void **state)
{
    (void)state;
    /* The numbers are part of the ABI: they must never change. */
    static const struct { owl_status s; int n; const char *name; } table[] = {
        {OWL_OK, 0, "OWL_OK"},
        {OWL_ERR_INVALID_ARGUMENT, 1, "OWL_ERR_INVALID_ARGUMENT"},
        {OWL_ERR_NULL_POINTER, 2, "OWL_ERR_NULL_POINTER"},
        {OWL_ERR_SHAPE, 3, "OWL_ERR_SHAPE"},
        {OWL_ERR_DTYPE, 4, "OWL_ERR_DTYPE"},
        {OWL_ERR_OUT_OF_MEMORY, 5, "OWL_ERR_OUT_OF_MEMORY"},
        {OWL_ERR_NONFINITE, 6, "OWL_ERR_NONFINITE"},
        {OWL_ERR_NUMERICAL, 7, "OWL_ERR_NUMERICAL"},
        {OWL_ERR_UNSUPPORTED, 8, "OWL_ERR_UNSUPPORTED"},
        {OWL_ERR_NO_DEVICE, 9, "OWL_ERR_NO_DEVICE"},
        {OWL_ERR_DEVICE, 10, "OWL_ERR_DEVICE"},
        {OWL_ERR_IO, 11, "OWL_ERR_IO"},
        {OWL_ERR_CORRUPT, 12, "OWL_ERR_CORRUPT"},
        {OWL_ERR_VERSION, 13, "OWL_ERR_VERSION"},
        {OWL_ERR_STRUCT_SIZE, 14, "OWL_ERR_STRUCT_SIZE"},
        {OWL_ERR_STATE, 15, "OWL_ERR_STATE"},
        {OWL_ERR_MISMATCH, 16, "OWL_ERR_MISMATCH"},
        {OWL_ERR_INTERNAL, 17, "OWL_ERR_INTERNAL"},
    };
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++) {
        assert_int_equal(table[i].s, table[i].n);
        assert_string_equal(owl_status_name(table[i].s), table[i].name);
        const char *text = owl_status_string(table[i].s);
        assert_non_null(text);
        assert_true(strlen(text) > 3);
    }
    assert_string_equal(owl_status_name(9999), "OWL_UNKNOWN");
    assert_string_equal(owl_status_name(-1), "OWL_UNKNOWN");
    assert_non_null(owl_status_string(9999));
}

static void test_context_lifecycle(void **state)
{
    (void)state;
    owl_context *ctx = NULL;
    assert_int_equal(owl_context_create(&ctx, NULL), OWL_OK);
    assert_non_null(ctx);
    assert_int_equal(owl_context_backend(ctx), OWL_BACKEND_CPU);
    assert_true(owl_context_num_threads(ctx) >= 1);
    assert_string_equal(owl_context_last_error(ctx), "");
    assert_int_equal(owl_context_set_stream(ctx, NULL), OWL_OK);
    int dummy;
    assert_int_equal(owl_context_set_stream(ctx, &dummy), OWL_ERR_UNSUPPORTED);
    assert_true(strlen(owl_context_last_error(ctx)) > 0);
    owl_context_free(ctx);
    owl_context_free(NULL); /* free accepts NULL */

    ctx = test_cpu_context(3);
    assert_int_equal(owl_context_num_threads(ctx), 3);
    owl_context_free(ctx);
}

static void test_context_rejects_bad_options(void **state)
{
    (void)state;
    owl_context *ctx = (owl_context *)0x1;
    assert_int_equal(owl_context_create(NULL, NULL), OWL_ERR_NULL_POINTER);
    owl_context_options o;
    assert_int_equal(owl_context_options_init(&o, sizeof o), OWL_OK);
    o.num_threads = -1;
    assert_int_equal(owl_context_create(&ctx, &o), OWL_ERR_INVALID_ARGUMENT);
    assert_null(ctx); /* *out is cleared on failure */
    owl_context_options_init(&o, sizeof o);
    o.backend = 7;
    assert_int_equal(owl_context_create(&ctx, &o), OWL_ERR_INVALID_ARGUMENT);
    owl_context_options_init(&o, sizeof o);
    o.struct_size = 3;
    assert_int_equal(owl_context_create(&ctx, &o), OWL_ERR_STRUCT_SIZE);
    assert_int_equal(owl_context_options_init(&o, 2), OWL_ERR_STRUCT_SIZE);
    assert_int_equal(owl_context_options_init(NULL, sizeof o), OWL_ERR_NULL_POINTER);
    if (!owl_backend_available(OWL_BACKEND_CUDA)) {
        owl_context_options_init(&o, sizeof o);
        o.backend = OWL_BACKEND_CUDA;
        assert_int_equal(owl_context_create(&ctx, &o), OWL_ERR_UNSUPPORTED);
    }
}

/* A caller compiled against an older, smaller options struct keeps the
 * library's defaults for the fields it does not know; a newer, larger one
 * is accepted only while its unknown tail is zero. */
static void test_options_struct_size_evolution(void **state)
{
    (void)state;
    owl_context_options full;
    owl_context_options_init(&full, sizeof full);
    assert_int_equal(full.struct_size, sizeof full);
    assert_int_equal(full.backend, OWL_BACKEND_CPU);
    assert_int_equal(full.num_threads, 0);

    /* Old caller: only struct_size + backend + device. */
    size_t old_size = offsetof(owl_context_options, num_threads);
    unsigned char buf[sizeof(owl_context_options) + 16];
    memset(buf, 0xAB, sizeof buf);
    owl_context_options *old = (owl_context_options *)buf;
    assert_int_equal(owl_context_options_init(old, old_size), OWL_OK);
    assert_int_equal(old->struct_size, old_size);
    /* bytes past the caller's size are not touched */
    assert_int_equal(buf[old_size], 0xAB);
    owl_context *ctx = NULL;
    assert_int_equal(owl_context_create(&ctx, old), OWL_OK);
    owl_context_free(ctx);

    /* Newer caller: zero tail accepted, non-zero tail refused. */
    struct { owl_context_options o; uint64_t future; } newer;
    assert_int_equal(owl_context_options_init(&newer.o, sizeof newer), OWL_OK);
    assert_int_equal(newer.future, 0);
    newer.o.num_threads = 1;
    assert_int_equal(owl_context_create(&ctx, &newer.o), OWL_OK);
    assert_int_equal(owl_context_num_threads(ctx), 1);
    owl_context_free(ctx);
    newer.future = 5;
    assert_int_equal(owl_context_create(&ctx, &newer.o), OWL_ERR_STRUCT_SIZE);
}

static void test_tensor_init(void **state)
{
    (void)state;
    float x[6];
    owl_tensor t;
    owl_tensor_init(&t, x, OWL_DTYPE_F32, 2, 3);
    assert_ptr_equal(t.data, x);
    assert_int_equal(t.rows, 2);
    assert_int_equal(t.cols, 3);
    assert_int_equal(t.row_stride, 3);
    assert_int_equal(t.dtype, OWL_DTYPE_F32);
    assert_int_equal(t.flags, 0);
    owl_tensor_init(NULL, x, OWL_DTYPE_F32, 2, 3); /* no crash */
    /* The descriptor's layout is frozen (docs/abi.md). */
    assert_int_equal(sizeof(owl_tensor), 40);
    assert_int_equal(offsetof(owl_tensor, rows), 8);
    assert_int_equal(offsetof(owl_tensor, dtype), 32);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_versions_agree),
        cmocka_unit_test(test_status_names_are_stable),
        cmocka_unit_test(test_context_lifecycle),
        cmocka_unit_test(test_context_rejects_bad_options),
        cmocka_unit_test(test_options_struct_size_evolution),
        cmocka_unit_test(test_tensor_init),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
