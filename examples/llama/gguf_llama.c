/* A LLaMa from a GGUF file: the configuration from the llama.* keys, the
 * weights by llama.cpp's tensor names, dequantised to f32, with the q and
 * k rows put back in Hugging Face order. Everything is checked before the
 * model is allocated. See gguf.h. */
#include "gguf.h"
#include "errmsg.h"
#include "gguf_internal.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef unsigned long long ull;

/* ---- configuration ------------------------------------------------------ */

/* An integer key in [1, INT_MAX]; fallback when absent and not required. */
static int key_int(const gguf_file *f, const char *key, int required,
                   int fallback, int *out, char *err, size_t errlen)
{
    uint64_t v;
    int rc = gguf_get_u64(f, key, &v, err, errlen);
    if (rc < 0)
        return -1;
    if (rc == 1) {
        if (required)
            return -1; /* err says it is missing */
        *out = fallback;
        return 0;
    }
    if (v < 1 || v > INT_MAX) {
        llama_set_err(err, errlen, "%s: %s = %llu (1 to %d expected)", f->name, key,
                (ull)v, INT_MAX);
        return -1;
    }
    *out = (int)v;
    return 0;
}

static int key_float(const gguf_file *f, const char *key, int required,
                     float fallback, float *out, char *err, size_t errlen)
{
    int rc = gguf_get_f32(f, key, out, err, errlen);
    if (rc == 1 && !required) {
        *out = fallback;
        return 0;
    }
    if (rc != 0)
        return -1;
    if (!(*out > 0.0f) || !isfinite(*out)) {
        llama_set_err(err, errlen, "%s: %s = %g (a positive finite number "
                "expected)", f->name, key, (double)*out);
        return -1;
    }
    return 0;
}

/* A key that, when present, must equal the value the configuration
 * implies (head sizes, the vocabulary). */
static int key_equals(const gguf_file *f, const char *key, int want,
                      const char *why, char *err, size_t errlen)
{
    int v;
    int rc = key_int(f, key, 0, want, &v, err, errlen);
    if (rc != 0)
        return -1;
    if (v != want) {
        llama_set_err(err, errlen, "%s: %s = %d, but %s is %d", f->name, key, v,
                why, want);
        return -1;
    }
    return 0;
}

/* What the model implements: llama.cpp's plain LLaMa. Variants that
 * change the function (RoPE scaling, experts) are refused, not run
 * wrongly. */
static int check_supported(const gguf_file *f, char *err, size_t errlen)
{
    gguf_str arch, s;
    int rc = gguf_get_str(f, "general.architecture", &arch, err, errlen);
    if (rc != 0)
        return -1;
    if (arch.len != 5 || memcmp(arch.ptr, "llama", 5) != 0) {
        char a[GGUF_PRINTABLE_LEN];
        llama_set_err(err, errlen, "%s: general.architecture is '%s'; only "
                "'llama' is supported", f->name, gguf_printable(arch, a));
        return -1;
    }
    rc = gguf_get_str(f, "llama.rope.scaling.type", &s, err, errlen);
    if (rc < 0)
        return -1;
    if (rc == 0 && !(s.len == 4 && memcmp(s.ptr, "none", 4) == 0)) {
        char a[GGUF_PRINTABLE_LEN];
        llama_set_err(err, errlen, "%s: llama.rope.scaling.type '%s' is not "
                "supported (only none)", f->name, gguf_printable(s, a));
        return -1;
    }
    uint64_t experts = 0;
    if (gguf_get_u64(f, "llama.expert_count", &experts, err, errlen) < 0)
        return -1;
    if (experts > 0) {
        llama_set_err(err, errlen, "%s: llama.expert_count = %llu: mixtures of "
                "experts are not supported", f->name, (ull)experts);
        return -1;
    }
    return 0;
}

/* The model's configuration; *context receives the file's context length
 * (seq_len is the run's, at most that). */
