/* config.json: reading and writing; see hf_config.h. */
#include "hf_config.h"
#include "errmsg.h"

#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- reading ------------------------------------------------------------ */

static int config_int(const json_value *cfg, const char *path,
                      const char *key, int required, int fallback, int *out,
                      char *err, size_t errlen)
{
    const json_value *v = json_get(cfg, key);
    if (!v || (!required && v->type == JSON_NULL)) {
        if (required) {
            llama_set_err(err, errlen, "%s: '%s' is missing", path, key);
            return -1;
        }
        *out = fallback;
        return 0;
    }
    if (v->type != JSON_NUMBER || !v->is_uint || v->uint < 1 ||
        v->uint > INT_MAX) {
        llama_set_err(err, errlen, "%s: '%s' must be an integer in [1, %d]", path,
                key, INT_MAX);
        return -1;
    }
    *out = (int)v->uint;
    return 0;
}

static int config_float(const json_value *cfg, const char *path,
                        const char *key, float fallback, float *out,
                        char *err, size_t errlen)
{
    const json_value *v = json_get(cfg, key);
    if (!v || v->type == JSON_NULL) {
        *out = fallback;
        return 0;
    }
    float f = v->type == JSON_NUMBER ? (float)v->number : 0.0f;
    if (v->type != JSON_NUMBER || !(f > 0.0f) || !isfinite(f)) {
        llama_set_err(err, errlen, "%s: '%s' must be a positive number that "
                "fits in a float", path, key);
        return -1;
    }
    *out = f;
    return 0;
}

/* LlamaConfig's max_position_embeddings when config.json has none. */
#define HF_DEFAULT_CONTEXT 2048

/* Hugging Face LlamaConfig fields and defaults: num_key_value_heads
 * defaults to num_attention_heads, max_position_embeddings to 2048,
 * rope_theta to 10000, rms_norm_eps to 1e-6, tie_word_embeddings to
 * false. Anything that would change the architecture this model
 * implements is refused. */
int hf_config_parse(const json_value *j, const char *path, llama_config *c,
                    char *err, size_t errlen)
{
    memset(c, 0, sizeof *c);
    if (config_int(j, path, "hidden_size", 1, 0, &c->dim, err, errlen) ||
        config_int(j, path, "intermediate_size", 1, 0, &c->hidden_dim, err,
                   errlen) ||
        config_int(j, path, "num_hidden_layers", 1, 0, &c->n_layers, err,
                   errlen) ||
        config_int(j, path, "num_attention_heads", 1, 0, &c->n_heads, err,
                   errlen) ||
        config_int(j, path, "num_key_value_heads", 0, c->n_heads,
                   &c->n_kv_heads, err, errlen) ||
        config_int(j, path, "vocab_size", 1, 0, &c->vocab_size, err,
                   errlen) ||
        config_int(j, path, "max_position_embeddings", 0,
                   HF_DEFAULT_CONTEXT, &c->seq_len, err, errlen) ||
        config_float(j, path, "rope_theta", 10000.0f, &c->rope_theta, err,
                     errlen) ||
        config_float(j, path, "rms_norm_eps", 1e-6f, &c->norm_eps, err,
                     errlen))
        return -1;
    const json_value *v = json_get(j, "tie_word_embeddings");
    if (v && v->type != JSON_BOOL && v->type != JSON_NULL) {
        llama_set_err(err, errlen, "%s: 'tie_word_embeddings' must be true or "
                "false", path);
        return -1;
    }
    c->tied = v && v->type == JSON_BOOL && v->boolean;
    v = json_get(j, "rope_scaling");
    if (v && v->type != JSON_NULL) {
        llama_set_err(err, errlen, "%s: rope_scaling is not supported (only null "
                "or absent)", path);
        return -1;
    }
    v = json_get(j, "hidden_act");
    if (v && (v->type != JSON_STRING || strcmp(v->string, "silu") != 0)) {
        llama_set_err(err, errlen, "%s: hidden_act must be \"silu\"", path);
        return -1;
    }
    static const char *const no_bias[] = {"attention_bias", "mlp_bias"};
    for (int i = 0; i < 2; i++) {
        v = json_get(j, no_bias[i]);
        if (v && !(v->type == JSON_NULL ||
                   (v->type == JSON_BOOL && !v->boolean))) {
            llama_set_err(err, errlen, "%s: '%s' must be false (the model has no "
                    "biases)", path, no_bias[i]);
            return -1;
        }
    }
    /* Compared with the quotient, not multiplied by n_heads: a product
     * could wrap 64 bits (head_dim 2^63 + 8 with 2 heads would be 16). */
    v = json_get(j, "head_dim");
    if (v && v->type != JSON_NULL &&
        (v->type != JSON_NUMBER || !v->is_uint || c->dim % c->n_heads != 0 ||
         v->uint != (uint64_t)(c->dim / c->n_heads))) {
        llama_set_err(err, errlen, "%s: head_dim must be hidden_size / "
                "num_attention_heads = %d / %d", path, c->dim, c->n_heads);
        return -1;
    }
    char merr[256];
    if (llama_config_check(c, merr, sizeof merr) != 0) {
        llama_set_err(err, errlen, "%s: %s", path, merr);
        return -1;
    }
    return 0;
}

