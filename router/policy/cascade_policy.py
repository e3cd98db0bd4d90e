"""Per-step operating points for a target, certified on calibration outcomes kept with them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from router.errors import ConfigurationError, NotFittedError
from router.policy.certify import Certificate, CertifiedPoints, TestingRows
from router.policy.certify.certified import selection_mask, testing_order
from router.policy.fitting import choose_operating_point
from router.policy.rules import Operating
from router.policy.signals import CascadeSignals
from router.policy.target import Target
from router.policy.walk import Outcome, walk_recorded


@dataclass
class CascadePolicy:
    """Per-step operating points for a target, certified on calibration outcomes.

    With ``certify`` (``"wsr"``, the default, or ``"hb"``) every point is chosen by
    Learn-then-Test (:mod:`router.policy.certify`): with probability at least ``1 - delta``
    over the calibration draw, the target holds in expectation on new traffic from the same
    distribution.  A target that cannot be certified raises
    :class:`~router.errors.TargetNotCertifiableError` naming the best certifiable one.  Targets
    asked later (per request) are read off a table precomputed at fit time.

    ``certify=None`` is the uncertified fit of routers saved before certification: the
    cheapest point whose constraint holds with ``margin_z`` standard errors to spare on the
    calibration outcomes, with no guarantee.  The calibration outcomes are kept in both cases
    so that any other target can be served later without the training data.
    """

    tiers: tuple[str, ...]
    tier_weights: np.ndarray
    skip_tolerance: float | None = 0.1
    min_step_samples: int = 200
    grid_size: int = 300
    target: Target = field(default_factory=lambda: Target(quality_ratio=0.95))
    margin_z: float = 1.0
    certify: str | None = "wsr"
    #: the risk of a target that sets none (the target's own ``delta`` wins)
    delta: float = 0.1
    #: share of the calibration outcomes that fix the candidate points (the rest test them)
    selection_fraction: float = 0.25
    seed: int = 0
    #: precompute the per-request table of certificates
    table: bool = True

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
        self.certified_: CertifiedPoints | None = None
        if self.certify is None:
            self.global_, self.per_step_ = self._fit_target(self.target)
            return self
        self.certified_, self.selection_ = CertifiedPoints.fit(
            signals,
            self.cal_scores_,
            self.cal_costs_,
            self.cal_steps_,
            self.cal_opinion_costs_,
            target=self.target,
            tier_weights=self.tier_weights,
            skip_tolerance=self.skip_tolerance,
            grid_size=self.grid_size,
            min_step_samples=self.min_step_samples,
            margin_z=self.margin_z,
            method=self.certify,
            delta=self.delta,
            selection_fraction=self.selection_fraction,
            seed=self.seed,
            table=self.table,
        )
        self._set_points()
        return self

    def _set_points(self) -> None:
        """The stored points of the own target, from its certificates (as older readers read)."""
        assert self.certified_ is not None
        own = self.certified_.own
        self.global_ = own["global"].point
        self.per_step_ = {g: c.point for g, c in own.items() if g != "global"}

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

    def certificate(self, step: str | None, target: Target | None = None) -> Certificate | None:
        """The certificate of the point one step kind runs for ``target`` (default: the
        policy's own); None for an uncertified policy."""
        self._check_fitted()
        if self.certified_ is None:
            return None
        return self.certified_.certificate(step, target)

    def certificates(self, target: Target | None = None) -> dict[str, Certificate]:
        """Every group's certificate for ``target`` (global first); empty when uncertified."""
        self._check_fitted()
        return {} if self.certified_ is None else self.certified_.certificates(target)

    def operating(self, step: str | None, target: Target | None = None) -> Operating:
        """The operating point for one step kind (global when the step has no point of its own)."""
        self._check_fitted()
        if self.certified_ is not None:
            return self.certified_.certificate(step, target).point
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
        steps: Sequence[str] | np.ndarray,
        target: Target | None = None,
        opinion_costs: np.ndarray | None = None,
        valid: np.ndarray | None = None,
    ) -> Outcome:
        """Apply the fitted per-step points to recorded outcomes (e.g. the test split); with
        ``valid`` (the validator's verdicts, see :func:`walk_recorded`), refused answers
        escalate."""
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
            out, _ = walk_recorded(
                signals.subset(mask),
                scores[mask],
                costs[mask],
                point.lam,
                self.tier_weights,
                skip_thresholds=point.skip_thresholds,
                opinion_bands=point.opinion_bands,
                opinion_costs=None if opinion_costs is None else opinion_costs[mask],
                valid=None if valid is None else valid[mask],
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
        out: dict[str, Any] = {
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
        if self.certified_ is not None:
            out["certification"] = self.certified_.to_dict() | {
                "delta": self.delta,
                "selection_fraction": self.selection_fraction,
                "seed": self.seed,
            }
        return out

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
        if self.certified_ is not None:
            arrays["selection"] = self.selection_
            arrays.update(self.certified_.arrays())
        return arrays

    @classmethod
    def from_dict(cls, data: dict[str, Any], arrays: dict[str, np.ndarray]) -> CascadePolicy:
        target = Target.parse(data["target"])
        assert target is not None
        certification = data.get("certification")
        policy = cls(
            tiers=tuple(data["tiers"]),
            tier_weights=np.asarray(data["tier_weights"], dtype=np.float64),
            skip_tolerance=data["skip_tolerance"],
            min_step_samples=int(data["min_step_samples"]),
            grid_size=int(data["grid_size"]),
            target=target,
            margin_z=float(data.get("margin_z", 1.0)),
            # routers saved before certification keep their uncertified points
            certify=None if certification is None else str(certification["method"]),
        )
        if certification is not None:
            policy.delta = float(certification["delta"])
            policy.selection_fraction = float(certification["selection_fraction"])
            policy.seed = int(certification["seed"])
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
        policy.certified_ = None
        policy.global_ = Operating.from_dict(data["global"])
        policy.per_step_ = {k: Operating.from_dict(v) for k, v in data["per_step"].items()}
        if certification is not None:
            policy.selection_ = np.asarray(arrays["selection"], dtype=bool)
            test = testing_order(policy.selection_, policy.seed)
            rows = TestingRows(
                policy.cal_signals_.subset(test),
                policy.cal_scores_[test],
                policy.cal_costs_[test],
                policy.cal_steps_[test],
                None if policy.cal_opinion_costs_ is None else policy.cal_opinion_costs_[test],
                policy.tier_weights,
            )
            policy.certified_ = CertifiedPoints.from_saved(
                certification,
                arrays,
                rows,
                target=target,
                min_step_samples=policy.min_step_samples,
            )
            if len(policy.selection_) != len(policy.cal_scores_) or not np.array_equal(
                policy.selection_,
                selection_mask(len(policy.cal_scores_), policy.selection_fraction, policy.seed),
            ):
                raise ValueError("the saved selection rows do not match the policy's seed")
        return policy
