"""The real SmolLM2-135M GGUF, converted by the trainer into a Hugging
Face directory (`llama --model GGUF --data TEXT --steps 0 --save DIR`), is
the same model with the same tokenizer for transformers.

Usage: check_gguf_save.py LLAMA_EXE EVAL_LOSS_EXE GGUF WORK_DIR

Checks, each against a reference that is not our code:
  - config.json holds what transformers needs, with the values of the
    GGUF's own metadata as the `gguf` package reads it (sizes, heads,
    rope theta, rms eps, context length as max_position_embeddings, tied
    head, bos/eos ids); AutoConfig reads it;
  - transformers' AutoTokenizer on the saved directory gives, for a text
    with digits, punctuation, non-ASCII letters, a control token and a
    byte SmolLM2's vocabulary has no symbol for, the ids our tokenizer
    gives from the GGUF metadata (llama_eval_loss --text), and so does a
    Hugging Face tokenizer built from the GGUF's vocabulary by
    tests/ref/gen_tokenizer.py; its special tokens are the GGUF's;
  - AutoModelForCausalLM on the saved directory, in float32, gives on
    those ids the loss our C model gives from the GGUF,
    and so does transformers in float64 (2e-5 relative: 30 layers of
    float32), and our loss from the saved directory is the GGUF's
    exactly;
  - the trainer prints the same held-out loss for the GGUF and for the
    saved directory (same tokens, same batches, the same f32 weights),
    and the number of bytes it left out, counted here from the
    vocabulary;
  - with --save-dtype bf16 the weights are stored as bfloat16 and
    transformers' loss on them is our loss on the same directory;
  - a tiny GGUF with a SentencePiece tokenizer refuses --data, saying
    why, and trains on --ids; one without a tokenizer reads --data as
    bytes, refused for its 83-token vocabulary.
"""
import json
import os
import re
import subprocess
import sys

import numpy as np
import torch
from gguf import GGUFReader
from safetensors import safe_open
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gen_tokenizer import B2U, build, read_gguf_vocab  # noqa: E402

LLAMA, EVAL, GGUF, WORK = sys.argv[1:5]

# English prose, then the cases that test the conversion: digits (one
# token each in SmolLM2's pre-tokenizer), contractions, non-ASCII, a
# control token in the text, and 0x1D, a byte without a symbol in the
# vocabulary (left out by both tokenizers).
TEXT = (
    "It was the best of times, it was the worst of times, it was the age "
    "of wisdom, it was the age of foolishness, it was the epoch of belief, "
    "it was the epoch of incredulity, it was the season of Light, it was "
    "the season of Darkness, it was the spring of hope, it was the winter "
    "of despair, we had everything before us, we had nothing before us.\n"
    "The committee met on 2024-06-01 at 10:30 and approved 3 of the 12 "
    "proposals; the budget rose by 7.5% to $1,250,000. They'll review "
    "it again in March, and we're told it isn't final.\n"
    "Caf\u00e9 na\u00efve r\u00e9sum\u00e9 \u2014 \u00fcber Stra\u00dfe, "
    "\u4f60\u597d, \U0001F600!\n"
    "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n"
    "a byte without a symbol: [\x1d]\n"
    "In the beginning the Universe was created. This has made a lot of "
    "people very angry and been widely regarded as a bad move. Many were "
    "increasingly of the opinion that they'd all made a big mistake in "
    "coming down from the trees in the first place.\n")

failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
        print("FAIL:", what)


def run(cmd):
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True)
    if r.returncode != 0:
        print(r.stdout)
        raise SystemExit("command failed: " + " ".join(cmd))
    return r.stdout


def heldout_loss(out):
    m = re.search(r"held-out loss ([0-9.]+) ", out)
    check(m is not None, "the trainer printed no held-out loss")
    return m.group(1) if m else None


def our_ids_and_loss(model, tag):
    ids_path = os.path.join(WORK, tag + ".ids")
    loss = float(run([EVAL, model, "--text", text_path, ids_path]).strip())
    return np.fromfile(ids_path, dtype="<i4").tolist(), loss


