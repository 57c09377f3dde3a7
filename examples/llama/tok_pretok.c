/* The pre-tokenizer splits, written out by hand from their regexes (no
 * regex engine): the pieces are what Hugging Face tokenizers' Oniguruma
 * search gives, trying the alternatives in order at each position.
 *
 * GPT-2 (Hugging Face's ByteLevel pre-tokenizer):
 *   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+
 *   |\s+(?!\S)|\s+
 * Llama 3 ("llama-bpe"):
 *   (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}
 *   | ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
 * SmolLM: Digits(individual_digits) first, i.e. every \p{N} character is
 * a piece alone, then GPT-2's regex on each run between them.
 *
 * Every character falls in one of the classes letter, number, space or
 * other, so every position starts a match and the pieces tile the text.
 * An invalid UTF-8 byte is one character of class other (as U+FFFD). */
#include "tok_internal.h"

/* ---- UTF-8 and character classes ---------------------------------- */

size_t tok_utf8_next(const unsigned char *s, size_t len, size_t pos,
                     int32_t *cp)
{
    unsigned c = s[pos];
    if (c < 0x80) {
        *cp = (int32_t)c;
        return 1;
    }
    size_t n;
    uint32_t v, min;
    if (c >= 0xC2 && c <= 0xDF) {
        n = 2, v = c & 0x1F, min = 0x80;
    } else if (c >= 0xE0 && c <= 0xEF) {
        n = 3, v = c & 0x0F, min = 0x800;
    } else if (c >= 0xF0 && c <= 0xF4) {
        n = 4, v = c & 0x07, min = 0x10000;
    } else {
        *cp = -1; /* a continuation byte, C0, C1 or F5..FF */
        return 1;
    }
    if (len - pos < n) {
        *cp = -1;
        return 1;
    }
    for (size_t i = 1; i < n; i++) {
        unsigned d = s[pos + i];
        if ((d & 0xC0) != 0x80) {
            *cp = -1;
            return 1;
        }
        v = v << 6 | (d & 0x3F);
    }
    /* Overlong forms, UTF-16 surrogates and values past U+10FFFF. */
    if (v < min || (v >= 0xD800 && v <= 0xDFFF) || v > 0x10FFFF) {
        *cp = -1;
        return 1;
    }
    *cp = (int32_t)v;
    return n;
}

