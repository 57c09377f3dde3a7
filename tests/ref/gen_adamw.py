"""Reference trajectories for owl_adamw_full and owl_adamw_lowrank.

Usage: gen_adamw.py OUT.ref

Every case stores its settings, the initial weight, the gradient of every
step, the per-step learning rate and the weight after every step, so the C
test (tests/test_torch_adamw.c) can replay it through the library:

  full_torch_*   torch.optim.AdamW itself (decay first, eps after the bias
                 correction), f32 weights, the final m and v from its state.
  full_galore    the GaLore AdamW step of spec section 4 with P = identity,
                 written here in f64 from the spec text.
  lr_*           the GaLore low-rank step (spec section 3 and 4, reference
                 behaviour of galore-and-htsr.md sections 1-2): exact f64
                 SVD, top-r, canonical signs, refresh before updates 1, T+1,
                 ..., moments kept across refreshes, alpha on the way back.

The low-rank gradients are G_t = U_t diag(s) V_t^T + noise with singular
values s_i = s0 * 2^(-i/2): consecutive kept values differ by ~30%, so the
top-r singular vectors are well conditioned and a float32 LAPACK SVD finds
the same vectors (up to rounding) as this float64 one. U_t and V_t rotate
slowly (matrix exponentials of fixed skew matrices) so that each refresh
really moves the basis. The script checks those gaps and the sign margins
and fails rather than write a case the comparison cannot decide.
"""
import math
import sys

import numpy as np
import torch

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from refdata import RefWriter  # noqa: E402

STEPS = 20
BETA1, BETA2 = 0.9, 0.999

# Settings shared with the C side; every case writes them as scalars.
SEM_GALORE, SEM_TORCH = 0, 1          # owl_adamw_semantics
DT_F32, DT_BF16 = 0, 1                # owl_dtype
PROJ = {"std": 0, "reverse_std": 1, "left": 2, "right": 3}  # owl_proj_type


def lr_schedule(peak, steps, start_at_zero):
    """Linear warm-up over 4 steps, then cosine decay to 10% of the peak.
    With start_at_zero the first lr is exactly 0 (LambdaLR-style warm-up),
    which a caller may legitimately pass."""
    out = []
    for t in range(steps):
        warm = min(1.0, (t if start_at_zero else t + 1) / 4.0)
        cos = 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * t / steps))
        out.append(peak * warm * cos)
    return out


def check_bf16_rounding():
    """The bf16 cases assume torch's float32 -> bfloat16 cast rounds to
    nearest, ties to even (the library's rule). Verify it on exact ties."""
    x = torch.tensor([1 + 2**-8, 1 + 3 * 2**-8, -(1 + 2**-8), 1 + 2**-8 + 2**-20],
                     dtype=torch.float32)
    want = torch.tensor([1.0, 1 + 2**-6, -1.0, 1 + 2**-7], dtype=torch.float32)
    got = x.to(torch.bfloat16).float()
    if not torch.equal(got, want):
        raise SystemExit(f"torch bf16 cast is not round-to-nearest-even: {got}")


def write_common(w, name, settings, w0, grads, lrs, traj):
    for key, val in settings.items():
        w.add(f"{name}/{key}", np.array([val], dtype=np.float64))
    w.add(f"{name}/w0", w0)
    w.add(f"{name}/grads", torch.stack(grads))
    w.add(f"{name}/lr", np.array(lrs, dtype=np.float64))
    w.add(f"{name}/w", torch.stack(traj))


# ---------------------------------------------------------------------------
# Full rank
# ---------------------------------------------------------------------------

def full_rank_inputs(gen, m, n):
    """Gradients whose entries span 1e-5.5 .. 1e-2.5 in size (fixed per entry,
    with a persistent mean so momentum matters): the small ones sit near eps,
    so where eps enters the formula changes the update by tens of percent."""
    w0 = (0.05 * torch.randn(m, n, generator=gen, dtype=torch.float64)).float()
    scale = 10.0 ** (-5.5 + 3.0 * torch.rand(m, n, generator=gen, dtype=torch.float64))
    mean = torch.randn(m, n, generator=gen, dtype=torch.float64)
    grads = [(scale * (0.7 * mean + torch.randn(m, n, generator=gen,
                                               dtype=torch.float64))).float()
             for _ in range(STEPS)]
    return w0, grads


