"""Learn-then-Test over a fixed path of operating points: which points a target is certified at.

The candidate points form one path, ordered by the cost weight ``lam`` from ``-inf`` (escalate
everything: always the top tier) to ``+inf`` (escalate nothing).  Each constraint of a target is
a bounded risk ``E[X] <= alpha`` on per-request losses ``X`` in [0, 1]:

* quality ratio ``r``: ``E[q - r f] >= 0`` (``q`` the answering tier's score, ``f`` the top
  tier's) is ``X = (r f - q + 1) / (1 + r)``, ``alpha = 1 / (1 + r)``;
* frontier share ``s``: ``X = 1[top tier called]``, ``alpha = s``;
* cost ``c``: ``X = cost / B``, ``alpha = c / B``, ``B`` the largest cost of calling every tier
  seen on the calibration outcomes (the guarantee assumes no request costs more).

Fixed-sequence testing walks the path from the end where the constraint holds by construction
towards the other end and stops at the first point whose p-value exceeds the level: quality
from always-frontier (``q = f``, so ``E[q - r f] = (1 - r) E[f] >= 0``: certified without a
test) towards cheaper points; share and cost from never-escalate towards dearer ones (never
escalating calls the top tier on no request).  Every point passed is certified, and with
probability at least ``1 - level`` *all* of them hold at once (the first true null in the
sequence is rejected with probability at most ``level``, and nothing after it is tested).
Several constraints: one sequence each at ``level / m``; the certified points are the
intersection.  The order is fixed before the outcomes are seen (it comes from the selection
rows), so the statement is a finite-sample one on i.i.d. outcomes.

Why not conformal risk control: it needs a loss that is monotone in the threshold for every
request, and a cascade's is not: escalating more can replace a right small answer with a wrong
frontier one, so one request's quality loss can go up as ``lam`` goes down.  Learn-then-Test
needs no monotonicity, only valid p-values.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from router.errors import ConfigurationError
from router.policy.certify.pvalues import pvalues
from router.policy.fitting import lambda_grid
from router.policy.rules import Band, Operating
from router.policy.signals import CascadeSignals
from router.policy.target import Target
from router.policy.walk import walk_recorded

#: the kind of each constraint: "ceiling" constraints are tested from the never-escalate end
QUALITY, SHARE, COST = "quality_ratio", "max_frontier_share", "max_cost"
#: columns of p-values computed at a time: the sequence usually stops well before the end
CHUNK = 24


@dataclass(frozen=True)
class CandidatePath:
    """The operating points Learn-then-Test walks, dearest first: point 0 escalates everything,
    the last point escalates nothing."""

    points: tuple[Operating, ...]

    def __len__(self) -> int:
        return len(self.points)

    @classmethod
    def fit(
        cls,
        signals: CascadeSignals,
        tier_weights: np.ndarray,
        skip_tolerance: float | None,
        grid_size: int,
        bands: Sequence[Band | None] = (),
    ) -> CandidatePath:
        """The path fitted on *selection* rows: cost weights at quantiles of their gains and, per
        weight, skip thresholds by the tolerance rule (which reads only the probabilities).
        With no rows: a data-free grid of weights and no skips."""
        n_below = int(tier_weights.shape[0])
        if len(signals) == 0:
            inner = np.unique(
                np.concatenate([np.linspace(-1.0, 1.0, grid_size) / w for w in tier_weights])
            )
            grid = np.concatenate([[-np.inf], inner, [np.inf]])
            return cls(tuple(Operating(float(lam), (0.0,) * n_below) for lam in grid))
        grid = lambda_grid(signals, tier_weights, grid_size)
        placeholder = np.zeros((len(signals), n_below + 1))
        points = []
        for lam in grid:
            if skip_tolerance is None:
                thresholds: tuple[float, ...] = (0.0,) * n_below
            else:
                _, thresholds = walk_recorded(
                    signals,
                    placeholder,
                    placeholder,
                    float(lam),
                    tier_weights,
                    skip_tolerance=skip_tolerance,
                    opinion_bands=bands,
                )
            points.append(Operating(float(lam), tuple(thresholds), tuple(bands)))
        return cls(tuple(points))

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The path as arrays (the opinion bands are the same at every point: saved once)."""
        return {
            "path_lam": np.array([p.lam for p in self.points], dtype=np.float64),
            "path_skip": np.array([p.skip_thresholds for p in self.points], dtype=np.float64),
        }

    @classmethod
    def from_arrays(
        cls, arrays: dict[str, np.ndarray], bands: Sequence[Band | None] = ()
    ) -> CandidatePath:
        skip = np.asarray(arrays["path_skip"], dtype=np.float64)
        return cls(
            tuple(
                Operating(float(lam), tuple(float(s) for s in row), tuple(bands))
                for lam, row in zip(np.asarray(arrays["path_lam"]), skip, strict=True)
            )
        )


