"""Tool selection: the cascade on the bundled ``tools`` dataset (BFCL questions answered by
SmolLM2-135M → Gemma-3-270M on llama.cpp, graded by BFCL's checker).

    CASCADE_EMBEDDER=static .venv/bin/python benchmarks/bench_tools.py

On the held-out split (seeded 80/20 by prompt id, as ``cascade-router evaluate``): the router
(``training.evaluate``: APGR, share at 95% of top-tier quality, cost saved at a 95% quality
target, the baselines, bootstrap intervals, the fitted policy with and without the validator
stage), the first tier's schema-invalid calls and how many of them the validator caught, and the
same per BFCL category.  Writes benchmarks/results/tools.json and prints a Markdown summary.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
TIERS = ("smollm2-135m-instruct", "gemma-3-270m")
#: BFCL checker verdicts that say the call does not fit the function's signature (an argument of
#: the wrong type, a required one missing, arguments that are not JSON): the shape errors a
#: schema validator should catch, judged independently of ours.
SHAPE_ERRORS = ("type_error", "missing_required", "decode:arguments_not_json")


def _r(x: float | None) -> float | None:
    return None if x is None or not np.isfinite(x) else round(float(x), 4)


def companion() -> dict[str, dict[str, Any]]:
    """The requests and BFCL verdicts that ship beside the dataset, by prompt id."""
    from router.data import bundled_data_dir

    with gzip.open(bundled_data_dir() / "tools_bfcl.jsonl.gz", "rt", encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh]
    return {row["prompt_id"]: row for row in rows}


def shape_error(grade: dict[str, Any], tools: list[dict[str, Any]], response: str | None) -> bool:
    """Whether BFCL's verdict on an answer is a shape error (see :data:`SHAPE_ERRORS`), or the
    answer calls a function the request does not offer."""
    from router.backends.request import recorded_message

    kind = grade.get("error_type") or ""
    if any(k in kind for k in SHAPE_ERRORS):
        return True
    offered = {t["function"]["name"] for t in tools}
    return any(c.function.name not in offered for c in recorded_message(response).tool_calls or [])


def refusal_kind(reason: str | None) -> str:
    """The validator's reason for a refusal, in three kinds."""
    text = reason or ""
    if "not among the tools" in text:
        return "not an offered tool"
    if "is not JSON" in text:
        return "arguments not JSON"
    return "arguments do not fit the schema"


def first_tier_validity(frame: Any, extra: dict[str, dict[str, Any]], ids: set[str]) -> dict:
    """On the first tier's answers to ``ids``: how many call a tool, how many the validator
    refuses (schema-invalid), how many BFCL calls shape errors (irrelevance questions left out:
    BFCL does not check their arguments) and how many of those the validator caught, and the
    refusals BFCL graded right (false alarms); overall and per category."""
    rows = frame[(frame["model"] == TIERS[0]) & frame["prompt_id"].isin(ids)]
    out: dict[str, Any] = {}
    for category in ["all", *sorted(set(rows["task"]))]:
        sub = rows if category == "all" else rows[rows["task"] == category]
        counts: Counter[str] = Counter()
        reasons: Counter[str] = Counter()
        for pid, response, valid, score in zip(
            sub["prompt_id"], sub["response"], sub["valid"], sub["score"], strict=True
        ):
            grade = extra[pid]["grades"][TIERS[0]]
            if grade.get("error_type") in ("timeout", "server_error"):
                counts["failed_calls"] += 1
                continue
            counts["answers"] += 1
            counts["tool_calls"] += '"tool_calls"' in (response or "")
            refused = bool(valid == 0)
            if refused:
                counts["schema_invalid"] += 1
                reasons[refusal_kind(grade.get("validator"))] += 1
                counts["refused_but_bfcl_right"] += bool(score >= 0.5)
            tools = extra[pid]["request"].get("tools", [])
            if "irrelevance" not in extra[pid]["category"] and shape_error(grade, tools, response):
                counts["bfcl_shape_errors"] += 1
                counts["bfcl_shape_errors_caught"] += refused
        n, calls = counts["answers"], counts["tool_calls"]
        out[category] = {
            **{k: int(counts[k]) for k in ("answers", "failed_calls", "tool_calls")},
            "schema_invalid": int(counts["schema_invalid"]),
            "schema_invalid_share": _r(counts["schema_invalid"] / n) if n else None,
            "schema_invalid_share_of_calls": _r(counts["schema_invalid"] / calls)
            if calls
            else None,
            "refusal_reasons": dict(reasons),
            "bfcl_shape_errors": int(counts["bfcl_shape_errors"]),
            "bfcl_shape_errors_caught": int(counts["bfcl_shape_errors_caught"]),
            "refused_but_bfcl_right": int(counts["refused_but_bfcl_right"]),
        }
    return out


