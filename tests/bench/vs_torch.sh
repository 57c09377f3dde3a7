#!/bin/sh
# libowlore against PyTorch (CPU): tests/bench/vs_torch.py.
# Usage: tests/bench/vs_torch.sh [BUILD_DIR] [OUT_DIR] [-- script args]
# Script args: --quick (small shapes, < 1 min), --exact-large (adds EXACT
# at 4096x11008, about 2 min more), --no-llama.
# BUILD_DIR (default build) is configured (release, CPU only) and built
# when needed; OUT_DIR (default bench-results) receives report.md,
# results.csv and img/vs-torch-*.svg.
set -eu
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${1:-build}
out=${2:-bench-results}
[ $# -gt 0 ] && shift
[ $# -gt 0 ] && shift
[ "${1:-}" = "--" ] && shift
case $build in /*) ;; *) build=$root/$build ;; esac
if [ ! -f "$build/build.ninja" ]; then
    meson setup "$build" "$root" -Dbuildtype=release -Dcuda=disabled
fi
# The library and the LLaMa step's C side; nothing else is needed.
lib=$(ninja -C "$build" -t targets all | sed -n 's|^\(src/libowlore\.so\.[0-9.]*[0-9]\): .*|\1|p' | head -n 1)
ninja -C "$build" "$lib" tests/bench_llama >/dev/null
threads=${THREADS:-$(nproc)}
# The same thread count for both sides: our context, torch, OpenBLAS.
export OWLORE_LIB="$build/src/libowlore.so.0"
export BENCH_LLAMA="$build/tests/bench_llama"
export OPENBLAS_NUM_THREADS=$threads OMP_NUM_THREADS=$threads
# libgomp's default active wait keeps torch's OpenMP workers spinning after
# each parallel region; in one process on few cores they steal the cores the
# OpenBLAS threads (torch's and ours) need next, which slowed torch's own
# GEMM-bound steps several times over. Passive waiting is the default here;
# OMP_WAIT_POLICY=ACTIVE in the environment restores libgomp's.
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
echo "threads $threads, OMP_WAIT_POLICY=$OMP_WAIT_POLICY"
exec /usr/bin/python3 "$root/tests/bench/vs_torch.py" --threads "$threads" --out "$out" "$@"
