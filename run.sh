#!/usr/bin/env bash
# The main job: set up the environment, then run Yuyue.
# Trains and promotes a model first when none is registered, then serves the API and the console.
# Arguments go to `yuyue serve` (--port, --host, --n, --seed, --workers, ...); `./run.sh --help` lists them.
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/ensure_venv.sh
[ "${1:-}" = -h ] && set -- --help "${@:2}"
exec .venv/bin/yuyue serve "$@"