static int read_config(const gguf_file *f, int max_seq, llama_config *c,
                       int *context, char *err, size_t errlen)
{
    memset(c, 0, sizeof *c);
    int ctx;
    if (check_supported(f, err, errlen) ||
        key_int(f, "llama.block_count", 1, 0, &c->n_layers, err, errlen) ||
        key_int(f, "llama.embedding_length", 1, 0, &c->dim, err, errlen) ||
        key_int(f, "llama.feed_forward_length", 1, 0, &c->hidden_dim, err,
                errlen) ||
        key_int(f, "llama.attention.head_count", 1, 0, &c->n_heads, err,
                errlen) ||
        key_int(f, "llama.attention.head_count_kv", 0, c->n_heads,
                &c->n_kv_heads, err, errlen) ||
        key_int(f, "llama.context_length", 1, 0, &ctx, err, errlen) ||
        key_float(f, "llama.rope.freq_base", 0, 10000.0f, &c->rope_theta,
                  err, errlen) ||
        key_float(f, "llama.attention.layer_norm_rms_epsilon", 1, 0.0f,
                  &c->norm_eps, err, errlen))
        return -1;
    /* Activations are sized by seq_len: the run's length, not the file's
     * context, which can be far longer than anything trained on. */
    c->seq_len = max_seq > 0 && max_seq < ctx ? max_seq : ctx;
    *context = ctx;
    const gguf_tensor *emb = gguf_find_tensor(f, "token_embd.weight");
    if (!emb) {
        llama_set_err(err, errlen, "%s: tensor 'token_embd.weight' is missing",
                f->name);
        return -1;
    }
    /* The vocabulary is the embedding's row count (ne[1]); its shape is
     * checked with the other tensors'. */
    if (emb->n_dims != 2 || emb->ne[1] < 1 || emb->ne[1] > INT_MAX) {
        llama_set_err(err, errlen, "%s: tensor 'token_embd.weight' has %u "
                "dimensions [%llu, %llu, ...] (2, at most %d rows, "
                "expected)", f->name, emb->n_dims, (ull)emb->ne[0],
                (ull)emb->ne[1], INT_MAX);
        return -1;
    }
    c->vocab_size = (int)emb->ne[1];
    c->tied = gguf_find_tensor(f, "output.weight") == NULL;
    char merr[256];
    if (llama_config_check(c, merr, sizeof merr) != 0) {
        llama_set_err(err, errlen, "%s: %s", f->name, merr);
        return -1;
    }
    int hd = c->dim / c->n_heads;
    if (key_equals(f, "llama.vocab_size", c->vocab_size,
                   "token_embd.weight's row count", err, errlen) ||
        key_equals(f, "llama.rope.dimension_count", hd,
                   "the head size embedding_length / head_count", err,
                   errlen) ||
        key_equals(f, "llama.attention.key_length", hd,
                   "the head size embedding_length / head_count", err,
                   errlen) ||
        key_equals(f, "llama.attention.value_length", hd,
                   "the head size embedding_length / head_count", err,
                   errlen))
        return -1;
    return 0;
}

/* ---- the tensors ------------------------------------------------------ */

typedef struct gguf_weight {
    char name[48];
    uint32_t n_dims;
    uint64_t cols, rows;         /* ne[0], ne[1] (rows 1 for a vector) */
    int rope_heads;              /* q, k: heads whose rows to reorder */
    const gguf_tensor *t;
    float *dst;                  /* NULL while only checking */
} gguf_weight;

static size_t weight_count(const llama_config *c)
{
    return 2 + 9 * (size_t)c->n_layers + (c->tied ? 0 : 1);
}

static void add(gguf_weight *w, size_t *n, const char *name, uint64_t cols,
                uint64_t rows, int rope_heads, float *dst)
{
    gguf_weight *x = &w[(*n)++];
    snprintf(x->name, sizeof x->name, "%s", name);
    x->n_dims = rows ? 2 : 1;
    x->cols = cols;
    x->rows = rows ? rows : 1;
    x->rope_heads = rope_heads;
    x->dst = dst; /* x->t, once checked, stays */
}

/* The model's tensors by llama.cpp name, with their shapes as GGUF lists
 * them (innermost first: a PyTorch [out x in] weight is ne = {in, out}).
 * p may be NULL (shapes only). */
