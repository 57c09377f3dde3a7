#!/usr/bin/env bash
# Builds the tokenizer fuzzer (fuzz_tokenizer.c) with clang, libFuzzer,
# AddressSanitizer and UndefinedBehaviorSanitizer straight from the LLaMa
# example's tokenizer sources into its own directory (build-fuzz-tokenizer,
# or $FUZZ_BUILD), and fuzzes for a bounded time from the committed seed
# corpus (tests/fuzz/corpus/tokenizer: texts and small tokenizer.json
# files) copied into a working corpus. Exits non-zero on any crash or
# sanitizer report.
# Usage: tests/fuzz/run_tokenizer.sh [seconds (default 60)]
set -euo pipefail
cd "$(dirname "$0")/../.."

seconds=${1:-60}
out=${FUZZ_BUILD:-build-fuzz-tokenizer}
cc=${FUZZ_CC:-}
if [ -z "$cc" ]; then
    for c in clang clang-14; do
        if command -v "$c" >/dev/null; then cc=$c; break; fi
    done
fi
[ -n "$cc" ] || { echo "fuzz: clang not found" >&2; exit 1; }

mkdir -p "$out/corpus" "$out/artifacts"
cflags=(-std=c11 -g -O1 -Wall -Wextra -Wpedantic
        -D_POSIX_C_SOURCE=200809L -Iexamples/llama
        -fsanitize=fuzzer,address,undefined
        -fno-sanitize-recover=undefined -fno-omit-frame-pointer)
src=examples/llama
"$cc" "${cflags[@]}" tests/fuzz/fuzz_tokenizer.c \
    "$src/tokenizer.c" "$src/tok_encode.c" "$src/tok_pretok.c" \
    "$src/tok_hf_json.c" "$src/unicode_tables.c" "$src/json.c" \
    "$src/safetensors.c" -o "$out/fuzz_tokenizer"

cp -n tests/fuzz/corpus/tokenizer/* "$out/corpus/"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
"$out/fuzz_tokenizer" -max_total_time="$seconds" -max_len=8192 -timeout=10 \
    -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$out/artifacts/" "$out/corpus"
echo "fuzz: ${seconds}s without a crash or sanitizer report"
