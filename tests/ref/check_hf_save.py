"""A directory saved by the trainer is a complete model that transformers
accepts, with the source's configuration, tokenizer and the trained
weights.

Usage: check_hf_save.py LLAMA_EXE EVAL_LOSS_EXE WORK_DIR

Source models are made here with transformers (LlamaForCausalLM, random
weights, save_pretrained: sharded, tied and untied) and a byte-level BPE
tokenizer trained with `tokenizers`. The trainer fine-tunes each for a
few steps with --save; then, for each saved directory:
  - transformers' AutoConfig and LlamaForCausalLM.from_pretrained load it
    with no missing or unexpected weights, and AutoTokenizer encodes text
    as the source's tokenizer does;
  - every key of the source config.json is there with its value (only
    torch_dtype follows --save-dtype), and AutoConfig gives the same
    configuration as for the source;
  - the weights are not the source's (training changed them), and
    transformers' loss on fixed ids equals the C model's on the same
    directory (tests/llama_eval_loss.c), both in float32, within 1e-5
    relative, and both within 1e-5 of transformers in float64.
Saving into the sharded source's own directory leaves no index or shard.
A tied source that also stores lm_head.weight (equal) trains too.
"""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from tokenizers import Tokenizer, models, pre_tokenizers, decoders, trainers
from transformers import (AutoConfig, AutoTokenizer, LlamaConfig,
                          LlamaForCausalLM, PreTrainedTokenizerFast)

LLAMA, EVAL, WORK = sys.argv[1], sys.argv[2], sys.argv[3]
VOCAB = 300
TEXT = ("The quick brown fox jumps over the lazy dog. " * 40 +
        "A rolling stone gathers no moss; still waters run deep. " * 40)

failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
        print("FAIL:", what)


def make_tokenizer(path):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB, special_tokens=["<unk>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([TEXT], trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>",
                                   bos_token="<s>", eos_token="</s>")
    fast.save_pretrained(path)
    return fast


def make_source(path, tied, shard):
    torch.manual_seed(7 if tied else 8)
    cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=64,
                      intermediate_size=176, num_hidden_layers=3,
                      num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=128, rope_theta=50000.0,
                      rms_norm_eps=1e-5, tie_word_embeddings=tied,
                      bos_token_id=1, eos_token_id=2, pad_token_id=None,
                      initializer_range=0.05)
    model = LlamaForCausalLM(cfg).float()
    model.save_pretrained(path, safe_serialization=True,
                          max_shard_size="150KB" if shard else "100MB")
    return model


def run(cmd):
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True)
    if r.returncode != 0:
        print(r.stdout)
        raise SystemExit("command failed: " + " ".join(cmd))
    return r.stdout


def train(src, out, ids, *extra):
    return run([LLAMA, "--model", src, "--ids", ids, "--id-bits", "16",
                "--steps", "4", "--batch", "2", "--seq", "32", "--lr", "3e-3",
                "--warmup", "1", "--eval-batches", "1", "--calib-batches",
                "2", "--gamma", "2", "--rank", "4", "--save", out] +
               list(extra))


def hf_loss(model, ids):
    x = torch.tensor(ids, dtype=torch.long)[None]
    with torch.no_grad():
        return float(model(input_ids=x, labels=x).loss)


def check_saved(name, src_cfg, src_auto, src_weights, out, fixed_path,
                fixed, dtype, src_tok_dir):
    saved = json.load(open(os.path.join(out, "config.json")))
    for k, v in src_cfg.items():
        want = dtype if k == "torch_dtype" else v
        check(k in saved and saved[k] == want,
              f"{name}: config key {k}: {saved.get(k, '<missing>')!r}, "
              f"source {v!r}")
    check(saved.get("torch_dtype") == dtype,
          f"{name}: torch_dtype {saved.get('torch_dtype')!r}")
    a = AutoConfig.from_pretrained(out).to_dict()
    a_src = src_auto
    for k in set(a) | set(a_src):
        if k in ("torch_dtype", "transformers_version", "_name_or_path"):
            continue
        check(a.get(k) == a_src.get(k),
              f"{name}: AutoConfig {k}: {a.get(k)!r} vs {a_src.get(k)!r}")

    model, info = LlamaForCausalLM.from_pretrained(
        out, torch_dtype=torch.float32, output_loading_info=True)
    check(not info["missing_keys"] and not info["unexpected_keys"] and
          not info["mismatched_keys"], f"{name}: loading info {info}")
    sd = model.state_dict()
    moved = max(float((sd[k].float() - v).abs().max())
                for k, v in src_weights.items() if k in sd)
    check(moved > 0, f"{name}: the weights are the source's")
    ours = float(run([EVAL, out, fixed_path]).strip())
    theirs = hf_loss(model, fixed)
    exact = hf_loss(model.double(), fixed)
    print(f"{name}: loss on fixed ids: ours {ours:.9g}, transformers f32 "
          f"{theirs:.9g}, f64 {exact:.9g}")
    check(abs(ours - theirs) <= 1e-5 * abs(theirs),
          f"{name}: loss {ours} vs transformers {theirs}")
    check(abs(ours - exact) <= 1e-5 * abs(exact),
          f"{name}: loss {ours} vs float64 {exact}")
    tok = AutoTokenizer.from_pretrained(out)
    ref = AutoTokenizer.from_pretrained(src_tok_dir)
    sample = "The lazy fox; still waters gather moss."
    check(tok(sample)["input_ids"] == ref(sample)["input_ids"],
          f"{name}: the saved tokenizer encodes differently")
    return saved


