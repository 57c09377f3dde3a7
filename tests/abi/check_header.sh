#!/usr/bin/env bash
# The public header stands alone: included first (twice, for the guard)
# in a C99 and in C++11/C++17 translation unit, with strict warnings as
# errors, it compiles and its types have the frozen sizes.
# Usage: check_header.sh <include-dir> <C compiler> [C++ compiler]
# Clang and clang++ are tried as well when they are installed.
set -euo pipefail

incdir=$1
cc=$2
cxx=${3:-}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

cat >"$tmp/use.h" <<'SRC'
#include <owlore/owlore.h>
#include <owlore/owlore.h>

/* Fails to compile when a frozen size or value changes. */
typedef char tensor_is_40_bytes[sizeof(owl_tensor) == 40 ? 1 : -1];
typedef char version_number_fits[OWL_VERSION_NUMBER > 0 ? 1 : -1];
typedef char status_is_32_bits[sizeof(owl_status) == 4 ? 1 : -1];

int use_header(void);
int use_header(void)
{
    owl_tensor t;
    owl_tensor_init(&t, 0, OWL_DTYPE_F32, 1, 1);
    owl_status (*create)(owl_context **, const owl_context_options *) =
        owl_context_create;
    tensor_is_40_bytes a;
    version_number_fits b;
    status_is_32_bits c;
    (void)a; (void)b; (void)c;
    return create != 0 && owl_status_name(OWL_OK) != 0 && t.rows == 1;
}
SRC
cp "$tmp/use.h" "$tmp/use.c"
cp "$tmp/use.h" "$tmp/use.cpp"

fail=0 ran=0
try() { # compiler, standard, source
    local compiler=$1 std=$2 src=$3
    command -v "$compiler" >/dev/null || return 0
    ran=$((ran + 1))
    if "$compiler" "-std=$std" -Wall -Wextra -pedantic -Werror -I"$incdir" \
        -c "$src" -o "$tmp/out.o" 2>"$tmp/log"; then
        echo "ok   $compiler -std=$std"
    else
        echo "FAIL $compiler -std=$std"
        sed 's/^/  /' "$tmp/log"
        fail=1
    fi
}

try "$cc" c99 "$tmp/use.c"
try clang c99 "$tmp/use.c"
if [ -n "$cxx" ]; then
    try "$cxx" c++11 "$tmp/use.cpp"
    try "$cxx" c++17 "$tmp/use.cpp"
fi
try clang++ c++11 "$tmp/use.cpp"
try clang++ c++17 "$tmp/use.cpp"

if [ -z "$cxx" ] && ! command -v clang++ >/dev/null; then
    echo "FAIL: no C++ compiler to check the header with"
    fail=1
fi
[ "$ran" -gt 0 ] || { echo "FAIL: no compiler ran"; fail=1; }
exit "$fail"
