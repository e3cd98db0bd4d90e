"""Extra pre-answer acceptance estimators and the rule that picks which to average.

LightGBM on 384 embedding dimensions is strong with many labelled prompts and noisy with few;
a linear model and a nearest-neighbour vote are strong where it is weak.  The router averages
the probabilities of a subset of {LightGBM, logistic regression, kNN}, and the subset is
chosen on the calibration split (never the test split) by the APGR of the escalation ranking
it gives.  Both extra members are plain arrays at prediction time: no sklearn object per
request, nothing pickled.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from router.errors import NotFittedError

FloatArray = np.ndarray


def _unit(X: FloatArray) -> FloatArray:
    X = np.asarray(X, dtype=np.float32)
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    return X / np.maximum(norms, 1e-12)


class LinearAcceptance:
    """L2-regularised logistic regression on the input embedding: P(accepted | x).

    Learned: ``coef_``, ``intercept_``.
    """

    def __init__(self, C: float = 0.1, max_iter: int = 2000, seed: int = 0) -> None:
        self.C, self.max_iter, self.seed = C, max_iter, seed

    def fit(self, X: FloatArray, y: FloatArray) -> LinearAcceptance:
        from sklearn.linear_model import LogisticRegression

        X = np.asarray(X, dtype=np.float64)
        y = np.asarray(y).astype(bool)
        if y.all() or not y.any():  # one class: a constant
            self.coef_ = np.zeros(X.shape[1])
            rate = float(np.clip(y.mean(), 1e-3, 1 - 1e-3))
            self.intercept_ = float(np.log(rate / (1 - rate)))
            return self
        model = LogisticRegression(C=self.C, max_iter=self.max_iter, random_state=self.seed)
        model.fit(X, y)
        self.coef_ = model.coef_[0].astype(np.float64)
        self.intercept_ = float(model.intercept_[0])
        return self

    def predict_accept(self, X: FloatArray) -> FloatArray:
        if not hasattr(self, "coef_"):
            raise NotFittedError("LinearAcceptance is not fitted")
        z = np.asarray(X, dtype=np.float64) @ self.coef_ + self.intercept_
        return 1.0 / (1.0 + np.exp(-z))


class NeighbourAcceptance:
    """Cosine k-nearest-neighbour vote: the acceptance rate of every tier among the k nearest
    labelled inputs.  One index serves all tiers (labels ``Y`` are n × tiers).

    Learned: ``keys_`` (unit vectors, float16 to halve the size), ``labels_``.
    """

    def __init__(self, k: int = 100) -> None:
        self.k = k

    def fit(self, X: FloatArray, Y: FloatArray) -> NeighbourAcceptance:
        self.keys_ = _unit(X).astype(np.float16)
        self.labels_ = np.asarray(Y, dtype=np.float32).reshape(len(self.keys_), -1)
        return self

    def predict_accept(self, X: FloatArray, chunk: int = 2048) -> FloatArray:
        """n × tiers acceptance rates among the k nearest stored inputs."""
        if not hasattr(self, "keys_"):
            raise NotFittedError("NeighbourAcceptance is not fitted")
        queries = _unit(X)
        keys = self.keys_.astype(np.float32)
        k = min(self.k, len(keys))
        out = np.empty((len(queries), self.labels_.shape[1]), dtype=np.float64)
        for start in range(0, len(queries), chunk):
            sims = queries[start : start + chunk] @ keys.T
            nearest = np.argpartition(-sims, k - 1, axis=1)[:, :k]
            out[start : start + chunk] = self.labels_[nearest].mean(axis=1)
        return out


#: The candidate member subsets, LightGBM always in.
CANDIDATES: tuple[tuple[str, ...], ...] = (
    ("lgbm",),
    ("lgbm", "linear"),
    ("lgbm", "linear_c1"),
    ("lgbm", "knn"),
    ("lgbm", "linear", "knn"),
)

#: The inverse regularisation of each linear member.
LINEAR_MEMBERS: dict[str, float] = {"linear": 0.1, "linear_c1": 1.0}


def choose_members(
    members: Mapping[str, FloatArray],
    score: Callable[[FloatArray], float],
    candidates: Sequence[tuple[str, ...]] = CANDIDATES,
) -> tuple[tuple[str, ...], dict[str, float]]:
    """The subset whose averaged probabilities (n × tiers) ``score`` best; ties keep the first.

    Returns the subset and every candidate's score (for the run's record).
    """
    scores: dict[str, float] = {}
    best: tuple[str, ...] = candidates[0]
    best_score = -np.inf
    for names in candidates:
        if not all(n in members for n in names):
            continue
        value = float(score(np.mean([members[n] for n in names], axis=0)))
        scores["+".join(names)] = value
        if value > best_score + 1e-12:
            best, best_score = names, value
    return best, scores


def describe(choice: Sequence[str], scores: Mapping[str, float]) -> dict[str, Any]:
    return {"members": list(choice), "calibration_apgr": dict(scores)}
