# Sourced by the consumer scripts: installs the build into a temporary
# DESTDIR ($dest, removed on exit) and points pkg-config and the dynamic
# loader at it, as for an outside user of the installed library.
# Needs $build (an absolute build directory).
dest=$(mktemp -d)
trap 'rm -rf "$dest"' EXIT
meson install -C "$build" --no-rebuild --quiet --destdir "$dest" >/dev/null
pc=$(find "$dest" -name owlore.pc -path '*/pkgconfig/*' | head -n 1)
[ -n "$pc" ] || { echo "FAIL: owlore.pc was not installed"; exit 1; }
export PKG_CONFIG_PATH=$(dirname "$pc")
export PKG_CONFIG_SYSROOT_DIR=$dest
unset PKG_CONFIG_LIBDIR
libdir=$(dirname "$(find "$dest" -name libowlore.so.0 | head -n 1)")
export LD_LIBRARY_PATH=$libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
echo "staged install: $dest (pkg-config --libs owlore: $(pkg-config --libs owlore))"
