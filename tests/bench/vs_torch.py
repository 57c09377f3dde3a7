#!/usr/bin/python3
"""libowlore against PyTorch (CPU) in one process, same inputs and threads.

Each row times our call and the PyTorch equivalent on the same shapes,
dtypes and thread count, after a warm-up, with interleaved repeats (ours,
torch, ours, ...), and reports medians. Each row's limit is measured in
the same run: the copy bandwidth for the memory-bound operations (full-rank
AdamW, LOD), sgemm on the row's own GEMM shapes for the GEMM-bound ones
(low-rank step, refresh). The LLaMa example's training step is compared
with the same step in PyTorch in separate processes (vs_torch_llama.py).

Usage: OWLORE_LIB=build/src/libowlore.so.0 BENCH_LLAMA=build/tests/bench_llama
       /usr/bin/python3 vs_torch.py [--quick] [--exact-large] [--no-llama]
       [--threads N] [--out DIR]
Writes DIR/report.md, DIR/results.csv, DIR/img/vs-torch-*.svg.
"""

import argparse
import ctypes
import math
import os
import platform
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "..", "examples", "pytorch"))

import torch  # noqa: E402
import owlore_torch as ot  # noqa: E402
import vs_torch_llama  # noqa: E402
import vs_torch_report  # noqa: E402

P = ctypes.c_void_p
T = ctypes.POINTER(ot.Tensor)
u64, i32, f64 = ctypes.c_uint64, ctypes.c_int32, ctypes.c_double

# Entry points this benchmark calls beyond those owlore_torch declares.
EXTRA = {
    "owl_adamw_create": (i32, [P, ctypes.POINTER(ot.AdamwOptions), u64, u64,
                               ctypes.POINTER(P)]),
    "owl_adamw_free": (None, [P]),
    "owl_adamw_full": (i32, [P, T, T, f64]),
    "owl_adamw_lowrank": (i32, [P, P, T, T, f64]),
    "owl_galore_create": (i32, [P, ctypes.POINTER(ot.GaloreOptions),
                                ctypes.POINTER(P)]),
    "owl_galore_free": (None, [P]),
    "owl_galore_refresh": (i32, [P, T]),
    "owl_galore_get_basis": (i32, [P, T]),
    "owl_galore_refresh_count": (u64, [P]),
    "owl_galore_is_left": (i32, [P]),
}

M = 1 << 20

# What each mode measures. Sizes not in a "table" list are scaling points:
# measured the same way, shown in the scaling tables and plots only.
FULL = dict(
    adamw=dict(sizes=[1, 2, 4, 8, 16, 32, 64], table=[1, 4, 16, 64],
               warmup=2, reps=7),
    lowrank=dict(shapes=[(512, 512), (1024, 1024), (2048, 2048),
                         (4096, 4096), (4096, 11008)],
                 table=[(1024, 1024), (4096, 4096), (4096, 11008)],
                 ranks=[8, 128, 256], series_rank=256, warmup=1, reps=5),
    refresh=dict(shapes=[(512, 512), (1024, 1024), (1024, 2752),
                         (2048, 2048), (2048, 5504), (4096, 4096),
                         (4096, 11008)],
                 table=[(1024, 1024), (2048, 5504), (4096, 4096),
                        (4096, 11008)],
                 ranks=[128, 256], series_rank=256, warmup=1, reps=3,
                 # EXACT: (warmup, reps, ranks) where it is affordable. Its
                 # cost does not depend on r (a full thin SVD, truncated).
                 # At 4096^2 one call takes 25-45 s on each side here, at
                 # 4096x11008 over a minute: --exact-large.
                 exact={(512, 512): (1, 3, [256]),
                        (1024, 1024): (1, 3, [128, 256]),
                        (1024, 2752): (0, 3, [256]),
                        (2048, 2048): (0, 1, [256]),
                        (2048, 5504): (0, 3, [256])},
                 exact_large={(4096, 4096): (0, 1, [256]),
                              (4096, 11008): (0, 1, [256])}),
    lod=dict(divs=[16, 8, 4, 2, 1], table=[1], warmup=1, reps=3),
    llama=[("tiny", 3, 15), ("110m", 1, 2)],
)

