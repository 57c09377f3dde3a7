/*
 * The parts of dist.c that need neither NCCL nor a GPU, declared for its
 * CPU test: the id file through which rank 0 hands the NCCL unique id to
 * the other ranks, and the parsing of the rank variables.
 *
 * The id file holds a magic number, the world size it was written for and
 * the id's bytes. Rank 0 writes it to a temporary file in the same folder,
 * flushes it with fsync and renames it over the path, so a reader sees
 * either no file or the whole of it, on a local disk and on a shared
 * filesystem alike.
 */
#ifndef LLAMA_DIST_RENDEZVOUS_H
#define LLAMA_DIST_RENDEZVOUS_H

#include <stddef.h>

/* Writes `bytes` (n of them, n <= 1024) for a group of `world` ranks to
 * path, atomically. 0 on success, else -1 with a message in err. */
int llama_dist_id_write(const char *path, int world, const void *bytes,
                        size_t n, char *err, size_t errlen);

/* Waits up to timeout_s seconds for path to appear, then reads the id into
 * bytes (n of them). Fails at once, with a message, on a file that is not
 * an id file of n bytes or that was written for another world size (a
 * stale file of an earlier run); fails when the time runs out. */
int llama_dist_id_read(const char *path, int world, void *bytes, size_t n,
                       double timeout_s, char *err, size_t errlen);

/* Parses an environment variable's value as an integer in [lo, hi]. 0 on
 * success, else -1 with a message naming the variable. */
int llama_dist_parse_int(const char *name, const char *value, long lo,
                         long hi, int *out, char *err, size_t errlen);

/* llama_dist_from_env with the message that dist.h's signature has no
 * room for: 0 on success, else -1 with err set. */
int llama_dist_from_env_msg(int *rank, int *world, int *local_rank,
                            char *err, size_t errlen);

#endif /* LLAMA_DIST_RENDEZVOUS_H */
