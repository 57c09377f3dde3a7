#!/usr/bin/env bash
# Runs a C test over reference files that a generator makes at test time
# with the pinned reference libraries (tests/ref/venv.sh), in a temporary
# directory removed afterwards.
# Usage: run_ref_test.sh [--smollm2] GENERATOR PROGRAM
#   runs  VENV_PYTHON GENERATOR DIR [MODEL]  then  PROGRAM DIR [MODEL]
#   --smollm2: MODEL is the SmolLM2 GGUF from tests/fetch-smollm2.sh.
# Exits 77 (SKIP, with the reason) when the venv or the model cannot be
# fetched, or when the generator itself exits 77.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
model=()
if [ "${1:-}" = --smollm2 ]; then
    shift
    rc=0
    path=$("$here/../fetch-smollm2.sh") || rc=$?
    if [ $rc -eq 77 ]; then
        echo "SKIP: the SmolLM2 model cannot be fetched (offline?)"
        exit 77
    fi
    [ $rc -eq 0 ] || exit $rc
    model=("$path")
fi
gen=$1
prog=$2
rc=0
py=$("$here/venv.sh") || rc=$?
if [ $rc -eq 77 ]; then
    echo "SKIP: the reference venv cannot be made (offline?)"
    exit 77
fi
[ $rc -eq 0 ] || exit $rc
dir=$(mktemp -d "${TMPDIR:-/tmp}/owl-ref.XXXXXX")
trap 'rm -rf "$dir"' EXIT
rc=0
"$py" "$gen" "$dir" "${model[@]}" || rc=$?
if [ $rc -eq 77 ]; then
    echo "SKIP: $(basename "$gen") cannot make its reference"
    exit 77
fi
[ $rc -eq 0 ] || exit $rc
"$prog" "$dir" "${model[@]}"
