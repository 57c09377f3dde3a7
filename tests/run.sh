#!/usr/bin/env bash
# Configures a fresh build directory, builds libowlore and runs the CPU
# test suite and the GPU one verbosely; exits non-zero if anything fails.
# With nvcc found (on PATH or in /usr/local/cuda/bin) the build includes
# the CUDA backend; the GPU tests then run where a device is present and
# report SKIP where none is.
# Usage: tests/run.sh [build-dir (default build-tests)] [meson setup options]
set -euo pipefail
cd "$(dirname "$0")/.."

dir=${1:-build-tests}
[ $# -gt 0 ] && shift

# The CUDA toolkit's default location is not on PATH by default.
if ! command -v nvcc >/dev/null && [ -x /usr/local/cuda/bin/nvcc ]; then
    export PATH=/usr/local/cuda/bin:$PATH
fi

if [ -d "$dir/meson-private" ]; then
    meson setup --wipe "$dir" "$@"
else
    meson setup "$dir" "$@"
fi
ninja -C "$dir"
meson test -C "$dir" -v --suite cpu --suite gpu --print-errorlogs
