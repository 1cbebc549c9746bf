#!/usr/bin/env bash
# Create ./.venv if needed and install Yuyue into it from the lock file (with the test tools when
# asked: `ensure_venv.sh dev`). Exact versions come from requirements.lock / requirements-dev.lock,
# which scripts/lock.sh writes from pyproject.toml. Re-running is cheap: pip skips what is installed.
set -euo pipefail
cd "$(dirname "$0")/.."
lock=requirements.lock
[ "${1:-}" = dev ] && lock=requirements-dev.lock
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
pip=(.venv/bin/python -m pip --disable-pip-version-check --quiet)
"${pip[@]}" install -r "$lock" 2>&1 | grep -v -E "^WARNING: Location" || true
"${pip[@]}" install --no-deps -e . 2>&1 \
  | grep -v -E "^(WARNING: Location|  !!|    with strategy|\s*$)|BuildBackendWarning|\*{20}|Please be careful|name as your package|may take precedence" || true
.venv/bin/python -c "import yuyue.data, yuyue.features, yuyue.cli" # fail early if the install is broken
