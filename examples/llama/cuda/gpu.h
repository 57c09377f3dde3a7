/*
 * The device layer of the LLaMa example's GPU path: one device and one
 * stream, device memory with per-category byte accounting, copies, and a
 * GEMM in row-major terms. Two implementations share this header:
 * gpu_cuda.c (CUDA runtime and cuBLAS) and gpu_emu.c (the host: malloc,
 * memcpy and cblas_sgemm with bf16 operands widened), so the model above
 * it (llama_gpu*.c) builds unchanged for a GPU and for the CPU tests.
 *
 * Every function returns 0 on success, else -1 with a message naming the
 * failing call, which gd_error() returns.
 */
#ifndef LLAMA_GPU_DEVICE_H
#define LLAMA_GPU_DEVICE_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

typedef struct gd_dev gd_dev;

/* What a device buffer is for: the model reports its bytes by category. */
typedef enum gd_mem_cat {
    GD_MEM_WEIGHTS = 0,
    GD_MEM_GRADS,
    GD_MEM_ACTIVATIONS,
    GD_MEM_WORKSPACE,
    GD_MEM_NUM_CATS
} gd_mem_cat;

typedef enum gd_dtype { GD_F32 = 0, GD_BF16 = 1 } gd_dtype;

/* Binds to CUDA device `device` and runs on `stream` (a cudaStream_t),
 * or on a non-blocking stream of its own when stream is NULL. *out is NULL
 * on failure, with the message in err. */
int gd_create(gd_dev **out, int device, void *stream, char *err,
               size_t errlen);
void gd_destroy(gd_dev *d); /* NULL is fine; waits for the stream */
const char *gd_error(const gd_dev *d);
void *gd_stream(const gd_dev *d);
int gd_device(const gd_dev *d);
/* Makes the device current for the calling thread (CUDA keeps the
 * current device per thread; every entry point of the model calls it). */
int gd_activate(gd_dev *d);

/* Number of usable devices; 0 with a reason in err when there is none
 * (no driver, no device). The emulation has one. */
int gd_device_count(char *err, size_t errlen);
/* The device's own view of its memory (cudaMemGetInfo). */
int gd_mem_info(gd_dev *d, uint64_t *free_bytes, uint64_t *total_bytes);

/* Device memory of `bytes` (0 gives NULL), counted under cat; what names
 * the buffer in an error message. gd_free takes the same bytes and cat
 * back; NULL is fine. */
int gd_alloc(gd_dev *d, void **p, size_t bytes, gd_mem_cat cat,
              const char *what);
void gd_free(gd_dev *d, void *p, size_t bytes, gd_mem_cat cat);
/* Bytes held now and the peak of each category since create, and the
 * peak of their sum. Any pointer may be NULL. */
void gd_mem_usage(const gd_dev *d, uint64_t now[GD_MEM_NUM_CATS],
                   uint64_t peak[GD_MEM_NUM_CATS], uint64_t *peak_total);

/* Copies on the stream. upload returns once the host buffer may be
 * reused; download waits for the stream (the host reads the result). */
int gd_upload(gd_dev *d, void *dst, const void *src, size_t bytes);
int gd_download(gd_dev *d, void *dst, const void *src, size_t bytes);
int gd_memset(gd_dev *d, void *dst, int value, size_t bytes);
int gd_copy(gd_dev *d, void *dst, const void *src, size_t bytes);
int gd_sync(gd_dev *d);

/* Turns a kernel launcher's cudaError_t (lk.h) into this layer's error:
 * 0 stays 0; otherwise -1 with "what: <the runtime's message>". */
int gd_check_launch(gd_dev *d, int cuda_error, const char *what);

