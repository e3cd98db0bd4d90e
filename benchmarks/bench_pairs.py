"""Routing quality on every model pair of the shared data (docs/metrics.md, "Pair sweep").

    python benchmarks/bench_pairs.py --list                 # the pairs, nothing fitted
    python benchmarks/bench_pairs.py                        # every pair (hours on 2 busy cores)
    python benchmarks/bench_pairs.py --only gsm8k mmlu_pro:llama-3.1-8b-instruct
    python benchmarks/bench_pairs.py --summary              # the README table from the results
    python benchmarks/bench_pairs.py --summary --splits benchmarks/results/pairs_seed{1,2,3,4}.json
                    # + every pair's margin on each of the five splits, the bars on their mean,
                    # and the margin over each baseline separately (seed 0 is pairs.json)

Pairs: every (cheaper, better) pair of MMLU-Pro and RouterBench models whose better model's mean
score exceeds the cheaper one's by at least 0.05, plus GSM8K and MMLU (mixtral-8x7b → gpt-4).
"Cheaper" by list prices (prices.json) at the dataset's mean input and output tokens; RouterBench
publishes per-call costs, so there by the mean recorded cost.  Each pair: the prompts both models
answered (the others are dropped and counted), a seeded 80/20 split by prompt id, a
:class:`~router.model.CascadeModel` at its defaults fitted on the 80%, evaluated on the 20%
beside every baseline (training/evaluate.py), with a paired bootstrap interval on the margin
over the best non-oracle baseline.  Results go to benchmarks/results/pairs.json, one entry per
pair as it finishes (a rerun skips the pairs already there unless ``--rerun``).
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import platform
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from router.data import OutcomeTable

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "pairs.json"
DATA = Path(os.environ.get("CASCADE_SHARED_DATA", str(ROOT.parent / "shared" / "data")))
MIN_GAP = 0.05
#: the share of prompts every split tests on (80/20); the split standard error depends on it
TEST_SHARE = 0.2
FIXED_PAIRS = {
    "gsm8k": ("mixtral-8x7b-instruct-v0.1", "gpt-4-1106-preview"),
    "mmlu": ("mixtral-8x7b-instruct-v0.1", "gpt-4-1106-preview"),
}
SWEPT = ("mmlu_pro", "routerbench")


def pair_name(dataset: str, cheap: str, better: str) -> str:
    return f"{dataset}:{cheap}->{better}"


def measured_with() -> str | None:
    """The commit of the code being measured (None outside a git checkout)."""
    try:
        done = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        )
    except OSError:  # no git on this machine
        return None
    if done.returncode != 0:
        return None
    return done.stdout.strip() or None


def model_costs(frame: pd.DataFrame, prices: dict[str, Any]) -> pd.Series:
    """Mean cost per request of every model: list prices at the dataset's mean token counts
    (answers with text only) where every model has a price, else the recorded mean cost."""
    models = sorted(frame["model"].unique())
    if not all(m in prices for m in models):
        return frame.groupby("model")["cost_usd"].mean()
    spoke = frame["response"].fillna("").astype(str).str.strip() != ""
    tokens_in = float(frame["input_tokens"].mean())
    tokens_out = float(frame.loc[spoke, "output_tokens"].mean())
    return pd.Series(
        {
            m: (prices[m]["input_per_mtok"] * tokens_in + prices[m]["output_per_mtok"] * tokens_out)
            / 1e6
            for m in models
        }
    )


def list_pairs(data: Path, datasets: Sequence[str]) -> list[tuple[str, str, str]]:
    """(dataset, cheaper, better) for every pair of the sweep, in a stable order."""
    prices = json.loads((data / "prices.json").read_text())["models"]
    pairs: list[tuple[str, str, str]] = []
    for dataset in datasets:
        if dataset in FIXED_PAIRS:
            pairs.append((dataset, *FIXED_PAIRS[dataset]))
            continue
        columns = ["model", "score", "cost_usd", "input_tokens", "output_tokens", "response"]
        frame = pd.read_parquet(data / f"{dataset}.parquet", columns=columns)
        score = frame.groupby("model")["score"].mean()
        cost = model_costs(frame, prices)
        order = sorted(score.index, key=lambda m: (cost[m], m))
        for i, cheap in enumerate(order):
            for better in order[i + 1 :]:
                if cost[cheap] < cost[better] and score[better] - score[cheap] >= MIN_GAP:
                    pairs.append((dataset, cheap, better))
    return pairs


def run_pair(
    dataset: str,
    cheap: str,
    better: str,
    data: Path,
    seed: int,
    resamples: int,
    transform: Callable[[OutcomeTable, OutcomeTable], tuple[OutcomeTable, OutcomeTable]]
    | None = None,
) -> dict:
    """Fit and evaluate one pair; the headline figures as a JSON-able dict (``transform``: what
    an experiment changes in the (train, test) split, learning only from train)."""
    from router.data import load_prices, load_table
    from router.errors import TargetNotCertifiableError
    from router.model import CascadeModel
    from router.settings import RouterSettings
    from training.evaluate import evaluate
    from training.pipeline import make_embedder

    t0, c0 = time.perf_counter(), time.process_time()
    settings = RouterSettings(embedder="static")
    prices = load_prices(data / "prices.json")
    table = load_table([data / f"{dataset}.parquet"], [cheap, better], prices=prices)
    train, test = table.split_by_prompt(TEST_SHARE, seed)
    if transform is not None:
        train, test = transform(train, test)
    embedder = make_embedder(settings)
    model = CascadeModel([cheap, better], seed=seed)
    train_f = model.featurize(train, embedder)
    t_fit = time.perf_counter()
    refused = None
    try:
        model.fit(train, embedder, features=train_f)
    except TargetNotCertifiableError as exc:
        # the ranking does not depend on the target: run the policy at what can be certified
        refused = {"message": str(exc), "alternative": exc.alternative}
        model.set_params(target=exc.alternative or "share=1").fit_policy()
    fit_s = time.perf_counter() - t_fit
    test_f = model.featurize(test, embedder)
    report, _ = evaluate(
        model, train, test, train_f, test_f, seed=seed, bootstrap_resamples=resamples
    )
    base = report["baselines"]
    cascade = report["cascade_answer_aware"]
    main = cascade or report["router_pre_answer"]
    intervals = report["intervals"]
    choices = model.cv_results_
    record = {
        "pair": pair_name(dataset, cheap, better),
        "dataset": dataset,
        "cheap": cheap,
        "better": better,
        "n_train": len(train),
        "n_test": len(test),
        "dropped_prompts": table.dropped_prompts,
        "q_small": report["q_small"],
        "q_frontier": report["q_frontier"],
        "router_apgr": report["router_pre_answer"]["apgr"],
        "router_ci": intervals.get("router_pre_answer", {}).get("apgr_ci95"),
        "cascade_apgr": None if cascade is None else cascade["apgr"],
        "cascade_ci": intervals.get("cascade_answer_aware", {}).get("apgr_ci95"),
        "cascade_minus_router_ci": intervals.get("apgr_gain_cascade_minus_router_ci95"),
        "baselines": {k: v.get("apgr") for k, v in base.items() if "apgr" in v},
        "knn_k": base["knn"].get("k"),
        "margin": report["margin_over_best_baseline"],
        "share_at_95pct_quality": main["share_at_95pct_quality"],
        "policy": {
            k: report["policy"][k]
            for k in ("target", "quality_ratio", "frontier_share", "cost_saved", "skip_share")
        },
        "target_refused": refused,
        "answer_aware_models": bool(model.post_models_),
        "choices": {
            "pre_members": choices.get("pre_members", {}).get("chosen"),
            "knn_k": choices.get("pre_members", {}).get("knn_k"),
            "linear_C": choices.get("pre_members", {}).get("linear_C"),
            "post_blend": choices.get("post_blend"),
            "capacities": [m.get("capacity") for m in choices["models"]["pre"]]
            + [m.get("capacity") for ms in choices["models"]["post"].values() for m in ms],
        },
        "cv_results": choices,
        "fit_s": round(fit_s, 1),
        "wall_s": round(time.perf_counter() - t0, 1),
        "cpu_s": round(time.process_time() - c0, 1),
        "measured_with": measured_with(),
    }
    return record


def load_results(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.exists() else {"pairs": {}}


def update_results(
    path: Path, change: Callable[[dict[str, Any]], None], empty: dict[str, Any]
) -> dict[str, Any]:
    """Apply ``change`` to the JSON results file at ``path`` (``empty`` if there is none yet),
    under a lock: other processes may add to the same file (a read-then-write without it loses
    records), and a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        results = json.loads(path.read_text()) if path.exists() else empty
        change(results)
        partial = path.with_name(path.name + ".partial")
        partial.write_text(json.dumps(results, indent=1))
        partial.replace(path)
    return results


