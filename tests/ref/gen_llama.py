"""Reference forward and backward passes of the LLaMa example model.

Usage: gen_llama.py OUT.ref HF_DIR

A LLaMa decoder written here in PyTorch from the Hugging Face
LlamaForCausalLM definitions (no transformers library): token embedding,
RMSNorm, rotate_half RoPE, grouped-query causal attention, SwiGLU MLP, final
norm, LM head, mean cross-entropy over targets >= 0. Random f32 weights
(seeded) are written as Hugging Face checkpoints (config.json plus
model.safetensors) to HF_DIR/untied and HF_DIR/tied (no lm_head.weight,
tie_word_embeddings true), which the C test (tests/test_llama_model.c)
loads with ckpt_load_hf, and into OUT.ref as w/<name> and tied/w/<name>, so
the test can check that it loaded exactly these numbers.

The reference is computed in float64 from the float32 weights with
autograd, so what the C side (float32 throughout) is compared against is
the exact value of the same f32 model; the script also prints how far
PyTorch's own float32 run lies from it, the scale the C tolerances must
allow.

Cases (each with its tokens, targets, trainable set, loss, logits and the
gradient of every trainable tensor as <case>/g/<name>):
  full          untied head, everything trainable
  frozen        embeddings frozen, layers 0 and 2 frozen, head trainable:
                the pass goes through layer 2 and stops below layer 1
  frozen_head   embeddings, head and layers 0-1 frozen: only layer 2 trains
  embed_only    every layer and the head frozen, embeddings trainable: the
                pass goes through all layers without a weight gradient
  tied          the head is the embedding matrix (tied/w/... weights), only
                "head" and layer 2 trainable: the shared matrix gets its full
                gradient (both uses), so the pass goes through the frozen
                layers 0-1 down to the lookup
"""
import json
import math
import os
import struct
import sys

import numpy as np
import torch

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from refdata import RefWriter  # noqa: E402

CFG = dict(dim=64, hidden_dim=176, n_layers=3, n_heads=4, n_kv_heads=2,
           vocab_size=97, seq_len=64, rope_theta=10000.0, norm_eps=1e-5)
BATCH = 2


def layer_names(i):
    p = f"model.layers.{i}."
    return {
        "rms_att": p + "input_layernorm.weight",
        "wq": p + "self_attn.q_proj.weight",
        "wk": p + "self_attn.k_proj.weight",
        "wv": p + "self_attn.v_proj.weight",
        "wo": p + "self_attn.o_proj.weight",
        "rms_ffn": p + "post_attention_layernorm.weight",
        "w_gate": p + "mlp.gate_proj.weight",
        "w_up": p + "mlp.up_proj.weight",
        "w_down": p + "mlp.down_proj.weight",
    }


def random_weights(gen, tied):
    """f32 weights at scales that keep every part of the model active:
    unit-variance embeddings (1/sqrt(dim) when tied, so that as the head
    they give logits of order one, as lm_head does), linear weights N(0, 1/fan_in) (attention
    scores of order one, so the softmax is neither flat nor one-hot), norm
    gains 1 + N(0, 0.1^2) so that the gains' own gradients matter."""
    c = CFG
    hd = c["dim"] // c["n_heads"]
    qdim, kvdim = hd * c["n_heads"], hd * c["n_kv_heads"]

    def lin(out_f, in_f):
        return torch.randn(out_f, in_f, generator=gen) / math.sqrt(in_f)

    def gain(n):
        return 1.0 + 0.1 * torch.randn(n, generator=gen)

    emb_std = 1.0 / math.sqrt(c["dim"]) if tied else 1.0
    w = {"model.embed_tokens.weight": emb_std * torch.randn(
        c["vocab_size"], c["dim"], generator=gen)}
    for i in range(c["n_layers"]):
        n = layer_names(i)
        w[n["rms_att"]] = gain(c["dim"])
        w[n["wq"]] = lin(qdim, c["dim"])
        w[n["wk"]] = lin(kvdim, c["dim"])
        w[n["wv"]] = lin(kvdim, c["dim"])
        w[n["wo"]] = lin(c["dim"], qdim)
        w[n["rms_ffn"]] = gain(c["dim"])
        w[n["w_gate"]] = lin(c["hidden_dim"], c["dim"])
        w[n["w_up"]] = lin(c["hidden_dim"], c["dim"])
        w[n["w_down"]] = lin(c["dim"], c["hidden_dim"])
    w["model.norm.weight"] = gain(c["dim"])
    if not tied:
        w["lm_head.weight"] = lin(c["vocab_size"], c["dim"])
    return {k: v.float().contiguous() for k, v in w.items()}


