"""The LLaMa example's training step against the same step in PyTorch.

Each (model, method, side) runs in its own process, one after the other,
so that each peak RSS is that side's alone: the C
side is tests/bench/bench_llama --one (examples/llama's model, forward,
backward, owl_optimizer_step), the torch side bench_llama_torch.py with
the same argument list (same shapes, batch, threads, optimizer settings).
"""

import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))

# The example's default model (tiny_config in examples/llama/train.c, with
# its default batch, sequence length and OwLore settings) and a ~110M one.
CONFIGS = {
    "tiny": dict(label="tiny (examples/llama default)", dim=96, hidden=256,
                 layers=4, heads=4, kv=2, vocab=256, seq=64, batch=16,
                 tied=0, rank=8, gamma=2, period=10, gap=50, clip=1.0,
                 scale=0.25),
    "110m": dict(label="110M (dim 768, 12 layers)", dim=768, hidden=2048,
                 layers=12, heads=12, kv=12, vocab=32000, seq=256, batch=1,
                 tied=1, rank=128, gamma=2, period=10, gap=50, clip=1.0,
                 scale=0.25),
}


def _args(c, threads, warmup, reps, method):
    return [str(v) for v in (
        c["dim"], c["hidden"], c["layers"], c["heads"], c["kv"], c["vocab"],
        c["seq"], c["batch"], c["tied"], threads, warmup, reps, method,
        c["rank"], c["gamma"], c["period"], c["gap"], c["clip"],
        c["scale"])]


def _run(cmd):
    """Output lines as {key: [values]}.

    Each program reports its own peak RSS (getrusage(RUSAGE_SELF)). Linux
    carries a process's peak RSS across exec, and a child forked from this
    interpreter starts with the interpreter's pages counted, so the program
    is started from a small shell that forks it (the trailing "exit")
    instead of directly: the program's peak is then its own."""
    wrapped = ["/bin/sh", "-c", '"$@"; exit $?', "sh"] + cmd
    p = subprocess.run(wrapped, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True)
    out = p.stdout
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({p.returncode}):\n"
                           f"{out}")
    vals = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 2:
            vals[parts[0]] = parts[1:]
    return vals


def step(name, method, side, threads, warmup, reps, bench_llama):
    c = CONFIGS[name]
    args = _args(c, threads, warmup, reps, method)
    if side == "c":
        vals = _run([bench_llama, "--one"] + args)
        secs = float(vals["c_step_seconds"][0])
        rss, base = int(vals["c_peak_rss_kib"][0]), None
    else:
        vals = _run([sys.executable,
                     os.path.join(HERE, "bench_llama_torch.py")] + args)
        secs = float(vals["torch_step_seconds"][0])
        rss = int(vals["torch_peak_rss_kib"][0])
        base = int(vals["torch_import_rss_kib"][0])
    tokens = c["batch"] * c["seq"]
    return dict(config=name, label=c["label"], method=method, side=side,
                step_s=secs, tokens_s=tokens / secs, rss_kib=rss,
                import_rss_kib=base, tokens=tokens, reps=reps)


def params(c):
    """Parameter count (the head counted once when tied), as
    llama_param_count computes it."""
    hd = c["dim"] // c["heads"]
    layer = (c["dim"] * hd * (c["heads"] * 2 + c["kv"] * 2)
             + 3 * c["dim"] * c["hidden"] + 2 * c["dim"])
    emb = c["vocab"] * c["dim"] * (1 if c["tied"] else 2)
    return c["layers"] * layer + emb + c["dim"]


def run(plan, threads, bench_llama, log, rounds=2):
    """plan: list of (config name, warmup, reps). Per method the C and the
    torch process alternate, `rounds` times each; a side's figure is its
    faster round (a process that met a burst of other work on the shared
    machine is set aside), its peak RSS the larger."""
    rows = []
    for name, warmup, reps in plan:
        for method in ("full", "owlore"):
            runs = {"c": [], "torch": []}
            for _ in range(rounds):
                for side in ("c", "torch"):
                    runs[side].append(step(name, method, side, threads,
                                           warmup, reps, bench_llama))
            pair = {}
            for side, rs in runs.items():
                best = dict(min(rs, key=lambda x: x["step_s"]))
                best["rss_kib"] = max(x["rss_kib"] for x in rs)
                best["rounds"] = [x["step_s"] for x in rs]
                pair[side] = best
                rows.append(best)
            log(f"  LLaMa {name:5s} {method:6s} C {pair['c']['step_s']:.3f} s"
                f" ({pair['c']['tokens_s']:.0f} tok/s, "
                f"{pair['c']['rss_kib'] / 1024:.0f} MiB)  torch "
                f"{pair['torch']['step_s']:.3f} s "
                f"({pair['torch']['tokens_s']:.0f} tok/s, "
                f"{pair['torch']['rss_kib'] / 1024:.0f} MiB)  rounds C "
                + "/".join(f"{x:.3f}" for x in pair["c"]["rounds"])
                + " torch "
                + "/".join(f"{x:.3f}" for x in pair["torch"]["rounds"]))
    return rows