def add_result(path: Path, name: str, record: dict[str, Any], seed: int) -> dict[str, Any]:
    """Add one pair's record to the results file (sweeps of other datasets may run in parallel
    processes on the same file)."""

    def add(results: dict[str, Any]) -> None:
        results["pairs"][name] = record
        results["machine"] = {"cpus": os.cpu_count(), "platform": platform.platform()}
        results["embedder"] = "static"
        results["seed"] = seed
        results["summary"] = summary(results)

    return update_results(path, add, {"pairs": {}})


def sweep(
    pairs: Sequence[tuple[str, str, str]],
    args: argparse.Namespace,
    transform: Callable[[OutcomeTable, OutcomeTable], tuple[OutcomeTable, OutcomeTable]]
    | None = None,
    rerun: bool = False,
) -> dict[str, Any]:
    """Fit and evaluate every pair not yet in ``args.out`` (all of them with ``rerun``),
    adding each record as it finishes; the results file as it ends."""
    results = load_results(args.out)
    for k, (dataset, cheap, better) in enumerate(pairs, 1):
        name = pair_name(dataset, cheap, better)
        if name in results["pairs"] and not rerun:
            continue
        print(f"[{k}/{len(pairs)}] {name}", flush=True)
        record = run_pair(
            dataset, cheap, better, args.data_dir, args.seed, args.resamples, transform
        )
        results = add_result(args.out, name, record, args.seed)
        m = record["margin"]
        print(
            f"  router {record['router_apgr']} cascade {record['cascade_apgr']} "
            f"best {m['baseline']} {m['baseline_apgr']} margin {m['margin']} "
            f"{m.get('margin_ci95')} ({record['wall_s']} s wall, {record['cpu_s']} s cpu)",
            flush=True,
        )
    return results