def hf_loss(model, ids):
    x = torch.tensor(ids, dtype=torch.long)[None]
    with torch.no_grad():
        return float(model(input_ids=x, labels=x).loss)


os.makedirs(WORK, exist_ok=True)
text_path = os.path.join(WORK, "text.txt")
with open(text_path, "wb") as f:
    f.write(TEXT.encode("utf-8"))

# The trainer: evaluate the GGUF, save it; evaluate the saved directory.
out = os.path.join(WORK, "smollm2-hf")
flags = ["--data", text_path, "--steps", "0", "--batch", "1", "--seq", "32",
         "--heldout", "0.5", "--eval-batches", "2"]
log_gguf = run([LLAMA, "--model", GGUF, *flags, "--save", out])
print(log_gguf)
log_dir = run([LLAMA, "--model", out, *flags])
print(log_dir)
check(heldout_loss(log_gguf) == heldout_loss(log_dir),
      "held-out loss of the GGUF %s, of the saved directory %s"
      % (heldout_loss(log_gguf), heldout_loss(log_dir)))

# What the GGUF says, read by the gguf package.
reader = GGUFReader(GGUF)


def scalar(key):
    f = reader.fields[key]
    return f.parts[f.data[0]][0].item()


vocab = read_gguf_vocab(GGUF)
want_cfg = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama",
    "hidden_size": scalar("llama.embedding_length"),
    "intermediate_size": scalar("llama.feed_forward_length"),
    "num_hidden_layers": scalar("llama.block_count"),
    "num_attention_heads": scalar("llama.attention.head_count"),
    "num_key_value_heads": scalar("llama.attention.head_count_kv"),
    "max_position_embeddings": scalar("llama.context_length"),
    "vocab_size": len(vocab["tokens"]),
    "tie_word_embeddings": "output.weight" not in
    [t.name for t in reader.tensors],
    "bos_token_id": vocab["bos"], "eos_token_id": vocab["eos"],
    "torch_dtype": "float32",
}
saved = json.load(open(os.path.join(out, "config.json")))
for k, v in want_cfg.items():
    check(saved.get(k) == v, f"config {k}: {saved.get(k)!r}, want {v!r}")
for k, key in (("rope_theta", "llama.rope.freq_base"),
               ("rms_norm_eps", "llama.attention.layer_norm_rms_epsilon")):
    check(np.float32(saved.get(k, 0)) == np.float32(scalar(key)),
          f"config {k}: {saved.get(k)!r}, GGUF {scalar(key)!r}")
cfg = AutoConfig.from_pretrained(out)
check(cfg.max_position_embeddings == 8192 and cfg.tie_word_embeddings,
      f"AutoConfig: {cfg}")

# The tokenizer: ours from the GGUF, transformers' from the directory,
# and the reference built from the GGUF's vocabulary.
ids, loss_gguf = our_ids_and_loss(GGUF, "gguf")
ids_dir, loss_dir = our_ids_and_loss(out, "dir")
tok = AutoTokenizer.from_pretrained(out)
hf_ids = tok(TEXT)["input_ids"]
ref_ids = build(vocab, "smollm").encode(TEXT).ids
print(f"{len(TEXT.encode())} bytes -> {len(ids)} tokens")
check(hf_ids == ids, "AutoTokenizer's ids differ from ours")
check(ref_ids == ids, "the reference tokenizer's ids differ from ours")
check(ids_dir == ids, "our ids from the saved directory differ")
check(tok.bos_token == vocab["tokens"][vocab["bos"]] and
      tok.eos_token == vocab["tokens"][vocab["eos"]],
      f"special tokens {tok.bos_token!r} {tok.eos_token!r}")
im_start = vocab["tokens"].index("<|im_start|>")
check(im_start in ids, "the control token in the text is not one token")
no_symbol = sum(1 for b in TEXT.encode() if B2U[b] not in
                set(vocab["tokens"]))
check(no_symbol == 1, f"{no_symbol} bytes without a symbol, 1 expected")
m = re.search(r"(\d+) byte\(s\) without a symbol", log_gguf)
check(m is not None and int(m.group(1)) == no_symbol,
      "the trainer did not report the byte without a symbol")