QUICK = dict(
    adamw=dict(sizes=[0.25, 0.5, 1, 2, 4], table=[1, 4], warmup=1, reps=3),
    lowrank=dict(shapes=[(256, 256), (512, 512), (1024, 1024)],
                 table=[(1024, 1024)], ranks=[8, 128], series_rank=128,
                 warmup=1, reps=3),
    refresh=dict(shapes=[(256, 256), (512, 512), (1024, 1024)],
                 table=[(1024, 1024)], ranks=[128], series_rank=128,
                 warmup=0, reps=2,
                 exact={(256, 256): (0, 2, [128]), (512, 512): (0, 2, [128]),
                        (1024, 1024): (0, 1, [128])},
                 exact_large={}),
    lod=dict(divs=[32, 16, 8], table=[8], warmup=1, reps=2),
    llama=[("tiny", 1, 3)],
)


def declare(lib):
    for name, (res, args) in EXTRA.items():
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = res, args


def bench_n(fns, warmup, reps, best=()):
    """fns run in turn (a, b, c, a, b, c, ...) so that all see the same
    load from the rest of the machine: their medians in ms (for the
    indices in best, the fastest repeat: a limit is the best the machine
    does, as STREAM reports it) and the last result of each."""
    last = [None] * len(fns)
    for _ in range(warmup):
        for i, fn in enumerate(fns):
            last[i] = fn()
    ts = [[] for _ in fns]
    for _ in range(reps):
        for i, fn in enumerate(fns):
            t0 = time.perf_counter()
            last[i] = fn()
            ts[i].append((time.perf_counter() - t0) * 1e3)
    return [min(t) if i in best else statistics.median(t)
            for i, t in enumerate(ts)], last


def bench(ours, theirs, warmup, reps):
    """Interleaved medians in ms (ours, theirs) and theirs' last result."""
    (a, b), last = bench_n([ours, theirs], warmup, reps)
    return a, b, last[1]


def bench_one(fn, warmup, reps, best=False):
    (ms,), _ = bench_n([fn], warmup, reps, (0,) if best else ())
    return ms


def size_label(n):
    return f"{n / M:g}M"


def shape_label(m, n):
    return f"{m}x{n}"


