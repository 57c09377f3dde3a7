/* The API fuzzer's handles: the live ones of an input, snapshots of their
 * saved states (to show that a failed call changed nothing) and the check
 * that every state loads back. */
#include "fuzz_api.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the handles of one input -------------------------------------- */

owl_context *ctxs[2];

sampler_slot samplers[SLOTS];
galore_slot galores[SLOTS];
adamw_slot adamws[SLOTS];
opt_slot opts[SLOTS];

/* The state operations of one live handle, for the snapshots. */
static owl_status sampler_size(const void *h, uint64_t *b) { return owl_sampler_state_size(h, b); }
static owl_status sampler_save(const void *h, void *p, uint64_t c, uint64_t *w) { return owl_sampler_save(h, p, c, w); }
static owl_status sampler_load(void *h, const void *p, uint64_t s) { return owl_sampler_load(h, p, s); }
static owl_status galore_size(const void *h, uint64_t *b) { return owl_galore_state_size(h, b); }
static owl_status galore_save(const void *h, void *p, uint64_t c, uint64_t *w) { return owl_galore_save(h, p, c, w); }
static owl_status galore_load(void *h, const void *p, uint64_t s) { return owl_galore_load(h, p, s); }
static owl_status adamw_size(const void *h, uint64_t *b) { return owl_adamw_state_size(h, b); }
static owl_status adamw_save(const void *h, void *p, uint64_t c, uint64_t *w) { return owl_adamw_save(h, p, c, w); }
static owl_status adamw_load(void *h, const void *p, uint64_t s) { return owl_adamw_load(h, p, s); }
static owl_status opt_size(const void *h, uint64_t *b) { return owl_optimizer_state_size(h, b); }
static owl_status opt_save(const void *h, void *p, uint64_t c, uint64_t *w) { return owl_optimizer_save(h, p, c, w); }
static owl_status opt_load(void *h, const void *p, uint64_t s) { return owl_optimizer_load(h, p, s); }

int live_handles(live_handle *out)
{
    int n = 0;
    for (int i = 0; i < SLOTS; i++) {
        if (samplers[i].h)
            out[n++] = (live_handle){samplers[i].h, "sampler", samplers[i].ctx, sampler_size, sampler_save, sampler_load};
        if (galores[i].h)
            out[n++] = (live_handle){galores[i].h, "projector", galores[i].ctx, galore_size, galore_save, galore_load};
        if (adamws[i].h)
            out[n++] = (live_handle){adamws[i].h, "AdamW", adamws[i].ctx, adamw_size, adamw_save, adamw_load};
        if (opts[i].h)
            out[n++] = (live_handle){opts[i].h, "optimizer", opts[i].ctx, opt_size, opt_save, opt_load};
    }
    return n;
}

uint8_t *save_all(const live_handle *lh, uint64_t *size)
{
    owl_status st = lh->size(lh->h, size);
    if (st != OWL_OK)
        die("state_size of a live handle failed", st);
    uint8_t *buf = malloc(*size ? (size_t)*size : 1);
    uint64_t written = 0;
    if (buf == NULL)
        abort();
    st = lh->save(lh->h, buf, *size, &written);
    if (st != OWL_OK || written != *size)
        die("save of a live handle failed", st);
    return buf;
}

void snapshot_take(snapshot *s)
{
    s->count = live_handles(s->lh);
    for (int i = 0; i < s->count; i++)
        s->state[i] = save_all(&s->lh[i], &s->size[i]);
    for (int b = 0; b < NBUF; b++)
        memcpy(arena_before[b], arena[b], BUF_BYTES);
}

void snapshot_check_unchanged(const snapshot *s, const char *call)
{
    for (int b = 0; b < NBUF; b++)
        if (memcmp(arena_before[b], arena[b], BUF_BYTES) != 0) {
            fprintf(stderr, "fuzz_api: failed %s changed buffer %d\n", call, b);
            abort();
        }
    for (int i = 0; i < s->count; i++) {
        uint64_t size = 0;
        uint8_t *now = save_all(&s->lh[i], &size);
        if (size != s->size[i] || memcmp(now, s->state[i], (size_t)size) != 0) {
            fprintf(stderr, "fuzz_api: failed %s changed a handle's state\n",
                    call);
            abort();
        }
        free(now);
    }
}

void snapshot_free(snapshot *s)
{
    for (int i = 0; i < s->count; i++)
        free(s->state[i]);
    s->count = 0;
}

/* Every live handle's state loads back into it and saves the same. */
void check_states_load_back(void)
{
    live_handle lh[4 * SLOTS];
    const int n = live_handles(lh);
    for (int i = 0; i < n; i++) {
        uint64_t size = 0, again_size = 0;
        uint8_t *blob = save_all(&lh[i], &size);
        const owl_status st = lh[i].load(lh[i].h, blob, size);
        if (st != OWL_OK) {
            fprintf(stderr, "fuzz_api: a saved %s state does not load back: "
                            "%s: %s\n", lh[i].kind, owl_status_name(st),
                    owl_context_last_error(lh[i].ctx));
            abort();
        }
        uint8_t *again = save_all(&lh[i], &again_size);
        if (again_size != size || memcmp(again, blob, (size_t)size) != 0) {
            fprintf(stderr, "fuzz_api: a loaded state saves differently\n");
            abort();
        }
        free(blob);
        free(again);
    }
}

void free_handles(void)
{
    for (int i = 0; i < SLOTS; i++) {
        /* Optimizers first: they hold pointers into the arena only. */
        owl_optimizer_free(opts[i].h);
        owl_adamw_free(adamws[i].h);
        owl_galore_free(galores[i].h);
        owl_sampler_free(samplers[i].h);
    }
    memset(samplers, 0, sizeof samplers);
    memset(galores, 0, sizeof galores);
    memset(adamws, 0, sizeof adamws);
    memset(opts, 0, sizeof opts);
}

