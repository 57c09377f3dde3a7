#!/usr/bin/env bash
# What a CUDA build of the shared library needs from the loader, as
# docs/cuda.md ("Linking") promises:
#  - of the CUDA libraries, exactly cuBLAS and cuSOLVER, by the SONAMEs of
#    the toolkit's own libcublas.so and libcusolver.so: no libcudart.so
#    (the runtime is linked statically) and no libcuda.so (the driver is
#    opened at run time, so the library loads where there is none);
#  - otherwise only the C and C++ runtimes and the CPU backend's BLAS and
#    LAPACKE;
#  - no CUDA runtime or driver function imported (cuda*, cu[A-Z]*): the
#    static runtime defines them inside the library;
#  - a RUNPATH to the toolkit's library folder, where cuBLAS and cuSOLVER
#    are found when the loader's own path does not have them.
# Checked on the built library and, when a build folder is given, on the
# copy `meson install` writes (whose RUNPATH is the installed one).
# SKIP (77) for a build without CUDA.
# Usage: check_needed.sh <libowlore.so> <the toolkit's library folder, or
#        empty for a build without CUDA> [build folder]
set -euo pipefail

built=$1 cuda_lib_dir=${2:-} build_dir=${3:-}

if [ -z "$cuda_lib_dir" ]; then
    echo "SKIP: the library is built without CUDA"
    exit 77
fi
for tool in nm readelf; do
    command -v "$tool" >/dev/null || { echo "SKIP: $tool not found (binutils)"; exit 77; }
done

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail=0

soname_of() {
    readelf -d "$1" | sed -n 's/.*Library soname: \[\(.*\)\].*/\1/p'
}

for l in cublas cusolver; do
    s=$(soname_of "$cuda_lib_dir/lib$l.so")
    if [ -z "$s" ]; then
        echo "FAIL: $cuda_lib_dir/lib$l.so has no SONAME"
        exit 1
    fi
    echo "$s"
done | LC_ALL=C sort >"$tmp/cuda_expected"

check() {
    local lib=$1
    echo "== $2: $lib"
    readelf -d "$lib" | sed -n 's/.*Shared library: \[\(.*\)\].*/\1/p' |
        LC_ALL=C sort >"$tmp/needed"
    echo "NEEDED: $(tr '\n' ' ' <"$tmp/needed")"

    # The CUDA family: libcudart, libcuda, libcublas(Lt), libcusolver,
    # libcusparse, libnvJitLink, libnccl, ...
    grep -E '^lib(cu|nv|nccl)' "$tmp/needed" >"$tmp/cuda_needed" || true
    if ! diff -u "$tmp/cuda_expected" "$tmp/cuda_needed" >"$tmp/diff"; then
        echo "FAIL: the CUDA libraries needed differ from cuBLAS and" \
             "cuSOLVER (- promised, + needed):"
        cat "$tmp/diff"
        fail=1
    fi

    local system_re='^(libc|libm|libstdc\+\+|libgcc_s|libpthread|libdl|librt'
    system_re+='|libopenblas[a-z0-9_]*|libblas|libcblas|liblapacke|liblapack'
    system_re+='|libgfortran|ld-linux-x86-64|ld-linux-aarch64)\.so(\.[0-9]+)*$'
    if grep -vE '^lib(cu|nv|nccl)' "$tmp/needed" | grep -vE "$system_re" \
            >"$tmp/foreign"; then
        echo "FAIL: libraries needed beyond the C/C++ runtimes, BLAS/LAPACKE" \
             "and the promised CUDA ones:"
        sed 's/^/  /' "$tmp/foreign"
        fail=1
    fi

    # Imports from a shared runtime or the driver; cuBLAS's and cuSOLVER's
    # own entry points (cublas*, cusolver*) are expected.
    nm -D --undefined-only "$lib" | awk '{print $NF}' | sed 's/@.*$//' |
        grep -E '^(cuda[A-Z_]|cu[A-Z])' >"$tmp/imports" || true
    if [ -s "$tmp/imports" ]; then
        echo "FAIL: CUDA runtime/driver functions imported (the runtime" \
             "is not linked in):"
        sed 's/^/  /' "$tmp/imports" | head -20
        fail=1
    fi

    local runpath
    runpath=$(readelf -d "$lib" |
        sed -n 's/.*Library \(runpath\|rpath\): \[\(.*\)\].*/\2/p')
    case ":$runpath:" in
    *":$cuda_lib_dir:"*) ;;
    *)
        echo "FAIL: RUNPATH '$runpath' does not hold the toolkit's library" \
             "folder $cuda_lib_dir"
        fail=1
        ;;
    esac
    if [ "$fail" -eq 0 ]; then
        echo "OK: CUDA libraries needed:" \
             "$(tr '\n' ' ' <"$tmp/cuda_needed"); runtime linked in;" \
             "RUNPATH $runpath"
    fi
}

check "$built" "built"
if [ -n "$build_dir" ]; then
    # The build is up to date when meson test runs us.
    meson install -C "$build_dir" --no-rebuild --quiet \
        --destdir "$tmp/dest" >/dev/null
    installed=$(find "$tmp/dest" -name "$(basename "$built")" -type f |
        head -n 1)
    if [ -z "$installed" ]; then
        echo "FAIL: meson install wrote no $(basename "$built")"
        exit 1
    fi
    check "$installed" "installed"
fi
exit "$fail"
