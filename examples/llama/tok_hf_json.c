/* Hugging Face's tokenizer.json (tokenizer.h): read into a tok_spec for
 * tok_create, and written back. Only the layouts whose encoding this
 * tokenizer reproduces are accepted; every other part is refused by name
 * rather than encoded differently without a word. The truncation and
 * padding settings (batches of a fixed length) are ignored. */
#include "tok_internal.h"

#include "json.h"
#include "textbuf.h"
#include "safetensors.h" /* st_write_file_atomic */

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* The regexes of the Split pre-tokenizers known here, as they appear in
 * the tokenizer.json files of GPT-2-style models and of Llama 3. */
static const char gpt2_regex[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+"
    "|\\s+(?!\\S)|\\s+";
static const char llama3_regex[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+"
    "|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+"
    "|\\s+(?!\\S)|\\s+";

#define PFX "tokenizer.json: "

/* ---- small readers ------------------------------------------------------ */

static const char *type_of(const json_value *v)
{
    const json_value *t = json_get(v, "type");
    return t && t->type == JSON_STRING ? t->string : NULL;
}

/* An optional boolean member: absent or null gives dflt; -1 when it is
 * of another type. */
static int get_bool(const json_value *obj, const char *key, int dflt,
                    int *out, const char *where, char *err, size_t errlen)
{
    const json_value *v = json_get(obj, key);
    if (!v || v->type == JSON_NULL) {
        *out = dflt;
        return 0;
    }
    if (v->type != JSON_BOOL)
        return tok_fail(err, errlen, PFX "%s.%s is a %s, not a boolean",
                        where, key, json_type_name(v->type));
    *out = v->boolean;
    return 0;
}

/* Fails unless every member of obj is one of the NULL-terminated keys. */
static int only_keys(const json_value *obj, const char *const *keys,
                     const char *where, char *err, size_t errlen)
{
    for (size_t i = 0; i < obj->count; i++) {
        size_t k = 0;
        while (keys[k] && strcmp(keys[k], obj->keys[i]) != 0)
            k++;
        if (!keys[k])
            return tok_fail(err, errlen,
                            PFX "%s has the member '%s', which this "
                            "tokenizer does not know", where, obj->keys[i]);
    }
    return 0;
}

/* ---- pre-tokenizer -------------------------------------------------- */

/* ByteLevel without a prefix space; *use_regex tells whether it also
 * splits with GPT-2's regex. */
static int byte_level(const json_value *v, int *use_regex, const char *where,
                      char *err, size_t errlen)
{
    const char *t = type_of(v);
    if (!t || strcmp(t, "ByteLevel") != 0)
        return tok_fail(err, errlen, PFX "%s is %s, not ByteLevel", where,
                        t ? t : "without a type");
    int prefix = 0, trim = 0;
    if (get_bool(v, "add_prefix_space", 1, &prefix, where, err, errlen) ||
        get_bool(v, "use_regex", 1, use_regex, where, err, errlen) ||
        get_bool(v, "trim_offsets", 1, &trim, where, err, errlen))
        return -1;
    if (prefix)
        return tok_fail(err, errlen,
                        PFX "%s has add_prefix_space = true, which this "
                        "tokenizer does not implement", where);
    return 0;
}

static int split_regex(const json_value *v, const char **regex,
                       const char *where, char *err, size_t errlen)
{
    const json_value *pat = json_get(v, "pattern");
    const json_value *re = pat ? json_get(pat, "Regex") : NULL;
    const json_value *beh = json_get(v, "behavior");
    int invert = 0;
    if (!re || re->type != JSON_STRING)
        return tok_fail(err, errlen, PFX "%s: Split without a Regex pattern",
                        where);
    if (get_bool(v, "invert", 0, &invert, where, err, errlen))
        return -1;
    if (!beh || beh->type != JSON_STRING ||
        strcmp(beh->string, "Isolated") != 0 || invert)
        return tok_fail(err, errlen,
                        PFX "%s: only Split with behavior Isolated, not "
                        "inverted, is known", where);
    *regex = re->string;
    return 0;
}

static int read_pre(const json_value *pre, tok_spec *spec, char *err,
                    size_t errlen)
{
    const char *where = "pre_tokenizer";
    if (!pre || pre->type == JSON_NULL)
        return tok_fail(err, errlen,
                        PFX "no pre_tokenizer (a byte-level BPE needs "
                        "ByteLevel)");
    const char *t = type_of(pre);
    int use_regex = 0;
    if (t && strcmp(t, "ByteLevel") == 0) {
        if (byte_level(pre, &use_regex, where, err, errlen))
            return -1;
        if (!use_regex)
            return tok_fail(err, errlen,
                            PFX "pre_tokenizer ByteLevel without its regex "
                            "(no split at all) is not one this tokenizer "
                            "knows");
        spec->pre = "gpt2";
        return 0;
    }
    const json_value *list = json_get(pre, "pretokenizers");
    if (!t || strcmp(t, "Sequence") != 0 || !list ||
        list->type != JSON_ARRAY || list->count != 2)
        return tok_fail(err, errlen,
                        PFX "pre_tokenizer %s is not one this tokenizer "
                        "knows (ByteLevel, Sequence[Split, ByteLevel] with "
                        "the GPT-2 or Llama 3 regex, Sequence[Digits, "
                        "ByteLevel])", t ? t : "without a type");
    const json_value *first = &list->items[0];
    const char *t0 = type_of(first);
    if (t0 && strcmp(t0, "Digits") == 0) {
        int individual = 0;
        if (get_bool(first, "individual_digits", 0, &individual,
                     "pre_tokenizer Digits", err, errlen))
            return -1;
        if (!individual)
            return tok_fail(err, errlen,
                            PFX "pre_tokenizer Digits without "
                            "individual_digits is not one this tokenizer "
                            "knows");
        if (byte_level(&list->items[1], &use_regex,
                       "pre_tokenizer after Digits", err, errlen))
            return -1;
        if (!use_regex)
            return tok_fail(err, errlen,
                            PFX "pre_tokenizer Sequence[Digits, ByteLevel "
                            "without its regex] is not one this tokenizer "
                            "knows");
        spec->pre = "smollm";
        return 0;
    }
    if (!t0 || strcmp(t0, "Split") != 0)
        return tok_fail(err, errlen,
                        PFX "pre_tokenizer Sequence starting with %s is not "
                        "one this tokenizer knows", t0 ? t0 : "no type");
    const char *regex = NULL;
    if (split_regex(first, &regex, "pre_tokenizer Split", err, errlen) ||
        byte_level(&list->items[1], &use_regex, "pre_tokenizer after Split",
                   err, errlen))
        return -1;
    if (use_regex)
        return tok_fail(err, errlen,
                        PFX "pre_tokenizer Split followed by ByteLevel with "
                        "its own regex is not one this tokenizer knows");
    if (strcmp(regex, llama3_regex) == 0) {
        spec->pre = "llama-bpe";
        return 0;
    }
    if (strcmp(regex, gpt2_regex) == 0) {
        spec->pre = "gpt2";
        return 0;
    }
    char q[96];
    return tok_fail(err, errlen,
                    PFX "pre_tokenizer Split regex '%s' is not one this "
                    "tokenizer knows (those of gpt2 and llama-bpe)",
                    tok_quote(q, sizeof q, regex, strlen(regex)));
}

/* ---- post-processor: which special tokens go around the text --------- */

static int template_token(const json_value *special, const json_value *item,
                          int32_t *id, const char *where, char *err,
                          size_t errlen)
{
    const json_value *st = json_get(item, "SpecialToken");
    const json_value *name = st ? json_get(st, "id") : NULL;
    if (!name || name->type != JSON_STRING)
        return tok_fail(err, errlen, PFX "%s: a template piece that is "
                        "neither $A nor a special token", where);
    const json_value *def = special ? json_get(special, name->string) : NULL;
    const json_value *ids = def ? json_get(def, "ids") : NULL;
    if (!ids || ids->type != JSON_ARRAY || ids->count != 1 ||
        ids->items[0].type != JSON_NUMBER || !ids->items[0].is_uint ||
        ids->items[0].uint >= TOK_MAX_TOKENS)
        return tok_fail(err, errlen,
                        PFX "%s: the special token '%s' is not defined as "
                        "one id", where, name->string);
    *id = (int32_t)ids->items[0].uint;
    return 0;
}

static int read_template(const json_value *pp, tok_spec *spec, char *err,
                         size_t errlen)
{
    const char *where = "post_processor TemplateProcessing";
    const json_value *single = json_get(pp, "single");
    const json_value *special = json_get(pp, "special_tokens");
    if (!single || single->type != JSON_ARRAY || single->count == 0 ||
        single->count > 3)
        return tok_fail(err, errlen,
                        PFX "%s: 'single' must be [bos?, $A, eos?]", where);
    size_t a = single->count; /* the index of $A */
    for (size_t i = 0; i < single->count; i++) {
        const json_value *seq = json_get(&single->items[i], "Sequence");
        const json_value *sid = seq ? json_get(seq, "id") : NULL;
        if (sid && sid->type == JSON_STRING && strcmp(sid->string, "A") == 0)
            a = i;
    }
    if (a == single->count || a > 1 || single->count - a > 2)
        return tok_fail(err, errlen,
                        PFX "%s: 'single' must be [bos?, $A, eos?]", where);
    if (a == 1) {
        if (template_token(special, &single->items[0], &spec->bos_id, where,
                           err, errlen))
            return -1;
        spec->add_bos = 1;
    }
    if (single->count - a == 2) {
        if (template_token(special, &single->items[a + 1], &spec->eos_id,
                           where, err, errlen))
            return -1;
        spec->add_eos = 1;
    }
    return 0;
}

static int read_post(const json_value *pp, tok_spec *spec, char *err,
                     size_t errlen)
{
    if (!pp || pp->type == JSON_NULL)
        return 0;
    const char *t = type_of(pp);
    if (t && strcmp(t, "ByteLevel") == 0)
        return 0; /* it trims offsets; the ids stay */
    if (t && strcmp(t, "TemplateProcessing") == 0)
        return read_template(pp, spec, err, errlen);
    const json_value *list = json_get(pp, "processors");
    if (t && strcmp(t, "Sequence") == 0 && list && list->type == JSON_ARRAY) {
        for (size_t i = 0; i < list->count; i++) {
            const char *ti = type_of(&list->items[i]);
            if (ti && strcmp(ti, "Sequence") == 0)
                return tok_fail(err, errlen,
                                PFX "post_processor: nested Sequence");
            if (read_post(&list->items[i], spec, err, errlen))
                return -1;
        }
        return 0;
    }
    return tok_fail(err, errlen,
                    PFX "post_processor %s is not one this tokenizer knows "
                    "(ByteLevel, TemplateProcessing)",
                    t ? t : "without a type");
}

/* ---- model and added tokens -------------------------------------------- */

typedef struct hf_tables {
    tok_str *tokens;
    int32_t *types;
    unsigned char *normalized;
    tok_str *merges;
    char **merge_text; /* merges given as pairs, joined "a b" */
    size_t n_merge_text;
} hf_tables;

static void free_tables(hf_tables *h)
{
    free(h->tokens);
    free(h->types);
    free(h->normalized);
    free(h->merges);
    if (h->merge_text)
        for (size_t i = 0; i < h->n_merge_text; i++)
            free(h->merge_text[i]);
    free(h->merge_text);
}

static int read_model_options(const json_value *model, tok_spec *spec,
                              char *err, size_t errlen)
{
    static const char *const keys[] = {
        "type", "dropout", "unk_token", "continuing_subword_prefix",
        "end_of_word_suffix", "fuse_unk", "byte_fallback", "ignore_merges",
        "vocab", "merges", NULL};
    const char *t = type_of(model);
    if (!t || strcmp(t, "BPE") != 0)
        return tok_fail(err, errlen,
                        PFX "model %s is not one this tokenizer knows (BPE)",
                        t ? t : "without a type");
    if (only_keys(model, keys, "model", err, errlen))
        return -1;
    const json_value *v = json_get(model, "dropout");
    if (v && v->type != JSON_NULL)
        return tok_fail(err, errlen, PFX "model.dropout is set (encoding "
                        "would be random)");
    const char *affixes[] = {"continuing_subword_prefix",
                             "end_of_word_suffix"};
    for (int i = 0; i < 2; i++) {
        v = json_get(model, affixes[i]);
        if (v && v->type != JSON_NULL &&
            !(v->type == JSON_STRING && v->string_len == 0))
            return tok_fail(err, errlen,
                            PFX "model.%s is set, which this tokenizer does "
                            "not implement", affixes[i]);
    }
    int fuse = 0, fallback = 0, ignore = 0;
    if (get_bool(model, "fuse_unk", 0, &fuse, "model", err, errlen) ||
        get_bool(model, "byte_fallback", 0, &fallback, "model", err,
                 errlen) ||
        get_bool(model, "ignore_merges", 0, &ignore, "model", err, errlen))
        return -1;
    if (fuse || fallback)
        return tok_fail(err, errlen,
                        PFX "model.%s = true is not implemented for "
                        "byte-level BPE", fuse ? "fuse_unk" : "byte_fallback");
    spec->ignore_merges = ignore;
    return 0;
}

/* Fills the token table from model.vocab and added_tokens. */
static int read_tokens(const json_value *vocab, const json_value *added,
                       tok_spec *spec, hf_tables *h, char *err, size_t errlen)
{
    char q[64], q2[64];
    if (!vocab || vocab->type != JSON_OBJECT)
        return tok_fail(err, errlen, PFX "model.vocab is missing or not an "
                        "object");
    if (added && added->type != JSON_ARRAY && added->type != JSON_NULL)
        return tok_fail(err, errlen, PFX "added_tokens is not an array");
    size_t n_added = added && added->type == JSON_ARRAY ? added->count : 0;
    /* Every id below the largest must be given, so the count bounds the
     * table before anything is allocated. */
    uint64_t max_id = 0;
    for (size_t i = 0; i < vocab->count; i++) {
        const json_value *v = &vocab->items[i];
        if (v->type != JSON_NUMBER || !v->is_uint)
            return tok_fail(err, errlen,
                            PFX "model.vocab['%s'] is not a non-negative "
                            "integer id",
                            tok_quote(q, sizeof q, vocab->keys[i],
                                      strlen(vocab->keys[i])));
        if (v->uint > max_id)
            max_id = v->uint;
    }
    for (size_t i = 0; i < n_added; i++) {
        const json_value *a = &added->items[i];
        const json_value *id = json_get(a, "id");
        if (a->type != JSON_OBJECT || !id || id->type != JSON_NUMBER ||
            !id->is_uint)
            return tok_fail(err, errlen,
                            PFX "added_tokens[%zu] has no integer id", i);
        if (id->uint > max_id)
            max_id = id->uint;
    }
    if (vocab->count + n_added == 0)
        return tok_fail(err, errlen, PFX "no tokens");
    if (max_id >= TOK_MAX_TOKENS)
        return tok_fail(err, errlen, PFX "token id %llu is too large (at most "
                        "%zu tokens)", (unsigned long long)max_id,
                        TOK_MAX_TOKENS);
    size_t n = (size_t)max_id + 1;
    if (n > vocab->count + n_added)
        return tok_fail(err, errlen,
                        PFX "ids go up to %zu but there are only %zu tokens",
                        n - 1, vocab->count + n_added);
    h->tokens = calloc(n, sizeof *h->tokens);
    h->types = malloc(n * sizeof *h->types);
    h->normalized = calloc(n, 1);
    if (!h->tokens || !h->types || !h->normalized)
        return tok_fail(err, errlen, PFX "out of memory for %zu tokens", n);
    for (size_t i = 0; i < vocab->count; i++) {
        size_t id = (size_t)vocab->items[i].uint;
        tok_str s = {vocab->keys[i], strlen(vocab->keys[i])};
        if (h->tokens[id].ptr)
            return tok_fail(err, errlen,
                            PFX "model.vocab gives id %zu to both '%s' and "
                            "'%s'", id,
                            tok_quote(q, sizeof q, h->tokens[id].ptr,
                                      h->tokens[id].len),
                            tok_quote(q2, sizeof q2, s.ptr, s.len));
        h->tokens[id] = s;
        h->types[id] = TOK_TYPE_NORMAL;
    }
    for (size_t i = 0; i < n_added; i++) {
        static const char *const keys[] = {"id", "content", "single_word",
                                           "lstrip", "rstrip", "normalized",
                                           "special", NULL};
        const json_value *a = &added->items[i];
        size_t id = (size_t)json_get(a, "id")->uint;
        const json_value *content = json_get(a, "content");
        char where[48];
        snprintf(where, sizeof where, "added_tokens[%zu]", i);
        if (only_keys(a, keys, where, err, errlen))
            return -1;
        if (!content || content->type != JSON_STRING ||
            content->string_len == 0)
            return tok_fail(err, errlen, PFX "%s has no content", where);
        int special = 0, normalized = 0, single = 0, lstrip = 0, rstrip = 0;
        if (get_bool(a, "special", 0, &special, where, err, errlen) ||
            get_bool(a, "normalized", !special, &normalized, where, err,
                     errlen) ||
            get_bool(a, "single_word", 0, &single, where, err, errlen) ||
            get_bool(a, "lstrip", 0, &lstrip, where, err, errlen) ||
            get_bool(a, "rstrip", 0, &rstrip, where, err, errlen))
            return -1;
        if (single || lstrip || rstrip)
            return tok_fail(err, errlen,
                            PFX "%s ('%s') has %s = true, which this "
                            "tokenizer does not implement", where,
                            tok_quote(q, sizeof q, content->string,
                                      content->string_len),
                            single ? "single_word" : lstrip ? "lstrip"
                                                            : "rstrip");
        tok_str s = {content->string, content->string_len};
        if (h->tokens[id].ptr &&
            (h->tokens[id].len != s.len ||
             memcmp(h->tokens[id].ptr, s.ptr, s.len) != 0 ||
             h->types[id] != TOK_TYPE_NORMAL))
            return tok_fail(err, errlen,
                            PFX "%s gives id %zu to '%s', which is already "
                            "'%s'", where, id, tok_quote(q, sizeof q, s.ptr,
                                                         s.len),
                            tok_quote(q2, sizeof q2, h->tokens[id].ptr,
                                      h->tokens[id].len));
        h->tokens[id] = s;
        h->types[id] = special ? TOK_TYPE_CONTROL : TOK_TYPE_USER_DEFINED;
        h->normalized[id] = (unsigned char)normalized;
    }
    for (size_t id = 0; id < n; id++)
        if (!h->tokens[id].ptr)
            return tok_fail(err, errlen, PFX "no token has id %zu", id);
    spec->n_tokens = n;
    spec->tokens = h->tokens;
    spec->token_types = h->types;
    spec->normalized = h->normalized;
    return 0;
}

static int read_merges(const json_value *merges, tok_spec *spec,
                       hf_tables *h, char *err, size_t errlen)
{
    if (!merges || merges->type != JSON_ARRAY)
        return tok_fail(err, errlen, PFX "model.merges is missing or not an "
                        "array");
    size_t n = merges->count;
    if (n > TOK_MAX_MERGES)
        return tok_fail(err, errlen, PFX "%zu merges (at most %zu)", n,
                        TOK_MAX_MERGES);
    h->merges = malloc((n ? n : 1) * sizeof *h->merges);
    h->merge_text = calloc(n ? n : 1, sizeof *h->merge_text);
    if (!h->merges || !h->merge_text)
        return tok_fail(err, errlen, PFX "out of memory for %zu merges", n);
    h->n_merge_text = n;
    for (size_t i = 0; i < n; i++) {
        const json_value *m = &merges->items[i];
        if (m->type == JSON_STRING) {
            h->merges[i] = (tok_str){m->string, m->string_len};
            continue;
        }
        /* ["left", "right"]: joined, it must split back the same way. */
        if (m->type != JSON_ARRAY || m->count != 2 ||
            m->items[0].type != JSON_STRING ||
            m->items[1].type != JSON_STRING)
            return tok_fail(err, errlen,
                            PFX "model.merges[%zu] is neither \"a b\" nor "
                            "[\"a\", \"b\"]", i);
        const json_value *a = &m->items[0], *b = &m->items[1];
        if (a->string_len == 0 || b->string_len == 0 ||
            memchr(a->string + 1, ' ', a->string_len - 1))
            return tok_fail(err, errlen,
                            PFX "model.merges[%zu]: an empty part or a space "
                            "inside its left part", i);
        size_t len = a->string_len + 1 + b->string_len;
        char *s = malloc(len + 1);
        if (!s)
            return tok_fail(err, errlen, PFX "out of memory");
        memcpy(s, a->string, a->string_len);
        s[a->string_len] = ' ';
        memcpy(s + a->string_len + 1, b->string, b->string_len);
        s[len] = '\0';
        h->merge_text[i] = s;
        h->merges[i] = (tok_str){s, len};
    }
    spec->n_merges = n;
    spec->merges = h->merges;
    return 0;
}

static int read_decoder(const json_value *dec, char *err, size_t errlen)
{
    if (!dec || dec->type == JSON_NULL)
        return 0;
    const char *t = type_of(dec);
    if (t && strcmp(t, "ByteLevel") == 0)
        return 0;
    return tok_fail(err, errlen,
                    PFX "decoder %s is not one this tokenizer knows "
                    "(ByteLevel)", t ? t : "without a type");
}

int tok_load_hf_json_mem(const char *text, size_t len, tokenizer **out,
                         char *err, size_t errlen)
{
    *out = NULL;
    char jerr[200];
    json_value *root = json_parse(text, len, jerr, sizeof jerr);
    if (!root)
        return tok_fail(err, errlen, PFX "%s", jerr);
    int rc = -1;
    hf_tables h = {0};
    tok_spec spec;
    tok_spec_init(&spec);
    spec.model = "gpt2";
    const json_value *model = json_get(root, "model");
    const json_value *norm = json_get(root, "normalizer");
    if (root->type != JSON_OBJECT) {
        tok_fail(err, errlen, PFX "the document is a %s, not an object",
                 json_type_name(root->type));
    } else if (!model || model->type != JSON_OBJECT) {
        tok_fail(err, errlen, PFX "no model");
    } else if (norm && norm->type != JSON_NULL) {
        const char *t = type_of(norm);
        tok_fail(err, errlen,
                 PFX "normalizer %s is not implemented (byte-level BPE has "
                 "none)", t ? t : "without a type");
    } else if (read_model_options(model, &spec, err, errlen) == 0 &&
               read_pre(json_get(root, "pre_tokenizer"), &spec, err,
                        errlen) == 0 &&
               read_post(json_get(root, "post_processor"), &spec, err,
                         errlen) == 0 &&
               read_decoder(json_get(root, "decoder"), err, errlen) == 0 &&
               read_tokens(json_get(model, "vocab"),
                           json_get(root, "added_tokens"), &spec, &h, err,
                           errlen) == 0 &&
               read_merges(json_get(model, "merges"), &spec, &h, err,
                           errlen) == 0) {
        const json_value *unk = json_get(model, "unk_token");
        if (unk && unk->type == JSON_STRING) {
            spec.unk_id = -1;
            for (size_t i = 0; i < spec.n_tokens; i++)
                if (spec.tokens[i].len == unk->string_len &&
                    memcmp(spec.tokens[i].ptr, unk->string,
                           unk->string_len) == 0)
                    spec.unk_id = (int32_t)i;
            if (spec.unk_id < 0) {
                char q[64];
                tok_fail(err, errlen,
                         PFX "model.unk_token '%s' is not in the vocabulary",
                         tok_quote(q, sizeof q, unk->string,
                                   unk->string_len));
                goto done;
            }
        } else if (unk && unk->type != JSON_NULL) {
            tok_fail(err, errlen, PFX "model.unk_token is not a string");
            goto done;
        }
        char cerr[256];
        if (tok_create(&spec, out, cerr, sizeof cerr) != 0)
            tok_fail(err, errlen, PFX "%s", cerr);
        else
            rc = 0;
    }
done:
    free_tables(&h);
    json_free(root);
    return rc;
}

int tok_load_hf_json(const char *path, tokenizer **out, char *err,
                     size_t errlen)
{
    *out = NULL;
    /* O_NONBLOCK: a FIFO in place of the file must not hang the open;
     * anything but a regular file is refused right after. */
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0)
        return tok_fail(err, errlen, "%s: cannot open: %s", path,
                        strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return tok_fail(err, errlen, "%s: not a regular file", path);
    }
    if ((uint64_t)st.st_size > JSON_MAX_INPUT) {
        close(fd);
        return tok_fail(err, errlen, "%s: %lld bytes, larger than the %zu "
                        "accepted", path, (long long)st.st_size,
                        JSON_MAX_INPUT);
    }
    size_t size = (size_t)st.st_size;
    char *buf = malloc(size ? size : 1);
    if (!buf) {
        close(fd);
        return tok_fail(err, errlen, "%s: out of memory", path);
    }
    size_t got = 0;
    while (got < size) {
        ssize_t r = read(fd, buf + got, size - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    close(fd);
    if (got != size) {
        free(buf);
        return tok_fail(err, errlen, "%s: read failed", path);
    }
    char lerr[300];
    int rc = tok_load_hf_json_mem(buf, size, out, lerr, sizeof lerr);
    free(buf);
    if (rc)
        tok_fail(err, errlen, "%s: %s", path, lerr);
    return rc;
}

/* ---- writing ------------------------------------------------------ */

static int valid_text(const char *s, size_t n)
{
    for (size_t p = 0; p < n;) {
        int32_t cp;
        p += tok_utf8_next((const unsigned char *)s, n, p, &cp);
        if (cp <= 0)
            return 0;
    }
    return 1;
}

static void put_token(textbuf *b, const tokenizer *t, int32_t id)
{
    size_t len;
    const char *s = tok_token(t, id, &len);
    tb_json_string(b, s, len);
}

static void put_special_piece(textbuf *b, const tokenizer *t, int32_t id)
{
    tb_puts(b, "{\"SpecialToken\": {\"id\": ");
    put_token(b, t, id);
    tb_puts(b, ", \"type_id\": 0}}");
}

static void put_special_def(textbuf *b, const tokenizer *t, int32_t id)
{
    put_token(b, t, id);
    tb_puts(b, ": {\"id\": ");
    put_token(b, t, id);
    tb_printf(b, ", \"ids\": [%d], \"tokens\": [", (int)id);
    put_token(b, t, id);
    tb_puts(b, "]}");
}

static void put_template(textbuf *b, const tokenizer *t)
{
    tb_puts(b, "{\"type\": \"TemplateProcessing\", \"single\": [");
    if (t->add_bos) {
        put_special_piece(b, t, t->bos_id);
        tb_puts(b, ", ");
    }
    tb_puts(b, "{\"Sequence\": {\"id\": \"A\", \"type_id\": 0}}");
    if (t->add_eos) {
        tb_puts(b, ", ");
        put_special_piece(b, t, t->eos_id);
    }
    tb_puts(b, "], \"pair\": [");
    for (int seq = 0; seq < 2; seq++) {
        if (seq)
            tb_puts(b, ", ");
        if (t->add_bos) {
            put_special_piece(b, t, t->bos_id);
            tb_puts(b, ", ");
        }
        tb_printf(b, "{\"Sequence\": {\"id\": \"%c\", \"type_id\": %d}}",
             seq ? 'B' : 'A', seq);
        if (t->add_eos) {
            tb_puts(b, ", ");
            put_special_piece(b, t, t->eos_id);
        }
    }
    tb_puts(b, "], \"special_tokens\": {");
    if (t->add_bos)
        put_special_def(b, t, t->bos_id);
    if (t->add_eos && !(t->add_bos && t->eos_id == t->bos_id)) {
        if (t->add_bos)
            tb_puts(b, ", ");
        put_special_def(b, t, t->eos_id);
    }
    tb_puts(b, "}}");
}

static const char *const byte_level_json[2] = {
    "{\"type\": \"ByteLevel\", \"add_prefix_space\": false, "
    "\"trim_offsets\": true, \"use_regex\": false}",
    "{\"type\": \"ByteLevel\", \"add_prefix_space\": false, "
    "\"trim_offsets\": true, \"use_regex\": true}"};

static void put_pre(textbuf *b, const tokenizer *t)
{
    switch (t->pre) {
    case TOK_PRE_LLAMA_BPE:
        tb_puts(b, "{\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": "
                 "\"Split\", \"pattern\": {\"Regex\": ");
        tb_json_string(b, llama3_regex, strlen(llama3_regex));
        tb_puts(b, "}, \"behavior\": \"Isolated\", \"invert\": false}, ");
        tb_puts(b, byte_level_json[0]);
        tb_puts(b, "]}");
        break;
    case TOK_PRE_SMOLLM:
        tb_puts(b, "{\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": "
                 "\"Digits\", \"individual_digits\": true}, ");
        tb_puts(b, byte_level_json[1]);
        tb_puts(b, "]}");
        break;
    case TOK_PRE_GPT2:
    default:
        tb_puts(b, byte_level_json[1]);
        break;
    }
}

/* The tokenizer.json document of t into *text (name: for messages). */
static int write_json(const tokenizer *t, const char *name, char **text,
                      size_t *text_len, char *err, size_t errlen)
{
    char q[64];
    for (size_t i = 0; i < t->n_tokens; i++) {
        size_t len;
        const char *s = tok_token(t, (int32_t)i, &len);
        if (!valid_text(s, len))
            return tok_fail(err, errlen,
                            "%s: token %zu '%s' is not UTF-8 text without "
                            "NULs, which tokenizer.json cannot hold", name, i,
                            tok_quote(q, sizeof q, s, len));
    }
    textbuf b = {0};
    tb_puts(&b, "{\n  \"version\": \"1.0\",\n  \"truncation\": null,\n"
              "  \"padding\": null,\n  \"added_tokens\": [");
    size_t n_added = 0;
    for (size_t i = 0; i < t->n_tokens; i++) {
        if (!tok_is_added_type(t->types[i]))
            continue;
        tb_puts(&b, n_added++ ? ",\n    " : "\n    ");
        tb_printf(&b, "{\"id\": %zu, \"content\": ", i);
        put_token(&b, t, (int32_t)i);
        tb_printf(&b, ", \"single_word\": false, \"lstrip\": false, "
                 "\"rstrip\": false, \"normalized\": %s, \"special\": %s}",
             t->normalized[i] ? "true" : "false",
             t->types[i] == TOK_TYPE_USER_DEFINED ? "false" : "true");
    }
    tb_puts(&b, n_added ? "\n  ],\n" : "],\n");
    tb_puts(&b, "  \"normalizer\": null,\n  \"pre_tokenizer\": ");
    put_pre(&b, t);
    tb_puts(&b, ",\n  \"post_processor\": ");
    if (t->add_bos || t->add_eos)
        put_template(&b, t);
    else
        tb_puts(&b, "null");
    tb_puts(&b, ",\n  \"decoder\": {\"type\": \"ByteLevel\", "
              "\"add_prefix_space\": true, \"trim_offsets\": true, "
              "\"use_regex\": true},\n");
    tb_puts(&b, "  \"model\": {\n    \"type\": \"BPE\",\n    \"dropout\": null,"
              "\n    \"unk_token\": ");
    if (t->unk_id >= 0)
        put_token(&b, t, t->unk_id);
    else
        tb_puts(&b, "null");
    tb_puts(&b, ",\n    \"continuing_subword_prefix\": null,\n"
              "    \"end_of_word_suffix\": null,\n    \"fuse_unk\": false,\n"
              "    \"byte_fallback\": false,\n");
    if (t->ignore_merges)
        tb_puts(&b, "    \"ignore_merges\": true,\n");
    tb_puts(&b, "    \"vocab\": {");
    for (size_t i = 0; i < t->n_tokens; i++) {
        tb_puts(&b, i ? ",\n      " : "\n      ");
        put_token(&b, t, (int32_t)i);
        tb_printf(&b, ": %zu", i);
    }
    tb_puts(&b, "\n    },\n    \"merges\": [");
    size_t written = 0;
    for (size_t r = 0; r < t->n_merges; r++) {
        if (!t->merge_live[r])
            continue;
        size_t la, lb;
        const char *a = tok_token(t, t->merge_left[r], &la);
        const char *c = tok_token(t, t->merge_right[r], &lb);
        tb_puts(&b, written++ ? ",\n      " : "\n      ");
        /* "a b" (what every version of tokenizers reads) unless a part
         * holds a space, which only the [a, b] form keeps apart. */
        if (!memchr(a, ' ', la) && !memchr(c, ' ', lb)) {
            char *s = malloc(la + lb + 1);
            if (!s) {
                b.oom = 1;
                break;
            }
            memcpy(s, a, la);
            s[la] = ' ';
            memcpy(s + la + 1, c, lb);
            tb_json_string(&b, s, la + lb + 1);
            free(s);
        } else {
            tb_puts(&b, "[");
            tb_json_string(&b, a, la);
            tb_puts(&b, ", ");
            tb_json_string(&b, c, lb);
            tb_puts(&b, "]");
        }
    }
    tb_puts(&b, written ? "\n    ]\n  }\n}\n" : "]\n  }\n}\n");
    if (b.oom) {
        free(b.s);
        return tok_fail(err, errlen, "%s: out of memory", name);
    }
    b.s[b.len] = '\0'; /* tb_put() always leaves room for it */
    *text = b.s;
    *text_len = b.len;
    return 0;
}

int tok_hf_json_text(const tokenizer *t, char **text, size_t *len, char *err,
                     size_t errlen)
{
    return write_json(t, "tokenizer.json", text, len, err, errlen);
}

int tok_save_hf_json(const tokenizer *t, const char *path, char *err,
                     size_t errlen)
{
    char *text;
    size_t len;
    if (write_json(t, path, &text, &len, err, errlen) != 0)
        return -1;
    int rc = st_write_file_atomic(path, text, len, err, errlen);
    free(text);
    return rc;
}
