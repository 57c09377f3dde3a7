/* CUDA contexts: creation on device 0, the device guard (the caller's
 * current device is the same after every call, and a thread without a
 * current context has none after one), streams, synchronisation,
 * the non-finite skip counter, and host pointers rejected with a message
 * instead of a fault. Exits 77 (SKIP) without a device. */
#include "../common/testutil.h"
#include "gpu_util.h"

#include <cuda_runtime_api.h>
#include <pthread.h>
#include <string.h>

static int device_count(void)
{
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess)
        fail_msg("cudaGetDeviceCount failed");
    return n;
}

static int current_device(void)
{
    int d = -1;
    if (cudaGetDevice(&d) != cudaSuccess)
        fail_msg("cudaGetDevice failed");
    return d;
}

static void set_device(int d)
{
    if (cudaSetDevice(d) != cudaSuccess)
        fail_msg("cudaSetDevice(%d) failed", d);
}

static void *dev_alloc(size_t bytes)
{
    void *p = NULL;
    if (cudaMalloc(&p, bytes) != cudaSuccess)
        fail_msg("cudaMalloc(%zu) failed", bytes);
    if (cudaMemset(p, 0, bytes) != cudaSuccess ||
        cudaDeviceSynchronize() != cudaSuccess)
        fail_msg("cudaMemset failed");
    return p;
}

static void test_context_on_device0(void **state)
{
    (void)state;
    set_device(0);
    owl_context *ctx = gpu_context();
    assert_int_equal(owl_context_backend(ctx), OWL_BACKEND_CUDA);
    assert_string_equal(owl_context_last_error(ctx), "");
    assert_owl_ok(ctx, owl_context_synchronize(ctx));
    owl_context_free(ctx);
    owl_context_free(NULL);
}

static void test_nonfinite_skips_start_at_zero(void **state)
{
    (void)state;
    owl_context *ctx = gpu_context();
    uint64_t count = 12345;
    assert_owl_ok(ctx, owl_context_nonfinite_skips(ctx, &count));
    assert_int_equal(count, 0);
    assert_int_equal(owl_context_nonfinite_skips(ctx, NULL),
                     OWL_ERR_NULL_POINTER);
    owl_context_free(ctx);
}

/* Runs calls that take the device guard on a device-0 context and checks
 * after each that the thread's current device is still `expect`. */
static void exercise_guard(owl_context *ctx, int expect)
{
    enum { T = 8, N = 16 };
    /* Device-0 buffers, allocated with device 0 current. */
    set_device(0);
    float *x = dev_alloc(T * N * sizeof *x);
    float *sumsq = dev_alloc(N * sizeof *sumsq);
    set_device(expect);

    assert_owl_ok(ctx, owl_context_synchronize(ctx));
    assert_int_equal(current_device(), expect);
    uint64_t skips = 1;
    assert_owl_ok(ctx, owl_context_nonfinite_skips(ctx, &skips));
    assert_int_equal(skips, 0);
    assert_int_equal(current_device(), expect);
    owl_tensor tx, ts;
    owl_tensor_init(&tx, x, OWL_DTYPE_F32, T, N);
    owl_tensor_init(&ts, sumsq, OWL_DTYPE_F32, 1, N);
    assert_owl_ok(ctx, owl_act_norm_accumulate(ctx, &tx, &ts));
    assert_int_equal(current_device(), expect);
    /* A failing call restores the device too. */
    owl_tensor bad;
    owl_tensor_init(&bad, sumsq, OWL_DTYPE_F32, 1, N + 1);
    assert_int_not_equal(owl_act_norm_accumulate(ctx, &tx, &bad), OWL_OK);
    assert_int_equal(current_device(), expect);
    assert_owl_ok(ctx, owl_context_synchronize(ctx));
    assert_int_equal(current_device(), expect);

    set_device(0);
    cudaFree(x);
    cudaFree(sumsq);
    set_device(expect);
}

static void test_current_device_left_as_found(void **state)
{
    (void)state;
    int n = device_count();
    if (n > 1) {
        /* The caller works on device 1; the context lives on device 0. */
        set_device(1);
        owl_context *ctx = gpu_context();
        assert_int_equal(current_device(), 1);
        exercise_guard(ctx, 1);
        owl_context_free(ctx);
        assert_int_equal(current_device(), 1);
        set_device(0);
    } else {
        set_device(0);
        owl_context *ctx = gpu_context();
        assert_int_equal(current_device(), 0);
        exercise_guard(ctx, 0);
        owl_context_free(ctx);
        assert_int_equal(current_device(), 0);
    }
}

