/*
 * libowlore: OwLore fine-tuning primitives behind a stable C ABI.
 *
 * OwLore trains a few decoder layers per period, sampled with probabilities
 * weighted by each layer's outlier ratio (LOD), and updates the sampled
 * layers with GaLore-style low-rank gradient projection and AdamW in the
 * low-rank subspace. This header is the whole public interface.
 *
 * Conventions (see docs/api.md and docs/abi.md):
 *  - Every function returns an owl_status (OWL_OK == 0) unless it is a
 *    getter that cannot fail. On failure, owl_context_last_error() on the
 *    context involved says what was wrong, and nothing was changed.
 *  - Handles are opaque. Every *_free accepts NULL.
 *  - A handle belongs to the context it was created from; a context and its
 *    handles are used from one thread at a time. Separate contexts may be
 *    used from separate threads at once. The context must outlive them.
 *  - Options structs carry their own size in their first field: fill them
 *    with the matching *_init(&opts, sizeof opts) before setting fields, so
 *    a caller compiled against an older header keeps working.
 *  - Sizes, counts and indices are 64-bit. Enumerations are int32_t.
 *  - Tensors live where the context's backend computes: host memory for
 *    the CPU backend, device memory (on the context's stream) for CUDA.
 */
#ifndef OWLORE_OWLORE_H
#define OWLORE_OWLORE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32) && defined(OWL_BUILDING_LIBRARY)
#define OWL_API __declspec(dllexport)
#elif defined(__GNUC__) && __GNUC__ >= 4
#define OWL_API __attribute__((visibility("default")))
#else
#define OWL_API
#endif

/* ------------------------------------------------------------------ */
/* Version                                                             */
/* ------------------------------------------------------------------ */

#define OWL_VERSION_MAJOR 0
#define OWL_VERSION_MINOR 2
#define OWL_VERSION_PATCH 0
/* MAJOR*10000 + MINOR*100 + PATCH: compare with owl_version_number(). */
#define OWL_VERSION_NUMBER \
    (OWL_VERSION_MAJOR * 10000 + OWL_VERSION_MINOR * 100 + OWL_VERSION_PATCH)
#define OWL_VERSION_STRING "0.2.0"

/* Runtime version of the library actually loaded. */
OWL_API uint32_t owl_version_number(void);
OWL_API const char *owl_version_string(void);

/* ------------------------------------------------------------------ */
/* Status codes: stable numbers, never reused.                         */
/* ------------------------------------------------------------------ */

typedef int32_t owl_status;
enum {
    OWL_OK = 0,
    OWL_ERR_INVALID_ARGUMENT = 1, /* a value out of its documented range */
    OWL_ERR_NULL_POINTER = 2,     /* a required pointer was NULL */
    OWL_ERR_SHAPE = 3,            /* tensor shapes or strides do not fit */
    OWL_ERR_DTYPE = 4,            /* a dtype not allowed for that argument */
    OWL_ERR_OUT_OF_MEMORY = 5,
    OWL_ERR_NONFINITE = 6,        /* NaN/Inf in an input; nothing changed */
    OWL_ERR_NUMERICAL = 7,        /* e.g. an SVD that did not converge */
    OWL_ERR_UNSUPPORTED = 8,      /* not built in, or not for this backend */
    OWL_ERR_NO_DEVICE = 9,        /* no usable CUDA device */
    OWL_ERR_DEVICE = 10,          /* a CUDA/cuBLAS/cuSOLVER call failed */
    OWL_ERR_IO = 11,              /* reading or writing a file failed */
    OWL_ERR_CORRUPT = 12,         /* a state blob failed its checks */
    OWL_ERR_VERSION = 13,         /* a state blob of an unknown version */
    OWL_ERR_STRUCT_SIZE = 14,     /* an options struct with a bad size */
    OWL_ERR_STATE = 15,           /* call not valid in the handle's state */
    OWL_ERR_MISMATCH = 16,        /* handles or state that do not belong together */
    OWL_ERR_INTERNAL = 17
};

/* A fixed sentence describing the status ("tensor shapes do not fit"). */
OWL_API const char *owl_status_string(owl_status status);
/* The status's stable name ("OWL_ERR_SHAPE"); "OWL_UNKNOWN" otherwise. */
OWL_API const char *owl_status_name(owl_status status);

/* ------------------------------------------------------------------ */
/* Enumerations                                                        */
/* ------------------------------------------------------------------ */

typedef int32_t owl_dtype;
enum {
    OWL_DTYPE_F32 = 0,
    OWL_DTYPE_BF16 = 1,
    OWL_DTYPE_F16 = 2,
    OWL_DTYPE_F64 = 3 /* only where a function says so */
};

