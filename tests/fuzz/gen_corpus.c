/* Writes the fuzzer's seed corpus into a directory: the saved state of
 * every handle of fuzz_handles.c, each with mode byte 0 (as is) and 1 (the
 * target reseals length and CRC), as seed-<name>-<mode>. */
#include "fuzz_handles.h"

#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s corpus-dir\n", argv[0]);
        return 2;
    }
    fuzz_handles h;
    fuzz_handles_create(&h);
    for (int i = 0; i < h.count; i++) {
        const fuzz_target *t = &h.targets[i];
        uint64_t size = 0, written = 0;
        if (t->ops->size(t->handle, &size) != OWL_OK)
            return 1;
        unsigned char *buf = malloc((size_t)size);
        if (buf == NULL || t->ops->save(t->handle, buf, size, &written) != OWL_OK)
            return 1;
        for (int mode = 0; mode < 2; mode++) {
            char path[4096];
            snprintf(path, sizeof path, "%s/seed-%s-%d", argv[1], t->name,
                     mode);
            FILE *f = fopen(path, "wb");
            if (f == NULL) {
                perror(path);
                return 1;
            }
            const unsigned char m = (unsigned char)mode;
            if (fwrite(&m, 1, 1, f) != 1 ||
                fwrite(buf, 1, (size_t)written, f) != written ||
                fclose(f) != 0) {
                perror(path);
                return 1;
            }
        }
        free(buf);
    }
    fuzz_handles_free(&h);
    return 0;
}
