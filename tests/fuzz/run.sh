#!/usr/bin/env bash
# Builds the library's fuzzers with clang, libFuzzer, AddressSanitizer and
# UndefinedBehaviorSanitizer straight from the library sources into their
# own directory (build-fuzz, or $FUZZ_BUILD), and fuzzes each for a bounded
# time. Exits non-zero on any crash, sanitizer report or broken property.
#   state  every state loader (fuzz_state.c); seeds written by
#          gen_corpus.c: a valid state of each handle
#   api    every public entry point that takes caller data (fuzz_api.c);
#          seeds committed in tests/fuzz/corpus/api
# Usage: tests/fuzz/run.sh [seconds per fuzzer (default 60)] [state|api ...]
#        (default: all of them, one after the other)
set -euo pipefail
cd "$(dirname "$0")/../.."

seconds=${1:-60}
[ $# -gt 0 ] && shift
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(state api)
for t in "${targets[@]}"; do
    case $t in state | api) ;; *) echo "fuzz: unknown fuzzer $t" >&2; exit 2 ;; esac
done
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

export OPENBLAS_NUM_THREADS=1
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:allocator_may_return_null=1:max_allocation_size_mb=256}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}

for t in "${targets[@]}"; do
    case $t in
    state)
        "$cc" "${cflags[@]}" -fsanitize=fuzzer tests/fuzz/fuzz_state.c \
            "${objects[@]}" "${libs[@]}" -o "$out/fuzz_state"
        "$cc" "${cflags[@]}" tests/fuzz/gen_corpus.c \
            "${objects[@]}" "${libs[@]}" -o "$out/gen_corpus"
        "$out/gen_corpus" "$out/corpus"
        "$out/fuzz_state" -max_total_time="$seconds" -max_len=1024 -timeout=10 \
            -rss_limit_mb=2048 -print_final_stats=1 \
            -artifact_prefix="$out/artifacts/" "$out/corpus"
        ;;
    api)
        # Only the handle objects: fuzz_handles.c belongs to the state fuzzer.
        api_objects=()
        for o in "${objects[@]}"; do
            case $o in */fuzz_handles.o) ;; *) api_objects+=("$o") ;; esac
        done
        "$cc" "${cflags[@]}" -fsanitize=fuzzer tests/fuzz/fuzz_api.c \
            tests/fuzz/fuzz_api_args.c tests/fuzz/fuzz_api_handles.c \
            "${api_objects[@]}" "${libs[@]}" -o "$out/fuzz_api"
        # New inputs go to the build directory; the committed seeds are read.
        mkdir -p "$out/corpus-api"
        # The library may be asked for a 1 GiB buffer by fuzzed options:
        # ASan answers NULL past max_allocation_size_mb (OWL_ERR_OUT_OF_MEMORY)
        # where the library asks for more than 256 MiB; libFuzzer's own malloc
        # limit must sit above it.
        "$out/fuzz_api" -max_total_time="$seconds" -max_len=4096 -timeout=20 \
            -rss_limit_mb=4096 -malloc_limit_mb=2048 -print_final_stats=1 \
            -artifact_prefix="$out/artifacts/" "$out/corpus-api" \
            tests/fuzz/corpus/api
        ;;
    esac
    echo "fuzz: $t: ${seconds}s without a crash, sanitizer report or broken property"
done
