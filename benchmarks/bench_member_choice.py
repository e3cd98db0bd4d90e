"""Which rule should pick the averaged pre-answer members? (benchmarks/README.md, "Pair sweep")

    python benchmarks/bench_member_choice.py --datasets routerbench --seeds 0 1
    python benchmarks/bench_member_choice.py --summary

The router averages a subset of {boosters, logistic regression, kNN}, picked as the subset
whose out-of-fold probabilities rank escalation best (``choose_members``).  On small data those
out-of-fold differences are often within noise, so this asks whether a rule that accounts for
the noise does better on fresh prompts.  For each pair and seed (the pair sweep's split): the
boosters cross-fitted as ``CascadeModel`` does (answer-aware stage off: the rule concerns the
pre-answer members), kNN and the regression cross-fitted by ``cross_fit_members``, every member
refit on the whole training split and every candidate subset scored on the test split.  Each
rule then picks from the out-of-fold probabilities alone:

- ``argmax``: the best out-of-fold subset (what ships);
- ``all``: always the three averaged;
- ``1se_all`` / ``1se_first`` / ``1se_knn``: the three / the earliest candidate (simplest
  first) / kNN alone, unless the best beats it by more than one paired-bootstrap standard
  error of the out-of-fold difference;
- ``bagged``: each subset weighted by how often it is best over bootstrap resamples of the
  training rows (a soft choice).

The test-split APGR of each pick is compared with the best non-oracle baseline's on the same
split (kNN, logistic regression, small-fail).  Results: benchmarks/results/member_choice.json.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.bench_pairs import (  # noqa: E402
    pair_arguments,
    pair_name,
    selected_pairs,
    update_results,
)

RESULTS = ROOT / "benchmarks" / "results" / "member_choice.json"
RULES = ("argmax", "all", "1se_all", "1se_first", "1se_knn", "bagged")
BASELINES = ("knn", "logreg", "small_fail_logreg")


def run_pair(
    dataset: str, cheap: str, better: str, data: Path, seed: int, resamples: int
) -> dict[str, Any]:
    """Every candidate subset's out-of-fold and test APGR, each rule's pick and the baselines."""
    from router.data import load_prices, load_table
    from router.features import N_INPUT_EXTRA
    from router.model import CascadeModel, Folds, cross_fit_members
    from router.model.crossfit import router_score
    from router.model.members import CANDIDATES, choose_members
    from router.settings import RouterSettings
    from training.evaluate import evaluate_baselines
    from training.pipeline import make_embedder

    t0 = time.perf_counter()
    table = load_table(
        [data / f"{dataset}.parquet"], [cheap, better], prices=load_prices(data / "prices.json")
    )
    train, test = table.split_by_prompt(0.2, seed)
    embedder = make_embedder(RouterSettings(embedder="static"))
    # the boosters alone, cross-fitted; always-frontier is certifiable on any data
    model = CascadeModel(
        [cheap, better], seed=seed, answer_aware=False, pre_ensemble=False, target="share=1"
    )
    train_f, test_f = model.featurize(train, embedder), model.featurize(test, embedder)
    model.fit(train, embedder, features=train_f)
    X_train = train_f.encoded(model.steps_).inputs
    X_test = test_f.encoded(model.steps_).inputs
    E_train, E_test = X_train[:, N_INPUT_EXTRA:], X_test[:, N_INPUT_EXTRA:]
    Y = np.column_stack([train.labels(t) for t in range(2)])
    folds = Folds(model.oof_.fold, model.folds)
    score = router_score(train.scores)
    members = cross_fit_members(E_train, Y, folds, model.oof_.signals.pre, score, seed=seed)
    every = members.refit(("lgbm", "linear", "knn"), E_train, Y, seed=seed)
    assert every.neighbours is not None
    test_p = {
        "lgbm": np.column_stack([m.predict_accept(X_test) for m in model.pre_models_]),
        "linear": np.column_stack([m.predict_accept(E_test) for m in every.linear["linear"]]),
        "knn": every.neighbours.predict_accept(E_test),
    }
    subsets = {"+".join(c): c for c in CANDIDATES}
    test_score = router_score(test.scores)
    best, oof_apgr = choose_members(members.oof, score)  # what ships
    picks = pick(members.oof, train.scores, subsets, "+".join(best), oof_apgr, resamples, seed)
    test_apgr = {n: test_score(_mean(test_p, c)) for n, c in subsets.items()}
    rules = {}
    for rule, weights in picks.items():
        mixed = sum(w * _mean(test_p, subsets[n]) for n, w in weights.items())
        rules[rule] = {"weights": weights, "test_apgr": round(float(test_score(mixed)), 6)}
    base, _ = evaluate_baselines(train, test, train_f, test_f, seed=seed)
    return {
        "pair": pair_name(dataset, cheap, better),
        "seed": seed,
        "n_train": len(train),
        "n_test": len(test),
        "knn_k": members.knn_k,
        "linear_C": members.linear_C,
        "oof_apgr": {n: round(v, 6) for n, v in oof_apgr.items()},
        "test_apgr": {n: round(float(v), 6) for n, v in test_apgr.items()},
        "rules": rules,
        "baselines": {b: base[b]["apgr"] for b in BASELINES},
        "best_baseline_apgr": max(base[b]["apgr"] for b in BASELINES),
        "wall_s": round(time.perf_counter() - t0, 1),
    }


def _mean(probabilities: dict[str, np.ndarray], names: tuple[str, ...]) -> np.ndarray:
    return np.mean([probabilities[n] for n in names], axis=0)


def pick(
    oof: dict[str, np.ndarray],
    scores: np.ndarray,
    subsets: dict[str, tuple[str, ...]],
    best: str,
    apgr: dict[str, float],
    resamples: int,
    seed: int,
) -> dict[str, dict[str, float]]:
    """Each rule's weights over the subsets, from out-of-fold probabilities and outcomes, given
    the shipped rule's pick ``best`` and every subset's out-of-fold ``apgr``."""
    from router.model.crossfit import escalation_apgr

    names = list(subsets)
    means = {n: _mean(oof, c) for n, c in subsets.items()}
    gains = {n: p[:, -1] - p[:, 0] for n, p in means.items()}
    small, large = scores[:, 0], scores[:, -1]
    rng = np.random.default_rng(seed)
    rows = [rng.integers(0, len(small), len(small)) for _ in range(resamples)]
    boot = {
        n: np.array([escalation_apgr(g[r], small[r], large[r]) for r in rows])
        for n, g in gains.items()
    }

    def unless_beaten(anchor: str) -> str:
        """``anchor`` unless the best beats it by more than one paired standard error."""
        margin = apgr[best] - apgr[anchor]
        return best if margin > float(np.std(boot[best] - boot[anchor])) else anchor

    first = next(n for n in names if unless_beaten(n) == n)
    wins = [max(names, key=lambda n: (boot[n][b], -names.index(n))) for b in range(resamples)]
    return {
        "argmax": {best: 1.0},
        "all": {"lgbm+linear+knn": 1.0},
        "1se_all": {unless_beaten("lgbm+linear+knn"): 1.0},
        "1se_first": {first: 1.0},
        "1se_knn": {unless_beaten("knn"): 1.0},
        "bagged": {n: wins.count(n) / resamples for n in names if n in wins},
    }


def add_result(path: Path, record: dict[str, Any]) -> None:
    """One pair-seed's record (several processes may share the file)."""

    def add(results: dict[str, Any]) -> None:
        results["runs"][f"{record['pair']}#{record['seed']}"] = record
        results["machine"] = {"cpus": os.cpu_count()}

    update_results(path, add, {"runs": {}})


