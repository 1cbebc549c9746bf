#!/usr/bin/env bash
# Type-check the installed package `yuyue` with mypy (settings: [tool.mypy] in pyproject.toml).
# mypy cannot follow setuptools' editable-install finder, which maps features/ to yuyue.features and
# so on, so this links the same mapping under build/typecheck/yuyue/ and checks that tree; the paths
# in mypy's messages are turned back into the repository's own (models/scorer.py, not the link).
set -euo pipefail
cd "$(dirname "$0")/.."
tree=build/typecheck
rm -rf "$tree" && mkdir -p "$tree/yuyue"
dirs=$(.venv/bin/python - <<'PY'
import tomllib
mapping = tomllib.load(open("pyproject.toml", "rb"))["tool"]["setuptools"]["package-dir"]
for name, folder in mapping.items():
    if name == "yuyue":
        continue
    assert name.count(".") == 1 and name.startswith("yuyue."), name
    print(f"{name.split('.')[1]}={folder}")
PY
)
ln -s ../../../yuyue/__init__.py "$tree/yuyue/__init__.py"
names=()
for pair in $dirs; do
  ln -s "../../../${pair#*=}" "$tree/yuyue/${pair%%=*}"
  names+=("${pair%%=*}=${pair#*=}")
done
sed_args=(-e "s#^$tree/yuyue/__init__.py#yuyue/__init__.py#")
for pair in "${names[@]}"; do
  sed_args+=(-e "s#^$tree/yuyue/${pair%%=*}/#${pair#*=}/#")
done
.venv/bin/mypy -p yuyue "$@" 2>&1 | sed "${sed_args[@]}"
