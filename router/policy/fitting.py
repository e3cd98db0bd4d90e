"""Choosing the operating point that meets a target on calibration outcomes."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import product
from typing import Any

import numpy as np

from router.policy.rules import Band, Operating
from router.policy.signals import CascadeSignals
from router.policy.target import Target
from router.policy.walk import walk_recorded


def lambda_grid(signals: CascadeSignals, tier_weights: np.ndarray, size: int = 300) -> np.ndarray:
    """Candidate cost weights: quantiles of the weighted post-answer gains, plus both extremes."""
    parts = [signals.post_gain(i) / tier_weights[i] for i in range(signals.post_self.shape[1])]
    if signals.has_opinions:
        parts.append(signals.opinion_gain() / tier_weights[0])
    gains = np.concatenate(parts)
    inner = np.unique(np.quantile(gains, np.linspace(0, 1, size))) if len(gains) else np.array([])
    return np.concatenate([[-np.inf], inner - 1e-12, [np.inf]])


def choose_operating_point(
    target: Target,
    signals: CascadeSignals,
    scores: np.ndarray,
    costs: np.ndarray,
    tier_weights: np.ndarray,
    skip_tolerance: float | None,
    grid_size: int = 300,
    margin_z: float = 1.0,
    opinion_costs: np.ndarray | None = None,
    bands: Sequence[tuple[Band | None, ...]] | None = None,
) -> Operating:
    """Pick the cost weight (and skip thresholds) that meets ``target`` on these outcomes.

    A constraint must hold with ``margin_z`` standard errors to spare on the calibration
    outcomes, so that the realised value on new traffic misses the target less often.
    With opinion signals and their costs, the opinion bands (one per source: never, or a band
    between quantiles of the pre-answer probability) are searched jointly with the cost weight;
    the opinions' cost counts in every candidate, so opinions are only bought where they pay.
    With several sources the band combinations are ranked on a coarse grid of cost weights and
    the best few refined on the full grid.  ``bands`` restricts the combinations tried (e.g. to
    the global one, for a step's own point).
    """
    n = len(scores)
    root_n = math.sqrt(max(n, 1))
    top = scores[:, -1]
    if not (signals.has_opinions and opinion_costs is not None):
        combos: list[tuple[Band | None, ...]] = [()]
    elif bands is None:
        options: list[Band | None] = [None, *opinion_bands(signals.pre[:, 0])]
        combos = [c for c in product(options, repeat=signals.n_sources) if _useful(c)]
    else:
        combos = [tuple(b) for b in bands]

    def candidates(combo: tuple[Band | None, ...], grid: np.ndarray) -> list[_Candidate]:
        out = []
        for lam in grid:
            outcome, thresholds = walk_recorded(
                signals,
                scores,
                costs,
                lam,
                tier_weights,
                skip_tolerance=skip_tolerance,
                opinion_bands=combo,
                opinion_costs=opinion_costs,
            )
            s = outcome.summary()
            # several constraints: the point is as feasible as its tightest one
            slacks = []
            if target.quality_ratio is not None:
                gap = outcome.quality - target.quality_ratio * top
                slacks.append(float(gap.mean() - margin_z * gap.std() / root_n))
            if target.max_frontier_share is not None:
                share = outcome.top_called.astype(float)
                spread = margin_z * share.std() / root_n
                slacks.append(float(target.max_frontier_share - share.mean() - spread))
            if target.max_cost is not None:
                cost = outcome.cost
                slacks.append(float(target.max_cost - cost.mean() - margin_z * cost.std() / root_n))
            slack = min(slacks)
            out.append(
                _Candidate(
                    float(lam),
                    thresholds,
                    s["quality"],
                    s["frontier_share"],
                    s["cost"],
                    slack,
                    combo,
                )
            )
        return out

    grid = lambda_grid(signals, tier_weights, grid_size)
    if len(combos) <= 16:
        pool = [c for combo in combos for c in candidates(combo, grid)]
    else:
        coarse = lambda_grid(signals, tier_weights, max(grid_size // 6, 20))
        best_per_combo = [
            max(candidates(combo, coarse), key=lambda c: c.rank(target)) for combo in combos
        ]
        best_per_combo.sort(key=lambda c: c.rank(target), reverse=True)
        pool = [c for b in best_per_combo[:4] for c in candidates(b.bands, grid)]
    best = max(pool, key=lambda c: c.rank(target))
    return Operating(best.lam, tuple(best.thresholds), best.bands)


@dataclass(frozen=True)
class _Candidate:
    """One simulated operating point on the calibration outcomes."""

    lam: float
    thresholds: tuple[float, ...]
    quality: float
    share: float
    cost: float
    slack: float  # how far the target's constraint holds (>= 0: feasible)
    bands: tuple[Band | None, ...]

    def rank(self, target: Target) -> tuple[Any, ...]:
        """Larger is better: a feasible point beats every infeasible one; among feasible
        points the cheapest (quality target) or the best quality (budget targets); among
        infeasible ones the best quality (quality target) or the cheapest (budget targets)."""
        feasible = self.slack >= -1e-12
        if target.quality_ratio is not None:
            if feasible:
                return (True, -self.cost, -self.share)
            return (False, self.quality, -self.cost)
        if feasible:
            return (True, self.quality, -self.cost)
        return (False, -self.cost, -self.share)


def _useful(combo: tuple[Band | None, ...]) -> bool:
    """False for combinations where a later source's band is wholly covered by an earlier
    one's (its opinions would never be bought: the same point as without that band)."""
    for k, band in enumerate(combo):
        if band is None:
            continue
        for earlier in combo[:k]:
            if earlier is not None and earlier[0] <= band[0] and band[1] <= earlier[1]:
                return False
    return True


def opinion_bands(
    p_pre: np.ndarray, quantiles: Sequence[float] = (0.2, 0.4, 0.6, 0.8)
) -> list[tuple[float, float]]:
    """Candidate bands of the pre-answer probability where second opinions are bought."""
    if len(p_pre) == 0:
        return [(0.0, math.inf)]
    cuts = [0.0, *np.unique(np.quantile(p_pre, quantiles)).tolist(), math.inf]
    return [(float(lo), float(hi)) for k, lo in enumerate(cuts) for hi in cuts[k + 1 :]]