/* The thread's current driver context (cuCtxGetCurrent, through the
 * runtime's entry point: the test does not link the driver either). */
static void *current_context(void)
{
    void *fn = NULL;
    enum cudaDriverEntryPointQueryResult q;
    if (cudaGetDriverEntryPointByVersion("cuCtxGetCurrent", &fn,
                                         CUDART_VERSION, cudaEnableDefault,
                                         &q) != cudaSuccess ||
        q != cudaDriverEntryPointSuccess)
        fail_msg("cannot resolve cuCtxGetCurrent");
    int (*get)(void **);
    memcpy(&get, &fn, sizeof get);
    void *c = (void *)1;
    if (get(&c) != 0)
        fail_msg("cuCtxGetCurrent failed");
    return c;
}

typedef struct fresh_thread_job {
    owl_context *ctx;
    owl_tensor x, sumsq;
    int before_null, after_sync_null, after_call_null;
    owl_status sync, call;
} fresh_thread_job;

static void *fresh_thread(void *arg)
{
    fresh_thread_job *j = arg;
    j->before_null = current_context() == NULL;
    j->sync = owl_context_synchronize(j->ctx);
    j->after_sync_null = current_context() == NULL;
    j->call = owl_act_norm_accumulate(j->ctx, &j->x, &j->sumsq);
    j->after_call_null = current_context() == NULL;
    if (j->call == OWL_OK)
        j->call = owl_context_synchronize(j->ctx);
    return NULL;
}

/* A thread that never selected a device has no current context, and has
 * none after calls on a context: the guard gives it back what it had
 * instead of making device 0 current (which would create device 0's
 * primary context in a process that never used device 0). */
static void test_thread_without_context_keeps_none(void **state)
{
    (void)state;
    enum { T = 4, N = 8 };
    set_device(0);
    fresh_thread_job j;
    memset(&j, 0, sizeof j);
    j.ctx = gpu_context();
    float *x = dev_alloc(T * N * sizeof *x);
    float *sumsq = dev_alloc(N * sizeof *sumsq);
    owl_tensor_init(&j.x, x, OWL_DTYPE_F32, T, N);
    owl_tensor_init(&j.sumsq, sumsq, OWL_DTYPE_F32, 1, N);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, fresh_thread, &j), 0);
    assert_int_equal(pthread_join(t, NULL), 0);
    assert_true(j.before_null);
    assert_owl_ok(j.ctx, j.sync);
    assert_true(j.after_sync_null);
    assert_owl_ok(j.ctx, j.call);
    assert_true(j.after_call_null);
    cudaFree(x);
    cudaFree(sumsq);
    owl_context_free(j.ctx);
}

static void test_set_stream(void **state)
{
    (void)state;
    set_device(0);
    owl_context *ctx = gpu_context();
    cudaStream_t stream = NULL;
    assert_int_equal(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking),
                     cudaSuccess);
    assert_owl_ok(ctx, owl_context_set_stream(ctx, stream));
    assert_owl_ok(ctx, owl_context_synchronize(ctx));
    uint64_t skips = 7;
    assert_owl_ok(ctx, owl_context_nonfinite_skips(ctx, &skips));
    assert_int_equal(skips, 0);
    /* Back to the legacy default stream before the stream goes away. */
    assert_owl_ok(ctx, owl_context_set_stream(ctx, NULL));
    assert_owl_ok(ctx, owl_context_synchronize(ctx));
    assert_int_equal(cudaStreamDestroy(stream), cudaSuccess);
    owl_context_free(ctx);

    /* A CPU context has no stream. */
    owl_context *cpu = cpu_context();
    assert_int_equal(owl_context_set_stream(cpu, (void *)&stream),
                     OWL_ERR_UNSUPPORTED);
    assert_true(strlen(owl_context_last_error(cpu)) > 0);
    assert_owl_ok(cpu, owl_context_set_stream(cpu, NULL));
    owl_context_free(cpu);
}

/* A failing call must name the problem. */
static void assert_failed_with_message(owl_context *ctx, owl_status s,
                                       const char *call)
{
    if (s == OWL_OK)
        fail_msg("%s accepted a host pointer on a CUDA context", call);
    if (strlen(owl_context_last_error(ctx)) == 0)
        fail_msg("%s returned %s without a message", call,
                 owl_status_name(s));
}