@dataclass(frozen=True)
class PathOutcomes:
    """What every point of a path does on each tested request: (n, J) matrices."""

    quality: np.ndarray  # score of the answering tier
    top: np.ndarray  # the top tier was called
    cost: np.ndarray  # USD, opinions included
    frontier: np.ndarray  # (n,) the top tier's score
    cost_bound: float  # B: the largest cost of one request the cost certificate allows

    @property
    def n(self) -> int:
        return int(self.quality.shape[0])

    @classmethod
    def walk(
        cls,
        path: CandidatePath,
        signals: CascadeSignals,
        scores: np.ndarray,
        costs: np.ndarray,
        tier_weights: np.ndarray,
        cost_bound: float,
        opinion_costs: np.ndarray | None = None,
    ) -> PathOutcomes:
        """Run every point of ``path`` on recorded outcomes."""
        if len(scores) and (np.nanmin(scores) < 0.0 or np.nanmax(scores) > 1.0):
            raise ConfigurationError("certification needs scores in [0, 1]")
        n, width = len(scores), len(path)
        quality, cost = np.empty((n, width)), np.empty((n, width))
        top = np.empty((n, width), dtype=bool)
        for j, point in enumerate(path.points):
            out, _ = walk_recorded(
                signals,
                scores,
                costs,
                point.lam,
                tier_weights,
                skip_thresholds=point.skip_thresholds,
                opinion_bands=point.opinion_bands,
                opinion_costs=opinion_costs,
            )
            quality[:, j], cost[:, j], top[:, j] = out.quality, out.cost, out.top_called
        return cls(quality, top, cost, np.asarray(scores[:, -1], dtype=np.float64), cost_bound)

    def subset(self, rows: np.ndarray) -> PathOutcomes:
        q, top, cost = self.quality[rows], self.top[rows], self.cost[rows]
        return PathOutcomes(q, top, cost, self.frontier[rows], self.cost_bound)

    def means(self) -> PathMeans:
        """Per point, the mean quality, frontier share and cost on these requests."""
        empty = np.full(self.quality.shape[1], np.nan)
        if self.n == 0:
            return PathMeans(empty, empty.copy(), empty.copy(), float("nan"))
        return PathMeans(
            self.quality.mean(axis=0),
            self.top.mean(axis=0),
            self.cost.mean(axis=0),
            float(self.frontier.mean()),
        )


@dataclass(frozen=True)
class PathMeans:
    """Per point of a path, the means over the tested requests (what a certificate reports)."""

    quality: np.ndarray
    share: np.ndarray
    cost: np.ndarray
    frontier: float

    def at(self, j: int) -> dict[str, float]:
        """The estimates of point ``j``: quality ratio, frontier share, cost per request."""
        ratio = self.quality[j] / self.frontier if self.frontier > 0 else float("nan")
        return {
            "quality_ratio": float(ratio),
            "frontier_share": float(self.share[j]),
            "cost_per_request": float(self.cost[j]),
        }

    def to_array(self) -> np.ndarray:
        """(4, J): quality, share, cost, and the frontier's quality in every column."""
        return np.vstack(
            [self.quality, self.share, self.cost, np.full_like(self.quality, self.frontier)]
        )

    @classmethod
    def from_array(cls, array: np.ndarray) -> PathMeans:
        a = np.asarray(array, dtype=np.float64)
        return cls(a[0], a[1], a[2], float(a[3, 0]) if a.shape[1] else float("nan"))


def boundary(outcomes: PathOutcomes, kind: str, value: float, level: float, method: str) -> int:
    """Where one constraint's certified stretch of the path ends.

    Quality: the last certified index ``k`` (points ``0..k`` are certified; ``0`` always).
    Share and cost: the first certified index ``b`` (points ``b..J-1``; ``J`` when none).
    """
    return int(boundaries(outcomes, kind, value, np.array([level]), method)[0])


