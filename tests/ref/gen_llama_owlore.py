"""Reference for ten OwLore steps of the LLaMa example model.

Usage: gen_llama_owlore.py OUT.ref HF_DIR SCHEDULE_PROGRAM

The model is gen_llama.py's small grouped-query LLaMa (its code is reused:
weights, forward pass, checkpoint writer), with fresh seeded f32 weights
written as a Hugging Face checkpoint to HF_DIR, which the C test
(tests/test_llama_owlore.c) loads with ckpt_load_hf and trains with
owl_optimizer, method OWLORE.

The layer schedule: the library's sampler draws the active layers from
its own counter-based generator, which is not rewritten here; the script
runs SCHEDULE_PROGRAM (tests/llama_owlore_schedule.c, a few lines over
owl_sampler_step) with the settings below and trains exactly the layers
it prints. The C test checks that owl_optimizer_active_layers gives the
same masks. The script refuses a schedule that does not resample to a
different layer and bring a frozen layer back, so both the period
boundary and the kept state of a re-activated layer (OWL_FROZEN_KEEP) are
exercised.

Each step, in float64 autograd from the float32 weights: gradients for the
active layers' tensors and the always-trained ones (embeddings, final
norm, LM head) only, then
  - the seven projection matrices of an active layer: GaLore AdamW of spec
    sections 3-4 (gen_adamw.py's building blocks: exact SVD, top-r with
    canonical signs, projection side by the std rule, refresh before the
    parameter's own updates 1, T+1, ..., moments kept across refreshes and
    across frozen periods, scale alpha on the way back, decay after);
  - the layer's two RMSNorm gains, the embeddings, the final norm and the
    LM head: full-rank AdamW with the same GALORE semantics (eps on the
    un-corrected sqrt(v), decay after the update).
The bias-correction step and the refresh counter of each parameter count
its own updates. Weights are stored back as float32 after each step, as
the library stores them. No clipping.
"""
import os
import subprocess
import sys

import numpy as np
import torch

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from refdata import RefWriter  # noqa: E402
import gen_llama as gl  # noqa: E402
from gen_adamw import (adam_moments, canonical_basis,  # noqa: E402
                       galore_direction, is_left)

STEPS = 10
GAMMA, PERIOD, SEED = 1, 3, 7
LOD = [0.012, 0.031, 0.020]          # fixed outlier ratios, one per layer
RANK, GAP, SCALE = 4, 2, 0.25
EPS, WD = 1e-6, 0.01
LR = 4e-3
BATCH, SEQ = 2, 32
PROJ_KEYS = ["wq", "wk", "wv", "wo", "w_gate", "w_up", "w_down"]
NORM_KEYS = ["rms_att", "rms_ffn"]


def schedule(program):
    args = [program, str(STEPS), str(GAMMA), str(PERIOD), str(SEED)]
    args += [repr(x) for x in LOD]
    lines = subprocess.run(args, check=True, capture_output=True,
                           text=True).stdout.split()
    masks = [[int(ch) for ch in line] for line in lines]
    if len(masks) != STEPS or any(len(m) != gl.CFG["n_layers"] for m in masks):
        raise SystemExit(f"schedule program printed {lines}")
    # A layer active, then frozen, then active again: the resumed state is
    # tested. Some period must also draw a different layer set.
    L = gl.CFG["n_layers"]
    comeback = any(
        masks[a][l] and not masks[b][l] and masks[c][l]
        for l in range(L) for a in range(STEPS) for b in range(a + 1, STEPS)
        for c in range(b + 1, STEPS))
    if not comeback or len({tuple(m) for m in masks}) < 2:
        raise SystemExit(f"schedule {lines} does not exercise resampling; "
                         "change SEED")
    return masks