typedef int32_t owl_backend;
enum { OWL_BACKEND_CPU = 0, OWL_BACKEND_CUDA = 1 };

/* Returns 1 when this build of the library contains the backend. */
OWL_API int32_t owl_backend_available(owl_backend backend);

/* ------------------------------------------------------------------ */
/* Tensor descriptor                                                   */
/* ------------------------------------------------------------------ */

/*
 * A row-major 2-D view of the caller's memory; the library never owns it.
 * Element (i, j) is at data + (i * row_stride + j) * sizeof(dtype);
 * row_stride >= cols. A vector is 1 x n. This layout is frozen: it will
 * never change; `flags` must be 0 and is reserved for future use.
 * A tensor a call writes must not share memory with the call's other
 * tensors (their byte ranges must be disjoint; docs/api.md, "Tensors").
 */
typedef struct owl_tensor {
    void *data;
    int64_t rows;
    int64_t cols;
    int64_t row_stride; /* in elements */
    owl_dtype dtype;
    int32_t flags;
} owl_tensor;

/* Fills *t with a dense (row_stride == cols) view. Never fails. */
OWL_API void owl_tensor_init(owl_tensor *t, void *data, owl_dtype dtype,
                             int64_t rows, int64_t cols);

/* ------------------------------------------------------------------ */
/* Context                                                             */
/* ------------------------------------------------------------------ */

typedef struct owl_context owl_context;

typedef struct owl_context_options {
    uint64_t struct_size;
    owl_backend backend; /* default OWL_BACKEND_CPU */
    int32_t device;      /* CUDA device ordinal; default 0 */
    int32_t num_threads; /* CPU worker threads; 0 (default) = online cores */
    int32_t reserved;
} owl_context_options;

OWL_API owl_status owl_context_options_init(owl_context_options *opts,
                                            uint64_t struct_size);
/*
 * CUDA and waiting. On a CUDA context, the calls that train -- activation
 * statistics, owl_lod_compute_async, the projector's project, project_back
 * and refresh, both AdamW steps and owl_optimizer_step at steady state --
 * enqueue their work on the context's stream and return: no cudaMalloc,
 * no cudaFree, no wait for the device. Calls that return a host value
 * wait for the stream; calls that create or free handles allocate or free
 * device memory, which may synchronise the whole device. Each declaration
 * below says which kind it is ("CUDA: enqueued", "CUDA: waits for the
 * stream", "CUDA: allocates / frees").
 */
/* opts may be NULL for a CPU context with defaults. CUDA: allocates (the
 * context's scratch, its flags and pinned staging) and waits for the
 * device. */
OWL_API owl_status owl_context_create(owl_context **out,
                                      const owl_context_options *opts);
/* CUDA: frees device memory (cudaFree waits for the device). */
OWL_API void owl_context_free(owl_context *ctx);
/* CUDA: the cudaStream_t later work is enqueued on (NULL = legacy default);
 * does not wait. CPU: accepted only as NULL. */
OWL_API owl_status owl_context_set_stream(owl_context *ctx, void *stream);
OWL_API owl_backend owl_context_backend(const owl_context *ctx);
/* Threads the CPU backend uses for its own loops (>= 1). */
OWL_API int32_t owl_context_num_threads(const owl_context *ctx);
/* The message of the last failing call on this context ("" if none). The
 * pointer stays valid until the next call on the context. */
OWL_API const char *owl_context_last_error(const owl_context *ctx);
/* CUDA: waits until the context's stream has finished all work enqueued so
 * far, and reports a failure of that work. CPU: returns OWL_OK at once. */
OWL_API owl_status owl_context_synchronize(owl_context *ctx);
/*
 * Optimizer steps skipped because their gradient held a NaN or Inf, since
 * the context was created. On the CPU backend such a step returns
 * OWL_ERR_NONFINITE at once. On CUDA the check runs on the device so that a
 * step never waits for the GPU: the step returns OWL_OK, leaves weights,
 * moments, the bias-correction counter and the projector's basis as they
 * were, and is counted here. This call waits for the stream on CUDA.
 */
OWL_API owl_status owl_context_nonfinite_skips(owl_context *ctx,
                                               uint64_t *count);

/* ------------------------------------------------------------------ */
/* Activation statistics and LOD (spec section 1)                      */
/* ------------------------------------------------------------------ */

/*
 * sumsq[j] += sum over rows t of x[t, j]^2.
 * x: tokens x n (f32/bf16/f16). sumsq: 1 x n, f32 or f64 (CPU), f32 (CUDA),
 * dense. Call it from a forward hook on each linear layer's input.
 * CUDA: enqueued.
 */
