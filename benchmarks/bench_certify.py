"""Certified targets: how often the target is missed over seeded resplits, and what it costs.

    nice -n 15 .venv/bin/python benchmarks/bench_certify.py           # fits, resplits, latency
    .venv/bin/python benchmarks/bench_certify.py --runs gsm8k_mixtral_gpt4 --resplits 50
    .venv/bin/python benchmarks/bench_certify.py --only resplits --modes population \
        --runs mmlu_pro_llama8b_gpt4o --population mmlu_pro_llama8b_gpt4o --targets quality
    .venv/bin/python benchmarks/bench_certify.py --only latency
    .venv/bin/python benchmarks/bench_certify.py --only render        # the README's tables

What ships: ``CascadeModel.fit`` cross-fits every acceptance model and certifies the policy on
the out-of-fold outcomes of every training row (``model.oof_``).  So each run is fitted **once**,
on all its rows, with the product's defaults (5 folds, its estimator settings, the static
embedder here), and its ``oof_`` is resplit: each seeded resplit draws a 20% test split, refits
the policy on the other 80% of the out-of-fold rows exactly as ``CascadeModel`` builds it
(grid of 300 cost weights, a quarter of the rows selecting the path, a point per step with
200 outcomes), and runs it on the test split.  Arms:

* ``wsr``: certified, Learn-then-Test with the betting test at delta 0.1: what ships;
* ``today``: the uncertified fit routers shipped before certification (the cheapest point
  meeting the target with one standard error to spare) on the same rows: the difference in
  cost saved (in quality, for a share or cost target) is the price of the guarantee;
* on the quality target only: ``hb`` (Hoeffding-Bentkus p-values instead of the betting test)
  and ``wsr:global`` (one global point: no step has its own, so the risk is not split).

The arms of the earlier version that fitted on a 25% calibration split are gone: the product
has no calibration split any more (every training row is calibration outcome, out of fold).

Violation: the realised value on the test split misses the target.  On a small test split the
split's own sampling noise makes the realised value miss a target that holds in expectation, so
the script also reports the spread of the test-split value around the same policy's value on
all rows, and ``--population`` measures against the exact population instead: policy rows drawn
i.i.d. (with replacement) from all rows, the truth computed on all rows.

The test rows' probabilities are out of fold too (from fold models that did not see them), but
the fold models and the model's out-of-fold choices (ensemble members, the answer-aware blend)
saw the other resplit's rows and vice versa; a new-traffic request is scored by the final model
instead.  That is the approximation the certificate itself makes (docs/certification.md).

Writes benchmarks/results/certify.json; caches each run's out-of-fold outcomes and fitted
router under benchmarks/results/certify/ (a rerun refits only the policies).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
CACHE = RESULTS / "certify"

RUNS: dict[str, dict[str, Any]] = {
    "mmlu_pro_llama8b_gpt4o": {
        "data": "mmlu_pro",
        "tiers": ["llama-3.1-8b-instruct", "gpt-4o-2024-05-13"],
    },
    "gsm8k_mixtral_gpt4": {
        "data": "gsm8k",
        "tiers": ["mixtral-8x7b-instruct-v0.1", "gpt-4-1106-preview"],
    },
    "routerbench_mistral7b_gpt4": {
        "data": "routerbench",
        "tiers": ["mistral-7b-chat", "gpt-4-1106-preview"],
    },
    "mmlu_pro_3tier_phi3_llama70b_gpt4o": {
        "data": "mmlu_pro",
        "tiers": ["phi-3-mini-4k-instruct", "llama-3.1-70b-instruct", "gpt-4o-2024-05-13"],
    },
}
#: "wsr": certified with the betting test (what ships); "today": uncertified, the same rows
ARMS = ("wsr", "today")
#: variants measured on the quality target only
EXTRA_ARMS = ("hb", "wsr:global")
TEST_FRACTION = 0.2
MODES = ("test_split", "population")


# ---------------------------------------------------------------------------- one fit per run
def embedder_for(kind: str, cache_dir: Path) -> Any:
    from router.embedders import CachedEmbedder, EmbeddingCache, build_embedder

    return CachedEmbedder(build_embedder(kind, cache_dir=cache_dir), EmbeddingCache(cache_dir))


def cache_stem(name: str, embedder_kind: str, n_estimators: int | None) -> str:
    return f"{name}__{embedder_kind}" + ("" if n_estimators is None else f"_n{n_estimators}")


def fit_run(
    name: str, embedder_kind: str, cache_dir: Path, n_estimators: int | None
) -> dict[str, np.ndarray]:
    """The out-of-fold outcomes of one ``CascadeModel.fit`` on every row of a run (``oof_``),
    with what the model's own policy is built from; cached in CACHE/<run>__<embedder>.npz, the
    fitted router beside it (for the latency measurement)."""
    path = CACHE / f"{cache_stem(name, embedder_kind, n_estimators)}.npz"
    if path.exists():
        with np.load(path, allow_pickle=False) as z:
            return dict(z)
    from router.data import OutcomeTable, bundled_dataset, load_outcomes
    from router.errors import TargetNotCertifiableError
    from router.model import CascadeModel

    spec = RUNS[name]
    tiers = spec["tiers"]
    frame = load_outcomes([bundled_dataset(spec["data"])], models=tiers)
    table = OutcomeTable.from_long(frame, tiers)
    params = None if n_estimators is None else {"n_estimators": n_estimators}
    # the product's defaults: its target (quality 0.95), folds, estimator settings
    model = CascadeModel(tiers, acceptance_params=params)
    t = time.perf_counter()
    try:
        model.fit(table, embedder_for(embedder_kind, cache_dir))
        own_policy = True
    except TargetNotCertifiableError as err:
        # the out-of-fold outcomes are set before the policy is fitted: the resplits need
        # only them, and the refusal itself is a finding worth keeping
        print(f"[{name}] the model's own target is refused on all rows: {err}", flush=True)
        own_policy = False
    fit_s = time.perf_counter() - t
    print(f"[{name}] CascadeModel.fit on {len(table)} rows: {fit_s:.0f} s", flush=True)
    oof = model.oof_
    signals = oof.signals
    out: dict[str, np.ndarray] = {
        "pre": signals.pre,
        "post_self": signals.post_self,
        "post_next": signals.post_next,
        "scores": oof.scores,
        "costs": oof.costs,
        "steps": oof.steps.astype(str),
        "fold": oof.fold,
        "tier_weights": model.tier_weights_,
        "skip_tolerance": np.array(
            np.nan if model.skip_tolerance is None else model.skip_tolerance
        ),
        "min_step_samples": np.array(model.min_step_samples),
        "seed": np.array(model.seed),
        "fit_s": np.array(fit_s),
        "own_policy": np.array(own_policy),
    }
    if signals.op_self is not None and signals.op_next is not None:
        out |= {"op_self": signals.op_self, "op_next": signals.op_next}
    if oof.opinion_costs is not None:
        out["opinion_costs"] = oof.opinion_costs
    CACHE.mkdir(parents=True, exist_ok=True)
    if own_policy:
        model.save(CACHE / f"{cache_stem(name, embedder_kind, n_estimators)}__router")
    np.savez_compressed(path, **out)  # type: ignore[arg-type]
    return out


# ---------------------------------------------------------------------------- resplits
def signals_of(data: dict[str, np.ndarray], rows: np.ndarray) -> Any:
    from router.policy import CascadeSignals

    # copies: CascadeSignals fills missing answer-aware columns in place
    return CascadeSignals(
        data["pre"][rows],
        data["post_self"][rows].copy(),
        data["post_next"][rows].copy(),
        data["op_self"][rows] if "op_self" in data else None,
        data["op_next"][rows] if "op_next" in data else None,
    )


def opinion_costs_of(data: dict[str, np.ndarray], rows: np.ndarray) -> np.ndarray | None:
    return data["opinion_costs"][rows] if "opinion_costs" in data else None


def fit_policy(arm: str, data: dict[str, np.ndarray], rows: np.ndarray, target: Any) -> Any:
    """The policy of one arm fitted on the out-of-fold outcomes of ``rows``, built as
    ``CascadeModel._fit_policy`` builds it (the per-request table aside: it serves other
    targets and changes nothing about this one's point)."""
    from router.policy import CascadePolicy

    method, _, option = arm.partition(":")
    tolerance = float(data["skip_tolerance"])
    policy = CascadePolicy(
        tiers=tuple(str(i) for i in range(data["scores"].shape[1])),
        tier_weights=data["tier_weights"],
        skip_tolerance=None if math.isnan(tolerance) else tolerance,
        # "wsr:global": one global point, so the risk is not split across steps
        min_step_samples=10**9 if option == "global" else int(data["min_step_samples"]),
        target=target,
        certify=None if method == "today" else method,
        seed=int(data["seed"]),
        table=False,
    )
    return policy.fit(
        signals_of(data, rows),
        data["scores"][rows],
        data["costs"][rows],
        data["steps"][rows],
        opinion_costs_of(data, rows),
    )


def realised(policy: Any, data: dict[str, np.ndarray], rows: np.ndarray) -> dict[str, float]:
    scores, costs = data["scores"][rows], data["costs"][rows]
    out = policy.run(
        signals_of(data, rows),
        scores,
        costs,
        data["steps"][rows],
        opinion_costs=opinion_costs_of(data, rows),
    ).summary()
    top_cost = float(costs[:, -1].mean())
    return {
        "ratio": out["quality"] / float(scores[:, -1].mean()),
        "share": out["frontier_share"],
        "cost": out["cost"],
        "saved": 1.0 - out["cost"] / top_cost,
    }


def missed(target: Any, r: dict[str, float]) -> bool:
    return bool(
        (target.quality_ratio is not None and r["ratio"] < target.quality_ratio - 1e-12)
        or (target.max_frontier_share is not None and r["share"] > target.max_frontier_share)
        or (target.max_cost is not None and r["cost"] > target.max_cost)
    )


def draw(rng: np.random.Generator, n: int, population: bool) -> tuple[np.ndarray, np.ndarray]:
    """(policy rows, test rows) of one resplit: a 20% test split and the rest; with
    ``population``, the rest drawn i.i.d. (with replacement) and every row as the truth."""
    n_test = round(TEST_FRACTION * n)
    if population:
        return np.sort(rng.integers(0, n, n - n_test)), np.arange(n)
    perm = rng.permutation(n)
    return np.sort(perm[n_test:]), np.sort(perm[:n_test])


def resplits(
    data: dict[str, np.ndarray],
    target: Any,
    count: int,
    arms: tuple[str, ...],
    population: bool,
    log: Any = print,
) -> dict[str, Any]:
    """Per arm over ``count`` seeded resplits: the violation rate, the means of the realised
    values on the test split, and the spread of the test split's value around all rows'."""
    from router.errors import TargetNotCertifiableError

    n = len(data["scores"])
    every = np.arange(n)
    record: dict[str, list[dict[str, Any]]] = {arm: [] for arm in arms}
    seconds = dict.fromkeys(arms, 0.0)
    for seed in range(count):
        train, test = draw(np.random.default_rng(1000 + seed), n, population)
        for arm in arms:
            t = time.perf_counter()
            try:
                policy = fit_policy(arm, data, train, target)
            except TargetNotCertifiableError:
                record[arm].append({"infeasible": True})
                seconds[arm] += time.perf_counter() - t
                continue
            seconds[arm] += time.perf_counter() - t
            got = realised(policy, data, test)
            truth = got if population else realised(policy, data, every)
            record[arm].append(
                got
                | {
                    "infeasible": False,
                    "missed": missed(target, got),
                    "ratio_all_rows": truth["ratio"],
                }
            )
        if (seed + 1) % 10 == 0:
            log(f"  {seed + 1}/{count} resplits")
    return {arm: summarise(rows, seconds[arm]) for arm, rows in record.items()}


def summarise(rows: list[dict[str, Any]], seconds: float) -> dict[str, Any]:
    ok = [r for r in rows if not r["infeasible"]]
    entry: dict[str, Any] = {
        "resplits": len(rows),
        "infeasible": len(rows) - len(ok),
        "fit_s_mean": round(seconds / max(len(rows), 1), 3),
    }
    if ok:
        entry |= {
            "violation": round(float(np.mean([r["missed"] for r in ok])), 3),
            "ratio_mean": round(float(np.mean([r["ratio"] for r in ok])), 4),
            "ratio_p10": round(float(np.percentile([r["ratio"] for r in ok], 10)), 4),
            "share_mean": round(float(np.mean([r["share"] for r in ok])), 4),
            "cost_mean": float(f"{np.mean([r['cost'] for r in ok]):.4g}"),
            "saved_mean": round(float(np.mean([r["saved"] for r in ok])), 4),
            # how far the test split's realised ratio strays from the same policy's on all rows
            "test_noise_sd": round(
                float(np.std([r["ratio"] - r["ratio_all_rows"] for r in ok])), 4
            ),
        }
    return entry


def targets_for(data: dict[str, np.ndarray], cost_fraction: float) -> dict[str, Any]:
    from router.policy import Target

    cost = round(cost_fraction * float(data["costs"][:, -1].mean()), 8)
    return {
        "quality=0.95": Target(quality_ratio=0.95),
        "share=0.3": Target(max_frontier_share=0.3),
        f"cost={cost:g} ({cost_fraction:g} x frontier)": Target(max_cost=cost),
    }


# ---------------------------------------------------------------------------- latency
def latency(
    name: str, embedder_kind: str, cache_dir: Path, n_estimators: int | None, n: int = 300
) -> dict[str, Any]:
    """Decision latency with the router's own target vs a target asked per request (table
    lookup), and the policy's part alone, one request at a time on one thread, with the router
    one run's fit produced."""
    from router.data import OutcomeTable, bundled_dataset, load_outcomes
    from router.embedders import build_embedder
    from router.model import CascadeModel
    from router.policy import Target
    from router.sdk import Router

    folder = CACHE / f"{cache_stem(name, embedder_kind, n_estimators)}__router"
    if not folder.exists():
        raise SystemExit(f"no fitted router for {name} in {folder}: run its resplits first")
    model = CascadeModel.load(folder, num_threads=1)
    router = Router(model, embedder=build_embedder(embedder_kind, cache_dir=cache_dir), lru_size=0)
    tiers = list(model.tiers_)
    table = OutcomeTable.from_long(
        load_outcomes([bundled_dataset(RUNS[name]["data"])], models=tiers), tiers
    ).sample(n, seed=5)
    texts, steps = table.prompts, [str(s) for s in table.steps]
    router.decide(steps[0], texts[0])
    policy = model.policy_
    # single-constraint targets: a joint one (quality and share) can be refused on a step
    # whose own outcomes cannot certify it, which would end the measurement
    asked = ["quality=0.9", "quality=0.953", "share=0.3", "share=0.5,delta=0.05"]

    def timed(fn: Any, count: int) -> dict[str, float]:
        times = []
        for i in range(count):
            t = time.perf_counter()
            fn(i)
            times.append(1e6 * (time.perf_counter() - t))
        return {
            "p50_us": round(statistics.median(times), 1),
            "p99_us": round(float(np.percentile(times, 99)), 1),
        }

    targets = [Target.parse(t) for t in asked]
    for asked_target in targets:  # the first lookup of each cell fills the certificate cache
        policy.certificate(steps[0], asked_target)
    # a risk below the table's smallest is certified directly: the first time also rebuilds
    # every candidate point's outcomes from the calibration arrays
    t = time.perf_counter()
    policy.certificate(None, Target(quality_ratio=0.95, delta=0.005))
    first_direct_ms = 1000 * (time.perf_counter() - t)
    t = time.perf_counter()
    policy.certificate(None, Target(quality_ratio=0.9, delta=0.005))
    direct_ms = 1000 * (time.perf_counter() - t)
    return {
        "router": f"{name} ({embedder_kind} embedder), target {model.target_}, "
        f"{len(policy.cal_scores_)} calibration outcomes",
        "decision_own_target": timed(lambda i: router.decide(steps[i], texts[i]), n),
        "decision_per_request_target": timed(
            lambda i: router.decide(steps[i], texts[i], target=asked[i % len(asked)]), n
        ),
        "policy_own_target": timed(lambda i: policy.operating(steps[i % n]), 5000),
        "policy_per_request_target": timed(
            lambda i: policy.certificate(steps[i % n], targets[i % len(targets)]), 5000
        ),
        "certify_directly_first_ms": round(first_direct_ms, 1),
        "certify_directly_ms": round(direct_ms, 1),
    }


def fmt(x: float | None) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    return f"{round(x, 3) + 0.0:.3f}"  # + 0.0: no "-0.000"


def pair(arms: dict[str, Any], key: str, a: str = "wsr", b: str = "today") -> str:
    return f"{fmt(arms.get(a, {}).get(key))} / {fmt(arms.get(b, {}).get(key))}"


def markdown(results: dict[str, Any]) -> str:
    """Two tables: certified (``wsr``) vs uncertified (``today``) per run, target and mode;
    then every arm of the quality target."""
    main = [
        "| run (test n) | target | violation | mean ratio | mean share | mean cost saved | "
        "test-split SD |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    arms_table = [
        "| run (test n) | arm | violation | refused | mean ratio (p10) | mean cost saved |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for name, run in results.get("runs", {}).items():
        for mode in MODES:
            population = mode == "population"
            label = (
                f"{name} (population of {run['n']})"
                if population
                else (f"{name} ({run['n_test']})")
            )
            for target, arms in run.get(mode, {}).items():
                refused = [a for a in ("wsr", "today") if arms.get(a, {}).get("infeasible")]
                note = f" (refused: {', '.join(refused)})" if refused else ""
                main.append(
                    f"| {label} | {target}{note} | {pair(arms, 'violation')} | "
                    f"{pair(arms, 'ratio_mean')} | {pair(arms, 'share_mean')} | "
                    f"{pair(arms, 'saved_mean')} | "
                    f"{'—' if population else fmt(arms.get('wsr', {}).get('test_noise_sd'))} |"
                )
                if target.startswith("quality"):
                    for arm, e in arms.items():
                        arms_table.append(
                            f"| {label} | {arm} | {fmt(e.get('violation'))} | "
                            f"{e['infeasible']}/{e['resplits']} | {fmt(e.get('ratio_mean'))} "
                            f"({fmt(e.get('ratio_p10'))}) | {fmt(e.get('saved_mean'))} |"
                        )
    return "\n".join(
        [
            "certified (wsr) / uncertified (today):",
            "",
            *main,
            "",
            "quality target, every arm:",
            "",
            *arms_table,
        ]
    )


def save_run(
    path: Path,
    results: dict[str, Any],
    name: str | None,
    run: dict[str, Any] | None,
    command: str | None = None,
) -> dict[str, Any]:
    """Write this invocation's results, re-reading the file first: several invocations may
    write it at the same time, each replacing only the targets it measured."""
    merged = json.loads(path.read_text()) if path.exists() else {}
    merged |= {k: v for k, v in results.items() if k not in ("runs", "commands")}
    if name is not None and run is not None:
        # per target and mode: another invocation may be measuring other targets of this run
        stored = merged.setdefault("runs", {}).setdefault(name, {})
        for key, value in run.items():
            if key in MODES:
                stored.setdefault(key, {}).update(value)
            else:
                stored[key] = value
    if command is not None:
        commands = merged.get("commands", [])
        merged["commands"] = [
            *(commands.values() if isinstance(commands, dict) else commands),
            command,
        ]
    path.write_text(json.dumps(merged, indent=2))
    return merged


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="*", default=list(RUNS), choices=list(RUNS))
    parser.add_argument("--resplits", type=int, default=50)
    parser.add_argument(
        "--n-estimators",
        type=int,
        default=None,
        help="boosting rounds of the acceptance models (default: the product's)",
    )
    parser.add_argument("--embedder", default="static")
    parser.add_argument("--cost-fraction", type=float, default=0.5)
    parser.add_argument("--targets", nargs="*", default=["quality", "share", "cost"])
    parser.add_argument("--arms", nargs="*", default=list(ARMS))
    parser.add_argument("--extra-arms", nargs="*", default=list(EXTRA_ARMS))
    parser.add_argument(
        "--population",
        nargs="*",
        default=["gsm8k_mixtral_gpt4"],
        help="runs also measured against the exact population",
    )
    parser.add_argument("--modes", nargs="*", default=["test_split", "population"], choices=MODES)
    parser.add_argument("--only", choices=["fit", "resplits", "latency", "render"], default=None)
    parser.add_argument("--latency-run", default="mmlu_pro_llama8b_gpt4o")
    default_cache = Path(os.environ.get("CASCADE_CACHE_DIR", ".cascade-cache"))
    parser.add_argument("--cache-dir", type=Path, default=default_cache)
    args = parser.parse_args()
    path = RESULTS / "certify.json"
    if args.only == "render":
        print(markdown(json.loads(path.read_text())))
        return
    results: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    results["machine"] = {"cpus": os.cpu_count(), "platform": platform.platform()}
    results["settings"] = {
        "fit": "one CascadeModel.fit per run on every row, product defaults (5 folds, target "
        "quality=0.95)",
        "n_estimators": args.n_estimators or "product default",
        "embedder": args.embedder,
        "resplits": args.resplits,
        "test_fraction": TEST_FRACTION,
        "cost_fraction": args.cost_fraction,
        "delta": 0.1,
        "policy": "CascadePolicy as CascadeModel builds it (grid 300, selection fraction "
        "0.25, 200 outcomes per step)",
    }
    if args.only in (None, "fit", "resplits"):
        for name in args.runs:
            data = fit_run(name, args.embedder, args.cache_dir, args.n_estimators)
            if args.only == "fit":
                continue
            n = len(data["scores"])
            run: dict[str, Any] = {
                "tiers": RUNS[name]["tiers"],
                "n": n,
                "n_test": round(TEST_FRACTION * n),
                "model_fit_s": round(float(data["fit_s"]), 1),
                "own_target_certified_on_all_rows": bool(data["own_policy"]),
                "test_split": {},
                "population": {},
            }
            # a rerun of some targets or modes keeps the others' results
            old = json.loads(path.read_text()).get("runs", {}) if path.exists() else {}
            for mode in ("test_split", "population"):
                run[mode] = dict(old.get(name, {}).get(mode, {}))
            for label, target in targets_for(data, args.cost_fraction).items():
                if label.split("=")[0] not in args.targets:
                    continue
                quality = target.quality_ratio is not None
                arms = tuple(args.arms) + (tuple(args.extra_arms) if quality else ())
                for mode in args.modes:
                    population = mode == "population"
                    if population and name not in args.population:
                        continue
                    t = time.perf_counter()
                    run[mode][label] = resplits(
                        data, target, args.resplits, arms, population, log=print
                    )
                    print(f"[{name}] {mode} {label}: {time.perf_counter() - t:.0f} s", flush=True)
                    print(json.dumps(run[mode][label]), flush=True)
                    save_run(path, results, name, run)
    if args.only in (None, "latency"):
        results["latency"] = latency(
            args.latency_run, args.embedder, args.cache_dir, args.n_estimators
        )
        print(json.dumps(results["latency"], indent=2))
    command = " ".join(["python benchmarks/bench_certify.py", *sys.argv[1:]])
    results = save_run(path, results, None, None, command)
    print(markdown(results))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
