/* The LLaMa example model's parameters registered with owl_optimizer, the
 * way a trainer does it: per decoder layer the seven projection matrices
 * (low-rank path) and the two RMSNorm gains (full rank), then the
 * always-trained embeddings, final norm and LM head. Shared by the tests
 * and the benchmark of the example. */
#ifndef LLAMA_OWL_H
#define LLAMA_OWL_H

#include "llama.h"

#include <owlore/owlore.h>

/* Registers every parameter of m (weights m->w, gradients m->g) with opt.
 * OWL_OK or the first failing status (the message is in the context). */
owl_status llama_owl_register(owl_optimizer *opt, llama_model *m);

/* The backward pass's trainable set for an optimizer's mask: the masked
 * layers plus the always-trained tensors. */
llama_trainable llama_owl_trainable(const uint8_t *mask);

#endif /* LLAMA_OWL_H */