OWL_API owl_status owl_act_norm_accumulate(owl_context *ctx,
                                           const owl_tensor *x,
                                           owl_tensor *sumsq);

/*
 * Outlier ratio of one decoder layer, pooled over all its matrices:
 * A_ij = |W_ij| * sqrt(s_j); D = #{A_ij > M * mean(A)} / #entries, in [0,1].
 * weights[k]: m_k x n_k (f32/bf16/f16); input_sumsq[k]: 1 x n_k (f32/f64),
 * the accumulated statistic of that matrix's input. M > 0 (paper: 13).
 * The result is a host value: on CUDA the call waits for the stream.
 */
OWL_API owl_status owl_lod_compute(owl_context *ctx, const owl_tensor *weights,
                                   const owl_tensor *input_sumsq,
                                   uint64_t count, double M, double *ratio);
/* The same ratio written to `ratio`, a 1 x 1 tensor where the backend
 * computes (f32; f64 too on CPU), without waiting: on CUDA it is enqueued on
 * the context's stream like every other operation, in workspace the
 * context reserved at create (no allocation, from the first call on). */
OWL_API owl_status owl_lod_compute_async(owl_context *ctx,
                                         const owl_tensor *weights,
                                         const owl_tensor *input_sumsq,
                                         uint64_t count, double M,
                                         owl_tensor *ratio);

typedef int32_t owl_xmin_method;
enum {
    OWL_XMIN_FIX_FINGER = 0, /* TempBalance xmin_peak (default) */
    OWL_XMIN_MEDIAN = 1,     /* xmin = lambda[N/2] */
    OWL_XMIN_KS_SCAN = 2     /* argmin of the KS distance over all candidates */
};

typedef struct owl_esd_result {
    uint64_t struct_size;
    double alpha;       /* PL_Alpha_Hill */
    double xmin;        /* chosen lower cutoff (an eigenvalue) */
    double ks_distance; /* KS distance of the fit at xmin */
    uint64_t xmin_index;/* index of xmin in the ascending spectrum used */
    uint64_t num_eigs;  /* eigenvalues used (positive ones) */
} owl_esd_result;

OWL_API owl_status owl_esd_result_init(owl_esd_result *res,
                                       uint64_t struct_size);
/* PL_Alpha_Hill of W's empirical spectral density (eigenvalues of W^T W,
 * i.e. squared singular values). W: m x n, f32/bf16/f16 (f64 on CPU).
 * FIX_FINGER keeps TempBalance's candidate bounds exactly:
 * log10(0.95 * peak) <= lambda <= 1.5 * peak (the lower bound compares a
 * logarithm with eigenvalues, as the reference code does); when no
 * eigenvalue qualifies, the cutoff is the KS argmin over all of them. Zero
 * eigenvalues are left out. A spectrum flat above the chosen cutoff
 * returns OWL_ERR_NUMERICAL. The result is a host value: on CUDA the call
 * waits for the stream, and it allocates and frees its SVD workspace in
 * the call (an analysis, not a training step). */
OWL_API owl_status owl_esd_alpha_hill(owl_context *ctx,
                                      const owl_tensor *weight,
                                      owl_xmin_method method,
                                      owl_esd_result *result);
/* The same fit from given eigenvalues (host memory, any order, count >= 2);
 * non-positive values are ignored. */
OWL_API owl_status owl_esd_alpha_hill_eigs(owl_context *ctx,
                                           const double *eigenvalues,
                                           uint64_t count,
                                           owl_xmin_method method,
                                           owl_esd_result *result);

/* ------------------------------------------------------------------ */
/* Layer sampler (spec section 2)                                      */
/* ------------------------------------------------------------------ */

typedef struct owl_sampler owl_sampler;

typedef int32_t owl_weight_mode;
enum {
    OWL_WEIGHTS_OWLORE = 0,     /* w_l = D_l (pass the LOD ratios) */
    OWL_WEIGHTS_UNIFORM = 1,    /* LISA */
    OWL_WEIGHTS_DECREASING = 2, /* w_l = L - l */
    OWL_WEIGHTS_INCREASING = 3, /* w_l = l + 1 */
    OWL_WEIGHTS_CUSTOM = 4      /* caller's weights, e.g. 1/alpha */
};

typedef int32_t owl_draw_law;
enum {
    OWL_DRAW_SYSTEMATIC = 0, /* exactly gamma, pi_l = min(1, c p_l) (default) */
    OWL_DRAW_REFERENCE = 1,  /* exactly gamma, successive weighted draws */
    OWL_DRAW_BERNOULLI = 2   /* independent, pi_l = min(1, c p_l) */
};