def boundaries(
    outcomes: PathOutcomes, kind: str, value: float, levels: np.ndarray, method: str
) -> np.ndarray:
    """:func:`boundary` at several levels at once (the running moments are shared)."""
    width = outcomes.quality.shape[1]
    levels = np.asarray(levels, dtype=np.float64)
    if kind == QUALITY:
        if value > 1.0:
            return np.full(len(levels), -1)
        order = np.arange(1, width)  # point 0 (always frontier) holds by construction
        scaled_top = value * outcomes.frontier[:, None]

        def quality_losses(cols: np.ndarray) -> np.ndarray:
            return (scaled_top - outcomes.quality[:, cols] + 1.0) / (1.0 + value)

        return _passed(order, quality_losses, 1.0 / (1.0 + value), levels, method)
    if kind == SHARE:
        never = width - 1
        trivial = not outcomes.top[:, never].any()  # never escalating calls no top tier
        order = np.arange(never - 1 if trivial else never, -1, -1)

        def share_losses(cols: np.ndarray) -> np.ndarray:
            return outcomes.top[:, cols].astype(np.float64)

        passed = _passed(order, share_losses, value, levels, method)
        return (never if trivial else width) - passed
    if kind == COST:
        bound = outcomes.cost_bound

        def cost_losses(cols: np.ndarray) -> np.ndarray:
            return np.minimum(outcomes.cost[:, cols] / bound, 1.0)

        alpha = value / bound if bound > 0 else 1.0
        order = np.arange(width - 1, -1, -1)
        return width - _passed(order, cost_losses, alpha, levels, method)
    raise ValueError(f"unknown constraint {kind!r}")


def _passed(
    order: np.ndarray, losses: Any, alpha: float, levels: np.ndarray, method: str
) -> np.ndarray:
    """Per level, how many leading hypotheses of ``order`` fixed-sequence testing rejects."""
    passed = np.zeros(len(levels), dtype=int)
    running = np.ones(len(levels), dtype=bool)
    for start in range(0, len(order), CHUNK):
        cols = order[start : start + CHUNK]
        p = pvalues(method, losses(cols), alpha, levels[running])
        failed = p > levels[running][:, None]
        first = np.where(failed.any(axis=1), failed.argmax(axis=1), len(cols))
        idx = np.flatnonzero(running)
        passed[idx] += first
        running[idx[first < len(cols)]] = False
        if not running.any():
            break
    return passed


def certified_mask(width: int, kind: str, edge: int) -> np.ndarray:
    """The points a constraint certifies, from its :func:`boundary`."""
    index = np.arange(width)
    return index <= edge if kind == QUALITY else index >= edge


def choose(mask: np.ndarray, target: Target, means: PathMeans) -> int | None:
    """The point to run among the certified ones: the cheapest when quality is constrained,
    else the best quality (ties: cheaper, then fewer top-tier calls); None when none is."""
    candidates = np.flatnonzero(mask)
    if len(candidates) == 0:
        return None
    cost, share = means.cost[candidates], means.share[candidates]
    quality = means.quality[candidates]
    if target.quality_ratio is not None:
        order = np.lexsort((share, cost))
    else:
        order = np.lexsort((share, cost, -quality))
    return int(candidates[order[0]])


@dataclass(frozen=True)
class Choice:
    """The outcome of certifying one target on one group of outcomes."""

    index: int | None  # the point chosen; None: nothing is certified
    mask: np.ndarray = field(repr=False)
    level: float  # the level each constraint was tested at

    def feasible(self, target: Target) -> bool:
        """False when nothing is certified, or when a quality target below 1 is certified only
        by always calling the top tier (no saving can be certified)."""
        if self.index is None:
            return False
        q = target.quality_ratio
        return not (q is not None and q < 1.0 and self.index == 0)


def certify_outcomes(
    outcomes: PathOutcomes,
    means: PathMeans,
    target: Target,
    delta: float,
    method: str,
) -> Choice:
    """Certify ``target`` on these outcomes at risk ``delta`` (split across its constraints)."""
    constraints = target.constraints()
    level = delta / len(constraints)
    width = outcomes.quality.shape[1]
    mask = np.ones(width, dtype=bool)
    for kind, value in constraints.items():
        edge = boundary(outcomes, kind, value, level, method)
        mask &= certified_mask(width, kind, edge)
    return Choice(choose(mask, target, means), mask, level)