def case_full_torch(w, gen, name, eps, m=24, n=40):
    wd = 0.01
    w0, grads = full_rank_inputs(gen, m, n)
    lrs = lr_schedule(1e-3, STEPS, start_at_zero=True)
    p = torch.nn.Parameter(w0.clone())
    opt = torch.optim.AdamW([p], lr=lrs[0], betas=(BETA1, BETA2), eps=eps,
                            weight_decay=wd)
    traj = []
    for t in range(STEPS):
        opt.param_groups[0]["lr"] = lrs[t]
        p.grad = grads[t].clone()
        opt.step()
        traj.append(p.detach().clone())
    # The low-rank TORCH-semantics case uses torch_direction() below; check
    # here that it is torch.optim.AdamW's update (to float32 rounding).
    W = w0.double()
    mom = torch.zeros(m, n, dtype=torch.float64)
    vel = torch.zeros(m, n, dtype=torch.float64)
    for t in range(1, STEPS + 1):
        adam_moments(mom, vel, grads[t - 1].double())
        W = W - lrs[t - 1] * wd * W
        W = (W - torch_direction(mom, vel, t, lrs[t - 1], eps)).float().double()
        err = (W - traj[t - 1].double()).abs().max() / traj[t - 1].abs().max()
        if err > 1e-5:
            raise SystemExit(f"{name}: torch_direction disagrees with "
                             f"torch.optim.AdamW at step {t} ({err:.3g})")
    st = opt.state[p]
    settings = dict(rows=m, cols=n, steps=STEPS, beta1=BETA1, beta2=BETA2,
                    eps=eps, weight_decay=wd, semantics=SEM_TORCH, dtype=DT_F32)
    write_common(w, name, settings, w0, grads, lrs, traj)
    w.add(f"{name}/m", st["exp_avg"])
    w.add(f"{name}/v", st["exp_avg_sq"])


def adam_moments(m, v, r):
    m.mul_(BETA1).add_((1 - BETA1) * r)
    v.mul_(BETA2).add_((1 - BETA2) * r * r)


def galore_direction(m, v, t, lr, eps):
    """eta * N of spec section 4: eps on the un-corrected sqrt(v)."""
    eta = lr * math.sqrt(1 - BETA2**t) / (1 - BETA1**t)
    return eta * (m / (v.sqrt() + eps))


def torch_direction(m, v, t, lr, eps):
    """torch.optim.AdamW's step: lr * m_hat / (sqrt(v_hat) + eps)."""
    mhat = m / (1 - BETA1**t)
    vhat = v / (1 - BETA2**t)
    return lr * (mhat / (vhat.sqrt() + eps))


def case_full_galore(w, gen, name):
    m, n, wd, eps = 24, 40, 0.1, 1e-6
    w0, grads = full_rank_inputs(gen, m, n)
    lrs = lr_schedule(1e-3, STEPS, start_at_zero=False)
    W = w0.clone()
    mom = torch.zeros(m, n, dtype=torch.float64)
    vel = torch.zeros(m, n, dtype=torch.float64)
    traj = []
    for t in range(1, STEPS + 1):
        lr = lrs[t - 1]
        adam_moments(mom, vel, grads[t - 1].double())
        Wd = W.double() - galore_direction(mom, vel, t, lr, eps)
        Wd = Wd - lr * wd * Wd  # decay after the update, with the group lr
        W = Wd.float()          # the weight is stored in f32
        traj.append(W.clone())
    settings = dict(rows=m, cols=n, steps=STEPS, beta1=BETA1, beta2=BETA2,
                    eps=eps, weight_decay=wd, semantics=SEM_GALORE, dtype=DT_F32)
    write_common(w, name, settings, w0, grads, lrs, traj)
    w.add(f"{name}/m", mom)
    w.add(f"{name}/v", vel)


# ---------------------------------------------------------------------------
# Low rank
# ---------------------------------------------------------------------------

def random_orthonormal(gen, rows, cols):
    q, _ = torch.linalg.qr(torch.randn(rows, cols, generator=gen, dtype=torch.float64))
    return q


def slow_rotation(gen, size, angle_per_step):
    """A skew-symmetric generator A with ||A||_2 = angle_per_step, so that
    expm(t A) rotates by at most that angle per step."""
    x = torch.randn(size, size, generator=gen, dtype=torch.float64)
    a = x - x.T
    return a * (angle_per_step / torch.linalg.matrix_norm(a, ord=2))