typedef struct owl_sampler_options {
    uint64_t struct_size;
    uint64_t num_layers; /* L >= 1 */
    uint64_t gamma;      /* 1 <= gamma <= L; default 2 */
    uint64_t period;     /* K >= 1: resample at steps 0, K, 2K...; default 50 */
    uint64_t seed;       /* default 0 */
    owl_weight_mode weight_mode; /* default OWL_WEIGHTS_UNIFORM */
    owl_draw_law law;            /* default OWL_DRAW_SYSTEMATIC */
    /* L values for OWLORE and CUSTOM (copied at create), else NULL.
     * Finite, >= 0, and at least gamma of them > 0 once divided by their
     * sum in double precision (a weight below the largest by more than
     * the range of a double counts as 0). */
    const double *weights;
} owl_sampler_options;

OWL_API owl_status owl_sampler_options_init(owl_sampler_options *opts,
                                            uint64_t struct_size);
OWL_API owl_status owl_sampler_create(owl_context *ctx,
                                      const owl_sampler_options *opts,
                                      owl_sampler **out);
OWL_API void owl_sampler_free(owl_sampler *sampler);

/*
 * The active layers for global step `step` (period step / K): a pure
 * function of (seed, period, weights, law). mask[l] = 1 for active layers,
 * 0 otherwise (host memory, num_layers bytes). *num_active and *resampled
 * (1 when step is a multiple of K) may be NULL.
 */
OWL_API owl_status owl_sampler_step(owl_sampler *sampler, uint64_t step,
                                    uint8_t *mask, uint64_t *num_active,
                                    int32_t *resampled);
/* p_l = w_l / sum(w) and the law's inclusion probabilities pi_l
 * (sum = gamma; for BERNOULLI the expected count). Either may be NULL. */
OWL_API owl_status owl_sampler_probabilities(owl_sampler *sampler,
                                             double *p, double *pi);

/* ------------------------------------------------------------------ */
/* GaLore projector (spec section 3)                                   */
/* ------------------------------------------------------------------ */

typedef struct owl_galore owl_galore;

typedef int32_t owl_proj_type;
enum {
    OWL_PROJ_STD = 0,         /* right if m >= n, else left (default) */
    OWL_PROJ_REVERSE_STD = 1, /* left if m >= n, else right */
    OWL_PROJ_LEFT = 2,        /* R = P^T G, P: m x r */
    OWL_PROJ_RIGHT = 3        /* R = G Q^T, Q: r x n */
};

typedef int32_t owl_svd_method;
enum { OWL_SVD_EXACT = 0, OWL_SVD_RANDOMIZED = 1 };

typedef struct owl_galore_options {
    uint64_t struct_size;
    uint64_t rows;           /* m: out features */
    uint64_t cols;           /* n: in features */
    uint64_t rank;           /* 1 <= r <= min(m, n); default 128 */
    uint64_t update_gap;     /* T >= 1; default 200 */
    double scale;            /* alpha > 0; default 1.0 */
    owl_proj_type proj_type; /* default OWL_PROJ_STD */
    owl_svd_method svd_method; /* default OWL_SVD_EXACT */
    uint64_t oversample;     /* RANDOMIZED: extra columns p; default 8 */
    uint64_t power_iters;    /* RANDOMIZED: q; default 2 */
    uint64_t seed;           /* RANDOMIZED sketch seed; default 0 */
} owl_galore_options;

OWL_API owl_status owl_galore_options_init(owl_galore_options *opts,
                                           uint64_t struct_size);
/* CUDA: allocates the basis and grows the context's scratch to the
 * projector's workspace (freeing the smaller block), and waits. */
OWL_API owl_status owl_galore_create(owl_context *ctx,
                                     const owl_galore_options *opts,
                                     owl_galore **out);
/* CUDA: frees device memory (waits for the device). */
OWL_API void owl_galore_free(owl_galore *proj);

/* Shape of the projected gradient R: r x n (left) or m x r (right). */
OWL_API owl_status owl_galore_lowrank_shape(const owl_galore *proj,
                                            uint64_t *rows, uint64_t *cols);
/* 1 when the projection is on the left (R = P^T G), 0 on the right. */
OWL_API int32_t owl_galore_is_left(const owl_galore *proj);

/*
 * R = project(G). `iter` is the parameter's update count before this
 * update: the subspace is recomputed from G when there is none yet, when
 * iter % T == 0, or after owl_galore_invalidate(). grad: m x n
 * (f32/bf16/f16); out: the low-rank shape, f32. *refreshed may be NULL.
 * CUDA: enqueued, the refresh's cuSOLVER calls included (an EXACT gesvd
 * that asked for a host workspace at create may wait inside cuSOLVER).
 */
