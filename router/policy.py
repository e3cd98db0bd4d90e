"""The cascade policy: when to skip, accept or escalate, fitted to a target the user states.

At each tier ``i`` below the top the policy

* **skips** tier ``i`` when its pre-answer acceptance probability is hopeless
  (below ``skip_threshold``: on the calibration split, nearly all such answers were escalated);
* otherwise calls it, then **escalates** when the expected gain of the next tier,
  ``P(next accepted | x, answer) - P(this accepted | x, answer)``, exceeds ``lam`` times the next
  tier's relative cost; else **accepts**.

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

    def __post_init__(self) -> None:
        for i in range(self.post_self.shape[1]):
            missing = np.isnan(self.post_self[:, i]) | np.isnan(self.post_next[:, i])
            if missing.any():
                self.post_self[missing, i] = self.pre[missing, i]
                self.post_next[missing, i] = self.pre[missing, i + 1]

    def __len__(self) -> int:
        return int(self.pre.shape[0])

    def subset(self, index: np.ndarray) -> CascadeSignals:
        return CascadeSignals(self.pre[index], self.post_self[index], self.post_next[index])

    def pre_gain(self, tier: int = 0) -> np.ndarray:
        return self.pre[:, tier + 1] - self.pre[:, tier]

    def post_gain(self, tier: int = 0) -> np.ndarray:
        return self.post_next[:, tier] - self.post_self[:, tier]


@dataclass(frozen=True)
class Operating:
    """One fitted operating point: the cost weight and the per-tier skip thresholds."""

    lam: float
    skip_thresholds: tuple[float, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"lam": _finite_or_str(self.lam), "skip_thresholds": list(self.skip_thresholds)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Operating:
        return cls(float(data["lam"]), tuple(float(s) for s in data["skip_thresholds"]))


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

    def summary(self) -> dict[str, float]:
        return {
            "quality": float(self.quality.mean()) if len(self.quality) else float("nan"),
            "frontier_share": float(self.top_called.mean()) if len(self.quality) else float("nan"),
            "cost": float(self.cost.mean()) if len(self.quality) else float("nan"),
            "skip_share": float(self.skipped.any(axis=1).mean()) if len(self.quality) else 0.0,
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
) -> tuple[Outcome, tuple[float, ...]]:
    """Run the cascade on recorded outcomes; fit skip thresholds on the way if asked.

    With ``skip_tolerance`` set, the skip threshold of each tier is the largest pre-answer
    probability below which at most that share of the calls reaching the tier were accepted.
    """
    n, n_tiers = scores.shape
    active = np.ones(n, dtype=bool)
    answer_tier = np.full(n, n_tiers - 1)
    cost = np.zeros(n)
    skipped = np.zeros((n, n_tiers - 1), dtype=bool)
    fitted: list[float] = []
    for i in range(n_tiers - 1):
        escalate = escalates(signals.post_gain(i), lam, tier_weights[i])
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
        accept = call & ~escalate
        answer_tier[accept] = i
        skipped[:, i] = skip
        active &= ~accept
    cost += np.where(active, costs[:, -1], 0.0)
    quality = scores[np.arange(n), answer_tier]
    return Outcome(answer_tier, quality, cost, active.copy(), skipped), tuple(fitted)


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
    gains = np.concatenate(
        [signals.post_gain(i) / tier_weights[i] for i in range(signals.post_self.shape[1])]
    )
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
) -> Operating:
    """Pick the cost weight (and skip thresholds) that meets ``target`` on these outcomes.

    A constraint must hold with ``margin_z`` standard errors to spare on the calibration
    outcomes, so that the realised value on new traffic misses the target less often.
    """
    n = len(scores)
    root_n = math.sqrt(max(n, 1))
    top = scores[:, -1]
    candidates = []
    for lam in lambda_grid(signals, tier_weights, grid_size):
        out, thresholds = simulate(
            signals, scores, costs, lam, tier_weights, skip_tolerance=skip_tolerance
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
        candidates.append((lam, thresholds, s["quality"], s["frontier_share"], s["cost"], slack))
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
    return Operating(float(best[0]), tuple(best[1]))


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
    ) -> CascadePolicy:
        """Fit the operating points for ``self.target`` on calibration outcomes."""
        if scores.shape[1] != len(self.tiers):
            raise ConfigurationError("scores must have one column per tier")
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
            )
            result.answer_tier[mask] = out.answer_tier
            result.quality[mask] = out.quality
            result.cost[mask] = out.cost
            result.top_called[mask] = out.top_called
            result.skipped[mask] = out.skipped
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
        return {
            "pre": self.cal_signals_.pre,
            "post_self": self.cal_signals_.post_self,
            "post_next": self.cal_signals_.post_next,
            "scores": self.cal_scores_,
            "costs": self.cal_costs_,
            "steps": self.cal_steps_.astype(str),
        }

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
        )
        policy.cal_scores_ = np.asarray(arrays["scores"])
        policy.cal_costs_ = np.asarray(arrays["costs"])
        policy.cal_steps_ = np.asarray(arrays["steps"]).astype(str).astype(object)
        policy._cache = {}
        policy.global_ = Operating.from_dict(data["global"])
        policy.per_step_ = {k: Operating.from_dict(v) for k, v in data["per_step"].items()}
        return policy
