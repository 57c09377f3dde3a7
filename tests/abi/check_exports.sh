#!/usr/bin/env bash
# The shared library's exported interface is exactly the public API:
#  - every defined dynamic symbol is an owl_* function bound to the OWLORE_0
#    version node (the node itself is the only other entry),
#  - that set equals the baseline lib/owlore.symbols,
#  - the baseline equals the functions the public header declares,
#  - the SONAME is libowlore.so.0.
# Usage: check_exports.sh <libowlore.so> <owlore.symbols> <owlore.h>
set -euo pipefail

lib=$1 baseline=$2 header=$3
expected_soname=libowlore.so.0
version_node=OWLORE_0

for tool in nm readelf; do
    command -v "$tool" >/dev/null || { echo "SKIP: $tool not found (binutils)"; exit 77; }
done

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail=0

# "ADDR TYPE NAME[@@VERSION]"; the version node shows as an absolute symbol.
nm -D --defined-only "$lib" | awk '{print $3}' >"$tmp/raw"
grep -vx "$version_node" "$tmp/raw" >"$tmp/versioned" || true

# Every exported function carries the default version of our node.
if grep -v "@@$version_node\$" "$tmp/versioned" >"$tmp/unversioned"; then
    echo "FAIL: exported symbols without @@$version_node:"
    sed 's/^/  /' "$tmp/unversioned"
    fail=1
fi
sed 's/@.*$//' "$tmp/versioned" | LC_ALL=C sort -u >"$tmp/exported"

if grep -v '^owl_' "$tmp/exported" >"$tmp/foreign"; then
    echo "FAIL: exported symbols outside the owl_ namespace:"
    sed 's/^/  /' "$tmp/foreign"
    fail=1
fi

if ! LC_ALL=C sort -c "$baseline" 2>/dev/null || [ -n "$(uniq -d "$baseline")" ]; then
    echo "FAIL: $baseline must be sorted (LC_ALL=C) without duplicates"
    fail=1
fi

if ! diff -u "$baseline" "$tmp/exported" >"$tmp/diff"; then
    echo "FAIL: exports differ from the baseline (- baseline, + library):"
    cat "$tmp/diff"
    fail=1
fi

# Declarations start with OWL_API and name the function on the same line.
grep '^OWL_API' "$header" | grep -o 'owl_[A-Za-z0-9_]*[[:space:]]*(' |
    tr -d '( \t' | LC_ALL=C sort -u >"$tmp/declared"
if ! diff -u "$baseline" "$tmp/declared" >"$tmp/diff"; then
    echo "FAIL: the header's functions differ from the baseline (- baseline, + header):"
    cat "$tmp/diff"
    fail=1
fi

soname=$(readelf -d "$lib" | sed -n 's/.*Library soname: \[\(.*\)\].*/\1/p')
if [ "$soname" != "$expected_soname" ]; then
    echo "FAIL: SONAME is '$soname', expected '$expected_soname'"
    fail=1
fi

if [ "$fail" -eq 0 ]; then
    echo "OK: $(wc -l <"$tmp/exported") owl_* symbols at $version_node, SONAME $soname"
fi
exit "$fail"
