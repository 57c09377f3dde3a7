/* Error messages of the example's file readers and writers: every function
 * that can fail takes `char *err, size_t errlen` and writes a readable
 * message there (err may be NULL or errlen 0: then nothing is written). */
#ifndef LLAMA_ERRMSG_H
#define LLAMA_ERRMSG_H

#include <stddef.h>

#if defined(__GNUC__)
#define LLAMA_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define LLAMA_PRINTF(f, a)
#endif

/* Formats the message into err. */
void llama_set_err(char *err, size_t errlen, const char *fmt, ...)
    LLAMA_PRINTF(3, 4);
/* The same, returning -1: `return llama_fail(err, errlen, ...)`. */
int llama_fail(char *err, size_t errlen, const char *fmt, ...)
    LLAMA_PRINTF(3, 4);

#endif /* LLAMA_ERRMSG_H */
