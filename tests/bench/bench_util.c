/* Timing, parallel copy and input helpers for the CPU benchmark. */
#include "bench_util.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

double bench_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int compare_doubles(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Median, min and max of times[0 .. reps-1] (sorted in place). */
static void summarise(double *times, int reps, bench_timing *out)
{
    qsort(times, (size_t)reps, sizeof *times, compare_doubles);
    out->reps = reps;
    out->min = times[0];
    out->max = times[reps - 1];
    out->median = reps % 2 ? times[reps / 2]
                           : 0.5 * (times[reps / 2 - 1] + times[reps / 2]);
}

/* Runs fn once; adds its duration to *spent and stores it in *time. */
static owl_status timed_call(bench_fn fn, void *arg, double *time,
                             double *spent)
{
    double t0 = bench_now();
    owl_status s = fn(arg);
    *time = bench_now() - t0;
    *spent += *time;
    return s;
}

owl_status bench_measure_pair(bench_fn fn_a, void *arg_a, bench_fn fn_b,
                              void *arg_b, int warmup, int min_reps,
                              int max_reps, double budget_s,
                              bench_timing *out_a, bench_timing *out_b)
{
    memset(out_a, 0, sizeof *out_a);
    if (out_b != NULL)
        memset(out_b, 0, sizeof *out_b);
    for (int i = 0; i < warmup; i++) {
        owl_status s = fn_a(arg_a);
        if (s == OWL_OK && fn_b != NULL)
            s = fn_b(arg_b);
        if (s != OWL_OK)
            return s;
    }
    double *times_a = malloc(2 * (size_t)max_reps * sizeof *times_a);
    if (times_a == NULL)
        return OWL_ERR_OUT_OF_MEMORY;
    double *times_b = times_a + max_reps;
    double spent = 0;
    int reps = 0;
    owl_status s = OWL_OK;
    while (reps < min_reps || (reps < max_reps && spent < budget_s)) {
        s = timed_call(fn_a, arg_a, &times_a[reps], &spent);
        if (s == OWL_OK && fn_b != NULL)
            s = timed_call(fn_b, arg_b, &times_b[reps], &spent);
        if (s != OWL_OK)
            break;
        reps++;
    }
    if (s == OWL_OK) {
        summarise(times_a, reps, out_a);
        if (fn_b != NULL)
            summarise(times_b, reps, out_b);
    }
    free(times_a);
    return s;
}

owl_status bench_measure(bench_fn fn, void *arg, int warmup, int min_reps,
                         int max_reps, double budget_s, bench_timing *out)
{
    return bench_measure_pair(fn, arg, NULL, NULL, warmup, min_reps, max_reps,
                              budget_s, out, NULL);
}

/* One thread's share of a streaming kernel: `kind` 0 copies src to dst,
 * 1 updates dst in place as dst = 0.5 * dst + src (a STREAM-style triad
 * that reads two arrays and writes one of them back, the access pattern of
 * an in-place optimizer update). */
typedef struct stream_piece {
    int kind;
    char *dst;
    const char *src;
    size_t bytes;
} stream_piece;

static void *stream_piece_main(void *vp)
{
    stream_piece *p = vp;
    if (p->kind == 0) {
        memcpy(p->dst, p->src, p->bytes);
    } else {
        float *x = (float *)(void *)p->dst;
        const float *y = (const float *)(const void *)p->src;
        size_t n = p->bytes / sizeof(float);
        for (size_t i = 0; i < n; i++)
            x[i] = 0.5f * x[i] + y[i];
    }
    return NULL;
}

#define BENCH_MAX_COPY_THREADS 256

static int parallel_stream(int kind, void *dst, const void *src, size_t bytes,
                           int num_threads)
{
    if (num_threads < 1)
        num_threads = 1;
    if (num_threads > BENCH_MAX_COPY_THREADS)
        num_threads = BENCH_MAX_COPY_THREADS;
    stream_piece pieces[BENCH_MAX_COPY_THREADS];
    pthread_t threads[BENCH_MAX_COPY_THREADS];
    /* Pieces of whole cache lines so no two threads share one. */
    size_t per = (bytes / (size_t)num_threads + 63) & ~(size_t)63;
    for (int i = 0; i < num_threads; i++) {
        size_t begin = per * (size_t)i < bytes ? per * (size_t)i : bytes;
        size_t end = begin + per < bytes ? begin + per : bytes;
        pieces[i] = (stream_piece){kind, (char *)dst + begin,
                                   (const char *)src + begin, end - begin};
    }
    int started = 1, rc = 0;
    for (; started < num_threads; started++)
        if (pthread_create(&threads[started], NULL, stream_piece_main,
                           &pieces[started]) != 0) {
            rc = -1;
            break;
        }
    stream_piece_main(&pieces[0]);
    for (int i = 1; i < started; i++)
        pthread_join(threads[i], NULL);
    return rc;
}

int bench_parallel_copy(void *dst, const void *src, size_t bytes,
                        int num_threads)
{
    return parallel_stream(0, dst, src, bytes, num_threads);
}

int bench_parallel_triad(float *x, const float *y, size_t n, int num_threads)
{
    return parallel_stream(1, x, y, n * sizeof(float), num_threads);
}

void bench_cpu_model(char *buf, size_t size)
{
    snprintf(buf, size, "unknown");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (f == NULL)
        return;
    char line[512];
    while (fgets(line, sizeof line, f) != NULL) {
        if (strncmp(line, "model name", 10) != 0)
            continue;
        const char *colon = strchr(line, ':');
        if (colon == NULL)
            continue;
        colon++;
        while (*colon == ' ' || *colon == '\t')
            colon++;
        snprintf(buf, size, "%s", colon);
        buf[strcspn(buf, "\n")] = '\0';
        break;
    }
    fclose(f);
}

void *bench_alloc(size_t bytes)
{
    void *p = NULL;
    if (posix_memalign(&p, 4096, bytes ? bytes : 1) != 0)
        return NULL;
    memset(p, 0, bytes);
    return p;
}

static uint64_t splitmix(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static double unit_interval(uint64_t *s)
{
    return (double)(splitmix(s) >> 11) * (1.0 / 9007199254740992.0);
}

void bench_fill_uniform(float *x, size_t n, uint64_t seed, float scale)
{
    uint64_t s = seed;
    for (size_t i = 0; i < n; i++)
        x[i] = scale * (float)(2.0 * unit_interval(&s) - 1.0);
}

void bench_fill_normal(float *x, size_t n, uint64_t seed)
{
    uint64_t s = seed ^ 0x5DEECE66Dull;
    for (size_t i = 0; i < n; i += 2) {
        double u1 = 1.0 - unit_interval(&s); /* (0, 1]: log is finite */
        double u2 = unit_interval(&s);
        double r = sqrt(-2.0 * log(u1));
        x[i] = (float)(r * cos(6.283185307179586 * u2));
        if (i + 1 < n)
            x[i + 1] = (float)(r * sin(6.283185307179586 * u2));
    }
}

/* Round to nearest even; the inputs here are finite. */
static uint16_t f32_to_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

void bench_fill_uniform_bf16(uint16_t *x, size_t n, uint64_t seed,
                             float scale)
{
    uint64_t s = seed;
    for (size_t i = 0; i < n; i++)
        x[i] = f32_to_bf16(scale * (float)(2.0 * unit_interval(&s) - 1.0));
}
