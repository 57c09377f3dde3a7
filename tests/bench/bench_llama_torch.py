"""One training step of the LLaMa example's model in PyTorch on the CPU, timed.

Usage: bench_llama_torch.py DIM HIDDEN LAYERS HEADS KV_HEADS VOCAB SEQ BATCH
                            TIED THREADS WARMUP REPS
                            [METHOD RANK GAMMA PERIOD UPDATE_GAP CLIP SCALE]

The baseline of tests/bench/bench_llama.c, which runs this script in the
same benchmark: the same decoder (RMSNorm, rotate_half RoPE, grouped-query
causal attention, SwiGLU MLP, final norm, LM head tied or not, mean
cross-entropy) with the same shapes and the same number of tokens, in
float32, written as a PyTorch user would write it: nn.Linear layers,
precomputed RoPE tables, a cached causal mask, torch.optim.AdamW with its
foreach implementation. One step = forward, backward, optimizer step,
zero_grad. Weights and ids are random (the time does not depend on the
values). Prints "torch_step_seconds MEDIAN MIN MAX REPS", then
"torch_peak_rss_kib N" (the process's peak) and "torch_import_rss_kib N"
(its peak right after importing torch, before the model).

METHOD full (default) is the step above. METHOD owlore is the same step
as the C example's OwLore optimizer takes it, written in plain PyTorch:
every PERIOD steps GAMMA of the decoder layers are drawn (uniformly; the
draw's law does not change the cost) and the others frozen
(requires_grad off, so autograd computes no weight gradient for them);
the drawn layers' seven matrices take a GaLore AdamW step (rank RANK,
right projection when rows >= cols, subspace from torch.linalg.svd before
a matrix's update 1, UPDATE_GAP+1, ..., scale SCALE), every other trained
tensor (embeddings, head, norms) torch.optim.AdamW(foreach=True). CLIP > 0
clips the global gradient norm first (torch.nn.utils.clip_grad_norm_), as
the C optimizer's max_grad_norm does.
"""
import math
import resource
import statistics
import sys
import time

import torch
import torch.nn.functional as F

IMPORT_RSS_KIB = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


class RMSNorm(torch.nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


class Layer(torch.nn.Module):
    def __init__(self, dim, hidden, heads, kv_heads, eps):
        super().__init__()
        hd = dim // heads
        self.heads, self.kv_heads, self.hd = heads, kv_heads, hd
        self.norm1, self.norm2 = RMSNorm(dim, eps), RMSNorm(dim, eps)
        self.q = torch.nn.Linear(dim, heads * hd, bias=False)
        self.k = torch.nn.Linear(dim, kv_heads * hd, bias=False)
        self.v = torch.nn.Linear(dim, kv_heads * hd, bias=False)
        self.o = torch.nn.Linear(heads * hd, dim, bias=False)
        self.gate = torch.nn.Linear(dim, hidden, bias=False)
        self.up = torch.nn.Linear(dim, hidden, bias=False)
        self.down = torch.nn.Linear(hidden, dim, bias=False)

    def forward(self, x, cos, sin, mask):
        B, T, _ = x.shape
        a = self.norm1(x)
        q = self.q(a).view(B, T, self.heads, self.hd).transpose(1, 2)
        k = self.k(a).view(B, T, self.kv_heads, self.hd).transpose(1, 2)
        v = self.v(a).view(B, T, self.kv_heads, self.hd).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        rep = self.heads // self.kv_heads
        if rep > 1:
            k = k.repeat_interleave(rep, dim=1)
            v = v.repeat_interleave(rep, dim=1)
        s = (q @ k.transpose(-1, -2)) * (1.0 / math.sqrt(self.hd))
        p = torch.softmax(s.masked_fill(mask, float("-inf")), dim=-1)
        o = (p @ v).transpose(1, 2).reshape(B, T, -1)
        x = x + self.o(o)
        f = self.norm2(x)
        return x + self.down(F.silu(self.gate(f)) * self.up(f))


class Llama(torch.nn.Module):
    def __init__(self, dim, hidden, layers, heads, kv_heads, vocab, seq, tied):
        super().__init__()
        eps = 1e-5
        self.embed = torch.nn.Embedding(vocab, dim)
        self.layers = torch.nn.ModuleList(
            [Layer(dim, hidden, heads, kv_heads, eps) for _ in range(layers)])
        self.norm = RMSNorm(dim, eps)
        self.head = torch.nn.Linear(dim, vocab, bias=False)
        if tied:
            self.head.weight = self.embed.weight
        hd = dim // heads
        inv = 1.0 / (10000.0 ** (torch.arange(0, hd, 2).float() / hd))
        freqs = torch.outer(torch.arange(seq).float(), inv)
        emb = torch.cat([freqs, freqs], dim=-1)
        self.register_buffer("cos", emb.cos(), persistent=False)
        self.register_buffer("sin", emb.sin(), persistent=False)
        self.register_buffer("mask", torch.triu(
            torch.ones(seq, seq, dtype=torch.bool), diagonal=1), persistent=False)

    def forward(self, tokens, targets):
        T = tokens.shape[1]
        x = self.embed(tokens)
        cos, sin, mask = self.cos[:T], self.sin[:T], self.mask[:T, :T]
        for layer in self.layers:
            x = layer(x, cos, sin, mask)
        logits = self.head(self.norm(x))
        return F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.view(-1))


