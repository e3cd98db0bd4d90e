"""The cascade policy: when to skip, accept or escalate, fitted to a target the user states.

At each tier ``i`` below the top the policy

* **skips** tier ``i`` when its pre-answer acceptance probability is hopeless
  (below ``skip_threshold``: on the calibration split, nearly all such answers were escalated);
* otherwise calls it, then **escalates** when the expected gain of the next tier,
  ``P(next accepted | x, answer) - P(this accepted | x, answer)``, exceeds ``lam`` times the next
  tier's relative cost; else **accepts**.

At the first tier, a model trained with opinion sources may also buy **second opinions**, asked
in parallel with the first answer: a cheap peer's answer to the same input, or ``k`` extra
samples of the first tier's own model.  Each source has a fitted band of the pre-answer
probability (where its opinion can change the decision); a request buys the opinions of the
first source whose band holds its pre-answer probability, and none outside every band.  There
the answer-aware probabilities that also see the agreement between the answers replace the plain
ones, and the opinions' cost is charged.

``lam`` is one Lagrangian weight on cost: sweeping it traces the quality–cost curve, and fitting
a :class:`Target` picks it on the calibration split, per step kind where the data allows.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from itertools import product
from typing import Any

import numpy as np

from router.errors import ConfigurationError, NotFittedError


@dataclass(frozen=True)
class Target:
    """What the user asks of the cascade; exactly one field is set.

    * ``quality_ratio``: reach this share of the top tier's quality (e.g. 0.95);
    * ``max_frontier_share``: call the top tier on at most this share of requests;
    * ``max_cost``: spend at most this many USD per request on average.
    """

    quality_ratio: float | None = None
    max_frontier_share: float | None = None
    max_cost: float | None = None

    def __post_init__(self) -> None:
        set_fields = [k for k, v in asdict(self).items() if v is not None]
        if len(set_fields) != 1:
            raise ConfigurationError(
                "a target sets exactly one of quality_ratio, max_frontier_share, max_cost"
            )
        value = float(getattr(self, set_fields[0]))
        if not math.isfinite(value) or value < 0:
            raise ConfigurationError(f"target {set_fields[0]} must be a finite number >= 0")
        if set_fields[0] != "max_cost" and value > 1:
            raise ConfigurationError(f"target {set_fields[0]} must lie in [0, 1], got {value}")

    @classmethod
    def parse(cls, text: str | Target | None) -> Target | None:
        """``"quality=0.95"``, ``"share=0.2"`` or ``"cost=0.002"`` (also full field names)."""
        if text is None or isinstance(text, Target):
            return text
        match = re.fullmatch(r"\s*([a-z_]+)\s*[=:]\s*([0-9.eE+-]+)\s*", text)
        aliases = {
            "quality": "quality_ratio",
            "quality_ratio": "quality_ratio",
            "share": "max_frontier_share",
            "max_frontier_share": "max_frontier_share",
            "frontier_share": "max_frontier_share",
            "cost": "max_cost",
            "max_cost": "max_cost",
        }
        if not match or match.group(1) not in aliases:
            raise ConfigurationError(
                f"cannot read target {text!r}: use quality=0.95, share=0.2 or cost=0.002"
            )
        try:
            value = float(match.group(2))
        except ValueError as exc:
            raise ConfigurationError(f"target value {match.group(2)!r} is not a number") from exc
        return cls(**{aliases[match.group(1)]: value})

    def __str__(self) -> str:
        for key, value in asdict(self).items():
            if value is not None:
                return f"{key}={value:g}"
        return "none"  # pragma: no cover


@dataclass
class CascadeSignals:
    """What the policy sees for each prompt, offline or live.

    ``pre[:, t]``: P(tier t accepted | input) for every tier; ``post_self[:, i]`` and
    ``post_next[:, i]``: P(tier i accepted | input, tier i's answer) and P(tier i+1 accepted | the
    same), for each tier below the top (NaN where no answer-aware model exists: the pre-answer
    probabilities stand in).
    """

    pre: np.ndarray
    post_self: np.ndarray
    post_next: np.ndarray
    #: P(first tier accepted | input, answer, second opinions) and P(next accepted | …), one
    #: column per opinion source, (n, S) (a 1-d array is one source); None: no opinion sources.
    op_self: np.ndarray | None = None
    op_next: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.op_self is not None and self.op_next is not None:
            self.op_self = np.asarray(self.op_self, dtype=np.float64).reshape(len(self.pre), -1)
            self.op_next = np.asarray(self.op_next, dtype=np.float64).reshape(len(self.pre), -1)
        for i in range(self.post_self.shape[1]):
            missing = np.isnan(self.post_self[:, i]) | np.isnan(self.post_next[:, i])
            if missing.any():
                self.post_self[missing, i] = self.pre[missing, i]
                self.post_next[missing, i] = self.pre[missing, i + 1]

    def __len__(self) -> int:
        return int(self.pre.shape[0])

    @property
    def has_opinions(self) -> bool:
        return self.op_self is not None and self.op_next is not None

    @property
    def n_sources(self) -> int:
        """How many opinion sources the signals hold (0: none)."""
        return 0 if self.op_self is None else int(self.op_self.shape[1])

    def subset(self, index: np.ndarray) -> CascadeSignals:
        return CascadeSignals(
            self.pre[index],
            self.post_self[index],
            self.post_next[index],
            None if self.op_self is None else self.op_self[index],
            None if self.op_next is None else self.op_next[index],
        )

    def without_opinions(self) -> CascadeSignals:
        return CascadeSignals(self.pre, self.post_self, self.post_next)

    def opinion_gain(self, source: int | np.ndarray = 0) -> np.ndarray:
        """Expected gain of escalating from the first tier, given its answer and the opinions of
        ``source`` (one source for every row, or one per row)."""
        if self.op_self is None or self.op_next is None:
            raise NotFittedError("these signals have no second-opinion probabilities")
        gain = self.op_next - self.op_self
        if np.ndim(source) == 0:
            return gain[:, int(source)]
        return gain[np.arange(len(gain)), np.asarray(source, dtype=int)]

    def pre_gain(self, tier: int = 0) -> np.ndarray:
        return self.pre[:, tier + 1] - self.pre[:, tier]

    def post_gain(self, tier: int = 0) -> np.ndarray:
        return self.post_next[:, tier] - self.post_self[:, tier]


Band = tuple[float, float]


@dataclass(frozen=True)
class Operating:
    """One fitted operating point: the cost weight, the per-tier skip thresholds and, per
    opinion source, the band of pre-answer probabilities where its opinions are bought."""

    lam: float
    skip_thresholds: tuple[float, ...]
    #: per source: ask where lo <= P(first tier accepted | input) < hi; None (or no entry): never
    opinion_bands: tuple[Band | None, ...] = ()

    def __post_init__(self) -> None:
        # no band at all is the same point however many sources there are
        if all(b is None for b in self.opinion_bands):
            object.__setattr__(self, "opinion_bands", ())

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "lam": _finite_or_str(self.lam),
            "skip_thresholds": list(self.skip_thresholds),
        }
        bands = self.opinion_bands
        if len(bands) == 1 and bands[0] is not None:
            out["opinion_band"] = list(bands[0])  # one source: as routers of format 2-3 wrote
        elif any(b is not None for b in bands):
            out["opinion_bands"] = [None if b is None else list(b) for b in bands]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Operating:
        bands = data.get("opinion_bands")
        if bands is None and data.get("opinion_band") is not None:  # routers of format 2-3
            bands = [data["opinion_band"]]
        return cls(
            float(data["lam"]),
            tuple(float(s) for s in data["skip_thresholds"]),
            tuple(None if b is None else (float(b[0]), float(b[1])) for b in bands or ()),
        )

    def opinion_source(self, p_pre: Any) -> Any:
        """The opinion rule: the index of the first source whose band holds the first tier's
        pre-answer probability; -1 where none does (scalar or array)."""
        p = np.asarray(p_pre, dtype=np.float64)
        chosen = np.full(p.shape, -1, dtype=int)
        for k, band in reversed(list(enumerate(self.opinion_bands))):
            if band is not None:
                chosen = np.where((band[0] <= p) & (p < band[1]), k, chosen)
        return chosen if np.ndim(p_pre) else int(chosen)

    def asks_opinion(self, p_pre: Any) -> Any:
        """Whether any source's opinions are bought (scalar or array)."""
        chosen = self.opinion_source(p_pre)
        return chosen >= 0 if np.ndim(p_pre) else bool(chosen >= 0)


