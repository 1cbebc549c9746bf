#!/usr/bin/env bash
# The main job: set up the environment, then run Yuyue.
# Trains and promotes a model first when none is registered, then serves the API and the console.
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/ensure_venv.sh
exec .venv/bin/yuyue serve "$@"