def lowrank_gradients(gen, m, n, dtype, s0=1e-2, decay=0.5):
    k = min(m, n)
    s = s0 * 2.0 ** (-decay * torch.arange(k, dtype=torch.float64))
    u0, v0 = random_orthonormal(gen, m, k), random_orthonormal(gen, n, k)
    au, av = slow_rotation(gen, m, 0.06), slow_rotation(gen, n, 0.06)
    grads = []
    for t in range(STEPS):
        ut = torch.linalg.matrix_exp(t * au) @ u0
        vt = torch.linalg.matrix_exp(t * av) @ v0
        g = ut @ torch.diag(s) @ vt.T
        g = g + 1e-3 * s0 * torch.randn(m, n, generator=gen, dtype=torch.float64)
        # Exactly representable in the storage dtype, so torch and the
        # library see the same numbers.
        grads.append(g.float() if dtype == DT_F32 else g.to(torch.bfloat16).float())
    return grads


def canonical_basis(g, rank, left, name, step):
    """Top-r singular vectors of g in float64, each flipped so that its
    largest-magnitude entry is positive. Fails when the comparison would be
    ill-posed: a kept singular value too close to its neighbour (the vector
    is not well determined), or two entries of a kept vector so close in
    magnitude with opposite signs that float32 rounding could swap which one
    is largest (and so the sign)."""
    u, s, vh = torch.linalg.svd(g.double(), full_matrices=False)
    gaps = (s[:rank] - s[1:rank + 1]) / s[0]
    if gaps.min() < 0.01:
        raise SystemExit(f"{name} step {step}: singular gap {gaps.min():.3g} too small")
    vecs = u[:, :rank].T.clone() if left else vh[:rank, :].clone()
    for i in range(rank):
        mags = vecs[i].abs()
        top2 = torch.topk(mags, 2)
        a, b = top2.indices.tolist()
        if (top2.values[0] - top2.values[1] < 1e-4
                and vecs[i, a] * vecs[i, b] < 0):
            raise SystemExit(f"{name} step {step}: sign of vector {i} is ambiguous")
        if vecs[i, a] < 0:
            vecs[i] = -vecs[i]
    return vecs.T.contiguous() if left else vecs  # P: m x r, or Q: r x n


def is_left(proj, m, n):
    if proj == "left":
        return True
    if proj == "right":
        return False
    std_left = m < n  # std projects the smaller side
    return std_left if proj == "std" else not std_left


def simulate_lowrank(w0, grads, lrs, *, left, dtype, semantics, wd, rank,
                     gap, alpha, eps, name):
    """The GaLore AdamW trajectory in float64 from the spec text. The weight
    is stored back in its own dtype after each step, with one rounding of the
    f32 value (bf16: to nearest even, as the library writes it)."""
    m, n = w0.shape
    lshape = (rank, n) if left else (m, rank)
    mom = torch.zeros(lshape, dtype=torch.float64)
    vel = torch.zeros(lshape, dtype=torch.float64)
    W = w0.clone()
    basis, traj, refreshed, bases = None, [], [], []
    for t in range(1, len(grads) + 1):
        g = grads[t - 1].double()
        lr = lrs[t - 1]
        if basis is None or (t - 1) % gap == 0:  # before updates 1, T+1, ...
            basis = canonical_basis(g, rank, left, name, t)
            bases.append(basis.clone())
            refreshed.append(1)
        else:
            refreshed.append(0)
        r = basis.T @ g if left else g @ basis.T
        adam_moments(mom, vel, r)  # moments kept across refreshes
        Wd = W.double()
        if semantics == SEM_TORCH:
            Wd = Wd - lr * wd * Wd
            n_dir = torch_direction(mom, vel, t, lr, eps)
        else:
            n_dir = galore_direction(mom, vel, t, lr, eps)
        Wd = Wd - alpha * (basis @ n_dir if left else n_dir @ basis)
        if semantics == SEM_GALORE:
            Wd = Wd - lr * wd * Wd
        W = Wd.float() if dtype == DT_F32 else Wd.float().to(torch.bfloat16).float()
        traj.append(W.clone())
    return traj, refreshed, bases, mom, vel


