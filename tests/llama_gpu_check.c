/* See llama_gpu_check.h. */
#include "llama_gpu_check.h"

#include "common/testutil.h"

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
