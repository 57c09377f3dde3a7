#!/usr/bin/env bash
# The C++ consumer (examples/cpp) built the way an outside project builds
# it, against a DESTDIR install of the library: once through the CMake
# package (find_package(owlore 0.2) and owlore::owlore), once through
# pkg-config; both programs run. The installed header must also compile
# alone as C++17 without warnings.
# Usage: cpp.sh <build-dir> <source-root>
set -uo pipefail

build=$(cd "$1" && pwd)
src=$(cd "$2" && pwd)
example=$src/examples/cpp

for tool in cmake c++ pkg-config; do
    command -v "$tool" >/dev/null || { echo "SKIP: $tool not found"; exit 77; }
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
dest=$work/dest

passed=0
failed=0
result() { # name, status
    if [ "$2" -eq 0 ]; then
        echo "PASS: $1"; passed=$((passed + 1))
    else
        echo "FAIL: $1"; failed=$((failed + 1))
    fi
}
finish() {
    echo "$passed passed, $failed failed"
    [ "$failed" -eq 0 ]
    exit
}

# The build is already up to date when meson test runs us.
if ! meson install -C "$build" --no-rebuild --quiet --destdir "$dest" >/dev/null; then
    result "meson install into a DESTDIR" 1
    finish
fi

config=$(find "$dest" -path '*/cmake/owlore/owlore-config.cmake' | head -n 1)
pc=$(find "$dest" -path '*/pkgconfig/owlore.pc' | head -n 1)
header=$(find "$dest" -path '*/include/owlore/owlore.h' | head -n 1)
lib=$(find "$dest" -name libowlore.so.0 | head -n 1)
if [ -z "$config" ] || [ -z "$pc" ] || [ -z "$header" ] || [ -z "$lib" ]; then
    echo "installed: config='$config' pc='$pc' header='$header' lib='$lib'"
    result "the CMake package, owlore.pc, the header and the library are installed" 1
    finish
fi
result "the CMake package, owlore.pc, the header and the library are installed" 0
[ -f "$(dirname "$config")/owlore-config-version.cmake" ]
result "owlore-config-version.cmake is installed next to the config" $?
# pkg-config reads the DESTDIR's owlore.pc; its prefix (the install
# prefix, without the DESTDIR) locates the tree CMake is pointed at.
export PKG_CONFIG_PATH=$(dirname "$pc")
export PKG_CONFIG_SYSROOT_DIR=$dest
unset PKG_CONFIG_LIBDIR
# (pkg-config versions differ on whether the sysroot is prepended here.)
prefix=$(pkg-config --variable=prefix owlore)
case "$prefix" in "$dest"/*) ;; *) prefix=$dest$prefix ;; esac
libdir=$(dirname "$lib")
export LD_LIBRARY_PATH=$libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}

run_consumer() { # name, program
    local out
    out=$("$2" 2>&1)
    local rc=$?
    echo "$out"
    [ $rc -eq 0 ] && [ "$(printf '%s\n' "$out" | tail -n 1)" = OK ]
    result "$1" $?
}

needs_soname() { # name, program
    local needed
    needed=$(readelf -d "$2" | sed -n 's/.*Shared library: \[\(libowlore[^]]*\)\].*/\1/p')
    [ "$needed" = libowlore.so.0 ]
    result "$1 needs libowlore.so.0 (got '$needed')" $?
}

# 1. CMake: find_package(owlore 0.2 REQUIRED) from the DESTDIR prefix only.
if cmake -S "$example" -B "$work/cmake-build" -DCMAKE_PREFIX_PATH="$prefix" \
        -DCMAKE_BUILD_TYPE=Release -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF \
        >"$work/cmake.log" 2>&1 &&
   cmake --build "$work/cmake-build" >>"$work/cmake.log" 2>&1; then
    result "CMake configure and build (find_package, owlore::owlore)" 0
    needs_soname "CMake build" "$work/cmake-build/owlore_cpp_consumer"
    run_consumer "CMake build runs" "$work/cmake-build/owlore_cpp_consumer"
else
    cat "$work/cmake.log"
    result "CMake configure and build (find_package, owlore::owlore)" 1
fi

# A request for a later minor or another major version must be refused.
for wanted in 0.3 1.0; do
    mkdir -p "$work/v$wanted"
    printf 'cmake_minimum_required(VERSION 3.16)\nproject(v LANGUAGES CXX)\nfind_package(owlore %s REQUIRED)\n' \
        "$wanted" >"$work/v$wanted/CMakeLists.txt"
    # (CXX, so that CMake searches the multiarch libdir.) Refused, and for
    # the version: CMake lists the config it considered
    # with its version (0.2.0) as not accepted.
    if cmake -S "$work/v$wanted" -B "$work/v$wanted/b" \
            -DCMAKE_PREFIX_PATH="$prefix" >"$work/v$wanted.log" 2>&1; then
        refused=1
    else
        grep -q 'owlore-config.cmake, version: 0\.2\.0' "$work/v$wanted.log"
        refused=$?
    fi
    result "find_package(owlore $wanted) is refused by the version file" $refused
done

# 2. pkg-config, the flags pointing into the DESTDIR.
flags=$(pkg-config --cflags --libs owlore)
# shellcheck disable=SC2086 # the flags are meant to be split
c++ -std=c++17 -Wall -Wextra -pedantic -Werror -o "$work/pc-consumer" \
    "$example/main.cpp" $flags
if [ $? -eq 0 ]; then
    result "pkg-config build ($flags)" 0
    needs_soname "pkg-config build" "$work/pc-consumer"
    run_consumer "pkg-config build runs" "$work/pc-consumer"
else
    result "pkg-config build ($flags)" 1
fi

# 3. The installed header alone, as C++17.
printf '#include <owlore/owlore.h>\nint main() { return owl_version_number() == 0; }\n' \
    >"$work/header_only.cpp"
c++ -std=c++17 -Wall -Wextra -pedantic -Werror -fsyntax-only \
    -I"$prefix/include" "$work/header_only.cpp"
result "the installed header compiles alone as C++17 (-Wall -Wextra -pedantic -Werror)" $?

finish
