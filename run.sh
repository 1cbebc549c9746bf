#!/usr/bin/env bash
# The main job: set up the environment, then run Yuyue.
# Until the service lands this generates a synthetic dataset, validates it and prints its summary.
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/ensure_venv.sh
exec .venv/bin/yuyue start "$@"
