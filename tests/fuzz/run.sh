#!/usr/bin/env bash
# Builds the fuzzers with clang, libFuzzer, AddressSanitizer and
# UndefinedBehaviorSanitizer straight from the sources into their own
# directory (build-fuzz, or $FUZZ_BUILD), and fuzzes each for a bounded
# time. Exits non-zero on any crash, sanitizer report or broken property.
#   state      every state loader (fuzz_state.c); seeds written by
#              gen_corpus.c: a valid state of each handle
#   api        every public entry point that takes caller data
#              (fuzz_api.c); seeds in tests/fuzz/corpus/api
#   gguf       the LLaMa example's GGUF reader, accessors, dequantisation,
#              LLaMa loader and tokenizer metadata (fuzz_gguf.c); seeds in
#              corpus/gguf,
#              written by tests/ref/gen_gguf.py --corpus
#   tokenizer  the example's tokenizer: tokenizer.json and arbitrary text
#              (fuzz_tokenizer.c); seeds in corpus/tokenizer
# New inputs go to the build directory; the committed seeds are only read.
# Usage: tests/fuzz/run.sh [seconds per fuzzer (default 60)] [fuzzer ...]
#        (default: all of them, one after the other)
set -euo pipefail
cd "$(dirname "$0")/../.."

seconds=${1:-60}
[ $# -gt 0 ] && shift
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(state api gguf tokenizer)
for t in "${targets[@]}"; do
    case $t in
    state | api | gguf | tokenizer) ;;
    *) echo "fuzz: unknown fuzzer $t (state, api, gguf, tokenizer)" >&2; exit 2 ;;
    esac
done
out=${FUZZ_BUILD:-build-fuzz}
cc=${FUZZ_CC:-}
if [ -z "$cc" ]; then
    for c in clang clang-14; do
        if command -v "$c" >/dev/null; then cc=$c; break; fi
    done
fi
[ -n "$cc" ] || { echo "fuzz: clang not found" >&2; exit 1; }

mkdir -p "$out/obj/src" "$out/obj/llama" "$out/artifacts"
# The library's own flags (meson.build) plus instrumentation. The portable
# kernels: the sanitized CPU suite already covers the AVX2 ones.
cflags=(-std=c11 -g -O1 -Wall -Wextra -Wpedantic
        -D_POSIX_C_SOURCE=200809L -DOWL_PORTABLE_ONLY -fno-math-errno
        -Iinclude -Isrc -Iexamples/llama
        -fsanitize=fuzzer-no-link,address,undefined
        -fno-sanitize-recover=undefined -fno-omit-frame-pointer)
libs=($(pkg-config --libs openblas 2>/dev/null || echo -lblas)
      -llapacke -lm -lpthread)

# Every CPU source of the library (CUDA host files need nvcc's runtime),
# and the example's files the parsers need.
llama_files=(errmsg textbuf gguf gguf_meta gguf_quant gguf_llama safetensors fileio
             json model attention tokenizer tok_encode tok_pretok
             tok_hf_json tok_gguf unicode_tables)
