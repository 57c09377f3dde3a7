"""Reference GGUF files for tests/test_llama_gguf.c, written with the gguf
Python package (llama.cpp's own writer and quantisers), and what they hold.

Usage: gen_gguf.py OUTDIR          the test's files (below)
       gen_gguf.py --corpus DIR    small seed files for the fuzzer

OUTDIR/types.gguf: a tensor of every type the C reader converts (F32, F16,
BF16, Q8_0, Q4_0, Q4_1 quantised from random data with gguf.quants.quantize;
the same types and Q4_K, Q5_K, Q6_K, which the package cannot quantise, as
random blocks with finite f16 scales), shapes of one to four dimensions,
one tensor of a type the reader does not convert (Q5_0), a custom
general.alignment of 64, and a metadata key of every value type: each
scalar type, strings (empty, non-ASCII), arrays of every element type, and
arrays of arrays. OUTDIR/types.ref (refdata.py format) holds
  tensor/<name>/bits   the f32 bit patterns gguf.quants.dequantize gives,
  tensor/<name>/ne, /type, /offset   as gguf.GGUFReader reads them back,
  kv/<key>/...         every value written (see add_expected), and
  kv_count, tensor_count.

OUTDIR/tiny_<variant>.gguf: a small grouped-query LLaMa written as
llama.cpp's converter writes one (llama.* keys, blk.N.* names, q and k rows
in interleaved-RoPE order, no output.weight when tied), from Hugging Face
layout weights: f32_untied, f32_tied, and quant_tied (tensors in F16, BF16,
Q8_0, Q4_0 and Q4_1). OUTDIR/tiny.ref holds for each variant the Hugging
Face weights the file stands for (<variant>/w/<HF name>: for quantised
tensors the dequantised values, which row reordering does not change since
blocks never span rows), tokens, targets, and the logits and mean loss of
transformers.LlamaForCausalLM in float64 on those weights.
OUTDIR/tiny_f32_untied_hf/ is the same model as a Hugging Face directory.
"""
import json
import os
import sys

import numpy as np
import torch
import gguf
from gguf import GGMLQuantizationType as Q, GGUFValueType as V
from safetensors.numpy import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from refdata import RefWriter  # noqa: E402
from gguf_llama_layout import gguf_name, gguf_rows_from_hf  # noqa: E402

F16_FIELDS = {  # byte offsets of each quant block's f16 scale fields
    Q.Q8_0: [0], Q.Q4_0: [0], Q.Q4_1: [0, 2],
    Q.Q4_K: [0, 2], Q.Q5_K: [0, 2], Q.Q6_K: [208],
}


