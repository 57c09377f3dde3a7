"""Reference trajectories for owl_optimizer over a small synthetic model.

Usage: gen_optimizer.py OUT.ref

The model: 4 decoder layers of two matrices each (24x16 and 16x24) and an
always-trained 32x16 "embedding". The loss is L = 0.5 * sum((W - target)^2)
over every matrix, so each gradient is W - target, computed in float32 from
the stored weight exactly as the C test computes it. The C test
(tests/test_optimizer.c) replays every case through the library and
compares the weights after every step.

  full_torch       method FULL with torch.optim.AdamW semantics: the
                   reference *is* torch.optim.AdamW over all parameters.
  full_torch_clip  the same with torch.nn.utils.clip_grad_norm_ before each
                   step (the clipping is active at every step).
  galore           method GALORE: the layers' matrices on the low-rank path
                   (rank 4, refresh gap 5, scale 0.25) except layer 3's second
                   matrix, which like the embedding trains in full rank. The
                   GaLore step is written here in float64 from spec sections
                   3-4, reusing gen_adamw.py's building blocks (exact SVD,
                   top-r, canonical signs, refresh before updates 1, T+1, ...,
                   moments kept across refreshes).
  galore_clip      the same with global-norm clipping of the full-rank
                   gradients before projection.

The gradients at each refresh must have well-separated top singular values
(or the basis is not well determined): the targets are chosen so that
G_0 = W_0 - target = U diag(s) V^T + noise with s_i = s0 * 2^(-i/2), and
canonical_basis() fails the build rather than write an undecidable case.
"""
import sys

import numpy as np
import torch

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from refdata import RefWriter  # noqa: E402
from gen_adamw import (BETA1, BETA2, adam_moments, canonical_basis,  # noqa: E402
                       galore_direction, is_left, lr_schedule,
                       random_orthonormal, torch_direction)

STEPS = 20
NUM_LAYERS = 4
ALWAYS = -1
RANK, GAP, SCALE = 4, 5, 0.25
SEM_GALORE, SEM_TORCH = 0, 1            # owl_adamw_semantics
METHOD_GALORE, METHOD_FULL = 3, 4       # owl_method


def build_problem(gen):
    """(layer, lowrank, w0, target) per parameter, in registration order."""
    params = []
    shapes = [(24, 16), (16, 24)]
    for layer in range(NUM_LAYERS):
        for k, (m, n) in enumerate(shapes):
            lowrank = 0 if (layer == 3 and k == 1) else 1
            params.append((layer, lowrank, m, n))
    params.append((ALWAYS, 0, 32, 16))
    out = []
    for layer, lowrank, m, n in params:
        w0 = (0.1 * torch.randn(m, n, generator=gen, dtype=torch.float64)).float()
        kk = min(m, n)
        s = 0.3 * 2.0 ** (-0.5 * torch.arange(kk, dtype=torch.float64))
        u, v = random_orthonormal(gen, m, kk), random_orthonormal(gen, n, kk)
        g0 = u @ torch.diag(s) @ v.T + 1e-4 * torch.randn(m, n, generator=gen,
                                                          dtype=torch.float64)
        target = (w0.double() - g0).float()
        out.append(dict(layer=layer, lowrank=lowrank, w0=w0, target=target))
    return out


def grads_of(weights, problem):
    """G = W - target in float32, as the C test computes it."""
    return [(w - p["target"]) for w, p in zip(weights, problem)]


def clip_coef(grads, max_norm):
    """torch.nn.utils.clip_grad_norm_'s factor, from an f64 norm."""
    norm = float(torch.sqrt(sum((g.double() ** 2).sum() for g in grads)))
    return norm, min(1.0, max_norm / (norm + 1e-6))


# ---------------------------------------------------------------------------
# FULL + torch semantics: torch.optim.AdamW itself
# ---------------------------------------------------------------------------

def case_full_torch(w, problem, name, max_norm):
    lrs = lr_schedule(2e-3, STEPS, start_at_zero=False)
    eps, wd = 1e-8, 0.01
    params = [torch.nn.Parameter(p["w0"].clone()) for p in problem]
    opt = torch.optim.AdamW(params, lr=lrs[0], betas=(BETA1, BETA2), eps=eps,
                            weight_decay=wd)
    traj = [[] for _ in problem]
    gtraj = [[] for _ in problem]
    norms, clipped = [], 0
    for t in range(STEPS):
        opt.param_groups[0]["lr"] = lrs[t]
        for p, prob in zip(params, problem):
            p.grad = (p.detach() - prob["target"]).clone()
        if max_norm > 0:
            total = torch.nn.utils.clip_grad_norm_(params, max_norm)
            norms.append(float(total))
            clipped += float(total) > max_norm
        else:
            norms.append(float(torch.sqrt(sum((p.grad.double() ** 2).sum()
                                              for p in params))))
        for i, p in enumerate(params):
            gtraj[i].append(p.grad.detach().clone())  # clipped in place
        opt.step()
        for i, p in enumerate(params):
            traj[i].append(p.detach().clone())
    if max_norm > 0 and clipped != STEPS:
        raise SystemExit(f"{name}: clipping active at {clipped}/{STEPS} steps")
    settings = dict(method=METHOD_FULL, semantics=SEM_TORCH, eps=eps,
                    weight_decay=wd, max_grad_norm=max_norm, rank=0, gap=0,
                    scale=0.0)
    write_case(w, name, settings, lrs, traj, norms, gtraj)


