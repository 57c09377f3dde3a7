#!/usr/bin/python3
"""libowlore against PyTorch (CPU) in one process, same inputs and threads.

Each row times our call and the PyTorch equivalent on the same shapes,
dtypes and thread count, after a warm-up, with interleaved repeats (ours,
torch, ours, ...), and reports medians. Limits (copy bandwidth, the GEMMs of
a low-rank step) are measured in the same run.

Usage: OWLORE_LIB=build/src/libowlore.so.0 /usr/bin/python3 vs_torch.py
       [--quick] [--threads N] [--out DIR]
Writes DIR/report.md, DIR/results.csv, DIR/scaling.svg.
"""

import argparse
import ctypes
import csv
import math
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "examples", "pytorch"))

import torch  # noqa: E402
import owlore_torch as ot  # noqa: E402

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


def declare(lib):
    for name, (res, args) in EXTRA.items():
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = res, args


def bench(ours, theirs, warmup, reps):
    """Interleaved medians in ms: (ours, theirs)."""
    for _ in range(warmup):
        ours()
        theirs()
    a, b = [], []
    for _ in range(reps):
        t0 = time.perf_counter()
        ours()
        t1 = time.perf_counter()
        theirs()
        t2 = time.perf_counter()
        a.append((t1 - t0) * 1e3)
        b.append((t2 - t1) * 1e3)
    return statistics.median(a), statistics.median(b)


def bench_one(fn, warmup, reps):
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        ts.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(ts)


