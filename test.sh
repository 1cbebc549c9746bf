#!/usr/bin/env bash
# Set up the environment with the test tools, then run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/ensure_venv.sh dev
.venv/bin/ruff check .
.venv/bin/ruff format --check .  # the formatter's style (run `.venv/bin/ruff format .` to apply it)
bash scripts/typecheck.sh  # mypy: strict on yuyue.serving and yuyue.models ([tool.mypy])
bash scripts/ensure_services.sh || true  # start local PostgreSQL/Redis for the serving tests if they are down
bash scripts/ensure_browser.sh || true  # install Chromium for the console browser test if it is missing
exec .venv/bin/python -m pytest "$@"
