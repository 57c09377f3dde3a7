#!/bin/sh
# libowlore against PyTorch (CPU) side by side: tests/bench/vs_torch.py.
# Usage: tests/bench/vs_torch.sh [BUILD_DIR] [OUT_DIR] [-- script args, e.g. --quick]
# BUILD_DIR (default build) is configured and built when needed; OUT_DIR
# (default bench-results) receives report.md, results.csv and scaling.svg.
set -eu
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${1:-build}
out=${2:-bench-results}
[ $# -gt 0 ] && shift
[ $# -gt 0 ] && shift
[ "${1:-}" = "--" ] && shift
case $build in /*) ;; *) build=$root/$build ;; esac
if [ ! -f "$build/build.ninja" ]; then
    meson setup "$build" "$root" -Dbuildtype=release
fi
# Only the library: the benchmark needs nothing else.
target=$(ninja -C "$build" -t targets all | sed -n 's|^\(src/libowlore\.so\.[0-9.]*[0-9]\): .*|\1|p' | head -n 1)
ninja -C "$build" "$target" >/dev/null
threads=${THREADS:-$(nproc)}
# The same thread count for both sides: our context, torch, OpenBLAS.
export OWLORE_LIB="$build/src/libowlore.so.0"
export OPENBLAS_NUM_THREADS=$threads OMP_NUM_THREADS=$threads
# libgomp's default active wait keeps torch's OpenMP workers spinning after
# each parallel region; in one process on few cores they steal the cores the
# OpenBLAS threads (torch's and ours) need next, which slowed torch's own
# GEMM-bound steps several times over. Passive waiting is the default here;
# OMP_WAIT_POLICY=ACTIVE in the environment restores libgomp's.
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
echo "threads $threads, OMP_WAIT_POLICY=$OMP_WAIT_POLICY"
exec /usr/bin/python3 "$root/tests/bench/vs_torch.py" --threads "$threads" --out "$out" "$@"
