"""Reference data for tests/test_llama_ckpt.c: the logits of the llama2.c
checkpoint stories260K.bin, computed here in float64 with PyTorch the way
llama2.c's own forward pass computes them: RoPE on interleaved pairs
(2i, 2i+1) of each head, RMSNorm with eps 1e-5, grouped-query causal
attention, w2(silu(w1 x) * w3 x), the classifier (the embedding when the
vocabulary size in the header is positive). The C test loads the same file
with ckpt_load_llama2c (which reorders wq and wk rows for Hugging Face's
rotate_half RoPE) and runs the model's forward pass: equal logits show the
reordering keeps the checkpoint's function.

Usage: gen_llama2c.py CHECKPOINT OUTPUT

Contents: tokens (i64, [T]) and logits ([T, vocab]); or, when CHECKPOINT
does not exist, only absent = [1] so the test can skip.
"""
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from refdata import RefWriter  # noqa: E402


def main(src, out):
    with RefWriter(out) as w:
        if not os.path.exists(src):
            w.add("absent", np.array([1.0]))
            return
        raw = open(src, "rb").read()
        dim, hidden, L, heads, kv, vocab, seq = np.frombuffer(raw[:28], "<i4")
        shared = vocab > 0
        vocab = abs(int(vocab))
        hs = dim // heads
        kvd = hs * kv
        f = torch.from_numpy(np.frombuffer(raw[28:], "<f4").astype(np.float64))
        at = 0

        def take(*shape):
            nonlocal at
            n = int(np.prod(shape))
            t = f[at:at + n].reshape(*shape)
            at += n
            return t

        emb = take(vocab, dim)
        rms_att = take(L, dim)
        wq = take(L, dim, dim)
        wk = take(L, kvd, dim)
        wv = take(L, kvd, dim)
        wo = take(L, dim, dim)
        rms_ffn = take(L, dim)
        w1 = take(L, hidden, dim)
        w2 = take(L, dim, hidden)
        w3 = take(L, hidden, dim)
        rms_final = take(dim)
        take(seq, hs // 2)
        take(seq, hs // 2)
        wcls = emb if shared else take(vocab, dim)
        assert at == f.numel()

        T = 24
        g = torch.Generator().manual_seed(260)
        tokens = torch.randint(0, vocab, (T,), generator=g)

        def rmsnorm(x, wt):
            return wt * x / torch.sqrt((x * x).mean(-1, keepdim=True) + 1e-5)

        # interleaved RoPE: pair p = (2p, 2p+1) of a head, angle pos*10000^(-2p/hs)
        pos = torch.arange(T, dtype=torch.float64)[:, None]
        freq = 10000.0 ** (-torch.arange(0, hs, 2, dtype=torch.float64) / hs)
        ang = pos * freq[None, :]  # [T, hs/2]
        cos, sin = torch.cos(ang), torch.sin(ang)

        def rope(x):  # x [T, nh, hs]
            x0, x1 = x[..., 0::2], x[..., 1::2]
            c, s = cos[:, None, :], sin[:, None, :]
            y = torch.empty_like(x)
            y[..., 0::2] = x0 * c - x1 * s
            y[..., 1::2] = x0 * s + x1 * c
            return y

        x = emb[tokens]
        mask = torch.full((T, T), float("-inf"), dtype=torch.float64).triu(1)
        for l in range(L):
            h = rmsnorm(x, rms_att[l])
            q = rope((h @ wq[l].T).reshape(T, heads, hs))
            k = rope((h @ wk[l].T).reshape(T, kv, hs))
            v = (h @ wv[l].T).reshape(T, kv, hs)
            rep = heads // kv
            k = k.repeat_interleave(rep, dim=1)
            v = v.repeat_interleave(rep, dim=1)
            att = torch.einsum("thd,shd->hts", q, k) / np.sqrt(hs) + mask
            att = torch.softmax(att, dim=-1)
            o = torch.einsum("hts,shd->thd", att, v).reshape(T, dim)
            x = x + o @ wo[l].T
            h = rmsnorm(x, rms_ffn[l])
            a = h @ w1[l].T
            x = x + ((a * torch.sigmoid(a)) * (h @ w3[l].T)) @ w2[l].T
        logits = rmsnorm(x, rms_final) @ wcls.T
        w.add("tokens", tokens, kind="i64")
        w.add("logits", logits)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
