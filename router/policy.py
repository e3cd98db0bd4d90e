"""The cascade policy: when to skip, accept or escalate, fitted to a target the user states.

At each tier ``i`` below the top the policy

* **skips** tier ``i`` when its pre-answer acceptance probability is hopeless
  (below ``skip_threshold``: on the calibration split, nearly all such answers were escalated);
* otherwise calls it, then **escalates** when the expected gain of the next tier,
  ``P(next accepted | x, answer) - P(this accepted | x, answer)``, exceeds ``lam`` times the next
  tier's relative cost; else **accepts**.

At the first tier, a model trained with peers may also buy **second opinions** (a cheap peer's
answer to the same input, asked in parallel): only where the pre-answer probability lies in the
fitted ``opinion_band`` (where an opinion can change the decision). There the answer-aware
probabilities that also see the agreement between the answers replace the plain ones, and the
opinion's cost is charged.

``lam`` is one Lagrangian weight on cost: sweeping it traces the quality–cost curve, and fitting
a :class:`Target` picks it on the calibration split, per step kind where the data allows.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
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
    #: P(first tier accepted | input, answer, second opinions) and P(next accepted | …), (n,);
    #: None where the model has no peers.
    op_self: np.ndarray | None = None
    op_next: np.ndarray | None = None

    def __post_init__(self) -> None:
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

    def opinion_gain(self) -> np.ndarray:
        """Expected gain of escalating from the first tier, given its answer and opinions."""
        if self.op_self is None or self.op_next is None:
            raise NotFittedError("these signals have no second-opinion probabilities")
        return self.op_next - self.op_self

    def pre_gain(self, tier: int = 0) -> np.ndarray:
        return self.pre[:, tier + 1] - self.pre[:, tier]

    def post_gain(self, tier: int = 0) -> np.ndarray:
        return self.post_next[:, tier] - self.post_self[:, tier]


@dataclass(frozen=True)
class Operating:
    """One fitted operating point: the cost weight and the per-tier skip thresholds."""

    lam: float
    skip_thresholds: tuple[float, ...]
    #: ask for second opinions where lo <= P(first tier accepted | input) < hi; None: never
    opinion_band: tuple[float, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "lam": _finite_or_str(self.lam),
            "skip_thresholds": list(self.skip_thresholds),
        }
        if self.opinion_band is not None:
            out["opinion_band"] = list(self.opinion_band)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Operating:
        band = data.get("opinion_band")
        return cls(
            float(data["lam"]),
            tuple(float(s) for s in data["skip_thresholds"]),
            None if band is None else (float(band[0]), float(band[1])),
        )

    def asks_opinion(self, p_pre: Any) -> Any:
        """The opinion rule: the first tier's pre-answer probability lies in the band."""
        if self.opinion_band is None:
            return np.zeros_like(np.asarray(p_pre), dtype=bool) if np.ndim(p_pre) else False
        lo, hi = self.opinion_band
        return (lo <= p_pre) & (p_pre < hi)


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

    def summary(self) -> dict[str, float]:
        n = len(self.quality)
        return {
            "quality": float(self.quality.mean()) if n else float("nan"),
            "frontier_share": float(self.top_called.mean()) if n else float("nan"),
            "cost": float(self.cost.mean()) if n else float("nan"),
            "skip_share": float(self.skipped.any(axis=1).mean()) if n else 0.0,
            "opinion_share": float(self.asked.mean()) if n and self.asked is not None else 0.0,
        }


