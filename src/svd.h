/* Top-r singular vectors of one side of an m x n f32 matrix, for the GaLore
 * projector: exact (LAPACK gesdd) or randomized (Halko range finder with
 * power iterations, then a small SVD). All workspace is sized and allocated
 * by owl__svd_init; the compute calls never allocate.
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

    /* The small or full SVD: sgesdd on a column-major view. */
    float *s;         /* k singular values */
    float *u;         /* column-major U of the SVD LAPACK sees */
    float *vt;        /* column-major V^T of the SVD LAPACK sees */
    float *work;
    lapack_int *iwork; /* 8k entries */
    lapack_int lwork;

    /* RANDOMIZED only: k x d range basis and k x e sketch / projected
     * matrix (e is the other side), both stored vectors-as-rows. */
    float *range;
    float *sketch;
    float *tau;
    float *qr_work;
    lapack_int qr_lwork;
} owl_svd_work;

/* Sizes and allocates the workspace. method/left/r/k must be valid (the
 * projector validated them). Fails with OUT_OF_MEMORY, or UNSUPPORTED when
 * a size does not fit LAPACK's 32-bit integers. */
owl_status owl__svd_init(owl_context *ctx, owl_svd_work *w,
                         owl_svd_method method, int64_t m, int64_t n,
                         int64_t r, bool left, uint64_t oversample,
                         uint64_t power_iters, uint64_t seed);
void owl__svd_release(owl_svd_work *w);

/* EXACT: basis of `a`, a dense m x n f32 matrix that is destroyed. */
owl_status owl__svd_exact(owl_context *ctx, owl_svd_work *w, float *a,
                          float *basis);

/* RANDOMIZED: basis of g (m x n, row stride ldg; not modified). `draw`
 * numbers the sketch so each refresh draws a fresh, reproducible one. */
owl_status owl__svd_randomized(owl_context *ctx, owl_svd_work *w,
                               const float *g, int64_t ldg, uint64_t draw,
                               float *basis);

/* Flips each of `count` rows of length `len` so its largest-magnitude
 * entry (first on ties) is positive. */
void owl__canonical_signs(float *rows, int64_t count, int64_t len);

#endif /* OWLORE_SVD_H */