def _finite_or_str(x: float) -> float | str:
    return x if math.isfinite(x) else ("inf" if x > 0 else "-inf")


def escalates(gain: Any, lam: float, weight: float) -> Any:
    """The escalation rule: the expected gain beats the cost weight times the tier's cost.

    Works on scalars and arrays; ``lam = ±inf`` means never / always escalate whatever the
    weight (even a zero-cost tier).
    """
    threshold = lam * weight if math.isfinite(lam) else lam
    return gain > threshold


def skips(p_pre: Any, threshold: float) -> Any:
    """The skip rule: the pre-answer acceptance probability is below the tier's threshold."""
    return p_pre < threshold


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


def simulate(
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
) -> tuple[Outcome, tuple[float, ...]]:
    """Run the cascade on recorded outcomes; fit skip thresholds on the way if asked.

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
    for i in range(n_tiers - 1):
        gain = signals.post_gain(i)
        if i == 0 and in_band.any():
            gain = np.where(in_band, signals.opinion_gain(chosen), gain)
        escalate = escalates(gain, lam, tier_weights[i])
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
            outcome, thresholds = simulate(
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
            if target.quality_ratio is not None:
                gap = outcome.quality - target.quality_ratio * top
                slack = float(gap.mean() - margin_z * gap.std() / root_n)
            elif target.max_frontier_share is not None:
                share = outcome.top_called.astype(float)
                slack = float(
                    target.max_frontier_share - share.mean() - margin_z * share.std() / root_n
                )
            else:
                assert target.max_cost is not None
                cost = outcome.cost
                slack = float(target.max_cost - cost.mean() - margin_z * cost.std() / root_n)
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


@dataclass
class CascadePolicy:
    """Per-step operating points for a target, fitted on a calibration split.

    The calibration outcomes are kept so that any other target can be fitted later, at request
    time, without the training data (``for_target``).
    """

    tiers: tuple[str, ...]
    tier_weights: np.ndarray
    skip_tolerance: float | None = 0.1
    min_step_samples: int = 200
    grid_size: int = 300
    target: Target = field(default_factory=lambda: Target(quality_ratio=0.95))
    margin_z: float = 1.0

    def fit(
        self,
        signals: CascadeSignals,
        scores: np.ndarray,
        costs: np.ndarray,
        steps: np.ndarray,
        opinion_costs: np.ndarray | None = None,
    ) -> CascadePolicy:
        """Fit the operating points for ``self.target`` on calibration outcomes.

        ``opinion_costs``: the cost of the second opinions per prompt and source, (n, S) (with
        opinion signals).
        """
        if scores.shape[1] != len(self.tiers):
            raise ConfigurationError("scores must have one column per tier")
        self.cal_opinion_costs_ = (
            None
            if opinion_costs is None
            else np.asarray(opinion_costs, dtype=np.float64).reshape(len(scores), -1)
        )
        self.cal_signals_ = signals
        self.cal_scores_ = np.asarray(scores, dtype=np.float64)
        self.cal_costs_ = np.asarray(costs, dtype=np.float64)
        self.cal_steps_ = np.asarray(steps, dtype=object).astype(str)
        self._cache: dict[str, tuple[Operating, dict[str, Operating]]] = {}
        self.global_, self.per_step_ = self._fit_target(self.target)
        return self

    def _fit_target(self, target: Target) -> tuple[Operating, dict[str, Operating]]:
        glob = choose_operating_point(
            target,
            self.cal_signals_,
            self.cal_scores_,
            self.cal_costs_,
            self.tier_weights,
            self.skip_tolerance,
            self.grid_size,
            self.margin_z,
            self.cal_opinion_costs_,
        )
        per_step: dict[str, Operating] = {}
        steps, counts = np.unique(self.cal_steps_, return_counts=True)
        if len(steps) > 1:
            for step, count in zip(steps, counts, strict=True):
                if count < self.min_step_samples:
                    continue
                mask = self.cal_steps_ == step
                per_step[str(step)] = choose_operating_point(
                    target,
                    self.cal_signals_.subset(mask),
                    self.cal_scores_[mask],
                    self.cal_costs_[mask],
                    self.tier_weights,
                    self.skip_tolerance,
                    self.grid_size,
                    self.margin_z,
                    None if self.cal_opinion_costs_ is None else self.cal_opinion_costs_[mask],
                    # a step's own point keeps the global opinion bands: bands searched on a
                    # step's few hundred prompts overfit them
                    [glob.opinion_bands],
                )
        return glob, per_step

    def _check_fitted(self) -> None:
        if not hasattr(self, "global_"):
            raise NotFittedError("CascadePolicy is not fitted: call fit() first")

    def operating(self, step: str | None, target: Target | None = None) -> Operating:
        """The operating point for one step kind (global when the step has no point of its own)."""
        self._check_fitted()
        if target is None or target == self.target:
            glob, per_step = self.global_, self.per_step_
        else:
            key = str(target)
            if key not in self._cache:
                self._cache[key] = self._fit_target(target)
            glob, per_step = self._cache[key]
        return per_step.get(str(step), glob) if step is not None else glob

    def run(
        self,
        signals: CascadeSignals,
        scores: np.ndarray,
        costs: np.ndarray,
        steps: Sequence[str],
        target: Target | None = None,
        opinion_costs: np.ndarray | None = None,
    ) -> Outcome:
        """Apply the fitted per-step points to recorded outcomes (e.g. the test split)."""
        self._check_fitted()
        steps_arr = np.asarray(steps, dtype=object).astype(str)
        n, n_tiers = scores.shape
        result = Outcome(
            np.zeros(n, dtype=int),
            np.zeros(n),
            np.zeros(n),
            np.zeros(n, dtype=bool),
            np.zeros((n, n_tiers - 1), dtype=bool),
            np.zeros(n, dtype=bool),
            np.full(n, -1, dtype=int),
        )
        for step in np.unique(steps_arr):
            mask = steps_arr == step
            point = self.operating(str(step), target)
            out, _ = simulate(
                signals.subset(mask),
                scores[mask],
                costs[mask],
                point.lam,
                self.tier_weights,
                skip_thresholds=point.skip_thresholds,
                opinion_bands=point.opinion_bands,
                opinion_costs=None if opinion_costs is None else opinion_costs[mask],
            )
            result.answer_tier[mask] = out.answer_tier
            result.quality[mask] = out.quality
            result.cost[mask] = out.cost
            result.top_called[mask] = out.top_called
            result.skipped[mask] = out.skipped
            if out.asked is not None and result.asked is not None:
                result.asked[mask] = out.asked
            if out.source is not None and result.source is not None:
                result.source[mask] = out.source
        return result

    def to_dict(self) -> dict[str, Any]:
        self._check_fitted()
        return {
            "tiers": list(self.tiers),
            "tier_weights": self.tier_weights.tolist(),
            "skip_tolerance": self.skip_tolerance,
            "min_step_samples": self.min_step_samples,
            "grid_size": self.grid_size,
            "margin_z": self.margin_z,
            "target": str(self.target),
            "global": self.global_.to_dict(),
            "per_step": {k: v.to_dict() for k, v in self.per_step_.items()},
        }

    def calibration_arrays(self) -> dict[str, np.ndarray]:
        self._check_fitted()
        arrays = {
            "pre": self.cal_signals_.pre,
            "post_self": self.cal_signals_.post_self,
            "post_next": self.cal_signals_.post_next,
            "scores": self.cal_scores_,
            "costs": self.cal_costs_,
            "steps": self.cal_steps_.astype(str),
        }
        sig = self.cal_signals_
        if sig.op_self is not None and sig.op_next is not None:
            arrays["op_self"], arrays["op_next"] = sig.op_self, sig.op_next
        if self.cal_opinion_costs_ is not None:
            arrays["opinion_costs"] = self.cal_opinion_costs_
        return arrays

    @classmethod
    def from_dict(cls, data: dict[str, Any], arrays: dict[str, np.ndarray]) -> CascadePolicy:
        target = Target.parse(data["target"])
        assert target is not None
        policy = cls(
            tiers=tuple(data["tiers"]),
            tier_weights=np.asarray(data["tier_weights"], dtype=np.float64),
            skip_tolerance=data["skip_tolerance"],
            min_step_samples=int(data["min_step_samples"]),
            grid_size=int(data["grid_size"]),
            target=target,
            margin_z=float(data.get("margin_z", 1.0)),
        )
        policy.cal_signals_ = CascadeSignals(
            np.asarray(arrays["pre"]),
            np.asarray(arrays["post_self"]),
            np.asarray(arrays["post_next"]),
            np.asarray(arrays["op_self"]) if "op_self" in arrays else None,
            np.asarray(arrays["op_next"]) if "op_next" in arrays else None,
        )
        policy.cal_opinion_costs_ = (
            np.asarray(arrays["opinion_costs"]) if "opinion_costs" in arrays else None
        )
        policy.cal_scores_ = np.asarray(arrays["scores"])
        policy.cal_costs_ = np.asarray(arrays["costs"])
        policy.cal_steps_ = np.asarray(arrays["steps"]).astype(str).astype(object)
        policy._cache = {}
        policy.global_ = Operating.from_dict(data["global"])
        policy.per_step_ = {k: Operating.from_dict(v) for k, v in data["per_step"].items()}
        return policy