/*
 * C[M x N] = alpha * op(A) op(B) + beta * C, all row-major with leading
 * dimensions (elements between rows) lda, ldb, ldc: op(A) is A [M x K], or
 * A^T with A stored [K x M] when transa; op(B) is B [K x N], or B^T with B
 * stored [N x K] when transb. A and B have one dtype: bf16, with C bf16
 * or f32, or f32 with C f32 (the combinations cublasGemmEx computes with
 * f32 compute); the products are computed in f32 and C rounded to its
 * dtype.
 */
int gd_gemm(gd_dev *d, int transa, int transb, int M, int N, int K,
             float alpha, const void *A, int lda, const void *B, int ldb,
             gd_dtype ab_type, float beta, void *C, int ldc,
             gd_dtype c_type);

/*
 * The one mapping of a row-major GEMM onto a column-major BLAS (cuBLAS):
 * a row-major X [r x c] with leading dimension ld is, read column-major,
 * X^T [c x r] with the same ld. So C^T [N x M] = op(B)^T op(A)^T is the
 * column-major product of B (transposed iff transb) and A (transposed iff
 * transa): gemm(opB, opA, N, M, K, B, ldb, A, lda, C, ldc). Both
 * implementations call it, so the emulated tests exercise it.
 */
typedef struct gd_colmajor_gemm {
    int trans_first, trans_second; /* op of the first / second operand */
    int m, n, k;                   /* column-major C is m x n */
    const void *first, *second;
    int ld_first, ld_second;
} gd_colmajor_gemm;

static inline gd_colmajor_gemm gd_gemm_to_colmajor(int transa, int transb,
                                                     int M, int N, int K,
                                                     const void *A, int lda,
                                                     const void *B, int ldb)
{
    gd_colmajor_gemm g;
    g.trans_first = transb;
    g.trans_second = transa;
    g.m = N;
    g.n = M;
    g.k = K;
    g.first = B;
    g.ld_first = ldb;
    g.second = A;
    g.ld_second = lda;
    return g;
}

/* bf16 <-> f32 on the host, round to nearest even (NaN stays a quiet
 * NaN): what the kernels and cuBLAS do when they write bf16. */
static inline float gd_bf16_to_f32(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static inline uint16_t gd_f32_to_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((u >> 16) | 0x40u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

/* The checks both implementations make before a GEMM: 0, or -1 with the
 * reason in err. */
static inline int gd_gemm_check(char *err, size_t errlen, int M, int N,
                                 int K, const void *A, int lda, int transa,
                                 const void *B, int ldb, int transb,
                                 const void *C, int ldc, gd_dtype ab_type,
                                 gd_dtype c_type)
{
    if (M < 1 || N < 1 || K < 1) {
        snprintf(err, errlen, "gemm: M %d, N %d, K %d must be >= 1", M, N, K);
        return -1;
    }
    if (!A || !B || !C) {
        snprintf(err, errlen, "gemm: %s is NULL", !A ? "A" : !B ? "B" : "C");
        return -1;
    }
    if ((ab_type != GD_F32 && ab_type != GD_BF16) ||
        (c_type != GD_F32 && c_type != GD_BF16)) {
        snprintf(err, errlen, "gemm: dtypes %d (A, B) and %d (C) are not "
                 "f32 or bf16", (int)ab_type, (int)c_type);
        return -1;
    }
    if (ab_type == GD_F32 && c_type != GD_F32) {
        /* Not a combination cublasGemmEx computes in f32. */
        snprintf(err, errlen, "gemm: f32 operands need an f32 output");
        return -1;
    }
    int need_a = transa ? M : K, need_b = transb ? K : N;
    if (lda < need_a || ldb < need_b || ldc < N) {
        snprintf(err, errlen, "gemm %dx%dx%d (transa %d, transb %d): lda %d "
                 "(>= %d), ldb %d (>= %d), ldc %d (>= %d)", M, N, K, transa,
                 transb, lda, need_a, ldb, need_b, ldc, N);
        return -1;
    }
    return 0;
}

#endif /* LLAMA_GPU_DEVICE_H */
