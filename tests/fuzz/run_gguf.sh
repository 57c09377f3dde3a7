#!/usr/bin/env bash
# Builds the GGUF fuzzer (fuzz_gguf.c: the LLaMa example's GGUF reader,
# metadata accessors, dequantisation and LLaMa loader) with clang,
# libFuzzer, AddressSanitizer and UndefinedBehaviorSanitizer straight from
# the sources into its own directory (build-fuzz-gguf, or $FUZZ_BUILD),
# copies the committed seeds (corpus/gguf, written by
# tests/ref/gen_gguf.py --corpus) into a working corpus there, and fuzzes
# for a bounded time. Exits non-zero on any crash, sanitizer report,
# allocation over 256 MiB or input taking over 10 s.
# Usage: tests/fuzz/run_gguf.sh [seconds (default 60)]
set -euo pipefail
cd "$(dirname "$0")/../.."

seconds=${1:-60}
out=${FUZZ_BUILD:-build-fuzz-gguf}
cc=${FUZZ_CC:-}
if [ -z "$cc" ]; then
    for c in clang clang-14; do
        if command -v "$c" >/dev/null; then cc=$c; break; fi
    done
fi
[ -n "$cc" ] || { echo "fuzz: clang not found" >&2; exit 1; }

mkdir -p "$out/obj" "$out/corpus" "$out/artifacts"
# The library's own flags (meson.build) plus instrumentation; the portable
# kernels, as in tests/fuzz/run.sh.
cflags=(-std=c11 -g -O1 -Wall -Wextra -Wpedantic
        -D_POSIX_C_SOURCE=200809L -DOWL_PORTABLE_ONLY -fno-math-errno
        -Iinclude -Isrc -Iexamples/llama
        -fsanitize=fuzzer-no-link,address,undefined
        -fno-sanitize-recover=undefined -fno-omit-frame-pointer)
libs=($(pkg-config --libs openblas 2>/dev/null || echo -lblas)
      -llapacke -lm -lpthread)

# The library (the model's activation hook calls it) and the example's
# model and GGUF sources (safetensors.c for the 16-bit conversions).
sources=()
for f in src/*.c; do
    case $(basename "$f") in cuda_*) continue ;; esac
    sources+=("$f")
done
for f in gguf gguf_meta gguf_quant gguf_llama safetensors json model \
         attention; do
    sources+=("examples/llama/$f.c")
done
objects=()
for f in "${sources[@]}"; do
    objects+=("$out/obj/$(basename "${f%.c}").o")
done
printf '%s\n' "${sources[@]}" |
    xargs -P 2 -I{} sh -c 'o="$1/obj/$(basename "${2%.c}").o"; shift 2;
        "$@" -c "$0" -o "$o"' {} "$out" "{}" "$cc" "${cflags[@]}"

"$cc" "${cflags[@]}" -fsanitize=fuzzer tests/fuzz/fuzz_gguf.c \
    "${objects[@]}" "${libs[@]}" -o "$out/fuzz_gguf"

cp tests/fuzz/corpus/gguf/* "$out/corpus/"
export OPENBLAS_NUM_THREADS=1
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
"$out/fuzz_gguf" -max_total_time="$seconds" -max_len=16384 -timeout=10 \
    -rss_limit_mb=2048 -malloc_limit_mb=256 -print_final_stats=1 \
    -artifact_prefix="$out/artifacts/" "$out/corpus"
echo "fuzz: ${seconds}s without a crash or sanitizer report"
