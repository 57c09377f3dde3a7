/* LLaMa checkpoints: Hugging Face safetensors (+ config.json, optionally
 * sharded) and llama2.c .bin files; see checkpoint.h. Loads check the
 * whole input (sizes against the files, every tensor's presence, dtype,
 * shape and finite values, the run's memory) before allocating the model
 * or writing any weight, so a refused file leaves the model as it was. */
#include "checkpoint.h"
#include "errmsg.h"

#include "fileio.h"
#include "hf_config.h"
#include "json.h"
#include "safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- the tensors of a model, by Hugging Face name --------------------- */

typedef struct weight_ref {
    char name[80];
    int ndim;
    uint64_t shape[2];
    float *data; /* NULL while only the shapes are known */
    /* A tied model's lm_head.weight: the embedding under another name.
     * Many Hugging Face checkpoints store it anyway; it may be absent,
     * and when present it must equal the embedding. Never written. */
    int tied_alias;
} weight_ref;

/* Rotary-embedding frequency buffers that older Hugging Face LLaMa
 * checkpoints saved per layer; they follow from rope_theta, so a loader
 * skips them rather than refusing the file. */
static int is_derived_buffer(const char *name)
{
    const char *suffix = ".self_attn.rotary_emb.inv_freq";
    size_t n = strlen(name), s = strlen(suffix);
    return n > s && strcmp(name + n - s, suffix) == 0;
}

/* Entries of the table: the embedding, 9 a layer, the final norm and
 * lm_head.weight (the head, or a tied model's alias of the embedding). */
static size_t table_size(const llama_config *c)
{
    return 3 + 9 * (size_t)c->n_layers;
}

static void add_ref(weight_ref *t, size_t *n, const char *name, uint64_t rows,
                    uint64_t cols, float *data)
{
    weight_ref *r = &t[(*n)++];
    snprintf(r->name, sizeof r->name, "%s", name);
    r->ndim = cols ? 2 : 1;
    r->shape[0] = rows;
    r->shape[1] = cols;
    r->data = data;
}

/* Fills t[table_size(c)] in file order; w may be NULL (shapes only). */
static void build_table(const llama_config *c, const llama_params *w,
                        weight_ref *t)
{
    uint64_t dim = (uint64_t)c->dim, hid = (uint64_t)c->hidden_dim;
    uint64_t hd = dim / (uint64_t)c->n_heads;
    uint64_t qdim = hd * (uint64_t)c->n_heads;
    uint64_t kvdim = hd * (uint64_t)c->n_kv_heads;
    uint64_t vocab = (uint64_t)c->vocab_size;
    size_t n = 0;
    char name[80];
    add_ref(t, &n, "model.embed_tokens.weight", vocab, dim,
            w ? w->embed : NULL);
    for (int l = 0; l < c->n_layers; l++) {
        const llama_layer *L = w ? &w->layers[l] : NULL;
        struct {
            const char *suffix;
            uint64_t rows, cols;
            float *data;
        } parts[9] = {
            {"self_attn.q_proj.weight", qdim, dim, L ? L->wq : NULL},
            {"self_attn.k_proj.weight", kvdim, dim, L ? L->wk : NULL},
            {"self_attn.v_proj.weight", kvdim, dim, L ? L->wv : NULL},
            {"self_attn.o_proj.weight", dim, qdim, L ? L->wo : NULL},
            {"mlp.gate_proj.weight", hid, dim, L ? L->w_gate : NULL},
            {"mlp.up_proj.weight", hid, dim, L ? L->w_up : NULL},
            {"mlp.down_proj.weight", dim, hid, L ? L->w_down : NULL},
            {"input_layernorm.weight", dim, 0, L ? L->rms_att : NULL},
            {"post_attention_layernorm.weight", dim, 0,
             L ? L->rms_ffn : NULL},
        };
        for (int p = 0; p < 9; p++) {
            snprintf(name, sizeof name, "model.layers.%d.%s", l,
                     parts[p].suffix);
            add_ref(t, &n, name, parts[p].rows, parts[p].cols, parts[p].data);
        }
    }
    add_ref(t, &n, "model.norm.weight", dim, 0, w ? w->rms_final : NULL);
    add_ref(t, &n, "lm_head.weight", vocab, dim, w ? w->head : NULL);
    t[n - 1].tied_alias = c->tied;
}

static weight_ref *find_ref(weight_ref *t, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(t[i].name, name) == 0)
            return &t[i];
    return NULL;
}

static void format_shape(char *buf, size_t len, int ndim,
                         const uint64_t *shape)
{
    size_t at = 0;
    at += (size_t)snprintf(buf, len, "[");
    for (int d = 0; d < ndim && at < len; d++)
        at += (size_t)snprintf(buf + at, len - at, "%s%llu", d ? ", " : "",
                               (unsigned long long)shape[d]);
    if (at < len)
        snprintf(buf + at, len - at, "]");
}