sources=()
for f in src/*.c; do
    case $(basename "$f") in cuda_*) continue ;; esac
    sources+=("$f")
done
for f in "${llama_files[@]}"; do
    sources+=("examples/llama/$f.c")
done
obj_of() { # src/x.c -> $out/obj/src/x.o, examples/llama/x.c -> obj/llama
    case $1 in
    src/*) echo "$out/obj/src/$(basename "${1%.c}").o" ;;
    *) echo "$out/obj/llama/$(basename "${1%.c}").o" ;;
    esac
}
export -f obj_of
export out
printf '%s\n' "${sources[@]}" |
    xargs -P 2 -I{} bash -c 'o=$(obj_of "$0"); "$@" -c "$0" -o "$o"' \
        {} "$cc" "${cflags[@]}"
lib_objects=()
for f in src/*.c; do
    case $(basename "$f") in cuda_*) continue ;; esac
    lib_objects+=("$(obj_of "$f")")
done
llama_obj() { for f in "$@"; do obj_of "examples/llama/$f.c"; done; }

plain_asan=detect_leaks=1:abort_on_error=1
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
export OPENBLAS_NUM_THREADS=1

for t in "${targets[@]}"; do
    corpus=$out/corpus-$t
    mkdir -p "$corpus"
    case $t in
    state)
        "$cc" "${cflags[@]}" -fsanitize=fuzzer tests/fuzz/fuzz_state.c \
            tests/fuzz/fuzz_handles.c "${lib_objects[@]}" "${libs[@]}" \
            -o "$out/fuzz_state"
        "$cc" "${cflags[@]}" tests/fuzz/gen_corpus.c tests/fuzz/fuzz_handles.c \
            "${lib_objects[@]}" "${libs[@]}" -o "$out/gen_corpus"
        "$out/gen_corpus" "$corpus"
        ASAN_OPTIONS=${ASAN_OPTIONS:-$plain_asan} \
        "$out/fuzz_state" -max_total_time="$seconds" -max_len=1024 -timeout=10 \
            -rss_limit_mb=2048 -print_final_stats=1 \
            -artifact_prefix="$out/artifacts/" "$corpus"
        ;;
    api)
        "$cc" "${cflags[@]}" -fsanitize=fuzzer tests/fuzz/fuzz_api.c \
            tests/fuzz/fuzz_api_args.c tests/fuzz/fuzz_api_handles.c \
            "${lib_objects[@]}" "${libs[@]}" -o "$out/fuzz_api"
        # Fuzzed options may ask the library for a 1 GiB buffer: ASan
        # answers NULL past 256 MiB (OWL_ERR_OUT_OF_MEMORY, a documented
        # status), and libFuzzer's own malloc limit sits above that.
        ASAN_OPTIONS=${ASAN_OPTIONS:-$plain_asan:allocator_may_return_null=1:max_allocation_size_mb=256} \
        "$out/fuzz_api" -max_total_time="$seconds" -max_len=4096 -timeout=20 \
            -rss_limit_mb=4096 -malloc_limit_mb=2048 -print_final_stats=1 \
            -artifact_prefix="$out/artifacts/" "$corpus" tests/fuzz/corpus/api
        ;;
    gguf)
        # The model's activation hook calls the library; safetensors.c has
        # the 16-bit conversions. An allocation over 256 MiB is a finding:
        # the reader bounds what it allocates by the file.
        "$cc" "${cflags[@]}" -fsanitize=fuzzer tests/fuzz/fuzz_gguf.c \
            $(llama_obj errmsg textbuf gguf gguf_meta gguf_quant gguf_llama \
                        safetensors fileio json model attention tok_gguf tokenizer \
                        tok_encode tok_pretok tok_hf_json unicode_tables) \
            "${lib_objects[@]}" "${libs[@]}" -o "$out/fuzz_gguf"
        ASAN_OPTIONS=${ASAN_OPTIONS:-$plain_asan} \
        "$out/fuzz_gguf" -max_total_time="$seconds" -max_len=16384 -timeout=10 \
            -rss_limit_mb=2048 -malloc_limit_mb=256 -print_final_stats=1 \
            -artifact_prefix="$out/artifacts/" "$corpus" tests/fuzz/corpus/gguf
        ;;
    tokenizer)
        "$cc" "${cflags[@]}" -fsanitize=fuzzer tests/fuzz/fuzz_tokenizer.c \
            $(llama_obj tokenizer tok_encode tok_pretok tok_hf_json \
                        unicode_tables json safetensors fileio errmsg textbuf) \
            -lm -o "$out/fuzz_tokenizer"
        ASAN_OPTIONS=${ASAN_OPTIONS:-$plain_asan} \
        "$out/fuzz_tokenizer" -max_total_time="$seconds" -max_len=8192 \
            -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
            -artifact_prefix="$out/artifacts/" "$corpus" \
            tests/fuzz/corpus/tokenizer
        ;;
    esac
    echo "fuzz: $t: ${seconds}s without a crash, sanitizer report or broken property"
done
