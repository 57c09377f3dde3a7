#include "llama_owl.h"

static owl_status add(owl_optimizer *opt, uint64_t layer, float *w, float *g,
                      int64_t rows, int64_t cols, int32_t lowrank)
{
    owl_tensor tw, tg;
    owl_tensor_init(&tw, w, OWL_DTYPE_F32, rows, cols);
    owl_tensor_init(&tg, g, OWL_DTYPE_F32, rows, cols);
    return owl_optimizer_add_param(opt, layer, &tw, &tg, lowrank, NULL);
}

owl_status llama_owl_register(owl_optimizer *opt, llama_model *m)
{
    const llama_config *c = &m->cfg;
    int64_t dim = c->dim, hid = c->hidden_dim, vocab = c->vocab_size;
    int64_t qdim = (int64_t)m->head_dim * c->n_heads;
    int64_t kvdim = (int64_t)m->head_dim * c->n_kv_heads;
    owl_status s = OWL_OK;
    for (int l = 0; l < c->n_layers && s == OWL_OK; l++) {
        llama_layer *w = &m->w.layers[l], *g = &m->g.layers[l];
        uint64_t L = (uint64_t)l;
        struct { float *w, *g; int64_t rows, cols; int32_t low; } p[] = {
            {w->wq, g->wq, qdim, dim, 1},
            {w->wk, g->wk, kvdim, dim, 1},
            {w->wv, g->wv, kvdim, dim, 1},
            {w->wo, g->wo, dim, qdim, 1},
            {w->w_gate, g->w_gate, hid, dim, 1},
            {w->w_up, g->w_up, hid, dim, 1},
            {w->w_down, g->w_down, dim, hid, 1},
            {w->rms_att, g->rms_att, 1, dim, 0},
            {w->rms_ffn, g->rms_ffn, 1, dim, 0},
        };
        for (size_t i = 0; i < sizeof p / sizeof p[0] && s == OWL_OK; i++)
            s = add(opt, L, p[i].w, p[i].g, p[i].rows, p[i].cols, p[i].low);
    }
    if (s == OWL_OK)
        s = add(opt, OWL_LAYER_ALWAYS, m->w.embed, m->g.embed, vocab, dim, 0);
    if (s == OWL_OK)
        s = add(opt, OWL_LAYER_ALWAYS, m->w.rms_final, m->g.rms_final, 1, dim, 0);
    /* A tied head is the embedding matrix, registered once above. */
    if (s == OWL_OK && !c->tied)
        s = add(opt, OWL_LAYER_ALWAYS, m->w.head, m->g.head, vocab, dim, 0);
    return s;
}

llama_trainable llama_owl_trainable(const uint8_t *mask)
{
    llama_trainable tr = {mask, 1, 1};
    return tr;
}
