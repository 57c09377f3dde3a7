/* See llama_gpu_check.h. */
#include "llama_gpu_check.h"

#include "common/testutil.h"
#include "data.h"
#include "llama_owl.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

float lgc_round_bf16(float x)
{
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    u += 0x7fffu + ((u >> 16) & 1u);
    u &= 0xffff0000u;
    float y;
    memcpy(&y, &u, sizeof y);
    return y;
}

double lgc_rel_frobenius(const float *a, const float *b, size_t n)
{
    double num = 0.0, den = 0.0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)a[i] - b[i];
        num += d * d;
        den += (double)b[i] * b[i];
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

static float bf16_value(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* The CPU model's gradient of device tensor i (same order: embedding,
 * each layer's nine, final norm, untied head). */
static const float *cpu_grad(const llama_model *m, int64_t i)
{
    int L = m->cfg.n_layers;
    if (i == 0)
        return m->g.embed;
    if (i <= 9 * (int64_t)L) {
        const llama_layer *g = &m->g.layers[(i - 1) / 9];
        const float *t[9] = {g->rms_att, g->wq, g->wk, g->wv, g->wo,
                             g->rms_ffn, g->w_gate, g->w_up, g->w_down};
        return t[(i - 1) % 9];
    }
    return i == 9 * (int64_t)L + 1 ? m->g.rms_final : m->g.head;
}

/* Whether the CPU model's backward pass writes tensor i's gradient. */
static int cpu_trains(const lgc_case *c, int64_t i)
{
    int L = c->cfg.n_layers;
    if (i == 0)
        return c->train_embeddings || (c->cfg.tied && c->train_head);
    if (i <= 9 * (int64_t)L)
        return !c->mask || c->mask[(i - 1) / 9];
    return c->train_head;
}

static uint64_t next(uint64_t *s)
{
    *s = *s * 6364136223846793005ULL + 1442695040888963407ULL;
    return *s >> 33;
}

void lgc_run(const lgc_case *c, lgc_read_fn read, lgc_result *r)
{
    char err[512];
    int L = c->cfg.n_layers, n = c->B * c->T, V = c->cfg.vocab_size;
    memset(r, 0, sizeof *r);

    /* The CPU model, its weights rounded to bf16 so that both sides start
     * from the same values: the comparison measures the device path's
     * arithmetic, not the rounding of the upload. */
    llama_model cpu;
    if (llama_create(&cpu, &c->cfg, c->B, err, sizeof err) != 0)
        fail_msg("llama_create: %s", err);
    llama_init_random(&cpu, c->seed, c->std);
    for (size_t i = 0; i < cpu.w.count; i++)
        cpu.w.base[i] = lgc_round_bf16(cpu.w.base[i]);

    /* Tokens, and targets with every 7th position ignored (-1). */
    int32_t *tok = malloc((size_t)n * sizeof *tok);
    int32_t *tgt = malloc((size_t)n * sizeof *tgt);
    uint8_t *all = malloc((size_t)L);
    assert_non_null(tok);
    assert_non_null(tgt);
    assert_non_null(all);
    uint64_t s = c->seed ^ 0x746f6b656e73ULL;
    for (int i = 0; i < n; i++) {
        tok[i] = (int32_t)(next(&s) % (uint64_t)V);
        tgt[i] = i % 7 == 3 ? -1 : (int32_t)(next(&s) % (uint64_t)V);
    }
    memset(all, 1, (size_t)L);

    llama_gpu_options o;
    llama_gpu_options_default(&o, &c->cfg);
    o.max_batch = c->B;
    o.max_trainable_layers = c->pool;
    o.train_embeddings = c->train_embeddings;
    o.train_head = c->train_head;
    o.recompute = c->recompute;
    llama_gpu *g = NULL;
    if (llama_gpu_create(&g, &c->cfg, &o, err, sizeof err) != 0)
        fail_msg("llama_gpu_create: %s", err);
    if (llama_gpu_upload(g, &cpu.w) != 0 ||
        llama_gpu_set_trainable(g, c->mask ? c->mask : all) != 0 ||
        llama_gpu_forward(g, tok, tgt, c->B, c->T, &r->loss_gpu) != 0 ||
        llama_gpu_backward(g) != 0)
        fail_msg("device model: %s", llama_gpu_error(g));

    r->loss_cpu = llama_forward(&cpu, tok, tgt, c->B, c->T, NULL, NULL);
    llama_trainable tr = {c->mask, c->train_embeddings, c->train_head};
    llama_backward(&cpu, &tr);

    r->num_tensors = llama_gpu_num_tensors(g);
    assert_true(r->num_tensors <= LGC_MAX_TENSORS);
    size_t total = 0;
    for (int64_t i = 0; i < r->num_tensors; i++) {
        llama_gpu_tensor t;
        assert_int_equal(llama_gpu_tensor_get(g, i, &t), 0);
        total += (size_t)(t.rows * t.cols);
    }
    r->grads = calloc(total, sizeof *r->grads);
    uint16_t *stage = malloc(total * sizeof *stage);
    assert_non_null(r->grads);
    assert_non_null(stage);
    size_t at = 0;
    for (int64_t i = 0; i < r->num_tensors; i++) {
        llama_gpu_tensor t;
        assert_int_equal(llama_gpu_tensor_get(g, i, &t), 0);
        size_t cnt = (size_t)(t.rows * t.cols);
        snprintf(r->name[i], sizeof r->name[i], "%s", t.name);
        r->offset[i] = at;
        r->count[i] = cnt;
        r->has_grad[i] = t.grad.data != NULL;
        r->expect_grad[i] = cpu_trains(c, i);
        r->rel_err[i] = NAN;
        if (r->has_grad[i]) {
            assert_int_equal(t.grad.dtype, OWL_DTYPE_BF16);
            read(stage, t.grad.data, cnt * sizeof *stage);
            const float *ref = cpu_grad(&cpu, i);
            double num = 0.0, den = 0.0;
            for (size_t j = 0; j < cnt; j++) {
                float v = bf16_value(stage[j]);
                r->grads[at + j] = v;
                double d = (double)v - ref[j];
                num += d * d;
                den += (double)ref[j] * ref[j];
            }
            r->rel_err[i] = den > 0 ? sqrt(num / den) : sqrt(num);
        }
        at += cnt;
    }
    r->grads_count = total;
    free(stage);
    free(tok);
    free(tgt);
    free(all);
    llama_gpu_destroy(g);
    llama_destroy(&cpu);
}

void lgc_check(const lgc_result *r, double tol_loss, double tol_grad)
{
    double rl = fabs(r->loss_gpu - r->loss_cpu) / fabs(r->loss_cpu);
    printf("  loss: device %.6f, cpu %.6f (rel %.2e)\n", r->loss_gpu,
           r->loss_cpu, rl);
    if (!(rl <= tol_loss))
        fail_msg("loss: relative error %.3e > %.1e", rl, tol_loss);
    double worst = 0.0;
    int64_t worst_i = 0;
    for (int64_t i = 0; i < r->num_tensors; i++) {
        if (r->expect_grad[i] != r->has_grad[i])
            fail_msg("%s: device gradient buffer %s, the CPU model %s it",
                     r->name[i], r->has_grad[i] ? "present" : "absent",
                     r->expect_grad[i] ? "trains" : "does not train");
        if (!r->has_grad[i])
            continue;
        if (!(r->rel_err[i] <= tol_grad))
            fail_msg("%s: relative error %.3e > %.1e", r->name[i],
                     r->rel_err[i], tol_grad);
        if (r->rel_err[i] > worst) {
            worst = r->rel_err[i];
            worst_i = i;
        }
    }
    printf("  worst gradient error %.2e (%s) over %lld tensors\n", worst,
           r->name[worst_i], (long long)r->num_tensors);
}

/* ------------------------------------------------------------------ */
/* OwLore steps on the device model and on the CPU model               */
/* ------------------------------------------------------------------ */

static const double lod_weights[8] = {1.0, 3.0, 2.0, 0.5, 1.5, 2.5, 1.0, 2.0};

static owl_optimizer *make_optimizer(owl_context *ctx,
                                     const lgc_train_case *tc,
                                     owl_optimizer_options *oo,
                                     owl_sampler_options *so,
                                     owl_galore_options *go,
                                     owl_adamw_options *ao, int bf16_weights)
{
    assert_owl_ok(ctx, owl_sampler_options_init(so, sizeof *so));
    assert_owl_ok(ctx, owl_galore_options_init(go, sizeof *go));
    assert_owl_ok(ctx, owl_adamw_options_init(ao, sizeof *ao));
    assert_owl_ok(ctx, owl_optimizer_options_init(oo, sizeof *oo));
    so->gamma = (uint64_t)tc->gamma;
    so->period = (uint64_t)tc->period;
    so->seed = 7;
    so->weight_mode = OWL_WEIGHTS_OWLORE;
    so->weights = lod_weights;
    go->rank = 8;
    go->update_gap = 10;
    go->scale = 0.25;
    if (bf16_weights) {
        ao->rounding = OWL_ROUND_STOCHASTIC;
        ao->seed = 7;
    }
    oo->method = OWL_METHOD_OWLORE;
    oo->frozen_policy = OWL_FROZEN_OFFLOAD; /* CPU: as KEEP */
    oo->num_layers = (uint64_t)tc->layers;
    oo->sampler = so;
    oo->galore = go;
    oo->adamw = ao;
    oo->max_grad_norm = 1.0;
    owl_optimizer *opt = NULL;
    assert_owl_ok(ctx, owl_optimizer_create(ctx, oo, &opt));
    return opt;
}

void lgc_train(owl_context *dctx, owl_context *cctx, const lgc_train_case *tc,
               lgc_train_result *res)
{
    char err[512];
    memset(res, 0, sizeof *res);
    int L = tc->layers, B = tc->B, T = tc->T, S = tc->steps;
    assert_true(L >= 1 && L <= 8 && S >= 1 && S <= LGC_MAX_STEPS);
    llama_config cfg = {.dim = tc->dim, .hidden_dim = tc->hidden,
                        .n_layers = L, .n_heads = tc->heads,
                        .n_kv_heads = tc->kv_heads, .vocab_size = 256,
                        .seq_len = T, .rope_theta = 10000.0f,
                        .norm_eps = 1e-5f, .tied = 0};

    /* CPU: the f32 model on bf16-rounded weights. */
    llama_model cpu;
    if (llama_create(&cpu, &cfg, B, err, sizeof err) != 0)
        fail_msg("llama_create: %s", err);
    llama_init_random(&cpu, 3, 0.05f);
    for (size_t i = 0; i < cpu.w.count; i++)
        cpu.w.base[i] = lgc_round_bf16(cpu.w.base[i]);
    owl_optimizer_options coo, doo;
    owl_sampler_options cso, dso;
    owl_galore_options cgo, dgo;
    owl_adamw_options cao, dao;
    owl_optimizer *copt = make_optimizer(cctx, tc, &coo, &cso, &cgo, &cao, 0);
    assert_owl_ok(cctx, llama_owl_register(copt, &cpu));

    /* Device: a pool of gamma layers, the optimizer's context on the
     * model's stream. */
    llama_gpu_options go;
    llama_gpu_options_default(&go, &cfg);
    go.max_batch = B;
    go.max_trainable_layers = tc->gamma;
    llama_gpu *g = NULL;
    if (llama_gpu_create(&g, &cfg, &go, err, sizeof err) != 0)
        fail_msg("llama_gpu_create: %s", err);
    if (llama_gpu_upload(g, &cpu.w) != 0)
        fail_msg("llama_gpu_upload: %s", llama_gpu_error(g));
    if (owl_context_backend(dctx) == OWL_BACKEND_CUDA)
        assert_owl_ok(dctx, owl_context_set_stream(dctx, llama_gpu_stream(g)));
    owl_optimizer *dopt = make_optimizer(dctx, tc, &doo, &dso, &dgo, &dao, 1);
    if (llama_gpu_register(g, dopt) != 0)
        fail_msg("llama_gpu_register: %s (%s)", llama_gpu_error(g),
                 owl_context_last_error(dctx));

    data_ids text;
    if (data_synthetic(5, DATA_SYNTH_BASE, 200000, &text, err, sizeof err))
        fail_msg("data_synthetic: %s", err);
    int32_t *in = malloc((size_t)B * T * sizeof *in);
    int32_t *tg = malloc((size_t)B * T * sizeof *tg);
    assert_non_null(in);
    assert_non_null(tg);
    uint8_t cmask[8], dmask[8], prev[8] = {0};
    assert_owl_ok(dctx, owl_memory_usage_init(&res->peak, sizeof res->peak));
    for (int step = 0; step < S; step++) {
        if (data_batch(&text, B, T, 5, (uint64_t)step, in, tg, err,
                       sizeof err) != 0)
            fail_msg("data_batch: %s", err);
        assert_owl_ok(cctx, owl_optimizer_active_layers(copt, cmask,
                                                        (uint64_t)L, NULL));
        assert_owl_ok(dctx, owl_optimizer_active_layers(dopt, dmask,
                                                        (uint64_t)L, NULL));
        assert_memory_equal(cmask, dmask, (size_t)L);
        for (int l = 0; l < L; l++)
            res->offloaded |= prev[l] && !dmask[l];
        memcpy(prev, dmask, (size_t)L);

        double ld;
        if (llama_gpu_set_trainable(g, dmask) != 0 ||
            llama_gpu_bind_grads(g, dopt) != 0 ||
            llama_gpu_forward(g, in, tg, B, T, &ld) != 0 ||
            llama_gpu_backward(g) != 0)
            fail_msg("step %d: %s (%s)", step, llama_gpu_error(g),
                     owl_context_last_error(dctx));
        assert_owl_ok(dctx, owl_optimizer_step(dopt, tc->lr));

        double lc = llama_forward(&cpu, in, tg, B, T, NULL, NULL);
        llama_trainable tr = llama_owl_trainable(cmask);
        llama_backward(&cpu, &tr);
        assert_owl_ok(cctx, owl_optimizer_step(copt, tc->lr));

        printf("  step %2d: layers ", step + 1);
        for (int l = 0; l < L; l++)
            printf("%d", dmask[l]);
        printf("  loss device %.4f  cpu %.4f\n", ld, lc);
        res->loss_dev[step] = ld;
        res->loss_cpu[step] = lc;
        if (!(fabs(ld - lc) <= tc->tol))
            fail_msg("step %d: loss %.5f on the device, %.5f on the CPU",
                     step, ld, lc);

        /* Frozen layers hold no gradient buffer. */
        for (int64_t i = 0; i < llama_gpu_num_tensors(g); i++) {
            llama_gpu_tensor t;
            assert_int_equal(llama_gpu_tensor_get(g, i, &t), 0);
            if (t.layer >= 0)
                assert_int_equal(t.grad.data != NULL, dmask[t.layer]);
        }
        owl_memory_usage u;
        assert_owl_ok(dctx, owl_memory_usage_init(&u, sizeof u));
        assert_owl_ok(dctx, owl_optimizer_memory(dopt, &u));
#define PEAK(f) res->peak.f = u.f > res->peak.f ? u.f : res->peak.f
        PEAK(device_moments);
        PEAK(device_projectors);
        PEAK(device_workspace);
        PEAK(host_moments);
        PEAK(host_projectors);
#undef PEAK
    }
    /* Both runs learn: the first batch's loss, again after the last step,
     * is lower by more than min_drop on both sides (the agreement is not
     * that of two stalled runs), and the two still agree. */
    if (data_batch(&text, B, T, 5, 0, in, tg, err, sizeof err) != 0)
        fail_msg("data_batch: %s", err);
    if (llama_gpu_forward(g, in, tg, B, T, &res->final_dev) != 0)
        fail_msg("final forward: %s", llama_gpu_error(g));
    res->final_cpu = llama_forward(&cpu, in, tg, B, T, NULL, NULL);
    printf("  first batch after %d steps: device %.4f, cpu %.4f (from %.4f, "
           "%.4f)\n", S, res->final_dev, res->final_cpu, res->loss_dev[0],
           res->loss_cpu[0]);
    if (!(res->loss_dev[0] - res->final_dev > tc->min_drop &&
          res->loss_cpu[0] - res->final_cpu > tc->min_drop))
        fail_msg("the first batch's loss went from %.4f to %.4f (device), "
                 "%.4f to %.4f (CPU)", res->loss_dev[0], res->final_dev,
                 res->loss_cpu[0], res->final_cpu);
    if (!(fabs(res->final_dev - res->final_cpu) <= tc->tol))
        fail_msg("after training: loss %.5f on the device, %.5f on the CPU",
                 res->final_dev, res->final_cpu);

    /* The gradient bytes are those of gamma layers and the always-trained
     * tensors: what the planner predicts for this shape and options. */
    owl_model_shape shape;
    assert_owl_ok(dctx, owl_model_shape_init(&shape, sizeof shape));
    assert_owl_ok(dctx, owl_memory_plan_init(&res->plan, sizeof res->plan));
    shape.num_layers = (uint64_t)L;
    shape.hidden = (uint64_t)cfg.dim;
    shape.intermediate = (uint64_t)cfg.hidden_dim;
    shape.heads = (uint64_t)cfg.n_heads;
    shape.kv_heads = (uint64_t)cfg.n_kv_heads;
    shape.vocab = (uint64_t)cfg.vocab_size;
    shape.tied_embeddings = cfg.tied;
    assert_owl_ok(dctx, owl_memory_plan_compute(dctx, &shape, &doo,
                                                &res->plan));
    llama_gpu_memory_get(g, &res->mem);
    assert_int_equal(res->mem.grads, res->plan.gradients);
    assert_int_equal(res->mem.weights, res->plan.weights);

    free(in);
    free(tg);
    data_free(&text);
    owl_optimizer_free(dopt);
    owl_optimizer_free(copt);
    llama_gpu_destroy(g);
    llama_destroy(&cpu);
}

lgc_case lgc_base_case(int tied, int dim, int hidden, int vocab, int T)
{
    lgc_case c = {0};
    llama_config cfg = {.dim = dim, .hidden_dim = hidden, .n_layers = 4,
                        .n_heads = 4, .n_kv_heads = 2, .vocab_size = vocab,
                        .seq_len = T, .rope_theta = 10000.0f,
                        .norm_eps = 1e-5f, .tied = tied};
    c.cfg = cfg;
    c.B = 2;
    c.T = T;
    c.train_embeddings = 1;
    c.train_head = 1;
    c.pool = cfg.n_layers;
    c.seed = 11;
    c.std = 0.05f;
    return c;
}