class Bench:
    def __init__(self, args):
        self.args = args
        self.ctx = ot.Context("cpu", args.threads)
        self.lib = self.ctx.lib
        declare(self.lib)
        self.rows = []
        self.scaling = []  # (params, ours ms, torch foreach ms, copy-limit ms)

    def row(self, op, shape, ours, torch_ms, limit=None, note=""):
        frac = "" if limit is None else limit / ours
        self.rows.append(dict(op=op, shape=shape, ours_ms=ours,
                              torch_ms=torch_ms, speedup=torch_ms / ours,
                              limit_ms=limit, frac=frac, note=note))
        print(f"  {op:34s} {shape:22s} ours {ours:9.3f} ms  torch "
              f"{torch_ms:9.3f} ms  x{torch_ms / ours:5.2f}  {note}",
              flush=True)

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
    def bandwidth(self, n, warmup, reps):
        x, y = torch.rand(n), torch.rand(n)
        copy = bench_one(lambda: y.copy_(x), warmup, reps)
        # x.mul_(0.5).add_(y) is two passes (20 B/elem); the one-pass
        # triad x += 0.5 y reads x, y and writes x (12 B/elem).
        triad = bench_one(lambda: x.mul_(0.5).add_(y), warmup, reps)
        triad1 = bench_one(lambda: x.add_(y, alpha=0.5), warmup, reps)
        gbs = lambda b, ms: b / (ms * 1e-3) / 1e9  # noqa: E731
        return dict(copy=gbs(8 * n, copy), triad2=gbs(20 * n, triad),
                    triad1=gbs(12 * n, triad1))

    # -------------------------------------------------- full-rank AdamW
    def full_adamw(self, sizes, warmup, reps):
        lr, wd = 1e-3, 0.01
        opts = self.adamw_options("torch", wd)
        for n in sizes:
            bw = self.bandwidth(n, warmup, reps)
            limit = 28 * n / (bw["copy"] * 1e9) * 1e3
            torch.manual_seed(n)
            w0, g = torch.randn(1, n), torch.randn(1, n)
            w = w0.clone()
            h = self.adamw(opts, 1, n)
            wv, gv = ot.tensor_view(w), ot.tensor_view(g)

            def ours():
                self.ctx.check(self.lib.owl_adamw_full(
                    h, ctypes.byref(wv), ctypes.byref(gv), lr), "adamw_full")

            res = {}
            for foreach in (True, False):
                p = torch.nn.Parameter(w0.clone())
                p.grad = g
                opt = torch.optim.AdamW([p], lr=lr, betas=(0.9, 0.999),
                                        eps=1e-8, weight_decay=wd,
                                        foreach=foreach)
                o_ms, t_ms = bench(ours, opt.step, warmup, reps)
                res[foreach] = (o_ms, t_ms, p.detach())
            # Ours took 2x(warmup+reps) steps, torch foreach's (warmup+reps):
            # compare weights after equal step counts on a fresh pair.
            err = self.full_check(n if n <= 1 << 20 else 1 << 20, opts, lr, wd)
            o_ms = statistics.median([res[True][0], res[False][0]])
            note = (f"copy {bw['copy']:.1f} GB/s, triad mul_+add_ "
                    f"{bw['triad2']:.1f} GB/s, one-pass add_ "
                    f"{bw['triad1']:.1f} GB/s; max abs dW vs torch {err:.1e}")
            self.row("AdamW full f32 (foreach=True)", f"{n / 2**20:.0f}M",
                     o_ms, res[True][1], limit, note)
            self.row("AdamW full f32 (foreach=False)", f"{n / 2**20:.0f}M",
                     o_ms, res[False][1], limit, "")
            self.scaling.append((n, o_ms, res[True][1], limit))
            self.lib.owl_adamw_free(h)

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
    def lowrank(self, shapes, ranks, warmup, reps):
        lr, b1, b2, eps, alpha = 1e-3, 0.9, 0.999, 1e-8, 1.0
        opts = self.adamw_options("galore", 0.0)
        opts.eps = eps
        for (m, n) in shapes:
            torch.manual_seed(m)
            g = torch.randn(m, n)
            w0 = torch.randn(m, n)
            for r in ranks:
                proj = self.galore(m, n, r, "exact")
                left = bool(self.lib.owl_galore_is_left(proj))
                rs = (r, n) if left else (m, r)
                adam = self.adamw(opts, *rs)
                w = w0.clone()
                wv, gv = ot.tensor_view(w), ot.tensor_view(g)
                # The first update computes the subspace; the gap keeps the
                # timed ones from refreshing (checked below).
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

                o_ms, t_ms = bench(ours, theirs, warmup, reps)
                err = (w - tw).abs().max().item()
                refreshes = self.lib.owl_galore_refresh_count(proj)
                if refreshes != 1:
                    raise RuntimeError(f"{refreshes} refreshes in timed steps")

                # A nonzero alpha: BLAS skips the product when alpha == 0.
                def gemms():
                    if left:
                        torch.mm(Bt, g, out=R)
                        tw.addmm_(basis, N, alpha=1e-30)
                    else:
                        torch.mm(g, Bt, out=R)
                        tw.addmm_(N, basis, alpha=1e-30)
                limit = bench_one(gemms, warmup, reps)
                self.row(f"AdamW low-rank r={r}", f"{m}x{n}", o_ms, t_ms,
                         limit, f"max abs dW vs torch {err:.1e}")
                self.lib.owl_adamw_free(adam)
                self.lib.owl_galore_free(proj)

    # ---------------------------------------------------- refresh / SVD
    @staticmethod
    def gradient_like(m, n, seed):
        """Decaying spectrum (s_i = exp(-i/32) on 256 directions) plus a
        small isotropic floor, like a trained layer's gradient."""
        torch.manual_seed(seed)
        k = 256
        s = torch.exp(-torch.arange(k, dtype=torch.float32) / 32)
        a = torch.linalg.qr(torch.randn(m, k))[0] * s
        b = torch.linalg.qr(torch.randn(n, k))[0].t()
        g = a @ b + 0.02 * torch.randn(m, n) / math.sqrt(max(m, n))
        return g.contiguous()

    def refresh(self, shapes, warmup, reps):
        for (m, n, r) in shapes:
            g = self.gradient_like(m, n, m + r)
            gv = ot.tensor_view(g)
            gg = g.pow(2).sum().item()

            def energy(basis, left):
                pr = basis.t() @ g if left else g @ basis.t()
                return pr.pow(2).sum().item() / gg

            ours = {}
            for method in ("exact", "randomized"):
                proj = self.galore(m, n, r, method)
                left = bool(self.lib.owl_galore_is_left(proj))
                b = torch.empty(m, r) if left else torch.empty(r, n)
                bv = ot.tensor_view(b)

                def run(proj=proj):
                    self.ctx.check(self.lib.owl_galore_refresh(
                        proj, ctypes.byref(gv)), "galore_refresh")

                if method == "exact":
                    def theirs():
                        u, s, vh = torch.linalg.svd(g, full_matrices=False)
                        return u[:, :r] if left else vh[:r]
                else:
                    def theirs():
                        torch.manual_seed(0)
                        u, s, v = torch.svd_lowrank(g, q=r + 8, niter=2)
                        return u[:, :r] if left else v[:, :r].t()
                o_ms, t_ms = bench(run, theirs, warmup, reps)
                self.ctx.check(self.lib.owl_galore_get_basis(
                    proj, ctypes.byref(bv)), "get_basis")
                e_ours, e_torch = energy(b, left), energy(theirs(), left)
                ours[method] = (o_ms, e_ours)
                label = ("torch.linalg.svd" if method == "exact"
                         else "torch.svd_lowrank(q=r+8,niter=2)")
                self.row(f"refresh {method.upper()} r={r}", f"{m}x{n}",
                         o_ms, t_ms, None,
                         f"energy ours {e_ours:.5f}, {label} {e_torch:.5f}")
                self.rows[-1]["energy"] = e_ours
                self.rows[-1]["energy_torch"] = e_torch
                self.lib.owl_galore_free(proj)
            ex, rnd = ours["exact"], ours["randomized"]
            print(f"  RANDOMIZED vs EXACT at {m}x{n} r={r}: "
                  f"{ex[0] / rnd[0]:.2f}x faster, energy "
                  f"{rnd[1] / ex[1] * 100:.2f}% of EXACT's", flush=True)
            self.rows[-1]["note"] += (f"; {ex[0] / rnd[0]:.2f}x EXACT's speed,"
                                      f" {rnd[1] / ex[1] * 100:.2f}% of its "
                                      "energy")

    # --------------------------------------------------------------- LOD
    def lod(self, width_div, warmup, reps, M=13.0):
        d, f = 4096 // width_div, 11008 // width_div
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
                self.ctx.handle, wv, sv, 7, M, ctypes.byref(ratio)),
                "lod_compute")

        out = {}

        def theirs():
            total = sum((w.abs() * q).sum(dtype=torch.float64).item()
                        for w, q in zip(ws, sq))
            count = sum(w.numel() for w in ws)
            thr = M * total / count
            hits = sum(((w.abs() * q) > thr).sum().item()
                       for w, q in zip(ws, sq))
            out["r"] = hits / count

        o_ms, t_ms = bench(ours, theirs, warmup, reps)
        params = sum(m * n for m, n in shapes)
        label = "LLaMa-7B" if width_div == 1 else f"LLaMa-7B 1/{width_div}"
        self.row("LOD ratio (owl_lod_compute)",
                 f"{label} layer {params / 1e6:.0f}M", o_ms, t_ms, None,
                 f"ratio ours {ratio.value:.6g}, torch {out['r']:.6g}")