/* ---- writing ------------------------------------------------------------ */

/* The shortest decimal form that reads back as the same float. */
static void format_float(char *buf, size_t len, float x)
{
    for (int prec = 6; prec <= 9; prec++) {
        snprintf(buf, len, "%.*g", prec, (double)x);
        if (strtof(buf, NULL) == x)
            return;
    }
}

static const char *torch_dtype_name(owl_dtype dtype)
{
    return dtype == OWL_DTYPE_BF16  ? "bfloat16"
           : dtype == OWL_DTYPE_F16 ? "float16"
                                    : "float32";
}

static int valid_dtype(owl_dtype dtype, char *err, size_t errlen)
{
    if (dtype == OWL_DTYPE_F32 || dtype == OWL_DTYPE_BF16 ||
        dtype == OWL_DTYPE_F16)
        return 0;
    llama_set_err(err, errlen, "config.json: dtype %d is not F32, BF16 or F16",
            (int)dtype);
    return -1;
}

int hf_config_write(const llama_config *c, int context_len, owl_dtype dtype,
                    int32_t bos_id, int32_t eos_id, char **out,
                    size_t *out_len, char *err, size_t errlen)
{
    if (valid_dtype(dtype, err, errlen) != 0)
        return -1;
    char theta[32], eps[32], ids[96] = "", text[1024];
    format_float(theta, sizeof theta, c->rope_theta);
    format_float(eps, sizeof eps, c->norm_eps);
    /* Absent ids stay absent (LlamaConfig's defaults, 1 and 2, would name
     * tokens the vocabulary may not have as those). */
    size_t at = 0;
    if (bos_id >= 0)
        at += (size_t)snprintf(ids + at, sizeof ids - at,
                               "  \"bos_token_id\": %d,\n", (int)bos_id);
    if (eos_id >= 0)
        snprintf(ids + at, sizeof ids - at, "  \"eos_token_id\": %d,\n",
                 (int)eos_id);
    int n = snprintf(text, sizeof text,
        "{\n"
        "  \"architectures\": [\"LlamaForCausalLM\"],\n"
        "  \"model_type\": \"llama\",\n"
        "  \"hidden_act\": \"silu\",\n"
        "  \"hidden_size\": %d,\n"
        "  \"intermediate_size\": %d,\n"
        "  \"num_hidden_layers\": %d,\n"
        "  \"num_attention_heads\": %d,\n"
        "  \"num_key_value_heads\": %d,\n"
        "  \"vocab_size\": %d,\n"
        "  \"max_position_embeddings\": %d,\n"
        "  \"rope_theta\": %s,\n"
        "  \"rope_scaling\": null,\n"
        "  \"rms_norm_eps\": %s,\n"
        "  \"tie_word_embeddings\": %s,\n"
        "%s"
        "  \"torch_dtype\": \"%s\"\n"
        "}\n",
        c->dim, c->hidden_dim, c->n_layers, c->n_heads, c->n_kv_heads,
        c->vocab_size, context_len, theta, eps, c->tied ? "true" : "false",
        ids, torch_dtype_name(dtype));
    if (n < 0 || (size_t)n >= sizeof text) {
        llama_set_err(err, errlen, "config.json: text too long");
        return -1;
    }
    *out = malloc((size_t)n + 1);
    if (!*out) {
        llama_set_err(err, errlen, "config.json: out of memory");
        return -1;
    }
    memcpy(*out, text, (size_t)n + 1);
    *out_len = (size_t)n;
    return 0;
}

/* One change to the source text: bytes [begin, end) become text (an
 * insertion when begin == end). */
typedef struct text_edit {
    size_t begin, end;
    char text[96];
} text_edit;

