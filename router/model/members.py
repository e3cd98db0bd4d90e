"""Extra pre-answer acceptance estimators and the rule that picks which to average.

LightGBM on 384 embedding dimensions is strong with many labelled prompts and noisy with few;
a linear model and a nearest-neighbour vote are strong where it is weak.  The router averages
the probabilities of a non-empty subset of {LightGBM, logistic regression, kNN} (kNN alone
included), and the subset, kNN's k and the regression's C are chosen from out-of-fold
predictions over the whole training split (never the test split) by the APGR of the escalation
ranking they give.  Both extra members are plain arrays at prediction time: no sklearn object
per request, nothing pickled.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from router.errors import NotFittedError

if TYPE_CHECKING:
    from router.model.folds import Folds

FloatArray = np.ndarray


def _unit(X: FloatArray) -> FloatArray:
    X = np.asarray(X, dtype=np.float32)
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    return X / np.maximum(norms, 1e-12)


class LinearAcceptance:
    """L2-regularised logistic regression on the input embedding: P(accepted | x).

    Learned: ``coef_``, ``intercept_``.
    """

    def __init__(
        self, C: float = 0.1, max_iter: int = 2000, seed: int = 0, tol: float = 1e-4
    ) -> None:
        self.C, self.max_iter, self.seed, self.tol = C, max_iter, seed, tol

    def fit(self, X: FloatArray, y: FloatArray) -> LinearAcceptance:
        from sklearn.linear_model import LogisticRegression

        X = np.asarray(X, dtype=np.float64)
        y = np.asarray(y).astype(bool)
        if y.all() or not y.any():  # one class: a constant
            self.coef_ = np.zeros(X.shape[1])
            rate = float(np.clip(y.mean(), 1e-3, 1 - 1e-3))
            self.intercept_ = float(np.log(rate / (1 - rate)))
            return self
        model = LogisticRegression(
            C=self.C, max_iter=self.max_iter, tol=self.tol, random_state=self.seed
        )
        model.fit(X, y)
        self.coef_ = model.coef_[0].astype(np.float64)
        self.intercept_ = float(model.intercept_[0])
        return self

    def predict_accept(self, X: FloatArray) -> FloatArray:
        if not hasattr(self, "coef_"):
            raise NotFittedError("LinearAcceptance is not fitted")
        z = np.asarray(X, dtype=np.float64) @ self.coef_ + self.intercept_
        return 1.0 / (1.0 + np.exp(-z))

    def to_dict(self) -> dict[str, Any]:
        return {"C": self.C, "coef": self.coef_.tolist(), "intercept": self.intercept_}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LinearAcceptance:
        model = cls(C=float(data["C"]))
        model.coef_ = np.asarray(data["coef"], dtype=np.float64)
        model.intercept_ = float(data["intercept"])
        return model


class NeighbourAcceptance:
    """Cosine k-nearest-neighbour vote: the acceptance rate of every tier among the k nearest
    labelled inputs.  One index serves all tiers (labels ``Y`` are n × tiers).

    Learned: ``keys_`` (unit vectors, float16 to halve the size), ``labels_``.
    """

    def __init__(self, k: int = 100) -> None:
        self.k = k

    def fit(self, X: FloatArray, Y: FloatArray) -> NeighbourAcceptance:
        self._keys_f32: FloatArray | None = None  # the old keys' float32 copy is stale
        self.keys_ = _unit(X).astype(np.float16)
        self.labels_ = np.asarray(Y, dtype=np.float32).reshape(len(self.keys_), -1)
        return self

    def predict_accept(self, X: FloatArray, chunk: int = 2048) -> FloatArray:
        """n × tiers acceptance rates among the k nearest stored inputs."""
        if not hasattr(self, "keys_"):
            raise NotFittedError("NeighbourAcceptance is not fitted")
        queries = _unit(X)
        keys = self._keys32()
        k = min(self.k, len(keys))
        out = np.empty((len(queries), self.labels_.shape[1]), dtype=np.float64)
        for start in range(0, len(queries), chunk):
            sims = queries[start : start + chunk] @ keys.T
            nearest = np.argpartition(-sims, k - 1, axis=1)[:, :k]
            out[start : start + chunk] = self.labels_[nearest].mean(axis=1)
        return out

    def _keys32(self) -> FloatArray:
        """The keys as float32, converted once (a per-call conversion would dominate a single
        request)."""
        cached = self._keys_f32
        if cached is None:
            cached = self._keys_f32 = self.keys_.astype(np.float32)
        return cached

    def arrays(self) -> dict[str, FloatArray]:
        return {"keys": self.keys_, "labels": self.labels_}

    @classmethod
    def from_arrays(cls, k: int, arrays: Mapping[str, FloatArray]) -> NeighbourAcceptance:
        model = cls(k=k)
        model._keys_f32 = None
        model.keys_ = np.asarray(arrays["keys"], dtype=np.float16)
        model.labels_ = np.asarray(arrays["labels"], dtype=np.float32)
        if model.labels_.ndim != 2 or len(model.labels_) != len(model.keys_):
            raise ValueError("neighbour keys and labels differ in length")
        return model


#: The candidate member subsets, simplest first (a tie keeps the earlier one).
CANDIDATES: tuple[tuple[str, ...], ...] = (
    ("lgbm",),
    ("lgbm", "linear"),
    ("lgbm", "knn"),
    ("lgbm", "linear", "knn"),
    ("knn",),
    ("linear",),
    ("linear", "knn"),
)
#: Candidate numbers of neighbours and inverse regularisations, chosen out of fold.
NEIGHBOUR_KS: tuple[int, ...] = (5, 10, 20, 50, 100, 200)
LINEAR_CS: tuple[float, ...] = (0.1, 1.0)


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


class PreAnswerMembers:
    """The estimators whose probabilities a model averages into P(tier accepted | input).

    ``members`` names them: ``lgbm`` (the model's calibrated boosters), ``linear`` /
    ``linear_c1`` (one :class:`LinearAcceptance` per tier; routers before cross-fitting had
    both, with C = 0.1 and 1) and ``knn`` (one :class:`NeighbourAcceptance` for all tiers).
    Only the chosen members are kept.
    """

    def __init__(
        self,
        members: Sequence[str] = ("lgbm",),
        linear: Mapping[str, Sequence[LinearAcceptance]] | None = None,
        neighbours: NeighbourAcceptance | None = None,
    ) -> None:
        self.members = tuple(members)
        self.linear = {n: list(models) for n, models in (linear or {}).items()}
        self.neighbours = neighbours
        missing = [
            n
            for n in self.members
            if n != "lgbm" and n not in self.linear and not (n == "knn" and neighbours)
        ]
        if not self.members or missing:
            raise ValueError(f"pre-answer members {self.members} lack their estimators {missing}")

    @property
    def extra(self) -> bool:
        """Whether anything but the boosters takes part."""
        return self.members != ("lgbm",)

    @property
    def boosters_only(self) -> bool:
        """Whether the boosters alone make the estimate."""
        return not self.extra

    @property
    def uses_boosters(self) -> bool:
        return "lgbm" in self.members

    def average(self, lgbm: FloatArray, embeddings: FloatArray) -> FloatArray:
        """The members' mean probability, n × tiers, given the boosters' ``lgbm`` (n × tiers)."""
        if not self.extra:
            return lgbm
        parts = [np.asarray(lgbm, dtype=np.float64)] if self.uses_boosters else []
        for name in self.members:
            if name in self.linear:
                parts.append(
                    np.column_stack([m.predict_accept(embeddings) for m in self.linear[name]])
                )
            elif name == "knn" and self.neighbours is not None:
                parts.append(self.neighbours.predict_accept(embeddings))
        return np.mean(parts, axis=0)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"members": list(self.members)}
        out["linear"] = {n: [m.to_dict() for m in ms] for n, ms in self.linear.items()}
        if self.neighbours is not None:
            out["knn_k"] = self.neighbours.k
        return out

    def arrays(self) -> dict[str, FloatArray]:
        """Arrays to store beside :meth:`to_dict` (the neighbour index, if any)."""
        if self.neighbours is None:
            return {}
        return {f"knn_{k}": v for k, v in self.neighbours.arrays().items()}

    @classmethod
    def from_dict(
        cls, data: Mapping[str, Any], arrays: Mapping[str, FloatArray] | None = None
    ) -> PreAnswerMembers:
        linear = {
            n: [LinearAcceptance.from_dict(d) for d in ms] for n, ms in data["linear"].items()
        }
        neighbours = None
        if "knn_k" in data:
            if arrays is None or "knn_keys" not in arrays:
                raise ValueError("the neighbour member's index (neighbours.npz) is missing")
            neighbours = NeighbourAcceptance.from_arrays(
                int(data["knn_k"]), {"keys": arrays["knn_keys"], "labels": arrays["knn_labels"]}
            )
        return cls(data["members"], linear, neighbours)


def neighbour_oof(
    embeddings: FloatArray, labels: FloatArray, folds: Folds, ks: Sequence[int], chunk: int = 2048
) -> dict[int, FloatArray]:
    """Out-of-fold acceptance rates (n × tiers) among the k nearest rows of the other folds, for
    every k in ``ks`` (one neighbour search per fold serves them all)."""
    keys_all = _unit(embeddings).astype(np.float16).astype(np.float32)  # as stored
    queries_all = _unit(embeddings)
    Y = np.asarray(labels, dtype=np.float32).reshape(len(keys_all), -1)
    out = {int(k): np.zeros(Y.shape, dtype=np.float64) for k in ks}
    for f in range(folds.k):
        train, held = folds.train(f), folds.held(f)
        keys, train_labels = keys_all[train], Y[train]
        k_max = min(max(out), len(train))
        for start in range(0, len(held), chunk):
            rows = held[start : start + chunk]
            sims = queries_all[rows] @ keys.T
            nearest = np.argpartition(-sims, k_max - 1, axis=1)[:, :k_max]
            order = np.argsort(-np.take_along_axis(sims, nearest, axis=1), axis=1, kind="stable")
            nearest = np.take_along_axis(nearest, order, axis=1)
            cumulative = np.cumsum(train_labels[nearest], axis=1)  # rows × k_max × tiers
            for k in out:
                kk = min(k, k_max)
                out[k][rows] = cumulative[:, kk - 1] / kk
    return out


def linear_oof(
    embeddings: FloatArray,
    labels: FloatArray,
    folds: Folds,
    Cs: Sequence[float],
    seed: int = 0,
    tol: float = 1e-3,
) -> dict[float, FloatArray]:
    """Out-of-fold P(accepted) (n × tiers) of one logistic regression per tier and C."""
    X = np.asarray(embeddings, dtype=np.float64)
    Y = np.asarray(labels, dtype=np.float32).reshape(len(X), -1)
    out = {float(C): np.zeros(Y.shape, dtype=np.float64) for C in Cs}
    for C in out:
        for f in range(folds.k):
            train, held = folds.train(f), folds.held(f)
            for t in range(Y.shape[1]):
                model = LinearAcceptance(C=C, seed=seed, tol=tol).fit(X[train], Y[train, t])
                out[C][held, t] = model.predict_accept(X[held])
    return out


@dataclass
class CrossFitMembers:
    """Every member's out-of-fold probabilities (``oof``: name → n × tiers; the boosters' as
    given), with kNN's k and the regression's C chosen out of fold (``knn_scores`` /
    ``linear_scores``: each k's / C's out-of-fold score of the member alone)."""

    oof: dict[str, FloatArray]
    knn_k: int
    linear_C: float
    knn_scores: dict[int, float] = field(default_factory=dict)
    linear_scores: dict[float, float] = field(default_factory=dict)

    def refit(
        self, names: Sequence[str], embeddings: FloatArray, labels: FloatArray, seed: int = 0
    ) -> PreAnswerMembers:
        """The members ``names`` (with the chosen k and C) fitted on every row."""
        Y = np.asarray(labels, dtype=np.float32).reshape(len(embeddings), -1)
        linear = {}
        if "linear" in names:
            linear["linear"] = [
                LinearAcceptance(C=self.linear_C, seed=seed, tol=1e-3).fit(embeddings, Y[:, t])
                for t in range(Y.shape[1])
            ]
        neighbours = None
        if "knn" in names:
            neighbours = NeighbourAcceptance(k=self.knn_k).fit(embeddings, Y)
        return PreAnswerMembers(names, linear, neighbours)

    def choose(
        self,
        embeddings: FloatArray,
        labels: FloatArray,
        score: Callable[[FloatArray], float],
        seed: int = 0,
        candidates: Sequence[tuple[str, ...]] = CANDIDATES,
    ) -> MemberChoice:
        """The candidate subset whose averaged out-of-fold probabilities ``score`` best,
        refit on every row."""
        names, scores = choose_members(self.oof, score, candidates)
        return MemberChoice(
            self.refit(names, embeddings, labels, seed),
            np.mean([self.oof[n] for n in names], axis=0),
            scores,
            self,
        )


def cross_fit_members(
    embeddings: FloatArray,
    labels: FloatArray,
    folds: Folds,
    lgbm_oof: FloatArray,
    score: Callable[[FloatArray], float],
    seed: int = 0,
    ks: Sequence[int] = NEIGHBOUR_KS,
    Cs: Sequence[float] = LINEAR_CS,
) -> CrossFitMembers:
    """Cross-fit the extra members beside the boosters (whose out-of-fold probabilities are
    ``lgbm_oof``) and choose kNN's k and the regression's C by ``score`` out of fold."""
    Y = np.asarray(labels, dtype=np.float32).reshape(len(embeddings), -1)
    knn = neighbour_oof(embeddings, Y, folds, ks)
    knn_scores = {k: float(score(p)) for k, p in knn.items()}
    best_k = max(knn_scores, key=lambda k: (knn_scores[k], k))
    lin = linear_oof(embeddings, Y, folds, Cs, seed)
    linear_scores = {C: float(score(p)) for C, p in lin.items()}
    best_C = max(linear_scores, key=lambda C: (linear_scores[C], -C))
    oof = {"lgbm": np.asarray(lgbm_oof, dtype=np.float64), "linear": lin[best_C]}
    oof["knn"] = knn[best_k]
    return CrossFitMembers(oof, best_k, best_C, knn_scores, linear_scores)


@dataclass
class MemberChoice:
    """The chosen members refit on every row (``members``), their averaged out-of-fold
    probabilities (``oof``, n × tiers), every candidate subset's out-of-fold score (``scores``)
    and what the choice was made from (``cross_fit``)."""

    members: PreAnswerMembers
    oof: FloatArray
    scores: dict[str, float]
    cross_fit: CrossFitMembers
