"""The promotion gate: a challenger replaces the champion only when it is measurably better.

Both versions are scored on the same data:

* the *frozen evaluation set*: a seeded held-out split of fully labelled recorded outcomes
  (default: 20% of the bundled MMLU-Pro prompts, seed 0; its digest goes to the run), never
  trained on by any version retrained here;
* a *held-out slice of recent feedback*: the latest labelled requests of the window, kept out
  of the challenger's training.  Each label judges one tier, so the slice is scored by the
  Brier score of the pre-answer P(returned tier accepted); where the slice's inputs have
  recorded outcomes for every tier (replay data), its APGR is computed as well.

The challenger passes when, on the frozen set, its ``metric`` (default APGR) beats the
champion's by ``margin``, its ECE is not worse by more than ``ece_tolerance``, and its realised
miss of the target (quality ratio short of it, frontier share or cost above it) is not worse by
more than ``target_tolerance``; and on the feedback slice it is not worse by more than
``feedback_tolerance``.  Without a champion, it must beat a random router (APGR 0.5) by
``margin``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from router import metrics as M
from router.data import OutcomeTable
from router.embedders import Embedder
from router.errors import ConfigurationError
from router.model import CascadeModel
from router.policy import Target

__all__ = ["Check", "GateConfig", "GateDecision", "ModelScore", "decide", "score_model"]

#: APGR of a router that escalates at random (docs/metrics.md)
RANDOM_APGR = 0.5
#: metrics the gate can compare (frozen-set numbers of :func:`score_model`)
GATE_METRICS = (
    "apgr",
    "router_pre_answer_apgr",
    "cost_saved",
    "roc_auc",
    "cpt50",
    "cpt80",
    "share_at_95pct_quality",
)
#: metrics where lower is better
_LOWER_IS_BETTER = frozenset({"ece", "cpt50", "cpt80", "cpt95", "share_at_95pct_quality"})


@dataclass(frozen=True)
class GateConfig:
    """What the challenger must show to be promoted."""

    metric: str = "apgr"
    margin: float = 0.005
    ece_tolerance: float = 0.02
    target_tolerance: float = 0.02
    feedback_tolerance: float = 0.02
    min_feedback_rows: int = 200  # fully labelled held-out rows needed for a feedback APGR

    def __post_init__(self) -> None:
        if self.metric not in GATE_METRICS:
            raise ConfigurationError(
                f"unknown gate metric {self.metric!r}; use one of {', '.join(GATE_METRICS)}"
            )


@dataclass
class ModelScore:
    """One version's numbers on the frozen evaluation set and the feedback slice."""

    frozen: dict[str, float | None]
    feedback: dict[str, float | None] = field(default_factory=dict)
    #: per-label squared error on the feedback slice (for the paired comparison)
    feedback_errors: np.ndarray | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {"frozen": dict(self.frozen), "feedback": dict(self.feedback)}


@dataclass(frozen=True)
class Check:
    name: str
    challenger: float | None
    champion: float | None
    rule: str
    passed: bool


@dataclass
class GateDecision:
    """The verdict and every number behind it."""

    promote: bool
    checks: list[Check]
    challenger: ModelScore
    champion: ModelScore | None
    config: GateConfig

    def to_dict(self) -> dict[str, Any]:
        return {
            "promote": self.promote,
            "checks": [asdict(c) for c in self.checks],
            "challenger": self.challenger.to_dict(),
            "champion": None if self.champion is None else self.champion.to_dict(),
            "config": asdict(self.config),
        }

    def metrics(self) -> dict[str, float]:
        """Flat MLflow metrics: ``gate.challenger.frozen.apgr``, ``gate.promote``, ..."""
        out: dict[str, float] = {"gate.promote": float(self.promote)}
        for who, score in (("challenger", self.challenger), ("champion", self.champion)):
            if score is None:
                continue
            for part in ("frozen", "feedback"):
                for key, value in getattr(score, part).items():
                    if value is not None and math.isfinite(value):
                        out[f"gate.{who}.{part}.{key}"] = float(value)
        return out

    def report(self) -> str:
        """A readable report of the decision."""
        lines = [
            f"gate: {'PROMOTE' if self.promote else 'KEEP CHAMPION'} "
            f"(metric {self.config.metric}, margin {self.config.margin:g})",
            f"{'check':<28} {'challenger':>11} {'champion':>11}  rule",
        ]
        for c in self.checks:
            lines.append(
                f"{c.name:<28} {_fmt(c.challenger):>11} {_fmt(c.champion):>11}  "
                f"{c.rule}  {'ok' if c.passed else 'FAILED'}"
            )
        return "\n".join(lines)


