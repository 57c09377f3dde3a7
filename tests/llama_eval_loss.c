/* Prints the example model's loss on fixed ids, for the reference
 * scripts that compare it with another implementation's:
 *   llama_eval_loss MODEL_DIR IDS_FILE
 * loads the Hugging Face directory with ckpt_load_hf, reads IDS_FILE
 * (little-endian uint16 ids, at least 2) and prints, with 9 significant
 * digits, the mean cross-entropy of predicting ids[1..n-1] from
 * ids[0..n-2] as one sequence. */
#include "checkpoint.h"
#include "data.h"

#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: %s MODEL_DIR IDS_FILE\n", argv[0]);
        return 2;
    }
    char err[1024];
    data_ids ids;
    if (data_load_ids(argv[2], 16, &ids, err, sizeof err) != 0 ||
        ids.n < 2) {
        fprintf(stderr, "%s\n", ids.n < 2 ? "fewer than 2 ids" : err);
        return 1;
    }
    int T = (int)ids.n - 1;
    llama_model m;
    if (ckpt_load_hf(argv[1], &m, 1, T, err, sizeof err) != 0) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    if (m.cfg.seq_len < T) {
        fprintf(stderr, "%d ids are more than the context of %d\n", T + 1,
                m.cfg.seq_len);
        return 1;
    }
    float loss = llama_forward(&m, ids.ids, ids.ids + 1, 1, T, NULL, NULL);
    printf("%.9g\n", (double)loss);
    llama_destroy(&m);
    data_free(&ids);
    return 0;
}
