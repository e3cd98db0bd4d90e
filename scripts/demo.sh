#!/usr/bin/env bash
# The main job on the embedded default: install, then train → evaluate → register → route.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh train
exec .venv/bin/cascade-router demo "$@"
