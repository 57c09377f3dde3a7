"""Tests of examples/pytorch/owlore_torch.py against libowlore installed the
way a user installs it (OWLORE_LIB points into the install tree).

The main test trains a small transformer-like model for 30 steps with
OwloreOptimizer (f32, the library's CPU backend) and, beside it, the same
model in float64 with a pure-torch implementation of the semantics page
(sections 3-4: GaLore projector from torch.linalg.svd with canonical signs,
refreshed before a parameter's own updates 1, T+1, ...; GALORE AdamW; full-
rank AdamW for the other parameters), following the same active layers.
Prints "N passed, N failed"; exits non-zero on any failure.
"""

import copy
import ctypes
import os
import sys
import traceback

import torch

sys.path.insert(0, os.environ["OWLORE_TORCH_DIR"])
import owlore_torch as ot  # noqa: E402

V, D, H, L = 24, 12, 40, 3      # vocab, width, hidden, decoder layers
GAMMA, K, RANK, T = 2, 5, 3, 10
STEPS, LR = 30, 1e-2
BETAS, EPS = (0.9, 0.999), 1e-6
WEIGHTS = [1.0, 2.0, 3.0]       # fixed sampler weights (CUSTOM mode)
RTOL = 1e-4                     # relative tolerance, f32 library vs f64 torch
GAP_MIN = 0.02                  # (s_r - s_{r+1}) / s_1 at every refresh
SIGN_MIN = 1e-3                 # |top entry| - |runner-up| over |top entry|


class Block(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.gain = torch.nn.Parameter(torch.ones(D))
        self.up = torch.nn.Linear(D, H)      # 40 x 12: right projection
        self.down = torch.nn.Linear(H, D)    # 12 x 40: left projection

    def forward(self, h):
        x = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + 1e-5) * self.gain
        return h + self.down(torch.tanh(self.up(x)))


