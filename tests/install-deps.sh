#!/usr/bin/env bash
# Installs everything needed to build libowlore and run its tests on
# Debian 12 (bookworm). Runs apt-get as root, through sudo when started as
# another user.
#   meson, ninja-build, pkg-config   the build
#   gcc, g++, clang, binutils        compilers (the C++ ones and clang check
#                                    that the public header compiles as C++;
#                                    binutils' nm/readelf check the exports)
#   libcmocka-dev                    the test framework
#   libopenblas-dev, liblapacke-dev  the CPU backend's GEMMs, SVD and QR
#   python3-torch, python3-numpy     reference data for the tests, written
#                                    at build time with /usr/bin/python3,
#                                    and the PyTorch consumer's test
#   cargo                            the Rust bindings' test (examples/rust)
#   golang-go                        the Go bindings' test (examples/go)
#   cmake                            the C++ consumer's find_package(owlore)
#                                    build (tests/consumers/cpp.sh)
set -euo pipefail

packages=(
    meson ninja-build pkg-config
    gcc g++ clang binutils
    libcmocka-dev
    libopenblas-dev liblapacke-dev
    python3-torch python3-numpy
    cargo     # Rust consumer: examples/rust, tests/consumers/rust.sh
    golang-go # Go consumer: examples/go, tests/consumers/go.sh
    cmake     # C++ consumer: tests/consumers/cpp.sh
)

if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null; then
        exec sudo "$0" "$@"
    fi
    echo "install-deps.sh: run it as root (no sudo here)" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y "${packages[@]}"
