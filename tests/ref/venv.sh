#!/usr/bin/env bash
# Makes (once) the Python environment of the format and client references:
# a venv over Debian's /usr/bin/python3 with --system-site-packages (so
# torch and numpy are Debian's) plus the pinned packages of
# tests/ref/requirements.txt from PyPI. Prints the venv's python on stdout.
# Usage: tests/ref/venv.sh [DIR (default: $OWL_REF_VENV or
#        ~/.cache/owlore/ref-venv)]
# Exits 77 (the test harnesses' SKIP) when PyPI cannot be reached and the
# venv is not there yet, with the reason on stderr.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
dir=${1:-${OWL_REF_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/owlore/ref-venv}}
req=$here/requirements.txt
stamp=$dir/.requirements.sha256
want=$(sha256sum "$req" | cut -d' ' -f1)
# The stamp is written last: a venv without it (an interrupted install, or
# other pins) is made again from scratch, never trusted.
if [ -x "$dir/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
    echo "$dir/bin/python"
    exit 0
fi
mkdir -p "$(dirname "$dir")"
exec 9>"$dir.lock"
flock 9 # tests building in parallel share one venv
if [ -x "$dir/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
    echo "$dir/bin/python"
    exit 0
fi
rm -rf "$dir"
/usr/bin/python3 -m venv --system-site-packages "$dir" >&2
if ! "$dir/bin/pip" install --disable-pip-version-check -q -r "$req" >&2; then
    echo "tests/ref/venv.sh: cannot install $req from PyPI (offline?)" >&2
    rm -rf "$dir"
    exit 77
fi
echo "$want" >"$stamp"
echo "$dir/bin/python"