def _fmt(x: float | None) -> str:
    return "—" if x is None else f"{x:.4f}"


def _num(x: Any) -> float | None:
    if x is None:
        return None
    value = float(x)
    return value if math.isfinite(value) else None


def target_miss(target: Target, policy: dict[str, Any]) -> float | None:
    """How far the realised operating point falls short of the target (0 when met); with
    several constraints, the largest shortfall (a cost's relative to the budget)."""
    misses: list[float] = []
    if target.quality_ratio is not None:
        realised = _num(policy.get("quality_ratio"))
        if realised is None:
            return None
        misses.append(max(0.0, target.quality_ratio - realised))
    if target.max_frontier_share is not None:
        realised = _num(policy.get("frontier_share"))
        if realised is None:
            return None
        misses.append(max(0.0, realised - target.max_frontier_share))
    if target.max_cost is not None:
        realised = _num(policy.get("cost_per_request"))
        if realised is None or target.max_cost <= 0:
            return None
        misses.append(max(0.0, realised - target.max_cost) / target.max_cost)
    return max(misses)


def score_model(
    model: CascadeModel,
    embedder: Embedder,
    frozen: OutcomeTable,
    target: Target,
    *,
    feedback_table: OutcomeTable | None = None,
    feedback_labels: tuple[list[str], list[str], list[str], np.ndarray] | None = None,
    min_feedback_rows: int = 200,
    seed: int = 0,
) -> ModelScore:
    """Score ``model`` on the frozen set (and on the feedback slice when given).

    ``feedback_labels`` is ``(texts, steps, returned tiers, accepted)`` of the slice;
    ``feedback_table`` its rows with every tier's outcome (for APGR), if any.
    """
    from training.evaluate import evaluate

    # without second opinions: the frozen set and the feedback hold none (a champion that
    # buys them is scored on its answer-aware stage, as a challenger retrained from feedback)
    feats = model.featurize(frozen, embedder, opinions=False)
    report, _ = evaluate(
        model, frozen, frozen, feats, feats, target, seed, bootstrap_resamples=0, baselines=False
    )
    policy = report["policy"]
    frozen_scores: dict[str, float | None] = {
        "apgr": _num(report.get("apgr")),
        "router_pre_answer_apgr": _num(report["router_pre_answer"].get("apgr")),
        "cpt50": _num(report.get("cpt50")),
        "cpt80": _num(report.get("cpt80")),
        "share_at_95pct_quality": _num(report.get("share_at_95pct_quality")),
        "roc_auc": _num(report.get("roc_auc")),
        "ece": _num(report.get("ece")),
        "cost_saved": _num(policy.get("cost_saved")),
        "quality_ratio": _num(policy.get("quality_ratio")),
        "frontier_share": _num(policy.get("frontier_share")),
        "target_miss": target_miss(target, policy),
        "n": float(len(frozen)),
    }
    fb: dict[str, float | None] = {}
    if feedback_labels is not None and len(feedback_labels[0]) > 0:
        texts, steps, tiers, accepted = feedback_labels
        emb = model.embed_inputs(embedder, texts)
        probs = model.pre_probabilities(model.input_matrix(texts, steps, emb))
        index = {t: i for i, t in enumerate(model.tiers)}
        p = np.array([probs[r, index[t]] for r, t in enumerate(tiers)])
        y = np.asarray(accepted, dtype=float)
        errors = (p - y) ** 2
        fb["brier"] = float(np.mean(errors))
        fb["ece"] = _num(M.expected_calibration_error(p, y.astype(int)))
        fb["n_labels"] = float(len(y))
    if feedback_table is not None and len(feedback_table) >= min_feedback_rows:
        f_feats = model.featurize(feedback_table, embedder, opinions=False)
        f_report, _ = evaluate(
            model,
            feedback_table,
            feedback_table,
            f_feats,
            f_feats,
            target,
            seed,
            bootstrap_resamples=0,
            baselines=False,
        )
        fb["apgr"] = _num(f_report.get("apgr"))
        fb["n_complete"] = float(len(feedback_table))
    return ModelScore(frozen_scores, fb, errors if feedback_labels is not None else None)