class Model(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(V, D)
        self.layers = torch.nn.ModuleList(Block() for _ in range(L))
        self.head = torch.nn.Linear(D, V, bias=False)

    def forward(self, ids):
        h = self.embed(ids)
        for layer in self.layers:
            h = layer(h)
        return self.head(h)


def loss_of(model, ids):
    logits = model(ids[:, :-1])
    return torch.nn.functional.cross_entropy(
        logits.reshape(-1, V), ids[:, 1:].reshape(-1))


def batches():
    g = torch.Generator().manual_seed(7)
    return [torch.randint(0, V, (4, 9), generator=g) for _ in range(STEPS)]


def param_groups(model):
    groups = [{"params": [model.embed.weight, model.head.weight],
               "layer": None, "lowrank": False}]
    for l, b in enumerate(model.layers):
        groups.append({"params": [b.up.weight, b.down.weight], "layer": l,
                       "lowrank": True})
        groups.append({"params": [b.gain, b.up.bias, b.down.bias],
                       "layer": l, "lowrank": False})
    return groups


# ----------------------------------------------- reference (semantics page)
def canonical(vectors, dim):
    """Flip each singular vector (along `dim`) so its largest-|entry| is
    positive; fail when the runner-up is too close to say which is largest."""
    mags = vectors.abs()
    top2 = mags.topk(2, dim=dim).values
    first = top2.select(dim, 0)
    second = top2.select(dim, 1)
    assert bool(((first - second) / first > SIGN_MIN).all()), \
        "a singular vector's two largest entries are too close in magnitude"
    idx = mags.argmax(dim=dim, keepdim=True)
    signs = torch.sign(vectors.gather(dim, idx))
    return vectors * signs


class RefGalore:
    def __init__(self, shape):
        m, n = shape
        self.right = m >= n      # OWL_PROJ_STD
        self.basis = None

    def refresh(self, G):
        U, S, Vh = torch.linalg.svd(G, full_matrices=False)
        gap = (S[RANK - 1] - S[RANK]) / S[0]
        assert gap > GAP_MIN, f"top-{RANK} gap {gap:.3g} too small: the " \
            "subspace is ill-defined, pick another seed or shape"
        if self.right:
            self.basis = canonical(Vh[:RANK], 1)          # Q: r x n
        else:
            self.basis = canonical(U[:, :RANK], 0)        # P: m x r

    def project(self, G):
        return G @ self.basis.T if self.right else self.basis.T @ G

    def back(self, N):
        return N @ self.basis if self.right else self.basis @ N


class RefAdamW:
    """GALORE semantics (spec 4); low-rank when given a projector."""

    def __init__(self, p, lowrank):
        self.p = p
        self.proj = RefGalore(p.shape) if lowrank else None
        self.count = 0
        self.m = self.v = None

    def update(self, lr):
        G = self.p.grad
        if self.proj is not None:
            if self.count % T == 0:
                self.proj.refresh(G)
            G = self.proj.project(G)
        if self.m is None:
            self.m, self.v = torch.zeros_like(G), torch.zeros_like(G)
        b1, b2 = BETAS
        self.m = b1 * self.m + (1 - b1) * G
        self.v = b2 * self.v + (1 - b2) * G * G
        self.count += 1
        t = self.count
        N = self.m / (self.v.sqrt() + EPS)
        eta = lr * (1 - b2 ** t) ** 0.5 / (1 - b1 ** t)
        if self.proj is not None:
            N = self.proj.back(N)    # alpha = 1
        with torch.no_grad():
            self.p -= eta * N


# ------------------------------------------------------------------- tests
def rel_err(a, b):
    return float((a.double() - b).norm() / b.norm().clamp_min(1e-30))


def test_struct_sizes():
    for cls, size in ot.STRUCT_SIZES.items():
        assert ctypes.sizeof(cls) == size, cls.__name__
    ot.check_struct_sizes()


def test_errors_name_status_and_message():
    model = Model()
    # rank 13 > min(40, 12): refused at add_param with the library's message
    try:
        ot.OwloreOptimizer(param_groups(model), lr=LR, num_layers=L,
                           gamma=GAMMA, period=K, rank=13, update_gap=T,
                           weights=WEIGHTS, weight_mode="custom")
    except ot.OwloreError as e:
        assert e.name and e.name.startswith("OWL_ERR_"), str(e)
        assert "owl_optimizer_add_param" in str(e) and len(str(e)) > 40, str(e)
    else:
        raise AssertionError("rank above min(m, n) was accepted")


def test_training_matches_reference():
    torch.manual_seed(int(os.environ.get("SEED", 5)))
    model = Model()
    ref = copy.deepcopy(model).double()
    init = [p.detach().double().clone() for p in ref.parameters()]
    opt = ot.OwloreOptimizer(param_groups(model), lr=LR, num_layers=L,
                             gamma=GAMMA, period=K, seed=11, rank=RANK,
                             update_gap=T, betas=BETAS, eps=EPS,
                             weights=WEIGHTS, weight_mode="custom")
    ref_groups = param_groups(ref)
    ref_opt = {}
    for g in ref_groups:
        for p in g["params"]:
            ref_opt[p] = RefAdamW(p, g["lowrank"])

    seen = set()
    for step, ids in enumerate(batches()):
        mask = opt.active_layers()
        assert sum(mask) == GAMMA, mask
        if step % K:
            assert mask == prev_mask, "mask changed inside a period"
        prev_mask = mask
        seen.add(tuple(mask))
        ot.set_requires_grad(model.layers, mask)

        loss = loss_of(model, ids)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

        ref.zero_grad(set_to_none=True)
        ref_loss = loss_of(ref, ids)
        ref_loss.backward()
        for g in ref_groups:
            if g["layer"] is not None and not mask[g["layer"]]:
                continue
            for p in g["params"]:
                ref_opt[p].update(LR)

        err = abs(loss.item() - ref_loss.item()) / abs(ref_loss.item())
        assert err < RTOL, f"step {step}: loss {loss.item()} vs " \
            f"{ref_loss.item()} (rel {err:.2e})"
        assert opt.step_index() == step + 1

    assert len(seen) > 1, "the sampler never changed the active layers"
    worst = 0.0
    for (name, p), (_, q) in zip(model.named_parameters(),
                                 ref.named_parameters()):
        e = rel_err(p.detach(), q.detach())
        worst = max(worst, e)
        assert e < RTOL, f"{name}: relative error {e:.2e}"
    # Every layer trained at some step and moved away from the init.
    for (name, p), q0 in zip(model.named_parameters(), init):
        assert rel_err(p.detach(), q0) > 100 * RTOL, f"{name} did not move"
    assert opt.memory()["host_moments"] > 0
    print(f"  worst final relative weight error {worst:.2e} (< {RTOL})")
    opt.close()


def test_set_requires_grad():
    model = Model()
    ot.set_requires_grad(model.layers, [1, 0, 1])
    flags = [all(p.requires_grad for p in b.parameters())
             for b in model.layers]
    none = [not any(p.requires_grad for p in b.parameters())
            for b in model.layers]
    assert flags == [True, False, True] and none == [False, True, False]


def test_compute_lod_matches_torch():
    torch.manual_seed(5)
    model = Model()
    with torch.no_grad():   # a few heavy input features make outliers
        for b in model.layers:
            b.up.weight[:, 2] *= 8.0
    calib = [torch.randint(0, V, (3, 8)) for _ in range(3)]
    M = 3.0
    got = ot.compute_lod(model, model.layers, ["up", "down"], calib, M)

    # Pure torch: the inputs of up and down, captured by hooks, in f64.
    inputs = {}

    def keep(name):
        def hook(module, args):
            x = args[0].detach().double().reshape(-1, module.in_features)
            inputs.setdefault(name, []).append(x)
        return hook
    hooks = [getattr(b, n).register_forward_pre_hook(keep((l, n)))
             for l, b in enumerate(model.layers) for n in ("up", "down")]
    with torch.no_grad():
        for ids in calib:
            model(ids)
    for h in hooks:
        h.remove()
    for l, b in enumerate(model.layers):
        scores = []
        for n in ("up", "down"):
            s = torch.cat(inputs[(l, n)]).pow(2).sum(0)
            scores.append((getattr(b, n).weight.double().abs()
                           * s.sqrt()).flatten())
        A = torch.cat(scores)
        thr = M * A.mean()
        margin = ((A - thr).abs() / thr).min()
        assert margin > 1e-4, f"layer {l}: a score sits on the threshold"
        want = float((A > thr).double().mean())
        assert 0.0 < want < 1.0, f"layer {l}: degenerate ratio {want}"
        assert abs(got[l] - want) < 1e-12, f"layer {l}: {got[l]} vs {want}"


def main():
    tests = [test_struct_sizes, test_errors_name_status_and_message,
             test_set_requires_grad, test_compute_lod_matches_torch,
             test_training_matches_reference]
    passed = failed = 0
    for t in tests:
        try:
            t()
            print(f"PASS {t.__name__}")
            passed += 1
        except Exception:
            print(f"FAIL {t.__name__}")
            traceback.print_exc(file=sys.stdout)
            failed += 1
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
