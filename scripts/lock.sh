#!/usr/bin/env bash
# Re-resolve the lock files from pyproject.toml: requirements.lock (what `./run.sh` needs) and
# requirements-dev.lock (that plus the test tools). Run it after changing a dependency; commit both.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for kind in runtime dev; do
  python3 -m venv "$tmp/$kind"
  spec="."; out=requirements.lock
  [ "$kind" = dev ] && spec=".[dev]" && out=requirements-dev.lock
  "$tmp/$kind/bin/pip" install --quiet --disable-pip-version-check "$spec" 2>&1 | grep -v "^WARNING: Location" || true
  { echo "# Exact versions for $spec, from scripts/lock.sh; install with scripts/ensure_venv.sh."
    "$tmp/$kind/bin/pip" freeze --exclude-editable --disable-pip-version-check | grep -v -i "^yuyue[= ]"; } > "$out"
  echo "wrote $out ($(grep -vc '^#' "$out") packages)"
done
