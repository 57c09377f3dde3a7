#!/usr/bin/env bash
# Runs check_hf_save.py with the reference venv's python (transformers,
# tokenizers, safetensors): SKIP (77) when the venv cannot be made.
# Usage: check_hf_save.sh LLAMA_EXE EVAL_LOSS_EXE
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
set +e
py=$("$here/venv.sh")
rc=$?
set -e
if [ $rc -eq 77 ]; then
    echo "SKIP: the reference venv (transformers) cannot be installed offline"
    exit 77
fi
[ $rc -eq 0 ] || exit $rc
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# One thread each: the trainer and torch share the machine.
OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 \
    "$py" "$here/check_hf_save.py" "$(realpath "$1")" "$(realpath "$2")" "$work"
