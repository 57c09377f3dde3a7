#!/usr/bin/env bash
# Builds libowlore with the CUDA backend and runs the GPU test suite and
# the GPU benchmarks, on a machine that has an NVIDIA GPU, the CUDA
# toolkit, Python, Meson and ninja, but no OpenBLAS, LAPACKE or cmocka and
# no network. Those come from the .deb files tests/gpu/prepare.sh gathered
# into tests/gpu/deps/ on a Debian 12 machine: they are unpacked into a
# local prefix (nothing is installed on the system).
#
# Usage: tests/gpu/run.sh [RESULTS_DIR (default gpu-results)]
# Writes RESULTS_DIR/summary.md (one page: the GPU, driver and CUDA, test
# counts, each benchmark's figures) and the logs of every stage; exits
# non-zero when a stage or a test fails. The whole run keeps to a time
# budget (OWL_GPU_BUDGET_S, default 600 s) through per-stage timeouts.
#
# Stages: configure, build, tests (suite gpu), llama_tests (the LLaMa
# example's GPU tests, suite llama-gpu), benchmarks (suite gpu),
# llama_bench (the ~1B LLaMa benchmark, about 2 minutes), llama_build and
# llama_launch (the trainer on the GPU through examples/llama/cuda/
# launch.sh, one rank, a few steps). The llama stages are apart so that
# the 1B benchmark has a time box of its own and a slow one cannot eat the
# others' budget.
#
# Environment (all optional):
#   OWL_GPU_DEPS      the .deb folder           (tests/gpu/deps)
#   OWL_GPU_PREFIX    where they are unpacked   (tests/gpu/prefix)
#   OWL_GPU_BUILD     the build directory       (build-gpu)
#   OWL_GPU_ARCH      SM architectures, e.g. "90" (default: from nvidia-smi,
#                     else 90)
#   OWL_GPU_PKG_CONFIG=bundled  use the unpacked pkgconf even when a
#                     pkg-config is installed
set -uo pipefail
cd "$(dirname "$0")/../.."
root=$PWD

results=${1:-gpu-results}
mkdir -p "$results"
results=$(cd "$results" && pwd)
deps=${OWL_GPU_DEPS:-tests/gpu/deps}
prefix=${OWL_GPU_PREFIX:-tests/gpu/prefix}
build=${OWL_GPU_BUILD:-build-gpu}
budget=${OWL_GPU_BUDGET_S:-600}

start=$SECONDS
failed=()
stage_times=()
log() { echo "run.sh [$((SECONDS - start))s]: $*" | tee -a "$results/run.log"; }
: > "$results/run.log"

# Seconds for the next stage: its cap, or what is left of the budget.
allow() {
    local cap=$1 left=$((budget - (SECONDS - start)))
    [ "$left" -lt 10 ] && left=10
    echo $((cap < left ? cap : left))
}

# Runs a stage with a timeout, its output in RESULTS_DIR/<name>.log.
stage() {
    local name=$1 cap=$2 t0=$SECONDS rc
    shift 2
    local limit
    limit=$(allow "$cap")
    log "$name (limit ${limit}s): $*"
    timeout --kill-after=10 "$limit" "$@" > "$results/$name.log" 2>&1
    rc=$?
    stage_times+=("$name: $((SECONDS - t0)) s, exit $rc")
    if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
        log "$name: timed out after ${limit}s"
    elif [ $rc -ne 0 ]; then
        log "$name: exit status $rc (see $results/$name.log)"
    fi
    return $rc
}

# ---- the CUDA toolkit ----------------------------------------------------
if ! command -v nvcc >/dev/null && [ -x /usr/local/cuda/bin/nvcc ]; then
    export PATH=/usr/local/cuda/bin:$PATH
fi
if ! command -v nvcc >/dev/null; then
    log "nvcc not found (PATH or /usr/local/cuda/bin)"
    exit 1
fi
if [ "$(uname -m)" != x86_64 ]; then
    log "the packages in $deps are amd64; this machine is $(uname -m)"
    exit 1
fi

