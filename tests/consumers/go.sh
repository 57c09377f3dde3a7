#!/usr/bin/env bash
# Builds and tests the Go bindings (examples/go, cgo through pkg-config)
# against the library installed into a temporary DESTDIR, offline and
# without external modules. Usage: go.sh <build-dir> <source-root>
set -euo pipefail

build=$(cd "$1" && pwd)
src=$(cd "$2" && pwd)

command -v go >/dev/null || { echo "SKIP: go not found"; exit 77; }
command -v pkg-config >/dev/null || { echo "SKIP: pkg-config not found"; exit 77; }
command -v cc >/dev/null || { echo "SKIP: no C compiler for cgo"; exit 77; }
go version

. "$src/tests/consumers/stage.sh"
export CGO_ENABLED=1 GOFLAGS=-mod=mod GOPROXY=off GOTOOLCHAIN=local
export GOCACHE=$dest/gocache GOPATH=$dest/gopath GOMODCACHE=$dest/gopath/pkg/mod

log=$dest/go-test.log
set +e
(cd "$src/examples/go" && go test -count=1 -v ./...) 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
set -e

passed=$(grep -c '^--- PASS' "$log" || true)
failed=$(grep -c '^--- FAIL' "$log" || true)
if [ "$rc" -ne 0 ] && [ "$failed" -eq 0 ]; then
    failed=1 # the build itself failed
fi
echo "$passed passed, $failed failed"
[ "$rc" -eq 0 ] && [ "$failed" -eq 0 ]
