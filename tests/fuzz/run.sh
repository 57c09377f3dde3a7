#!/usr/bin/env bash
# Builds the state-loader fuzzer (fuzz_state.c) with clang, libFuzzer,
# AddressSanitizer and UndefinedBehaviorSanitizer straight from the library
# sources into its own directory (build-fuzz, or $FUZZ_BUILD), writes the
# seed corpus (gen_corpus.c: a valid state of each handle), and fuzzes for
# a bounded time. Exits non-zero on any crash or sanitizer report.
# Usage: tests/fuzz/run.sh [seconds (default 60)]
set -euo pipefail
cd "$(dirname "$0")/../.."

seconds=${1:-60}
out=${FUZZ_BUILD:-build-fuzz}
cc=${FUZZ_CC:-}
if [ -z "$cc" ]; then
    for c in clang clang-14; do
        if command -v "$c" >/dev/null; then cc=$c; break; fi
    done
fi
[ -n "$cc" ] || { echo "fuzz: clang not found" >&2; exit 1; }

mkdir -p "$out/obj" "$out/corpus" "$out/artifacts"
# The library's own flags (meson.build) plus instrumentation. The portable
# kernels: the sanitized CPU suite already covers the AVX2 ones.
cflags=(-std=c11 -g -O1 -Wall -Wextra -Wpedantic
        -D_POSIX_C_SOURCE=200809L -DOWL_PORTABLE_ONLY -fno-math-errno
        -Iinclude -Isrc
        -fsanitize=fuzzer-no-link,address,undefined
        -fno-sanitize-recover=undefined -fno-omit-frame-pointer)
libs=($(pkg-config --libs openblas 2>/dev/null || echo -lblas)
      -llapacke -lm -lpthread)

# Every CPU source of the library (CUDA host files need nvcc's runtime).
sources=()
for f in src/*.c tests/fuzz/fuzz_handles.c; do
    case $(basename "$f") in cuda_*) continue ;; esac
    sources+=("$f")
done
objects=()
for f in "${sources[@]}"; do
    objects+=("$out/obj/$(basename "${f%.c}").o")
done
printf '%s\n' "${sources[@]}" |
    xargs -P 2 -I{} sh -c 'o="$1/obj/$(basename "${2%.c}").o"; shift 2;
        "$@" -c "$0" -o "$o"' {} "$out" "{}" "$cc" "${cflags[@]}"

"$cc" "${cflags[@]}" -fsanitize=fuzzer tests/fuzz/fuzz_state.c \
    "${objects[@]}" "${libs[@]}" -o "$out/fuzz_state"
"$cc" "${cflags[@]}" tests/fuzz/gen_corpus.c \
    "${objects[@]}" "${libs[@]}" -o "$out/gen_corpus"

export OPENBLAS_NUM_THREADS=1
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
"$out/gen_corpus" "$out/corpus"
"$out/fuzz_state" -max_total_time="$seconds" -max_len=1024 -timeout=10 \
    -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$out/artifacts/" "$out/corpus"
echo "fuzz: ${seconds}s without a crash or sanitizer report"