size_t tok_utf8_put(uint32_t cp, char *out)
{
    unsigned char *o = (unsigned char *)out;
    if (cp < 0x80) {
        o[0] = (unsigned char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (unsigned char)(0xC0 | cp >> 6);
        o[1] = (unsigned char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (unsigned char)(0xE0 | cp >> 12);
        o[1] = (unsigned char)(0x80 | (cp >> 6 & 0x3F));
        o[2] = (unsigned char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (unsigned char)(0xF0 | cp >> 18);
    o[1] = (unsigned char)(0x80 | (cp >> 12 & 0x3F));
    o[2] = (unsigned char)(0x80 | (cp >> 6 & 0x3F));
    o[3] = (unsigned char)(0x80 | (cp & 0x3F));
    return 4;
}

/* ASCII, the bulk of most text, without the search. */
static const unsigned char ascii_class[128] = {
    [0x09] = UNI_SPACE, [0x0A] = UNI_SPACE, [0x0B] = UNI_SPACE,
    [0x0C] = UNI_SPACE, [0x0D] = UNI_SPACE, [0x20] = UNI_SPACE,
    ['0'] = UNI_NUMBER, ['1'] = UNI_NUMBER, ['2'] = UNI_NUMBER,
    ['3'] = UNI_NUMBER, ['4'] = UNI_NUMBER, ['5'] = UNI_NUMBER,
    ['6'] = UNI_NUMBER, ['7'] = UNI_NUMBER, ['8'] = UNI_NUMBER,
    ['9'] = UNI_NUMBER,
#define L(c) [c] = UNI_LETTER
    L('A'), L('B'), L('C'), L('D'), L('E'), L('F'), L('G'), L('H'), L('I'),
    L('J'), L('K'), L('L'), L('M'), L('N'), L('O'), L('P'), L('Q'), L('R'),
    L('S'), L('T'), L('U'), L('V'), L('W'), L('X'), L('Y'), L('Z'),
    L('a'), L('b'), L('c'), L('d'), L('e'), L('f'), L('g'), L('h'), L('i'),
    L('j'), L('k'), L('l'), L('m'), L('n'), L('o'), L('p'), L('q'), L('r'),
    L('s'), L('t'), L('u'), L('v'), L('w'), L('x'), L('y'), L('z'),
#undef L
};

uni_class tok_uni_class(int32_t cp)
{
    if (cp < 0)
        return UNI_OTHER;
    if (cp < 0x80)
        return (uni_class)ascii_class[cp];
    size_t lo = 0, hi = uni_range_count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if ((uint32_t)cp < uni_ranges[mid].lo)
            hi = mid;
        else if ((uint32_t)cp > uni_ranges[mid].hi)
            lo = mid + 1;
        else
            return uni_ranges[mid].cls;
    }
    return UNI_OTHER;
}

/* ---- one character at a time ----------------------------------------- */

/* The character at pos of s[0, end): its class, code point and length.
 * At end, class -1. */
typedef struct ch {
    int cls;
    int32_t cp;
    size_t len;
} ch;

static ch char_at(const unsigned char *s, size_t end, size_t pos)
{
    ch c = {-1, -1, 0};
    if (pos >= end)
        return c;
    c.len = tok_utf8_next(s, end, pos, &c.cp);
    c.cls = (int)tok_uni_class(c.cp);
    return c;
}

/* The end of the run of characters of class cls starting at pos. */
static size_t run_of(const unsigned char *s, size_t end, size_t pos, int cls)
{
    while (pos < end) {
        ch c = char_at(s, end, pos);
        if (c.cls != cls)
            break;
        pos += c.len;
    }
    return pos;
}

static int is_crlf(int32_t cp) { return cp == '\r' || cp == '\n'; }

/* 's 't 're 've 'm 'll 'd after the apostrophe at pos: the match's end,
 * or 0. Case-insensitive for Llama 3 (ASCII letters only: Oniguruma's
 * case folding maps no other character to these). */
static size_t contraction(const unsigned char *s, size_t end, size_t pos,
                          int fold)
{
    static const char *const suffixes[] = {"s", "t", "re", "ve", "m", "ll",
                                            "d"};
    size_t avail = end - pos - 1;
    const unsigned char *p = s + pos + 1;
    for (size_t k = 0; k < sizeof suffixes / sizeof suffixes[0]; k++) {
        const char *x = suffixes[k];
        size_t n = x[1] ? 2 : 1;
        if (avail < n)
            continue;
        size_t i = 0;
        for (; i < n; i++) {
            unsigned c = p[i];
            if (fold && c >= 'A' && c <= 'Z')
                c += 'a' - 'A';
            if (c != (unsigned char)x[i])
                break;
        }
        if (i == n)
            return pos + 1 + n;
    }
    return 0;
}

/* The whitespace run from pos (a space character) and, for the
 * lookahead, the start of its last character. */
static size_t space_run(const unsigned char *s, size_t end, size_t pos,
                        size_t *last_start, size_t *count, size_t *last_crlf)
{
    *count = 0;
    *last_crlf = 0;
    while (pos < end) {
        ch c = char_at(s, end, pos);
        if (c.cls != UNI_SPACE)
            break;
        *last_start = pos;
        (*count)++;
        if (is_crlf(c.cp))
            *last_crlf = pos + 1;
        pos += c.len;
    }
    return pos;
}

/* \s+(?!\S)|\s+ on the run [pos, run_end): the whole run when it ends the
 * text, else all but its last character, or the one character alone. */
static size_t trailing_space(size_t end, size_t run_end, size_t last_start,
                             size_t count)
{
    if (run_end == end || count == 1)
        return run_end;
    return last_start;
}

/* ---- the two regexes ------------------------------------------------- */

static size_t gpt2_next(const unsigned char *s, size_t end, size_t pos)
{
    ch c0 = char_at(s, end, pos);
    if (c0.cp == '\'') {
        size_t e = contraction(s, end, pos, 0);
        if (e)
            return e;
    }
    /* ` ?X+` for X = letters, numbers, others: the optional space is
     * taken only when an X follows it. */
    if (c0.cp == ' ') {
        ch c1 = char_at(s, end, pos + 1);
        if (c1.cls == UNI_LETTER || c1.cls == UNI_NUMBER ||
            c1.cls == UNI_OTHER)
            return run_of(s, end, pos + 1, c1.cls);
    }
    if (c0.cls != UNI_SPACE)
        return run_of(s, end, pos, c0.cls);
    size_t last_start = pos, count, last_crlf;
    size_t run_end = space_run(s, end, pos, &last_start, &count, &last_crlf);
    return trailing_space(end, run_end, last_start, count);
}

static size_t llama3_next(const unsigned char *s, size_t end, size_t pos)
{
    ch c0 = char_at(s, end, pos);
    if (c0.cp == '\'') {
        size_t e = contraction(s, end, pos, 1);
        if (e)
            return e;
    }
    /* [^\r\n\p{L}\p{N}]?\p{L}+ */
    if (c0.cls == UNI_LETTER)
        return run_of(s, end, pos, UNI_LETTER);
    if (c0.cls != UNI_NUMBER && !is_crlf(c0.cp)) {
        ch c1 = char_at(s, end, pos + c0.len);
        if (c1.cls == UNI_LETTER)
            return run_of(s, end, pos + c0.len, UNI_LETTER);
    }
    /* \p{N}{1,3} */
    if (c0.cls == UNI_NUMBER) {
        size_t p = pos;
        for (int k = 0; k < 3; k++) {
            ch c = char_at(s, end, p);
            if (c.cls != UNI_NUMBER)
                break;
            p += c.len;
        }
        return p;
    }
    /* ` ?[^\s\p{L}\p{N}]+[\r\n]*` */
    int other = c0.cls == UNI_OTHER;
    size_t p = pos;
    if (!other && c0.cp == ' ' &&
        char_at(s, end, pos + 1).cls == UNI_OTHER) {
        other = 1;
        p = pos + 1;
    }
    if (other) {
        p = run_of(s, end, p, UNI_OTHER);
        while (p < end && (s[p] == '\r' || s[p] == '\n'))
            p++;
        return p;
    }
    /* c0 is a space: \s*[\r\n]+ ends after the run's last CR or LF;
     * then \s+(?!\S) and \s+. */
    size_t last_start = pos, count, last_crlf;
    size_t run_end = space_run(s, end, pos, &last_start, &count, &last_crlf);
    if (last_crlf)
        return last_crlf;
    return trailing_space(end, run_end, last_start, count);
}

/* ---- the splitter ------------------------------------------------------ */

void tok_split_begin(tok_splitter *sp, tok_pre pre, const unsigned char *s,
                     size_t len)
{
    sp->pre = pre;
    sp->s = s;
    sp->len = len;
    sp->pos = 0;
    sp->run_end = 0;
}

int tok_split_next(tok_splitter *sp, size_t *begin, size_t *end)
{
    size_t pos = sp->pos;
    if (pos >= sp->len)
        return 0;
    size_t e;
    switch (sp->pre) {
    case TOK_PRE_LLAMA_BPE:
        e = llama3_next(sp->s, sp->len, pos);
        break;
    case TOK_PRE_SMOLLM:
        if (pos >= sp->run_end) {
            ch c = char_at(sp->s, sp->len, pos);
            if (c.cls == UNI_NUMBER) {
                e = pos + c.len;
                break;
            }
            /* The run up to the next number character: GPT-2's regex sees
             * it as a whole text (its lookahead stops at the run's end). */
            size_t r = pos;
            while (r < sp->len) {
                ch d = char_at(sp->s, sp->len, r);
                if (d.cls == UNI_NUMBER)
                    break;
                r += d.len;
            }
            sp->run_end = r;
        }
        e = gpt2_next(sp->s, sp->run_end, pos);
        break;
    case TOK_PRE_GPT2:
    default:
        e = gpt2_next(sp->s, sp->len, pos);
        break;
    }
    *begin = pos;
    *end = e;
    sp->pos = e;
    return 1;
}
