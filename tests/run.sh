#!/usr/bin/env bash
# Configures a fresh build directory, builds libowlore and runs the CPU
# test suite verbosely; exits non-zero if anything fails.
# Usage: tests/run.sh [build-dir (default build-tests)] [meson setup options]
set -euo pipefail
cd "$(dirname "$0")/.."

dir=${1:-build-tests}
[ $# -gt 0 ] && shift

if [ -d "$dir/meson-private" ]; then
    meson setup --wipe "$dir" "$@"
else
    meson setup "$dir" "$@"
fi
ninja -C "$dir"
meson test -C "$dir" -v --suite cpu --print-errorlogs
