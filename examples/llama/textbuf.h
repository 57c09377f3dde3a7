/* A growing text buffer for the files the example writes (safetensors
 * headers, tokenizer.json, tokenizer_config.json). Appends never fail:
 * an allocation failure sets oom, later appends do nothing, and the
 * writer checks oom once at the end. The text stays NUL-terminated. */
#ifndef LLAMA_TEXTBUF_H
#define LLAMA_TEXTBUF_H

#include "errmsg.h" /* LLAMA_PRINTF */

#include <stddef.h>

typedef struct textbuf {
    char *s; /* free() it */
    size_t len, cap;
    int oom;
} textbuf;

void tb_put(textbuf *b, const void *s, size_t n);
void tb_puts(textbuf *b, const char *s);
void tb_printf(textbuf *b, const char *fmt, ...) LLAMA_PRINTF(2, 3);
/* s[0, n) as a JSON string: quotes, backslash escapes for '"' and '\\',
 * \u00XX for control characters, every other byte as it is (the caller
 * passes valid UTF-8). */
void tb_json_string(textbuf *b, const char *s, size_t n);

#endif /* LLAMA_TEXTBUF_H */
