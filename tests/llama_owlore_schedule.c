/*
 * Prints the library's layer schedule, so that the PyTorch reference of
 * the OwLore steps (ref/gen_llama_owlore.py, which runs this program)
 * trains exactly the layers owl_optimizer will sample. The optimizer's
 * masks are owl_sampler_step's for the same options (docs/optimizer.md);
 * tests/test_llama_owlore.c checks that they are equal step by step.
 *
 * Usage: llama_owlore_schedule STEPS GAMMA PERIOD SEED W_0 ... W_{L-1}
 * The weights are the layers' outlier ratios (OWL_WEIGHTS_OWLORE) and the
 * draw law is the default (systematic). Output: one line per step, the
 * mask as L digits ("010").
 */
#include <owlore/owlore.h>

#include <stdio.h>
#include <stdlib.h>

enum { MAX_LAYERS = 64 };

int main(int argc, char **argv)
{
    if (argc < 6 || argc - 5 > MAX_LAYERS) {
        fprintf(stderr, "usage: %s STEPS GAMMA PERIOD SEED W_0 ... W_{L-1}\n",
                argv[0]);
        return 2;
    }
    uint64_t steps = strtoull(argv[1], NULL, 10);
    uint64_t num_layers = (uint64_t)(argc - 5);
    double weights[MAX_LAYERS];
    for (uint64_t l = 0; l < num_layers; l++)
        weights[l] = strtod(argv[5 + l], NULL);

    owl_context *ctx = NULL;
    owl_sampler *sampler = NULL;
    owl_sampler_options so;
    owl_sampler_options_init(&so, sizeof so);
    so.num_layers = num_layers;
    so.gamma = strtoull(argv[2], NULL, 10);
    so.period = strtoull(argv[3], NULL, 10);
    so.seed = strtoull(argv[4], NULL, 10);
    so.weight_mode = OWL_WEIGHTS_OWLORE;
    so.weights = weights;
    if (owl_context_create(&ctx, NULL) != OWL_OK ||
        owl_sampler_create(ctx, &so, &sampler) != OWL_OK) {
        fprintf(stderr, "sampler: %s\n",
                ctx ? owl_context_last_error(ctx) : "no context");
        owl_context_free(ctx);
        return 1;
    }
    int rc = 0;
    for (uint64_t t = 0; t < steps && rc == 0; t++) {
        uint8_t mask[MAX_LAYERS];
        if (owl_sampler_step(sampler, t, mask, NULL, NULL) != OWL_OK) {
            fprintf(stderr, "step %llu: %s\n", (unsigned long long)t,
                    owl_context_last_error(ctx));
            rc = 1;
            break;
        }
        for (uint64_t l = 0; l < num_layers; l++)
            putchar(mask[l] ? '1' : '0');
        putchar('\n');
    }
    owl_sampler_free(sampler);
    owl_context_free(ctx);
    return rc;
}
