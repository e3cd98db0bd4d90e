"""Evaluation of a fitted router on a held-out split, next to the baselines (docs/metrics.md)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from router import metrics as M
from router.errors import TargetNotCertifiableError
from router.features import N_INPUT_EXTRA
from router.model import CascadeModel, TableFeatures
from router.policy import CascadePolicy, CascadeSignals, Target, lambda_grid, walk_recorded

if TYPE_CHECKING:
    from router.data import OutcomeTable


def _f(x: float) -> float | None:
    return None if x is None or not math.isfinite(float(x)) else round(float(x), 6)


@dataclass
class CurveSet:
    """Named curves for the plot, plus the reference points."""

    curves: dict[str, M.Curve] = field(default_factory=dict)
    points: dict[str, tuple[float, float, float]] = field(default_factory=dict)


def curve_metrics(curve: M.Curve, q_s: float, q_f: float) -> dict[str, float | None]:
    """APGR, CPT(50/80/95%) and the frontier share at 95% of frontier quality of one curve."""
    return {
        "apgr": _f(M.apgr(curve, q_s, q_f)),
        "cpt50": _f(M.cpt(curve, q_s, q_f, 0.5)),
        "cpt80": _f(M.cpt(curve, q_s, q_f, 0.8)),
        "cpt95": _f(M.cpt(curve, q_s, q_f, 0.95)),
        "share_at_95pct_quality": _f(M.share_at_quality(curve, 0.95 * q_f)),
        "aiq": _f(M.aiq(curve.cost, curve.quality)),
    }


def sweep_curve(
    signals: CascadeSignals,
    scores: np.ndarray,
    costs: np.ndarray,
    weights: np.ndarray,
    skip_tolerance: float | None = None,
    opinion_bands: Sequence[tuple[float, float] | None] = (),
    opinion_costs: np.ndarray | None = None,
    valid: np.ndarray | None = None,
) -> M.Curve:
    """The N-tier policy curve: one operating point per cost weight (each source's opinions
    bought in its band of ``opinion_bands`` and charged; with ``valid``, the validator's
    verdicts, a refused answer escalates)."""
    points = []
    for lam in lambda_grid(signals, weights, size=200):
        out, _ = walk_recorded(
            signals,
            scores,
            costs,
            lam,
            weights,
            skip_tolerance=skip_tolerance,
            opinion_bands=opinion_bands,
            opinion_costs=opinion_costs,
            valid=valid,
        )
        s = out.summary()
        points.append((s["frontier_share"], s["quality"], s["cost"]))
    return M.policy_curve(points)


def _with_and_without_validator(
    model: CascadeModel,
    signals: CascadeSignals,
    test: OutcomeTable,
    target: Target,
    opinion_costs: np.ndarray | None,
    q_s: float,
    q_f: float,
) -> dict[str, Any]:
    """The realised operating point and the policy curve on recorded outcomes that carry the
    validator's verdicts, walked with the validator stage (refused answers escalate, as live)
    and without it; and the share of first-tier answers it refuses where it applies."""
    assert test.validity is not None
    valid = test.validity[:, :-1]
    frontier_cost = float(test.costs[:, -1].mean())
    out: dict[str, Any] = {}
    for name, verdicts in (("with_validator", valid), ("without_validator", None)):
        outcome = model.policy_.run(
            signals, test.scores, test.costs, test.steps, target, opinion_costs, verdicts
        )
        summary = outcome.summary()
        curve = sweep_curve(
            signals,
            test.scores,
            test.costs,
            model.tier_weights_,
            model.skip_tolerance,
            valid=verdicts,
        )
        out[name] = {
            "quality": _f(summary["quality"]),
            "quality_ratio": _f(summary["quality"] / q_f) if q_f else None,
            "cost_saved": _f(M.cost_saved(summary["cost"], frontier_cost)),
            "frontier_share": _f(summary["frontier_share"]),
            "apgr": curve_metrics(curve, q_s, q_f).get("apgr"),
        }
    first = valid[:, 0]
    constrained = np.isfinite(first)
    out["constrained_share"] = _f(float(constrained.mean()))
    out["refused_share"] = (
        _f(float((first[constrained] == 0).mean())) if constrained.any() else None
    )
    return out


def _bootstrap(
    fn: Callable[[np.ndarray], float], n: int, seed: int, resamples: int
) -> list[float | None]:
    lo, hi = M.bootstrap_interval(fn, n, n_resamples=resamples, seed=seed)
    return [_f(lo), _f(hi)]


def evaluate(
    model: CascadeModel,
    train: OutcomeTable,
    test: OutcomeTable,
    train_features: TableFeatures,
    test_features: TableFeatures,
    target: Target | None = None,
    seed: int = 0,
    bootstrap_resamples: int = 200,
    baselines: bool = True,
) -> tuple[dict[str, Any], CurveSet]:
    """Every number of docs/metrics.md for ``model`` on ``test``; baselines fit on ``train``."""
    target = target or model.target_
    scores, costs = test.scores, test.costs
    n_tiers = len(model.tiers)
    s, f = scores[:, 0], scores[:, -1]
    cs, cf = costs[:, 0], costs[:, -1]
    q_s, q_f = float(s.mean()), float(f.mean())
    signals = model.signals_from_features(test_features)
    has_post = 0 in model.post_models_
    curves = CurveSet()
    curves.points = {
        "always-small": (0.0, q_s, float(cs.mean())),
        "always-frontier": (1.0, q_f, float(cf.mean())),
    }

    pre_build, post_build = _curve_builders(model, signals, scores, costs)
    everyone = np.arange(len(s))
    pre_curve = pre_build(everyone)
    post_curve = post_build(everyone) if has_post else None
    policy_curve = sweep_curve(signals, scores, costs, model.tier_weights_, model.skip_tolerance)
    curves.curves["router (pre-answer)"] = pre_curve
    if post_curve is not None:
        curves.curves["cascade (answer-aware)"] = post_curve
    curves.curves["cascade policy (with skips)"] = policy_curve
    opinion_costs = model.opinion_costs(test)
    opinion_curves: dict[str, M.Curve] = {}
    opinion_policy_curve = None
    if signals.has_opinions and opinion_costs is not None:
        if n_tiers == 2:
            opinion_curves = _opinion_curves(model, signals, test, opinion_costs)
            curves.curves.update(opinion_curves)
        opinion_policy_curve = sweep_curve(
            signals,
            scores,
            costs,
            model.tier_weights_,
            model.skip_tolerance,
            model.policy_.operating(None).opinion_bands,
            opinion_costs,
        )
        curves.curves["cascade policy + second opinion (with skips)"] = opinion_policy_curve

    y_s = test.labels(0)
    pre_section: dict[str, Any] = curve_metrics(pre_curve, q_s, q_f) | {
        "roc_auc": _f(M.roc_auc(signals.pre[:, 0], y_s)),
        "ece": _f(M.expected_calibration_error(signals.pre[:, 0], y_s)),
        "roc_auc_next_tier": _f(M.roc_auc(signals.pre[:, 1], test.labels(1))),
    }
    main = pre_section
    post_section: dict[str, Any] | None = None
    if post_curve is not None:
        post_section = curve_metrics(post_curve, q_s, q_f) | {
            "roc_auc": _f(M.roc_auc(signals.post_self[:, 0], y_s)),
            "ece": _f(M.expected_calibration_error(signals.post_self[:, 0], y_s)),
        }
        main = post_section

    # realised operating point of the fitted policy at the target, on the test split
    outcome = model.policy_.run(signals, scores, costs, test.steps, target, opinion_costs)
    summary = outcome.summary()
    policy_section: dict[str, Any] = {
        "target": str(target),
        "quality": _f(summary["quality"]),
        "quality_ratio": _f(summary["quality"] / q_f) if q_f else None,
        "frontier_share": _f(summary["frontier_share"]),
        "cost_per_request": _f(summary["cost"]),
        "cost_saved": _f(M.cost_saved(summary["cost"], float(cf.mean()))),
        "skip_share": _f(summary["skip_share"]),
        "per_step_points": len(model.policy_.per_step_),
        "curve": curve_metrics(policy_curve, q_s, q_f),
    }
    if test.validity is not None:
        policy_section["validator"] = _with_and_without_validator(
            model, signals, test, target, opinion_costs, q_s, q_f
        )
    certification = certification_section(model, signals, test, target, opinion_costs, outcome)
    if signals.has_opinions:
        point = model.policy_.operating(None, target)
        sources = model.opinion_sources
        bands = {
            src.name: (
                None
                if k >= len(point.opinion_bands) or point.opinion_bands[k] is None
                else [_f(b) for b in point.opinion_bands[k]]  # type: ignore[union-attr]
            )
            for k, src in enumerate(sources)
        }
        policy_section["peers"] = list(model.peer_models)
        policy_section["opinion_sources"] = [src.label() for src in sources]
        policy_section["opinion_share"] = _f(summary["opinion_share"])
        policy_section["opinion_share_by_source"] = dict(
            zip(
                (src.name for src in sources),
                map(_f, outcome.source_shares(len(sources))),
                strict=True,
            )
        )
        policy_section["opinion_band"] = bands[sources[0].name]
        policy_section["opinion_bands"] = bands
        policy_section["without_opinions"] = _policy_without_opinions(
            model, signals, test, target, q_f
        )
        if opinion_policy_curve is not None:
            policy_section["curve_with_opinions"] = curve_metrics(opinion_policy_curve, q_s, q_f)

    # bootstrap intervals: each resample recomputes the curves (2 tiers: sorted deferral
    # curves; more tiers: the policy sweep, about 25 ms per curve on 2,400 prompts)
    intervals: dict[str, Any] = {}
    if bootstrap_resamples > 0:

        def interval(stat: Callable[[np.ndarray], float]) -> list[float | None]:
            return _bootstrap(stat, len(s), seed, bootstrap_resamples)

        pre_apgr = _curve_stat(pre_build, s, f, "apgr")
        intervals["router_pre_answer"] = {
            "apgr_ci95": interval(pre_apgr),
            "share_at_95pct_quality_ci95": interval(_curve_stat(pre_build, s, f, "share")),
        }
        if post_curve is not None:
            post_apgr = _curve_stat(post_build, s, f, "apgr")
            intervals["cascade_answer_aware"] = {
                "apgr_ci95": interval(post_apgr),
                "share_at_95pct_quality_ci95": interval(_curve_stat(post_build, s, f, "share")),
            }
            if opinion_curves:
                asked: list[tuple[str, int | None]] = [
                    (f"cascade_with_{src.name}", k) for k, src in enumerate(model.opinion_sources)
                ]
                asked += [("cascade_with_opinions", 0), ("cascade_opinion_policy", None)]
                for name, ask in asked:
                    gain, small_cost = _opinion_gain_and_cost(
                        model, signals, test, opinion_costs, ask
                    )
                    build = _deferral_builder(gain, s, f, small_cost, cf, cascade=True)
                    intervals[name] = {
                        "apgr_ci95": interval(_curve_stat(build, s, f, "apgr")),
                        "share_at_95pct_quality_ci95": interval(_curve_stat(build, s, f, "share")),
                    }
                gain_op, cost_op = _opinion_gain_and_cost(model, signals, test, opinion_costs, None)
                with_op = _curve_stat(
                    _deferral_builder(gain_op, s, f, cost_op, cf, cascade=True), s, f, "apgr"
                )
                intervals["apgr_gain_opinion_policy_minus_cascade_ci95"] = interval(
                    lambda idx: with_op(idx) - post_apgr(idx)
                )
            intervals["apgr_gain_cascade_minus_router_ci95"] = interval(
                lambda idx: post_apgr(idx) - pre_apgr(idx)
            )

    baseline_section: dict[str, Any] = {}
    margin_section: dict[str, Any] | None = None
    if baselines:
        base_scores = baseline_scores(train, test, train_features, test_features, seed)
        baseline_section, base_curves = evaluate_baselines(
            train, test, train_features, test_features, seed, base_scores
        )
        curves.curves.update(base_curves)
        if bootstrap_resamples > 0:
            intervals["baselines"] = _baseline_intervals(
                base_scores, scores, costs, seed, bootstrap_resamples
            )
        if n_tiers == 2:
            main_build = post_build if post_curve is not None else pre_build
            margin_section = margin_over_baselines(
                _curve_stat(main_build, s, f, "apgr"),
                base_scores,
                baseline_section,
                s,
                f,
                seed,
                bootstrap_resamples,
            )

    opinion_section: dict[str, Any] | None = None
    if opinion_curves and opinion_costs is not None and signals.op_self is not None:
        per_source: dict[str, Any] = {}
        for k, src in enumerate(model.opinion_sources):
            per_source[src.name] = {
                "label": src.label(),
                "models": list(src.models),
                "cost_per_request": _f(float(opinion_costs[:, k].mean())),
                "roc_auc": _f(M.roc_auc(signals.op_self[:, k], y_s)),
                "ece": _f(M.expected_calibration_error(signals.op_self[:, k], y_s)),
                "always": curve_metrics(opinion_curves[_always_curve_name(model, k)], q_s, q_f),
            }
        first = next(iter(per_source.values()))
        chosen = _opinion_choice(model, signals)
        opinion_section = {
            # the first source's figures at the top level (as before several sources existed)
            "peers": list(model.peer_models),
            "cost_per_opinion": first["cost_per_request"],
            "agreement_threshold": _f(model.scorer_.threshold),
            "roc_auc": first["roc_auc"],
            "ece": first["ece"],
            "always": first["always"],
            "sources": per_source,
            "fitted_band": curve_metrics(opinion_curves[FITTED_OPINION_CURVE], q_s, q_f)
            | {
                "opinion_share": _f(float((chosen >= 0).mean())),
                "opinion_share_by_source": {
                    name: _f(float((chosen == k).mean())) for k, name in enumerate(per_source)
                },
            },
        }

    report: dict[str, Any] = {
        "tiers": list(model.tiers),
        "n_train": len(train),
        "n_test": len(test),
        "q_small": _f(q_s),
        "q_frontier": _f(q_f),
        "cost_always_small": _f(float(cs.mean())),
        "cost_always_frontier": _f(float(cf.mean())),
        "apgr": main["apgr"],
        "cpt50": main["cpt50"],
        "cpt80": main["cpt80"],
        "cpt95": main["cpt95"],
        "share_at_95pct_quality": main["share_at_95pct_quality"],
        "roc_auc": main["roc_auc"],
        "ece": main["ece"],
        "cost_saved": policy_section["cost_saved"],
        "router_pre_answer": pre_section,
        "cascade_answer_aware": post_section,
        "second_opinion": opinion_section,
        "policy": policy_section,
        "certification": certification,
        "intervals": intervals,
        "baselines": baseline_section,
        "margin_over_best_baseline": margin_section,
    }
    return report, curves


def _baseline_intervals(
    base_scores: dict[str, np.ndarray],
    scores: np.ndarray,
    costs: np.ndarray,
    seed: int,
    resamples: int,
) -> dict[str, dict[str, list[float | None]]]:
    """Bootstrap intervals of the baselines' APGR and share at 95% of frontier quality (the
    same resamples as the router's: the same seed)."""
    s, f = scores[:, 0], scores[:, -1]
    cs, cf = costs[:, 0], costs[:, -1]
    ranked = {name: base_scores[name] for name in ("knn", "logreg", "small_fail_logreg")}
    ranked["oracle"] = M.oracle_escalation_score(s, f)
    builders: dict[str, CurveBuilder] = {
        name: _deferral_builder(gain, s, f, cs, cf, cascade=False) for name, gain in ranked.items()
    }
    builders["random"] = lambda idx: M.random_curve(s[idx], f[idx], cs[idx], cf[idx])
    return {
        name: {
            f"{what}_ci95": _bootstrap(_curve_stat(build, s, f, key), len(s), seed, resamples)
            for what, key in (("apgr", "apgr"), ("share_at_95pct_quality", "share"))
        }
        for name, build in builders.items()
    }