# ---------------------------------------------------------------------------
# GALORE: the GaLore AdamW of spec sections 3-4 in float64
# ---------------------------------------------------------------------------

def case_galore(w, problem, name, max_norm):
    lrs = lr_schedule(2e-3, STEPS, start_at_zero=False)
    eps, wd = 1e-6, 0.0
    weights = [p["w0"].clone() for p in problem]
    state = []
    for p in problem:
        m, n = p["w0"].shape
        low = p["lowrank"] and p["layer"] != ALWAYS
        left = is_left("std", m, n)
        shape = ((RANK, n) if left else (m, RANK)) if low else (m, n)
        state.append(dict(low=low, left=left, basis=None,
                          m=torch.zeros(shape, dtype=torch.float64),
                          v=torch.zeros(shape, dtype=torch.float64)))
    traj = [[] for _ in problem]
    gtraj = [[] for _ in problem]
    norms, clipped = [], 0
    for t in range(1, STEPS + 1):
        lr = lrs[t - 1]
        grads = grads_of(weights, problem)
        norm, coef = clip_coef(grads, max_norm) if max_norm > 0 else \
            (clip_coef(grads, 1.0)[0], 1.0)
        norms.append(norm)
        if coef < 1.0:
            clipped += 1
            # the library scales the float32 gradient by the float32 factor
            grads = [(g * torch.tensor(coef, dtype=torch.float32)) for g in grads]
        for i, g in enumerate(grads):
            gtraj[i].append(g.clone())
        for i, (g, st) in enumerate(zip(grads, state)):
            g = g.double()
            if st["low"]:
                if st["basis"] is None or (t - 1) % GAP == 0:
                    st["basis"] = canonical_basis(g, RANK, st["left"],
                                                  f"{name} param {i}", t)
                b = st["basis"]
                r = b.T @ g if st["left"] else g @ b.T
            else:
                r = g
            adam_moments(st["m"], st["v"], r)
            d = galore_direction(st["m"], st["v"], t, lr, eps)
            if st["low"]:
                d = SCALE * (st["basis"] @ d if st["left"] else d @ st["basis"])
            wd_ = weights[i].double() - d
            wd_ = wd_ - lr * wd * wd_
            weights[i] = wd_.float()
            traj[i].append(weights[i].clone())
    if max_norm > 0 and clipped != STEPS:
        raise SystemExit(f"{name}: clipping active at {clipped}/{STEPS} steps")
    settings = dict(method=METHOD_GALORE, semantics=SEM_GALORE, eps=eps,
                    weight_decay=wd, max_grad_norm=max_norm, rank=RANK, gap=GAP,
                    scale=SCALE)
    write_case(w, name, settings, lrs, traj, norms, gtraj)


def write_case(w, name, settings, lrs, traj, norms, gtraj):
    """Per step: the weights after it, and the gradients it used (after
    clipping, which the library does in place as torch does)."""
    for key, val in settings.items():
        w.add(f"{name}/{key}", np.array([val], dtype=np.float64))
    w.add(f"{name}/lr", np.array(lrs, dtype=np.float64))
    w.add(f"{name}/norm", np.array(norms, dtype=np.float64))
    for i, tr in enumerate(traj):
        w.add(f"{name}/p{i}/w", torch.stack(tr))
        w.add(f"{name}/p{i}/g", torch.stack(gtraj[i]))


def main():
    out = sys.argv[1]
    torch.set_num_threads(1)
    # The torch case's update must be torch_direction (checked in
    # gen_adamw.py); keep the import used so a rename there is noticed.
    assert callable(torch_direction)
    gen = torch.Generator().manual_seed(20240613)
    problem = build_problem(gen)
    with RefWriter(out) as w:
        w.add("problem/num_layers", np.array([NUM_LAYERS], dtype=np.int64), kind="i64")
        w.add("problem/num_params", np.array([len(problem)], dtype=np.int64), kind="i64")
        w.add("problem/steps", np.array([STEPS], dtype=np.int64), kind="i64")
        for i, p in enumerate(problem):
            w.add(f"problem/p{i}/layer", np.array([p["layer"]], dtype=np.int64), kind="i64")
            w.add(f"problem/p{i}/lowrank", np.array([p["lowrank"]], dtype=np.int64), kind="i64")
            w.add(f"problem/p{i}/w0", p["w0"])
            w.add(f"problem/p{i}/target", p["target"])
        case_full_torch(w, problem, "full_torch", 0.0)
        case_full_torch(w, problem, "full_torch_clip", 0.5)
        case_galore(w, problem, "galore", 0.0)
        case_galore(w, problem, "galore_clip", 0.5)


if __name__ == "__main__":
    main()
