/* Opening input files so that a bad path cannot hang or exhaust the
 * trainer: a FIFO, a device or a directory given where a file belongs is
 * refused before anything blocks on it (the open itself does not wait
 * for a writer), and a file's size is known from fstat before a buffer is
 * allocated for it. Functions return 0 on success, or -1 with a message
 * naming the path in err. */
#ifndef LLAMA_FILEIO_H
#define LLAMA_FILEIO_H

#include <stddef.h>
#include <stdint.h>

/* Opens path read-only; refuses anything but a regular file. Returns the
 * descriptor (close it), with its size in *size; -1 on failure (errno is
 * open's when the open itself failed, e.g. ENOENT). */
int file_open_regular(const char *path, uint64_t *size, char *err,
                      size_t errlen);

/* Reads a whole regular file of at most `limit` bytes into a new buffer
 * (free it), NUL-terminated one byte past *len; errno as above. */
int file_read_all(const char *path, size_t limit, char **out, size_t *len,
                  char *err, size_t errlen);

#endif /* LLAMA_FILEIO_H */
