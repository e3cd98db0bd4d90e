"""The cascade walked over recorded outcomes: every request's tier, quality and cost."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from router.policy.rules import Band, Operating, escalates, skips
from router.policy.signals import CascadeSignals


@dataclass
class Outcome:
    """Per-prompt result of running a policy over recorded outcomes."""

    answer_tier: np.ndarray
    quality: np.ndarray
    cost: np.ndarray
    top_called: np.ndarray
    skipped: np.ndarray  # (n, T-1) bool
    asked: np.ndarray | None = None  # (n,) bool: second opinions bought
    source: np.ndarray | None = None  # (n,) int: the opinion source asked, -1 where none

    def summary(self) -> dict[str, float]:
        n = len(self.quality)
        return {
            "quality": float(self.quality.mean()) if n else float("nan"),
            "frontier_share": float(self.top_called.mean()) if n else float("nan"),
            "cost": float(self.cost.mean()) if n else float("nan"),
            "skip_share": float(self.skipped.any(axis=1).mean()) if n else 0.0,
            "opinion_share": float(self.asked.mean()) if n and self.asked is not None else 0.0,
        }

    def source_shares(self, n_sources: int) -> list[float]:
        """Per opinion source, the share of requests that bought its opinions."""
        n = len(self.quality)
        if not n or self.source is None or self.asked is None:
            return [0.0] * n_sources
        return [float((self.asked & (self.source == k)).mean()) for k in range(n_sources)]


def walk_recorded(
    signals: CascadeSignals,
    scores: np.ndarray,
    costs: np.ndarray,
    lam: float,
    tier_weights: np.ndarray,
    skip_thresholds: Sequence[float] | None = None,
    skip_tolerance: float | None = None,
    min_skip_count: int = 20,
    opinion_bands: Sequence[Band | None] = (),
    opinion_costs: np.ndarray | None = None,
    valid: np.ndarray | None = None,
) -> tuple[Outcome, tuple[float, ...]]:
    """Run the cascade on recorded outcomes; fit skip thresholds on the way if asked.

    The rules are those of the live walk (:mod:`router.policy.rules`).  With ``valid`` (the
    validator's verdict on each recorded answer below the top, (n, T-1) or (n,) for the first
    tier alone: 1 valid, 0 refused, NaN unconstrained), a refused answer escalates whatever its
    gain, as the validator stage does live.

    With ``skip_tolerance`` set, the skip threshold of each tier is the largest pre-answer
    probability below which at most that share of the calls reaching the tier were accepted.
    With ``opinion_bands`` (and signals with opinions), a first-tier call whose pre-answer
    probability lies in a source's band also buys that source's opinions (``opinion_costs``:
    per prompt and source) and decides on the opinion-aware gain.
    """
    n, n_tiers = scores.shape
    active = np.ones(n, dtype=bool)
    answer_tier = np.full(n, n_tiers - 1)
    cost = np.zeros(n)
    skipped = np.zeros((n, n_tiers - 1), dtype=bool)
    asked = np.zeros(n, dtype=bool)
    fitted: list[float] = []
    source = np.full(n, -1, dtype=int)
    if signals.has_opinions and any(b is not None for b in opinion_bands):
        bands = tuple(opinion_bands)[: signals.n_sources]
        source = Operating(lam, (), bands).opinion_source(signals.pre[:, 0])
    in_band = source >= 0
    chosen = np.maximum(source, 0)
    verdicts = None if valid is None else np.asarray(valid, dtype=np.float64).reshape(n, -1)
    for i in range(n_tiers - 1):
        gain = signals.post_gain(i)
        if i == 0 and in_band.any():
            gain = np.where(in_band, signals.opinion_gain(chosen), gain)
        tier_valid = None if verdicts is None or i >= verdicts.shape[1] else verdicts[:, i]
        escalate = escalates(gain, lam, tier_weights[i], tier_valid)
        if skip_tolerance is not None:
            threshold = fit_skip_threshold(
                signals.pre[active, i], ~escalate[active], skip_tolerance, min_skip_count
            )
        else:
            threshold = float(skip_thresholds[i]) if skip_thresholds is not None else 0.0
        fitted.append(threshold)
        skip = active & skips(signals.pre[:, i], threshold)
        call = active & ~skip
        cost += np.where(call, costs[:, i], 0.0)
        if i == 0 and in_band.any():
            asked = call & in_band
            if opinion_costs is not None:
                per_source = np.asarray(opinion_costs, dtype=np.float64).reshape(n, -1)
                cost += np.where(asked, per_source[np.arange(n), chosen], 0.0)
        accept = call & ~escalate
        answer_tier[accept] = i
        skipped[:, i] = skip
        active &= ~accept
    cost += np.where(active, costs[:, -1], 0.0)
    quality = scores[np.arange(n), answer_tier]
    outcome = Outcome(answer_tier, quality, cost, active.copy(), skipped, asked, source)
    return outcome, tuple(fitted)


def fit_skip_threshold(
    pre: np.ndarray, accepted: np.ndarray, tolerance: float, min_count: int = 20
) -> float:
    """Largest p such that, among prompts with pre-answer P < p, at most ``tolerance`` accepted."""
    if len(pre) < min_count:
        return 0.0
    order = np.argsort(pre, kind="stable")
    p_sorted = pre[order]
    rate = np.cumsum(accepted[order]) / np.arange(1, len(pre) + 1)
    ok = np.flatnonzero((rate <= tolerance) & (np.arange(1, len(pre) + 1) >= min_count))
    if len(ok) == 0:
        return 0.0
    k = int(ok[-1])
    if k + 1 < len(p_sorted):
        return float((p_sorted[k] + p_sorted[k + 1]) / 2)
    return float(p_sorted[k] + 1e-9)
