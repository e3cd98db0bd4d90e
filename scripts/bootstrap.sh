#!/usr/bin/env bash
# Create .venv and install cascade-router into it (idempotent: a second run installs nothing).
# Usage: scripts/bootstrap.sh [EXTRAS]   e.g. scripts/bootstrap.sh dev,local
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
python="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
spec="."
[ -n "$extras" ] && spec=".[$extras]"
stamp=".venv/.installed-$(sha256sum pyproject.toml scripts/bootstrap.sh scripts/build_llama_cpp.sh | sha256sum | cut -c1-16)-${extras:-base}"
if [ ! -f "$stamp" ]; then
  .venv/bin/python -m pip install --quiet --upgrade pip
  case ",$extras," in
    *,local,*) bash scripts/build_llama_cpp.sh ;;
  esac
  # torch is pinned to 2.13.0 in pyproject.toml: pip takes the CPU wheel that lies on this
  # machine's disk (its pip config's find-links) instead of a multi-GB CUDA build.
  .venv/bin/python -m pip install --quiet -e "$spec"
  case ",$extras," in
    # BFCL's data and checker without the vendor SDKs and CUDA torch it declares (pyproject.toml)
    *,dev,*|*,local,*)
      .venv/bin/python -m pip install --quiet --no-deps \
        "$(grep -o "bfcl-eval==[0-9.]*" pyproject.toml | head -1)" ;;
  esac
  touch "$stamp"
fi