def random_blocks(rng, qtype, shape):
    """Random bytes in qtype's block layout for a tensor of `shape`
    (elements), every f16 scale a finite value: all bit patterns of the
    quants, none of the scales NaN or infinite."""
    bs, ts = gguf.GGML_QUANT_SIZES[qtype]
    byte_shape = (*shape[:-1], shape[-1] // bs * ts)
    raw = rng.integers(0, 256, size=byte_shape, dtype=np.uint8)
    blocks = raw.reshape(-1, ts)
    for off in F16_FIELDS[qtype]:
        scale = (rng.standard_normal(blocks.shape[0]) * 0.05).astype(np.float16)
        blocks[:, off:off + 2] = scale.view(np.uint8).reshape(-1, 2)
    return raw


def f16_specials(rng, shape):
    """f16 values of every kind: normal, subnormal, zeros, infinities and
    a quiet NaN."""
    bits = rng.integers(0, 1 << 16, size=shape, dtype=np.uint16)
    flat = bits.reshape(-1)
    # Random patterns include signalling NaNs, whose conversion ggml and
    # numpy may quieten differently: make every NaN a quiet one.
    nan = (flat & 0x7C00) == 0x7C00
    flat[nan & ((flat & 0x3FF) != 0)] |= 0x200
    flat[:6] = [0x0000, 0x8000, 0x0001, 0x83FF, 0x7C00, 0xFC00]
    return bits.view(np.float16)


def f32_specials(rng, shape):
    x = rng.standard_normal(shape).astype(np.float32)
    flat = x.reshape(-1)
    flat[:5] = np.array([0.0, -0.0, np.inf, -np.inf, 1e-45], dtype=np.float32)
    return x


def tensor_cases(rng):
    """(name, numpy shape, type, stored array) for types.gguf."""
    cases = []

    def quantised(name, qtype, shape):
        data = rng.standard_normal(shape).astype(np.float32)
        data.reshape(-1)[:3] = 0.0  # a zero run inside a block
        cases.append((name, qtype, gguf.quants.quantize(data, qtype)))

    cases.append(("f32.4d", Q.F32, f32_specials(rng, (2, 3, 5, 7))))
    cases.append(("f16.specials", Q.F16, f16_specials(rng, (3, 41))))
    quantised("f16.quantized", Q.F16, (5, 9))
    quantised("bf16.quantized", Q.BF16, (4, 3, 11))
    bf = rng.integers(0, 1 << 16, size=(2, 19), dtype=np.uint16)
    bf[(bf & 0x7F80) == 0x7F80] &= 0xFF7F  # finite
    cases.append(("bf16.raw", Q.BF16, bf.view(np.uint8).reshape(2, 38)))
    for qtype in (Q.Q8_0, Q.Q4_0, Q.Q4_1):
        n = qtype.name.lower()
        quantised(f"{n}.quantized", qtype, (7, 96))
        quantised(f"{n}.vector", qtype, (64,))
        quantised(f"{n}.3d", qtype, (3, 2, 32))
        cases.append((f"{n}.raw", qtype, random_blocks(rng, qtype, (5, 128))))
    for qtype, shape in ((Q.Q4_K, (3, 512)), (Q.Q5_K, (4, 256)),
                         (Q.Q6_K, (2, 3, 256)), (Q.Q6_K, (768,))):
        n = qtype.name.lower() + (".vector" if len(shape) == 1 else ".raw")
        cases.append((n, qtype, random_blocks(rng, qtype, shape)))
    # ggml defines Q5_0; the C reader refuses to convert it.
    data = rng.standard_normal((2, 32)).astype(np.float32)
    cases.append(("q5_0.unsupported", Q.Q5_0, gguf.quants.quantize(data, Q.Q5_0)))
    return cases


# Metadata of every type: (key, value, type, element type for arrays).
def metadata_cases():
    ints = {V.UINT8: [0, 1, 255], V.INT8: [-128, 0, 127],
            V.UINT16: [0, 65535, 513], V.INT16: [-32768, 32767, -2],
            V.UINT32: [0, 4294967295, 70000], V.INT32: [-2147483648, 2147483647, -7],
            V.UINT64: [0, 18446744073709551615, 1 << 40],
            V.INT64: [-9223372036854775808, 9223372036854775807, -3]}
    cases = []
    for t, vals in ints.items():
        n = t.name.lower()
        cases.append((f"test.{n}", vals[1], t, None))
        cases.append((f"test.{n}.small", vals[2], t, None))
        cases.append((f"test.array.{n}", vals, V.ARRAY, t))
    cases += [
        ("test.float32", 3.14159, V.FLOAT32, None),
        ("test.float32.negative", -2.5e-39, V.FLOAT32, None),  # subnormal
        ("test.float64", 1e300, V.FLOAT64, None),  # beyond float's range
        ("test.float64.small", 0.1, V.FLOAT64, None),
        ("test.bool.true", True, V.BOOL, None),
        ("test.bool.false", False, V.BOOL, None),
        ("test.string", "h\u00e9llo w\u00f6rld \u2713 \U0001F600", V.STRING, None),
        ("test.string.empty", "", V.STRING, None),
        ("test.array.float32", [1.5, -0.0, 3e38, 1e-40], V.ARRAY, V.FLOAT32),
        ("test.array.float64", [0.1, -1e300, 2.0], V.ARRAY, V.FLOAT64),
        ("test.array.bool", [True, False, True, True], V.ARRAY, V.BOOL),
        ("test.array.string", ["alpha", "", "\u0120the", "a\nb\tc", "\u4e2d\u6587"],
         V.ARRAY, V.STRING),
        ("test.array.nested", [[1, 2, 3], [4], [-5, 6]], V.ARRAY, V.ARRAY),
        ("test.array.nested3", [[[1], [2, 3]], [[4, 5, 6]]], V.ARRAY, V.ARRAY),
        ("test.array.nested.string", [["a", "bc"], ["", "d", "\u00e9"]], V.ARRAY,
         V.ARRAY),
        ("tokenizer.ggml.scores", [0.0, -1.25, -3.5], V.ARRAY, V.FLOAT32),
        ("tokenizer.ggml.token_type", [1, 3, 6], V.ARRAY, V.INT32),
    ]
    return cases


def elem_type_of(value):
    """The element type GGUFWriter gives a nested list's elements."""
    return V.get_type(value[0])


def add_expected(ref, path, value, vtype):
    """Writes what the C test must read for a value of vtype at path."""
    ref.add(f"{path}/type", [int(vtype)], kind="i64")
    if vtype == V.ARRAY:
        raise AssertionError("arrays go through add_expected_array")
    if vtype == V.STRING:
        ref.add(f"{path}/bytes", list(value.encode("utf-8")), kind="i64")
    elif vtype == V.FLOAT32:
        bits = np.array([value], dtype=np.float32).view(np.uint32)[0]
        ref.add(f"{path}/bits", [int(bits)], kind="i64")
    elif vtype == V.FLOAT64:
        bits = np.array([value], dtype=np.float64).view(np.int64)[0]
        ref.add(f"{path}/bits", [int(bits)], kind="i64")
    else:  # integers and bool; UINT64 above 2^63 as its two's complement
        v = int(value)
        ref.add(f"{path}/int", [v - (1 << 64) if v >= 1 << 63 else v], kind="i64")


def add_expected_array(ref, path, values, etype):
    ref.add(f"{path}/type", [int(V.ARRAY)], kind="i64")
    ref.add(f"{path}/elem_type", [int(etype)], kind="i64")
    ref.add(f"{path}/count", [len(values)], kind="i64")
    for i, v in enumerate(values):
        if etype == V.ARRAY:
            add_expected_array(ref, f"{path}/{i}", v, elem_type_of(v))
        else:
            add_expected(ref, f"{path}/{i}", v, etype)


def write_types(outdir, rng):
    path = os.path.join(outdir, "types.gguf")
    w = gguf.GGUFWriter(path, arch="test")
    w.add_custom_alignment(64)
    cases = metadata_cases()
    for key, value, vtype, sub in cases:
        w.add_key_value(key, value, vtype, sub_type=sub)
    tensors = tensor_cases(rng)
    for name, qtype, stored in tensors:
        w.add_tensor(name, stored, raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()

    # What was written, read back by the package's own reader: tensor
    # infos from GGUFReader, values from gguf.quants.dequantize.
    reader = gguf.GGUFReader(path)
    with RefWriter(os.path.join(outdir, "types.ref")) as ref:
        kv = [("general.architecture", "test", V.STRING, None),
              ("general.alignment", 64, V.UINT32, None)] + cases
        ref.add("kv_count", [len(kv)], kind="i64")
        for key, value, vtype, sub in kv:
            if vtype == V.ARRAY:
                add_expected_array(ref, f"kv/{key}", value, sub)
            else:
                add_expected(ref, f"kv/{key}", value, vtype)
        ref.add("tensor_count", [len(tensors)], kind="i64")
        for t in reader.tensors:
            qtype = t.tensor_type
            ref.add(f"tensor/{t.name}/type", [int(qtype)], kind="i64")
            ref.add(f"tensor/{t.name}/ne", [int(x) for x in t.shape], kind="i64")
            ref.add(f"tensor/{t.name}/offset", [int(t.data_offset)], kind="i64")
            if qtype == Q.Q5_0:
                continue  # not converted by the C reader
            raw = np.ascontiguousarray(t.data).view(np.uint8)
            values = gguf.quants.dequantize(raw, qtype).astype(np.float32)
            ref.add(f"tensor/{t.name}/bits",
                    values.reshape(-1).view(np.uint32).astype(np.int64), kind="i64")


# ---- the tiny LLaMa ------------------------------------------------------

TINY = dict(dim=64, hidden=96, layers=2, heads=4, kv_heads=2, vocab=83,
            ctx=48, theta=50000.0, eps=1e-5)
BATCH, SEQ = 2, 12
# Tensor types of the quantised variant (the rest F32).
QUANT_TYPES = {"attn_q": Q.Q8_0, "attn_k": Q.Q4_0, "attn_v": Q.Q4_1,
               "attn_output": Q.BF16, "ffn_gate": Q.Q8_0, "ffn_up": Q.Q4_1,
               "ffn_down": Q.Q4_0, "token_embd": Q.F16}


def tiny_weights(gen, tied):
    c = TINY
    hd = c["dim"] // c["heads"]

    def lin(o, i):
        return (torch.randn(o, i, generator=gen) / i ** 0.5).float()

    def gain(n):
        return (1.0 + 0.1 * torch.randn(n, generator=gen)).float()

    emb = torch.randn(c["vocab"], c["dim"], generator=gen)
    w = {"model.embed_tokens.weight": (emb / c["dim"] ** 0.5 if tied else emb).float()}
    for l in range(c["layers"]):
        p = f"model.layers.{l}."
        w[p + "input_layernorm.weight"] = gain(c["dim"])
        w[p + "self_attn.q_proj.weight"] = lin(c["heads"] * hd, c["dim"])
        w[p + "self_attn.k_proj.weight"] = lin(c["kv_heads"] * hd, c["dim"])
        w[p + "self_attn.v_proj.weight"] = lin(c["kv_heads"] * hd, c["dim"])
        w[p + "self_attn.o_proj.weight"] = lin(c["dim"], c["heads"] * hd)
        w[p + "post_attention_layernorm.weight"] = gain(c["dim"])
        w[p + "mlp.gate_proj.weight"] = lin(c["hidden"], c["dim"])
        w[p + "mlp.up_proj.weight"] = lin(c["hidden"], c["dim"])
        w[p + "mlp.down_proj.weight"] = lin(c["dim"], c["hidden"])
    w["model.norm.weight"] = gain(c["dim"])
    if not tied:
        w["lm_head.weight"] = lin(c["vocab"], c["dim"])
    return {k: v.numpy() for k, v in w.items()}


def kind_of(gname):
    parts = gname.split(".")
    return parts[2] if parts[0] == "blk" else parts[0]


def write_tiny_gguf(path, weights, tied, quant, extra=None):
    """The file as llama.cpp's converter writes it. Returns the Hugging
    Face weights it stands for (the dequantised values where quantised).
    extra(writer), when given, adds more metadata (a tokenizer)."""
    c = TINY
    hd = c["dim"] // c["heads"]
    w = gguf.GGUFWriter(path, arch="llama")
    w.add_context_length(c["ctx"])
    w.add_embedding_length(c["dim"])
    w.add_block_count(c["layers"])
    w.add_feed_forward_length(c["hidden"])
    w.add_rope_dimension_count(hd)
    w.add_head_count(c["heads"])
    w.add_head_count_kv(c["kv_heads"])
    w.add_layer_norm_rms_eps(c["eps"])
    w.add_rope_freq_base(c["theta"])
    w.add_vocab_size(c["vocab"])
    w.add_file_type(1 if quant else 0)
    effective = {}
    for hf, x in weights.items():
        g = gguf_name(hf)
        kind = kind_of(g)
        stored = x
        if kind == "attn_q":
            stored = x[gguf_rows_from_hf(c["heads"], hd)]
        elif kind == "attn_k":
            stored = x[gguf_rows_from_hf(c["kv_heads"], hd)]
        qtype = QUANT_TYPES.get(kind, Q.F32) if quant else Q.F32
        if qtype == Q.F32:
            w.add_tensor(g, np.ascontiguousarray(stored, dtype=np.float32))
            effective[hf] = x
            continue
        w.add_tensor(g, gguf.quants.quantize(np.ascontiguousarray(stored), qtype),
                     raw_dtype=qtype)
        # Blocks lie within rows: reordering rows commutes with
        # quantisation, so the Hugging Face matrix the file stands for is
        # the round trip of the unreordered one.
        effective[hf] = gguf.quants.dequantize(gguf.quants.quantize(x, qtype), qtype)
    if extra:
        extra(w)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return effective


def hf_forward(weights, tied, tokens):
    """transformers' LlamaForCausalLM in float64 on the given weights."""
    from transformers import LlamaConfig, LlamaForCausalLM
    c = TINY
    cfg = LlamaConfig(vocab_size=c["vocab"], hidden_size=c["dim"],
                      intermediate_size=c["hidden"], num_hidden_layers=c["layers"],
                      num_attention_heads=c["heads"], num_key_value_heads=c["kv_heads"],
                      max_position_embeddings=c["ctx"], rope_theta=c["theta"],
                      rms_norm_eps=c["eps"], tie_word_embeddings=tied,
                      attn_implementation="eager")
    model = LlamaForCausalLM(cfg).double().eval()
    state = {k: torch.from_numpy(np.array(v, dtype=np.float64)) for k, v in weights.items()}
    if tied:
        state["lm_head.weight"] = state["model.embed_tokens.weight"]
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected and all("rotary_emb" in m for m in missing), (missing, unexpected)
    with torch.no_grad():
        return model(torch.from_numpy(tokens)).logits.reshape(-1, c["vocab"])


def write_hf_dir(path, weights, tied):
    c = TINY
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump({"architectures": ["LlamaForCausalLM"], "model_type": "llama",
                   "hidden_size": c["dim"], "intermediate_size": c["hidden"],
                   "num_hidden_layers": c["layers"], "num_attention_heads": c["heads"],
                   "num_key_value_heads": c["kv_heads"], "vocab_size": c["vocab"],
                   "max_position_embeddings": c["ctx"], "rope_theta": c["theta"],
                   "rms_norm_eps": c["eps"], "tie_word_embeddings": tied}, f)
    save_file({k: np.ascontiguousarray(v, dtype=np.float32) for k, v in weights.items()},
              os.path.join(path, "model.safetensors"))


def write_tiny(outdir):
    gen = torch.Generator().manual_seed(14)
    rng = np.random.default_rng(14)
    tokens = rng.integers(0, TINY["vocab"], size=(BATCH, SEQ + 1))
    inputs, targets = tokens[:, :-1].copy(), tokens[:, 1:].copy()
    with RefWriter(os.path.join(outdir, "tiny.ref")) as ref:
        for variant, tied, quant in (("f32_untied", False, False),
                                     ("f32_tied", True, False),
                                     ("quant_tied", True, True)):
            weights = tiny_weights(gen, tied)
            eff = write_tiny_gguf(os.path.join(outdir, f"tiny_{variant}.gguf"),
                                  weights, tied, quant)
            logits = hf_forward(eff, tied, inputs)
            loss = torch.nn.functional.cross_entropy(
                logits, torch.from_numpy(targets.reshape(-1)))
            ref.add(f"{variant}/tokens", inputs, kind="i64")
            ref.add(f"{variant}/targets", targets, kind="i64")
            ref.add(f"{variant}/logits", logits)
            ref.add(f"{variant}/loss", [float(loss)])
            for k, v in eff.items():
                ref.add(f"{variant}/w/{k}", np.asarray(v, dtype=np.float64))
            if variant == "f32_untied":
                write_hf_dir(os.path.join(outdir, "tiny_f32_untied_hf"), weights, tied)
            print(f"{variant}: loss {float(loss):.6f}")


# ---- fuzzing seeds ----------------------------------------------------------

def write_corpus(outdir):
    """Small valid files: a LLaMa of every converted type and metadata of
    every kind, each a few KiB, so the fuzzer starts from deep inside the
    format."""
    os.makedirs(outdir, exist_ok=True)
    rng = np.random.default_rng(7)
    w = gguf.GGUFWriter(os.path.join(outdir, "metadata.gguf"), arch="test")
    for key, value, vtype, sub in metadata_cases():
        w.add_key_value(key, value, vtype, sub_type=sub)
    for qtype, shape in ((Q.F32, (2, 3)), (Q.F16, (5,)), (Q.BF16, (2, 2)),
                         (Q.Q8_0, (32,)), (Q.Q4_0, (32,)), (Q.Q4_1, (32,)),
                         (Q.Q4_K, (256,)), (Q.Q5_K, (256,)), (Q.Q6_K, (256,))):
        if qtype in F16_FIELDS:
            w.add_tensor(qtype.name, random_blocks(rng, qtype, shape), raw_dtype=qtype)
        else:
            data = rng.standard_normal(shape).astype(np.float32)
            w.add_tensor(qtype.name, gguf.quants.quantize(data, qtype), raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    # LLaMas small enough for seeds: one layer, vocab 8; dim 8 in F32,
    # dim 32 (one block per row) when quantised.
    global TINY
    saved = TINY
    gen = torch.Generator().manual_seed(7)
    for name, tied, quant, dim in (("llama_f32_untied", False, False, 8),
                                   ("llama_quant_tied", True, True, 32)):
        TINY = dict(dim=dim, hidden=dim, layers=1, heads=2, kv_heads=1,
                    vocab=8, ctx=16, theta=10000.0, eps=1e-5)
        write_tiny_gguf(os.path.join(outdir, name + ".gguf"),
                        tiny_weights(gen, tied), tied, quant)
    TINY = saved


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--corpus":
        write_corpus(sys.argv[2])
        return
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    outdir = sys.argv[1]
    os.makedirs(outdir, exist_ok=True)
    write_types(outdir, np.random.default_rng(2024))
    write_tiny(outdir)


if __name__ == "__main__":
    main()
