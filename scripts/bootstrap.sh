#!/usr/bin/env bash
# Create .venv and install cascade-router into it (idempotent: a second run installs nothing).
# Usage: scripts/bootstrap.sh [EXTRAS]   e.g. scripts/bootstrap.sh dev
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
python="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
spec="."
[ -n "$extras" ] && spec=".[$extras]"
stamp=".venv/.installed-$(cat pyproject.toml | sha256sum | cut -c1-16)-${extras:-base}"
if [ ! -f "$stamp" ]; then
  case ",$extras," in
    *,local,*) echo "installing the local extra: llama-cpp-python compiles from source the first" \
                    "time (15-25 min on 2 cores; pip caches the wheel for later installs)" ;;
  esac
  export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}"
  .venv/bin/python -m pip install --quiet --upgrade pip
  # torch is pinned to 2.13.0 in pyproject.toml: pip takes the CPU wheel that lies on this
  # machine's disk (its pip config's find-links) instead of a multi-GB CUDA build.
  .venv/bin/python -m pip install --quiet -e "$spec"
  touch "$stamp"
fi