#: the pair whose cascade APGR has a bar of its own
FLAGSHIP = pair_name("mmlu_pro", "llama-3.1-8b-instruct", "gpt-4o-2024-05-13")


def _bars(margins: np.ndarray, what: str) -> dict[str, Any]:
    """The sweep's bars on one margin per pair (``what`` names it in the keys)."""
    return {
        "pairs": int(margins.size),
        f"share_{what}_at_least_0": round(float((margins >= 0).mean()), 3),
        f"share_{what}_at_least_minus_0.01": round(float((margins >= -0.01).mean()), 3),
        "mean_margin": round(float(margins.mean()), 4),
        f"worst_{what}": round(float(margins.min()), 4),
    }


def summary(results: dict[str, Any]) -> dict[str, Any]:
    """The bars of the sweep over every finished pair."""
    margins = np.array([r["margin"]["margin"] for r in results["pairs"].values()], dtype=float)
    if margins.size == 0:
        return {"pairs": 0}
    flagship = results["pairs"].get(FLAGSHIP, {})
    return {
        **_bars(margins, "margin"),
        "mmlu_pro_llama8b_gpt4o_cascade_apgr": flagship.get("cascade_apgr"),
        "answer_aware_stage_unused": sorted(
            r["pair"]
            for r in results["pairs"].values()
            if not r["answer_aware_models"] or r["choices"]["post_blend"] == 1.0
        ),
        "quality_0.95_refused": sorted(
            r["pair"] for r in results["pairs"].values() if r.get("target_refused")
        ),
        "wall_s_total": round(sum(r["wall_s"] for r in results["pairs"].values()), 1),
        "cpu_s_total": round(sum(r["cpu_s"] for r in results["pairs"].values()), 1),
    }


def corrected_se(margins: np.ndarray) -> np.ndarray:
    """Standard error of each row's mean over random 80/20 splits (one column a split).

    The splits share most of their training prompts, so their margins are correlated and the
    plain ``sd / sqrt(J)`` is too small; Nadeau & Bengio's corrected resampled t widens the
    variance to ``(1/J + n_test/n_train) * sd**2``.
    """
    j = margins.shape[1]
    if j < 2:
        return np.full(margins.shape[0], np.nan)
    var = margins.var(axis=1, ddof=1) * (1 / j + TEST_SHARE / (1 - TEST_SHARE))
    return np.asarray(np.sqrt(var))


