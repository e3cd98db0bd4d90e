"""Retraining time, peak memory and quality on a feedback store of N labelled requests.

    python benchmarks/bench_retrain.py --rows 50000 --cache warm          # SQLite, seed champion
    python benchmarks/bench_retrain.py --rows 1000000 --store postgres --vary \\
        --parent bundled --impute parent --no-lookup --caps 10000 30000 100000 100000

The store is filled with N labelled requests replayed from the bundled MMLU-Pro outcomes
(llama-3.1-8b-instruct → gpt-4o-2024-05-13) of the pool, the 9,626 prompts outside the frozen
evaluation set: each prompt is asked again and again (N / 9,626 times), the tier that answers
alternates, its recorded answer is the answer and its recorded score the label.  ``--vary``
makes every request's input distinct, as repeated production traffic is: the prompt followed
by a line ``(ticket k)``.  The champion is either a seed trained on 500 prompts
(``--parent seed``) or the router that ships in the package (``--parent bundled``, trained on
the same pool).  Then one ``retrain`` per ``--caps`` value (``max_feedback_rows``; 0: no cap)
runs in a fresh process, gate included (never promoting, so every run faces the same
champion), and reports its stages, peak resident memory (``ru_maxrss``) and the challenger's
frozen-set APGR.  ``--lookup`` completes each request's other tier from the recorded outcomes
(inputs must then be the recorded prompts: no ``--vary``); without it, ``--impute parent`` fills
the unlabelled tier with the champion's probability (what production has).  ``--cache cold``
gives every retrain an empty embedding cache.  Prints JSON lines and appends them to
``benchmarks/results/retrain.jsonl``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results" / "retrain.jsonl"
TIERS = ["llama-3.1-8b-instruct", "gpt-4o-2024-05-13"]


def pool_table(settings: Any) -> Any:
    """The bundled MMLU-Pro outcomes outside the frozen evaluation set."""
    from router.data import bundled_dataset, load_prices, load_table

    table = load_table([bundled_dataset("mmlu_pro")], TIERS, load_prices())
    pool, _ = table.split_by_prompt(settings.test_size, settings.seed)
    return pool


def fill_store(store: Any, pool: Any, rows: int, vary: bool) -> float:
    """Write requests ``labelled .. rows`` of the replay sequence (resumable), 50,000 at a time."""
    from training.feedback_data import replay_as_feedback

    start = time.perf_counter()
    step = 50_000
    for first in range(store.counts()["labelled"], rows, step):
        last = min(first + step, rows)
        replay_as_feedback(
            store, pool, last, skip=first, prefix="bench", source="bench", vary=vary,
            batch_size=5000,
        )  # fmt: skip
        print(f"filled {last} of {rows} ({time.perf_counter() - start:.0f} s)", flush=True)
    return time.perf_counter() - start


def store_size_mb(url: str) -> float:
    import sqlalchemy as sa

    parsed = sa.make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return Path(str(parsed.database)).stat().st_size / 1e6
    engine = sa.create_engine(parsed)
    with engine.connect() as conn:
        size = conn.execute(sa.text("SELECT pg_database_size(current_database())")).scalar_one()
    engine.dispose()
    return float(size) / 1e6


def register_parent(kind: str, settings: Any, n_estimators: int) -> str:
    from router.model import CascadeModel
    from router.registry import bundled_router_path, registry_client
    from training.registry import log_router, open_tracking, promote_version
    from training.retrain import cached_embedder

    open_tracking(settings)
    import mlflow

    if kind == "bundled":
        folder = bundled_router_path()
    else:
        seed = pool_table(settings).sample(500, 1)
        model = CascadeModel(TIERS, acceptance_params={"n_estimators": n_estimators})
        model.fit(seed, cached_embedder(settings.embedder, settings))
        folder = model.save(Path(tempfile.mkdtemp(prefix="bench-seed-")) / "router")
    with mlflow.start_run(run_name=f"bench-parent-{kind}") as run:
        info = log_router(
            folder, run=run, input_example=None, registered_model=settings.registered_model
        )
    version = str(info.registered_model_version)
    client = registry_client(settings.tracking_uri)
    promote_version(settings.registered_model, version, client=client)
    return version


def child(config: dict[str, Any]) -> dict[str, Any]:
    """One retrain in this process (settings from CASCADE_*): its figures and peak memory."""
    from router.feedback import FeedbackStore
    from router.settings import RouterSettings
    from training.retrain import RetrainConfig, retrain

    settings = RouterSettings()
    start = time.perf_counter()
    with FeedbackStore.from_settings(settings) as store:
        result = retrain(RetrainConfig(**config), settings, store, log=lambda m: None)
    wall = time.perf_counter() - start
    challenger = result.decision.challenger
    champion = result.decision.champion
    return {
        "wall_s": round(wall, 1),
        "timings_s": {k: round(v, 1) for k, v in result.timings.items()},
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 0),
        "labelled": result.lineage["feedback_labelled"],
        "feedback_train": result.lineage["feedback_train"],
        "feedback_holdout": result.lineage["feedback_holdout"],
        "holdout_scored": result.lineage["feedback_holdout_scored"],
        "training_rows": result.lineage["training_rows"],
        "counts": result.lineage["feedback_counts"],
        "challenger_apgr": challenger.frozen.get("apgr"),
        "champion_apgr": None if champion is None else champion.frozen.get("apgr"),
        "challenger_feedback_brier": challenger.feedback.get("brier"),
        "gate": "promote" if result.decision.promote else "keep",
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--store", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--vary", action="store_true", help="distinct inputs (a ticket line)")
    parser.add_argument("--parent", choices=("seed", "bundled"), default="seed")
    parser.add_argument("--impute", choices=("drop", "parent"), default="drop")
    parser.add_argument("--lookup", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--caps", type=int, nargs="+", default=[100_000])
    parser.add_argument("--cache", choices=("warm", "cold"), default="warm")
    parser.add_argument("--n-estimators", type=int, default=1500)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--child", type=str, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print("RESULT " + json.dumps(child(json.loads(args.child))), flush=True)
        return 0

    from router.feedback import FeedbackStore
    from router.settings import RouterSettings

    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-retrain-"))
    work.mkdir(parents=True, exist_ok=True)
    with _store_url(args.store, work) as url:
        settings = RouterSettings(
            tracking_uri=f"sqlite:///{work / 'mlflow.db'}",
            artifact_location=str(work / "mlruns"),
            feedback_url=url,
            progress=False,
        )
        store = FeedbackStore(url)
        fill_s = None
        if store.counts()["labelled"] < args.rows:
            fill_s = fill_store(store, pool_table(settings), args.rows, args.vary)
        labelled = store.counts()["labelled"]
        store.close()
        size_mb = store_size_mb(url)
        print(f"store: {labelled} labelled requests, {size_mb:.0f} MB", flush=True)
        parent = register_parent(args.parent, settings, args.n_estimators)
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "CASCADE_TRACKING_URI": settings.tracking_uri,
            "CASCADE_ARTIFACT_LOCATION": settings.artifact_location,
            "CASCADE_FEEDBACK_URL": url,
            "CASCADE_PROGRESS": "false",
        }
        for cap in args.caps:
            if args.cache == "cold":
                env["CASCADE_CACHE_DIR"] = tempfile.mkdtemp(prefix="cold-")
            config = {
                "lookup": ["mmlu_pro"] if args.lookup else [],
                "impute": args.impute,
                "n_estimators": args.n_estimators,
                "max_feedback_rows": cap or None,
                "promote": False,
            }
            done = subprocess.run(
                [sys.executable, __file__, "--child", json.dumps(config)],
                env=env,
                capture_output=True,
                text=True,
                check=False,
            )
            lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
            if done.returncode != 0 or not lines:
                print(done.stdout[-3000:], done.stderr[-3000:], file=sys.stderr)
                return 1
            record = {
                "what": "retrain",
                "store": args.store,
                "rows_labelled": labelled,
                "store_mb": round(size_mb, 0),
                "store_fill_s": None if fill_s is None else round(fill_s, 1),
                "vary": args.vary,
                "parent": f"{args.parent} (version {parent})",
                "impute": args.impute,
                "lookup": args.lookup,
                "cache": args.cache,
                "max_feedback_rows": cap or None,
                **json.loads(lines[-1].removeprefix("RESULT ")),
                "cpus": os.cpu_count(),
                "load_1min": round(os.getloadavg()[0], 1),
                "command": "python benchmarks/bench_retrain.py " + " ".join(sys.argv[1:]),
            }
            fill_s = None  # reported once
            print(json.dumps(record), flush=True)
            with RESULTS.open("a") as out:
                out.write(json.dumps(record) + "\n")
    return 0


@contextlib.contextmanager
def _store_url(kind: str, work: Path) -> Iterator[str]:
    """The store's URL: a SQLite file in the work folder, or a throw-away PostgreSQL server
    (the tests' own) whose cluster lives as long as the benchmark."""
    if kind == "sqlite":
        yield f"sqlite:///{work / 'feedback.db'}"
        return
    from tests.support.services import PostgresServer

    with PostgresServer() as server:
        yield server.create_database("bench_feedback")


if __name__ == "__main__":
    sys.exit(main())