static int cmp_edit(const void *a, const void *b)
{
    const text_edit *x = a, *y = b;
    return x->begin < y->begin ? -1 : x->begin > y->begin;
}

/* The source must be the configuration of the model being saved: a
 * mismatch means the caller paired a model with another's config. */
static int same_model(const llama_config *s, int s_context,
                      const llama_config *c, int context_len, char *err,
                      size_t errlen)
{
    if (s->dim == c->dim && s->hidden_dim == c->hidden_dim &&
        s->n_layers == c->n_layers && s->n_heads == c->n_heads &&
        s->n_kv_heads == c->n_kv_heads && s->vocab_size == c->vocab_size &&
        s->rope_theta == c->rope_theta && s->norm_eps == c->norm_eps &&
        s->tied == c->tied && s_context == context_len)
        return 0;
    llama_set_err(err, errlen, "the source config.json describes another model "
            "(dim %d, MLP %d, %d layers, %d/%d heads, vocab %d, context %d, "
            "%s) than the one saved (dim %d, MLP %d, %d layers, %d/%d heads, "
            "vocab %d, context %d, %s)", s->dim, s->hidden_dim, s->n_layers,
            s->n_heads, s->n_kv_heads, s->vocab_size, s_context,
            s->tied ? "tied" : "untied", c->dim, c->hidden_dim, c->n_layers,
            c->n_heads, c->n_kv_heads, c->vocab_size, context_len,
            c->tied ? "tied" : "untied");
    return -1;
}

int hf_config_text(const char *source, size_t source_len,
                   const llama_config *c, int context_len, owl_dtype dtype,
                   char **out, size_t *out_len, char *err, size_t errlen)
{
    if (valid_dtype(dtype, err, errlen) != 0)
        return -1;
    if (!source)
        return hf_config_write(c, context_len, dtype, -1, -1, out, out_len,
                               err, errlen);
    char jerr[256];
    json_value *j = json_parse(source, source_len, jerr, sizeof jerr);
    if (!j) {
        llama_set_err(err, errlen, "the source config.json: %s", jerr);
        return -1;
    }
    int rc = -1;
    char *text = NULL;
    llama_config s;
    if (j->type != JSON_OBJECT) {
        llama_set_err(err, errlen, "the source config.json is a JSON %s, not an "
                "object", json_type_name(j->type));
        goto done;
    }
    if (hf_config_parse(j, "the source config.json", &s, err, errlen) ||
        same_model(&s, s.seq_len, c, context_len, err, errlen))
        goto done;

    /* The keys a save rewrites: the dtype of the stored weights, under
     * its old name always, and under its new one where the source has
     * it. */
    char value[32];
    snprintf(value, sizeof value, "\"%s\"", torch_dtype_name(dtype));
    const struct {
        const char *key;
        int add;
    } keys[] = {{"torch_dtype", 1}, {"dtype", 0}};
    text_edit edits[2];
    size_t ne = 0;
    /* New members go after the last one, so the source's order stays. */
    size_t insert_at = j->count ? j->items[j->count - 1].end : j->begin + 1;
    for (size_t k = 0; k < sizeof keys / sizeof keys[0]; k++) {
        const json_value *v = json_get(j, keys[k].key);
        text_edit *e = &edits[ne];
        if (v) {
            e->begin = v->begin;
            e->end = v->end;
            snprintf(e->text, sizeof e->text, "%s", value);
        } else if (keys[k].add) {
            e->begin = e->end = insert_at;
            snprintf(e->text, sizeof e->text, "%s\"%s\": %s",
                     j->count ? ",\n  " : "", keys[k].key, value);
        } else {
            continue;
        }
        ne++;
    }
    qsort(edits, ne, sizeof *edits, cmp_edit);
    size_t cap = source_len + 1;
    for (size_t i = 0; i < ne; i++)
        cap += strlen(edits[i].text);
    text = malloc(cap);
    if (!text) {
        llama_set_err(err, errlen, "config.json: out of memory");
        goto done;
    }
    size_t n = 0, at = 0;
    for (size_t i = 0; i < ne; i++) {
        memcpy(text + n, source + at, edits[i].begin - at);
        n += edits[i].begin - at;
        size_t tl = strlen(edits[i].text);
        memcpy(text + n, edits[i].text, tl);
        n += tl;
        at = edits[i].end;
    }
    memcpy(text + n, source + at, source_len - at);
    n += source_len - at;
    text[n] = '\0';
    *out = text;
    *out_len = n;
    text = NULL;
    rc = 0;
done:
    free(text);
    json_free(j);
    return rc;
}
