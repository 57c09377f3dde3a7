/*
 * quickstart: the whole OwLore loop on a toy problem, through the public
 * API only.
 *
 * A "model" of L layers, each one 64x48 weight, must move from its initial
 * value W0 to a target W0 + D where D is low rank (the situation GaLore
 * assumes in fine-tuning). The loss is 0.5 * sum_l ||W_l - target_l||^2,
 * so the gradient of layer l is W_l - target_l. Each step:
 *   1. the sampler says which layers train in this period (LOD-weighted),
 *   2. each active layer takes a fused GaLore + AdamW step,
 * and the program prints the loss as it falls.
 *
 * Before training, the LOD of each layer is computed from calibration
 * activations accumulated with owl_act_norm_accumulate.
 */
#include <owlore/owlore.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LAYERS 8
#define ROWS 64
#define COLS 48
#define RANK 8
#define STEPS 300

#define CHECK(ctx, call)                                                       \
    do {                                                                       \
        owl_status s_ = (call);                                                \
        if (s_ != OWL_OK) {                                                    \
            fprintf(stderr, "%s failed: %s: %s\n", #call,                      \
                    owl_status_name(s_), owl_context_last_error(ctx));         \
            exit(1);                                                           \
        }                                                                      \
    } while (0)

static uint64_t rng_state = 42;
static double uniform(void) /* [-1, 1) */
{
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (double)(rng_state >> 11) * (2.0 / 9007199254740992.0) - 1.0;
}

static double loss_of(float w[LAYERS][ROWS * COLS],
                      float target[LAYERS][ROWS * COLS])
{
    double loss = 0;
    for (int l = 0; l < LAYERS; l++)
        for (int i = 0; i < ROWS * COLS; i++) {
            double d = (double)w[l][i] - target[l][i];
            loss += 0.5 * d * d;
        }
    return loss;
}

int main(void)
{
    static float w[LAYERS][ROWS * COLS], target[LAYERS][ROWS * COLS];
    static float grad[ROWS * COLS];
    printf("libowlore %s quickstart: %d layers of %dx%d, rank %d\n",
           owl_version_string(), LAYERS, ROWS, COLS, RANK);

    owl_context *ctx = NULL;
    CHECK(ctx, owl_context_create(&ctx, NULL));

    /* Weights, and a rank-2 target shift per layer whose size grows with
     * depth, so some layers have more to learn than others. */
    for (int l = 0; l < LAYERS; l++) {
        float u[2][ROWS], v[2][COLS];
        for (int k = 0; k < 2; k++) {
            for (int i = 0; i < ROWS; i++) u[k][i] = (float)uniform();
            for (int j = 0; j < COLS; j++) v[k][j] = (float)uniform();
        }
        for (int i = 0; i < ROWS; i++)
            for (int j = 0; j < COLS; j++) {
                float w0 = (float)(0.1 * uniform());
                w[l][i * COLS + j] = w0;
                target[l][i * COLS + j] =
                    w0 + 0.05f * (1 + l) * (u[0][i] * v[0][j] + 0.5f * u[1][i] * v[1][j]);
            }
    }

    /* 1. LOD: accumulate input statistics from calibration activations in
     * which a few channels carry outliers, then the outlier ratio of each
     * layer (here each layer has one matrix). */
    double ratio[LAYERS];
    for (int l = 0; l < LAYERS; l++) {
        static float x[32 * COLS];
        double sumsq[COLS] = {0};
        owl_tensor xt, st, wt;
        owl_tensor_init(&st, sumsq, OWL_DTYPE_F64, 1, COLS);
        for (int batch = 0; batch < 4; batch++) {
            for (int t = 0; t < 32; t++)
                for (int j = 0; j < COLS; j++)
                    x[t * COLS + j] = (float)uniform() * (j % (LAYERS - l + 2) == 0 ? 20.f : 1.f);
            owl_tensor_init(&xt, x, OWL_DTYPE_F32, 32, COLS);
            CHECK(ctx, owl_act_norm_accumulate(ctx, &xt, &st));
        }
        owl_tensor_init(&wt, w[l], OWL_DTYPE_F32, ROWS, COLS);
        CHECK(ctx, owl_lod_compute(ctx, &wt, &st, 1, 5.0, &ratio[l]));
    }

    /* 2. Sampler: 2 of 8 layers per period of 10 steps, weights = LOD. */
    owl_sampler_options so;
    owl_sampler_options_init(&so, sizeof so);
    so.num_layers = LAYERS;
    so.gamma = 2;
    so.period = 10;
    so.seed = 7;
    so.weight_mode = OWL_WEIGHTS_OWLORE;
    so.weights = ratio;
    owl_sampler *sampler = NULL;
    CHECK(ctx, owl_sampler_create(ctx, &so, &sampler));
    double p[LAYERS], pi[LAYERS];
    CHECK(ctx, owl_sampler_probabilities(sampler, p, pi));
    printf("layer  outlier%%  p       inclusion\n");
    for (int l = 0; l < LAYERS; l++)
        printf("%5d  %8.4f  %.4f  %.4f\n", l, 100 * ratio[l], p[l], pi[l]);

    /* 3. One projector and one AdamW state per layer. */
    owl_galore *proj[LAYERS];
    owl_adamw *adam[LAYERS];
    for (int l = 0; l < LAYERS; l++) {
        owl_galore_options go;
        owl_galore_options_init(&go, sizeof go);
        go.rows = ROWS;
        go.cols = COLS;
        go.rank = RANK;
        go.update_gap = 20;
        go.scale = 1.0;
        CHECK(ctx, owl_galore_create(ctx, &go, &proj[l]));
        uint64_t r, c;
        CHECK(ctx, owl_galore_lowrank_shape(proj[l], &r, &c));
        owl_adamw_options ao;
        owl_adamw_options_init(&ao, sizeof ao);
        CHECK(ctx, owl_adamw_create(ctx, &ao, r, c, &adam[l]));
    }

    printf("step  loss        active layers\n");
    for (uint64_t step = 0; step <= STEPS; step++) {
        uint8_t mask[LAYERS];
        CHECK(ctx, owl_sampler_step(sampler, step, mask, NULL, NULL));
        if (step % 30 == 0) {
            printf("%4llu  %.6f  ", (unsigned long long)step, loss_of(w, target));
            for (int l = 0; l < LAYERS; l++)
                if (mask[l])
                    printf(" %d", l);
            printf("\n");
        }
        if (step == STEPS)
            break;
        for (int l = 0; l < LAYERS; l++) {
            if (!mask[l])
                continue; /* frozen this period: no gradient, no update */
            for (int i = 0; i < ROWS * COLS; i++)
                grad[i] = w[l][i] - target[l][i];
            owl_tensor wt, gt;
            owl_tensor_init(&wt, w[l], OWL_DTYPE_F32, ROWS, COLS);
            owl_tensor_init(&gt, grad, OWL_DTYPE_F32, ROWS, COLS);
            CHECK(ctx, owl_adamw_lowrank(adam[l], proj[l], &wt, &gt, 0.01));
        }
    }

    for (int l = 0; l < LAYERS; l++) {
        owl_adamw_free(adam[l]);
        owl_galore_free(proj[l]);
    }
    owl_sampler_free(sampler);
    owl_context_free(ctx);
    return 0;
}
