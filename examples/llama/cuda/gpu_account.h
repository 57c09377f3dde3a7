/* The byte accounting both device layers (gpu_cuda.c, gpu_emu.c) keep:
 * bytes held now and at their peak, per category and in total. Private to
 * those two files. */
#ifndef LLAMA_GPU_ACCOUNT_H
#define LLAMA_GPU_ACCOUNT_H

#include "gpu.h"

#include <stddef.h>
#include <stdint.h>

typedef struct gd_account {
    uint64_t now[GD_MEM_NUM_CATS], peak[GD_MEM_NUM_CATS];
    uint64_t total, peak_total;
} gd_account;

static inline void gd_account_alloc(gd_account *a, gd_mem_cat cat,
                                    size_t bytes)
{
    a->now[cat] += bytes;
    a->total += bytes;
    if (a->now[cat] > a->peak[cat])
        a->peak[cat] = a->now[cat];
    if (a->total > a->peak_total)
        a->peak_total = a->total;
}

static inline void gd_account_free(gd_account *a, gd_mem_cat cat,
                                   size_t bytes)
{
    a->now[cat] -= bytes;
    a->total -= bytes;
}

static inline void gd_account_usage(const gd_account *a,
                                    uint64_t now[GD_MEM_NUM_CATS],
                                    uint64_t peak[GD_MEM_NUM_CATS],
                                    uint64_t *peak_total)
{
    for (int i = 0; i < GD_MEM_NUM_CATS; i++) {
        if (now)
            now[i] = a->now[i];
        if (peak)
            peak[i] = a->peak[i];
    }
    if (peak_total)
        *peak_total = a->peak_total;
}

#endif /* LLAMA_GPU_ACCOUNT_H */