def _random_apgr(idx: np.ndarray) -> float:
    return 0.5


#: the baselines a router must beat (the oracle peeks at the outcomes; random is 0.5)
COMPARED_BASELINES = ("knn", "logreg", "small_fail_logreg", "random")


def margin_over_baselines(
    main_apgr: Callable[[np.ndarray], float],
    scores: dict[str, np.ndarray],
    baselines: dict[str, Any],
    s: np.ndarray,
    f: np.ndarray,
    seed: int,
    resamples: int,
) -> dict[str, Any]:
    """The router's APGR minus the best non-oracle baseline's (chosen on the whole test split),
    with a paired bootstrap interval (the same resampled prompts for both)."""
    values = {name: baselines[name]["apgr"] for name in COMPARED_BASELINES if name in baselines}
    best = max(values, key=lambda name: -math.inf if values[name] is None else values[name])
    everyone = np.arange(len(s))
    best_apgr: Callable[[np.ndarray], float]
    if best == "random":
        best_apgr = _random_apgr  # uniform random escalation: exactly 0.5 in expectation
    else:
        build = _deferral_builder(scores[best], s, f, np.zeros_like(s), np.zeros_like(f), False)
        best_apgr = _curve_stat(build, s, f, "apgr")
    out: dict[str, Any] = {
        "baseline": best,
        "baseline_apgr": _f(best_apgr(everyone)),
        "margin": _f(main_apgr(everyone) - best_apgr(everyone)),
    }
    if resamples > 0:
        out["margin_ci95"] = _bootstrap(
            lambda idx: main_apgr(idx) - best_apgr(idx), len(s), seed, resamples
        )
    return out


