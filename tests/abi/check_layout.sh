#!/usr/bin/env bash
# The public structs keep their layout: every field's offset and size, and
# every struct's size, equal the baseline lib/owlore.layout (x86-64 LP64).
# Growing an options struct means appending a field and adding its line to
# the baseline; any other difference fails.
# Usage: check_layout.sh <layout-program> <owlore.layout>
set -euo pipefail
prog=$1 baseline=$2
actual=$("$prog")
if ! diff -u <(grep -v '^#' "$baseline") <(printf '%s\n' "$actual"); then
    echo "FAIL: public struct layout differs from $baseline (docs/abi.md)"
    exit 1
fi
echo "public struct layout matches $baseline ($(grep -vc '^#' "$baseline") lines)"