static void build_weights(const llama_config *c, const llama_params *p,
                          gguf_weight *w)
{
    uint64_t dim = (uint64_t)c->dim, hid = (uint64_t)c->hidden_dim;
    uint64_t hd = dim / (uint64_t)c->n_heads;
    uint64_t qdim = hd * (uint64_t)c->n_heads;
    uint64_t kvdim = hd * (uint64_t)c->n_kv_heads;
    uint64_t vocab = (uint64_t)c->vocab_size;
    size_t n = 0;
    char name[48];
    add(w, &n, "token_embd.weight", dim, vocab, 0, p ? p->embed : NULL);
    for (int l = 0; l < c->n_layers; l++) {
        const llama_layer *L = p ? &p->layers[l] : NULL;
        struct {
            const char *suffix;
            uint64_t cols, rows;
            int rope_heads;
            float *dst;
        } parts[9] = {
            {"attn_norm", dim, 0, 0, L ? L->rms_att : NULL},
            {"attn_q", dim, qdim, c->n_heads, L ? L->wq : NULL},
            {"attn_k", dim, kvdim, c->n_kv_heads, L ? L->wk : NULL},
            {"attn_v", dim, kvdim, 0, L ? L->wv : NULL},
            {"attn_output", qdim, dim, 0, L ? L->wo : NULL},
            {"ffn_norm", dim, 0, 0, L ? L->rms_ffn : NULL},
            {"ffn_gate", dim, hid, 0, L ? L->w_gate : NULL},
            {"ffn_up", dim, hid, 0, L ? L->w_up : NULL},
            {"ffn_down", hid, dim, 0, L ? L->w_down : NULL},
        };
        for (int i = 0; i < 9; i++) {
            snprintf(name, sizeof name, "blk.%d.%s.weight", l,
                     parts[i].suffix);
            add(w, &n, name, parts[i].cols, parts[i].rows,
                parts[i].rope_heads, parts[i].dst);
        }
    }
    add(w, &n, "output_norm.weight", dim, 0, 0, p ? p->rms_final : NULL);
    if (!c->tied)
        add(w, &n, "output.weight", dim, vocab, 0, p ? p->head : NULL);
}

/* Every weight present with its shape and a supported type, and no
 * tensor in the file that is not one of them. */
static int check_weights(const gguf_file *f, gguf_weight *w, size_t n,
                         char *err, size_t errlen)
{
    unsigned char *used = calloc(f->n_tensors ? f->n_tensors : 1, 1);
    if (!used) {
        llama_set_err(err, errlen, "%s: out of memory", f->name);
        return -1;
    }
    int rc = -1;
    for (size_t i = 0; i < n; i++) {
        const gguf_tensor *t = gguf_find_tensor(f, w[i].name);
        if (!t) {
            llama_set_err(err, errlen, "%s: tensor '%s' is missing", f->name,
                    w[i].name);
            goto done;
        }
        if (t->n_dims != w[i].n_dims || t->ne[0] != w[i].cols ||
            t->ne[1] != w[i].rows) {
            char got[128], want[64];
            size_t at = 0;
            for (uint32_t d = 0; d < t->n_dims; d++)
                at += (size_t)snprintf(got + at, sizeof got - at, "%s%llu",
                                       d ? ", " : "", (ull)t->ne[d]);
            if (w[i].n_dims == 2)
                snprintf(want, sizeof want, "%llu, %llu", (ull)w[i].cols,
                         (ull)w[i].rows);
            else
                snprintf(want, sizeof want, "%llu", (ull)w[i].cols);
            llama_set_err(err, errlen, "%s: tensor '%s' has dimensions [%s]; the "
                    "configuration needs [%s] (GGUF lists dimensions "
                    "innermost first)", f->name, w[i].name, got, want);
            goto done;
        }
        if (!gguf_dtype_supported(t->type)) {
            char msg[400];
            gguf_tensor_to_f32(f, t, NULL, msg, sizeof msg);
            llama_set_err(err, errlen, "%s", msg);
            goto done;
        }
        w[i].t = t;
        used[t - f->tensors] = 1;
    }
    for (size_t i = 0; i < f->n_tensors; i++)
        if (!used[i]) {
            char name[GGUF_PRINTABLE_LEN];
            llama_set_err(err, errlen, "%s: unexpected tensor '%s' (not part of "
                    "this model's configuration)", f->name,
                    gguf_printable(f->tensors[i].name, name));
            goto done;
        }
    rc = 0;
done:
    free(used);
    return rc;
}

/*
 * llama.cpp runs RoPE on interleaved pairs (x[2i], x[2i+1]) of each head;
 * Hugging Face's rotate_half, the model's convention, on (y[i],
 * y[i + hd/2]). Its converter therefore stores row i of a head of
 * Hugging Face's q (or k) at row 2i, and row hd/2 + i at row 2i + 1: the
 * same reordering as llama2.c's (checkpoint.c explains why the model's
 * function is unchanged). Reading back, file row 2i + j of a head goes to
 * row j * hd/2 + i.
 */
