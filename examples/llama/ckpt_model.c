/* A model with its tokenizer and what a save carries, from any format the
 * trainer reads; a GGUF model's Hugging Face companion files. See
 * ckpt_model.h. */
#include "ckpt_model.h"
#include "errmsg.h"
#include "textbuf.h"

#include "hf_config.h"
#include "tok_gguf.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

void ckpt_extras_free(ckpt_extras *x)
{
    if (!x)
        return;
    ckpt_source_free(&x->source);
    tok_free(x->tok);
    memset(x, 0, sizeof *x);
}

/* ---- JSON text ------------------------------------------------------------ */

/* Whether s[0, n) is UTF-8 (shortest forms of scalar values), which a
 * JSON document must be. */
static int utf8_valid(const unsigned char *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        unsigned c = s[i];
        size_t k; /* continuation bytes */
        uint32_t cp;
        if (c < 0x80) {
            i++;
            continue;
        }
        if (c >= 0xC2 && c < 0xE0) {
            k = 1;
            cp = c & 0x1Fu;
        } else if (c >= 0xE0 && c < 0xF0) {
            k = 2;
            cp = c & 0x0Fu;
        } else if (c >= 0xF0 && c < 0xF5) {
            k = 3;
            cp = c & 0x07u;
        } else {
            return 0;
        }
        if (n - i <= k)
            return 0;
        for (size_t j = 1; j <= k; j++) {
            if ((s[i + j] & 0xC0) != 0x80)
                return 0;
            cp = cp << 6 | (s[i + j] & 0x3Fu);
        }
        if ((k == 2 && (cp < 0x800 || (cp >= 0xD800 && cp < 0xE000))) ||
            (k == 3 && (cp < 0x10000 || cp > 0x10FFFF)))
            return 0;
        i += k + 1;
    }
    return 1;
}

/* "key": "the text of token id", */
static void jtoken(textbuf *b, const char *key, const tokenizer *t, int32_t id)
{
    size_t len;
    const char *s = id >= 0 ? tok_token(t, id, &len) : NULL;
    if (!s)
        return;
    tb_puts(b, "  \"");
    tb_puts(b, key);
    tb_puts(b, "\": ");
    tb_json_string(b, s, len);
    tb_puts(b, ",\n");
}

/* The tokenizer_config.json that makes transformers' AutoTokenizer a
 * PreTrainedTokenizerFast over tokenizer.json as it is: without a
 * tokenizer_class it would pick the class of config.json's model_type
 * (LlamaTokenizerFast), whose add_bos_token default rewrites the
 * post-processor and adds a bos the tokenizer does not. */
static int tokenizer_config(const gguf_file *f, const tokenizer *t,
                            int context, char **out, size_t *len, char *err,
                            size_t errlen)
{
    textbuf b = {0};
    tb_puts(&b, "{\n  \"tokenizer_class\": \"PreTrainedTokenizerFast\",\n");
    jtoken(&b, "bos_token", t, tok_bos_id(t));
    jtoken(&b, "eos_token", t, tok_eos_id(t));
    jtoken(&b, "unk_token", t, tok_unk_id(t));
    jtoken(&b, "pad_token", t, tok_pad_id(t));
    gguf_str tmpl;
    if (gguf_get_str(f, "tokenizer.chat_template", &tmpl, NULL, 0) == 0 &&
        utf8_valid((const unsigned char *)tmpl.ptr, (size_t)tmpl.len)) {
        tb_puts(&b, "  \"chat_template\": ");
        tb_json_string(&b, tmpl.ptr, (size_t)tmpl.len);
        tb_puts(&b, ",\n");
    }
    char tail[128];
    snprintf(tail, sizeof tail, "  \"model_max_length\": %d,\n"
             "  \"clean_up_tokenization_spaces\": false\n}\n", context);
    tb_puts(&b, tail);
    if (b.oom) {
        free(b.s);
        return llama_fail(err, errlen, "tokenizer_config.json: out of memory");
    }
    *out = b.s;
    *len = b.len;
    return 0;
}

/* ---- a GGUF model's source -------------------------------------------------- */