def main():
    out_path, hf_dir, program = sys.argv[1], sys.argv[2], sys.argv[3]
    torch.set_num_threads(1)
    masks = schedule(program)
    c = gl.CFG
    gen = torch.Generator().manual_seed(20240622)
    w0 = gl.random_weights(gen, tied=False)
    tokens = torch.randint(0, c["vocab_size"], (STEPS, BATCH, SEQ), generator=gen)
    targets = torch.randint(0, c["vocab_size"], (STEPS, BATCH, SEQ), generator=gen)

    os.makedirs(hf_dir, exist_ok=True)
    gl.write_safetensors(os.path.join(hf_dir, "model.safetensors"), w0)
    gl.write_config(os.path.join(hf_dir, "config.json"), False)

    # Per-parameter state, created at the parameter's first update.
    lowrank = {gl.layer_names(i)[k] for i in range(c["n_layers"]) for k in PROJ_KEYS}
    always = ["model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"]
    state = {}
    weights = {k: v.clone() for k, v in w0.items()}
    losses, refreshes = [], 0
    for t in range(STEPS):
        train = list(always)
        for i in range(c["n_layers"]):
            if masks[t][i]:
                names = gl.layer_names(i)
                train += [names[k] for k in PROJ_KEYS + NORM_KEYS]
        w64 = {k: v.double().requires_grad_(k in train) for k, v in weights.items()}
        _, loss = gl.forward(w64, tokens[t], targets[t], False)
        loss.backward()
        losses.append(loss.item())
        for k in train:
            g = w64[k].grad.detach()
            W = weights[k].double()
            if k in lowrank:
                m, n = W.shape
                left = is_left("std", m, n)
                shape = (RANK, n) if left else (m, RANK)
            else:
                left, shape = False, W.shape
            st = state.setdefault(k, dict(
                n=0, basis=None, m=torch.zeros(shape, dtype=torch.float64),
                v=torch.zeros(shape, dtype=torch.float64)))
            st["n"] += 1
            if k in lowrank:
                if st["basis"] is None or (st["n"] - 1) % GAP == 0:
                    st["basis"] = canonical_basis(g, RANK, left, k, st["n"])
                    refreshes += st["n"] > 1
                b = st["basis"]
                r = b.T @ g if left else g @ b.T
            else:
                r = g
            adam_moments(st["m"], st["v"], r)
            d = galore_direction(st["m"], st["v"], st["n"], LR, EPS)
            if k in lowrank:
                d = SCALE * (st["basis"] @ d if left else d @ st["basis"])
            W = W - d
            W = W - LR * WD * W
            weights[k] = W.float()
    if refreshes == 0:
        raise SystemExit("no projector was refreshed within the steps")
    # The loss after the last update, so the C test checks that step too.
    with torch.no_grad():
        w64 = {k: v.double() for k, v in weights.items()}
        _, final_loss = gl.forward(w64, tokens[0], targets[0], False)
    print(f"masks {[''.join(map(str, m)) for m in masks]}; losses "
          f"{losses[0]:.5f} -> {losses[-1]:.5f}; batch 0 after: "
          f"{final_loss.item():.5f}; refreshes after the first: {refreshes}")

    with RefWriter(out_path) as out:
        settings = dict(steps=STEPS, gamma=GAMMA, period=PERIOD, seed=SEED,
                        rank=RANK, gap=GAP, scale=SCALE, eps=EPS,
                        weight_decay=WD, lr=LR, batch=BATCH, seq=SEQ)
        for key, val in settings.items():
            out.add(f"settings/{key}", np.array([val], dtype=np.float64))
        out.add("settings/lod", np.array(LOD, dtype=np.float64))
        out.add("masks", np.array(masks, dtype=np.int64), kind="i64")
        out.add("tokens", tokens.reshape(STEPS, -1), kind="i64")
        out.add("targets", targets.reshape(STEPS, -1), kind="i64")
        out.add("losses", np.array(losses, dtype=np.float64))
        out.add("final_loss", final_loss.detach().reshape(1))
        for k, v in weights.items():
            out.add(f"w/{k}", v)


if __name__ == "__main__":
    main()
