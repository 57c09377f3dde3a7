"""The real SmolLM2-135M-Instruct GGUF (Q4_1, Q8_0 and F32 tensors) as a
Hugging Face directory, and its held-out loss in transformers, for
tests/test_llama_gguf_real.c.

Usage: gen_gguf_smollm2.py OUTDIR MODEL.gguf

Written with the gguf package alone, independently of the C reader:
gguf.GGUFReader reads the file, gguf.quants.dequantize converts every
tensor to f32, the q and k rows go back from llama.cpp's interleaved-RoPE
order to Hugging Face's (gguf_llama_layout.py), and OUTDIR/hf/ receives
config.json (from the llama.* keys) and model.safetensors (f32).
max_position_embeddings is the test's sequence length, SEQ: the weights
and the model's function at positions below it do not depend on it, and
the C Hugging Face loader sizes its activations by it (the file's own
context, 8192, is in the GGUF).

Token ids: a fixed English passage (below, written for this test) encoded
with the `tokenizers` library's byte-level BPE built from the GGUF's own
vocabulary and merges; the first BATCH * (SEQ + 1) ids make BATCH
sequences of SEQ inputs and SEQ next-token targets.

OUTDIR/smollm2.ref (refdata.py format): tokens, targets [BATCH, SEQ]; loss
(mean cross-entropy of transformers.LlamaForCausalLM in float64 on the f32
weights), loss_f32 (the same model run in float32, for scale), and the
logits of the first and last position of each sequence (logit_rows: their
row indices b * SEQ + t; logits [len(logit_rows), vocab]).
"""
import json
import os
import sys

import numpy as np
import torch
import gguf
from safetensors.numpy import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from refdata import RefWriter  # noqa: E402
from gguf_llama_layout import hf_name, hf_rows_from_gguf  # noqa: E402

BATCH, SEQ = 2, 64

TEXT = (
    "The small town library opens at nine in the morning, and by ten most "
    "of the tables near the windows are taken. Students come to read before "
    "their classes, retired teachers come for the newspapers, and parents "
    "bring their children to the corner where the picture books are kept. "
    "The librarian knows almost everyone by name. She remembers which "
    "authors each reader likes, and she often sets aside a new book for "
    "someone she thinks will enjoy it. In the afternoon the building grows "
    "quiet again. A few people work on their computers, and the only sound "
    "is the soft turning of pages. When it rains, more visitors arrive, "
    "shaking water from their coats and umbrellas, glad to find a warm and "
    "dry place to spend an hour or two. Many of them say that the library "
    "is the heart of the town, a place where anyone can learn something new "
    "without paying a single coin."
)


def field(reader, key):
    f = reader.get_field(key)
    if f is None:
        return None
    v = f.contents()
    return v


def read_config(reader):
    c = {k: field(reader, "llama." + k) for k in (
        "block_count", "embedding_length", "feed_forward_length",
        "attention.head_count", "attention.head_count_kv", "context_length",
        "rope.freq_base", "attention.layer_norm_rms_epsilon", "vocab_size")}
    assert field(reader, "general.architecture") == "llama"
    return c


def convert(reader, c):
    """{HF name: f32 array} from the GGUF tensors."""
    heads, kv_heads = c["attention.head_count"], c["attention.head_count_kv"]
    hd = c["embedding_length"] // heads
    out = {}
    for t in reader.tensors:
        x = gguf.quants.dequantize(np.asarray(t.data), t.tensor_type)
        x = np.ascontiguousarray(x, dtype=np.float32)
        rows = [int(n) for n in reversed(t.shape)]  # outermost first
        x = x.reshape(rows)
        if t.name.endswith(".attn_q.weight"):
            x = x[hf_rows_from_gguf(heads, hd)]
        elif t.name.endswith(".attn_k.weight"):
            x = x[hf_rows_from_gguf(kv_heads, hd)]
        out[hf_name(t.name)] = np.ascontiguousarray(x)
    return out


def write_hf(outdir, c, weights, tied):
    os.makedirs(outdir, exist_ok=True)
    config = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "hidden_act": "silu",
        "hidden_size": c["embedding_length"],
        "intermediate_size": c["feed_forward_length"],
        "num_hidden_layers": c["block_count"],
        "num_attention_heads": c["attention.head_count"],
        "num_key_value_heads": c["attention.head_count_kv"],
        "vocab_size": weights["model.embed_tokens.weight"].shape[0],
        "max_position_embeddings": SEQ,
        "rope_theta": float(c["rope.freq_base"]),
        "rms_norm_eps": float(np.float32(c["attention.layer_norm_rms_epsilon"])),
        "tie_word_embeddings": tied, "rope_scaling": None,
        "torch_dtype": "float32",
    }
    with open(os.path.join(outdir, "config.json"), "w") as f:
        json.dump(config, f, indent=1)
    # transformers reads the "format" entry to know the tensors are torch's.
    save_file(weights, os.path.join(outdir, "model.safetensors"),
              metadata={"format": "pt"})


def token_ids(reader):
    """TEXT encoded by a byte-level BPE of the GGUF's vocabulary."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    tokens_field = reader.get_field("tokenizer.ggml.tokens")
    merges_field = reader.get_field("tokenizer.ggml.merges")
    vocab = {str(bytes(tokens_field.parts[i]), "utf-8"): n
             for n, i in enumerate(tokens_field.data)}
    merges = [tuple(str(bytes(merges_field.parts[i]), "utf-8").split(" ", 1))
              for i in merges_field.data]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    ids = tok.encode(TEXT).ids
    assert tok.decode(ids) == TEXT
    need = BATCH * (SEQ + 1)
    assert len(ids) >= need, (len(ids), need)
    return np.array(ids[:need], dtype=np.int64).reshape(BATCH, SEQ + 1)


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    outdir, model_path = sys.argv[1], sys.argv[2]
    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    reader = gguf.GGUFReader(model_path)
    c = read_config(reader)
    weights = convert(reader, c)
    tied = "lm_head.weight" not in weights
    hf_dir = os.path.join(outdir, "hf")
    write_hf(hf_dir, c, weights, tied)
    ids = token_ids(reader)
    del weights, reader

    from transformers import LlamaForCausalLM
    model = LlamaForCausalLM.from_pretrained(hf_dir, torch_dtype=torch.float32,
                                             attn_implementation="eager").eval()
    inputs = torch.from_numpy(ids[:, :-1].copy())
    targets = torch.from_numpy(ids[:, 1:].copy())
    ce = torch.nn.functional.cross_entropy
    with torch.no_grad():
        logits32 = model(inputs).logits.reshape(BATCH * SEQ, -1)
        loss32 = ce(logits32, targets.reshape(-1)).item()
        del logits32
        model = model.double()
        logits = model(inputs).logits.reshape(BATCH * SEQ, -1)
        loss = ce(logits, targets.reshape(-1)).item()
    rows = [b * SEQ + t for b in range(BATCH) for t in (0, SEQ - 1)]
    with RefWriter(os.path.join(outdir, "smollm2.ref")) as ref:
        ref.add("tokens", inputs, kind="i64")
        ref.add("targets", targets, kind="i64")
        ref.add("loss", [loss])
        ref.add("loss_f32", [loss32])
        ref.add("logit_rows", rows, kind="i64")
        ref.add("logits", logits[rows])
    print(f"transformers: loss {loss:.6f} (float64), {loss32:.6f} (float32), "
          f"perplexity {np.exp(loss):.2f}, {BATCH} x {SEQ} tokens")


if __name__ == "__main__":
    main()