class GaloreAdamW:
    """GaLore AdamW (libowlore's default semantics: eps on the
    uncorrected sqrt(v), bias correction folded into the step size) over
    the matrices that have a gradient this step."""

    def __init__(self, params, lr, rank, gap, scale, eps=1e-6,
                 betas=(0.9, 0.999)):
        self.params, self.lr, self.rank, self.gap = params, lr, rank, gap
        self.scale, self.eps, self.betas = scale, eps, betas
        self.state = {}

    @torch.no_grad()
    def step(self):
        b1, b2 = self.betas
        for p in self.params:
            g = p.grad
            if g is None:
                continue
            st = self.state.setdefault(p, {"t": 0})
            right = g.shape[0] >= g.shape[1]
            if st["t"] % self.gap == 0:
                u, s, vh = torch.linalg.svd(g, full_matrices=False)
                st["q"] = (vh[:self.rank] if right
                           else u[:, :self.rank]).contiguous()
            q = st["q"]
            r = g @ q.t() if right else q.t() @ g
            if "m" not in st:
                st["m"], st["v"] = torch.zeros_like(r), torch.zeros_like(r)
            m, v = st["m"], st["v"]
            m.mul_(b1).add_(r, alpha=1 - b1)
            v.mul_(b2).addcmul_(r, r, value=1 - b2)
            st["t"] += 1
            t = st["t"]
            n = m / (v.sqrt().add_(self.eps))
            eta = self.lr * math.sqrt(1 - b2 ** t) / (1 - b1 ** t)
            if right:
                p.addmm_(n, q, alpha=-eta * self.scale)
            else:
                p.addmm_(q, n, alpha=-eta * self.scale)


def main():
    (dim, hidden, layers, heads, kv, vocab, seq, batch, tied, threads,
     warmup, reps) = (int(a) for a in sys.argv[1:13])
    method = sys.argv[13] if len(sys.argv) > 13 else "full"
    rank, gamma, period, gap = (int(a) for a in sys.argv[14:18]) \
        if len(sys.argv) > 17 else (64, 2, 50, 200)
    clip, scale = (float(a) for a in sys.argv[18:20]) \
        if len(sys.argv) > 19 else (0.0, 0.25)
    if method not in ("full", "owlore"):
        sys.exit(f"method {method} is not full or owlore")
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = Llama(dim, hidden, layers, heads, kv, vocab, seq, bool(tied))
    tokens = torch.randint(0, vocab, (batch, seq))
    targets = torch.randint(0, vocab, (batch, seq))
    params = list(model.parameters())
    if method == "full":
        opt = torch.optim.AdamW(params, lr=1e-4, eps=1e-6,
                                weight_decay=0.0, foreach=True)
        galore, blocks = None, []
    else:
        names = ("q", "k", "v", "o", "gate", "up", "down")
        blocks = [list(layer.parameters()) for layer in model.layers]
        low = [getattr(layer, nm).weight for layer in model.layers
               for nm in names]
        low_ids = {id(p) for p in low}
        opt = torch.optim.AdamW([p for p in params if id(p) not in low_ids],
                                lr=1e-4, eps=1e-6, weight_decay=0.0,
                                foreach=True)
        galore = GaloreAdamW(low, 1e-4, rank, gap, scale)
    draw = torch.Generator().manual_seed(1)
    counter = {"step": 0}

    def step():
        if galore is not None and counter["step"] % period == 0:
            active = set(torch.randperm(layers, generator=draw)[:gamma]
                         .tolist())
            for i, block in enumerate(blocks):
                for p in block:
                    p.requires_grad_(i in active)
        counter["step"] += 1
        loss = model(tokens, targets)
        loss.backward()
        if clip > 0:
            torch.nn.utils.clip_grad_norm_(
                [p for p in params if p.grad is not None], clip)
        opt.step()
        if galore is not None:
            galore.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(warmup):
        step()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    print(f"torch_step_seconds {statistics.median(times):.6f} {min(times):.6f} "
          f"{max(times):.6f} {reps}")
    print(f"torch_peak_rss_kib "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}")
    print(f"torch_import_rss_kib {IMPORT_RSS_KIB}")


if __name__ == "__main__":
    main()
