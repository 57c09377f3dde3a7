/* A CUDA build of the library on any machine: without a usable device,
 * creating a CUDA context fails cleanly with OWL_ERR_NO_DEVICE and the
 * CPU backend keeps working in the same process; with a device, creation
 * succeeds and an ordinal past the last device is OWL_ERR_NO_DEVICE. The
 * test asks the CUDA runtime itself how many devices there are, so it
 * runs (never skips) in the CPU suite of every CUDA build. */
#include "../common/testutil.h"

#include <cuda_runtime_api.h>
#include <math.h>
#include <string.h>

/* Devices the CUDA runtime sees; 0 when it reports an error (no driver,
 * no device, a driver too old for the runtime). */
static int visible_devices(void)
{
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        (void)cudaGetLastError();
        return 0;
    }
    return n;
}

static owl_status create_cuda(int32_t device, owl_context **out)
{
    owl_context_options o;
    if (owl_context_options_init(&o, sizeof o) != OWL_OK)
        fail_msg("owl_context_options_init failed");
    o.backend = OWL_BACKEND_CUDA;
    o.device = device;
    return owl_context_create(out, &o);
}

/* A pointer the library must overwrite with NULL on failure. */
static owl_context *sentinel(void)
{
    static char byte;
    return (owl_context *)(void *)&byte;
}

static void test_cuda_backend_is_built_in(void **state)
{
    (void)state;
    assert_int_equal(owl_backend_available(OWL_BACKEND_CUDA), 1);
    assert_int_equal(owl_backend_available(OWL_BACKEND_CPU), 1);
}

/* The CPU backend in the same process, checked against the closed form
 * sum of squares of a small input. */
static void check_cpu_backend_works(void)
{
    enum { T = 3, N = 4 };
    float x[T * N], sumsq[N] = {0};
    for (int i = 0; i < T * N; i++)
        x[i] = (float)(i - 5) * 0.5f;
    owl_context *cpu = test_cpu_context(1);
    owl_tensor tx, ts;
    owl_tensor_init(&tx, x, OWL_DTYPE_F32, T, N);
    owl_tensor_init(&ts, sumsq, OWL_DTYPE_F32, 1, N);
    assert_owl_ok(cpu, owl_act_norm_accumulate(cpu, &tx, &ts));
    for (int j = 0; j < N; j++) {
        double want = 0;
        for (int t = 0; t < T; t++)
            want += (double)x[t * N + j] * x[t * N + j];
        assert_true(fabs(sumsq[j] - want) <= 1e-6 * want);
    }
    assert_owl_ok(cpu, owl_context_synchronize(cpu));
    owl_context_free(cpu);
}

static void test_without_device(void **state)
{
    (void)state;
    if (visible_devices() > 0) {
        skip(); /* covered by test_with_device */
        return;
    }
    for (int32_t device = 0; device <= 1; device++) {
        owl_context *ctx = sentinel();
        assert_int_equal(create_cuda(device, &ctx), OWL_ERR_NO_DEVICE);
        assert_null(ctx);
    }
    /* Failing twice leaves nothing behind that breaks a third attempt or
     * the CPU backend. */
    owl_context *ctx = sentinel();
    assert_int_equal(create_cuda(0, &ctx), OWL_ERR_NO_DEVICE);
    assert_null(ctx);
    check_cpu_backend_works();
}

static void test_with_device(void **state)
{
    (void)state;
    int n = visible_devices();
    if (n == 0) {
        skip(); /* covered by test_without_device */
        return;
    }
    owl_context *ctx = NULL;
    assert_int_equal(create_cuda(0, &ctx), OWL_OK);
    assert_non_null(ctx);
    assert_int_equal(owl_context_backend(ctx), OWL_BACKEND_CUDA);
    assert_owl_ok(ctx, owl_context_synchronize(ctx));
    owl_context_free(ctx);

    /* Ordinals n and beyond do not exist. */
    const int32_t missing[] = {n, n + 7};
    for (size_t i = 0; i < sizeof missing / sizeof missing[0]; i++) {
        ctx = sentinel();
        assert_int_equal(create_cuda(missing[i], &ctx), OWL_ERR_NO_DEVICE);
        assert_null(ctx);
    }
    check_cpu_backend_works();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cuda_backend_is_built_in),
        cmocka_unit_test(test_without_device),
        cmocka_unit_test(test_with_device),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
