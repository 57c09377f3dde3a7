/*
 * Data parallelism for the LLaMa example on NCCL: one process per GPU,
 * ranks 0..world-1, every rank holding a full copy of the model. Gradients
 * are averaged across ranks (all-reduce) between the backward pass and the
 * optimizer step; every rank draws the same active layers from the
 * sampler's seed, so the layer choice needs no communication. Available
 * when the example is built with CUDA and NCCL (LLAMA_HAVE_NCCL); without
 * them llama_dist_create fails with a message.
 *
 * Every function returns 0 on success, else -1 with a message.
 */
#ifndef LLAMA_DIST_H
#define LLAMA_DIST_H

#include "llama_gpu.h"

#include <stddef.h>
#include <stdint.h>

typedef struct llama_dist llama_dist;

/*
 * Joins the group of `world` ranks as `rank`. Rank 0 creates the NCCL
 * unique id and writes it atomically to id_path (a file every rank can
 * read: a local path on one node, a shared filesystem across nodes); the
 * others wait for it (up to timeout_s). Uses the current CUDA device and
 * runs its collectives on `stream`. world == 1 needs no NCCL traffic but
 * goes through the same code.
 */
int llama_dist_create(llama_dist **out, int rank, int world,
                      const char *id_path, double timeout_s, void *stream,
                      char *err, size_t errlen);
void llama_dist_destroy(llama_dist *d); /* NULL is fine */
int llama_dist_rank(const llama_dist *d);
int llama_dist_world(const llama_dist *d);
const char *llama_dist_error(const llama_dist *d);

/* Averages every gradient the model holds now (the trainable tensors)
 * across ranks, in place, on the stream; does not wait. */
int llama_dist_allreduce_grads(llama_dist *d, llama_gpu *m);
/* Copies rank root's weights to every rank (start of training). */
int llama_dist_broadcast_weights(llama_dist *d, llama_gpu *m, int root);

/* Rank and world from the environment: LLAMA_RANK / LLAMA_WORLD_SIZE, else
 * torchrun's RANK / WORLD_SIZE; LOCAL_RANK (or rank) picks the device.
 * Returns 0 with world 1 when none is set. */
int llama_dist_from_env(int *rank, int *world, int *local_rank);

#endif /* LLAMA_DIST_H */