OWL_API owl_status owl_galore_project(owl_galore *proj, uint64_t iter,
                                      const owl_tensor *grad, owl_tensor *out,
                                      int32_t *refreshed);
/* out = alpha * back(lowrank): m x n, f32/bf16/f16. Needs a subspace.
 * CUDA: enqueued. */
OWL_API owl_status owl_galore_project_back(owl_galore *proj,
                                           const owl_tensor *lowrank,
                                           owl_tensor *out);
/* Recompute the subspace from G now (no projection). CUDA: enqueued, as
 * the refresh of owl_galore_project. */
OWL_API owl_status owl_galore_refresh(owl_galore *proj,
                                      const owl_tensor *grad);
/* Force a recompute at the next project (e.g. when a layer is
 * re-activated after a frozen period). */
OWL_API owl_status owl_galore_invalidate(owl_galore *proj);
/* Copy the current basis (f32): P as m x r (left) or Q as r x n (right).
 * Each kept singular vector has its largest-magnitude entry positive.
 * CUDA: an enqueued copy into device memory. */
OWL_API owl_status owl_galore_get_basis(const owl_galore *proj,
                                        owl_tensor *out);
/* Number of subspace computations so far. */
OWL_API uint64_t owl_galore_refresh_count(const owl_galore *proj);

/* ------------------------------------------------------------------ */
/* AdamW (spec section 4)                                              */
/* ------------------------------------------------------------------ */

typedef struct owl_adamw owl_adamw;

typedef int32_t owl_adamw_semantics;
enum {
    OWL_ADAMW_GALORE = 0, /* eps on un-corrected sqrt(v), decay after (default) */
    OWL_ADAMW_TORCH = 1   /* torch.optim.AdamW: decay first, eps after correction */
};

typedef int32_t owl_refresh_moments;
enum { OWL_MOMENTS_KEEP = 0, OWL_MOMENTS_RESET = 1 };

typedef int32_t owl_rounding;
enum { OWL_ROUND_NEAREST = 0, OWL_ROUND_STOCHASTIC = 1 };

typedef struct owl_adamw_options {
    uint64_t struct_size;
    double beta1;        /* [0, 1); default 0.9 */
    double beta2;        /* [0, 1); default 0.999 */
    double eps;          /* > 0; default 1e-6 */
    double weight_decay; /* >= 0; default 0 */
    owl_adamw_semantics semantics;  /* default OWL_ADAMW_GALORE */
    owl_dtype moment_dtype;         /* F32 (default) or BF16 */
    owl_refresh_moments on_refresh; /* low-rank: KEEP (default) or RESET */
    owl_rounding rounding;          /* bf16/f16 weight writes */
    uint64_t seed;                  /* stochastic rounding seed */
} owl_adamw_options;

OWL_API owl_status owl_adamw_options_init(owl_adamw_options *opts,
                                          uint64_t struct_size);
/* State (m, v, step count) for moments of rows x cols: the weight's shape
 * for owl_adamw_full, owl_galore_lowrank_shape() for owl_adamw_lowrank.
 * CUDA: allocates the moments, zeroes them and waits. */
OWL_API owl_status owl_adamw_create(owl_context *ctx,
                                    const owl_adamw_options *opts,
                                    uint64_t rows, uint64_t cols,
                                    owl_adamw **out);
/* CUDA: frees device memory (waits for the device). */
OWL_API void owl_adamw_free(owl_adamw *adam);

/*
 * One fused GaLore step, weights updated in place:
 * R = project(G); Adam on R; W -= eta * alpha * back(N); then decay.
 * weight, grad: m x n (f32/bf16/f16). lr >= 0 for this step.
 * A non-finite G returns OWL_ERR_NONFINITE and changes nothing (CUDA: the
 * step is skipped on the device, see owl_context_nonfinite_skips); on the
 * CPU so does an entry of magnitude 2^48 or more, whose square could
 * overflow the f32 moments (docs/api.md).
 * CUDA: enqueued.
 */
OWL_API owl_status owl_adamw_lowrank(owl_adamw *adam, owl_galore *proj,
                                     owl_tensor *weight,
                                     const owl_tensor *grad, double lr);
/* One full-rank step (P = identity) in the chosen semantics. CUDA:
 * enqueued. */
OWL_API owl_status owl_adamw_full(owl_adamw *adam, owl_tensor *weight,
                                  const owl_tensor *grad, double lr);
/* Updates taken so far; this count drives the projector's refresh
 * schedule and is never reset. */