def per_category(result: Any, frame: Any) -> dict[str, Any]:
    """Per BFCL category on the test split: both tiers' accuracy, the oracle, and the fitted
    policy at its target with and without the validator stage (quality ratio, top-tier share,
    cost saved)."""
    from router import metrics as M

    model, test = result.model, result.test
    signals = model.signals_from_features(result.test_features)
    task = dict(zip(frame["prompt_id"], frame["task"], strict=False))
    categories = np.array([task[str(p)] for p in test.prompt_ids])
    valid = test.validity[:, :-1] if test.validity is not None else None
    runs = {
        name: model.policy_.run(
            signals, test.scores, test.costs, test.steps, model.target_, None, verdicts
        )
        for name, verdicts in (("with_validator", valid), ("without_validator", None))
    }
    out: dict[str, Any] = {}
    for category in sorted(set(categories)):
        idx = np.flatnonzero(categories == category)
        s, f = test.scores[idx, 0], test.scores[idx, -1]
        entry: dict[str, Any] = {
            "n_test": len(idx),
            "q_small": _r(s.mean()),
            "q_top": _r(f.mean()),
            "q_oracle": _r(np.maximum(s, f).mean()),
        }
        frontier_cost = float(test.costs[idx, -1].mean())
        for name, outcome in runs.items():
            quality = float(outcome.quality[idx].mean())
            entry[name] = {
                "quality": _r(quality),
                "quality_ratio": _r(quality / f.mean()) if f.mean() > 0 else None,
                "top_tier_share": _r(float((outcome.answer_tier[idx] == len(TIERS) - 1).mean())),
                "cost_saved": _r(M.cost_saved(float(outcome.cost[idx].mean()), frontier_cost)),
            }
        out[category] = entry
    return out


def validator_curves(result: Any, resamples: int, seed: int) -> dict[str, Any]:
    """The fitted policy's curve on the test split (``training.evaluate.sweep_curve``) walked
    with the validator stage and without it: APGR, the top-tier share and the cost saved where
    the curve first reaches 95% of the top tier's quality, with bootstrap intervals (each
    resample re-walks the curve)."""
    from router import metrics as M
    from training.evaluate import sweep_curve

    model, test = result.model, result.test
    signals = model.signals_from_features(result.test_features)
    valid = test.validity[:, :-1] if test.validity is not None else None

    def figures(idx: np.ndarray, verdicts: np.ndarray | None) -> dict[str, float]:
        scores, costs = test.scores[idx], test.costs[idx]
        q_s, q_f = float(scores[:, 0].mean()), float(scores[:, -1].mean())
        curve = sweep_curve(
            signals.subset(idx),
            scores,
            costs,
            model.tier_weights_,
            model.skip_tolerance,
            valid=None if verdicts is None else verdicts[idx],
        )
        share = M.share_at_quality(curve, 0.95 * q_f)
        cost = M.cost_at_share(curve, share) if np.isfinite(share) else float("nan")
        return {
            "apgr": M.apgr(curve, q_s, q_f),
            "share_at_95pct_quality": share,
            "cost_saved_at_95pct_quality": M.cost_saved(cost, float(costs[:, -1].mean())),
        }

    everyone = np.arange(len(test))
    draws = np.random.default_rng(seed).integers(0, len(test), size=(resamples, len(test)))
    out: dict[str, Any] = {}
    for name, verdicts in (("with_validator", valid), ("without_validator", None)):
        point = figures(everyone, verdicts)
        resampled = [figures(idx, verdicts) for idx in draws]  # one curve per resample
        entry: dict[str, Any] = {k: _r(v) for k, v in point.items()}
        for key in point:
            values = np.array([r[key] for r in resampled], dtype=np.float64)
            values = values[np.isfinite(values)]
            entry[f"{key}_ci95"] = (
                [_r(np.percentile(values, 2.5)), _r(np.percentile(values, 97.5))]
                if len(values)
                else [None, None]
            )
            entry[f"{key}_resamples_defined"] = len(values)
        out[name] = entry
    return out


