/* The CUDA backend of the GaLore projector, the fused low-rank AdamW step
 * and PL_Alpha_Hill (src/cuda_galore.c, src/cuda_esd.c). Compiled only
 * with OWL_HAVE_CUDA; the public entry points in galore.c, adamw.c and
 * esd.c validate their arguments on the host, then hand CUDA contexts to
 * these functions.
 *
 * On a CUDA projector, struct owl_galore's basis, next_basis and lowrank
 * are device memory, and p->cuda holds the plan below. */
#ifndef OWLORE_CUDA_GALORE_H
#define OWLORE_CUDA_GALORE_H

#include "galore_internal.h"

#include "../kernels/galore_kernels.h"

/* Device-side words of a projector (p->cuda->state). */
enum {
    OWL_GSTATE_SVD_INFO = 1, /* cuSOLVER gesvd info of the last refresh */
    OWL_GSTATE_QR_INFO = 2,  /* geqrf / orgqr info (argument errors only) */
    OWL_GSTATE_WORDS = 16    /* 64 bytes, then the coefficients */
};

typedef struct owl_galore_cuda {
    int32_t *state;              /* device, OWL_GSTATE_WORDS words */
    owl_lowrank_coeffs *coeffs;  /* device, right after state (same block) */
    void *params;                /* cusolverDnParams_t of the 64-bit SVD */
    void *host_work;             /* Xgesvd's host workspace (may be NULL) */
    size_t host_work_bytes;
    size_t dev_work_bytes;       /* Xgesvd's device workspace */
    int32_t qr_lwork;            /* RANDOMIZED: geqrf/orgqr floats */
    int64_t k;                   /* EXACT: min(m, n); RANDOMIZED: width */
    /* EXACT: cuSOLVER factors a column-major svd_rows x svd_cols matrix
     * (rows >= cols, as gesvd needs): G^T when n >= m, else G. need_u: the
     * kept vectors are its U (else its V^T). */
    int64_t svd_rows, svd_cols;
    bool need_u;
    /* Byte offsets into the context's device scratch (64-byte aligned):
     * g32: the m x n f32 gradient copy, also the back-projection block;
     * EXACT: a (the matrix cuSOLVER destroys), s, u or vt, work;
     * RANDOMIZED: range (k x d), sketch (k x e), tau, qr work, then the
     * small SVD's s, vt (k x k) and work. */
    size_t off_g32, off_a, off_s, off_u, off_vt, off_work;
    size_t off_range, off_sketch, off_tau, off_qr;
    size_t bytes;
} owl_galore_cuda;

/* Completes owl_galore_create on a CUDA context: p's host fields are set;
 * allocates the device basis, next basis, low-rank buffer and state,
 * plans the SVD (workspace queries) and reserves the scratch. On failure
 * owl_galore_free(p) releases whatever was made. */
owl_status owl__cuda_galore_create(owl_galore *p);
/* Releases the device side (p itself stays). */
void owl__cuda_galore_free(owl_galore *p);

/* The public calls after their host validation. */
owl_status owl__cuda_galore_project(owl_galore *p, uint64_t iter,
                                    const owl_tensor *grad, owl_tensor *out,
                                    int32_t *refreshed);
owl_status owl__cuda_galore_project_back(owl_galore *p,
                                         const owl_tensor *lowrank,
                                         owl_tensor *out);
owl_status owl__cuda_galore_refresh(owl_galore *p, const owl_tensor *grad);
owl_status owl__cuda_galore_get_basis(const owl_galore *p, owl_tensor *out);

/* owl_adamw_lowrank after its validation (shapes, dtypes, lr, handles). */
owl_status owl__cuda_adamw_lowrank(owl_adamw *a, owl_galore *p,
                                   owl_tensor *weight, const owl_tensor *grad,
                                   double lr);

/* owl_esd_alpha_hill after its validation (result, method, k >= 2). */
owl_status owl__cuda_esd_alpha_hill(owl_context *ctx,
                                    const owl_tensor *weight,
                                    owl_xmin_method method,
                                    owl_esd_result *result);

#endif /* OWLORE_CUDA_GALORE_H */