OWL_API uint64_t owl_adamw_step_count(const owl_adamw *adam);
/* The bias-correction t: updates since the moments were last zeroed.
 * CUDA: waits for the stream (the device counts skipped steps). */
OWL_API uint64_t owl_adamw_bias_step(const owl_adamw *adam);
/* Zero m, v and the bias-correction counter (the step count stays).
 * CUDA: enqueued. */
OWL_API owl_status owl_adamw_reset(owl_adamw *adam);
/* Copy a moment out as f32: which = 0 for m, 1 for v. CUDA: enqueued,
 * into device memory. */
OWL_API owl_status owl_adamw_get_moment(const owl_adamw *adam, int32_t which,
                                        owl_tensor *out);

/* ------------------------------------------------------------------ */
/* State persistence (spec section 6)                                  */
/* ------------------------------------------------------------------ */

/*
 * Every stateful handle saves its state to a caller's buffer or a file and
 * loads it back into a handle created with the same shape (a blob from a
 * different shape or configuration returns OWL_ERR_MISMATCH). A blob
 * carries a magic number, a format version, the handle kind, its sizes and
 * dtypes, and a CRC-32C of everything; a truncated, corrupted or
 * wrong-version blob returns OWL_ERR_CORRUPT or OWL_ERR_VERSION, and a
 * failed load leaves the handle exactly as it was. Files are written
 * atomically: to a temporary file in the same directory, flushed with
 * fsync, then renamed over `path`. On CUDA, saving waits for the stream.
 *
 * *_state_size: bytes a save needs now. *_save: writes the blob into buf
 * (capacity bytes; OWL_ERR_INVALID_ARGUMENT when too small) and sets
 * *written. The sampler's state is its configuration (weights, gamma,
 * period, seed, law): loading it replaces the configuration of a sampler
 * over the same number of layers.
 */
OWL_API owl_status owl_sampler_state_size(const owl_sampler *sampler,
                                          uint64_t *bytes);
OWL_API owl_status owl_sampler_save(const owl_sampler *sampler, void *buf,
                                    uint64_t capacity, uint64_t *written);
OWL_API owl_status owl_sampler_load(owl_sampler *sampler, const void *buf,
                                    uint64_t size);
OWL_API owl_status owl_sampler_save_file(const owl_sampler *sampler,
                                         const char *path);
OWL_API owl_status owl_sampler_load_file(owl_sampler *sampler,
                                         const char *path);

/* Projector: options, basis, staleness and refresh count. */
OWL_API owl_status owl_galore_state_size(const owl_galore *proj,
                                         uint64_t *bytes);
OWL_API owl_status owl_galore_save(const owl_galore *proj, void *buf,
                                   uint64_t capacity, uint64_t *written);
OWL_API owl_status owl_galore_load(owl_galore *proj, const void *buf,
                                   uint64_t size);
OWL_API owl_status owl_galore_save_file(const owl_galore *proj,
                                        const char *path);
OWL_API owl_status owl_galore_load_file(owl_galore *proj, const char *path);

/* AdamW: options, moments (in their dtype) and both counters. */
OWL_API owl_status owl_adamw_state_size(const owl_adamw *adam,
                                        uint64_t *bytes);
OWL_API owl_status owl_adamw_save(const owl_adamw *adam, void *buf,
                                  uint64_t capacity, uint64_t *written);
OWL_API owl_status owl_adamw_load(owl_adamw *adam, const void *buf,
                                  uint64_t size);
OWL_API owl_status owl_adamw_save_file(const owl_adamw *adam,
                                       const char *path);
OWL_API owl_status owl_adamw_load_file(owl_adamw *adam, const char *path);

/* ------------------------------------------------------------------ */
/* Optimizer: a whole OwLore step behind one handle                    */
/* ------------------------------------------------------------------ */

typedef struct owl_optimizer owl_optimizer;

typedef int32_t owl_method;
enum {
    OWL_METHOD_OWLORE = 0,      /* sampled layers, low-rank where asked (default) */
    OWL_METHOD_OWLORE_FULL = 1, /* sampled layers, full-rank AdamW */
    OWL_METHOD_LISA = 2,        /* uniformly sampled layers, full rank */
    OWL_METHOD_GALORE = 3,      /* every layer, low-rank where asked */
    OWL_METHOD_FULL = 4         /* every layer, full-rank AdamW */
};

