/* Saving a complete Hugging Face model directory: the weights, a
 * config.json that keeps the source's, and the source's tokenizer files
 * (see checkpoint.h). */
#include "checkpoint.h"
#include "errmsg.h"

#include "ckpt_dir.h"
#include "fileio.h"
#include "hf_config.h"
#include "safetensors.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* Largest config.json and companion file read into a source: far above
 * any real one (Llama-3's tokenizer.json is 9 MB), far below memory. */
#define CONFIG_LIMIT ((size_t)16 << 20)
#define COMPANION_LIMIT ((size_t)256 << 20)

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

void ckpt_source_free(ckpt_source *src)
{
    if (!src)
        return;
    free(src->config);
    for (size_t i = 0; i < src->nfiles; i++) {
        free(src->files[i].name);
        free(src->files[i].bytes);
    }
    free(src->files);
    memset(src, 0, sizeof *src);
}

static int is_companion(const char *name)
{
    for (size_t i = 0; i < ckpt_companion_count; i++)
        if (strcmp(name, ckpt_companion_files[i]) == 0)
            return 1;
    return 0;
}

int ckpt_source_add_file(ckpt_source *src, const char *name,
                         const void *bytes, size_t len, char *err,
                         size_t errlen)
{
    if (!src || !name || (!bytes && len)) {
        llama_set_err(err, errlen, "ckpt_source_add_file: a NULL argument");
        return -1;
    }
    if (!is_companion(name)) {
        llama_set_err(err, errlen, "'%s' is not a file a model directory carries "
                "along (tokenizer.json, tokenizer.model, ...)", name);
        return -1;
    }
    char *copy = malloc(len ? len : 1);
    char *nm = strdup(name);
    if (!copy || !nm) {
        free(copy);
        free(nm);
        llama_set_err(err, errlen, "%s: out of memory", name);
        return -1;
    }
    memcpy(copy, bytes, len);
    for (size_t i = 0; i < src->nfiles; i++)
        if (strcmp(src->files[i].name, name) == 0) { /* replaced */
            free(nm);
            free(src->files[i].bytes);
            src->files[i].bytes = copy;
            src->files[i].len = len;
            return 0;
        }
    ckpt_file *f = realloc(src->files, (src->nfiles + 1) * sizeof *f);
    if (!f) {
        free(copy);
        free(nm);
        llama_set_err(err, errlen, "%s: out of memory", name);
        return -1;
    }
    src->files = f;
    f[src->nfiles++] = (ckpt_file){nm, copy, len};
    return 0;
}

int ckpt_source_read(const char *dir, ckpt_source *src, char *err,
                     size_t errlen)
{
    memset(src, 0, sizeof *src);
    if (!dir) {
        llama_set_err(err, errlen, "ckpt_source_read: dir is NULL");
        return -1;
    }
    char *p = join_path(dir, "config.json");
    if (!p) {
        llama_set_err(err, errlen, "%s: out of memory", dir);
        return -1;
    }
    int rc = file_read_all(p, CONFIG_LIMIT, &src->config, &src->config_len,
                           err, errlen);
    free(p);
    for (size_t i = 0; rc == 0 && i < ckpt_companion_count; i++) {
        p = join_path(dir, ckpt_companion_files[i]);
        if (!p) {
            llama_set_err(err, errlen, "%s: out of memory", dir);
            rc = -1;
            break;
        }
        /* Absent is fine; there but unreadable (a FIFO, too large) is
         * not: a save without it would not be the complete model. */
        struct stat st;
        if (lstat(p, &st) != 0 && errno == ENOENT) {
            free(p);
            continue;
        }
        char *bytes;
        size_t len;
        rc = file_read_all(p, COMPANION_LIMIT, &bytes, &len, err, errlen);
        if (rc == 0) {
            rc = ckpt_source_add_file(src, ckpt_companion_files[i], bytes,
                                      len, err, errlen);
            free(bytes);
        }
        free(p);
    }
    if (rc != 0)
        ckpt_source_free(src);
    return rc;
}

int ckpt_config_text(const llama_model *m, owl_dtype dtype,
                     const ckpt_source *src, char **text, size_t *len,
                     char *err, size_t errlen)
{
    if (!m || !m->w.base || !text || !len) {
        llama_set_err(err, errlen, "ckpt_config_text: a NULL argument or a model "
                "not created");
        return -1;
    }
    /* A model made by llama_create alone has no checkpoint context: its
     * sequence length is its context. */
    int context = m->context_len > 0 ? m->context_len : m->cfg.seq_len;
    const char *source = src ? src->config : NULL;
    return hf_config_text(source, source ? src->config_len : 0, &m->cfg,
                          context, dtype, text, len, err, errlen);
}

int ckpt_save_hf(const char *dir, const llama_model *m, owl_dtype dtype,
                 const ckpt_source *src, char *err, size_t errlen)
{
    if (!dir) {
        llama_set_err(err, errlen, "ckpt_save_hf: dir is NULL");
        return -1;
    }
    char *config;
    size_t config_len;
    /* The config first: a source that does not fit the model stops the
     * save before a large weight file is written. */
    if (ckpt_config_text(m, dtype, src, &config, &config_len, err, errlen))
        return -1;
    int rc = -1;
    char *p = join_path(dir, "model.safetensors");
    if (!p) {
        llama_set_err(err, errlen, "%s: out of memory", dir);
        goto done;
    }
    if (ckpt_save_safetensors(p, m, dtype, NULL, err, errlen) != 0)
        goto done;
    free(p);
    p = join_path(dir, "config.json");
    if (!p || st_write_file_atomic(p, config, config_len, err, errlen)) {
        if (!p)
            llama_set_err(err, errlen, "%s: out of memory", dir);
        goto done;
    }
    for (size_t i = 0; src && i < src->nfiles; i++) {
        free(p);
        p = join_path(dir, src->files[i].name);
        if (!p) {
            llama_set_err(err, errlen, "%s: out of memory", dir);
            goto done;
        }
        if (st_write_file_atomic(p, src->files[i].bytes, src->files[i].len,
                                 err, errlen) != 0)
            goto done;
    }
    rc = 0;
done:
    free(p);
    free(config);
    return rc;
}
