/* A strict recursive-descent JSON parser; see json.h. Every read goes
 * through peek()/the position check, so truncated input ends in a message,
 * never a read past the buffer. */
#include "json.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Longest number text accepted: plenty for any double or 64-bit integer
 * written out, and it bounds the copy handed to strtod. */
#define JSON_MAX_NUMBER_CHARS 256

typedef struct parser {
    const unsigned char *text;
    size_t len, pos;
    int depth;
    char *err;
    size_t errlen;
    int failed;
} parser;

static void fail(parser *p, const char *fmt, ...)
{
    if (p->failed)
        return;
    p->failed = 1;
    if (!p->err || p->errlen == 0)
        return;
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    snprintf(p->err, p->errlen, "JSON: %s at byte %zu", msg, p->pos);
}

static int at_end(const parser *p) { return p->pos >= p->len; }
static int peek(const parser *p) { return at_end(p) ? -1 : p->text[p->pos]; }

static void skip_ws(parser *p)
{
    while (!at_end(p)) {
        int c = p->text[p->pos];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r')
            break;
        p->pos++;
    }
}

static void free_contents(json_value *v)
{
    if (!v)
        return;
    free(v->string);
    for (size_t i = 0; i < v->count; i++) {
        if (v->items)
            free_contents(&v->items[i]);
        if (v->keys)
            free(v->keys[i]);
    }
    free(v->items);
    free(v->keys);
    memset(v, 0, sizeof *v);
}

void json_free(json_value *v)
{
    free_contents(v);
    free(v);
}

const char *json_type_name(json_type t)
{
    switch (t) {
    case JSON_NULL: return "null";
    case JSON_BOOL: return "boolean";
    case JSON_NUMBER: return "number";
    case JSON_STRING: return "string";
    case JSON_ARRAY: return "array";
    case JSON_OBJECT: return "object";
    }
    return "unknown";
}

const json_value *json_get(const json_value *v, const char *key)
{
    if (!v || v->type != JSON_OBJECT || !key)
        return NULL;
    for (size_t i = 0; i < v->count; i++)
        if (strcmp(v->keys[i], key) == 0)
            return &v->items[i];
    return NULL;
}

static void parse_value(parser *p, json_value *out);

static int match_literal(parser *p, const char *lit)
{
    size_t n = strlen(lit);
    if (p->len - p->pos < n || memcmp(p->text + p->pos, lit, n) != 0)
        return 0;
    p->pos += n;
    return 1;
}