static void test_host_pointers_are_rejected(void **state)
{
    (void)state;
    enum { M = 16, N = 12 };
    set_device(0);
    owl_context *ctx = gpu_context();
    static float host_w[M * N], host_g[M * N], host_x[M * N], host_s[N];
    float w0[M * N], w_after[M * N];
    test_fill_uniform(w0, M * N, 1);
    test_fill_uniform(host_g, M * N, 2);
    float *dev_w = gpu_upload(w0, sizeof w0);
    float *dev_g = gpu_upload(host_g, sizeof host_g);
    float *dev_s = gpu_alloc(N * sizeof(float));

    owl_tensor hw, hg, dw, dg, hx, hs, ds;
    owl_tensor_init(&hw, host_w, OWL_DTYPE_F32, M, N);
    owl_tensor_init(&hg, host_g, OWL_DTYPE_F32, M, N);
    owl_tensor_init(&dw, dev_w, OWL_DTYPE_F32, M, N);
    owl_tensor_init(&dg, dev_g, OWL_DTYPE_F32, M, N);
    owl_tensor_init(&hx, host_x, OWL_DTYPE_F32, M, N);
    owl_tensor_init(&hs, host_s, OWL_DTYPE_F32, 1, N);
    owl_tensor_init(&ds, dev_s, OWL_DTYPE_F32, 1, N);

    /* Full-rank AdamW: host weight, host gradient. */
    owl_adamw_options ao;
    owl_adamw_options_init(&ao, sizeof ao);
    owl_adamw *adam = NULL;
    assert_owl_ok(ctx, owl_adamw_create(ctx, &ao, M, N, &adam));
    assert_failed_with_message(ctx, owl_adamw_full(adam, &hw, &dg, 1e-2),
                               "owl_adamw_full(host weight)");
    assert_failed_with_message(ctx, owl_adamw_full(adam, &dw, &hg, 1e-2),
                               "owl_adamw_full(host grad)");
    /* Nothing changed: the device weight and the step count. */
    gpu_download(w_after, dev_w, sizeof w_after);
    assert_memory_equal(w_after, w0, sizeof w0);
    assert_int_equal(owl_adamw_step_count(adam), 0);
    owl_adamw_free(adam);

    /* GaLore projection: host gradient, host output. */
    owl_galore_options go;
    owl_galore_options_init(&go, sizeof go);
    go.rows = M;
    go.cols = N;
    go.rank = 4;
    owl_galore *proj = NULL;
    assert_owl_ok(ctx, owl_galore_create(ctx, &go, &proj));
    uint64_t lr_rows = 0, lr_cols = 0;
    assert_owl_ok(ctx, owl_galore_lowrank_shape(proj, &lr_rows, &lr_cols));
    static float host_r[M * N];
    float *dev_r = gpu_alloc(lr_rows * lr_cols * sizeof(float));
    owl_tensor hr, dr;
    owl_tensor_init(&hr, host_r, OWL_DTYPE_F32, (int64_t)lr_rows,
                    (int64_t)lr_cols);
    owl_tensor_init(&dr, dev_r, OWL_DTYPE_F32, (int64_t)lr_rows,
                    (int64_t)lr_cols);
    assert_failed_with_message(ctx, owl_galore_project(proj, 0, &hg, &dr, NULL),
                               "owl_galore_project(host grad)");
    assert_failed_with_message(ctx, owl_galore_project(proj, 0, &dg, &hr, NULL),
                               "owl_galore_project(host out)");
    assert_int_equal(owl_galore_refresh_count(proj), 0);
    owl_galore_free(proj);

    /* Activation norms: host input, host accumulator. */
    assert_failed_with_message(ctx, owl_act_norm_accumulate(ctx, &hx, &ds),
                               "owl_act_norm_accumulate(host x)");
    owl_tensor dx;
    owl_tensor_init(&dx, dev_g, OWL_DTYPE_F32, M, N);
    assert_failed_with_message(ctx, owl_act_norm_accumulate(ctx, &dx, &hs),
                               "owl_act_norm_accumulate(host sumsq)");

    /* The context is still usable: no sticky CUDA error was left. */
    assert_owl_ok(ctx, owl_context_synchronize(ctx));
    assert_int_equal(cudaGetLastError(), cudaSuccess);
    gpu_free(dev_r);
    gpu_free(dev_w);
    gpu_free(dev_g);
    gpu_free(dev_s);
    owl_context_free(ctx);
}

int main(void)
{
    gpu_require_device();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_context_on_device0),
        cmocka_unit_test(test_nonfinite_skips_start_at_zero),
        cmocka_unit_test(test_current_device_left_as_found),
        cmocka_unit_test(test_thread_without_context_keeps_none),
        cmocka_unit_test(test_set_stream),
        cmocka_unit_test(test_host_pointers_are_rejected),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
