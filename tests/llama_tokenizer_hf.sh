#!/usr/bin/env bash
# The tokenizer against Hugging Face tokenizers on the real SmolLM2
# vocabulary: tests/ref/gen_tokenizer.py (with the reference venv) builds
# the tokenizers from the model's GGUF metadata and writes the reference
# ids; test_llama_tokenizer --hf compares, round-trips and saves each
# tokenizer.json again; the script then checks that Hugging Face loads the
# saved files and gives the same ids.
# Usage: llama_tokenizer_hf.sh TEST_PROGRAM DATA_DIR
# Exits 77 (SKIP) when the venv or the model cannot be fetched, or the
# data directory lacks tinyshakespeare.txt.
set -euo pipefail
prog=$1
data=$2
here=$(cd "$(dirname "$0")" && pwd)
shakespeare=$data/tinyshakespeare.txt
[ -f "$shakespeare" ] || { echo "SKIP: $shakespeare not found"; exit 77; }
rc=0
py=$("$here/ref/venv.sh") || rc=$?
[ "$rc" -eq 0 ] || { [ "$rc" -eq 77 ] && echo "SKIP: no reference venv (offline)"; exit "$rc"; }
gguf=$("$here/fetch-smollm2.sh") || rc=$?
[ "$rc" -eq 0 ] || { [ "$rc" -eq 77 ] && echo "SKIP: SmolLM2 cannot be fetched (offline)"; exit "$rc"; }
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
"$py" "$here/ref/gen_tokenizer.py" "$gguf" "$shakespeare" "$out"
"$prog" --hf "$out"
"$py" "$here/ref/gen_tokenizer.py" --check "$out"