int ckpt_source_from_gguf(const gguf_file *f, const llama_model *m,
                          const tokenizer *tok, ckpt_source *src, char *err,
                          size_t errlen)
{
    memset(src, 0, sizeof *src);
    if (!f || !m || !m->w.base)
        return llama_fail(err, errlen, "ckpt_source_from_gguf: no file or model");
    int32_t bos, eos;
    int context = m->context_len > 0 ? m->context_len : m->cfg.seq_len;
    const uint64_t vocab = (uint64_t)m->cfg.vocab_size;
    if (gguf_get_token_id(f, "tokenizer.ggml.bos_token_id", vocab, &bos, err,
                          errlen) ||
        gguf_get_token_id(f, "tokenizer.ggml.eos_token_id", vocab, &eos, err,
                          errlen))
        return -1;
    /* The weights' dtype is the save's: hf_config_text rewrites it. */
    if (hf_config_write(&m->cfg, context, OWL_DTYPE_F32, bos, eos,
                        &src->config, &src->config_len, err, errlen) != 0)
        return -1;
    if (!tok)
        return 0;
    char *text = NULL;
    size_t len;
    int rc = -1;
    if (tok_hf_json_text(tok, &text, &len, err, errlen) != 0 ||
        ckpt_source_add_file(src, "tokenizer.json", text, len, err,
                             errlen) != 0)
        goto done;
    free(text);
    text = NULL;
    if (tokenizer_config(f, tok, context, &text, &len, err, errlen) != 0 ||
        ckpt_source_add_file(src, "tokenizer_config.json", text, len, err,
                             errlen) != 0)
        goto done;
    rc = 0;
done:
    free(text);
    if (rc != 0)
        ckpt_source_free(src);
    return rc;
}

/* ---- loading ---------------------------------------------------------------- */

static int load_gguf(const char *path, llama_model *m, int max_batch,
                     int max_seq, ckpt_extras *x, char *err, size_t errlen)
{
    gguf_file f;
    if (gguf_open(&f, path, err, errlen) != 0)
        return -1;
    if (gguf_load_llama(&f, m, max_batch, max_seq, err, errlen) != 0) {
        gguf_close(&f);
        return -1;
    }
    char terr[512];
    int rc = tok_from_gguf(&f, &x->tok, terr, sizeof terr);
    if (rc == 0)
        snprintf(x->tok_from, sizeof x->tok_from, "the GGUF metadata");
    else if (rc < 0)
        snprintf(x->tok_error, sizeof x->tok_error, "%s", terr);
    if (ckpt_source_from_gguf(&f, m, x->tok, &x->source, err, errlen) != 0) {
        gguf_close(&f);
        ckpt_extras_free(x);
        llama_destroy(m);
        return -1;
    }
    gguf_close(&f);
    return 0;
}

static const ckpt_file *source_file(const ckpt_source *s, const char *name)
{
    for (size_t i = 0; i < s->nfiles; i++)
        if (strcmp(s->files[i].name, name) == 0)
            return &s->files[i];
    return NULL;
}

/* The tokenizer of a directory: its tokenizer.json. Another tokenizer
 * file alone (SentencePiece's tokenizer.model, GPT-2's vocab.json and
 * merges.txt) is a tokenizer this code does not read. */
static void dir_tokenizer(const char *dir, ckpt_extras *x)
{
    const ckpt_file *j = source_file(&x->source, "tokenizer.json");
    if (j) {
        char terr[400];
        if (tok_load_hf_json_mem(j->bytes, j->len, &x->tok, terr,
                                 sizeof terr) == 0)
            snprintf(x->tok_from, sizeof x->tok_from, "tokenizer.json");
        else
            snprintf(x->tok_error, sizeof x->tok_error, "%s/tokenizer.json: "
                     "%s", dir, terr);
        return;
    }
    static const char *const others[] = {"tokenizer.model", "vocab.json"};
    for (size_t i = 0; i < 2; i++)
        if (source_file(&x->source, others[i])) {
            snprintf(x->tok_error, sizeof x->tok_error, "%s has %s but no "
                     "tokenizer.json, the only tokenizer file read here",
                     dir, others[i]);
            return;
        }
}

int ckpt_load_model(const char *path, llama_model *m, int max_batch,
                    int max_seq, ckpt_extras *x, char *err, size_t errlen)
{
    memset(x, 0, sizeof *x);
    if (!path)
        return llama_fail(err, errlen, "ckpt_load_model: no path");
    struct stat st;
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
        if (ckpt_load_hf(path, m, max_batch, max_seq, err, errlen) != 0)
            return -1;
        /* Read now: a save may replace this very directory. */
        if (ckpt_source_read(path, &x->source, err, errlen) != 0) {
            llama_destroy(m);
            return -1;
        }
        dir_tokenizer(path, x);
        return 0;
    }
    if (gguf_is_gguf_path(path))
        return load_gguf(path, m, max_batch, max_seq, x, err, errlen);
    return ckpt_load_llama2c(path, m, max_batch, max_seq, err, errlen);
}
