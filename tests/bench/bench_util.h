/* Timing, parallel copy and input helpers for the CPU benchmark. */
#ifndef OWL_BENCH_UTIL_H
#define OWL_BENCH_UTIL_H

#include <stddef.h>
#include <stdint.h>

#include <owlore/owlore.h>

/* Monotonic wall-clock time in seconds. */
double bench_now(void);

/* One timed operation; returns OWL_OK or the failing call's status. */
typedef owl_status (*bench_fn)(void *arg);

typedef struct bench_timing {
    double median; /* seconds */
    double min;
    double max;
    int reps;
} bench_timing;

/*
 * Runs fn `warmup` times untimed, then times it at least min_reps and at
 * most max_reps times, stopping early once budget_s seconds of timed runs
 * have passed (so a slow machine still finishes). Stops at the first
 * failing call and returns its status.
 */
owl_status bench_measure(bench_fn fn, void *arg, int warmup, int min_reps,
                         int max_reps, double budget_s, bench_timing *out);

/* The same for an operation and its baseline, run alternately (a, b, a,
 * b, ...) so that both see the same load from anything else running on
 * the machine; the budget counts both. */
owl_status bench_measure_pair(bench_fn fn_a, void *arg_a, bench_fn fn_b,
                              void *arg_b, int warmup, int min_reps,
                              int max_reps, double budget_s,
                              bench_timing *out_a, bench_timing *out_b);

/* memcpy of `bytes` split into num_threads contiguous pieces, one thread
 * each (the calling thread takes the first piece). Returns 0 on success. */
int bench_parallel_copy(void *dst, const void *src, size_t bytes,
                        int num_threads);

/* x[i] = 0.5 x[i] + y[i] over n floats, split like bench_parallel_copy:
 * reads two streams and writes one back in place, as an optimizer does. */
int bench_parallel_triad(float *x, const float *y, size_t n, int num_threads);

/* Model name of the first CPU in /proc/cpuinfo, or "unknown". */
void bench_cpu_model(char *buf, size_t size);

/* Page-aligned allocation of `bytes`, touched so that no page fault lands
 * in a timed region; NULL on failure. Free with free(). */
void *bench_alloc(size_t bytes);

/* Deterministic inputs: uniform in [-scale, scale), standard normal. */
void bench_fill_uniform(float *x, size_t n, uint64_t seed, float scale);
void bench_fill_normal(float *x, size_t n, uint64_t seed);
/* Uniform values in [-scale, scale) rounded to bfloat16. */
void bench_fill_uniform_bf16(uint16_t *x, size_t n, uint64_t seed,
                             float scale);

#endif
