/*
 * The CUDA runtime's per-thread last error against the trainer's waits
 * and launches, on the emulated device (examples/llama/cuda/emu), whose
 * runtime calls have the runtime's semantics: a failing call records its
 * error as the thread's last error, cudaGetLastError returns and clears
 * it, cudaPeekAtLastError returns it, and a query of a busy stream returns
 * (and records) cudaErrorNotReady.
 *
 * The case from a data-parallel run: the weight broadcast waits for its
 * stream by polling (llama_stream_wait), and the evaluation's first kernel
 * (lk_embed_forward) must not report the polls' "not ready" as its own
 * failure. Checked from both sides: the wait leaves no error behind, and a
 * launcher reports its own launch's status whatever error an earlier call
 * left, while still reporting a launch that does fail.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "emu/cuda_runtime_emu.h"
#include "lk.h"
#include "stream_wait.h"

#include <string.h>

/* Any address serves as an emulated stream. */
static char stream_token;
#define STREAM ((cudaStream_t)&stream_token)

enum { VOCAB = 5, DIM = 8, NTOK = 4 };

/* A table of bf16 values and the tokens to look up. */
typedef struct lookup {
    lk_bf16 table[VOCAB * DIM];
    int32_t tokens[NTOK];
    float out[NTOK * DIM];
} lookup;

static void lookup_init(lookup *l)
{
    for (int i = 0; i < VOCAB * DIM; i++)
        l->table[i] = (lk_bf16)(0x3f80u + (unsigned)i); /* 1.0 and up */
    const int32_t tokens[NTOK] = {3, 0, 4, 3};
    memcpy(l->tokens, tokens, sizeof tokens);
    for (int i = 0; i < NTOK * DIM; i++)
        l->out[i] = -1.0f; /* not a value of the table */
}

/* Row t of the output is the table's row tokens[t], each bf16 widened by
 * its definition (the high half of an f32). */
static int lookup_matches(const lookup *l)
{
    for (int t = 0; t < NTOK; t++)
        for (int j = 0; j < DIM; j++) {
            uint32_t bits = (uint32_t)l->table[l->tokens[t] * DIM + j] << 16;
            float want;
            memcpy(&want, &bits, sizeof want);
            if (memcmp(&l->out[t * DIM + j], &want, sizeof want) != 0)
                return 0;
        }
    return 1;
}

static int embed(lookup *l)
{
    return lk_embed_forward(STREAM, l->out, l->table, l->tokens, NTOK, DIM);
}

static int count_polls(void *arg)
{
    ++*(int *)arg;
    return 0;
}

static int give_up_at_second(void *arg)
{
    return ++*(int *)arg == 2;
}

static int setup(void **state)
{
    (void)state;
    (void)cudaGetLastError();
    lk_emu_stream_busy(STREAM, 0, cudaSuccess);
    return 0;
}

/* The emulator's runtime itself, which the cases below rely on. */
static void test_last_error_semantics(void **state)
{
    (void)state;
    assert_int_equal(cudaPeekAtLastError(), cudaSuccess);
    lk_emu_stream_busy(STREAM, 1, cudaSuccess);
    assert_int_equal(cudaStreamQuery(STREAM), cudaErrorNotReady);
    /* Peek leaves it, get returns it once. */
    assert_int_equal(cudaPeekAtLastError(), cudaErrorNotReady);
    assert_int_equal(cudaPeekAtLastError(), cudaErrorNotReady);
    /* A successful call does not clear it. */
    assert_int_equal(cudaStreamQuery(STREAM), cudaSuccess);
    assert_int_equal(cudaGetLastError(), cudaErrorNotReady);
    assert_int_equal(cudaGetLastError(), cudaSuccess);
}

/* The wait returns once the stream is done, watching between the polls
 * that found it busy, and leaves no "not ready" behind. */
static void test_wait_clears_not_ready(void **state)
{
    (void)state;
    int polls = 0;
    lk_emu_stream_busy(STREAM, 3, cudaSuccess);
    assert_int_equal(llama_stream_wait(STREAM, count_polls, &polls, 0), 0);
    assert_int_equal(polls, 3);
    assert_int_equal(cudaPeekAtLastError(), cudaSuccess);
}

/* The broadcast's wait, then the evaluation's first kernel. */
static void test_launch_after_wait(void **state)
{
    (void)state;
    lookup l;
    lookup_init(&l);
    lk_emu_stream_busy(STREAM, 5, cudaSuccess);
    assert_int_equal(llama_stream_wait(STREAM, NULL, NULL, 0), 0);
    assert_int_equal(embed(&l), cudaSuccess);
    assert_true(lookup_matches(&l));
}

/* An error some earlier call left unread is not the launch's status. */
static void test_launch_ignores_stale_error(void **state)
{
    (void)state;
    lookup l;
    lookup_init(&l);
    lk_emu_stream_busy(STREAM, 1, cudaSuccess);
    assert_int_equal(cudaStreamQuery(STREAM), cudaErrorNotReady); /* unread */
    assert_int_equal(embed(&l), cudaSuccess);
    assert_true(lookup_matches(&l));
    assert_int_equal(cudaPeekAtLastError(), cudaSuccess);
}

/* A launch that fails still says so, stale error or not, and consumes its
 * error: the next launch succeeds. */
static void test_launch_failure_reported(void **state)
{
    (void)state;
    lookup l;
    lookup_init(&l);
    lk_emu_stream_busy(STREAM, 1, cudaSuccess);
    assert_int_equal(cudaStreamQuery(STREAM), cudaErrorNotReady);
    lk_emu_fail_next_launch(cudaErrorLaunchFailure);
    assert_int_equal(embed(&l), cudaErrorLaunchFailure);
    for (int i = 0; i < NTOK * DIM; i++)
        assert_true(l.out[i] == -1.0f); /* it did not run */
    assert_int_equal(cudaPeekAtLastError(), cudaSuccess);
    assert_int_equal(embed(&l), cudaSuccess);
    assert_true(lookup_matches(&l));
}

/* A failed stream is reported with its error; a watch that gives up ends
 * the wait, and neither leaves a "not ready" behind. */
static void test_wait_failure_and_give_up(void **state)
{
    (void)state;
    lk_emu_stream_busy(STREAM, 2, cudaErrorLaunchFailure);
    assert_int_equal(llama_stream_wait(STREAM, NULL, NULL, 0),
                     cudaErrorLaunchFailure);
    assert_int_equal(cudaGetLastError(), cudaErrorLaunchFailure);

    int calls = 0;
    lk_emu_stream_busy(STREAM, 10, cudaSuccess);
    assert_int_equal(llama_stream_wait(STREAM, give_up_at_second, &calls, 0),
                     -1);
    assert_int_equal(calls, 2);
    assert_int_equal(cudaPeekAtLastError(), cudaSuccess);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_last_error_semantics, setup),
        cmocka_unit_test_setup(test_wait_clears_not_ready, setup),
        cmocka_unit_test_setup(test_launch_after_wait, setup),
        cmocka_unit_test_setup(test_launch_ignores_stale_error, setup),
        cmocka_unit_test_setup(test_launch_failure_reported, setup),
        cmocka_unit_test_setup(test_wait_failure_and_give_up, setup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
