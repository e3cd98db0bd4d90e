"""Do the other recorded models' outcomes help rank a pair's escalation? (benchmarks/README.md,
"Pair sweep", "What was tried and not kept")

    python benchmarks/bench_other_models.py --datasets routerbench --seeds 0 1
    python benchmarks/bench_other_models.py --summary

Outcome data often record more models than the two a router is trained for (RouterBench: 11 on
every prompt).  A prompt that most models fail is likely hard for the pair too, so the other
models' outcomes are more labels on the same inputs.  For each pair and seed (the pair sweep's
split): one kNN vote (k = ``K``) and one logistic regression (C = ``C``) per recorded model on
the training split's input embeddings, out of fold (5 folds) on the training split and refit on
all of it for the test split; then a logistic stacker over those probabilities (as logits)
predicts each of the pair's two models' acceptance, once from the pair's own two models'
probabilities (``pair_only``) and once from every model's (``all_models``).  The score is the
test APGR of ranking escalation by the difference of the two stacked probabilities, the same
score the router's member choice uses (``router_score``).  Results:
benchmarks/results/other_models.json.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
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

RESULTS = ROOT / "benchmarks" / "results" / "other_models.json"
K = 50
C = 0.1
VARIANTS = ("pair_only", "all_models")


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 0.02, 0.98)
    return np.log(p / (1 - p))


def run_pair(dataset: str, cheap: str, better: str, data: Path, seed: int) -> dict[str, Any]:
    """Test APGR of the stacker from the pair's own models and from every recorded model."""
    import pandas as pd
    from sklearn.linear_model import LogisticRegression

    from router.data import load_prices, load_table
    from router.features import N_INPUT_EXTRA
    from router.model import CascadeModel, Folds
    from router.model.crossfit import router_score
    from router.model.members import (
        LinearAcceptance,
        NeighbourAcceptance,
        linear_oof,
        neighbour_oof,
    )
    from router.settings import RouterSettings
    from training.pipeline import make_embedder

    table = load_table(
        [data / f"{dataset}.parquet"], [cheap, better], prices=load_prices(data / "prices.json")
    )
    train, test = table.split_by_prompt(0.2, seed)
    frame = pd.read_parquet(data / f"{dataset}.parquet", columns=["prompt_id", "model", "score"])
    wide = frame.pivot(index="prompt_id", columns="model", values="score").dropna()
    models = [str(m) for m in wide.columns]
    keep_train = np.isin(train.prompt_ids, wide.index)
    keep_test = np.isin(test.prompt_ids, wide.index)
    train, test = train.subset(np.flatnonzero(keep_train)), test.subset(np.flatnonzero(keep_test))
    embedder = make_embedder(RouterSettings(embedder="static"))
    model = CascadeModel([cheap, better])
    E = model.featurize(train, embedder, answers=False).inputs[:, N_INPUT_EXTRA:]
    E_test = model.featurize(test, embedder, answers=False).inputs[:, N_INPUT_EXTRA:]
    Y = wide.loc[train.prompt_ids].to_numpy(float)
    pair = [models.index(cheap), models.index(better)]
    folds = Folds.make(train.prompt_ids, 2 * Y[:, pair[0]] + Y[:, pair[1]], 5, seed)
    oof = {
        "knn": neighbour_oof(E, Y, folds, (K,))[K],
        "linear": linear_oof(E, Y, folds, (C,))[C],
    }
    fitted = {
        "knn": NeighbourAcceptance(K).fit(E, Y).predict_accept(E_test),
        "linear": np.column_stack(
            [
                LinearAcceptance(C=C, tol=1e-3).fit(E, Y[:, j]).predict_accept(E_test)
                for j in range(len(models))
            ]
        ),
    }
    score = router_score(test.scores)
    record: dict[str, Any] = {"pair": pair_name(dataset, cheap, better), "seed": seed}
    for variant in VARIANTS:
        cols = pair if variant == "pair_only" else list(range(len(models)))
        Z = np.column_stack([_logit(oof[m][:, cols]) for m in ("knn", "linear")])
        Z_test = np.column_stack([_logit(fitted[m][:, cols]) for m in ("knn", "linear")])
        stacked = np.column_stack(
            [
                LogisticRegression(C=1.0, max_iter=2000).fit(Z, Y[:, j]).predict_proba(Z_test)[:, 1]
                for j in pair
            ]
        )
        record[variant] = round(float(score(stacked)), 4)
    return record


def _adding(key: str, record: dict[str, Any]) -> Callable[[dict[str, Any]], None]:
    """A change to the results file that adds ``record`` under ``key``."""

    def add(results: dict[str, Any]) -> None:
        results["pairs"][key] = record

    return add


def summary(results: dict[str, Any]) -> str:
    """Per seed: the mean difference all_models − pair_only, its standard error, wins."""
    lines = []
    by_seed: dict[int, list[float]] = {}
    for r in results["pairs"].values():
        by_seed.setdefault(r["seed"], []).append(r["all_models"] - r["pair_only"])
    for seed, diffs in sorted(by_seed.items()):
        d = np.array(diffs)
        se = d.std(ddof=1) / np.sqrt(len(d)) if len(d) > 1 else float("nan")
        lines.append(
            f"seed {seed}: {len(d)} pairs, all_models − pair_only {d.mean():+.4f} ± {se:.4f} "
            f"(better on {(d > 0).sum()})"
        )
    return "\n".join(lines)


def main() -> None:
    parser = pair_arguments(__doc__.splitlines()[0], ["routerbench"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--summary", action="store_true", help="print the summary only")
    args = parser.parse_args()
    if not args.summary:
        for seed in args.seeds:
            for dataset, cheap, better in selected_pairs(args):
                record = run_pair(dataset, cheap, better, args.data_dir, seed)
                print(json.dumps(record), flush=True)
                key = f"{record['pair']}@{seed}"
                update_results(args.out, _adding(key, record), {"pairs": {}})
    results = json.loads(args.out.read_text()) if args.out.exists() else {"pairs": {}}
    print(summary(results))


if __name__ == "__main__":
    main()