def headline(report: dict[str, Any]) -> dict[str, Any]:
    base = report["baselines"]
    intervals = report["intervals"]
    main = "cascade_answer_aware" if report.get("cascade_answer_aware") else "router_pre_answer"
    return {
        "n_train": report["n_train"],
        "n_test": report["n_test"],
        "q_small": report["q_small"],
        "q_top": report["q_frontier"],
        "apgr": report["apgr"],
        "apgr_ci95": intervals.get(main, {}).get("apgr_ci95"),
        "router_pre_answer_apgr": report["router_pre_answer"]["apgr"],
        "router_pre_answer_ci95": intervals.get("router_pre_answer", {}).get("apgr_ci95"),
        "share_at_95pct_quality": report["share_at_95pct_quality"],
        "share_at_95pct_quality_ci95": intervals.get(main, {}).get("share_at_95pct_quality_ci95"),
        "cost_saved": report["cost_saved"],
        "roc_auc": report["roc_auc"],
        "baselines": {
            k: {m: v.get(m) for m in ("apgr", "share_at_95pct_quality")}
            | intervals.get("baselines", {}).get(k, {})
            for k, v in base.items()
            if "apgr" in v
        },
        "margin_over_best_baseline": report.get("margin_over_best_baseline"),
        "policy": {
            k: report["policy"].get(k)
            for k in ("target", "quality_ratio", "frontier_share", "cost_saved", "skip_share")
        },
        "validator": report["policy"].get("validator"),
        "certification": report.get("certification"),
    }


def _ci(pair: list[float | None] | None) -> str:
    if not pair or pair[0] is None or pair[1] is None:
        return "—"
    return f"[{pair[0]:.2f}, {pair[1]:.2f}]"


def _num(x: float | None, digits: int = 3) -> str:
    return "—" if x is None else f"{x:.{digits}f}"


