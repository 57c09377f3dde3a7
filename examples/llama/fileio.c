/* Input files for the trainer and its loaders; see fileio.h. */
#include "fileio.h"
#include "errmsg.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int file_open_regular(const char *path, uint64_t *size, char *err,
                      size_t errlen)
{
    /* O_NONBLOCK: opening a FIFO for reading would otherwise wait for a
     * writer, forever; on a regular file the flag changes nothing. The
     * type is checked on the descriptor, so a path swapped between a stat
     * and the open cannot slip through. */
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
        int e = errno; /* kept for callers that tell ENOENT apart */
        llama_set_err(err, errlen, "%s: cannot open: %s", path, strerror(e));
        errno = e;
        return -1;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        llama_set_err(err, errlen, "%s: cannot stat: %s", path, strerror(errno));
        close(fd);
        return -1;
    }
    if (!S_ISREG(st.st_mode)) {
        llama_set_err(err, errlen, "%s: not a regular file (%s)", path,
                S_ISFIFO(st.st_mode)  ? "a FIFO"
                : S_ISDIR(st.st_mode) ? "a directory"
                : S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode) ? "a device"
                                                             : "a socket");
        close(fd);
        return -1;
    }
    /* Reads of a regular file then block as usual. */
    int flags = fcntl(fd, F_GETFL);
    if (flags >= 0)
        fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
    *size = (uint64_t)st.st_size;
    return fd;
}

int file_read_all(const char *path, size_t limit, char **out, size_t *len,
                  char *err, size_t errlen)
{
    uint64_t size;
    int fd = file_open_regular(path, &size, err, errlen);
    if (fd < 0)
        return -1;
    if (size > limit) {
        llama_set_err(err, errlen, "%s: %llu bytes, larger than the %zu-byte "
                "limit", path, (unsigned long long)size, limit);
        close(fd);
        return -1;
    }
    char *buf = malloc((size_t)size + 1);
    if (!buf) {
        llama_set_err(err, errlen, "%s: out of memory for %llu bytes", path,
                (unsigned long long)size);
        close(fd);
        return -1;
    }
    /* Read what fstat announced; a file that changes meanwhile is read
     * up to that size, never past the buffer. */
    size_t n = 0;
    while (n < size) {
        ssize_t got = read(fd, buf + n, (size_t)size - n);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0) {
            llama_set_err(err, errlen, "%s: read error: %s", path,
                    strerror(errno));
            free(buf);
            close(fd);
            return -1;
        }
        if (got == 0)
            break;
        n += (size_t)got;
    }
    close(fd);
    buf[n] = '\0';
    *out = buf;
    *len = n;
    return 0;
}
