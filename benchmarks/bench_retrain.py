"""Retraining time on a feedback store of N labelled requests, embedding cache warm or cold.

    python benchmarks/bench_retrain.py --rows 50000 --cache warm
    python benchmarks/bench_retrain.py --rows 50000 --cache cold

The store is filled with N labelled requests replayed from the bundled MMLU-Pro outcomes
(llama-3.1-8b-instruct → gpt-4o-2024-05-13): the 12,032 prompts are asked again and again
(N / 12,032 times each), the tier that answers alternates, and the label is the recorded score.
A seed champion (500 prompts) is registered first, then one ``retrain`` runs with the recorded
outcomes completing every request's other tier (``--lookup mmlu_pro``), the frozen evaluation
set (2,406 prompts) and the gate against the champion.  ``cold`` points the embedding cache at
an empty folder for the retrain (the seed is trained with the warm cache).  Prints JSON and
appends it to ``benchmarks/results/retrain.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from router.data import bundled_dataset, load_prices, load_table
from router.feedback import FeedbackStore
from router.model import CascadeModel
from router.registry import registry_client
from router.settings import RouterSettings
from training.feedback_data import replay_as_feedback
from training.registry import promote_version
from training.retrain import RetrainConfig, cached_embedder, retrain
from training.simulate import _register

TIERS = ["llama-3.1-8b-instruct", "gpt-4o-2024-05-13"]


def fill_store(store: FeedbackStore, rows: int) -> float:
    table = load_table([bundled_dataset("mmlu_pro")], TIERS, load_prices())
    t = time.perf_counter()
    replay_as_feedback(store, table, rows, prefix="bench", source="bench")
    return time.perf_counter() - t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--cache", choices=("warm", "cold"), default="warm")
    parser.add_argument("--n-estimators", type=int, default=1500)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-retrain-"))
    work.mkdir(parents=True, exist_ok=True)
    warm = RouterSettings(
        tracking_uri=f"sqlite:///{work / 'mlflow.db'}",
        artifact_location=str(work / "mlruns"),
        feedback_url=f"sqlite:///{work / 'feedback.db'}",
        progress=False,
    )
    store_file = work / "feedback.db"
    store = FeedbackStore.from_settings(warm)
    fill_s = None
    if store.counts()["labelled"] < args.rows:
        fill_s = fill_store(store, args.rows)
    labelled = store.counts()["labelled"]
    # the seed champion: 500 prompts, warm cache
    table = load_table([bundled_dataset("mmlu_pro")], TIERS, load_prices())
    seed = table.sample(500, 1)
    model = CascadeModel(TIERS, acceptance_params={"n_estimators": args.n_estimators})
    model.fit(seed, cached_embedder(warm.embedder, warm))
    version = _register(model, warm, "bench-seed")
    promote_version(warm.registered_model, version, client=registry_client(warm.tracking_uri))
    settings = warm
    if args.cache == "cold":
        settings = warm.model_copy(update={"cache_dir": Path(tempfile.mkdtemp(prefix="cold-"))})
    t = time.perf_counter()
    result = retrain(
        RetrainConfig(lookup=["mmlu_pro"], n_estimators=args.n_estimators),
        settings,
        store,
        log=lambda m: None,
    )
    wall = time.perf_counter() - t
    store.close()
    record = {
        "what": "retrain",
        "rows_labelled": labelled,
        "training_rows": result.lineage["training_rows"],
        "frozen_eval_rows": result.lineage["frozen_eval_rows"],
        "cache": args.cache,
        "wall_s": round(wall, 1),
        "timings_s": {k: round(v, 1) for k, v in result.timings.items()},
        "store_fill_s": None if fill_s is None else round(fill_s, 1),
        "store_mb": round(store_file.stat().st_size / 1e6, 1),
        "promoted": result.promoted,
        "challenger_apgr": result.decision.challenger.frozen.get("apgr"),
        "cpus": os.cpu_count(),
        "command": f"python benchmarks/bench_retrain.py --rows {args.rows} --cache {args.cache}",
    }
    print(json.dumps(record))
    out = Path(__file__).resolve().parent / "results" / "retrain.jsonl"
    with out.open("a") as f:
        f.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