def simulate(
    signals: CascadeSignals,
    scores: np.ndarray,
    costs: np.ndarray,
    lam: float,
    tier_weights: np.ndarray,
    skip_thresholds: Sequence[float] | None = None,
    skip_tolerance: float | None = None,
    min_skip_count: int = 20,
    opinion_band: tuple[float, float] | None = None,
    opinion_costs: np.ndarray | None = None,
) -> tuple[Outcome, tuple[float, ...]]:
    """Run the cascade on recorded outcomes; fit skip thresholds on the way if asked.

    With ``skip_tolerance`` set, the skip threshold of each tier is the largest pre-answer
    probability below which at most that share of the calls reaching the tier were accepted.
    With ``opinion_band`` (and signals with opinions), first-tier calls whose pre-answer
    probability lies in the band also buy the second opinions (``opinion_costs`` per prompt)
    and decide on the opinion-aware gain.
    """
    n, n_tiers = scores.shape
    active = np.ones(n, dtype=bool)
    answer_tier = np.full(n, n_tiers - 1)
    cost = np.zeros(n)
    skipped = np.zeros((n, n_tiers - 1), dtype=bool)
    asked = np.zeros(n, dtype=bool)
    fitted: list[float] = []
    in_band = np.zeros(n, dtype=bool)
    if opinion_band is not None and signals.has_opinions:
        in_band = Operating(lam, (), opinion_band).asks_opinion(signals.pre[:, 0])
    for i in range(n_tiers - 1):
        gain = signals.post_gain(i)
        if i == 0 and in_band.any():
            gain = np.where(in_band, signals.opinion_gain(), gain)
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
                cost += np.where(asked, opinion_costs, 0.0)
        accept = call & ~escalate
        answer_tier[accept] = i
        skipped[:, i] = skip
        active &= ~accept
    cost += np.where(active, costs[:, -1], 0.0)
    quality = scores[np.arange(n), answer_tier]
    return Outcome(answer_tier, quality, cost, active.copy(), skipped, asked), tuple(fitted)


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
    bands: Sequence[tuple[float, float] | None] | None = None,
) -> Operating:
    """Pick the cost weight (and skip thresholds) that meets ``target`` on these outcomes.

    A constraint must hold with ``margin_z`` standard errors to spare on the calibration
    outcomes, so that the realised value on new traffic misses the target less often.
    With opinion signals and their costs, the opinion band is searched jointly with the cost
    weight (never, always, and bands between quantiles of the pre-answer probability); the
    opinions' cost counts in every candidate, so opinions are only bought where they pay.
    ``bands`` restricts the bands tried (e.g. to the global one, for a step's own point).
    """
    n = len(scores)
    root_n = math.sqrt(max(n, 1))
    top = scores[:, -1]
    candidates = []
    if not (signals.has_opinions and opinion_costs is not None):
        bands = [None]
    elif bands is None:
        bands = [None, *opinion_bands(signals.pre[:, 0])]
    grid = lambda_grid(signals, tier_weights, grid_size)
    for band, lam in ((b, lam) for b in bands for lam in grid):
        out, thresholds = simulate(
            signals,
            scores,
            costs,
            lam,
            tier_weights,
            skip_tolerance=skip_tolerance,
            opinion_band=band,
            opinion_costs=opinion_costs,
        )
        s = out.summary()
        if target.quality_ratio is not None:
            gap = out.quality - target.quality_ratio * top
            slack = float(gap.mean() - margin_z * gap.std() / root_n)
        elif target.max_frontier_share is not None:
            share = out.top_called.astype(float)
            slack = float(
                target.max_frontier_share - share.mean() - margin_z * share.std() / root_n
            )
        else:
            assert target.max_cost is not None
            slack = float(target.max_cost - out.cost.mean() - margin_z * out.cost.std() / root_n)
        candidates.append(
            (lam, thresholds, s["quality"], s["frontier_share"], s["cost"], slack, band)
        )
    feasible = [c for c in candidates if c[5] >= -1e-12]
    if target.quality_ratio is not None:
        # the cheapest point that meets the quality target; else the best quality there is
        best = (
            min(feasible, key=lambda c: (c[4], c[3]))
            if feasible
            else max(candidates, key=lambda c: (c[2], -c[4]))
        )
    elif feasible:
        best = max(feasible, key=lambda c: (c[2], -c[4]))
    else:
        best = min(candidates, key=lambda c: (c[4], c[3]))
    return Operating(float(best[0]), tuple(best[1]), best[6])


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

        ``opinion_costs``: the per-prompt cost of the second opinions (with opinion signals).
        """
        if scores.shape[1] != len(self.tiers):
            raise ConfigurationError("scores must have one column per tier")
        self.cal_opinion_costs_ = (
            None if opinion_costs is None else np.asarray(opinion_costs, dtype=np.float64)
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
                    # a step's own point keeps the global opinion band: a band searched on a
                    # step's few hundred prompts overfits them
                    [glob.opinion_band],
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
                opinion_band=point.opinion_band,
                opinion_costs=None if opinion_costs is None else opinion_costs[mask],
            )
            result.answer_tier[mask] = out.answer_tier
            result.quality[mask] = out.quality
            result.cost[mask] = out.cost
            result.top_called[mask] = out.top_called
            result.skipped[mask] = out.skipped
            if out.asked is not None and result.asked is not None:
                result.asked[mask] = out.asked
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
