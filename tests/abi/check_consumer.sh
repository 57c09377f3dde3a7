#!/usr/bin/env bash
# Installs the build into a temporary DESTDIR and builds an outside program
# against it the way a user would: only the installed header, the
# pkg-config file and the shared library, nothing from the source tree.
# Usage: check_consumer.sh <build-dir> <consumer.c> [C compiler]
set -euo pipefail

build=$(cd "$1" && pwd)
consumer=$(cd "$(dirname "$2")" && pwd)/$(basename "$2")
compiler=${3:-cc}

command -v pkg-config >/dev/null || { echo "SKIP: pkg-config not found"; exit 77; }

dest=$(mktemp -d)
trap 'rm -rf "$dest"' EXIT

# The build is already up to date when meson test runs us.
meson install -C "$build" --no-rebuild --quiet --destdir "$dest" >/dev/null

pc=$(find "$dest" -name owlore.pc -path '*/pkgconfig/*' | head -n 1)
[ -n "$pc" ] || { echo "FAIL: owlore.pc was not installed"; exit 1; }
header=$(find "$dest" -path '*/include/owlore/owlore.h' | head -n 1)
[ -n "$header" ] || { echo "FAIL: owlore/owlore.h was not installed"; exit 1; }
echo "installed: ${pc#"$dest"}, ${header#"$dest"}"

export PKG_CONFIG_PATH=$(dirname "$pc")
export PKG_CONFIG_SYSROOT_DIR=$dest
unset PKG_CONFIG_LIBDIR
flags=$(pkg-config --cflags --libs owlore)
echo "pkg-config --cflags --libs owlore: $flags"
case "$flags" in
*"-I$dest/"*"-L$dest/"*|*"-L$dest/"*"-I$dest/"*) ;;
*) echo "FAIL: the flags do not point into the install tree"; exit 1 ;;
esac

# shellcheck disable=SC2086 # the flags are meant to be split
"$compiler" -std=c99 -Wall -Wextra -pedantic -Werror -o "$dest/consumer" \
    "$consumer" $flags

needed=$(readelf -d "$dest/consumer" | sed -n 's/.*Shared library: \[\(libowlore[^]]*\)\].*/\1/p')
if [ "$needed" != libowlore.so.0 ]; then
    echo "FAIL: consumer needs '$needed', expected libowlore.so.0"
    exit 1
fi

libdir=$(dirname "$(find "$dest" -name libowlore.so.0 | head -n 1)")
LD_LIBRARY_PATH=$libdir "$dest/consumer"