# The model: transformers on the directory against our GGUF model.
model = AutoModelForCausalLM.from_pretrained(out, torch_dtype=torch.float32)
theirs = hf_loss(model, ids)
print(f"loss on {len(ids)} ids: ours from the GGUF {loss_gguf:.9g}, "
      f"ours from the directory {loss_dir:.9g}, transformers {theirs:.9g}")
exact = hf_loss(model.double(), ids)
print(f"transformers in float64 {exact:.9g}")
# 30 layers in float32: ours and transformers' each differ from float64 by
# a few 1e-6 (measured 6e-6 for ours).
check(loss_dir == loss_gguf, "our loss from the directory differs")
check(abs(theirs - loss_gguf) <= 2e-5 * abs(loss_gguf),
      f"transformers {theirs} vs ours {loss_gguf}")
check(abs(exact - loss_gguf) <= 2e-5 * abs(exact),
      f"transformers in float64 {exact} vs ours {loss_gguf}")
check(2.0 < loss_gguf < 5.0, f"loss {loss_gguf} is not a trained model's")
del model

# bf16: stored as bf16, and the same loss for both of us on those weights.
out16 = os.path.join(WORK, "smollm2-bf16")
run([LLAMA, "--model", GGUF, *flags, "--save", out16, "--save-dtype",
     "bf16"])
with safe_open(os.path.join(out16, "model.safetensors"), "pt") as f:
    dts = {f.get_tensor(k).dtype for k in f.keys()}
check(dts == {torch.bfloat16}, f"bf16 save: stored dtypes {dts}")
check(json.load(open(os.path.join(out16, "config.json")))["torch_dtype"] ==
      "bfloat16", "bf16 save: torch_dtype")
_, loss16 = our_ids_and_loss(out16, "bf16")
model = AutoModelForCausalLM.from_pretrained(out16, torch_dtype=torch.float32)
theirs16 = hf_loss(model, ids)
print(f"bf16 weights: ours {loss16:.9g}, transformers {theirs16:.9g}")
check(abs(theirs16 - loss16) <= 2e-5 * abs(loss16),
      f"bf16: transformers {theirs16} vs ours {loss16}")
check(loss16 != loss_gguf, "bf16: the weights were not rounded")

# A GGUF whose tokenizer is SentencePiece's (not built here): --data is
# refused with the reason and the way out, --ids trains; a GGUF without
# a tokenizer reads --data as bytes, which its 83 ids cannot hold.
from gen_gguf import TINY, tiny_weights, write_tiny_gguf  # noqa: E402


def spm(w):
    w.add_tokenizer_model("llama")
    w.add_token_list(["<unk>", "<s>", "</s>"] +
                     ["t%d" % i for i in range(TINY["vocab"] - 3)])
    w.add_token_scores([0.0] * TINY["vocab"])
    w.add_token_types([2, 3, 3] + [1] * (TINY["vocab"] - 3))


weights = tiny_weights(torch.Generator().manual_seed(5), True)
tiny = ["--steps", "0", "--batch", "1", "--seq", "16", "--eval-batches",
        "1"]
for name, extra in (("spm", spm), ("none", None)):
    path = os.path.join(WORK, name + ".gguf")
    write_tiny_gguf(path, weights, True, False, extra=extra)
    r = subprocess.run([LLAMA, "--model", path, "--data", text_path, *tiny],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True)
    print(r.stdout.strip().splitlines()[-1])
    want = (["SentencePiece", "--ids"] if extra else
            ["tokenizer: bytes", "the model's vocabulary is 83"])
    check(r.returncode == 1 and all(w in r.stdout for w in want),
          f"{name}: --data gave {r.returncode}: {r.stdout}")
    ids_path = os.path.join(WORK, name + ".ids")
    (np.arange(200) % TINY["vocab"]).astype("<u2").tofile(ids_path)
    r = subprocess.run([LLAMA, "--model", path, "--ids", ids_path, *tiny],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True)
    check(r.returncode == 0 and "held-out loss" in r.stdout,
          f"{name}: --ids gave {r.returncode}: {r.stdout}")

if failures:
    print(f"{len(failures)} check(s) failed")
    sys.exit(1)
print("GGUF saved as a Hugging Face directory: all checks passed")