def split_margins(runs: Sequence[dict[str, Any]]) -> tuple[list[str], np.ndarray]:
    """The pairs measured in every run and their margins (one row a pair, one column a run)."""
    names = [n for n in runs[0]["pairs"] if all(n in r["pairs"] for r in runs[1:])]
    margins = np.array(
        [[r["pairs"][n]["margin"]["margin"] for r in runs] for n in names], dtype=float
    ).reshape(len(names), len(runs))
    return names, margins


def across_splits(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The bars on each pair's margin averaged over runs on different splits (seeds), for the
    pairs measured in every run, overall and by dataset; the flagship pair's APGR on each split;
    the pairs below zero on average (with the corrected standard error) and on every split."""
    names, margins = split_margins(runs)
    if not names:
        return {"pairs": 0}
    mean, se = margins.mean(axis=1), corrected_se(margins)
    datasets = np.array([runs[0]["pairs"][n]["dataset"] for n in names])
    flagship_apgr = [r["pairs"].get(FLAGSHIP, {}).get("cascade_apgr") for r in runs]
    measured = [a for a in flagship_apgr if a is not None]
    return {
        "seeds": [r.get("seed") for r in runs],
        **_bars(mean, "mean_margin"),
        "by_dataset": {
            d: _bars(mean[datasets == d], "mean_margin") for d in dict.fromkeys(datasets)
        },
        "mmlu_pro_llama8b_gpt4o_cascade_apgr": {
            "per_split": flagship_apgr,
            "mean": round(float(np.mean(measured)), 4) if measured else None,
        },
        "mean_margin_below_0": {
            n: [round(float(m), 4), round(float(e), 4)]
            for n, m, e in zip(names, mean, se, strict=True)
            if m < 0
        },
        "below_0_on_every_split": [n for n, m in zip(names, margins, strict=True) if (m < 0).all()],
        "below_minus_0.01_on_every_split": [
            n for n, m in zip(names, margins, strict=True) if (m < -0.01).all()
        ],
    }


def main_apgr(record: dict[str, Any]) -> float:
    """The APGR a pair's margin is taken on: the cascade's where it has an answer-aware stage,
    else the pre-answer router's."""
    cascade = record["cascade_apgr"]
    return float(record["router_apgr"] if cascade is None else cascade)


def against_each_baseline(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The margin over every non-oracle baseline separately, averaged over the runs, and the
    bars on each pair's worst such mean.

    The recorded margin is over the baseline best on each test split, a maximum over several
    noisy scores taken on the data it is judged on: on a pair where nothing beats chance, the
    best of four is above chance by the noise alone.  Fixing the baseline before averaging
    removes that selection.  For the pairs whose recorded mean margin is below -0.01,
    ``chance_margin`` is what a router equal to random (APGR 0.5) would have scored against
    the per-split best: the selection's share of the miss.
    """
    names, recorded = split_margins(runs)
    if not names:
        return {"pairs": 0}
    first = runs[0]["pairs"]
    baselines = [b for b in first[names[0]]["baselines"] if b != "oracle"]
    worst = np.empty(len(names))
    below: dict[str, Any] = {}
    chance: dict[str, Any] = {}
    for i, n in enumerate(names):
        records = [r["pairs"][n] for r in runs]
        main = np.array([main_apgr(r) for r in records])
        base = np.array([[r["baselines"][b] for r in records] for b in baselines], dtype=float)
        diff = main[None, :] - base
        mean, se = diff.mean(axis=1), corrected_se(diff)
        worst[i] = mean.min()
        if worst[i] < 0:
            below[n] = {
                b: [round(float(m), 4), round(float(e), 4)]
                for b, m, e in zip(baselines, mean, se, strict=True)
            }
        if recorded[i].mean() < -0.01:
            chance[n] = {
                "recorded_mean_margin": round(float(recorded[i].mean()), 4),
                "chance_margin": round(float((0.5 - np.maximum(base.max(axis=0), 0.5)).mean()), 4),
            }
    return {
        "baselines": baselines,
        **_bars(worst, "mean_margin"),
        "worst_mean_margin_below_0": below,
        "recorded_below_minus_0.01": chance,
    }


def splits_table(runs: Sequence[dict[str, Any]]) -> str:
    """Markdown: each pair's margin on every split, their mean and its corrected standard
    error."""
    names, margins = split_margins(runs)
    mean, se = margins.mean(axis=1), corrected_se(margins)
    seeds = " | ".join(f"seed {r.get('seed')}" for r in runs)
    rows = [
        f"| pair | {seeds} | mean ± SE |",
        "| --- |" + " ---: |" * (len(runs) + 1),
    ]
    for n, m, mu, e in zip(names, margins, mean, se, strict=True):
        r = runs[0]["pairs"][n]
        cells = " | ".join(f"{x:+.3f}" for x in m)
        rows.append(
            f"| {r['dataset']}: {_short(r['cheap'])} → {_short(r['better'])} | {cells} | "
            f"{mu:+.3f} ± {e:.3f} |"
        )
    return "\n".join(rows)


def _n(x: Any, digits: int = 3) -> str:
    return "—" if x is None else f"{x:.{digits}f}"


def _short(model: str) -> str:
    for cut in ("-instruct", "-2024", "-1106", "-chat", "-V1.2"):
        model = model.split(cut)[0]
    return model


def _saved(record: dict[str, Any]) -> str:
    """Cost saved by the certified policy; where 95% was refused, what was certified instead."""
    saved = _n(record["policy"]["cost_saved"])
    refused = record.get("target_refused")
    if not refused:
        return saved
    return f"refused; at {record['policy']['target']}: {saved}"


def table(results: dict[str, Any]) -> str:
    """The Markdown table of benchmarks/README.md."""
    rows = [
        "| pair | test n | router | cascade | best baseline | margin [95% CI] | share @95% "
        "| cost saved @95% | members, blend |",
        "| --- | ---: | ---: | ---: | --- | --- | ---: | ---: | --- |",
    ]
    for r in results["pairs"].values():
        m = r["margin"]
        ci = m.get("margin_ci95") or [None, None]
        blend = r["choices"]["post_blend"]
        rows.append(
            f"| {r['dataset']}: {_short(r['cheap'])} → {_short(r['better'])} | {r['n_test']} | "
            f"{_n(r['router_apgr'])} | {_n(r['cascade_apgr'])} | "
            f"{m['baseline'].replace('_logreg', '')} {_n(m['baseline_apgr'])} | "
            f"{m['margin']:+.3f} [{_n(ci[0])}, {_n(ci[1])}] | "
            f"{_n(r['share_at_95pct_quality'])} | {_saved(r)} | "
            f"{'+'.join(r['choices']['pre_members'] or ['lgbm'])}"
            f"{'' if blend is None else f', {blend:g}'} |"
        )
    return "\n".join(rows)


def pair_arguments(description: str, datasets: Sequence[str]) -> argparse.ArgumentParser:
    """A parser with the options that select pairs (``--data-dir``, ``--datasets``, ``--only``)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--data-dir", type=Path, default=DATA)
    parser.add_argument("--datasets", nargs="*", default=list(datasets))
    parser.add_argument("--only", nargs="*", default=None, help="pairs whose name contains one")
    return parser


def selected_pairs(args: argparse.Namespace) -> list[tuple[str, str, str]]:
    """The pairs :func:`pair_arguments`' options select."""
    pairs = list_pairs(args.data_dir, args.datasets)
    if args.only:
        pairs = [p for p in pairs if any(o in pair_name(*p) for o in args.only)]
    return pairs


def main() -> None:
    parser = pair_arguments(__doc__.splitlines()[0], [*SWEPT, *FIXED_PAIRS])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resamples", type=int, default=200)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--rerun", action="store_true", help="refit pairs already in --out")
    parser.add_argument("--list", action="store_true", help="print the pairs and stop")
    parser.add_argument("--summary", action="store_true", help="print the table and the bars")
    parser.add_argument(
        "--splits",
        nargs="*",
        type=Path,
        default=[],
        help="runs of other seeds: also print the bars on each pair's margin averaged over them",
    )
    args = parser.parse_args()
    pairs = selected_pairs(args)
    results = load_results(args.out)
    if args.list:
        for p in pairs:
            done = "done" if pair_name(*p) in results["pairs"] else ""
            print(pair_name(*p), done)
        print(f"{len(pairs)} pairs")
        return
    if not args.summary:
        results = sweep(pairs, args, rerun=args.rerun)
    print(table(results))
    print(json.dumps(summary(results), indent=1))
    if args.splits:
        runs = [results, *(load_results(p) for p in args.splits)]
        print(splits_table(runs))
        print(json.dumps(across_splits(runs), indent=1))
        print(json.dumps(against_each_baseline(runs), indent=1))


if __name__ == "__main__":
    main()
