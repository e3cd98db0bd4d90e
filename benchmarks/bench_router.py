"""Router core: routing quality on real data and the per-decision overhead.

    .venv/bin/python benchmarks/bench_router.py            # everything (~25 min cold, ~6 warm)
    .venv/bin/python benchmarks/bench_router.py --only overhead

Writes benchmarks/results/router_core.json and prints a Markdown summary.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"

RUNS: dict[str, dict[str, Any]] = {
    "mmlu_pro_llama8b_gpt4o": {
        "data": ["mmlu_pro"],
        "tiers": ["llama-3.1-8b-instruct", "gpt-4o-2024-05-13"],
    },
    "gsm8k_mixtral_gpt4": {
        "data": ["gsm8k"],
        "tiers": ["mixtral-8x7b-instruct-v0.1", "gpt-4-1106-preview"],
    },
    "routerbench_mistral7b_gpt4": {
        "data": ["routerbench"],
        "tiers": ["mistral-7b-chat", "gpt-4-1106-preview"],
    },
    "mmlu_pro_3tier_phi3_llama70b_gpt4o": {
        "data": ["mmlu_pro"],
        "tiers": ["phi-3-mini-4k-instruct", "llama-3.1-70b-instruct", "gpt-4o-2024-05-13"],
    },
}


def quality_runs(names: list[str]) -> dict[str, Any]:
    from router.policy import Target
    from router.settings import RouterSettings
    from training.pipeline import TrainConfig, train_and_evaluate

    settings = RouterSettings()
    out: dict[str, Any] = {}
    for name in names:
        spec = RUNS[name]
        config = TrainConfig(
            data=spec["data"],
            tiers=spec["tiers"],
            target=Target(quality_ratio=0.95),
            output_dir=RESULTS / name,
            bootstrap=200,
        )
        t = time.perf_counter()
        result = train_and_evaluate(config, settings, log=lambda m, n=name: print(f"[{n}] {m}"))
        report = result.report
        report["wall_s"] = round(time.perf_counter() - t, 1)
        out[name] = report
        print(json.dumps(_headline(report), indent=2))
    return out


def _headline(r: dict[str, Any]) -> dict[str, Any]:
    base = r["baselines"]
    return {
        "tiers": r["tiers"],
        "n_test": r["n_test"],
        "router_pre_answer_apgr": r["router_pre_answer"]["apgr"],
        "router_pre_answer_ci": r["intervals"].get("router_pre_answer", {}).get("apgr_ci95"),
        "cascade_apgr": (r["cascade_answer_aware"] or {}).get("apgr"),
        "cascade_ci": r["intervals"].get("cascade_answer_aware", {}).get("apgr_ci95"),
        "baselines_apgr": {k: v.get("apgr") for k, v in base.items() if "apgr" in v},
        "policy": {
            k: r["policy"][k]
            for k in ("target", "quality_ratio", "frontier_share", "cost_saved", "skip_share")
        },
    }


def overhead(n: int = 300) -> dict[str, Any]:
    """p50/p99 of one decision (embedding + boosters), one request at a time, on one core."""
    import numpy as np
    import torch

    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"
    from router.data import OutcomeTable, bundled_dataset, load_outcomes
    from router.embedders import build_embedder
    from router.model import CascadeModel
    from router.sdk import Router
    from router.settings import RouterSettings
    from training.pipeline import TrainConfig, train_and_evaluate

    settings = RouterSettings()
    tiers = RUNS["mmlu_pro_llama8b_gpt4o"]["tiers"]
    folder = RESULTS / "overhead_router"
    # retrained each run (seeded, embeddings cached): never a stale router format
    result = train_and_evaluate(
        TrainConfig(
            tiers=tiers,
            sample=4000,
            bootstrap=0,
            baselines=False,
            output_dir=RESULTS / "overhead",
        ),
        settings,
        log=print,
    )
    result.model.save(folder)
    model = CascadeModel.load(folder, num_threads=1)
    base = build_embedder(model.embedder_ref_)
    router = Router(model, embedder=base, lru_size=0)  # every input new: no LRU hit
    frame = load_outcomes([bundled_dataset("mmlu_pro")], models=tiers)
    table = OutcomeTable.from_long(frame, tiers).sample(n + 20, seed=5)
    short = [
        "Book me a table for two at 7pm tomorrow.",
        "What's the weather in Paris?",
        "Cancel my last order please.",
        "Translate 'good morning' to German.",
    ]
    long = table.prompts
    router.decide("math", "warm-up")
    emb = base

    def timed(fn, inputs):  # type: ignore[no-untyped-def]
        times = []
        for x in inputs:
            t = time.perf_counter()
            fn(x)
            times.append(1000 * (time.perf_counter() - t))
        return {
            "p50_ms": round(statistics.median(times), 2),
            "p99_ms": round(float(np.percentile(times, 99)), 2),
            "n": len(times),
        }

    short_inputs = [short[i % 4] + f" (#{i})" for i in range(n)]
    res = {
        "threads": 1,
        "embedder": model.embedder_name_,
        "long_input_chars_median": int(np.median([len(x) for x in long[:n]])),
        "decision_short": timed(lambda x: router.decide("intent", x), short_inputs),
        "embedding_only_short": timed(lambda x: emb.encode([x]), short_inputs),
        "decision_long": timed(lambda x: router.decide("math", x), long[:n]),
        "embedding_only_long": timed(lambda x: emb.encode([x]), long[:n]),
    }
    X = model.input_matrix(["math"], [long[0]], emb.encode([long[0]]))
    res["boosters_only"] = timed(lambda _: model.pre_probabilities(X), range(n))
    print(json.dumps(res, indent=2))
    return res


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["quality", "overhead"], default=None)
    parser.add_argument("--runs", nargs="*", default=list(RUNS), choices=list(RUNS))
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / "router_core.json"
    results: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    results["machine"] = {"cpus": os.cpu_count(), "platform": platform.platform()}
    if args.only in (None, "quality"):
        results.setdefault("quality", {}).update(quality_runs(args.runs))
    if args.only in (None, "overhead"):
        results["overhead"] = overhead()
    results["command"] = "python benchmarks/bench_router.py" + (
        f" --only {args.only}" if args.only else ""
    )
    path.write_text(json.dumps(results, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
