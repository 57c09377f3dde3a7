/*
 * The reference trainer's GPU path (llama --device cuda): the device model
 * of llama_gpu.h trained with owl_optimizer on libowlore's CUDA backend,
 * on the model's own device tensors and stream; with NCCL, data parallel
 * over the ranks of the environment (dist.h). train.c prepares the model,
 * the data and the LOD weights on the host and hands them over here.
 * Compiled only with CUDA (LLAMA_HAVE_CUDA).
 */
#ifndef LLAMA_TRAIN_GPU_H
#define LLAMA_TRAIN_GPU_H

#include "../data.h"
#include "../llama.h"

#include <owlore/owlore.h>

#include <stddef.h>
#include <stdint.h>

typedef struct train_gpu_run {
    const llama_model *model; /* initial weights (host, f32) */
    const data_ids *train, *held;
    /* The method and its options, as train.c's flags set them. */
    owl_method method;
    int gamma, period;
    const double *lod_weights; /* [n_layers] for the OWLORE methods */
    int rank, update_gap;
    double galore_scale;
    owl_dtype moments;
    owl_frozen_policy policy;
    double clip;
    /* Schedule and data: lr[step] for every step, B x T tokens a step. */
    const double *lr;
    int steps, batch, seq;
    uint64_t seed;       /* training batches and the sampler */
    uint64_t eval_seed;  /* held-out batches */
    int eval_every, eval_batches, log_every;
    int recompute;       /* activation recomputation */
    int device;          /* CUDA device (without data parallelism) */
} train_gpu_run;

/* 0 when CUDA device `device` is usable, else -1 with the reason in err
 * (starting "no CUDA device" when there is none). */
int train_gpu_check_device(int device, char *err, size_t errlen);

/* This process's rank in data-parallel training (from the environment,
 * see dist.h); 0 when built without NCCL or run alone. */
int train_gpu_rank(void);

/* Trains as described by r, printing progress (rank 0 only) and, at the
 * end, the memory report. 0 on success, else -1 with the message. */
int train_gpu(const train_gpu_run *r, char *err, size_t errlen);

/* The per-step progress line of the CPU loop (defined in train.c), so both
 * paths print alike: step, loss, lr, tokens/s, the active layers, the
 * optimizer's state bytes and, when finite, the held-out loss. */
void train_print_step(int step, double loss, double lr, double tok_s,
                      const uint8_t *mask, int L, uint64_t bytes, double eval);

#endif /* LLAMA_TRAIN_GPU_H */