static uint64_t hf_row(uint64_t r, uint64_t hd)
{
    uint64_t head = r / hd, w = r % hd;
    return head * hd + (w % 2) * (hd / 2) + w / 2;
}

static int first_bad(const float *x, uint64_t n, uint64_t *at)
{
    for (uint64_t i = 0; i < n; i++)
        if (!isfinite(x[i])) {
            *at = i;
            return 1;
        }
    return 0;
}

/* Dequantises one weight into its place; refuses NaN and infinities,
 * naming the first in the file's element order. */
static int read_weight(const gguf_file *f, const gguf_weight *w, char *err,
                       size_t errlen)
{
    const gguf_tensor *t = w->t;
    uint64_t cols = w->cols, bad;
    int found = 0;
    if (!w->rope_heads) {
        gguf_dequantize(t->type, t->data, t->numel, w->dst);
        found = first_bad(w->dst, t->numel, &bad);
    } else {
        uint64_t hd = w->rows / (uint64_t)w->rope_heads;
        uint64_t row_bytes = cols / gguf_dtype_block_elems(t->type) *
                             gguf_dtype_block_bytes(t->type);
        for (uint64_t r = 0; r < w->rows && !found; r++) {
            float *dst = w->dst + hf_row(r, hd) * cols;
            gguf_dequantize(t->type, t->data + r * row_bytes, cols, dst);
            uint64_t c;
            if (first_bad(dst, cols, &c)) {
                found = 1;
                bad = r * cols + c;
            }
        }
    }
    if (found) {
        llama_set_err(err, errlen, "%s: tensor '%s' (%s) is not finite at element "
                "%llu (row %llu, column %llu, in the file's order)", f->name,
                w->name, gguf_dtype_name(t->type), (ull)bad,
                (ull)(bad / cols), (ull)(bad % cols));
        return -1;
    }
    return 0;
}

int gguf_load_llama(const gguf_file *f, llama_model *m, int max_batch,
                    int max_seq, char *err, size_t errlen)
{
    if (!f || !m) {
        llama_set_err(err, errlen, "gguf_load_llama: %s is NULL",
                !f ? "the file" : "the model");
        return -1;
    }
    memset(m, 0, sizeof *m);
    llama_config c;
    int context = 0;
    if (read_config(f, max_seq, &c, &context, err, errlen) != 0)
        return -1;
    /* Bound the table by the file before sizing it by block_count. */
    size_t fixed = c.tied ? 2 : 3;
    if (f->n_tensors < fixed ||
        (uint64_t)c.n_layers > (f->n_tensors - fixed) / 9) {
        llama_set_err(err, errlen, "%s: llama.block_count = %d needs %llu tensors, "
                "the file has %zu", f->name, c.n_layers,
                (ull)(9 * (uint64_t)c.n_layers + (c.tied ? 2 : 3)),
                f->n_tensors);
        return -1;
    }
    size_t n = weight_count(&c);
    gguf_weight *w = calloc(n, sizeof *w);
    if (!w) {
        llama_set_err(err, errlen, "%s: out of memory", f->name);
        return -1;
    }
    int rc = -1;
    build_weights(&c, NULL, w);
    if (check_weights(f, w, n, err, errlen) != 0)
        goto done;
    char merr[256];
    if (llama_create(m, &c, max_batch, merr, sizeof merr) != 0) {
        llama_set_err(err, errlen, "%s: %s", f->name, merr);
        goto done;
    }
    m->context_len = context; /* what a save writes back */
    build_weights(&c, &m->w, w); /* the destinations, now allocated */
    for (size_t i = 0; i < n; i++)
        if (read_weight(f, &w[i], err, errlen) != 0)
            goto fail;
    rc = 0;
    goto done;
fail:
    llama_destroy(m);
done:
    free(w);
    return rc;
}

int ckpt_load_gguf(const char *path, llama_model *m, int max_batch,
                   int max_seq, char *err, size_t errlen)
{
    if (!path || !m) {
        llama_set_err(err, errlen, "ckpt_load_gguf: %s is NULL",
                !path ? "path" : "model");
        return -1;
    }
    memset(m, 0, sizeof *m);
    gguf_file f;
    if (gguf_open(&f, path, err, errlen) != 0)
        return -1;
    int rc = gguf_load_llama(&f, m, max_batch, max_seq, err, errlen);
    gguf_close(&f);
    return rc;
}
