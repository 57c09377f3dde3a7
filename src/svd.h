/* Top-r singular vectors of one side of an m x n f32 matrix, for the GaLore
 * projector: exact (LAPACK gesdd) or randomized (Halko range finder with
 * power iterations, then a small SVD). owl__svd_init only plans: it sizes
 * every array and lays them out in one workspace of `bytes` bytes, which
 * the caller provides to each compute call (the projector passes a part of
 * its context's shared scratch). The compute calls never allocate.
 *
 * A basis is returned as r rows of length d ("vectors as rows"): d = m for
 * left singular vectors (the columns of U), d = n for right ones (the rows
 * of V^T). Each row is flipped so its largest-magnitude entry is positive
 * (the first such entry on ties). */
#ifndef OWLORE_SVD_H
#define OWLORE_SVD_H

#include "internal.h"

#include <lapacke.h>

typedef struct owl_svd_work {
    owl_svd_method method;
    int64_t m, n;     /* the matrix G: m x n, row-major */
    int64_t r;        /* vectors kept */
    int64_t k;        /* EXACT: min(m, n); RANDOMIZED: sketch width */
    bool left;        /* left (U) or right (V^T) vectors */
    uint64_t power_iters;
    uint64_t seed;
    lapack_int lwork;    /* gesdd */
    lapack_int qr_lwork; /* RANDOMIZED: geqrf / orgqr */

    /* Byte offsets into the workspace, each 64-byte aligned:
     * the small or full SVD (sgesdd on a column-major view): s (k singular
     * values), u and vt (U and V^T of the SVD LAPACK sees), work, iwork
     * (8k lapack_int); RANDOMIZED only: range (k x d range basis), sketch
     * (k x e sketch / projected matrix, e the other side), both stored
     * vectors-as-rows, tau and qr_work. */
    size_t off_s, off_u, off_vt, off_work, off_iwork;
    size_t off_range, off_sketch, off_tau, off_qr_work;
    size_t bytes; /* the whole workspace */
} owl_svd_work;

/* Plans the workspace. method/left/r/k must be valid (the projector
 * validated them). Fails with UNSUPPORTED when a size does not fit
 * LAPACK's 32-bit integers, OUT_OF_MEMORY when the total overflows. */
owl_status owl__svd_init(owl_context *ctx, owl_svd_work *w,
                         owl_svd_method method, int64_t m, int64_t n,
                         int64_t r, bool left, uint64_t oversample,
                         uint64_t power_iters, uint64_t seed);

/* In both compute calls `scratch` is 64-byte aligned and holds at least
 * w->bytes bytes; its contents are undefined afterwards. */

/* EXACT: basis of `a`, a dense m x n f32 matrix that is destroyed. */
owl_status owl__svd_exact(owl_context *ctx, const owl_svd_work *w, float *a,
                          float *basis, void *scratch);

/* RANDOMIZED's range finder multiplies G with sketches of entries near 1,
 * so a G near the ends of f32's range (|G| ~ 1e37, or subnormal) would
 * overflow or flush those products and end in a NaN LAPACK refuses. The
 * subspace of 2^e G is that of G, and scaling by a power of two is exact:
 * owl__svd_safe_shift gives the e that brings max|G| into [1, 2) when it is
 * outside [2^-64, 2^64], else 0 (no copy, the same bits as ever);
 * owl__svd_scale multiplies a dense m x n f32 matrix by 2^e in place. */
int owl__svd_safe_shift(const float *g, int64_t ldg, int64_t m, int64_t n);
void owl__svd_scale(float *a, int64_t count, int shift);

/* RANDOMIZED: basis of g (m x n, row stride ldg; not modified). `draw`
 * numbers the sketch so each refresh draws a fresh, reproducible one. */
owl_status owl__svd_randomized(owl_context *ctx, const owl_svd_work *w,
                               const float *g, int64_t ldg, uint64_t draw,
                               float *basis, void *scratch);

/* Flips each of `count` rows of length `len` so its largest-magnitude
 * entry (first on ties) is positive. */
void owl__canonical_signs(float *rows, int64_t count, int64_t len);

#endif /* OWLORE_SVD_H */