class Bench:
    def __init__(self, args):
        self.args = args
        self.ctx = ot.Context("cpu", args.threads)
        self.ctx1 = ot.Context("cpu", 1)
        self.lib = self.ctx.lib
        declare(self.lib)
        self.rows = []
        self.points = {}  # series name -> list of dicts (x, label, values)

    def row(self, family, op, shape, ours, torch_ms, limit, limit_kind,
            note="", table=True, **extra):
        r = dict(family=family, op=op, shape=shape, ours_ms=ours,
                 torch_ms=torch_ms, speedup=torch_ms / ours, limit_ms=limit,
                 limit_kind=limit_kind, frac=limit / ours, note=note,
                 table=table)
        r.update(extra)
        self.rows.append(r)
        print(f"  {op:32s} {shape:14s} ours {ours:9.3f} ms  torch "
              f"{torch_ms:9.3f} ms  x{torch_ms / ours:5.2f}  limit "
              f"{limit:8.3f} ms ({limit / ours:4.0%})"
              f"{'' if table else '  [scaling]'}", flush=True)
        return r

    def point(self, series, x, label, **values):
        self.points.setdefault(series, []).append(
            dict(x=x, label=label, **values))

    # ----------------------------------------------------------- helpers
    def adamw_options(self, semantics, wd):
        o = ot._init(self.lib.owl_adamw_options_init, ot.AdamwOptions)
        o.beta1, o.beta2, o.eps, o.weight_decay = 0.9, 0.999, 1e-8, wd
        o.semantics = ot.SEMANTICS[semantics]
        return o

    def adamw(self, opts, rows, cols):
        h = P()
        self.ctx.check(self.lib.owl_adamw_create(
            self.ctx.handle, ctypes.byref(opts), rows, cols, ctypes.byref(h)),
            "owl_adamw_create")
        return h

    def galore(self, m, n, r, method, gap=1 << 40):
        o = ot._init(self.lib.owl_galore_options_init, ot.GaloreOptions)
        o.rows, o.cols, o.rank, o.update_gap = m, n, r, gap
        o.svd_method = ot.SVD[method]
        h = P()
        self.ctx.check(self.lib.owl_galore_create(
            self.ctx.handle, ctypes.byref(o), ctypes.byref(h)),
            "owl_galore_create")
        return h

    # ------------------------------------------------- machine limits
    # Copy bandwidth: y.copy_(x) over n floats, GB/s counting the 8 bytes
    # per element read and written. Beyond 32M floats (2 x 128 MiB, far
    # past the caches) the buffers are not made larger: DRAM's rate is
    # reached.

    @staticmethod
    def gemm_ms(a, b, warmup, reps):
        """One sgemm a @ b (torch.mm, OpenBLAS) into a preallocated out."""
        out = torch.empty(a.shape[0], b.shape[1])
        return bench_one(lambda: torch.mm(a, b, out=out), warmup, reps,
                         best=True)

    # -------------------------------------------------- full-rank AdamW
    def full_adamw(self, plan):
        lr, wd = 1e-3, 0.01
        opts = self.adamw_options("torch", wd)
        warmup, reps = plan["warmup"], plan["reps"]
        err = self.full_check(1 << 20, opts, lr, wd)
        for size in plan["sizes"]:
            n = int(size * M)
            torch.manual_seed(n)
            w0, g = torch.randn(1, n), torch.randn(1, n)
            w = w0.clone()
            h = self.adamw(opts, 1, n)
            wv, gv = ot.tensor_view(w), ot.tensor_view(g)

            def ours():
                self.ctx.check(self.lib.owl_adamw_full(
                    h, ctypes.byref(wv), ctypes.byref(gv), lr), "adamw_full")

            # The copy and both torch variants interleaved with ours, so
            # that all see the same load from the rest of the machine.
            nc = int(min(n, 32 * M))
            cx, cy = torch.rand(nc), torch.rand(nc)
            opts_t = {}
            for foreach in (True, False):
                p = torch.nn.Parameter(w0.clone())
                p.grad = g
                opts_t[foreach] = torch.optim.AdamW(
                    [p], lr=lr, betas=(0.9, 0.999), eps=1e-8,
                    weight_decay=wd, foreach=foreach)
            # Also the one-pass in-place triad x += 0.5 y (12 B/elem): the
            # access pattern of an optimizer, whose stores hit lines it has
            # just read, where a copy's stores first fetch theirs.
            (o_ms, c_ms, t_true, t_false, tr_ms), _ = bench_n(
                [ours, lambda: cy.copy_(cx), opts_t[True].step,
                 opts_t[False].step, lambda: cx.add_(cy, alpha=0.5)],
                warmup, reps, best=(1, 4))
            res = {True: (o_ms, t_true), False: (o_ms, t_false)}
            gbs = 8 * nc / (c_ms * 1e-3) / 1e9
            triad = 12 * nc / (tr_ms * 1e-3) / 1e9
            limit = 28 * n / (gbs * 1e9) * 1e3
            self.lib.owl_adamw_free(h)
            table = size in plan["table"]
            note = (f"28 B/param at the copy's {gbs:.1f} GB/s; ours moves "
                    f"{28 * n / (o_ms * 1e-3) / 1e9:.1f} GB/s, the in-place "
                    f"triad {triad:.1f} GB/s; "
                    f"max abs dW vs torch {err:.1e} (5 steps, 1M)")
            for foreach in (True, False):
                self.row("adamw", f"AdamW full f32 (foreach={foreach})",
                         size_label(n), o_ms, res[foreach][1], limit,
                         "copy", note if foreach else "", table,
                         copy_gbs=gbs, triad_gbs=triad, err=err, n=n)
            self.point("adamw", n, size_label(n), ours=o_ms,
                       torch=res[True][1], torch2=res[False][1], limit=limit)

    def full_check(self, n, opts, lr, wd, steps=5):
        torch.manual_seed(1)
        w0 = torch.randn(1, n)
        w = w0.clone()
        p = torch.nn.Parameter(w0.clone())
        opt = torch.optim.AdamW([p], lr=lr, eps=1e-8, weight_decay=wd,
                                foreach=True)
        h = self.adamw(opts, 1, n)
        wv = ot.tensor_view(w)
        for _ in range(steps):
            g = torch.randn(1, n)
            gv = ot.tensor_view(g)
            self.ctx.check(self.lib.owl_adamw_full(
                h, ctypes.byref(wv), ctypes.byref(gv), lr), "adamw_full")
            p.grad = g
            opt.step()
        self.lib.owl_adamw_free(h)
        return (w - p.detach()).abs().max().item()

    # --------------------------------------------------- low-rank step
    def lowrank(self, plan):
        warmup, reps = plan["warmup"], plan["reps"]
        for (m, n) in plan["shapes"]:
            table = (m, n) in plan["table"]
            ranks = plan["ranks"] if table else [plan["series_rank"]]
            torch.manual_seed(m + n)
            g = torch.randn(m, n)
            w0 = torch.randn(m, n)
            for r in ranks:
                self.lowrank_one(m, n, r, g, w0, warmup, reps, table,
                                 r == plan["series_rank"])

    def lowrank_one(self, m, n, r, g, w0, warmup, reps, table, series):
        lr, b1, b2, eps, alpha = 1e-3, 0.9, 0.999, 1e-8, 1.0
        opts = self.adamw_options("galore", 0.0)
        opts.eps = eps
        # The basis method does not change a step's cost; RANDOMIZED keeps
        # the untimed first update (which computes it) cheap at 4096x11008.
        proj = self.galore(m, n, r, "randomized")
        left = bool(self.lib.owl_galore_is_left(proj))
        rs = (r, n) if left else (m, r)
        adam = self.adamw(opts, *rs)
        w = w0.clone()
        wv, gv = ot.tensor_view(w), ot.tensor_view(g)
        self.ctx.check(self.lib.owl_adamw_lowrank(
            adam, proj, ctypes.byref(wv), ctypes.byref(gv), lr),
            "adamw_lowrank")
        basis = torch.empty(m, r) if left else torch.empty(r, n)
        bv = ot.tensor_view(basis)
        self.ctx.check(self.lib.owl_galore_get_basis(
            proj, ctypes.byref(bv)), "get_basis")

        tw = w0.clone()
        mm, vv = torch.zeros(*rs), torch.zeros(*rs)
        R, N = torch.empty(*rs), torch.empty(*rs)
        state = {"t": 0}
        Bt = basis.t().contiguous()

        def theirs():
            if left:
                torch.mm(Bt, g, out=R)       # P^T G
            else:
                torch.mm(g, Bt, out=R)       # G Q^T
            mm.mul_(b1).add_(R, alpha=1 - b1)
            vv.mul_(b2).addcmul_(R, R, value=1 - b2)
            state["t"] += 1
            t = state["t"]
            torch.sqrt(vv, out=N).add_(eps)
            torch.div(mm, N, out=N)
            eta = lr * math.sqrt(1 - b2 ** t) / (1 - b1 ** t)
            if left:
                tw.addmm_(basis, N, alpha=-eta * alpha)
            else:
                tw.addmm_(N, basis, alpha=-eta * alpha)

        theirs()  # the matching first update

        def ours():
            self.ctx.check(self.lib.owl_adamw_lowrank(
                adam, proj, ctypes.byref(wv), ctypes.byref(gv), lr),
                "adamw_lowrank")

        # The limit: the step's two sgemms alone, same shapes, interleaved
        # with both steps. A nonzero alpha: BLAS skips the product when
        # alpha == 0; 1e-30 leaves the weights as they are.
        scratch = torch.empty(*rs)

        def gemms():
            if left:
                torch.mm(Bt, g, out=scratch)
                tw.addmm_(basis, N, alpha=1e-30)
            else:
                torch.mm(g, Bt, out=scratch)
                tw.addmm_(N, basis, alpha=1e-30)

        (o_ms, t_ms, limit), _ = bench_n([ours, theirs, gemms], warmup, reps,
                                         best=(2,))
        err = (w - tw).abs().max().item()
        refreshes = self.lib.owl_galore_refresh_count(proj)
        if refreshes != 1:
            raise RuntimeError(f"{refreshes} refreshes in timed steps")
        self.lib.owl_adamw_free(adam)
        self.lib.owl_galore_free(proj)
        flops = 4.0 * m * n * r
        note = (f"GEMMs {flops / 1e9:.2f} GFLOP at "
                f"{flops / (limit * 1e-3) / 1e9:.0f} GFLOP/s; torch's step "
                f"{t_ms / limit:.2f}x them; max abs dW vs torch {err:.1e}")
        self.row("lowrank", f"AdamW low-rank r={r}", shape_label(m, n), o_ms,
                 t_ms, limit, "sgemm", note, table, err=err, rank=r,
                 gemm_gflops=flops / (limit * 1e-3) / 1e9)
        if series:
            self.point("lowrank", m * n, shape_label(m, n), ours=o_ms,
                       torch=t_ms, limit=limit)

    # ---------------------------------------------------- refresh / SVD
    @staticmethod
    def gradient_like(m, n, seed):
        """Decaying spectrum (s_i = exp(-i/32) on min(256, m, n)
        directions) plus a small isotropic floor, like a trained layer's
        gradient."""
        torch.manual_seed(seed)
        k = min(256, m, n)
        s = torch.exp(-torch.arange(k, dtype=torch.float32) / 32)
        a = torch.linalg.qr(torch.randn(m, k))[0] * s
        b = torch.linalg.qr(torch.randn(n, k))[0].t()
        g = a @ b + 0.02 * torch.randn(m, n) / math.sqrt(max(m, n))
        return g.contiguous()

    def refresh(self, plan, exact_large):
        exact = dict(plan["exact"])
        if exact_large:
            exact.update(plan["exact_large"])
        for (m, n) in plan["shapes"]:
            table = (m, n) in plan["table"]
            ranks = plan["ranks"] if table else [plan["series_rank"]]
            self.refresh_shape(m, n, ranks, exact.get((m, n)), plan, table)

    def randomized_limit(self, g, m, n, k, left, reps, q=2):
        """The range finder's 2q+2 products of G with k vectors on exactly
        our shapes, as one call to time in turn with the refreshes; and
        the time of its 2q+1 QRs of the d x k / e x k blocks."""
        d, e = (m, n) if left else (n, m)
        x_e, x_d = torch.randn(k, e), torch.randn(k, d)
        o_d, o_e = torch.empty(k, d), torch.empty(k, e)
        gt = g.t()
        # left:  range (k x m) = x (k x n) G^T; sketch (k x n) = range G
        # right: range (k x n) = x (k x m) G;   sketch (k x m) = range G^T
        a_range, a_sketch = (gt, g) if left else (g, gt)

        def gemms():
            for _ in range(q + 1):
                torch.mm(x_e, a_range, out=o_d)
                torch.mm(x_d, a_sketch, out=o_e)

        yd, ye = torch.randn(d, k), torch.randn(e, k)
        qr = ((q + 1) * bench_one(lambda: torch.linalg.qr(yd), 1, reps, True)
              + q * bench_one(lambda: torch.linalg.qr(ye), 1, reps, True))
        return gemms, qr

    def refresh_shape(self, m, n, ranks, exact, plan, table):
        g = self.gradient_like(m, n, m + n)
        gv = ot.tensor_view(g)
        gg = g.pow(2).sum().item()
        # The torch.linalg.svd singular values, once per shape: the best
        # energy any rank-r basis can capture.
        sv = None

        def energy(basis, left):
            pr = basis.t() @ g if left else g @ basis.t()
            return pr.pow(2).sum().item() / gg

        # Highest rank first: at shapes where EXACT runs at one rank only, its
        # singular values then give every rank's best energy.
        for r in sorted(ranks, reverse=True):
            series = r == plan["series_rank"]
            k = r + 8
            probe = self.galore(m, n, r, "randomized")
            left = bool(self.lib.owl_galore_is_left(probe))
            self.lib.owl_galore_free(probe)
            gemms, qr_ms = self.randomized_limit(
                g, m, n, k, left, max(plan["reps"], 2))
            gemm_ms = None
            res = {}
            methods = ["randomized"]
            if exact is not None and r in exact[2]:
                methods.insert(0, "exact")
            for method in methods:
                proj = self.galore(m, n, r, method)
                b = torch.empty(m, r) if left else torch.empty(r, n)
                bv = ot.tensor_view(b)

                def run(proj=proj):
                    self.ctx.check(self.lib.owl_galore_refresh(
                        proj, ctypes.byref(gv)), "galore_refresh")

                if method == "exact":
                    warmup, reps = exact[0], exact[1]

                    def theirs():
                        return torch.linalg.svd(g, full_matrices=False)
                else:
                    # No warm-up call at 4096^2 and above: our workspace is
                    # allocated at create, and each call takes seconds.
                    warmup = plan["warmup"] if m * n < 1 << 24 else 0
                    reps = plan["reps"]

                    def theirs():
                        torch.manual_seed(0)
                        return torch.svd_lowrank(g, q=r + 8, niter=2)
                if method == "exact":
                    o_ms, t_ms, last = bench(run, theirs, warmup, reps)
                else:
                    # The limit's GEMMs in turn with both refreshes.
                    (o_ms, t_ms, gemm_ms), (_, last, _) = bench_n(
                        [run, theirs, gemms], warmup, reps, best=(2,))
                if method == "exact":
                    u, s, vh = last
                    sv = s
                    tb = u[:, :r] if left else vh[:r]
                else:
                    u, s, v = last
                    tb = u[:, :r] if left else v[:, :r].t()
                self.ctx.check(self.lib.owl_galore_get_basis(
                    proj, ctypes.byref(bv)), "get_basis")
                self.lib.owl_galore_free(proj)
                res[method] = dict(ours=o_ms, torch=t_ms, e=energy(b, left),
                                   e_torch=energy(tb, left))
                if method == "exact" and min(m, n) <= 2048:
                    # A cheaper exact route, measured for the notes: the
                    # top-r eigenvectors of the min-side Gram matrix (one
                    # GEMM-rate product, then a symmetric eigensolver).
                    # Not above 2048: torch 1.13's float32 eigh passes
                    # LAPACK a workspace size rounded through a float,
                    # which ssyevd rejects from about 2900 on.
                    def gram_eigh():
                        a = g @ g.t() if left else g.t() @ g
                        vec = torch.linalg.eigh(a)[1][:, -r:]
                        return vec if left else vec.t()
                    (gram_ms,), (vec,) = bench_n([gram_eigh], 0, reps)
                    res[method]["gram_ms"] = gram_ms
                    res[method]["gram_e"] = energy(vec, left)
            best = (None if sv is None
                    else sv[:r].pow(2).sum().item() / gg)
            gflops = 6 * 2.0 * m * n * k / (gemm_ms * 1e-3) / 1e9
            for method in methods:
                x = res[method]
                if method == "exact":
                    dd, DD = min(m, n), max(m, n)
                    # Householder reduction to bidiagonal form, directly or
                    # after a QR: the least a dense SVD does, at sgemm speed.
                    flops = min(4.0 * DD * dd * dd - 4.0 * dd ** 3 / 3,
                                2.0 * DD * dd * dd + 2.0 * dd ** 3)
                    limit = flops / (gflops * 1e9) * 1e3
                    label = "torch.linalg.svd"
                    note = (f"limit: bidiagonalisation {flops / 1e9:.1f} "
                            f"GFLOP at the sgemm's {gflops:.0f} GFLOP/s")
                    if "gram_ms" in x:
                        note += (f"; torch Gram + eigh {x['gram_ms']:.1f} ms"
                                 f", energy {x['gram_e']:.5f}")
                else:
                    limit = gemm_ms
                    label = "torch.svd_lowrank(q=r+8,niter=2)"
                    note = (f"limit: 6 GEMMs of G with k={k} vectors at "
                            f"{gflops:.0f} GFLOP/s; the 5 QRs of the same "
                            f"blocks alone {qr_ms:.1f} ms; torch "
                            f"{x['torch'] / limit:.2f}x the GEMMs")
                    if "exact" in res:
                        ex = res["exact"]
                        note += (f"; {ex['ours'] / x['ours']:.2f}x our EXACT's"
                                 f" speed, {x['e'] / ex['e'] * 100:.2f}% of"
                                 " its energy")
                self.row(f"refresh_{method}",
                         f"refresh {method.upper()} r={r}", shape_label(m, n),
                         x["ours"], x["torch"], limit, "sgemm", note, table,
                         energy=x["e"], energy_torch=x["e_torch"],
                         energy_best=best, torch_label=label, rank=r,
                         qr_ms=qr_ms if method == "randomized" else None,
                         exact_ms=res.get("exact", {}).get("ours"),
                         exact_energy=res.get("exact", {}).get("e"))
                if series:
                    self.point(f"refresh_{method}", m * n, shape_label(m, n),
                               ours=x["ours"], torch=x["torch"], limit=limit)

    # --------------------------------------------------------------- LOD
    def lod(self, plan, M_=13.0):
        warmup, reps = plan["warmup"], plan["reps"]
        for div in plan["divs"]:
            d, f = 4096 // div, 11008 // div
            shapes = [(d, d)] * 4 + [(f, d)] * 2 + [(d, f)]
            torch.manual_seed(7)
            ws, ss = [], []
            for (m, n) in shapes:
                w = torch.randn(m, n) * 0.02
                # A few heavy input channels, as LLaMa's activations have.
                s = torch.rand(n, dtype=torch.float64) * 100
                s[torch.randint(0, n, (max(1, n // 256),))] *= 1e4
                ws.append(w)
                ss.append(s.reshape(1, n).contiguous())
            wv = (ot.Tensor * 7)(*[ot.tensor_view(w) for w in ws])
            sv = (ot.Tensor * 7)(*[ot.tensor_view(s) for s in ss])
            sq = [s.sqrt().to(torch.float32) for s in ss]
            ratio = f64()

            def ours():
                self.ctx.check(self.lib.owl_lod_compute(
                    self.ctx.handle, wv, sv, 7, M_, ctypes.byref(ratio)),
                    "lod_compute")

            def theirs():
                total = sum((w.abs() * q).sum(dtype=torch.float64).item()
                            for w, q in zip(ws, sq))
                count = sum(w.numel() for w in ws)
                thr = M_ * total / count
                hits = sum(((w.abs() * q) > thr).sum().item()
                           for w, q in zip(ws, sq))
                return hits / count

            params = sum(m * n for m, n in shapes)
            nc = int(min(params, 32 * M))
            cx, cy = torch.rand(nc), torch.rand(nc)
            (_, c_ms), _ = bench_n([ours, lambda: cy.copy_(cx)], warmup, reps,
                                   best=(1,))
            gbs = 8 * nc / (c_ms * 1e-3) / 1e9
            o_ms, t_ms, theirs_ratio = bench(ours, theirs, warmup, reps)

            # The same call on a one-thread context: twice the time means
            # the call is bound by arithmetic, not by memory.
            def ours1():
                self.ctx1.check(self.lib.owl_lod_compute(
                    self.ctx1.handle, wv, sv, 7, M_, ctypes.byref(ratio)),
                    "lod_compute")
            o1_ms = bench_one(ours1, 0, reps)
            # One read of the weights (4 B/param) at the copy's rate.
            limit = 4 * params / (gbs * 1e9) * 1e3
            label = "LLaMa-7B" if div == 1 else f"LLaMa-7B/{div}"
            self.row("lod", "LOD ratio (owl_lod_compute)",
                     f"{label} layer {params / 1e6:.1f}M", o_ms, t_ms, limit,
                     "copy",
                     f"limit: one read of W (4 B/param) at the copy's "
                     f"{gbs:.1f} GB/s; ours reads "
                     f"{4 * params / (o_ms * 1e-3) / 1e9:.1f} GB/s; one "
                     f"thread {o1_ms:.1f} ms ({o1_ms / o_ms:.2f}x)",
                     div in plan["table"], ratio=ratio.value,
                     ratio_torch=theirs_ratio, one_thread_ms=o1_ms)
            self.point("lod", params, f"{params / 1e6:.1f}M", ours=o_ms,
                       torch=t_ms, limit=limit)


def machine(threads):
    cpu = "unknown"
    mem = ""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
        with open("/proc/meminfo") as fh:
            kib = int(fh.readline().split()[1])
            mem = f"{kib / 2**20:.0f} GiB"
    except OSError:
        pass
    blas = "unknown"
    try:
        ob = ctypes.CDLL("libopenblas.so.0")
        ob.openblas_get_config.restype = ctypes.c_char_p
        blas = ob.openblas_get_config().decode()
    except (OSError, AttributeError):
        pass
    return dict(cpu=cpu, cores=os.cpu_count(), mem=mem,
                kernel=platform.release(), blas=blas, threads=threads,
                torch=torch.__version__,
                wait=os.environ.get("OMP_WAIT_POLICY", "(unset)"))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="small shapes, few repeats (development)")
    ap.add_argument("--exact-large", action="store_true",
                    help="also EXACT at 4096^2 and 4096x11008 (one call "
                    "each side; several minutes)")
    ap.add_argument("--no-llama", action="store_true")
    ap.add_argument("--threads", type=int,
                    default=int(os.environ.get("OPENBLAS_NUM_THREADS", 0))
                    or os.cpu_count())
    ap.add_argument("--out", default="bench-results")
    args = ap.parse_args()
    blas = os.environ.get("OPENBLAS_NUM_THREADS")
    if blas is not None and int(blas) != args.threads:
        sys.exit(f"OPENBLAS_NUM_THREADS={blas} but --threads {args.threads}")
    torch.set_num_threads(args.threads)
    os.makedirs(os.path.join(args.out, "img"), exist_ok=True)
    plan = QUICK if args.quick else FULL
    b = Bench(args)
    version = b.lib.owl_version_string().decode()
    print(f"libowlore {version} vs torch {torch.__version__}, "
          f"{args.threads} threads{' (quick)' if args.quick else ''}",
          flush=True)
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    b.full_adamw(plan["adamw"])
    b.lowrank(plan["lowrank"])
    b.refresh(plan["refresh"], args.exact_large)
    b.lod(plan["lod"])
    b.ctx.close()
    b.ctx1.close()
    llama = []
    if not args.no_llama:
        exe = os.environ.get("BENCH_LLAMA")
        if not exe or not os.access(exe, os.X_OK):
            sys.exit("BENCH_LLAMA must name the built tests/bench_llama "
                     "(or pass --no-llama)")
        llama = vs_torch_llama.run(plan["llama"], args.threads, exe,
                                   lambda s: print(s, flush=True))
    secs = time.perf_counter() - t0
    cmd = "tests/bench/vs_torch.sh"
    flags = [f for f, on in (("--quick", args.quick),
                             ("--exact-large", args.exact_large),
                             ("--no-llama", args.no_llama)) if on]
    if flags:
        cmd += " build bench-results -- " + " ".join(flags)
    vs_torch_report.write(args.out, b.rows, b.points, llama,
                          dict(machine(args.threads), version=version,
                               command=cmd, seconds=secs,
                               quick=args.quick,
                               load=(load0, os.getloadavg()[0]),
                               lowrank_rank=plan["lowrank"]["series_rank"],
                               refresh_rank=plan["refresh"]["series_rank"]))
    print(open(os.path.join(args.out, "report.md")).read())


if __name__ == "__main__":
    main()
