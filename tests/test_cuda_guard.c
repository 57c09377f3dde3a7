/*
 * The CUDA backend's device guard (src/cuda_guard.c) against a model of
 * what the CUDA driver and runtime do to a thread, as documented:
 *  - a thread starts with no current context, and cudaGetDevice would
 *    still report device 0 for it;
 *  - cudaSetDevice(d) makes d's primary context current, creating it (and
 *    its device memory) the first time any thread of the process asks;
 *  - cuCtxGetCurrent reads the thread's current context (NULL: none),
 *    cuCtxSetCurrent sets it (NULL: none) and creates nothing.
 * Properties: entering and leaving a call on device d's context leaves the
 * thread with the context it had (none, another device's, or a context of
 * its own), creates no primary context but d's, and does nothing at all
 * when d's is current already; a failed switch changes nothing.
 *
 * Runs without CUDA; the same guard drives every CUDA call of the library
 * (tests/gpu/test_gpu_context.c checks it on a device).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "cuda_guard.h"

#include <string.h>

enum { DEVICES = 4 };

/* The model of one process with one thread; contexts are addresses. */
static struct {
    char primary[DEVICES]; /* &primary[d]: device d's primary context */
    char own_context;      /* a context the caller created itself */
    bool created[DEVICES]; /* primary context d exists (holds memory) */
    void *current;         /* the thread's current context */
    int selects, restores; /* cudaSetDevice / cuCtxSetCurrent calls */
    int fail_select;       /* nonzero: the next cudaSetDevice fails */
} drv;

static int model_current(void **context)
{
    *context = drv.current;
    return 0;
}

static int model_make_current(void *context)
{
    drv.restores++;
    drv.current = context;
    return 0;
}

static int model_select(int device)
{
    drv.selects++;
    if (drv.fail_select) {
        int e = drv.fail_select;
        drv.fail_select = 0;
        return e;
    }
    drv.created[device] = true;
    drv.current = &drv.primary[device];
    return 0;
}

static const owl_device_calls calls = {model_current, model_make_current,
                                       model_select};

static int reset(void **state)
{
    (void)state;
    memset(&drv, 0, sizeof drv);
    return 0;
}

/* One library call on device `device`: the guard around the call's work,
 * which must run with that device's primary context current. */
static void library_call(int device, void *mine)
{
    owl_cuda_guard g;
    const char *failed = NULL;
    assert_int_equal(owl__guard_enter(&calls, device, mine, &g, &failed), 0);
    assert_ptr_equal(drv.current, &drv.primary[device]);
    owl__guard_leave(&g);
}

/* A thread that never selected a device: after a call on device 1 it has
 * no current context again, and device 0's primary context was never
 * created (restoring "device 0", which is what cudaGetDevice reports on
 * such a thread, would create it). */
static void test_thread_without_context(void **state)
{
    (void)state;
    library_call(1, NULL);
    assert_null(drv.current);
    assert_false(drv.created[0]);
    assert_true(drv.created[1]);
    for (int d = 2; d < DEVICES; d++)
        assert_false(drv.created[d]);
    /* And again with the primary context known, as after create. */
    library_call(1, &drv.primary[1]);
    assert_null(drv.current);
    assert_false(drv.created[0]);
}

/* The caller works on device 2: a call on device 0 gives it back. */
static void test_other_device_restored(void **state)
{
    (void)state;
    assert_int_equal(model_select(2), 0);
    drv.selects = 0;
    library_call(0, &drv.primary[0]);
    assert_ptr_equal(drv.current, &drv.primary[2]);
    assert_int_equal(drv.selects, 1);
    assert_false(drv.created[1]);
}

/* A context the caller made itself (not a primary one) comes back too. */
static void test_own_context_restored(void **state)
{
    (void)state;
    drv.current = &drv.own_context;
    library_call(3, NULL);
    assert_ptr_equal(drv.current, &drv.own_context);
    assert_false(drv.created[0]);
}

/* Already on the context's device: no runtime or driver call that
 * changes anything, on enter or on leave; nested guards alike. */
static void test_same_device_untouched(void **state)
{
    (void)state;
    assert_int_equal(model_select(1), 0);
    drv.selects = 0;
    owl_cuda_guard outer, inner;
    const char *failed = NULL;
    assert_int_equal(
        owl__guard_enter(&calls, 1, &drv.primary[1], &outer, &failed), 0);
    assert_int_equal(
        owl__guard_enter(&calls, 1, &drv.primary[1], &inner, &failed), 0);
    owl__guard_leave(&inner);
    owl__guard_leave(&outer);
    assert_int_equal(drv.selects, 0);
    assert_int_equal(drv.restores, 0);
    assert_ptr_equal(drv.current, &drv.primary[1]);
}

/* A nested guard inside a switched one: the inner finds the device
 * current and leaves it; the outer gives the caller back its context. */
static void test_nested_after_switch(void **state)
{
    (void)state;
    owl_cuda_guard outer, inner;
    const char *failed = NULL;
    assert_int_equal(owl__guard_enter(&calls, 1, NULL, &outer, &failed), 0);
    assert_int_equal(
        owl__guard_enter(&calls, 1, &drv.primary[1], &inner, &failed), 0);
    owl__guard_leave(&inner);
    assert_ptr_equal(drv.current, &drv.primary[1]);
    owl__guard_leave(&outer);
    assert_null(drv.current);
}

/* cudaSetDevice fails: the error and the call's name come back, and the
 * thread keeps what it had. */
static void test_failed_switch(void **state)
{
    (void)state;
    drv.current = &drv.own_context;
    drv.fail_select = 101; /* cudaErrorInvalidDevice */
    owl_cuda_guard g;
    const char *failed = NULL;
    assert_int_equal(owl__guard_enter(&calls, 2, NULL, &g, &failed), 101);
    assert_string_equal(failed, "cudaSetDevice");
    assert_ptr_equal(drv.current, &drv.own_context);
    assert_false(g.switched);
    owl__guard_leave(&g); /* harmless even so */
    assert_ptr_equal(drv.current, &drv.own_context);
    assert_int_equal(drv.restores, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_thread_without_context, reset),
        cmocka_unit_test_setup(test_other_device_restored, reset),
        cmocka_unit_test_setup(test_own_context_restored, reset),
        cmocka_unit_test_setup(test_same_device_untouched, reset),
        cmocka_unit_test_setup(test_nested_after_switch, reset),
        cmocka_unit_test_setup(test_failed_switch, reset),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