os.makedirs(WORK, exist_ok=True)
tok_dir = os.path.join(WORK, "tok")
tokenizer = make_tokenizer(tok_dir)
rng = np.random.default_rng(3)
ids = np.array(tokenizer(TEXT)["input_ids"] * 4, dtype=np.uint16)
ids_path = os.path.join(WORK, "ids.bin")
ids.tofile(ids_path)
fixed = [int(i) for i in rng.integers(0, VOCAB, size=33)]
fixed_path = os.path.join(WORK, "fixed.bin")
np.array(fixed, dtype=np.uint16).tofile(fixed_path)

src_cfg_obj = {}
cases = [("untied", False, False), ("tied", True, False),
         ("sharded", False, True)]
for name, tied, shard in cases:
    src = os.path.join(WORK, name)
    make_source(src, tied, shard)
    for f in os.listdir(tok_dir):
        shutil.copy(os.path.join(tok_dir, f), src)
    src_cfg_obj[name] = AutoConfig.from_pretrained(src).to_dict()

# A tied source that also stores lm_head.weight, equal to the embedding.
stored = os.path.join(WORK, "tied_stored")
shutil.copytree(os.path.join(WORK, "tied"), stored)
w = load_file(os.path.join(stored, "model.safetensors"))
w["lm_head.weight"] = w["model.embed_tokens.weight"].clone()
save_file(w, os.path.join(stored, "model.safetensors"),
          metadata={"format": "pt"})
src_cfg_obj["tied_stored"] = src_cfg_obj["tied"]

runs = [("untied", "untied", "untied.out", "float32", []),
        ("tied", "tied", "tied.out", "float32", []),
        ("tied_stored", "tied_stored", "tied_stored.out", "float32", []),
        ("untied:bf16", "untied", "untied.bf16", "bfloat16",
         ["--save-dtype", "bf16"]),
        # into the sharded source's own directory, last: it replaces it
        ("sharded", "sharded", "sharded", "float32", [])]
for name, src_name, out_name, dtype, extra in runs:
    src = os.path.join(WORK, src_name)
    out = os.path.join(WORK, out_name)
    src_cfg = json.load(open(os.path.join(src, "config.json")))
    src_weights = {}
    for f in os.listdir(src):
        if f.endswith(".safetensors"):
            src_weights.update(load_file(os.path.join(src, f)))
    src_tok = os.path.join(WORK, "tok")
    train(src, out, ids_path, *extra)
    check_saved(name, src_cfg, src_cfg_obj[src_name], src_weights, out,
                fixed_path, fixed, dtype, src_tok)
    listing = sorted(os.listdir(out))
    want = sorted(["config.json", "generation_config.json",
                   "model.safetensors", "optimizer.state",
                   "special_tokens_map.json", "tokenizer.json",
                   "tokenizer_config.json", "trainer.txt"])
    check(listing == want, f"{name}: the directory holds {listing}")
    if dtype == "bfloat16":
        with safe_open(os.path.join(out, "model.safetensors"), "pt") as f:
            dts = {f.get_tensor(k).dtype for k in f.keys()}
        check(dts == {torch.bfloat16}, f"{name}: stored dtypes {dts}")
    if name.startswith("tied"):
        with safe_open(os.path.join(out, "model.safetensors"), "pt") as f:
            check("lm_head.weight" not in f.keys(),
                  f"{name}: a tied head stored twice")

if failures:
    print(f"{len(failures)} check(s) failed")
    sys.exit(1)
print("saved directories: all checks passed")