def markdown(report: dict[str, Any]) -> str:
    """The tables of benchmarks/README.md ("Tool selection") from a report."""
    t = report["test"]
    lines = [
        f"Test split: {t['n_test']} questions (train {t['n_train']}); first-tier accuracy "
        f"{_num(t['q_small'])}, top tier {_num(t['q_top'])}; embedder `{report['embedder']}`.",
        "",
        "| ranking | APGR [95% CI] | share @95% top-tier quality [95% CI] |",
        "| --- | --- | --- |",
        f"| cascade (router) | {_num(t['apgr'])} {_ci(t['apgr_ci95'])} | "
        f"{_num(t['share_at_95pct_quality'])} {_ci(t['share_at_95pct_quality_ci95'])} |",
    ]
    for name, base in t["baselines"].items():
        lines.append(
            f"| {name} | {_num(base.get('apgr'))} {_ci(base.get('apgr_ci95'))} | "
            f"{_num(base.get('share_at_95pct_quality'))} "
            f"{_ci(base.get('share_at_95pct_quality_ci95'))} |"
        )
    curves = report["policy_curves_test"]
    lines += [
        "",
        "| fitted policy's curve | APGR [95% CI] | top-tier share @95% quality [95% CI] | "
        "cost saved @95% quality [95% CI] |",
        "| --- | --- | --- | --- |",
    ]
    for name, c in curves.items():
        lines.append(
            f"| {name.replace('_', ' ')} | {_num(c['apgr'])} {_ci(c['apgr_ci95'])} | "
            f"{_num(c['share_at_95pct_quality'])} {_ci(c['share_at_95pct_quality_ci95'])} | "
            f"{_num(c['cost_saved_at_95pct_quality'])} "
            f"{_ci(c['cost_saved_at_95pct_quality_ci95'])} |"
        )
    validity = report["first_tier_validity"]
    lines += [
        "",
        "| first tier's answers | answers | tool calls | schema-invalid (validator) | "
        "BFCL shape errors | of them caught | refused but BFCL-right |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for split, by_category in validity.items():
        for category, v in by_category.items():
            lines.append(
                f"| {split}: {category} | {v['answers']} | {v['tool_calls']} | "
                f"{v['schema_invalid']} ({_num(v['schema_invalid_share'], 2)}) | "
                f"{v['bfcl_shape_errors']} | {v['bfcl_shape_errors_caught']} | "
                f"{v['refused_but_bfcl_right']} |"
            )
    lines += [
        "",
        "| category (test) | n | first tier | top tier | oracle | policy with validator: "
        "quality ratio / top share / cost saved | without validator |",
        "| --- | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for category, c in report["per_category_test"].items():
        w, wo = c["with_validator"], c["without_validator"]
        lines.append(
            f"| {category} | {c['n_test']} | {_num(c['q_small'], 2)} | {_num(c['q_top'], 2)} | "
            f"{_num(c['q_oracle'], 2)} | {_num(w['quality_ratio'], 2)} / "
            f"{_num(w['top_tier_share'], 2)} / {_num(w['cost_saved'], 2)} | "
            f"{_num(wo['quality_ratio'], 2)} / {_num(wo['top_tier_share'], 2)} / "
            f"{_num(wo['cost_saved'], 2)} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples")
    parser.add_argument("--render", action="store_true", help="print the tables of tools.json")
    args = parser.parse_args()
    if args.render:
        print(markdown(json.loads((RESULTS / "tools.json").read_text())))
        return

    from router.data import bundled_dataset, load_outcomes
    from router.errors import TargetNotCertifiableError
    from router.policy import Target
    from router.settings import RouterSettings
    from training.pipeline import TrainConfig, train_and_evaluate

    settings = RouterSettings()
    frame = load_outcomes([bundled_dataset("tools")], models=list(TIERS))
    extra = companion()
    t = time.perf_counter()

    def run(target: Target) -> Any:
        return train_and_evaluate(
            TrainConfig(
                data=["tools"],
                tiers=TIERS,
                target=target,
                bootstrap=args.bootstrap,
                register=False,
                output_dir=RESULTS / "tools",
            ),
            settings,
            log=lambda m: print(f"[tools] {m}", flush=True),
        )

    refused: dict[str, Any] | None = None
    try:
        result = run(Target(quality_ratio=0.95))
    except TargetNotCertifiableError as exc:
        # a certified router refuses what its outcomes cannot back: train it at the best
        # target it can certify, and read the 95% point off the curves instead
        refused = {"target": exc.target, "message": str(exc), "alternative": exc.alternative}
        print(f"[tools] {exc}; training at {exc.alternative}", flush=True)
        if exc.alternative is None:
            raise
        alternative = Target.parse(exc.alternative)
        assert alternative is not None
        result = run(alternative)
    assert result.test is not None and result.test_features is not None
    test_ids = {str(p) for p in result.test.prompt_ids}
    report = {
        "command": " ".join(["benchmarks/bench_tools.py", *sys.argv[1:]]),
        "recorded": time.strftime("%Y-%m-%d %H:%M"),
        "embedder": settings.embedder,
        "tiers": list(TIERS),
        "questions": {
            str(k): int(v)
            for k, v in frame.drop_duplicates("prompt_id")["task"].value_counts().items()
        },
        "accuracy_all": {
            model: {
                str(k): _r(v)
                for k, v in frame[frame["model"] == model].groupby("task")["score"].mean().items()
            }
            for model in TIERS
        },
        "target_refused": refused,
        "test": headline(result.report),
        "policy_curves_test": validator_curves(result, min(args.bootstrap, 200), settings.seed),
        "first_tier_validity": {
            "test": first_tier_validity(frame, extra, test_ids),
            "all": first_tier_validity(frame, extra, set(frame["prompt_id"])),
        },
        "per_category_test": per_category(result, frame),
        "wall_s": round(time.perf_counter() - t, 1),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "tools.json").write_text(json.dumps(report, indent=2))
    print(markdown(report))


if __name__ == "__main__":
    main()