def summary(results: dict[str, Any]) -> str:
    """Per rule: the bars of the pair sweep on the test splits, and the paired difference to
    the shipped rule (mean, its standard error, pair-seeds better / worse)."""
    runs = list(results["runs"].values())
    lines = [
        f"{len(runs)} pair-seeds",
        "| rule | margin ≥ 0 | margin ≥ −0.01 | mean margin | worst | vs argmax: mean ± se"
        " | better / worse |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    ships = np.array([r["rules"]["argmax"]["test_apgr"] for r in runs])
    for rule in RULES:
        value = np.array([r["rules"][rule]["test_apgr"] for r in runs])
        margin = value - np.array([r["best_baseline_apgr"] for r in runs])
        diff = value - ships
        se = float(diff.std(ddof=1) / np.sqrt(len(diff))) if len(diff) > 1 else float("nan")
        lines.append(
            f"| {rule} | {100 * (margin >= 0).mean():.0f}% | {100 * (margin >= -0.01).mean():.0f}%"
            f" | {margin.mean():+.4f} | {margin.min():+.3f} | {diff.mean():+.4f} ± {se:.4f}"
            f" | {(diff > 0).sum()} / {(diff < 0).sum()} |"
        )
    by_pair: dict[str, dict[int, float]] = {}
    for r in runs:
        shipped = r["rules"]["argmax"]["test_apgr"] - r["best_baseline_apgr"]
        by_pair.setdefault(r["pair"], {})[r["seed"]] = shipped
    twice = np.array([[v[0], v[1]] for v in by_pair.values() if 0 in v and 1 in v])
    if len(twice) > 2:
        lines.append(
            f"\nargmax margin, seed 0 vs seed 1 over {len(twice)} pairs: correlation "
            f"{np.corrcoef(twice.T)[0, 1]:.2f}, sd {twice.std():.3f}; below 0 on both seeds: "
            f"{int(((twice < 0).all(axis=1)).sum())}, below −0.01 on both: "
            f"{int(((twice < -0.01).all(axis=1)).sum())}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = pair_arguments(__doc__.splitlines()[0], ["routerbench"])
    parser.add_argument("--seeds", nargs="*", type=int, default=[0, 1])
    parser.add_argument("--resamples", type=int, default=100)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--summary", action="store_true", help="print the table and stop")
    args = parser.parse_args()
    if not args.summary:
        pairs = selected_pairs(args)
        for seed in args.seeds:
            for k, (dataset, cheap, better) in enumerate(pairs, 1):
                done = json.loads(args.out.read_text())["runs"] if args.out.exists() else {}
                if f"{pair_name(dataset, cheap, better)}#{seed}" in done:
                    continue
                record = run_pair(dataset, cheap, better, args.data_dir, seed, args.resamples)
                add_result(args.out, record)
                print(
                    f"[{k}/{len(pairs)} seed {seed}] {record['pair']}: "
                    + " ".join(f"{r}={v['test_apgr']:.3f}" for r, v in record["rules"].items())
                    + f" best baseline {record['best_baseline_apgr']:.3f} ({record['wall_s']} s)",
                    flush=True,
                )
    print(summary(json.loads(args.out.read_text())))


if __name__ == "__main__":
    main()
