/*
 * Full-rank AdamW on the GPU at LLM scale: 1e9 parameters with bf16
 * weights and gradients, with f32 and with bf16 moments. The step is
 * bandwidth bound, so it is reported in GB/s of the bytes it must move
 * (read w, g, m, v; write w, m, v) next to a device-to-device cudaMemcpy
 * moving the same number of bytes (reads plus writes) in the same run;
 * the target is >= 80% of the copy's rate. Every figure is the median of
 * several runs after a warm-up, timed with CUDA events on the context's
 * stream; the copy and the step alternate so both see the same device.
 * The step also reads the gradient once more for its NaN/Inf check, which
 * is not counted. Exits 77 (SKIP) without a CUDA device.
 */
#include "bench_gpu_check.h"

#include <owlore/owlore.h>

#include <cuda_runtime_api.h>
#include <stdio.h>
#include <stdlib.h>

#define PARAMS 1000000000LL
#define ROWS 100000LL
#define COLS 10000LL
#define WARMUP 2
#define REPS 9
#define TARGET 0.80


static int cmp_float(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

static float median(float *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_float);
    return v[n / 2];
}

typedef struct {
    owl_context *ctx;
    cudaStream_t stream;
    owl_adamw *adam;
    owl_tensor w, g;
    void *src, *dst;
    size_t copy_bytes;
    cudaEvent_t start, stop;
} bench;

/* Milliseconds of one AdamW step (which = 0) or one copy (which = 1). */
static float time_one(bench *b, int which)
{
    CK(cudaEventRecord(b->start, b->stream));
    if (which == 0)
        OK(b->ctx, owl_adamw_full(b->adam, &b->w, &b->g, 1e-6));
    else
        CK(cudaMemcpyAsync(b->dst, b->src, b->copy_bytes,
                           cudaMemcpyDeviceToDevice, b->stream));
    CK(cudaEventRecord(b->stop, b->stream));
    CK(cudaEventSynchronize(b->stop));
    float ms = 0;
    CK(cudaEventElapsedTime(&ms, b->start, b->stop));
    return ms;
}

static void run(bench *b, owl_dtype moments, const char *label)
{
    owl_adamw_options o;
    owl_adamw_options_init(&o, sizeof o);
    o.moment_dtype = moments;
    o.weight_decay = 0.01;
    OK(b->ctx, owl_adamw_create(b->ctx, &o, ROWS, COLS, &b->adam));
    size_t ms = moments == OWL_DTYPE_F32 ? 4 : 2;
    /* read w, g, m, v; write w, m, v */
    double bytes = (double)PARAMS * (double)(2 + 2 + 2 * ms + 2 + 2 * ms);
    b->copy_bytes = (size_t)(bytes / 2); /* a copy reads and writes each */

    float step_ms[REPS], copy_ms[REPS];
    for (int i = 0; i < WARMUP; i++) {
        time_one(b, 0);
        time_one(b, 1);
    }
    for (int i = 0; i < REPS; i++) {
        step_ms[i] = time_one(b, 0);
        copy_ms[i] = time_one(b, 1);
    }
    double t_step = median(step_ms, REPS) * 1e-3;
    double t_copy = median(copy_ms, REPS) * 1e-3;
    double gbs_step = bytes / t_step / 1e9, gbs_copy = bytes / t_copy / 1e9;
    double ratio = gbs_step / gbs_copy;
    printf("AdamW full, 1e9 params, bf16 w/g, %s moments: %8.3f ms %8.1f GB/s\n",
           label, 1e3 * t_step, gbs_step);
    printf("  D2D cudaMemcpy of the same %.1f GB:            %8.3f ms %8.1f GB/s\n",
           bytes / 1e9, 1e3 * t_copy, gbs_copy);
    printf("  ratio %.1f%% of the copy (target >= %.0f%%): %s\n", 100 * ratio,
           100 * TARGET, ratio >= TARGET ? "met" : "NOT met");
    owl_adamw_free(b->adam);
    b->adam = NULL;
}

int main(void)
{
    int devices = 0;
    if (!owl_backend_available(OWL_BACKEND_CUDA) ||
        cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
        printf("SKIP: no CUDA backend or device\n");
        return 77;
    }
    bench b = {0};
    owl_context_options co;
    owl_context_options_init(&co, sizeof co);
    co.backend = OWL_BACKEND_CUDA;
    if (owl_context_create(&b.ctx, &co) != OWL_OK) {
        fprintf(stderr, "cannot create a CUDA context\n");
        return 1;
    }
    struct cudaDeviceProp prop;
    CK(cudaGetDeviceProperties(&prop, 0));
    printf("device: %s\n", prop.name);
    CK(cudaStreamCreateWithFlags(&b.stream, cudaStreamNonBlocking));
    OK(b.ctx, owl_context_set_stream(b.ctx, b.stream));
    CK(cudaEventCreate(&b.start));
    CK(cudaEventCreate(&b.stop));

    void *w = NULL, *g = NULL;
    CK(cudaMalloc(&w, (size_t)PARAMS * 2));
    CK(cudaMalloc(&g, (size_t)PARAMS * 2));
    /* bf16 0x3f3f = 0.746 and 0x3c3c = 0.0115: finite, ordinary values. */
    CK(cudaMemset(w, 0x3f, (size_t)PARAMS * 2));
    CK(cudaMemset(g, 0x3c, (size_t)PARAMS * 2));
    /* The largest copy: the f32-moment step's 22 bytes per parameter. */
    size_t max_copy = (size_t)PARAMS * 11;
    CK(cudaMalloc(&b.src, max_copy));
    CK(cudaMalloc(&b.dst, max_copy));
    CK(cudaMemset(b.src, 1, max_copy));
    CK(cudaDeviceSynchronize());
    owl_tensor_init(&b.w, w, OWL_DTYPE_BF16, ROWS, COLS);
    owl_tensor_init(&b.g, g, OWL_DTYPE_BF16, ROWS, COLS);

    run(&b, OWL_DTYPE_F32, "f32 ");
    run(&b, OWL_DTYPE_BF16, "bf16");

    CK(cudaFree(w));
    CK(cudaFree(g));
    CK(cudaFree(b.src));
    CK(cudaFree(b.dst));
    CK(cudaEventDestroy(b.start));
    CK(cudaEventDestroy(b.stop));
    owl_context_free(b.ctx);
    CK(cudaStreamDestroy(b.stream));
    return 0;
}