/* What happens to a layer's optimizer state while it is frozen. */
typedef int32_t owl_frozen_policy;
enum {
    OWL_FROZEN_KEEP = 0,    /* kept where it is; resumes on activation (default) */
    OWL_FROZEN_RESET = 1,   /* kept allocated, zeroed on re-activation */
    OWL_FROZEN_OFFLOAD = 2, /* CUDA: pinned host memory while frozen; CPU: as KEEP */
    OWL_FROZEN_FREE = 3     /* released on freezing; fresh state on activation */
};

/* A parameter's layer: a decoder layer index in [0, num_layers), or this
 * value for parameters trained at every step (embeddings, final norm, LM
 * head), always in full rank. */
#define OWL_LAYER_ALWAYS UINT64_MAX

typedef struct owl_optimizer_options {
    uint64_t struct_size;
    owl_method method;               /* default OWL_METHOD_OWLORE */
    owl_frozen_policy frozen_policy; /* default OWL_FROZEN_KEEP */
    uint64_t num_layers;             /* decoder layers L >= 1 */
    /* Layer sampling (gamma, period K, seed, weight mode, weights, law);
     * its num_layers is ignored (num_layers above is used). NULL: the
     * sampler's defaults. OWLORE methods default to OWL_WEIGHTS_OWLORE,
     * which needs the weights (the layers' LOD ratios); LISA always draws
     * uniformly; GALORE and FULL do not sample. */
    const owl_sampler_options *sampler;
    /* Rank, update gap T, scale alpha, projection type, SVD method for
     * every low-rank parameter; rows and cols are ignored. NULL: defaults. */
    const owl_galore_options *galore;
    const owl_adamw_options *adamw; /* NULL: defaults */
    /* > 0: scale the step's gradients in place so that their global L2
     * norm is at most this (as torch.nn.utils.clip_grad_norm_); 0: off. */
    double max_grad_norm;
    /* 1: refresh a projector's subspace when its layer is re-activated
     * after a frozen period (spec section 3's option); default 0. */
    int32_t refresh_on_activation;
    int32_t reserved;
} owl_optimizer_options;

OWL_API owl_status owl_optimizer_options_init(owl_optimizer_options *opts,
                                              uint64_t struct_size);
/* The options (and the structs they point to) are copied. CUDA:
 * allocates and waits. */
OWL_API owl_status owl_optimizer_create(owl_context *ctx,
                                        const owl_optimizer_options *opts,
                                        owl_optimizer **out);
/* CUDA: waits for the stream, then frees device and pinned memory. */
OWL_API void owl_optimizer_free(owl_optimizer *opt);

/*
 * Registers a parameter: its weight and gradient (same shape; tensors where
 * the backend computes; the descriptors are copied, the memory stays the
 * caller's), its layer (or OWL_LAYER_ALWAYS), and whether it takes the
 * low-rank path (honoured by OWLORE and GALORE for a layer's matrices;
 * otherwise full rank). grad may be NULL and bound later. *index (may be
 * NULL) receives the parameter's number, counting from 0. Register every
 * parameter before the first step; state is allocated lazily, when the
 * parameter's layer is first active. CUDA: allocates and may wait (the
 * step's per-parameter tables; with OFFLOAD, a sampled parameter's pinned
 * host copies of its moments, so that no step allocates them).
 */
OWL_API owl_status owl_optimizer_add_param(owl_optimizer *opt, uint64_t layer,
                                           const owl_tensor *weight,
                                           const owl_tensor *grad,
                                           int32_t lowrank, uint64_t *index);
/* Rebinds a parameter's gradient (a framework that reallocates it). */
OWL_API owl_status owl_optimizer_set_grad(owl_optimizer *opt, uint64_t index,
                                          const owl_tensor *grad);

/*
 * The decoder layers that train at the current step: mask[l] = 1 when
 * layer l needs gradients (num_layers bytes, host memory). The host turns
 * gradients on for exactly these layers (and the OWL_LAYER_ALWAYS
 * parameters) before its backward pass. Calling it again in the same step
 * returns the same mask. *resampled (may be NULL) is 1 on a period's first
 * step.
 */
OWL_API owl_status owl_optimizer_active_layers(owl_optimizer *opt,
                                               uint8_t *mask,
                                               uint64_t num_layers,
                                               int32_t *resampled);
/*
 * Updates every parameter of the active layers and every OWL_LAYER_ALWAYS
 * parameter from its bound gradient with learning rate lr (the host owns
 * the schedule), applying the frozen-state policy to layers that just
 * became frozen or active, then advances to the next step. A non-finite
 * gradient (CPU), or one whose norm after clipping is 2^47 or more,
 * returns OWL_ERR_NONFINITE with nothing updated and the step not
 * advanced.
 * CUDA: enqueued (the norm, clipping, every update and OFFLOAD's copies),
 * except where the step must allocate or free device memory, which waits
 * for the device: a parameter's first activation (its state is created:
 * cudaMalloc, zeroed and waited for; the context's scratch may grow),
 * which happens under every policy; such a step also frees OFFLOAD's
 * spare buffers that no parameter took (cudaFree, after waiting for the
 * stream); an OFFLOAD return that no spare fits (cudaMalloc); and under
 * FREE, every freezing (cudaFree) and re-activation (creation). KEEP,
 * RESET and OFFLOAD steps after each layer's first activation, in a model
 * whose layers have the same shapes, do not wait.
 */
