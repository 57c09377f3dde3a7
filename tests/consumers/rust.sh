#!/usr/bin/env bash
# Builds and tests the Rust bindings (examples/rust) against the library
# installed into a temporary DESTDIR, offline, with the cargo on PATH
# (CI: Debian's). Usage: rust.sh <build-dir> <source-root>
set -euo pipefail

build=$(cd "$1" && pwd)
src=$(cd "$2" && pwd)

command -v cargo >/dev/null || { echo "SKIP: cargo not found"; exit 77; }
command -v pkg-config >/dev/null || { echo "SKIP: pkg-config not found"; exit 77; }
cargo --version

. "$src/tests/consumers/stage.sh"
# Build outputs stay out of the source tree; CARGO_HOME too, so no user
# configuration or registry cache takes part.
export CARGO_TARGET_DIR=$dest/target
export CARGO_HOME=$dest/cargo-home

log=$dest/cargo-test.log
set +e
cargo test --offline --locked --manifest-path "$src/examples/rust/Cargo.toml" \
    --workspace 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
set -e

# Sum libtest's "test result: ok. N passed; M failed" lines.
passed=$(sed -n 's/^test result: .* \([0-9]\+\) passed; \([0-9]\+\) failed.*/\1/p' "$log" | awk '{s+=$1} END {print s+0}')
failed=$(sed -n 's/^test result: .* \([0-9]\+\) passed; \([0-9]\+\) failed.*/\2/p' "$log" | awk '{s+=$1} END {print s+0}')
if [ "$rc" -ne 0 ] && [ "$failed" -eq 0 ]; then
    failed=1 # the build itself failed
fi
echo "$passed passed, $failed failed"
[ "$rc" -eq 0 ] && [ "$failed" -eq 0 ]