/* Checks that st holds tensor r, with its shape: 0 with the tensor in
 * *out (NULL for an absent tied alias), or -1 with a message. */
static int check_tensor(const st_file *st, const char *path,
                        const weight_ref *r, const st_tensor **out, char *err,
                        size_t errlen)
{
    const st_tensor *t = st_find(st, r->name);
    *out = t;
    if (!t && r->tied_alias)
        return 0;
    if (!t) {
        llama_set_err(err, errlen, "%s: tensor '%s' is missing", path, r->name);
        return -1;
    }
    int same = t->ndim == r->ndim;
    for (int d = 0; same && d < r->ndim; d++)
        same = t->shape[d] == r->shape[d];
    if (!same) {
        char got[96], want[96];
        format_shape(got, sizeof got, t->ndim, t->shape);
        format_shape(want, sizeof want, r->ndim, r->shape);
        llama_set_err(err, errlen, "%s: tensor '%s' has shape %s, the model's "
                "configuration needs %s", path, r->name, got, want);
        return -1;
    }
    return 0;
}

/* A weight must be finite: a NaN or an infinity in a checkpoint would
 * only show at the first loss or LOD ratio, far from its cause. */
static int check_finite(const st_file *st, const char *path,
                        const st_tensor *t, char *err, size_t errlen)
{
    uint64_t at;
    float v;
    if (!st_find_nonfinite(st, t, &at, &v))
        return 0;
    char where[64] = "";
    if (t->ndim == 2 && t->shape[1] > 0)
        snprintf(where, sizeof where, " (row %llu, column %llu)",
                 (unsigned long long)(at / t->shape[1]),
                 (unsigned long long)(at % t->shape[1]));
    llama_set_err(err, errlen, "%s: tensor '%s' holds %s at index %llu%s: a "
            "checkpoint's weights must be finite", path, t->name,
            isnan(v) ? "NaN" : v > 0 ? "+Inf" : "-Inf",
            (unsigned long long)at, where);
    return -1;
}

/* A tied model's stored lm_head.weight must be the embedding (tensors
 * already checked for shape; they may be in different files and dtypes,
 * so values are compared, as f32). */
static int check_tied_alias(const st_file *ef, const st_tensor *e,
                            const st_file *hf, const st_tensor *h,
                            const char *path, char *err, size_t errlen)
{
    for (uint64_t i = 0; i < e->numel; i++) {
        float a = st_get_f32(ef, e, i), b = st_get_f32(hf, h, i);
        if (a != b) {
            llama_set_err(err, errlen, "%s: the configuration ties the head to "
                    "the embedding (tie_word_embeddings), but "
                    "lm_head.weight differs from model.embed_tokens.weight "
                    "at index %llu (%.9g vs %.9g): set tie_word_embeddings "
                    "to false to load the stored head", path,
                    (unsigned long long)i, (double)b, (double)a);
            return -1;
        }
    }
    return 0;
}

/* Every tensor in st must be one of the model's (and, when owner is given,
 * one the index assigns to this file). */
static int check_no_extra(const st_file *st, const char *path, weight_ref *t,
                          size_t n, const int *owner, int which, char *err,
                          size_t errlen)
{
    for (size_t i = 0; i < st->count; i++) {
        const char *name = st->tensors[i].name;
        if (is_derived_buffer(name))
            continue;
        weight_ref *r = find_ref(t, n, name);
        if (!r) {
            llama_set_err(err, errlen, "%s: unexpected tensor '%s' (not part of "
                    "this model's configuration)", path, name);
            return -1;
        }
        if (owner && owner[r - t] != which) {
            llama_set_err(err, errlen, "%s: tensor '%s' is in this shard, but the "
                    "index puts it in another", path, name);
            return -1;
        }
    }
    return 0;
}

/* ---- files -------------------------------------------------------------- */

static char *join_path(const char *dir, const char *name)
{
    size_t a = strlen(dir), b = strlen(name);
    char *p = malloc(a + b + 2);
    if (!p)
        return NULL;
    memcpy(p, dir, a);
    size_t at = a;
    if (a > 0 && dir[a - 1] != '/')
        p[at++] = '/';
    memcpy(p + at, name, b + 1);
    return p;
}

static int file_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

static json_value *read_json(const char *path, char *err, size_t errlen)
{
    size_t len;
    char *text;
    if (file_read_all(path, (size_t)16 << 20, &text, &len, err, errlen))
        return NULL;
    char jerr[200];
    json_value *v = json_parse(text, len, jerr, sizeof jerr);
    free(text);
    if (!v) {
        llama_set_err(err, errlen, "%s: %s", path, jerr);
        return NULL;
    }
    if (v->type != JSON_OBJECT) {
        llama_set_err(err, errlen, "%s: a JSON %s, not an object", path,
                json_type_name(v->type));
        json_free(v);
        return NULL;
    }
    return v;
}