def case_lowrank(w, gen, name, m, n, proj, dtype=DT_F32, semantics=SEM_GALORE,
                 wd=0.0, rank=8, gap=5, alpha=0.25, eps=1e-6, peak_lr=1e-2,
                 decay=0.5):
    left = is_left(proj, m, n)
    w0 = (0.1 * torch.randn(m, n, generator=gen, dtype=torch.float64))
    w0 = w0.float() if dtype == DT_F32 else w0.to(torch.bfloat16).float()
    # Higher ranks need a slower spectral decay so the kept vectors stay
    # well separated (canonical_basis checks the gaps).
    grads = lowrank_gradients(gen, m, n, dtype, decay=decay)
    lrs = lr_schedule(peak_lr, STEPS, start_at_zero=False)
    traj, refreshed, bases, mom, vel = simulate_lowrank(
        w0, grads, lrs, left=left, dtype=dtype, semantics=semantics, wd=wd,
        rank=rank, gap=gap, alpha=alpha, eps=eps, name=name)
    settings = dict(rows=m, cols=n, steps=STEPS, beta1=BETA1, beta2=BETA2,
                    eps=eps, weight_decay=wd, semantics=semantics, dtype=dtype,
                    rank=rank, update_gap=gap, scale=alpha, proj_type=PROJ[proj],
                    left=int(left))
    write_common(w, name, settings, w0, grads, lrs, traj)
    w.add(f"{name}/refreshed", np.array(refreshed, dtype=np.int64), kind="i64")
    w.add(f"{name}/bases", torch.stack(bases))
    w.add(f"{name}/m", mom)
    w.add(f"{name}/v", vel)


def main():
    out = sys.argv[1]
    torch.set_num_threads(1)
    check_bf16_rounding()
    gen = torch.Generator().manual_seed(20240611)
    cases = []
    with RefWriter(out) as w:
        def add(name, fn, *args, **kw):
            fn(w, gen, name, *args, **kw)
            cases.append(name)

        add("full_torch_eps1e-8", case_full_torch, 1e-8)
        add("full_torch_eps1e-6", case_full_torch, 1e-6)
        add("full_galore_wd0.1", case_full_galore)
        shapes = {"tall": (48, 32), "wide": (32, 48)}
        for proj in ("std", "reverse_std", "left", "right"):
            for shape, (m, n) in shapes.items():
                add(f"lr_{proj}_{shape}", case_lowrank, m, n, proj)
        for shape, (m, n) in shapes.items():
            add(f"lr_bf16_std_{shape}", case_lowrank, m, n, "std", dtype=DT_BF16)
        add("lr_std_tall_wd0.05", case_lowrank, 48, 32, "std", wd=0.05)
        add("lr_torch_std_wide_wd0.05", case_lowrank, 32, 48, "std",
            semantics=SEM_TORCH, wd=0.05)
        # Small ranks take the library's streaming kernels, larger ones
        # sgemm (OWL_STREAM_MAX_RANK, src/galore_internal.h): odd shapes for
        # the kernels' tails (columns beyond a multiple of 8 and of their
        # 256-column tiles, rows beyond a multiple of 4, basis blocks of
        # 4 + 1), and ranks above the crossover for sgemm.
        add("lr_left_r8_37x300", case_lowrank, 37, 300, "left", wd=0.05)
        add("lr_right_r5_40x300", case_lowrank, 40, 300, "right", rank=5)
        add("lr_bf16_right_r5_40x300", case_lowrank, 40, 300, "right",
            dtype=DT_BF16, rank=5, wd=0.05)
        add("lr_std_r18_tall", case_lowrank, 48, 32, "std", rank=18,
            decay=0.15)
        add("lr_left_r18_wide", case_lowrank, 32, 48, "left", rank=18,
            decay=0.15, wd=0.05)
        add("lr_bf16_std_r18_wide", case_lowrank, 32, 48, "std",
            dtype=DT_BF16, rank=18, decay=0.15)
        # One long row: the library splits rows into spans of 16384
        # elements across its threads (src/adamw.c), the last one short.
        add("full_torch_1x20000", case_full_torch, 1e-8, m=1, n=20000)
        w.add("cases/count", np.array([len(cases)], dtype=np.int64), kind="i64")


if __name__ == "__main__":
    main()
