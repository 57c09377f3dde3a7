/* A small, strict JSON parser (RFC 8259) for the files the checkpoint
 * readers meet: safetensors headers, config.json and
 * model.safetensors.index.json. The whole document is parsed into a tree;
 * nesting depth and input size are bounded, duplicate object keys and
 * anything after the top-level value are refused, and the parser never
 * reads outside the given buffer (which need not be NUL-terminated). */
#ifndef LLAMA_JSON_H
#define LLAMA_JSON_H

#include <stddef.h>
#include <stdint.h>

/* Limits: deeper or larger documents are refused with a message. */
#define JSON_MAX_DEPTH 64
#define JSON_MAX_INPUT ((size_t)100 * 1024 * 1024)

typedef enum json_type {
    JSON_NULL,
    JSON_BOOL,
    JSON_NUMBER,
    JSON_STRING,
    JSON_ARRAY,
    JSON_OBJECT
} json_type;

typedef struct json_value json_value;

struct json_value {
    json_type type;
    int boolean;          /* JSON_BOOL */
    double number;        /* JSON_NUMBER (always finite) */
    int is_uint;          /* JSON_NUMBER written as plain digits that fit */
    uint64_t uint;        /* ... in 64 bits: their exact value */
    char *string;         /* JSON_STRING: decoded UTF-8, NUL-terminated */
    size_t string_len;    /* bytes, without the NUL (may contain NULs) */
    size_t count;         /* JSON_ARRAY / JSON_OBJECT: number of members */
    json_value *items;    /* [count] values */
    char **keys;          /* JSON_OBJECT: [count] decoded keys */
    size_t begin, end;    /* the value's text: input bytes [begin, end) */
};

/* Parses text[0, len). Returns the tree (free with json_free), or NULL
 * with a message naming the problem and its byte offset in err. */
json_value *json_parse(const char *text, size_t len, char *err,
                       size_t errlen);
void json_free(json_value *v);

/* The member `key` of an object, or NULL (also when v is not an object). */
const json_value *json_get(const json_value *v, const char *key);
/* A name for messages: "object", "string", ... */
const char *json_type_name(json_type t);

#endif /* LLAMA_JSON_H */