/* ---- loading safetensors ---------------------------------------------- */

/* What a pass over the files does once every tensor's presence and
 * shape are checked: the values (finite; a tied alias equal to the
 * embedding), then the copy into the table's arrays. ckpt_load_hf checks
 * in a first pass, before the model exists, and copies in a second. */
enum { LOAD_CHECK_VALUES = 1, LOAD_COPY = 2 };

/* files[owner[i]] holds t[i] (owner NULL: files[0] holds all; -1: an
 * absent tied alias), paths[] names the files for messages. */
static int check_and_copy(const st_file *files, const char *const *paths,
                          const int *owner, const weight_ref *t, size_t n,
                          int mode, char *err, size_t errlen)
{
    for (size_t i = 0; (mode & LOAD_CHECK_VALUES) && i < n; i++) {
        int o = owner ? owner[i] : 0;
        const st_tensor *x = o < 0 ? NULL : st_find(&files[o], t[i].name);
        if (!x)
            continue;
        if (t[i].tied_alias) {
            /* the embedding is entry 0 of the table */
            int eo = owner ? owner[0] : 0;
            const st_tensor *e = st_find(&files[eo], t[0].name);
            if (check_tied_alias(&files[eo], e, &files[o], x, paths[o], err,
                                 errlen))
                return -1;
        } else if (check_finite(&files[o], paths[o], x, err, errlen)) {
            return -1;
        }
    }
    for (size_t i = 0; (mode & LOAD_COPY) && i < n; i++) {
        if (t[i].tied_alias)
            continue;
        const st_file *f = &files[owner ? owner[i] : 0];
        st_read_f32(f, st_find(f, t[i].name), t[i].data);
    }
    return 0;
}

/* Checks one file against the table, then does what mode asks. */
static int load_single(const char *path, weight_ref *t, size_t n, int mode,
                       char *err, size_t errlen)
{
    st_file f;
    if (st_open(&f, path, err, errlen) != 0)
        return -1;
    int rc = check_no_extra(&f, path, t, n, NULL, 0, err, errlen);
    const st_tensor *x;
    for (size_t i = 0; rc == 0 && i < n; i++)
        rc = check_tensor(&f, path, &t[i], &x, err, errlen);
    if (rc == 0)
        rc = check_and_copy(&f, &path, NULL, t, n, mode, err, errlen);
    st_close(&f);
    return rc;
}

int ckpt_load_safetensors(const char *path, llama_model *m, char *err,
                          size_t errlen)
{
    if (!path || !m || !m->w.base || !m->w.layers) {
        llama_set_err(err, errlen, "ckpt_load_safetensors: %s is NULL or not a "
                "created model", !path ? "path" : "model");
        return -1;
    }
    size_t n = table_size(&m->cfg);
    weight_ref *t = calloc(n, sizeof *t);
    if (!t) {
        llama_set_err(err, errlen, "%s: out of memory", path);
        return -1;
    }
    build_table(&m->cfg, &m->w, t);
    /* Values checked before the copy: a refused file changes nothing. */
    int rc = load_single(path, t, n, LOAD_CHECK_VALUES | LOAD_COPY, err,
                         errlen);
    free(t);
    return rc;
}

/* A shard name from the index must be a plain file name: the shards live
 * next to the index, and a path could reach anywhere. */
static int plain_file_name(const char *s)
{
    return s[0] != '\0' && strchr(s, '/') == NULL && strcmp(s, ".") != 0 &&
           strcmp(s, "..") != 0;
}

/* Loads the sharded form: the index's weight_map names each tensor's
 * shard. All shards are opened and checked before any weight is written. */
