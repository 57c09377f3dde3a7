/* libFuzzer target for the state loaders: the input is offered to every
 * loader of fuzz_handles.c (sampler, projector, AdamW, optimizer).
 * Properties, checked with abort():
 *   - no crash, no sanitizer report, no read outside the input;
 *   - a failed load leaves the handle's saved state byte for byte as it
 *     was;
 *   - a successful load makes the handle save exactly the input back (the
 *     format is canonical).
 *
 * Input: one mode byte, then the blob. Random bytes almost never carry a
 * valid CRC, so with bit 0 of the mode set the target first rewrites the
 * blob's payload length and CRC-32C to match its bytes, letting the fuzzer
 * reach the field checks behind the frame. */
#include "fuzz_handles.h"

#include "state.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static fuzz_handles handles;
static int ready;

static uint8_t *save_state(const fuzz_target *t, uint64_t *size)
{
    if (t->ops->size(t->handle, size) != OWL_OK)
        abort();
    uint8_t *buf = malloc(*size ? (size_t)*size : 1);
    uint64_t written = 0;
    if (buf == NULL || t->ops->save(t->handle, buf, *size, &written) != OWL_OK ||
        written != *size)
        abort();
    return buf;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!ready) {
        fuzz_handles_create(&handles);
        ready = 1;
    }
    if (size < 1)
        return 0;
    const uint8_t mode = data[0];
    const size_t n = size - 1;
    /* An exact-size copy: ASan sees any read past its end. */
    uint8_t *blob = malloc(n ? n : 1);
    if (blob == NULL)
        abort();
    memcpy(blob, data + 1, n);
    if ((mode & 1) && n >= OWL_STATE_HEADER_BYTES + OWL_STATE_TRAILER_BYTES) {
        owl__le_put_u64(blob + 16, n - OWL_STATE_HEADER_BYTES -
                                       OWL_STATE_TRAILER_BYTES);
        owl__le_put_u32(blob + n - 4, owl__crc32c(0, blob, n - 4));
    }

    for (int i = 0; i < handles.count; i++) {
        const fuzz_target *t = &handles.targets[i];
        uint64_t before_size = 0, after_size = 0;
        uint8_t *before = save_state(t, &before_size);
        const owl_status st = t->ops->load(t->handle, blob, n);
        /* Every refusal explains itself (read before the save below
         * clears the message). */
        if (st != OWL_OK && owl_context_last_error(handles.ctx)[0] == '\0') {
            fprintf(stderr, "%s: %s without a message\n", t->name,
                    owl_status_name(st));
            abort();
        }
        uint8_t *after = save_state(t, &after_size);
        if (st != OWL_OK) {
            if (before_size != after_size ||
                memcmp(before, after, (size_t)before_size) != 0) {
                fprintf(stderr, "%s: failed load (%s) changed the state\n",
                        t->name, owl_status_name(st));
                abort();
            }
        } else if (after_size != n || memcmp(after, blob, n) != 0) {
            fprintf(stderr, "%s: loaded state does not save back the same\n",
                    t->name);
            abort();
        }
        free(before);
        free(after);
    }
    free(blob);
    return 0;
}