# ------------------------------------------------------------- output
def fmt(x, spec=".3f"):
    return "" if x is None or x == "" else format(x, spec)


def table(rows):
    head = ("| operation | shape | ours ms | torch ms | speedup | limit ms "
            "| fraction of limit | energy (ours / torch) | notes |\n"
            "|---|---|---:|---:|---:|---:|---:|---|---|\n")
    lines = []
    for r in rows:
        en = ""
        if "energy" in r:
            en = f"{r['energy']:.5f} / {r['energy_torch']:.5f}"
        lines.append(f"| {r['op']} | {r['shape']} | {fmt(r['ours_ms'])} | "
                     f"{fmt(r['torch_ms'])} | {r['speedup']:.2f}x | "
                     f"{fmt(r['limit_ms'])} | {fmt(r['frac'], '.0%')} | "
                     f"{en} | {r['note']} |")
    return head + "\n".join(lines) + "\n"


def svg(points, path):
    """Log-log time vs parameters: ours, torch foreach, the copy limit."""
    W, H, L, B, Rm, Tm = 620, 380, 70, 50, 190, 20
    xs = [p[0] for p in points]
    ys = [v for p in points for v in p[1:]]
    x0, x1 = math.log10(min(xs)) - 0.1, math.log10(max(xs)) + 0.1
    y0, y1 = math.log10(min(ys)) - 0.15, math.log10(max(ys)) + 0.15
    px = lambda x: L + (math.log10(x) - x0) / (x1 - x0) * (W - L - Rm)  # noqa
    py = lambda y: H - B - (math.log10(y) - y0) / (y1 - y0) * (H - B - Tm)  # noqa
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" '
           f'height="{H}" font-family="sans-serif" font-size="11">',
           f'<rect width="{W}" height="{H}" fill="white"/>',
           f'<line x1="{L}" y1="{H - B}" x2="{W - Rm}" y2="{H - B}" '
           'stroke="black"/>',
           f'<line x1="{L}" y1="{Tm}" x2="{L}" y2="{H - B}" stroke="black"/>']
    for e in range(math.ceil(y0), math.floor(y1) + 1):
        y = py(10 ** e)
        out.append(f'<line x1="{L}" y1="{y:.1f}" x2="{W - Rm}" y2="{y:.1f}" '
                   'stroke="#ddd"/>')
        out.append(f'<text x="{L - 6}" y="{y + 4:.1f}" text-anchor="end">'
                   f'{10 ** e:g}</text>')
    for x in xs:
        out.append(f'<text x="{px(x):.1f}" y="{H - B + 16}" '
                   f'text-anchor="middle">{x / 2**20:.0f}M</text>')
    out.append(f'<text x="{(L + W - Rm) / 2}" y="{H - 12}" '
               'text-anchor="middle">parameters (f32)</text>')
    out.append(f'<text x="16" y="{(H - B) / 2}" transform="rotate(-90 16 '
               f'{(H - B) / 2})" text-anchor="middle">ms per step</text>')
    series = [("ours, owl_adamw_full", 1, "#d62728", ""),
              ("torch AdamW foreach", 2, "#1f77b4", ""),
              ("copy-bandwidth limit", 3, "#555", ' stroke-dasharray="5,4"')]
    for i, (name, k, col, dash) in enumerate(series):
        pts = " ".join(f"{px(p[0]):.1f},{py(p[k]):.1f}" for p in points)
        out.append(f'<polyline points="{pts}" fill="none" stroke="{col}" '
                   f'stroke-width="2"{dash}/>')
        for p in points:
            out.append(f'<circle cx="{px(p[0]):.1f}" cy="{py(p[k]):.1f}" '
                       f'r="3" fill="{col}"/>')
        ly = Tm + 14 + 18 * i
        out.append(f'<line x1="{W - Rm + 10}" y1="{ly - 4}" '
                   f'x2="{W - Rm + 28}" y2="{ly - 4}" stroke="{col}" '
                   f'stroke-width="2"{dash}/>')
        out.append(f'<text x="{W - Rm + 32}" y="{ly}">{name}</text>')
    out.append("</svg>\n")
    with open(path, "w") as fh:
        fh.write("\n".join(out))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--threads", type=int,
                    default=int(os.environ.get("OPENBLAS_NUM_THREADS", 0))
                    or os.cpu_count())
    ap.add_argument("--out", default="bench-results")
    args = ap.parse_args()
    blas = os.environ.get("OPENBLAS_NUM_THREADS")
    if blas is not None and int(blas) != args.threads:
        sys.exit(f"OPENBLAS_NUM_THREADS={blas} but --threads {args.threads}")
    torch.set_num_threads(args.threads)
    os.makedirs(args.out, exist_ok=True)
    b = Bench(args)
    print(f"libowlore {b.lib.owl_version_string().decode()} vs torch "
          f"{torch.__version__}, {args.threads} threads"
          f"{' (quick)' if args.quick else ''}", flush=True)
    t0 = time.perf_counter()
    if args.quick:
        b.full_adamw([1 << 20, 1 << 22], 2, 5)
        b.lowrank([(1024, 1024)], [8, 128], 2, 5)
        b.refresh([(1024, 2752, 128)], 1, 2)
        b.lod(4, 1, 2)
    else:
        b.full_adamw([1 << 20, 1 << 22, 1 << 24], 3, 9)
        b.lowrank([(1024, 1024), (4096, 4096)], [8, 128], 2, 7)
        b.refresh([(1024, 2752, 128), (2048, 5504, 128)], 1, 3)
        b.refresh([(2048, 5504, 256)], 1, 3)
        b.lod(1, 1, 3)
    secs = time.perf_counter() - t0
    md = table(b.rows)
    cmd = "tests/bench/vs_torch.sh" + (" (--quick)" if args.quick else "")
    header = (f"libowlore {b.lib.owl_version_string().decode()} vs PyTorch "
              f"{torch.__version__} (CPU), {args.threads} threads, "
              f"{cmd}, {secs:.0f} s.\n\n")
    print("\n" + md)
    with open(os.path.join(args.out, "report.md"), "w") as fh:
        fh.write(header + md)
    with open(os.path.join(args.out, "results.csv"), "w", newline="") as fh:
        wr = csv.writer(fh)
        wr.writerow(["operation", "shape", "ours_ms", "torch_ms", "speedup",
                     "limit_ms", "fraction_of_limit", "energy_ours",
                     "energy_torch", "notes"])
        for r in b.rows:
            wr.writerow([r["op"], r["shape"], f"{r['ours_ms']:.4f}",
                         f"{r['torch_ms']:.4f}", f"{r['speedup']:.3f}",
                         fmt(r["limit_ms"], ".4f"), fmt(r["frac"], ".3f"),
                         fmt(r.get("energy"), ".6f"),
                         fmt(r.get("energy_torch"), ".6f"), r["note"]])
    svg(b.scaling, os.path.join(args.out, "scaling.svg"))
    b.ctx.close()


if __name__ == "__main__":
    main()
