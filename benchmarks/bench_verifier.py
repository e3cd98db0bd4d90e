"""Second-opinion verifier: the cascade with and without second opinions.

    .venv/bin/python benchmarks/bench_verifier.py                  # every run (~9 min warm)
    .venv/bin/python benchmarks/bench_verifier.py --runs mmlu_pro_llama8b_phi3peer_gpt4o

Same data, split (seeded 80/20 by prompt id), embedder and boosters as bench_router.py; the
model also learns from a cheap peer's recorded answer to the same prompt (or, in the SmolLM2
runs, from 3 extra samples of the first tier recorded here with ``cascade-router record``), and
every opinion bought is charged at its recorded cost. Writes benchmarks/results/verifier.json (and
each run's report.json and curves) and prints the headline figures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"

RUNS: dict[str, dict[str, Any]] = {
    "mmlu_pro_llama8b_phi3peer_gpt4o": {
        "data": ["mmlu_pro"],
        "tiers": ["llama-3.1-8b-instruct", "gpt-4o-2024-05-13"],
        "peers": ["phi-3-mini-4k-instruct"],
        "answer_kinds": {},  # auto: every MMLU-Pro answer ends on a choice letter
    },
    "routerbench_mistral7b_wizardpeer_gpt4": {
        "data": ["routerbench"],
        "tiers": ["mistral-7b-chat", "gpt-4-1106-preview"],
        "peers": ["WizardLM-13B-V1.2"],
        # code answers have no normal form: compared by embedding similarity
        "answer_kinds": {"arc-challenge": "choice", "winogrande": "choice", "mbpp": "text"},
    },
    # SmolLM2-135M-Instruct (llama.cpp, CPU) recorded on RouterBench arc-challenge and
    # winogrande prompts: 3 extra samples of itself at temperature 0.7 …
    "routerbench_smollm2_samples_gpt4": {
        "data": ["routerbench_smollm2"],
        "tiers": ["smollm2-135m-instruct", "gpt-4-1106-preview"],
        "peers": [],
        "samples": 3,
        "answer_kinds": {"arc-challenge": "choice", "winogrande": "choice"},
    },
    # … and the same with mistral-7b-chat as a peer too: the policy picks per request
    "routerbench_smollm2_samples_mistralpeer_gpt4": {
        "data": ["routerbench_smollm2"],
        "tiers": ["smollm2-135m-instruct", "gpt-4-1106-preview"],
        "peers": ["mistral-7b-chat"],
        "samples": 3,
        "answer_kinds": {"arc-challenge": "choice", "winogrande": "choice"},
    },
}


def run(name: str, bootstrap: int) -> dict[str, Any]:
    from router.policy import Target
    from router.settings import RouterSettings
    from training.pipeline import TrainConfig, train_and_evaluate

    spec = RUNS[name]
    config = TrainConfig(
        data=spec["data"],
        tiers=spec["tiers"],
        peers=spec["peers"],
        samples=spec.get("samples", 0),
        answer_kinds=spec["answer_kinds"],
        target=Target(quality_ratio=0.95),
        output_dir=RESULTS / name,
        bootstrap=bootstrap,
        baselines=False,
    )
    t = time.perf_counter()
    result = train_and_evaluate(config, RouterSettings(), log=lambda m: print(f"[{name}] {m}"))
    report = result.report
    report["wall_s"] = round(time.perf_counter() - t, 1)
    headline = _headline(report)
    print(json.dumps(headline, indent=2))
    return {"headline": headline, "report": report}


def _headline(r: dict[str, Any]) -> dict[str, Any]:
    iv = r["intervals"]
    op = r["second_opinion"] or {}
    pol = r["policy"]

    def pair(section: str) -> dict[str, Any]:
        return {
            "apgr_ci95": iv.get(section, {}).get("apgr_ci95"),
            "share_at_95pct_quality_ci95": iv.get(section, {}).get("share_at_95pct_quality_ci95"),
        }

    base = r["cascade_answer_aware"] or {}
    return {
        "tiers": r["tiers"],
        "peers": op.get("peers"),
        "opinion_sources": pol.get("opinion_sources"),
        "n_test": r["n_test"],
        "roc_auc": {
            "pre_answer": r["router_pre_answer"]["roc_auc"],
            "answer_aware": base.get("roc_auc"),
            "with_opinion": op.get("roc_auc"),
        },
        "without_opinion": {
            "apgr": base.get("apgr"),
            "share_at_95pct_quality": base.get("share_at_95pct_quality"),
            "aiq": base.get("aiq"),
            **pair("cascade_answer_aware"),
        },
        "opinion_always": {
            k: op.get("always", {}).get(k) for k in ("apgr", "share_at_95pct_quality", "aiq")
        }
        | pair("cascade_with_opinions"),
        "by_source": {
            name: {
                "label": src.get("label"),
                "roc_auc": src.get("roc_auc"),
                "cost_per_request": src.get("cost_per_request"),
                "always": {
                    k: src.get("always", {}).get(k) for k in ("apgr", "share_at_95pct_quality")
                }
                | pair(f"cascade_with_{name}"),
            }
            for name, src in (op.get("sources") or {}).items()
        },
        "opinion_fitted_band": {
            k: op.get("fitted_band", {}).get(k)
            for k in (
                "apgr",
                "share_at_95pct_quality",
                "aiq",
                "opinion_share",
                "opinion_share_by_source",
            )
        }
        | pair("cascade_opinion_policy"),
        "apgr_gain_opinion_policy_minus_cascade_ci95": iv.get(
            "apgr_gain_opinion_policy_minus_cascade_ci95"
        ),
        "cost_per_opinion": op.get("cost_per_opinion"),
        "cost_always_small": r["cost_always_small"],
        "cost_always_frontier": r["cost_always_frontier"],
        "policy_at_target": {
            k: pol.get(k)
            for k in (
                "target",
                "quality_ratio",
                "frontier_share",
                "cost_per_request",
                "cost_saved",
                "opinion_share",
                "opinion_share_by_source",
                "opinion_bands",
            )
        },
        "policy_at_target_without_opinions": pol.get("without_opinions"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="*", default=list(RUNS), choices=list(RUNS))
    parser.add_argument("--bootstrap", type=int, default=200)
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / "verifier.json"
    results: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    results["machine"] = {"cpus": os.cpu_count(), "platform": platform.platform()}
    for name in args.runs:
        results.setdefault("runs", {})[name] = run(name, args.bootstrap)["headline"]
    results["command"] = "python benchmarks/bench_verifier.py" + (
        f" --runs {' '.join(args.runs)}" if args.runs != list(RUNS) else ""
    )
    path.write_text(json.dumps(results, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
