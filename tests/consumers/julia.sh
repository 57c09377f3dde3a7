#!/usr/bin/env bash
# The Julia bindings (examples/julia/Owlore.jl) checked against the public
# header by tests/consumers/check_julia.py: every OWL_API function's ccall
# types, every struct's fields, every enumeration value, plus the checker's
# self-test (mutated bindings must be rejected). Julia itself is not a
# Debian package, so the bindings are not run here (examples/julia/README.md).
# Usage: julia.sh <source-root>
set -uo pipefail

src=$(cd "$1" && pwd)
python=/usr/bin/python3
[ -x "$python" ] || { echo "SKIP: $python not found"; exit 77; }

"$python" "$src/tests/consumers/check_julia.py" \
    "$src/include/owlore/owlore.h" "$src/examples/julia/Owlore.jl" --self-test
