"""Choices a model makes from out-of-fold predictions: booster capacity and the pre/post blend.

Every choice is scored on out-of-fold (OOF) predictions over the whole training split, so that
it reflects the data at hand rather than the noise of a small calibration split, and no row is
scored by a model that saw it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from router import metrics as M
from router.model.acceptance import AcceptanceModel
from router.model.folds import Folds

#: Candidate booster capacities (over the model's ``acceptance_params``), tried where the
#: training split is small: fewer, larger leaves with heavier L2 down to more, smaller ones.
CAPACITY_GRID: tuple[dict[str, Any], ...] = (
    {"num_leaves": 7, "min_child_samples": 80, "lambda_l2": 10.0},
    {},  # the acceptance parameters as given
    {"num_leaves": 31, "min_child_samples": 20, "lambda_l2": 1.0},
)
#: Candidate weights of the pre-answer probabilities in the answer-aware ones (1: the
#: answer-aware models are not used).
POST_BLEND_GRID: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)


@dataclass
class CrossFit:
    """One cross-fitted acceptance model: the final model, its OOF probabilities and, where
    several capacities were tried, each one's OOF log loss (index into the grid)."""

    model: AcceptanceModel
    oof: np.ndarray
    capacity: int = 0
    log_loss: dict[int, float] = field(default_factory=dict)

    def record(self) -> dict[str, Any]:
        """What the run records about this model's fit."""
        out: dict[str, Any] = {
            "fold_rounds": list(getattr(self.model, "fold_iterations_", [])),
            "rounds": int(self.model.best_iteration_),
        }
        if self.log_loss:
            out["capacity"] = self.capacity
            out["oof_log_loss"] = {str(k): round(v, 6) for k, v in self.log_loss.items()}
        return out


def log_loss(p: np.ndarray, y: np.ndarray) -> float:
    q = np.clip(np.asarray(p, dtype=np.float64), 1e-6, 1 - 1e-6)
    y = np.asarray(y, dtype=np.float64)
    return float(-np.mean(y * np.log(q) + (1 - y) * np.log(1 - q)))


def cross_fit(
    params: Mapping[str, Any],
    X: np.ndarray,
    y: np.ndarray,
    folds: Folds,
    grid: Sequence[Mapping[str, Any]] = ({},),
) -> CrossFit:
    """Cross-fit an :class:`AcceptanceModel` for every capacity in ``grid`` and keep the one
    with the lowest OOF log loss (ties: the earlier one)."""
    best: CrossFit | None = None
    losses: dict[int, float] = {}
    for index, variant in enumerate(grid):
        model = AcceptanceModel(**{**params, **variant})
        oof = model.fit_folds(X, y, folds)
        if len(grid) == 1:
            return CrossFit(model, oof)
        losses[index] = log_loss(oof, y)
        if best is None or losses[index] < losses[best.capacity] - 1e-12:
            best = CrossFit(model, oof, index)
        if model.booster_ is None:  # one class: every capacity is the base rate
            break
    assert best is not None
    best.log_loss = losses
    return best


def escalation_apgr(
    gain: np.ndarray,
    small: np.ndarray,
    large: np.ndarray,
    small_cost: np.ndarray | float = 0.0,
    large_cost: np.ndarray | float = 0.0,
    cascade: bool = False,
) -> float:
    """APGR of escalating prompts in descending ``gain`` (NaN where both tiers score alike)."""
    curve = M.deferral_curve(gain, small, large, small_cost, large_cost, cascade=cascade)
    return float(M.apgr(curve, float(np.mean(small)), float(np.mean(large))))


def router_score(scores: np.ndarray) -> Any:
    """Scores of pre-answer probabilities (n × tiers): the APGR of ranking escalation from the
    first tier to the top tier by their difference, on recorded ``scores``."""
    small, large = scores[:, 0], scores[:, -1]

    def score(p: np.ndarray) -> float:
        value = escalation_apgr(p[:, -1] - p[:, 0], small, large)
        return value if np.isfinite(value) else -np.inf

    return score


def choose_post_blend(
    pre: np.ndarray,
    post_self: Mapping[int, np.ndarray],
    post_next: Mapping[int, np.ndarray],
    scores: np.ndarray,
    costs: np.ndarray,
    grid: Sequence[float] = POST_BLEND_GRID,
) -> tuple[float, dict[str, float]]:
    """The weight of the pre-answer probabilities in the answer-aware ones whose blended gain
    ranks escalation best out of fold (the cascade's APGR, averaged over the tiers with
    answer-aware models); ties take the larger weight (more shrinkage)."""
    values: dict[float, float] = {}
    for w in grid:
        parts = []
        for i in post_self:
            gain = ((1 - w) * post_next[i] + w * pre[:, i + 1]) - (
                (1 - w) * post_self[i] + w * pre[:, i]
            )
            value = escalation_apgr(
                gain, scores[:, i], scores[:, i + 1], costs[:, i], costs[:, i + 1], cascade=True
            )
            if np.isfinite(value):
                parts.append(value)
        values[float(w)] = float(np.mean(parts)) if parts else -np.inf
    best = max(values, key=lambda w: (round(values[w], 9), w))
    return best, {f"{w:g}": v for w, v in values.items()}
