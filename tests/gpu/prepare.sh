#!/usr/bin/env bash
# Gathers, on a Debian 12 machine with network, the .deb files that
# tests/gpu/run.sh unpacks on a GPU machine that has the CUDA toolkit,
# Python, Meson and ninja but neither the libraries the build needs nor
# network access. The files land in tests/gpu/deps/ (git-ignored); carry
# that folder to the GPU machine with the working tree.
# Usage: tests/gpu/prepare.sh [deps-dir (default tests/gpu/deps)]
set -euo pipefail
cd "$(dirname "$0")/../.."

dir=${1:-tests/gpu/deps}

# The closure of what the build links and the tests load, worked out with
# apt-cache depends on Debian 12 and cut down to what a bare system lacks
# (libc6 and libgcc-s1 are everywhere):
#   libopenblas-dev -> libopenblas-pthread-dev -> libopenblas0-pthread
#       (libopenblas.so, cblas.h, and libblas.so.3/liblapack.so.3 that
#       liblapacke loads) -> libgfortran5 -> libquadmath0
#   liblapacke-dev -> liblapacke -> libtmglib3 (+ libtmglib-dev)
#   libcmocka-dev -> libcmocka0
#   pkgconf-bin + libpkgconf3: a pkg-config for Meson where none is
#       installed
packages=(
    libopenblas-dev libopenblas0 libopenblas-pthread-dev libopenblas0-pthread
    libgfortran5 libquadmath0
    liblapacke liblapacke-dev libtmglib3 libtmglib-dev
    libcmocka0 libcmocka-dev
    pkgconf-bin libpkgconf3
)

if ! command -v apt-get >/dev/null; then
    echo "prepare.sh: needs apt-get (Debian 12)" >&2
    exit 1
fi

mkdir -p "$dir"
rm -f "$dir"/*.deb
# apt-get download fetches the candidate versions into the current
# directory, as any user, without installing anything.
(cd "$dir" && apt-get download "${packages[@]}")

# A marker run.sh checks, so a stale or partial folder is noticed.
printf '%s\n' "${packages[@]}" > "$dir/PACKAGES"
count=$(ls "$dir"/*.deb | wc -l)
if [ "$count" -ne "${#packages[@]}" ]; then
    echo "prepare.sh: expected ${#packages[@]} .deb files, got $count" >&2
    exit 1
fi
echo "prepare.sh: $count packages in $dir, $(du -sh "$dir" | cut -f1) in all"