# ---- unpack the packages into the prefix ---------------------------------
unpack_deb() {
    local deb=$1 dest=$2
    if command -v dpkg >/dev/null; then
        dpkg -x "$deb" "$dest" && return 0
    fi
    local tmp
    tmp=$(mktemp -d)
    if command -v ar >/dev/null && (cd "$tmp" && ar x "$deb") &&
        tar -xf "$tmp"/data.tar.* -C "$dest" 2>/dev/null; then
        rm -rf "$tmp"
        return 0
    fi
    rm -rf "$tmp"
    # No dpkg, ar or xz: read the ar archive and the tarball in Python.
    python3 - "$deb" "$dest" <<'PY'
import io, sys, tarfile
deb, dest = sys.argv[1], sys.argv[2]
data = open(deb, 'rb').read()
assert data[:8] == b'!<arch>\n', deb + ': not an ar archive'
pos = 8
while pos + 60 <= len(data):
    name = data[pos:pos + 16].decode().strip().rstrip('/')
    size = int(data[pos + 48:pos + 58].decode().strip())
    body = data[pos + 60:pos + 60 + size]
    if name.startswith('data.tar'):
        with tarfile.open(fileobj=io.BytesIO(body)) as t:
            t.extractall(dest)
        sys.exit(0)
    pos += 60 + size + (size & 1)
sys.exit(deb + ': no data.tar member')
PY
}

