#!/usr/bin/env bash
# Create ./.venv if needed and install Yuyue into it (with the dev extras when asked).
# Re-running is cheap: pip skips what is already satisfied.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip >/dev/null
spec="."
[ -n "$extras" ] && spec=".[$extras]"
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e "$spec" 2>&1 | grep -v -E "^(WARNING: Location|  !!|    with strategy|\s*$)" || true
.venv/bin/python -c "import data, features, cli" # fail early if the install is broken