static int hex_digit(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Reads the four hex digits of a \u escape (p->pos is on the first). */
static long read_hex4(parser *p)
{
    if (p->len - p->pos < 4) {
        p->pos = p->len;
        fail(p, "truncated \\u escape");
        return -1;
    }
    long v = 0;
    for (int i = 0; i < 4; i++) {
        int d = hex_digit(p->text[p->pos]);
        if (d < 0) {
            fail(p, "bad hex digit in \\u escape");
            return -1;
        }
        v = v * 16 + d;
        p->pos++;
    }
    return v;
}

static size_t put_utf8(char *dst, unsigned long cp)
{
    if (cp < 0x80) {
        dst[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        dst[0] = (char)(0xC0 | (cp >> 6));
        dst[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        dst[0] = (char)(0xE0 | (cp >> 12));
        dst[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        dst[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    dst[0] = (char)(0xF0 | (cp >> 18));
    dst[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    dst[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    dst[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Length of the well-formed UTF-8 sequence at s (n bytes available), or 0
 * when it is malformed: overlong forms, surrogates and code points past
 * U+10FFFF are refused (RFC 3629). */
static size_t utf8_sequence(const unsigned char *s, size_t n)
{
    unsigned c = s[0];
    size_t len;
    unsigned long cp, min;
    if (c < 0x80)
        return 1;
    if ((c & 0xE0) == 0xC0) {
        len = 2; cp = c & 0x1F; min = 0x80;
    } else if ((c & 0xF0) == 0xE0) {
        len = 3; cp = c & 0x0F; min = 0x800;
    } else if ((c & 0xF8) == 0xF0) {
        len = 4; cp = c & 0x07; min = 0x10000;
    } else {
        return 0;
    }
    if (n < len)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
        return 0;
    return len;
}

/* Parses a string (p->pos on the opening quote) into a new NUL-terminated
 * buffer. The decoded text is never longer than the raw text, which sizes
 * the buffer. NUL characters (\u0000) are refused: no name we read can
 * hold one, and C strings could not carry it. */
static char *parse_string(parser *p, size_t *out_len)
{
    p->pos++; /* opening quote */
    size_t start = p->pos, end = start;
    while (end < p->len && p->text[end] != '"') {
        if (p->text[end] == '\\')
            end++;
        end++;
    }
    if (end >= p->len) {
        p->pos = p->len;
        fail(p, "unterminated string");
        return NULL;
    }
    char *buf = malloc(end - start + 1);
    if (!buf) {
        fail(p, "out of memory");
        return NULL;
    }
    size_t n = 0;
    while (p->pos < end) {
        unsigned c = p->text[p->pos];
        if (c < 0x20) {
            fail(p, "control character 0x%02x in string", c);
            goto bad;
        }
        if (c != '\\') {
            size_t seq = utf8_sequence(p->text + p->pos, end - p->pos);
            if (seq == 0) {
                fail(p, "invalid UTF-8 in string");
                goto bad;
            }
            memcpy(buf + n, p->text + p->pos, seq);
            n += seq;
            p->pos += seq;
            continue;
        }
        p->pos++; /* backslash; the scan above guarantees one more byte */
        int e = p->text[p->pos++];
        switch (e) {
        case '"': buf[n++] = '"'; break;
        case '\\': buf[n++] = '\\'; break;
        case '/': buf[n++] = '/'; break;
        case 'b': buf[n++] = '\b'; break;
        case 'f': buf[n++] = '\f'; break;
        case 'n': buf[n++] = '\n'; break;
        case 'r': buf[n++] = '\r'; break;
        case 't': buf[n++] = '\t'; break;
        case 'u': {
            /* The \u escapes stay inside [start, end) because a quote
             * cannot be a hex digit; read_hex4 checks the digits. */
            long hi = read_hex4(p);
            if (hi < 0)
                goto bad;
            unsigned long cp = (unsigned long)hi;
            if (hi >= 0xDC00 && hi <= 0xDFFF) {
                fail(p, "lone low surrogate \\u%04lx", cp);
                goto bad;
            }
            if (hi >= 0xD800 && hi <= 0xDBFF) {
                if (end - p->pos < 6 || p->text[p->pos] != '\\' ||
                    p->text[p->pos + 1] != 'u') {
                    fail(p, "high surrogate \\u%04lx without its low half",
                         cp);
                    goto bad;
                }
                p->pos += 2;
                long lo = read_hex4(p);
                if (lo < 0)
                    goto bad;
                if (lo < 0xDC00 || lo > 0xDFFF) {
                    fail(p, "high surrogate \\u%04lx followed by \\u%04lx",
                         cp, (unsigned long)lo);
                    goto bad;
                }
                cp = 0x10000 + ((cp - 0xD800) << 10) +
                     ((unsigned long)lo - 0xDC00);
            }
            if (cp == 0) {
                fail(p, "\\u0000 in string is not supported");
                goto bad;
            }
            /* A \uXXXX escape is 6 bytes and yields at most 3; a pair is
             * 12 and yields 4: the buffer is large enough. */
            n += put_utf8(buf + n, cp);
            break;
        }
        default:
            p->pos--;
            fail(p, "bad escape '\\%c'", (e >= 0x20 && e < 0x7F) ? e : '?');
            goto bad;
        }
    }
    p->pos = end + 1; /* closing quote */
    buf[n] = '\0';
    *out_len = n;
    return buf;
bad:
    free(buf);
    return NULL;
}

static int is_digit(int c) { return c >= '0' && c <= '9'; }

static void parse_number(parser *p, json_value *out)
{
    size_t start = p->pos;
    int plain = 1; /* only digits: a candidate for the exact integer */
    if (peek(p) == '-') {
        plain = 0;
        p->pos++;
    }
    if (peek(p) == '0') {
        p->pos++;
    } else if (is_digit(peek(p))) {
        while (is_digit(peek(p)))
            p->pos++;
    } else {
        fail(p, "bad number");
        return;
    }
    if (peek(p) == '.') {
        plain = 0;
        p->pos++;
        if (!is_digit(peek(p))) {
            fail(p, "bad number: digits expected after '.'");
            return;
        }
        while (is_digit(peek(p)))
            p->pos++;
    }
    if (peek(p) == 'e' || peek(p) == 'E') {
        plain = 0;
        p->pos++;
        if (peek(p) == '+' || peek(p) == '-')
            p->pos++;
        if (!is_digit(peek(p))) {
            fail(p, "bad number: digits expected in the exponent");
            return;
        }
        while (is_digit(peek(p)))
            p->pos++;
    }
    size_t n = p->pos - start;
    if (n > JSON_MAX_NUMBER_CHARS) {
        p->pos = start;
        fail(p, "number of %zu characters is too long", n);
        return;
    }
    char buf[JSON_MAX_NUMBER_CHARS + 1];
    memcpy(buf, p->text + start, n);
    buf[n] = '\0';
    /* The grammar was checked above, so strtod consumes all of buf. */
    double d = strtod(buf, NULL);
    if (!(d - d == 0)) { /* infinite (NaN cannot come from the grammar) */
        p->pos = start;
        fail(p, "number %.40s%s is out of range", buf, n > 40 ? "..." : "");
        return;
    }
    out->type = JSON_NUMBER;
    out->number = d;
    if (plain) {
        uint64_t u = 0;
        int fits = 1;
        for (size_t i = 0; i < n; i++) {
            unsigned dgt = (unsigned)(buf[i] - '0');
            if (u > (UINT64_MAX - dgt) / 10) {
                fits = 0;
                break;
            }
            u = u * 10 + dgt;
        }
        out->is_uint = fits;
        out->uint = fits ? u : 0;
    }
}

static int grow(parser *p, json_value *v, size_t *cap, int with_keys)
{
    if (v->count < *cap)
        return 1;
    size_t ncap = *cap ? *cap * 2 : 4;
    json_value *items = realloc(v->items, ncap * sizeof *items);
    if (!items) {
        fail(p, "out of memory");
        return 0;
    }
    v->items = items;
    if (with_keys) {
        char **keys = realloc(v->keys, ncap * sizeof *keys);
        if (!keys) {
            fail(p, "out of memory");
            return 0;
        }
        v->keys = keys;
    }
    *cap = ncap;
    return 1;
}

static int enter(parser *p)
{
    if (p->depth >= JSON_MAX_DEPTH) {
        fail(p, "nesting deeper than %d", JSON_MAX_DEPTH);
        return 0;
    }
    p->depth++;
    p->pos++; /* '[' or '{' */
    return 1;
}

static void parse_array(parser *p, json_value *out)
{
    if (!enter(p))
        return;
    out->type = JSON_ARRAY;
    size_t cap = 0;
    skip_ws(p);
    if (peek(p) == ']') {
        p->pos++;
        p->depth--;
        return;
    }
    for (;;) {
        if (!grow(p, out, &cap, 0))
            return;
        json_value *item = &out->items[out->count];
        memset(item, 0, sizeof *item);
        out->count++;
        skip_ws(p);
        parse_value(p, item);
        if (p->failed)
            return;
        skip_ws(p);
        int c = peek(p);
        if (c == ',') {
            p->pos++;
            continue;
        }
        if (c == ']') {
            p->pos++;
            p->depth--;
            return;
        }
        fail(p, c < 0 ? "unterminated array" : "',' or ']' expected");
        return;
    }
}

static int cmp_keys(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Duplicate keys are refused: which of them would count is left open by
 * the RFC, and readers disagree. Sorting copies of the pointers keeps the
 * check O(n log n) for headers with many tensors. */
static void check_duplicates(parser *p, const json_value *obj)
{
    if (obj->count < 2)
        return;
    char **sorted = malloc(obj->count * sizeof *sorted);
    if (!sorted) {
        fail(p, "out of memory");
        return;
    }
    memcpy(sorted, obj->keys, obj->count * sizeof *sorted);
    qsort(sorted, obj->count, sizeof *sorted, cmp_keys);
    for (size_t i = 1; i < obj->count; i++) {
        if (strcmp(sorted[i - 1], sorted[i]) == 0) {
            fail(p, "duplicate key \"%.80s\" in object", sorted[i]);
            break;
        }
    }
    free(sorted);
}

static void parse_object(parser *p, json_value *out)
{
    if (!enter(p))
        return;
    out->type = JSON_OBJECT;
    size_t cap = 0;
    skip_ws(p);
    if (peek(p) == '}') {
        p->pos++;
        p->depth--;
        return;
    }
    for (;;) {
        skip_ws(p);
        if (peek(p) != '"') {
            fail(p, at_end(p) ? "unterminated object"
                              : "string key expected in object");
            return;
        }
        if (!grow(p, out, &cap, 1))
            return;
        size_t klen;
        char *key = parse_string(p, &klen);
        if (!key)
            return;
        json_value *item = &out->items[out->count];
        memset(item, 0, sizeof *item);
        out->keys[out->count] = key;
        out->count++;
        skip_ws(p);
        if (peek(p) != ':') {
            fail(p, "':' expected after key \"%.80s\"", key);
            return;
        }
        p->pos++;
        skip_ws(p);
        parse_value(p, item);
        if (p->failed)
            return;
        skip_ws(p);
        int c = peek(p);
        if (c == ',') {
            p->pos++;
            continue;
        }
        if (c == '}') {
            p->pos++;
            p->depth--;
            check_duplicates(p, out);
            return;
        }
        fail(p, c < 0 ? "unterminated object" : "',' or '}' expected");
        return;
    }
}

static void parse_value_at(parser *p, json_value *out);

/* Every value records where its text is, so that a document can be
 * rewritten in place (config.json keeps the keys a save does not touch
 * exactly as they were written). */
static void parse_value(parser *p, json_value *out)
{
    out->begin = p->pos;
    parse_value_at(p, out);
    out->end = p->pos;
}

static void parse_value_at(parser *p, json_value *out)
{
    int c = peek(p);
    switch (c) {
    case -1:
        fail(p, "value expected, found the end of the input");
        return;
    case '{':
        parse_object(p, out);
        return;
    case '[':
        parse_array(p, out);
        return;
    case '"':
        out->string = parse_string(p, &out->string_len);
        if (out->string)
            out->type = JSON_STRING;
        return;
    case 't':
    case 'f':
    case 'n':
        if (match_literal(p, "true")) {
            out->type = JSON_BOOL;
            out->boolean = 1;
        } else if (match_literal(p, "false")) {
            out->type = JSON_BOOL;
        } else if (match_literal(p, "null")) {
            out->type = JSON_NULL;
        } else {
            fail(p, "unknown literal");
        }
        return;
    default:
        if (c == '-' || is_digit(c)) {
            parse_number(p, out);
            return;
        }
        fail(p, "unexpected character '%c'",
             (c >= 0x20 && c < 0x7F) ? c : '?');
    }
}

json_value *json_parse(const char *text, size_t len, char *err,
                       size_t errlen)
{
    parser p = {(const unsigned char *)text, len, 0, 0, err, errlen, 0};
    if (err && errlen)
        err[0] = '\0';
    if (!text) {
        fail(&p, "no input");
        return NULL;
    }
    if (len > JSON_MAX_INPUT) {
        fail(&p, "input of %zu bytes is larger than the %zu-byte limit",
             len, JSON_MAX_INPUT);
        return NULL;
    }
    json_value *root = calloc(1, sizeof *root);
    if (!root) {
        fail(&p, "out of memory");
        return NULL;
    }
    skip_ws(&p);
    parse_value(&p, root);
    if (!p.failed) {
        skip_ws(&p);
        if (!at_end(&p))
            fail(&p, "unexpected text after the value");
    }
    if (p.failed) {
        json_free(root);
        return NULL;
    }
    return root;
}