static int load_sharded(const char *dir, const char *index_path,
                        weight_ref *t, size_t n, int mode, char *err,
                        size_t errlen)
{
    json_value *idx = read_json(index_path, err, errlen);
    if (!idx)
        return -1;
    int rc = -1;
    const char **shard_names = NULL;
    char **paths = NULL;
    st_file *files = NULL;
    size_t nfiles = 0;
    int *owner = calloc(n, sizeof *owner);
    const json_value *map = json_get(idx, "weight_map");
    if (!owner) {
        llama_set_err(err, errlen, "%s: out of memory", index_path);
        goto done;
    }
    if (!map || map->type != JSON_OBJECT) {
        llama_set_err(err, errlen, "%s: 'weight_map' must be an object",
                index_path);
        goto done;
    }
    shard_names = calloc(map->count ? map->count : 1, sizeof *shard_names);
    paths = calloc(map->count ? map->count : 1, sizeof *paths);
    files = calloc(map->count ? map->count : 1, sizeof *files);
    if (!shard_names || !paths || !files) {
        llama_set_err(err, errlen, "%s: out of memory", index_path);
        goto done;
    }
    for (size_t i = 0; i < n; i++)
        owner[i] = -1;
    for (size_t i = 0; i < map->count; i++) {
        const char *name = map->keys[i];
        const json_value *v = &map->items[i];
        if (v->type != JSON_STRING || !plain_file_name(v->string)) {
            llama_set_err(err, errlen, "%s: weight_map['%s'] must be a file name "
                    "in the same directory", index_path, name);
            goto done;
        }
        if (is_derived_buffer(name))
            continue;
        weight_ref *r = find_ref(t, n, name);
        if (!r) {
            llama_set_err(err, errlen, "%s: unexpected tensor '%s' (not part of "
                    "this model's configuration)", index_path, name);
            goto done;
        }
        size_t s = 0;
        while (s < nfiles && strcmp(shard_names[s], v->string) != 0)
            s++;
        if (s == nfiles)
            shard_names[nfiles++] = v->string;
        owner[r - t] = (int)s;
    }
    for (size_t i = 0; i < n; i++) {
        if (owner[i] < 0 && !t[i].tied_alias) {
            llama_set_err(err, errlen, "%s: tensor '%s' is missing from "
                    "weight_map", index_path, t[i].name);
            goto done;
        }
    }
    size_t opened = 0;
    for (; opened < nfiles; opened++) {
        char *p = paths[opened] = join_path(dir, shard_names[opened]);
        if (!p) {
            llama_set_err(err, errlen, "%s: out of memory", index_path);
            break;
        }
        int bad = st_open(&files[opened], p, err, errlen) != 0;
        if (!bad)
            bad = check_no_extra(&files[opened], p, t, n, owner,
                                 (int)opened, err, errlen) != 0;
        for (size_t i = 0; !bad && i < n; i++) {
            if (owner[i] != (int)opened)
                continue;
            const st_tensor *x;
            bad = check_tensor(&files[opened], p, &t[i], &x, err,
                               errlen) != 0;
            if (!bad && !x) { /* an alias the index places here */
                llama_set_err(err, errlen, "%s: tensor '%s' is missing (the "
                        "index puts it in this shard)", p, t[i].name);
                bad = 1;
            }
        }
        if (bad) {
            if (files[opened].map)
                st_close(&files[opened]);
            break;
        }
    }
    if (opened == nfiles)
        rc = check_and_copy(files, (const char *const *)paths, owner, t, n,
                            mode, err, errlen);
    for (size_t s = 0; s < opened; s++)
        st_close(&files[s]);
done:
    if (paths)
        for (size_t s = 0; s < nfiles; s++)
            free(paths[s]);
    free(paths);
    free(owner);
    free(shard_names);
    free(files);
    json_free(idx);
    return rc;
}

/* The sequence length a model is created for: the checkpoint's context,
 * or the run's max_seq when that is shorter (0: the context). */
static int run_seq_len(int context, int max_seq)
{
    return max_seq > 0 && max_seq < context ? max_seq : context;
}

