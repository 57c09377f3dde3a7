"""One training step of the LLaMa example's model in PyTorch on the CPU, timed.

Usage: bench_llama_torch.py DIM HIDDEN LAYERS HEADS KV_HEADS VOCAB SEQ BATCH
                            TIED THREADS WARMUP REPS

The baseline of tests/bench/bench_llama.c, which runs this script in the
same benchmark: the same decoder (RMSNorm, rotate_half RoPE, grouped-query
causal attention, SwiGLU MLP, final norm, LM head tied or not, mean
cross-entropy) with the same shapes and the same number of tokens, in
float32, written as a PyTorch user would write it: nn.Linear layers,
precomputed RoPE tables, a cached causal mask, torch.optim.AdamW with its
foreach implementation. One step = forward, backward, optimizer step,
zero_grad. Weights and ids are random (the time does not depend on the
values). Prints one line: "torch_step_seconds MEDIAN MIN MAX REPS".
"""
import math
import statistics
import sys
import time

import torch
import torch.nn.functional as F


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


def main():
    (dim, hidden, layers, heads, kv, vocab, seq, batch, tied, threads,
     warmup, reps) = (int(a) for a in sys.argv[1:13])
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = Llama(dim, hidden, layers, heads, kv, vocab, seq, bool(tied))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, eps=1e-6,
                            weight_decay=0.0, foreach=True)
    tokens = torch.randint(0, vocab, (batch, seq))
    targets = torch.randint(0, vocab, (batch, seq))

    def step():
        loss = model(tokens, targets)
        loss.backward()
        opt.step()
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


if __name__ == "__main__":
    main()
