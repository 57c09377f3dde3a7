/*
 * The device layer of gpu.h on the host, for the CPU tests of the GPU
 * path: "device" memory is malloc'd, copies are memcpy, the stream is a
 * token that the emulated kernels ignore (they run when launched), and the
 * GEMM goes through the same column-major mapping as cuBLAS, computed by
 * cblas_sgemm on operands widened from bf16 to f32 and rounded back to the
 * output dtype (round to nearest even, as the GPU writes bf16).
 */
#include "gpu.h"
#include "gpu_account.h"

#include <cblas.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

struct gd_dev {
    int device;
    char stream_token; /* its address is the emulated stream */
    gd_account acct;
    char err[512];
};

static int fail(gd_dev *d, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(d->err, sizeof d->err, fmt, ap);
    va_end(ap);
    return -1;
}

int gd_device_count(char *err, size_t errlen)
{
    (void)err;
    (void)errlen;
    return 1;
}

int gd_create(gd_dev **out, int device, void *stream, char *err,
               size_t errlen)
{
    if (!out) {
        snprintf(err, errlen, "gd_create: out is NULL");
        return -1;
    }
    *out = NULL;
    if (device != 0) {
        snprintf(err, errlen, "device %d: the emulation has device 0 only",
                 device);
        return -1;
    }
    if (stream) {
        snprintf(err, errlen, "the emulated device runs on its own stream "
                 "only (stream must be NULL)");
        return -1;
    }
    gd_dev *d = calloc(1, sizeof *d);
    if (!d) {
        snprintf(err, errlen, "out of host memory for the device state");
        return -1;
    }
    d->device = device;
    *out = d;
    return 0;
}

void gd_destroy(gd_dev *d) { free(d); }
const char *gd_error(const gd_dev *d) { return d ? d->err : "device is NULL"; }
void *gd_stream(const gd_dev *d) { return (void *)&d->stream_token; }
int gd_device(const gd_dev *d) { return d->device; }
int gd_activate(gd_dev *d) { (void)d; return 0; }

int gd_mem_info(gd_dev *d, uint64_t *free_bytes, uint64_t *total_bytes)
{
    /* No device of its own: the emulation reports what it allocated. */
    *free_bytes = 0;
    *total_bytes = d->acct.total;
    return 0;
}

int gd_alloc(gd_dev *d, void **p, size_t bytes, gd_mem_cat cat,
              const char *what)
{
    *p = NULL;
    if ((unsigned)cat >= GD_MEM_NUM_CATS)
        return fail(d, "gd_alloc (%s): category %d", what, (int)cat);
    if (bytes == 0)
        return 0;
    *p = malloc(bytes);
    if (!*p)
        return fail(d, "malloc (%s, %zu bytes): out of memory", what, bytes);
    /* Fresh device memory holds garbage; so does the emulated one, so a
     * read before write shows in the tests (not zero by luck). */
    memset(*p, 0xA5, bytes);
    gd_account_alloc(&d->acct, cat, bytes);
    return 0;
}

void gd_free(gd_dev *d, void *p, size_t bytes, gd_mem_cat cat)
{
    if (!p || !d || (unsigned)cat >= GD_MEM_NUM_CATS)
        return;
    free(p);
    gd_account_free(&d->acct, cat, bytes);
}

void gd_mem_usage(const gd_dev *d, uint64_t now[GD_MEM_NUM_CATS],
                   uint64_t peak[GD_MEM_NUM_CATS], uint64_t *peak_total)
{
    gd_account_usage(&d->acct, now, peak, peak_total);
}

int gd_upload(gd_dev *d, void *dst, const void *src, size_t bytes)
{
    (void)d;
    if (bytes)
        memcpy(dst, src, bytes);
    return 0;
}

int gd_download(gd_dev *d, void *dst, const void *src, size_t bytes)
{
    return gd_upload(d, dst, src, bytes);
}

int gd_memset(gd_dev *d, void *dst, int value, size_t bytes)
{
    (void)d;
    if (bytes)
        memset(dst, value, bytes);
    return 0;
}

int gd_copy(gd_dev *d, void *dst, const void *src, size_t bytes)
{
    (void)d;
    if (bytes)
        memmove(dst, src, bytes);
    return 0;
}

int gd_sync(gd_dev *d) { (void)d; return 0; }

int gd_check_launch(gd_dev *d, int cuda_error, const char *what)
{
    if (cuda_error == 0)
        return 0;
    return fail(d, "%s: emulated launch failed with error %d", what,
                cuda_error);
}

/* An f32 copy of a column-major rows x cols matrix with leading dimension
 * ld (only the elements the matrix covers are read). */
static float *widen(const void *x, gd_dtype t, int rows, int cols, int ld)
{
    size_t n = (size_t)ld * (size_t)(cols - 1) + (size_t)rows;
    float *y = malloc(n * sizeof *y);
    if (!y)
        return NULL;
    if (t == GD_F32) {
        memcpy(y, x, n * sizeof *y);
    } else {
        const uint16_t *h = x;
        for (size_t i = 0; i < n; i++)
            y[i] = gd_bf16_to_f32(h[i]);
    }
    return y;
}

int gd_gemm(gd_dev *d, int transa, int transb, int M, int N, int K,
             float alpha, const void *A, int lda, const void *B, int ldb,
             gd_dtype ab_type, float beta, void *C, int ldc,
             gd_dtype c_type)
{
    if (gd_gemm_check(d->err, sizeof d->err, M, N, K, A, lda, transa, B, ldb,
                       transb, C, ldc, ab_type, c_type) != 0)
        return -1;
    gd_colmajor_gemm g = gd_gemm_to_colmajor(transa, transb, M, N, K, A,
                                               lda, B, ldb);
    /* Stored shapes (column-major) of the two operands and of C. */
    int r1 = g.trans_first ? g.k : g.m, c1 = g.trans_first ? g.m : g.k;
    int r2 = g.trans_second ? g.n : g.k, c2 = g.trans_second ? g.k : g.n;
    float *a = widen(g.first, ab_type, r1, c1, g.ld_first);
    float *b = widen(g.second, ab_type, r2, c2, g.ld_second);
    float *c = c_type == GD_F32 ? (float *)C : widen(C, c_type, g.m, g.n, ldc);
    if (!a || !b || !c) {
        free(a);
        free(b);
        if (c != C)
            free(c);
        return fail(d, "gemm %dx%dx%d: out of host memory", M, N, K);
    }
    if (c_type != GD_F32 && beta == 0.0f) {
        /* BLAS does not read C when beta is 0; neither does cuBLAS. */
        size_t n = (size_t)ldc * (size_t)(g.n - 1) + (size_t)g.m;
        memset(c, 0, n * sizeof *c);
    }
    cblas_sgemm(CblasColMajor, g.trans_first ? CblasTrans : CblasNoTrans,
                g.trans_second ? CblasTrans : CblasNoTrans, g.m, g.n, g.k,
                alpha, a, g.ld_first, b, g.ld_second, beta, c, ldc);
    if (c_type != GD_F32) {
        uint16_t *h = C;
        for (int j = 0; j < g.n; j++)
            for (int i = 0; i < g.m; i++) {
                size_t at = (size_t)j * ldc + i;
                h[at] = gd_f32_to_bf16(c[at]);
            }
        free(c);
    }
    free(a);
    free(b);
    return 0;
}