static int cmp_str_ptr(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* The bytes of the weight files: model.safetensors, or (index_path not
 * NULL) every distinct shard the index names, each a regular file. */
static int weight_file_bytes(const char *dir, const char *index_path,
                             const char *single_path, uint64_t *bytes,
                             char *err, size_t errlen)
{
    uint64_t size;
    *bytes = 0;
    if (!index_path) {
        int fd = file_open_regular(single_path, &size, err, errlen);
        if (fd < 0)
            return -1;
        close(fd);
        *bytes = size;
        return 0;
    }
    json_value *idx = read_json(index_path, err, errlen);
    if (!idx)
        return -1;
    const json_value *map = json_get(idx, "weight_map");
    int rc = -1;
    const char **names = NULL;
    if (!map || map->type != JSON_OBJECT) {
        llama_set_err(err, errlen, "%s: 'weight_map' must be an object",
                index_path);
        goto done;
    }
    names = malloc((map->count ? map->count : 1) * sizeof *names);
    if (!names) {
        llama_set_err(err, errlen, "%s: out of memory", index_path);
        goto done;
    }
    for (size_t i = 0; i < map->count; i++) {
        const json_value *v = &map->items[i];
        if (v->type != JSON_STRING || !plain_file_name(v->string)) {
            llama_set_err(err, errlen, "%s: weight_map['%s'] must be a file name "
                    "in the same directory", index_path, map->keys[i]);
            goto done;
        }
        names[i] = v->string;
    }
    /* Sorted, so that each shard counts once in O(n log n). */
    qsort(names, map->count, sizeof *names, cmp_str_ptr);
    for (size_t i = 0; i < map->count; i++) {
        if (i > 0 && strcmp(names[i], names[i - 1]) == 0)
            continue;
        char *p = join_path(dir, names[i]);
        if (!p) {
            llama_set_err(err, errlen, "%s: out of memory", index_path);
            goto done;
        }
        int fd = file_open_regular(p, &size, err, errlen);
        free(p);
        if (fd < 0)
            goto done;
        close(fd);
        *bytes = size > UINT64_MAX - *bytes ? UINT64_MAX : *bytes + size;
    }
    rc = 0;
done:
    free(names);
    json_free(idx);
    return rc;
}

int ckpt_load_hf(const char *dir, llama_model *m, int max_batch, int max_seq,
                 char *err, size_t errlen)
{
    if (!dir || !m || max_seq < 0) {
        llama_set_err(err, errlen, "ckpt_load_hf: %s",
                !dir ? "dir is NULL" : !m ? "model is NULL"
                                          : "max_seq is negative");
        return -1;
    }
    memset(m, 0, sizeof *m);
    char *config_path = join_path(dir, "config.json");
    char *index_path = join_path(dir, "model.safetensors.index.json");
    char *single_path = join_path(dir, "model.safetensors");
    weight_ref *t = NULL;
    json_value *j = NULL;
    int rc = -1;
    llama_config cfg;
    if (!config_path || !index_path || !single_path) {
        llama_set_err(err, errlen, "%s: out of memory", dir);
        goto done;
    }
    j = read_json(config_path, err, errlen);
    if (!j || hf_config_parse(j, config_path, &cfg, err, errlen))
        goto done;
    int sharded = file_exists(index_path);
    if (!sharded && !file_exists(single_path)) {
        llama_set_err(err, errlen, "%s: neither model.safetensors nor "
                "model.safetensors.index.json is there", dir);
        goto done;
    }
    /* Which of two checkpoints is the current one cannot be told from the
     * files (an older trainer saved model.safetensors beside the shards it
     * had loaded, and the index then hid the fine-tune): refuse both. */
    if (sharded && file_exists(single_path)) {
        llama_set_err(err, errlen, "%s: holds both model.safetensors and "
                "model.safetensors.index.json, two checkpoints: keep the "
                "current one (remove the other, and the index's shards with "
                "it)", dir);
        goto done;
    }
    /* Before anything is sized by the configuration (the tensor table
     * has 9 entries a layer): its parameters, at 2 bytes each at least,
     * must fit in the files, so a config.json that lies about its sizes
     * is refused without allocating for them. */
    uint64_t file_bytes;
    if (weight_file_bytes(dir, sharded ? index_path : NULL, single_path,
                          &file_bytes, err, errlen) != 0)
        goto done;
    size_t params = llama_param_count(&cfg);
    if (params == 0 || params > file_bytes / 2) {
        char count[32] = "more than 2^64";
        if (params)
            snprintf(count, sizeof count, "%zu", params);
        llama_set_err(err, errlen, "%s: config.json describes %s parameters "
                "(%d layers of dim %d, MLP %d, vocab %d), at least twice "
                "as many bytes, but the weight files hold %llu bytes", dir,
                count, cfg.n_layers, cfg.dim, cfg.hidden_dim, cfg.vocab_size,
                (unsigned long long)file_bytes);
        goto done;
    }
    size_t n = table_size(&cfg);
    t = calloc(n, sizeof *t);
    if (!t) {
        llama_set_err(err, errlen, "%s: out of memory", dir);
        goto done;
    }
    /* The memory the run needs is known from the configuration alone:
     * a model that cannot fit is refused before its files are read. */
    char merr[512];
    int context = cfg.seq_len;
    cfg.seq_len = run_seq_len(context, max_seq);
    if (llama_memory_check(&cfg, max_batch, merr, sizeof merr) != 0) {
        llama_set_err(err, errlen, "%s: %s", dir, merr);
        goto done;
    }
    /* Check the files against the configuration's shapes first, so a bad
     * checkpoint is refused before a possibly large model is allocated. */
    build_table(&cfg, NULL, t);
    if (sharded ? load_sharded(dir, index_path, t, n, LOAD_CHECK_VALUES, err,
                               errlen)
                : load_single(single_path, t, n, LOAD_CHECK_VALUES, err,
                              errlen))
        goto done;
    if (llama_create(m, &cfg, max_batch, merr, sizeof merr) != 0) {
        llama_set_err(err, errlen, "%s: %s", dir, merr);
        goto done;
    }
    m->context_len = context;
    build_table(&cfg, &m->w, t);
    rc = sharded ? load_sharded(dir, index_path, t, n, LOAD_COPY, err, errlen)
                 : load_single(single_path, t, n, LOAD_COPY, err, errlen);
    if (rc != 0)
        llama_destroy(m);
done:
    free(t);
    json_free(j);
    free(config_path);
    free(index_path);
    free(single_path);
    return rc;
}

/* ---- saving ---------------------------------------------------------------- */

int ckpt_save_safetensors(const char *path, const llama_model *m,
                          owl_dtype dtype, const char *config_path,
                          char *err, size_t errlen)
{
    if (!path || !m || !m->w.base || !m->w.layers) {
        llama_set_err(err, errlen, "ckpt_save_safetensors: %s is NULL or not a "
                "created model", !path ? "path" : "model");
        return -1;
    }
    st_dtype sd;
    switch (dtype) {
    case OWL_DTYPE_F32: sd = ST_F32; break;
    case OWL_DTYPE_BF16: sd = ST_BF16; break;
    case OWL_DTYPE_F16: sd = ST_F16; break;
    default:
        llama_set_err(err, errlen, "%s: dtype %d is not F32, BF16 or F16", path,
                (int)dtype);
        return -1;
    }
    size_t n = table_size(&m->cfg);
    weight_ref *t = calloc(n, sizeof *t);
    st_out_tensor *o = calloc(n, sizeof *o);
    int rc = -1;
    if (!t || !o) {
        llama_set_err(err, errlen, "%s: out of memory", path);
        goto done;
    }
    build_table(&m->cfg, &m->w, t);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (t[i].tied_alias) /* a tied head is stored once */
            continue;
        o[k].name = t[i].name;
        o[k].ndim = t[i].ndim;
        o[k].shape[0] = t[i].shape[0];
        o[k].shape[1] = t[i].shape[1];
        o[k].data = t[i].data;
        k++;
    }
    rc = st_write(path, o, k, sd, err, errlen);
    if (rc == 0 && config_path) {
        char *text;
        size_t len;
        rc = ckpt_config_text(m, dtype, NULL, &text, &len, err, errlen);
        if (rc == 0) {
            rc = st_write_file_atomic(config_path, text, len, err, errlen);
            free(text);
        }
    }
done:
    free(t);
    free(o);
    return rc;
}