shopt -s nullglob
debs=("$deps"/*.deb)
if [ ${#debs[@]} -eq 0 ] || [ ! -f "$deps/PACKAGES" ]; then
    log "no packages in $deps: run tests/gpu/prepare.sh on a Debian 12 machine first"
    exit 1
fi
rm -rf "$prefix"
mkdir -p "$prefix"
for deb in "${debs[@]}"; do
    if ! unpack_deb "$deb" "$prefix"; then
        log "cannot unpack $deb"
        exit 1
    fi
done
prefix=$(cd "$prefix" && pwd)
libdir=$prefix/usr/lib/x86_64-linux-gnu
blasdir=$libdir/openblas-pthread
# What Debian's postinst scripts would do: the alternatives that name
# OpenBLAS the system's BLAS and LAPACK (liblapacke needs lapack.pc).
ln -sf blas-openblas.pc "$blasdir/pkgconfig/blas.pc"
ln -sf lapack-openblas.pc "$blasdir/pkgconfig/lapack.pc"
# The .pc files name /usr; point them at the prefix.
for pc in "$libdir"/pkgconfig/*.pc "$blasdir"/pkgconfig/*-openblas.pc \
          "$blasdir"/pkgconfig/openblas.pc; do
    sed -i "s#/usr/#$prefix/usr/#g; s#=/usr\$#=$prefix/usr#" "$pc"
done
export PKG_CONFIG_PATH=$blasdir/pkgconfig:$libdir/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}
export LD_LIBRARY_PATH=$blasdir:$libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export LIBRARY_PATH=$blasdir:$libdir${LIBRARY_PATH:+:$LIBRARY_PATH}
# lapacke.h and cmocka.h sit in <prefix>/usr/include, which no .pc names
# (Debian relies on /usr/include being searched).
export C_INCLUDE_PATH=$prefix/usr/include${C_INCLUDE_PATH:+:$C_INCLUDE_PATH}
if [ "${OWL_GPU_PKG_CONFIG:-}" = bundled ] || ! command -v pkg-config >/dev/null; then
    export PKG_CONFIG=$prefix/usr/bin/pkgconf
fi
log "unpacked ${#debs[@]} packages into $prefix; pkg-config: ${PKG_CONFIG:-$(command -v pkg-config)}"

# ---- the GPU ---------------------------------------------------------------
gpu_name="none found"
driver="-"
driver_cuda="-"
arch=${OWL_GPU_ARCH:-}
if command -v nvidia-smi >/dev/null &&
    nvidia-smi --query-gpu=name,driver_version,compute_cap \
        --format=csv,noheader > "$results/gpu.csv" 2>/dev/null &&
    [ -s "$results/gpu.csv" ]; then
    gpu_name=$(head -n1 "$results/gpu.csv" | cut -d, -f1 | sed 's/^ *//')
    driver=$(head -n1 "$results/gpu.csv" | cut -d, -f2 | tr -d ' ')
    driver_cuda=$(nvidia-smi 2>/dev/null | grep -o 'CUDA Version: *[0-9.]*' |
                  grep -o '[0-9.]*$' || echo -)
    if [ -z "$arch" ]; then
        arch=$(cut -d, -f3 "$results/gpu.csv" | tr -d ' .' | sort -u |
               paste -sd';' -)
    fi
    nvidia-smi > "$results/nvidia-smi.txt" 2>&1
fi
arch=${arch:-90}
nvcc_version=$(nvcc --version | grep -o 'release [0-9.]*' | cut -d' ' -f2)
log "GPU: $gpu_name, driver $driver (CUDA $driver_cuda); nvcc $nvcc_version; cuda-arch $arch"

# ---- configure, build, test ----------------------------------------------
python=$(command -v python3 || command -v python || echo /usr/bin/python3)
configure_ok=false
# A dedicated build directory, configured from scratch every time.
rm -rf "$build"
if stage configure 120 meson setup "$build" \
        --buildtype=release -Dcuda=enabled "-Dcuda-arch=$arch" \
        -Dexamples=true "-Dtorch_python=$python"; then
    configure_ok=true
else
    failed+=(configure)
fi

# The executables of the gpu suite's tests and benchmarks (the CPU suite's
# PyTorch reference data cannot be written here, so `ninja` alone is not
# an option).
targets=()
if $configure_ok; then
    mapfile -t targets < <(cd "$build" && python3 - <<'PY'
import json, os, subprocess
build = os.getcwd()
out = set()
for kind in ('--tests', '--benchmarks'):
    entries = json.loads(subprocess.check_output(
        ['meson', 'introspect', kind, '.']))
    for t in entries:
        if not any(s.split(':')[-1] == 'gpu' for s in t['suite']):
            continue
        exe = t['cmd'][0]
        if exe.startswith(build + os.sep):
            out.add(os.path.relpath(exe, build))
for t in sorted(out):
    print(t)
PY
    )
    log "targets: ${targets[*]:-none}"
fi

build_ok=false
if $configure_ok && [ ${#targets[@]} -gt 0 ] &&
    stage build 300 ninja -C "$build" "${targets[@]}"; then
    build_ok=true
elif $configure_ok; then
    failed+=(build)
fi

tests_rc=-
bench_rc=-
if $build_ok; then
    rm -f "$build/meson-logs/testlog.json"
    stage tests 120 meson test -C "$build" --no-rebuild --suite gpu \
        --no-suite llama-gpu -v --print-errorlogs
    tests_rc=$?
    cp "$build/meson-logs/testlog.json" "$results/testlog.json" 2>/dev/null
    [ "$tests_rc" -ne 0 ] && failed+=(tests)

    # The LLaMa example on the GPU: its tests (data parallel on one rank,
    # and on two when the machine has two GPUs).
    rm -f "$build/meson-logs/testlog.json"
    stage llama_tests 150 meson test -C "$build" --no-rebuild \
        --suite llama-gpu -v --print-errorlogs
    rc=$?
    cp "$build/meson-logs/testlog.json" "$results/testlog-llama.json" \
        2>/dev/null
    [ "$rc" -ne 0 ] && failed+=(llama_tests)

    rm -f "$build/meson-logs/benchmarklog.json"
    stage benchmarks 180 meson test -C "$build" --no-rebuild --benchmark \
        --suite gpu --no-suite llama-gpu -v
    bench_rc=$?
    cp "$build/meson-logs/benchmarklog.json" "$results/benchmarklog.json" \
        2>/dev/null
    [ "$bench_rc" -ne 0 ] && failed+=(benchmarks)

    # The ~1B benchmark keeps to its own budget: what this stage may take,
    # less a margin for creating and freeing the models.
    limit=$(allow 150)
    rm -f "$build/meson-logs/benchmarklog.json"
    stage llama_bench 150 env \
        LLAMA_BENCH_BUDGET_S=$((limit > 70 ? limit - 40 : 30)) \
        meson test -C "$build" --no-rebuild --benchmark --suite llama-gpu -v
    rc=$?
    cp "$build/meson-logs/benchmarklog.json" \
        "$results/benchmarklog-llama.json" 2>/dev/null
    [ "$rc" -ne 0 ] && failed+=(llama_bench)

    # The trainer itself on the GPU, one rank through launch.sh (the
    # same path as N ranks, without a second GPU): a few OWLORE steps of
    # the tiny model on the synthetic corpus. Built here, apart from the
    # test programs, so that a trainer that does not build costs only
    # this stage.
    llama_bin=$build/examples/llama/llama
    [[ $llama_bin = /* ]] || llama_bin=$root/$llama_bin
    if stage llama_build 120 ninja -C "$build" examples/llama/llama; then
        if "$llama_bin" --help 2>&1 | grep -q -- '--device'; then
            stage llama_launch 60 env "LLAMA_BIN=$llama_bin" \
                examples/llama/cuda/launch.sh -n 1 -- --method owlore \
                --steps 20 --log-every 5
            [ $? -ne 0 ] && failed+=(llama_launch)
        else
            log "llama_launch: skipped (this trainer has no --device)"
        fi
    else
        failed+=(llama_build)
    fi
fi

# ---- summary.md ------------------------------------------------------------
commit=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo "not a git checkout")
{
    echo "# libowlore GPU run"
    echo
    echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "- commit: $commit"
    echo "- GPU: $gpu_name"
    echo "- driver: $driver (supports CUDA $driver_cuda)"
    echo "- CUDA toolkit (nvcc): $nvcc_version; cuda-arch: $arch"
    echo "- wall time: $((SECONDS - start)) s (budget $budget s)"
    if [ ${#failed[@]} -eq 0 ]; then
        echo "- result: **passed**"
    else
        echo "- result: **FAILED** (${failed[*]})"
    fi
    echo
    echo "## Stages"
    echo
    for s in "${stage_times[@]}"; do
        echo "- $s"
    done
    echo
    python3 - "$results" <<'PY'
import json, os, re, sys
results = sys.argv[1]

def entries(*names):
    out = []
    for name in names:
        path = os.path.join(results, name)
        if os.path.exists(path):
            with open(path) as f:
                out += [json.loads(line) for line in f if line.strip()]
    return out

print('## Tests (suite gpu)')
print()
tests = entries('testlog.json', 'testlog-llama.json')
if not tests:
    print('No test results (see the stage logs).')
counts = {}
for t in tests:
    counts[t['result']] = counts.get(t['result'], 0) + 1
if tests:
    print('pass %d, fail %d, skip %d, timeout %d, other %d' % (
        counts.get('OK', 0), counts.get('FAIL', 0), counts.get('SKIP', 0),
        counts.get('TIMEOUT', 0),
        sum(v for k, v in counts.items()
            if k not in ('OK', 'FAIL', 'SKIP', 'TIMEOUT'))))
    print()
    for t in tests:
        print('- %s: %s (%.1f s)' % (t['name'], t['result'], t['duration']))
print()
print('## Benchmarks (suite gpu)')
print()
benches = entries('benchmarklog.json', 'benchmarklog-llama.json')
if not benches:
    print('No benchmark results.')
# Figure lines: table rows and lines that carry a rate or a time.
figure = re.compile(r'^\s*\||GB/s|GFLOP/s|TFLOP/s|\b\d+(\.\d+)?\s*(ms|us|s)\b|%')
for b in benches:
    print('### %s: %s (%.1f s)' % (b['name'], b['result'], b['duration']))
    print()
    lines = [l for l in (b.get('stdout') or '').splitlines()
             if figure.search(l)]
    print('```')
    print('\n'.join(lines[:60]) if lines else '(no figure lines)')
    print('```')
    print()
launch = os.path.join(results, 'llama_launch.log')
if os.path.exists(launch):
    print('## LLaMa trainer on the GPU (launch.sh, 1 rank)')
    print()
    with open(launch, errors='replace') as f:
        tail = f.read().splitlines()[-20:]
    print('```')
    print('\n'.join(tail))
    print('```')
    print()
PY
    echo "Logs: run.log, configure.log, build.log, tests.log, llama_tests.log,"
    echo "benchmarks.log, llama_bench.log, llama_launch.log, testlog*.json,"
    echo "benchmarklog*.json, nvidia-smi.txt in this folder."
} > "$results/summary.md"

log "summary: $results/summary.md"
if [ ${#failed[@]} -ne 0 ]; then
    log "FAILED: ${failed[*]}"
    exit 1
fi
log "passed"