FITTED_OPINION_CURVE = "cascade + second opinion (fitted band)"


def _always_curve_name(model: CascadeModel, source: int) -> str:
    """The curve of asking one source on every request (one source: the historical name)."""
    if len(model.opinion_sources) == 1:
        return "cascade + second opinion (always)"
    return f"cascade + {model.opinion_sources[source].label()} (always)"


def _opinion_choice(model: CascadeModel, signals: CascadeSignals) -> np.ndarray:
    """Per prompt, the source the fitted (global) point asks (-1: none)."""
    point = model.policy_.operating(None)
    return np.asarray(point.opinion_source(signals.pre[:, 0]), dtype=int)


def _opinion_gain_and_cost(
    model: CascadeModel,
    signals: CascadeSignals,
    test: OutcomeTable,
    opinion_costs: np.ndarray | None,
    source: int | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Escalation score and first-step cost (small call + opinions bought) per prompt, asking
    ``source`` on every request, or (None) the source the fitted point picks."""
    assert opinion_costs is not None
    if source is None:
        chosen = _opinion_choice(model, signals)
    else:
        chosen = np.full(len(test), source, dtype=int)
    ask = chosen >= 0
    picked = np.maximum(chosen, 0)
    gain = np.where(ask, signals.opinion_gain(picked), signals.post_gain(0))
    paid = np.where(ask, opinion_costs[np.arange(len(test)), picked], 0.0)
    return gain, test.costs[:, 0] + paid


def _opinion_curves(
    model: CascadeModel, signals: CascadeSignals, test: OutcomeTable, opinion_costs: np.ndarray
) -> dict[str, M.Curve]:
    """Cascade curves with second opinions: each source asked always, and the sources the
    fitted point picks.  Each first-tier call pays its opinions too, so the cost axis
    includes them."""
    s, f, cf = test.scores[:, 0], test.scores[:, -1], test.costs[:, -1]
    asks: list[tuple[str, int | None]] = [
        (_always_curve_name(model, k), k) for k in range(len(model.opinion_sources))
    ]
    asks.append((FITTED_OPINION_CURVE, None))
    out = {}
    for name, source in asks:
        gain, small_cost = _opinion_gain_and_cost(model, signals, test, opinion_costs, source)
        out[name] = M.deferral_curve(gain, s, f, small_cost, cf, cascade=True)
    return out


CurveBuilder = Callable[[np.ndarray], M.Curve]


def _deferral_builder(
    gain: np.ndarray,
    s: np.ndarray,
    f: np.ndarray,
    cs: np.ndarray,
    cf: np.ndarray,
    cascade: bool,
) -> CurveBuilder:
    """The two-tier deferral curve of the prompts ``idx``, ranked by ``gain``."""

    def build(idx: np.ndarray) -> M.Curve:
        return M.deferral_curve(gain[idx], s[idx], f[idx], cs[idx], cf[idx], cascade=cascade)

    return build


def _curve_builders(
    model: CascadeModel, signals: CascadeSignals, scores: np.ndarray, costs: np.ndarray
) -> tuple[CurveBuilder, CurveBuilder]:
    """Builders of the router (pre-answer) and cascade (answer-aware) curves on a resample,
    made the way ``evaluate`` makes them on the whole test split."""
    s, f = scores[:, 0], scores[:, -1]
    cs, cf = costs[:, 0], costs[:, -1]
    if len(model.tiers) == 2:
        return (
            _deferral_builder(signals.pre_gain(0), s, f, cs, cf, cascade=False),
            _deferral_builder(signals.post_gain(0), s, f, cs, cf, cascade=True),
        )
    nan = np.full_like(signals.post_self, np.nan)
    pre_only = CascadeSignals(signals.pre, nan, nan.copy())
    plain = signals.without_opinions()
    weights = model.tier_weights_

    def pre(idx: np.ndarray) -> M.Curve:
        return sweep_curve(pre_only.subset(idx), scores[idx], costs[idx], weights)

    def post(idx: np.ndarray) -> M.Curve:
        return sweep_curve(plain.subset(idx), scores[idx], costs[idx], weights)

    return pre, post


def _curve_stat(
    build: CurveBuilder, s: np.ndarray, f: np.ndarray, what: str
) -> Callable[[np.ndarray], float]:
    """APGR (``what="apgr"``) or the share at 95% of frontier quality of a resampled curve."""

    def stat(idx: np.ndarray) -> float:
        c = build(idx)
        if what == "apgr":
            return M.apgr(c, float(s[idx].mean()), float(f[idx].mean()))
        return M.share_at_quality(c, 0.95 * float(f[idx].mean()))

    return stat


def _realised(outcome: Any, scores: np.ndarray, costs: np.ndarray) -> dict[str, float | None]:
    """Quality ratio, frontier share, cost per request and cost saved of a run on these rows."""
    s = outcome.summary()
    q_f, c_f = float(scores[:, -1].mean()), float(costs[:, -1].mean())
    return {
        "quality_ratio": _f(s["quality"] / q_f) if q_f else None,
        "frontier_share": _f(s["frontier_share"]),
        "cost_per_request": _f(s["cost"]),
        "cost_saved": _f(M.cost_saved(s["cost"], c_f)),
    }


def _holds(bound: dict[str, float], realised: dict[str, float | None]) -> dict[str, bool | None]:
    """Per certified constraint, whether the realised value on the test split meets it."""
    read = {
        "quality_ratio": ("quality_ratio", 1.0),
        "max_frontier_share": ("frontier_share", -1.0),
        "max_cost": ("cost_per_request", -1.0),
    }
    out: dict[str, bool | None] = {}
    for kind, value in bound.items():
        key, sign = read[kind]
        got = realised.get(key)
        out[kind] = None if got is None else bool(sign * (got - value) >= -1e-12)
    return out


def certification_section(
    model: CascadeModel,
    signals: CascadeSignals,
    test: OutcomeTable,
    target: Target,
    opinion_costs: np.ndarray | None,
    outcome: Any,
) -> dict[str, Any] | None:
    """The certificate of the point evaluated, its realised value on the test split, and the
    price of the guarantee: the same target fitted as routers did before certification (the
    cheapest point meeting it with one standard error to spare on the same calibration
    outcomes), run on the same test split.  None for an uncertified router."""
    fitted = model.policy_
    certificates = fitted.certificates(target)
    if not certificates:
        return None
    glob = certificates["global"]
    realised = _realised(outcome, test.scores, test.costs)
    steps = np.asarray(test.steps).astype(str)
    per_step: dict[str, Any] = {}
    for step, cert in certificates.items():
        if step == "global":
            continue
        rows = steps == step
        entry: dict[str, Any] = {
            "n_outcomes": cert.n,
            "bound": cert.bound,
            "level": _f(cert.level),
            "lam": cert.point.to_dict()["lam"],
            "trivial": cert.trivial,
            "calibration_estimate": {k: _f(v) for k, v in cert.estimate.items()},
            "n_test": int(rows.sum()),
        }
        if rows.any():
            run = fitted.run(
                signals.subset(rows),
                test.scores[rows],
                test.costs[rows],
                steps[rows],
                target,
                None if opinion_costs is None else opinion_costs[rows],
            )
            entry["realised"] = _realised(run, test.scores[rows], test.costs[rows])
        per_step[step] = entry
    uncertified = CascadePolicy(
        tiers=fitted.tiers,
        tier_weights=fitted.tier_weights,
        skip_tolerance=fitted.skip_tolerance,
        min_step_samples=fitted.min_step_samples,
        grid_size=fitted.grid_size,
        target=target,
        margin_z=fitted.margin_z,
        certify=None,
    ).fit(
        fitted.cal_signals_,
        fitted.cal_scores_,
        fitted.cal_costs_,
        fitted.cal_steps_,
        fitted.cal_opinion_costs_,
    )
    today = _realised(
        uncertified.run(signals, test.scores, test.costs, test.steps, target, opinion_costs),
        test.scores,
        test.costs,
    )
    price = (
        None
        if today["cost_saved"] is None or realised["cost_saved"] is None
        else _f(today["cost_saved"] - realised["cost_saved"])
    )
    return {
        "target": str(target),
        "delta": _f(glob.delta),
        "method": glob.method,
        "n_outcomes": glob.n,
        "n_selection": int(getattr(fitted, "selection_", np.zeros(0)).sum()),
        "groups": len(certificates),
        "level": _f(glob.level),
        "bound": glob.bound,
        "point": glob.point.to_dict(),
        "trivial": glob.trivial,
        "statement": glob.describe(),
        "calibration_estimate": {k: _f(v) for k, v in glob.estimate.items()},
        "realised": realised,
        "holds_on_test": _holds(glob.bound, realised),
        "per_step": per_step,
        "uncertified": today,
        "price_of_guarantee": price,
    }


def _policy_without_opinions(
    model: CascadeModel,
    signals: CascadeSignals,
    test: OutcomeTable,
    target: Target,
    q_f: float,
) -> dict[str, Any]:
    """The same target met without second opinions: a policy fitted on the same calibration
    split from the plain answer-aware probabilities, run on the test split."""
    fitted = model.policy_
    try:
        policy = CascadePolicy(
            tiers=fitted.tiers,
            tier_weights=fitted.tier_weights,
            skip_tolerance=fitted.skip_tolerance,
            min_step_samples=fitted.min_step_samples,
            grid_size=fitted.grid_size,
            target=target,
            margin_z=fitted.margin_z,
            certify=fitted.certify,
            delta=fitted.delta,
            selection_fraction=fitted.selection_fraction,
            seed=fitted.seed,
            table=False,
        ).fit(
            fitted.cal_signals_.without_opinions(),
            fitted.cal_scores_,
            fitted.cal_costs_,
            fitted.cal_steps_,
        )
    except TargetNotCertifiableError as exc:
        return {"not_certifiable": str(exc)}
    out = policy.run(signals.without_opinions(), test.scores, test.costs, test.steps, target)
    summary = out.summary()
    cf = float(test.costs[:, -1].mean())
    return {
        "quality_ratio": _f(summary["quality"] / q_f) if q_f else None,
        "frontier_share": _f(summary["frontier_share"]),
        "cost_per_request": _f(summary["cost"]),
        "cost_saved": _f(M.cost_saved(summary["cost"], cf)),
        "skip_share": _f(summary["skip_share"]),
    }


def baseline_scores(
    train: OutcomeTable,
    test: OutcomeTable,
    train_features: TableFeatures,
    test_features: TableFeatures,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Escalation scores of the test prompts by kNN, logistic regression and small-fail, each
    fitted on the training prompts' input embeddings (first tier → top tier); ``knn_k``: the
    k kNN chose (a 1-element array)."""
    from training.baselines import KNNScorer, LogRegScorer, SmallFailScorer

    X_train = train_features.inputs[:, N_INPUT_EXTRA:]
    X_test = test_features.inputs[:, N_INPUT_EXTRA:]
    train_scores = np.column_stack([train.scores[:, 0], train.scores[:, -1]])
    out: dict[str, np.ndarray] = {}
    for name, scorer in (
        ("knn", KNNScorer(seed=seed)),
        ("logreg", LogRegScorer(seed=seed)),
        ("small_fail_logreg", SmallFailScorer(seed=seed)),
    ):
        scorer.fit(X_train, train_scores)
        out[name] = scorer.escalation_score(X_test)
        if isinstance(scorer, KNNScorer):
            out["knn_k"] = np.array([scorer.k_])
    return out


def evaluate_baselines(
    train: OutcomeTable,
    test: OutcomeTable,
    train_features: TableFeatures,
    test_features: TableFeatures,
    seed: int = 0,
    scores: dict[str, np.ndarray] | None = None,
) -> tuple[dict[str, Any], dict[str, M.Curve]]:
    """Random, always-small/frontier, kNN and logistic regression on the same embeddings, oracle
    (``scores``: the baselines' escalation scores, if :func:`baseline_scores` already made them)."""
    from training.baselines import endpoint_points

    s, f = test.scores[:, 0], test.scores[:, -1]
    cs, cf = test.costs[:, 0], test.costs[:, -1]
    q_s, q_f = float(s.mean()), float(f.mean())
    if scores is None:
        scores = baseline_scores(train, test, train_features, test_features, seed)
    out: dict[str, Any] = {}
    curves: dict[str, M.Curve] = {}
    rand = M.random_curve(s, f, cs, cf)
    out["random"] = curve_metrics(rand, q_s, q_f)
    curves["random"] = rand
    for name in ("knn", "logreg", "small_fail_logreg"):
        c = M.deferral_curve(scores[name], s, f, cs, cf, cascade=False)
        out[name] = curve_metrics(c, q_s, q_f)
        curves[name] = c
    out["knn"]["k"] = int(scores["knn_k"][0])
    oracle = M.deferral_curve(M.oracle_escalation_score(s, f), s, f, cs, cf, cascade=False)
    out["oracle"] = curve_metrics(oracle, q_s, q_f) | {
        "quality_max": _f(float(oracle.quality.max()))
    }
    curves["oracle"] = oracle
    ends = endpoint_points(s, f, cs, cf)
    out["always_small"] = {k: _f(v) for k, v in ends["always_small"].items()}
    out["always_frontier"] = {k: _f(v) for k, v in ends["always_frontier"].items()}
    return out, curves


def plot_curves(curves: CurveSet, path: str | Path, title: str) -> Path:
    """A PNG with quality against frontier-call share and against dollars per request."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 5))
    styles = {"random": ":", "oracle": "--"}
    for name, c in curves.curves.items():
        ls = styles.get(name, "-")
        lw = 2.4 if name.startswith(("cascade", "router")) else 1.3
        ax1.plot(c.share, c.quality, ls, label=name, linewidth=lw)
        order = np.argsort(c.cost)
        ax2.plot(c.cost[order] * 1000, c.quality[order], ls, label=name, linewidth=lw)
    for name, (share, q, cost) in curves.points.items():
        ax1.scatter([share], [q], marker="o", s=50, zorder=5)
        ax1.annotate(name, (share, q), textcoords="offset points", xytext=(5, -12), fontsize=8)
        ax2.scatter([cost * 1000], [q], marker="o", s=50, zorder=5)
        ax2.annotate(
            name, (cost * 1000, q), textcoords="offset points", xytext=(5, -12), fontsize=8
        )
    ax1.set_xlabel("frontier-call share")
    ax1.set_ylabel("quality (mean score)")
    ax2.set_xlabel("cost per 1,000 requests (USD)")
    ax2.set_xscale("log")
    ax2.set_ylabel("quality (mean score)")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
    ax1.legend(fontsize=8, loc="lower right")
    fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
