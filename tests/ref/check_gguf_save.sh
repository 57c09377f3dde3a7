#!/usr/bin/env bash
# Runs check_gguf_save.py with the reference venv's python on the real
# SmolLM2 GGUF (tests/fetch-smollm2.sh): SKIP (77) when the venv or the
# model cannot be fetched.
# Usage: check_gguf_save.sh LLAMA_EXE EVAL_LOSS_EXE
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
rc=0
py=$("$here/venv.sh") || rc=$?
if [ $rc -eq 77 ]; then
    echo "SKIP: the reference venv (transformers) cannot be installed offline"
    exit 77
fi
[ $rc -eq 0 ] || exit $rc
gguf=$("$here/../fetch-smollm2.sh") || rc=$?
if [ $rc -eq 77 ]; then
    echo "SKIP: the SmolLM2 model cannot be fetched (offline?)"
    exit 77
fi
[ $rc -eq 0 ] || exit $rc
work=$(mktemp -d "${TMPDIR:-/tmp}/owl-gguf-save.XXXXXX")
trap 'rm -rf "$work"' EXIT
"$py" "$here/check_gguf_save.py" "$(realpath "$1")" "$(realpath "$2")" \
    "$gguf" "$work"