/* ---- llama2.c ---------------------------------------------------------------- */

static float load_f32le(const unsigned char *p)
{
    uint32_t b = (uint32_t)p[0] | (uint32_t)p[1] << 8 |
                 (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
    float x;
    memcpy(&x, &b, sizeof x);
    return x;
}

static void read_f32s(float *dst, const unsigned char *src, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dst[i] = load_f32le(src + 4 * i);
}

/*
 * llama2.c and Hugging Face place the two coordinates RoPE rotates
 * together differently within a head of size hd (freq_i = theta^(-2i/hd)):
 *   llama2.c rotates (x[2i], x[2i+1])      by pos * freq_i,
 *   HF (rotate_half) rotates (y[i], y[i+hd/2]) by pos * freq_i.
 * Let P reorder a head's coordinates: y[i] = x[2i], y[i+hd/2] = x[2i+1]
 * (the even coordinates first, then the odd ones). Then pair i of y is
 * pair i of x, rotated by the same angle, so RoPE_hf(P x) = P RoPE_2c(x).
 * Since q = Wq h, P q = (P Wq) h: reordering the rows of Wq within each
 * head the same way makes the HF model's rotated queries the permuted
 * llama2.c ones, and likewise for Wk per kv head. Attention only uses dot
 * products of a rotated query head with a rotated key head, and
 * (P a).(P b) = a.b, so every score, and so the model's function, is
 * unchanged; wv and wo are untouched.
 */
static void permute_rope_rows(float *dst, const unsigned char *src,
                              int heads, int hd, int cols)
{
    size_t row = (size_t)cols * 4;
    for (int h = 0; h < heads; h++) {
        const unsigned char *s = src + (size_t)h * hd * row;
        float *d = dst + (size_t)h * hd * cols;
        for (int i = 0; i < hd / 2; i++) {
            read_f32s(d + (size_t)i * cols, s + (size_t)(2 * i) * row,
                      (size_t)cols);
            read_f32s(d + (size_t)(hd / 2 + i) * cols,
                      s + (size_t)(2 * i + 1) * row, (size_t)cols);
        }
    }
}

/* a * b, or 0 with *ovf set when it would not fit in 64 bits. */
static uint64_t mul_u64(uint64_t a, uint64_t b, int *ovf)
{
    if (a != 0 && b > UINT64_MAX / a) {
        *ovf = 1;
        return 0;
    }
    return a * b;
}

static uint64_t add_u64(uint64_t a, uint64_t b, int *ovf)
{
    if (b > UINT64_MAX - a) {
        *ovf = 1;
        return 0;
    }
    return a + b;
}

/* The first f32 at p[0, n) whose exponent bits are all ones (NaN or an
 * infinity), or n. */
static uint64_t first_nonfinite_f32(const unsigned char *p, uint64_t n)
{
    for (uint64_t i = 0; i < n; i++)
        if ((p[4 * i + 3] & 0x7F) == 0x7F && (p[4 * i + 2] & 0x80))
            return i;
    return n;
}

/* Every weight array of a llama2.c file (size already checked) must be
 * finite; the message names the array as llama2.c does, its layer, and
 * the index in the file's order. The freq_cis arrays are not weights. */
static int llama2c_check_finite(const char *path, const unsigned char *p,
                                const llama_config *c, int file_seq,
                                char *err, size_t errlen)
{
    uint64_t dim = (uint64_t)c->dim, hid = (uint64_t)c->hidden_dim;
    uint64_t hd = dim / (uint64_t)c->n_heads;
    uint64_t kd = hd * (uint64_t)c->n_kv_heads * dim;
    uint64_t emb = (uint64_t)c->vocab_size * dim;
    const struct {
        const char *name;
        int per_layer;
        uint64_t count; /* floats, per layer when per_layer */
    } arrays[] = {
        {"token_embedding_table", 0, emb}, {"rms_att_weight", 1, dim},
        {"wq", 1, dim * dim}, {"wk", 1, kd}, {"wv", 1, kd},
        {"wo", 1, dim * dim}, {"rms_ffn_weight", 1, dim},
        {"w1", 1, hid * dim}, {"w2", 1, hid * dim}, {"w3", 1, hid * dim},
        {"rms_final_weight", 0, dim},
        {NULL, 0, (uint64_t)file_seq * hd}, /* freq_cis_real and _imag */
        {"wcls", 0, c->tied ? 0 : emb},
    };
    for (size_t a = 0; a < sizeof arrays / sizeof arrays[0]; a++) {
        uint64_t layers = arrays[a].per_layer ? (uint64_t)c->n_layers : 1;
        for (uint64_t l = 0; l < layers; l++, p += 4 * arrays[a].count) {
            if (!arrays[a].name)
                continue;
            uint64_t at = first_nonfinite_f32(p, arrays[a].count);
            if (at == arrays[a].count)
                continue;
            float v = load_f32le(p + 4 * at);
            char layer[32] = "";
            if (arrays[a].per_layer)
                snprintf(layer, sizeof layer, " of layer %llu",
                         (unsigned long long)l);
            llama_set_err(err, errlen, "%s: tensor '%s'%s holds %s at index %llu "
                    "(in the file's order): a checkpoint's weights must be "
                    "finite", path, arrays[a].name, layer,
                    isnan(v) ? "NaN" : v > 0 ? "+Inf" : "-Inf",
                    (unsigned long long)at);
            return -1;
        }
    }
    return 0;
}

int ckpt_load_llama2c(const char *path, llama_model *m, int max_batch,
                      int max_seq, char *err, size_t errlen)
{
    if (!path || !m || max_seq < 0) {
        llama_set_err(err, errlen, "ckpt_load_llama2c: %s",
                !path ? "path is NULL" : !m ? "model is NULL"
                                            : "max_seq is negative");
        return -1;
    }
    memset(m, 0, sizeof *m);
    void *map;
    uint64_t size;
    if (map_file(path, 28, "the 28-byte header", &map, &size, err,
                 errlen) != 0)
        return -1;
    const unsigned char *b = map;
    int32_t h[7];
    for (int i = 0; i < 7; i++)
        h[i] = (int32_t)((uint32_t)b[4 * i] | (uint32_t)b[4 * i + 1] << 8 |
                         (uint32_t)b[4 * i + 2] << 16 |
                         (uint32_t)b[4 * i + 3] << 24);
    int rc = -1;
    llama_config c;
    memset(&c, 0, sizeof c);
    c.dim = h[0];
    c.hidden_dim = h[1];
    c.n_layers = h[2];
    c.n_heads = h[3];
    c.n_kv_heads = h[4];
    /* A negative vocab_size marks an unshared classifier (llama2.c). */
    c.tied = h[5] > 0;
    c.vocab_size = h[5] == INT32_MIN ? 0 : (h[5] < 0 ? -h[5] : h[5]);
    c.seq_len = h[6];
    c.rope_theta = 10000.0f;
    c.norm_eps = 1e-5f;
    if (c.dim <= 0 || c.hidden_dim <= 0 || c.n_layers <= 0 ||
        c.n_heads <= 0 || c.n_kv_heads <= 0 || c.vocab_size <= 0 ||
        c.seq_len <= 0) {
        llama_set_err(err, errlen, "%s: header values must be positive (vocab_size "
                "may be negative): dim %d, hidden_dim %d, n_layers %d, "
                "n_heads %d, n_kv_heads %d, vocab_size %d, seq_len %d", path,
                h[0], h[1], h[2], h[3], h[4], h[5], h[6]);
        goto done;
    }
    if (c.n_heads % c.n_kv_heads != 0 || c.dim % c.n_heads != 0) {
        llama_set_err(err, errlen, "%s: n_heads %d must be a multiple of "
                "n_kv_heads %d, and dim %d a multiple of n_heads", path,
                c.n_heads, c.n_kv_heads, c.dim);
        goto done;
    }
    char merr[512];
    if (llama_config_check(&c, merr, sizeof merr) != 0) {
        llama_set_err(err, errlen, "%s: %s", path, merr);
        goto done;
    }
    uint64_t dim = (uint64_t)c.dim, hid = (uint64_t)c.hidden_dim;
    uint64_t L = (uint64_t)c.n_layers, V = (uint64_t)c.vocab_size;
    uint64_t hd = dim / (uint64_t)c.n_heads;
    uint64_t kvdim = hd * (uint64_t)c.n_kv_heads;
    int ovf = 0;
    uint64_t emb = mul_u64(V, dim, &ovf);
    uint64_t dd = mul_u64(dim, dim, &ovf), kd = mul_u64(kvdim, dim, &ovf);
    uint64_t hdm = mul_u64(hid, dim, &ovf);
    uint64_t per_layer = 0, parts[] = {dim, dd, kd, kd, dd, dim, hdm, hdm,
                                       hdm};
    for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++)
        per_layer = add_u64(per_layer, parts[i], &ovf);
    uint64_t freq = mul_u64((uint64_t)c.seq_len, hd, &ovf); /* real+imag */
    uint64_t floats = add_u64(emb, mul_u64(L, per_layer, &ovf), &ovf);
    floats = add_u64(floats, dim + freq, &ovf); /* each < 2^62 */
    floats = add_u64(floats, c.tied ? 0 : emb, &ovf);
    uint64_t want = add_u64(28, mul_u64(floats, 4, &ovf), &ovf);
    if (ovf || want != size) {
        llama_set_err(err, errlen, "%s: %llu bytes, but its header (dim %d, "
                "hidden_dim %d, n_layers %d, n_heads %d, n_kv_heads %d, "
                "vocab_size %d, seq_len %d) describes %s%llu bytes", path,
                (unsigned long long)size, h[0], h[1], h[2], h[3], h[4], h[5],
                h[6], ovf ? "more than 2^64 " : "",
                ovf ? 0ULL : (unsigned long long)want);
        goto done;
    }
    /* The file's seq_len sizes the legacy freq_cis arrays (above); the
     * model is created for the run's, whose memory is checked before the
     * file's values are read. */
    c.seq_len = run_seq_len(h[6], max_seq);
    if (llama_memory_check(&c, max_batch, merr, sizeof merr) != 0) {
        llama_set_err(err, errlen, "%s: %s", path, merr);
        goto done;
    }
    if (llama2c_check_finite(path, b + 28, &c, h[6], err, errlen) != 0)
        goto done;
    if (llama_create(m, &c, max_batch, merr, sizeof merr) != 0) {
        llama_set_err(err, errlen, "%s: %s", path, merr);
        goto done;
    }
    m->context_len = h[6];
    /* The arrays follow the header in this order, each for all layers. */
    const unsigned char *p = b + 28;
    llama_params *w = &m->w;
    read_f32s(w->embed, p, emb);
    p += 4 * emb;
#define PER_LAYER(field, count, body)                                      \
    for (uint64_t l = 0; l < L; l++, p += 4 * (count)) {                   \
        float *dst = w->layers[l].field;                                   \
        body;                                                              \
    }
    PER_LAYER(rms_att, dim, read_f32s(dst, p, dim))
    PER_LAYER(wq, dd, permute_rope_rows(dst, p, c.n_heads, (int)hd, c.dim))
    PER_LAYER(wk, kd,
              permute_rope_rows(dst, p, c.n_kv_heads, (int)hd, c.dim))
    PER_LAYER(wv, kd, read_f32s(dst, p, kd))
    PER_LAYER(wo, dd, read_f32s(dst, p, dd))
    PER_LAYER(rms_ffn, dim, read_f32s(dst, p, dim))
    PER_LAYER(w_gate, hdm, read_f32s(dst, p, hdm)) /* w1 */
    PER_LAYER(w_down, hdm, read_f32s(dst, p, hdm)) /* w2 */
    PER_LAYER(w_up, hdm, read_f32s(dst, p, hdm))   /* w3 */
#undef PER_LAYER
    read_f32s(w->rms_final, p, dim);
    p += 4 * dim;
    p += 4 * freq; /* legacy freq_cis_real and freq_cis_imag */
    if (!c.tied)
        read_f32s(w->head, p, emb);
    rc = 0;
done:
    munmap(map, (size_t)size);
    return rc;
}
