/* Prints the example model's loss on fixed ids, for the reference
 * scripts that compare it with another implementation's:
 *   llama_eval_loss MODEL IDS_FILE
 *   llama_eval_loss MODEL --text TEXT_FILE IDS_OUT
 * loads MODEL (a Hugging Face directory, a GGUF file or a llama2.c file,
 * with ckpt_load_model) and prints, with 9 significant digits, the mean
 * cross-entropy of predicting ids[1..n-1] from ids[0..n-2] as one
 * sequence. The ids are IDS_FILE's (little-endian uint16, at least 2), or
 * with --text those of TEXT_FILE encoded by the model's own tokenizer
 * (as the trainer's --data does), written to IDS_OUT as little-endian
 * int32 for the script to compare. */
#include "ckpt_model.h"
#include "data.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int write_ids(const char *path, const data_ids *d)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    int ok = 1;
    for (size_t i = 0; i < d->n && ok; i++) {
        uint32_t v = (uint32_t)d->ids[i];
        unsigned char b[4] = {(unsigned char)v, (unsigned char)(v >> 8),
                              (unsigned char)(v >> 16),
                              (unsigned char)(v >> 24)};
        ok = fwrite(b, 1, 4, f) == 4;
    }
    return fclose(f) == 0 && ok ? 0 : -1;
}

int main(int argc, char **argv)
{
    int text = argc == 5 && strcmp(argv[2], "--text") == 0;
    if (argc != 3 && !text) {
        fprintf(stderr, "usage: %s MODEL IDS_FILE\n"
                        "       %s MODEL --text TEXT_FILE IDS_OUT\n",
                argv[0], argv[0]);
        return 2;
    }
    char err[1024];
    data_ids ids = {0};
    llama_model m;
    ckpt_extras x;
    if (!text && (data_load_ids(argv[2], 16, &ids, err, sizeof err) != 0 ||
                  ids.n < 2)) {
        fprintf(stderr, "%s\n", ids.n ? "fewer than 2 ids" : err);
        return 1;
    }
    /* Sized for the ids: with --text their count is known only after the
     * tokenizer, which comes with the model, so load for its context and
     * tokenize first. */
    int max_seq = text ? 0 : (int)ids.n - 1;
    if (ckpt_load_model(argv[1], &m, 1, text ? 1 : max_seq, &x, err,
                        sizeof err) != 0) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    if (text) {
        if (!x.tok) {
            fprintf(stderr, "%s: %s\n", argv[1],
                    x.tok_error[0] ? x.tok_error : "no tokenizer");
            return 1;
        }
        if (data_load_tokenized(argv[3], x.tok, &ids, NULL, NULL, err,
                                sizeof err) != 0 ||
            write_ids(argv[4], &ids) != 0) {
            fprintf(stderr, "%s\n", ids.n ? "cannot write the ids" : err);
            return 1;
        }
        if (ids.n < 2) {
            fprintf(stderr, "%s: fewer than 2 tokens\n", argv[3]);
            return 1;
        }
        /* Now the model for that many tokens. */
        llama_destroy(&m);
        ckpt_extras_free(&x);
        if (ckpt_load_model(argv[1], &m, 1, (int)ids.n - 1, &x, err,
                            sizeof err) != 0) {
            fprintf(stderr, "%s\n", err);
            return 1;
        }
    }
    int T = (int)ids.n - 1;
    if (m.cfg.seq_len < T) {
        fprintf(stderr, "%d ids are more than the context of %d\n", T + 1,
                m.cfg.seq_len);
        return 1;
    }
    float loss = llama_forward(&m, ids.ids, ids.ids + 1, 1, T, NULL, NULL);
    printf("%.9g\n", (double)loss);
    llama_destroy(&m);
    ckpt_extras_free(&x);
    data_free(&ids);
    return 0;
}
