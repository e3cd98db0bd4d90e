"""The example agent through the sidecar against the same agent on the frontier alone: per step,
the tier that answered, the path, the cost and the latency.

    flock /work/notes/heavy.lock nice -n 10 .venv/bin/python benchmarks/bench_agent.py
    .venv/bin/python benchmarks/bench_agent.py --repeats 1 --messages 2     # quicker

The local profile of ``examples/run_local.sh``, started here on free ports: SmolLM2-135M-Instruct
on llama.cpp's server (``--chat_format chatml-function-calling``, one thread) as the small tier,
``cascade-router standin`` as the frontier (recorded GPT-4o answers; anything else goes to the
same SmolLM2 and is priced as GPT-4o; a tool or JSON answer of SmolLM2 that fails the validator
is replaced by one built from the request), and ``cascade-router serve`` with the bundled
router.  Each customer message runs ``examples/agent.py``'s five steps twice, in turn: through
the sidecar (``cascade:STEP:TARGET``) and straight to the stand-in (``--model
gpt-4o-2024-05-13``: all-frontier).  Costs are list prices (the frontier's for every step of the
all-frontier run); latencies are wall-clock seconds on this machine's CPU, and the stand-in's are
SmolLM2's, not GPT-4o's.

Results go to benchmarks/results/agent_example.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import platform
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import openai

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results"

from tests.support.processes import LlamaServer, Sidecar, Standin  # noqa: E402

SMALL, FRONTIER = "llama-3.1-8b-instruct", "gpt-4o-2024-05-13"
API_KEY = "bench-key"
#: Customer messages, one per kind of request the agent's tools serve (and one they do not).
MESSAGES = [
    "Hi, I ordered the blue kettle last week (order 88412) and it still hasn't arrived.",
    "Please cancel order 55120, I bought the wrong size of running shoes.",
    "My parcel 88412 arrived broken. I want my money back.",
    "Which carrier has order 88412 and when will it arrive?",
    "I need to talk to a person about a billing problem on my account.",
    "Do you sell the kettle in red as well?",
]


def load_agent() -> Any:
    spec = importlib.util.spec_from_file_location("example_agent", ROOT / "examples" / "agent.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["example_agent"] = module
    spec.loader.exec_module(module)
    return module


def start(workdir: Path) -> tuple[LlamaServer, Standin, Sidecar]:
    llama = LlamaServer(
        workdir / "llama.log", extra_args=("--chat_format", "chatml-function-calling")
    ).start()
    standin = Standin(workdir, llama).start()
    settings = {
        "tracking_uri": f"sqlite:///{workdir / 'mlflow.db'}",
        "artifact_location": str(workdir / "mlruns"),
        "feedback_url": f"sqlite:///{workdir / 'feedback.db'}",
        "api_keys": [API_KEY],
        "small_timeout_s": 120,
        "request_timeout_s": 600,
        "upstreams": {
            SMALL: {
                "base_url": llama.base_url,
                "model": LlamaServer.model_alias,
                "max_tokens": 128,
                "dialect": "llama-cpp-python",
            },
            FRONTIER: {"base_url": standin.base_url, "timeout_s": 300},
        },
    }
    sidecar = Sidecar(workdir, settings).start(timeout_s=600)
    return llama, standin, sidecar


def summarise(rows: list[dict[str, Any]], steps: list[str]) -> dict[str, Any]:
    """Per step and in total, for each arm: tiers, paths, cost, latency."""
    out: dict[str, Any] = {}
    for arm in ("cascade", "all_frontier"):
        per_step: dict[str, Any] = {}
        for step in steps:
            mine = [r for r in rows if r["arm"] == arm and r["step"] == step]
            latencies = [r["latency_s"] for r in mine]
            per_step[step] = {
                "n": len(mine),
                "tiers": dict(Counter(r["tier"] for r in mine)),
                "paths": dict(Counter(r["path"] for r in mine)),
                "cost_usd_mean": statistics.fmean(r["cost_usd"] for r in mine),
                "frontier_cost_usd_mean": statistics.fmean(r["frontier_cost_usd"] for r in mine),
                "latency_s_p50": statistics.median(latencies),
                "latency_s_mean": statistics.fmean(latencies),
                "tool_calls": dict(Counter(c["name"] for r in mine for c in r["calls"])),
            }
        mine = [r for r in rows if r["arm"] == arm]
        runs = {(r["message"], r["repeat"]) for r in mine}
        cost = sum(r["cost_usd"] for r in mine)
        frontier = sum(r["frontier_cost_usd"] for r in mine)
        out[arm] = {
            "per_step": per_step,
            "agent_runs": len(runs),
            "cost_usd_per_run": cost / len(runs),
            "frontier_cost_usd_per_run": frontier / len(runs),
            "cost_saved": 1 - cost / frontier if frontier else None,
            "latency_s_per_run": sum(r["latency_s"] for r in mine) / len(runs),
        }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2, help="runs of every message per arm")
    parser.add_argument("--messages", type=int, default=len(MESSAGES), help="first N messages")
    parser.add_argument("--out", type=Path, default=RESULTS / "agent_example.json")
    args = parser.parse_args(argv)
    agent = load_agent()
    rows: list[dict[str, Any]] = []
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="bench-agent-") as tmp:
        llama, standin, sidecar = start(Path(tmp))
        try:
            arms = {
                "cascade": (openai.OpenAI(base_url=f"{sidecar.url}/v1", api_key=API_KEY), None),
                "all_frontier": (openai.OpenAI(base_url=standin.base_url, api_key="x"), FRONTIER),
            }
            for repeat in range(args.repeats):
                for message in MESSAGES[: args.messages]:
                    for arm, (client, model) in arms.items():
                        client = client.with_options(timeout=600, max_retries=0)
                        for report in agent.run_agent(client, message, model):
                            row = dataclasses.asdict(report)
                            rows.append({"arm": arm, "repeat": repeat, "message": message, **row})
                        print(f"{arm:<13} run {repeat} done: {message[:50]}", flush=True)
        finally:
            for server in (sidecar, standin, llama):
                server.stop()
    result = {
        "command": "python benchmarks/bench_agent.py " + " ".join(argv or sys.argv[1:]),
        "machine": f"{platform.node()} {platform.machine()}, 2 shared CPU cores",
        "wall_s": round(time.time() - started, 1),
        "small": f"{SMALL} served by SmolLM2-135M-Instruct Q4_1 (llama.cpp, function calling)",
        "frontier": f"{FRONTIER} stand-in (recorded answers, else SmolLM2, priced as {FRONTIER})",
        "targets": agent.TARGETS,
        "summary": summarise(rows, list(agent.TARGETS)),
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["summary"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