def decide(challenger: ModelScore, champion: ModelScore | None, config: GateConfig) -> GateDecision:
    """Apply the gate's rules (module docstring) to two scores."""
    checks: list[Check] = []
    metric = config.metric
    lower = metric in _LOWER_IS_BETTER
    c_value = challenger.frozen.get(metric)
    if champion is None:
        bar = RANDOM_APGR if metric in ("apgr", "router_pre_answer_apgr") else None
        passed = c_value is not None and (bar is None or c_value >= bar + config.margin)
        rule = f">= random {bar} + {config.margin:g}" if bar is not None else "defined"
        checks.append(Check(f"frozen {metric}", c_value, bar, rule, passed))
        return GateDecision(all(c.passed for c in checks), checks, challenger, None, config)

    h_value = champion.frozen.get(metric)
    if c_value is None or h_value is None:
        passed = False
    elif lower:
        passed = c_value <= h_value - config.margin
    else:
        passed = c_value >= h_value + config.margin
    op = "<=" if lower else ">="
    sign = "-" if lower else "+"
    checks.append(
        Check(
            f"frozen {metric}",
            c_value,
            h_value,
            f"{op} champion {sign} {config.margin:g}",
            passed,
        )
    )

    def not_worse(name: str, c: float | None, h: float | None, tol: float, lower: bool) -> None:
        if c is None or h is None:
            checks.append(Check(name, c, h, "skipped: not measured", True))
            return
        ok = c <= h + tol if lower else c >= h - tol
        rule = f"<= champion + {tol:g}" if lower else f">= champion - {tol:g}"
        checks.append(Check(name, c, h, rule, ok))

    not_worse(
        "frozen ece",
        challenger.frozen.get("ece"),
        champion.frozen.get("ece"),
        config.ece_tolerance,
        True,
    )
    not_worse(
        "frozen target miss",
        challenger.frozen.get("target_miss"),
        champion.frozen.get("target_miss"),
        config.target_tolerance,
        True,
    )
    checks.append(
        Check(
            "frozen frontier share",
            challenger.frozen.get("frontier_share"),
            champion.frozen.get("frontier_share"),
            "reported",
            True,
        )
    )
    # feedback Brier: a paired comparison on the same labels; noise (2 standard errors of the
    # mean paired difference) is allowed on top of the tolerance, so a small slice cannot veto
    c_err, h_err = challenger.feedback_errors, champion.feedback_errors
    if c_err is not None and h_err is not None and len(c_err) == len(h_err) and len(c_err) > 1:
        diff = np.asarray(c_err) - np.asarray(h_err)
        noise = 2.0 * float(diff.std(ddof=1)) / math.sqrt(len(diff))
        allowed = config.feedback_tolerance + noise
        c_b, h_b = challenger.feedback.get("brier"), champion.feedback.get("brier")
        checks.append(
            Check(
                "feedback brier",
                c_b,
                h_b,
                f"<= champion + {config.feedback_tolerance:g} + 2 SE ({noise:.4f})",
                float(diff.mean()) <= allowed,
            )
        )
    else:
        not_worse(
            "feedback brier",
            challenger.feedback.get("brier"),
            champion.feedback.get("brier"),
            config.feedback_tolerance,
            True,
        )
    not_worse(
        "feedback apgr",
        challenger.feedback.get("apgr"),
        champion.feedback.get("apgr"),
        config.feedback_tolerance,
        False,
    )
    return GateDecision(all(c.passed for c in checks), checks, challenger, champion, config)
