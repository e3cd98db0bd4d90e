"""Baseline escalation scorers that sit on the same plot as the learned router.

Every scorer follows one small interface (like RouteLLM's ``Router``): ``fit(X, scores)``
on embeddings ``X`` (n × d) and outcome scores (n × 2: column 0 the small model, column 1
the next tier), then ``escalation_score(X)``: higher means escalate first. Scikit-learn
conventions: hyper-parameters in ``__init__``, learned state ends in ``_``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, Self

import numpy as np
import numpy.typing as npt

from router.errors import ConfigurationError, DataValidationError, NotFittedError
from router.metrics import apgr, deferral_curve, oracle_escalation_score

FloatArray = npt.NDArray[np.float64]

__all__ = [
    "EscalationScorer",
    "KNNScorer",
    "LogRegScorer",
    "OracleScorer",
    "RandomScorer",
    "SmallFailScorer",
    "endpoint_points",
    "escalation_score_from_scores",
]


def _check_X(X: npt.ArrayLike) -> FloatArray:
    a = np.asarray(X, dtype=np.float64)
    if a.ndim != 2:
        raise DataValidationError(f"X must be 2-D (n × d), got shape {a.shape}")
    if not np.isfinite(a).all():
        raise DataValidationError("X contains NaN or infinite values")
    return a


def _check_scores(scores: npt.ArrayLike) -> FloatArray:
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 2 or s.shape[1] != 2:
        raise DataValidationError(f"scores must be n × 2 (small, frontier), got shape {s.shape}")
    if not np.isfinite(s).all():
        raise DataValidationError("scores contain NaN or infinite values")
    return s


class EscalationScorer(ABC):
    """Scores prompts for escalation to the next tier; higher = escalate first."""

    n_features_in_: int

    def fit(self, X: npt.ArrayLike, scores: npt.ArrayLike) -> Self:
        """Learn from embeddings ``X`` (n × d) and outcome ``scores`` (n × 2)."""
        x, s = _check_X(X), _check_scores(scores)
        if x.shape[0] != s.shape[0]:
            raise DataValidationError(f"X has {x.shape[0]} rows but scores has {s.shape[0]}")
        if x.shape[0] == 0:
            raise DataValidationError("fit needs at least one row")
        self._fit(x, s[:, 0], s[:, 1])
        self.n_features_in_ = int(x.shape[1])
        return self

    def _fit(self, X: FloatArray, small: FloatArray, frontier: FloatArray) -> None:  # noqa: B027
        """Hook for subclasses that learn something; the default learns nothing."""

    def escalation_score(self, X: npt.ArrayLike) -> FloatArray:
        """Escalation score per row of ``X`` (higher = escalate first)."""
        if not hasattr(self, "n_features_in_"):
            raise NotFittedError(f"{type(self).__name__} is not fitted yet; call fit(X, scores)")
        x = _check_X(X)
        if x.shape[1] != self.n_features_in_:
            raise DataValidationError(
                f"X has {x.shape[1]} features, {type(self).__name__} was fitted with "
                f"{self.n_features_in_}"
            )
        return self._score(x)

    @abstractmethod
    def _score(self, X: FloatArray) -> FloatArray:
        """Escalation scores of validated ``X``."""


class RandomScorer(EscalationScorer):
    """Uniform random escalation scores (deterministic for a seed and a row count)."""

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def _score(self, X: FloatArray) -> FloatArray:
        return np.random.default_rng(self.seed).random((X.shape[0],))


def _normalise(X: FloatArray) -> FloatArray:
    norm = np.linalg.norm(X, axis=1, keepdims=True)
    return X / np.where(norm > 0, norm, 1.0)


class KNNScorer(EscalationScorer):
    """Cosine kNN: mean (frontier − small) score among the k nearest training prompts.

    With ``k=None``, k is chosen from ``candidate_ks`` by the APGR of the deferral curve on
    a seeded 20% calibration split of the fit data, then the model is refit on all data.
    Learned: ``k_``, ``cv_apgr_`` (candidate k → calibration APGR, empty if not tuned).
    """

    k_: int
    cv_apgr_: dict[int, float]

    def __init__(
        self,
        k: int | None = None,
        candidate_ks: Sequence[int] = (5, 10, 20, 50, 100),
        seed: int = 0,
    ) -> None:
        self.k = k
        self.candidate_ks = candidate_ks
        self.seed = seed

    @staticmethod
    def _index(X: FloatArray) -> Any:
        from sklearn.neighbors import NearestNeighbors

        # On unit vectors Euclidean order equals cosine order.
        return NearestNeighbors(algorithm="brute", metric="euclidean").fit(_normalise(X))

    @staticmethod
    def _neighbour_gains(index: Any, gain: FloatArray, X: FloatArray, k: int) -> FloatArray:
        """Gains of the k nearest training rows per query, nearest first (n × k)."""
        idx = index.kneighbors(_normalise(X), n_neighbors=k, return_distance=False)
        return np.asarray(gain[idx], dtype=np.float64)

    def _tune_k(self, X: FloatArray, small: FloatArray, frontier: FloatArray) -> int:
        ks = sorted({int(k) for k in self.candidate_ks})
        if not ks or ks[0] < 1:
            raise ConfigurationError("candidate_ks must be non-empty positive integers")
        n = X.shape[0]
        n_cal = round(0.2 * n)
        if n_cal < 2 or n - n_cal < 1:
            self.cv_apgr_ = {}
            return min(ks[0], n)
        perm = np.random.default_rng(self.seed).permutation(n)
        cal, tr = perm[:n_cal], perm[n_cal:]
        valid = [k for k in ks if k <= tr.size] or [ks[0]]
        k_max = min(valid[-1], tr.size)
        gains = self._neighbour_gains(self._index(X[tr]), frontier[tr] - small[tr], X[cal], k_max)
        means = np.cumsum(gains, axis=1) / np.arange(1, k_max + 1)
        q_s, q_f = float(small[cal].mean()), float(frontier[cal].mean())
        self.cv_apgr_ = {
            k: apgr(
                deferral_curve(
                    means[:, min(k, k_max) - 1], small[cal], frontier[cal], 0.0, 0.0, cascade=False
                ),
                q_s,
                q_f,
            )
            for k in valid
        }
        vals = np.array(list(self.cv_apgr_.values()))
        if np.isnan(vals).all():
            return valid[len(valid) // 2]
        return valid[int(np.nanargmax(vals))]

    def _fit(self, X: FloatArray, small: FloatArray, frontier: FloatArray) -> None:
        if self.k is not None:
            if self.k < 1:
                raise ConfigurationError(f"k must be >= 1, got {self.k}")
            self.cv_apgr_ = {}
            self.k_ = int(self.k)
        else:
            self.k_ = self._tune_k(X, small, frontier)
        self.gain_ = frontier - small
        self.index_ = self._index(X)

    def _score(self, X: FloatArray) -> FloatArray:
        k = min(self.k_, self.gain_.size)
        return self._neighbour_gains(self.index_, self.gain_, X, k).mean(axis=1)


class _ConstantProba:
    """Stands in for a classifier when the training labels have a single class."""

    def __init__(self, p: float) -> None:
        self.p = p

    def predict_proba(self, X: FloatArray) -> FloatArray:
        col = np.full(X.shape[0], self.p)
        return np.column_stack([1.0 - col, col])


def _fit_proba(X: FloatArray, y: npt.NDArray[np.bool_], C: float, seed: int) -> Any:
    """Standardised logistic regression of ``y``; constant when ``y`` has one class."""
    if y.all() or not y.any():
        return _ConstantProba(float(y.mean()))
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(
        StandardScaler(), LogisticRegression(C=C, max_iter=1000, random_state=seed)
    )
    return model.fit(X, y)


def _proba(model: Any, X: FloatArray) -> FloatArray:
    return np.asarray(model.predict_proba(X)[:, 1], dtype=np.float64)


class LogRegScorer(EscalationScorer):
    """P(frontier ok) − P(small ok) from two logistic regressions (ok = score ≥ 0.5)."""

    def __init__(self, C: float = 1.0, seed: int = 0) -> None:
        self.C = C
        self.seed = seed

    def _fit(self, X: FloatArray, small: FloatArray, frontier: FloatArray) -> None:
        self.small_model_ = _fit_proba(X, small >= 0.5, self.C, self.seed)
        self.frontier_model_ = _fit_proba(X, frontier >= 0.5, self.C, self.seed)

    def _score(self, X: FloatArray) -> FloatArray:
        return _proba(self.frontier_model_, X) - _proba(self.small_model_, X)


class SmallFailScorer(EscalationScorer):
    """Naive baseline: 1 − P(small ok) from one logistic regression; ignores the frontier."""

    def __init__(self, C: float = 1.0, seed: int = 0) -> None:
        self.C = C
        self.seed = seed

    def _fit(self, X: FloatArray, small: FloatArray, frontier: FloatArray) -> None:
        self.small_model_ = _fit_proba(X, small >= 0.5, self.C, self.seed)

    def _score(self, X: FloatArray) -> FloatArray:
        return 1.0 - _proba(self.small_model_, X)


def escalation_score_from_scores(scores: npt.ArrayLike) -> FloatArray:
    """Oracle escalation score (frontier − small) from the true n × 2 outcome scores."""
    s = _check_scores(scores)
    return oracle_escalation_score(s[:, 0], s[:, 1])


class OracleScorer(EscalationScorer):
    """The ceiling: escalates exactly where the small model scores below the frontier first.

    It peeks at the labels, so it cannot score embeddings: use
    ``escalation_score_from_scores(scores)`` with the true test-split scores.
    """

    def escalation_score_from_scores(self, scores: npt.ArrayLike) -> FloatArray:
        """Frontier − small gain from the true scores (uses the labels)."""
        return escalation_score_from_scores(scores)

    def _score(self, X: FloatArray) -> FloatArray:
        raise ConfigurationError(
            "OracleScorer needs the true outcomes: call escalation_score_from_scores(scores)"
        )


def endpoint_points(
    small_scores: npt.ArrayLike,
    frontier_scores: npt.ArrayLike,
    small_cost: npt.ArrayLike,
    frontier_cost: npt.ArrayLike,
) -> dict[str, dict[str, float]]:
    """Quality and mean cost of always-small and always-frontier (scalar or per-prompt cost)."""
    small = np.asarray(small_scores, dtype=np.float64)
    frontier = np.asarray(frontier_scores, dtype=np.float64)
    if small.shape != frontier.shape or small.ndim != 1 or small.size == 0:
        raise DataValidationError("small_scores and frontier_scores must be 1-D, equal, non-empty")
    shape = small.shape
    return {
        "always_small": {
            "quality": float(small.mean()),
            "cost": float(np.broadcast_to(np.asarray(small_cost, np.float64), shape).mean()),
        },
        "always_frontier": {
            "quality": float(frontier.mean()),
            "cost": float(np.broadcast_to(np.asarray(frontier_cost, np.float64), shape).mean()),
        },
    }