# ---------------------------------------------------------------------------
# The model, as Hugging Face's modeling_llama computes it
# ---------------------------------------------------------------------------

def rmsnorm(x, g):
    var = x.pow(2).mean(-1, keepdim=True)
    return x * torch.rsqrt(var + CFG["norm_eps"]) * g


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


def rope(x, T):
    """x: [B, heads, T, head_dim]; LlamaRotaryEmbedding + apply_rotary_pos_emb."""
    hd = x.shape[-1]
    inv_freq = 1.0 / (CFG["rope_theta"] **
                      (torch.arange(0, hd, 2, dtype=torch.float64) / hd))
    freqs = torch.outer(torch.arange(T, dtype=torch.float64), inv_freq)
    emb = torch.cat([freqs, freqs], dim=-1).to(x.dtype)
    return x * emb.cos() + rotate_half(x) * emb.sin()


def attention(x, w, i, B, T, linear_inputs=None):
    c = CFG
    n = layer_names(i)
    nh, nkv = c["n_heads"], c["n_kv_heads"]
    hd = c["dim"] // nh
    q = (x @ w[n["wq"]].T).view(B, T, nh, hd).transpose(1, 2)
    k = (x @ w[n["wk"]].T).view(B, T, nkv, hd).transpose(1, 2)
    v = (x @ w[n["wv"]].T).view(B, T, nkv, hd).transpose(1, 2)
    q, k = rope(q, T), rope(k, T)
    # repeat_kv: head h reads kv head h // (nh / nkv).
    k = k.repeat_interleave(nh // nkv, dim=1)
    v = v.repeat_interleave(nh // nkv, dim=1)
    s = (q @ k.transpose(-1, -2)) / math.sqrt(hd)
    mask = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)
    s = s.masked_fill(mask, float("-inf"))
    p = torch.softmax(s, dim=-1)
    o = (p @ v).transpose(1, 2).reshape(B, T, nh * hd)
    if linear_inputs is not None:
        linear_inputs.append(o.reshape(B * T, -1))
    return o @ w[n["wo"]].T


def mlp(x, w, i, linear_inputs=None):
    n = layer_names(i)
    gate = x @ w[n["w_gate"]].T
    up = x @ w[n["w_up"]].T
    mid = torch.nn.functional.silu(gate) * up
    if linear_inputs is not None:
        linear_inputs.append(mid.reshape(-1, mid.shape[-1]))
    return mid @ w[n["w_down"]].T


def forward(w, tokens, targets, tied, linear_inputs=None):
    """linear_inputs (a list, optional) receives, per layer, the inputs of
    q/k/v, o_proj, gate/up and down_proj as [B*T, n] tensors."""
    B, T = tokens.shape
    x = w["model.embed_tokens.weight"][tokens]
    for i in range(CFG["n_layers"]):
        n = layer_names(i)
        a = rmsnorm(x, w[n["rms_att"]])
        x = x + attention(a, w, i, B, T, linear_inputs)
        f = rmsnorm(x, w[n["rms_ffn"]])
        x = x + mlp(f, w, i, linear_inputs)
        if linear_inputs is not None:
            # Reorder to the hook's order: attn_in, attn_out, mlp_in, mlp_mid.
            mid, o = linear_inputs.pop(), linear_inputs.pop()
            linear_inputs += [a.reshape(B * T, -1), o, f.reshape(B * T, -1), mid]
    x = rmsnorm(x, w["model.norm.weight"])
    head = w["model.embed_tokens.weight"] if tied else w["lm_head.weight"]
    logits = x @ head.T
    loss = torch.nn.functional.cross_entropy(
        logits.view(-1, CFG["vocab_size"]), targets.view(-1), ignore_index=-1)
    return logits, loss


def trainable_names(w, layers, embeddings, head, tied):
    """The tensors that get gradients, by the rules of llama_trainable (a
    tied matrix is trainable when either of its roles is)."""
    names = []
    for i in range(CFG["n_layers"]):
        if layers[i]:
            names += layer_names(i).values()
    if embeddings or (tied and head):
        names.append("model.embed_tokens.weight")
    if head:
        names.append("model.norm.weight")
        if not tied:
            names.append("lm_head.weight")
    return names


def run_case(out, name, w32, tokens, targets, layers, embeddings, head, tied):
    train = trainable_names(w32, layers, embeddings, head, tied)
    w64 = {k: v.double().requires_grad_(k in train) for k, v in w32.items()}
    inputs = []
    logits, loss = forward(w64, tokens, targets, tied, inputs)
    loss.backward()

    # PyTorch's own f32 run of the same model, for the record.
    w32g = {k: v.clone().requires_grad_(k in train) for k, v in w32.items()}
    logits32, loss32 = forward(w32g, tokens, targets, tied)
    loss32.backward()
    worst = max(float((w32g[k].grad.double() - w64[k].grad).abs().max() /
                      w64[k].grad.abs().max()) for k in train)
    print(f"{name}: loss {loss.item():.6f}; torch f32 vs f64: loss "
          f"{abs(loss32.item() - loss.item()) / loss.item():.2e}, logits "
          f"{float((logits32.double() - logits).abs().max() / logits.abs().max()):.2e}, "
          f"gradients {worst:.2e}")

    out.add(f"{name}/tokens", tokens, kind="i64")
    out.add(f"{name}/targets", targets, kind="i64")
    out.add(f"{name}/layers", np.array(layers, dtype=np.int64), kind="i64")
    out.add(f"{name}/embeddings", np.array([embeddings], dtype=np.int64), kind="i64")
    out.add(f"{name}/head", np.array([head], dtype=np.int64), kind="i64")
    out.add(f"{name}/tied", np.array([int(tied)], dtype=np.int64), kind="i64")
    out.add(f"{name}/loss", loss.detach().reshape(1))
    out.add(f"{name}/logits", logits.detach().reshape(-1, CFG["vocab_size"]))
    for k in train:
        out.add(f"{name}/g/{k}", w64[k].grad)
    # The activation statistics: column sums of squares of each linear
    # layer's input (what owl_act_norm_accumulate adds up).
    hooks = ["attn_in", "attn_out", "mlp_in", "mlp_mid"]
    for i, x in enumerate(inputs):
        out.add(f"{name}/sumsq/{hooks[i % 4]}/{i // 4}",
                x.detach().pow(2).sum(0))


# ---------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------

def write_safetensors(path, tensors):
    """The safetensors format: u64 little-endian header length, a JSON
    header {name: {dtype, shape, data_offsets}} padded with spaces to a
    multiple of 8, then the raw little-endian data."""
    header, blobs, offset = {}, [], 0
    for name, t in tensors.items():
        data = t.numpy().astype("<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)


def write_config(path, tied):
    c = CFG
    cfg = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_act": "silu",
        "hidden_size": c["dim"],
        "intermediate_size": c["hidden_dim"],
        "num_hidden_layers": c["n_layers"],
        "num_attention_heads": c["n_heads"],
        "num_key_value_heads": c["n_kv_heads"],
        "vocab_size": c["vocab_size"],
        "max_position_embeddings": c["seq_len"],
        "rope_theta": c["rope_theta"],
        "rms_norm_eps": c["norm_eps"],
        "tie_word_embeddings": tied,
        "torch_dtype": "float32",
    }
    with open(path, "w") as f:
        json.dump(cfg, f, indent=2)


def main():
    out_path, hf_dir = sys.argv[1], sys.argv[2]
    gen = torch.Generator().manual_seed(20240611)
    w = random_weights(gen, tied=False)
    wt = random_weights(gen, tied=True)
    B, T, V = BATCH, CFG["seq_len"], CFG["vocab_size"]
    tokens = torch.randint(0, V, (B, T), generator=gen)
    targets = torch.randint(0, V, (B, T), generator=gen)
    # Some positions without a target: the mean is over the others.
    targets[torch.rand(B, T, generator=gen) < 0.15] = -1

    for sub, weights, tied in (("untied", w, False), ("tied", wt, True)):
        d = os.path.join(hf_dir, sub)
        os.makedirs(d, exist_ok=True)
        write_safetensors(os.path.join(d, "model.safetensors"), weights)
        write_config(os.path.join(d, "config.json"), tied)

    with RefWriter(out_path) as out:
        for k, v in CFG.items():
            out.add(f"config/{k}", np.array([v], dtype=np.float64))
        out.add("config/batch", np.array([B], dtype=np.float64))
        for k, v in w.items():
            out.add(f"w/{k}", v)
        for k, v in wt.items():
            out.add(f"tied/w/{k}", v)
        run_case(out, "full", w, tokens, targets, [1, 1, 1], 1, 1, False)
        run_case(out, "frozen", w, tokens, targets, [0, 1, 0], 0, 1, False)
        run_case(out, "frozen_head", w, tokens, targets, [0, 0, 1], 0, 0, False)
        run_case(out, "embed_only", w, tokens, targets, [0, 0, 0], 1, 0, False)
        run_case(out, "tied", wt, tokens, targets, [0, 0, 1], 0, 1, True)


if __name__ == "__main__":
    main()