OWL_API owl_status owl_optimizer_step(owl_optimizer *opt, double lr);
/* Steps taken so far (the index of the next step). */
OWL_API uint64_t owl_optimizer_step_index(const owl_optimizer *opt);
OWL_API uint64_t owl_optimizer_num_params(const owl_optimizer *opt);
/* Global gradient L2 norm of the last step, before clipping (CUDA: waits
 * for the stream). */
OWL_API owl_status owl_optimizer_last_grad_norm(const owl_optimizer *opt,
                                                double *norm);

/* Bytes the optimizer holds now, by category and memory kind. */
typedef struct owl_memory_usage {
    uint64_t struct_size;
    uint64_t device_moments;     /* AdamW m and v on the GPU */
    uint64_t device_projectors;  /* GaLore bases on the GPU */
    uint64_t device_workspace;   /* the context's GPU scratch */
    uint64_t host_moments;       /* CPU moments, or OFFLOAD's pinned copies (CUDA) */
    uint64_t host_projectors;
    uint64_t host_workspace;     /* the context's host scratch */
} owl_memory_usage;

OWL_API owl_status owl_memory_usage_init(owl_memory_usage *usage,
                                         uint64_t struct_size);
OWL_API owl_status owl_optimizer_memory(const owl_optimizer *opt,
                                        owl_memory_usage *usage);

/* Optimizer state: step index, sampler configuration, and every allocated
 * parameter's projector and moments. Loading needs an optimizer with the
 * same options and the same parameters registered in the same order.
 * CUDA: save and load wait for the stream; load allocates the state it
 * installs. */
OWL_API owl_status owl_optimizer_state_size(const owl_optimizer *opt,
                                            uint64_t *bytes);
OWL_API owl_status owl_optimizer_save(const owl_optimizer *opt, void *buf,
                                      uint64_t capacity, uint64_t *written);
OWL_API owl_status owl_optimizer_load(owl_optimizer *opt, const void *buf,
                                      uint64_t size);
OWL_API owl_status owl_optimizer_save_file(const owl_optimizer *opt,
                                           const char *path);
OWL_API owl_status owl_optimizer_load_file(owl_optimizer *opt,
                                           const char *path);

/* ------------------------------------------------------------------ */
/* Memory planner                                                      */
/* ------------------------------------------------------------------ */

/* A LLaMa-style decoder: q, k, v, o, gate, up, down per layer, two RMSNorms
 * per layer, embeddings, a final norm and an LM head. */
typedef struct owl_model_shape {
    uint64_t struct_size;
    uint64_t num_layers;
    uint64_t hidden;
    uint64_t intermediate;
    uint64_t heads;
    uint64_t kv_heads;
    uint64_t vocab;
    owl_dtype weight_dtype; /* default BF16 */
    owl_dtype grad_dtype;   /* default BF16 */
    int32_t tied_embeddings; /* 1: the LM head shares the embedding */
    int32_t reserved;
} owl_model_shape;

/* Peak bytes of one training step, by category. */
typedef struct owl_memory_plan {
    uint64_t struct_size;
    uint64_t weights;
    uint64_t gradients;       /* of the trainable parameters at peak */
    uint64_t optimizer_state; /* AdamW moments */
    uint64_t projectors;      /* GaLore bases */
    uint64_t workspace;       /* the library's scratch at peak */
    uint64_t total;
} owl_memory_plan;

OWL_API owl_status owl_model_shape_init(owl_model_shape *shape,
                                        uint64_t struct_size);
OWL_API owl_status owl_memory_plan_init(owl_memory_plan *plan,
                                        uint64_t struct_size);
/* Plans the memory of training `shape` with `opts` (its method, gamma,
 * rank, moment dtype, frozen policy): a pure calculation on the host; ctx
 * (any backend) receives the error message. */
OWL_API owl_status owl_memory_plan_compute(owl_context *ctx,
                                           const owl_model_shape *shape,
                                           const owl_optimizer_options *opts,
                                           owl_memory_plan *plan);

#ifdef __cplusplus
}
#endif

#endif /* OWLORE_OWLORE_H */
