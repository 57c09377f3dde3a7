#!/usr/bin/env bash
# The PyTorch consumer: installs the build into a temporary DESTDIR, points
# examples/pytorch/owlore_torch.py at the installed libowlore.so.0 (found
# through the installed pkg-config file) and runs tests/consumers/
# test_pytorch.py with Debian's PyTorch.
# Usage: pytorch.sh <build-dir> [python with torch, default /usr/bin/python3]
set -euo pipefail

build=$(cd "$1" && pwd)
python=${2:-/usr/bin/python3}
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/../.." && pwd)

[ -x "$python" ] || { echo "SKIP: $python not found"; exit 77; }
"$python" -c 'import torch' 2>/dev/null ||
    { echo "SKIP: $python cannot import torch (python3-torch)"; exit 77; }
command -v pkg-config >/dev/null || { echo "SKIP: pkg-config not found"; exit 77; }

dest=$(mktemp -d)
trap 'rm -rf "$dest"' EXIT
meson install -C "$build" --no-rebuild --quiet --destdir "$dest" >/dev/null

pc=$(find "$dest" -name owlore.pc -path '*/pkgconfig/*' | head -n 1)
[ -n "$pc" ] || { echo "FAIL: owlore.pc was not installed"; exit 1; }
export PKG_CONFIG_PATH=$(dirname "$pc")
export PKG_CONFIG_SYSROOT_DIR=$dest
unset PKG_CONFIG_LIBDIR
# pkgconf prefixes variables with the sysroot, pkg-config does not.
libdir=$(pkg-config --variable=libdir owlore)
case "$libdir" in "$dest"/*) ;; *) libdir=$dest$libdir ;; esac
[ -e "$libdir/libowlore.so.0" ] ||
    { echo "FAIL: $libdir/libowlore.so.0 was not installed"; exit 1; }

export OWLORE_LIB=$libdir/libowlore.so.0
export OWLORE_TORCH_DIR=$src/examples/pytorch
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
echo "OWLORE_LIB=$OWLORE_LIB"
exec "$python" "$here/test_pytorch.py"
