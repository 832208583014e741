#!/usr/bin/env bash
# Creates (once) the project's virtual environment in the cache and installs this checkout into it.
#
#   hack/venv.sh [EXTRAS]     EXTRAS defaults to "all"; prints the venv's python path last.
#
# The venv lives outside the repo so a fresh clone reuses it; the editable install is redone when
# pyproject.toml changes or another checkout last installed itself there.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cache=${TIERSCALE_CACHE:-$HOME/.cache/tierscale}
venv=$cache/venv
extras=${1:-all}

if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv" >&2
    "$venv/bin/python" -m pip install --quiet --upgrade pip >&2
fi

key=$( (cat "$root/pyproject.toml"; echo "$root" "$extras") | sha256sum | cut -c1-16)
stamp=$venv/.tierscale-installed-$key
if [ ! -e "$stamp" ]; then
    echo "installing tierscale[$extras] into $venv" >&2
    "$venv/bin/python" -m pip install --quiet --progress-bar off -e "$root[$extras]" >&2
    rm -f "$venv"/.tierscale-installed-*
    touch "$stamp"
fi
echo "$venv/bin/python"
