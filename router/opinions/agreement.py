"""Agreement between the first tier's answer and its second opinions, as features.

Two answers agree when their normalised forms are equal (:mod:`router.answers.normalise`); two
free-text answers agree when their embeddings' cosine similarity reaches a threshold learned on
data (:meth:`AgreementScorer.fit`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from router.answers.normalise import NormaliserRegistry

#: Columns of :meth:`AgreementScorer.features`.
AGREEMENT_COLUMNS = (
    "n_opinions",
    "agreement_rate",
    "largest_cluster_share",
    "first_in_largest_cluster",
    "first_parsed",
    "opinions_parsed_share",
    "max_similarity",
)
N_AGREEMENT = len(AGREEMENT_COLUMNS)


def _clusters(keys: Sequence[str | None], similar: np.ndarray | None) -> list[int]:
    """Cluster label per answer: equal keys, else (free text) similarity ≥ threshold."""
    n = len(keys)
    labels = list(range(n))

    def find(i: int) -> int:
        while labels[i] != i:
            i = labels[i]
        return i

    for i in range(n):
        for j in range(i + 1, n):
            same = keys[i] is not None and keys[i] == keys[j]
            if keys[i] is None and keys[j] is None and similar is not None:
                same = bool(similar[i, j])
            if same:
                labels[find(j)] = find(i)
    return [find(i) for i in range(n)]


@dataclass
class AgreementScorer:
    """Agreement features of a first answer and its second opinions.

    ``threshold`` is the cosine similarity above which two free-text answers count as the
    same answer; :meth:`fit` learns it from answers whose correctness is known.
    """

    registry: NormaliserRegistry
    threshold: float = 0.85

    def needs_embeddings(self, step: str, answers: Sequence[str | None]) -> bool:
        """Whether free-text comparison (and so answer embeddings) is needed for this row."""
        normaliser = self.registry.for_step(step)
        return any(normaliser.normalise(a) is None for a in answers)

    def features(
        self,
        step: str,
        first: str | None,
        opinions: Sequence[str | None],
        embeddings: np.ndarray | None = None,
    ) -> np.ndarray:
        """One row of :data:`AGREEMENT_COLUMNS` (``embeddings``: first answer then opinions)."""
        normaliser = self.registry.for_step(step)
        answers = [first, *opinions]
        keys = [normaliser.normalise(a) for a in answers]
        similarity = None
        similar = None
        if embeddings is not None and len(embeddings) == len(answers):
            similarity = _cosine(embeddings)
            similar = similarity >= self.threshold
        labels = _clusters(keys, similar)
        k = len(opinions)
        out = np.full(N_AGREEMENT, np.nan, dtype=np.float32)
        out[0] = k
        out[4] = 1.0 if keys[0] is not None else 0.0
        if k == 0:
            return out
        counts = np.bincount(labels)
        out[1] = float(np.mean([labels[j] == labels[0] for j in range(1, k + 1)]))
        out[2] = counts.max() / (k + 1)
        out[3] = 1.0 if counts[labels[0]] == counts.max() else 0.0
        out[5] = float(np.mean([key is not None for key in keys[1:]]))
        if similarity is not None:
            out[6] = float(similarity[0, 1:].max())
        return out

    def fit(
        self,
        first_embeddings: np.ndarray,
        opinion_embeddings: np.ndarray,
        first_correct: np.ndarray,
    ) -> AgreementScorer:
        """Learn the free-text threshold: the similarity cut that best separates right first
        answers from wrong ones (balanced accuracy), over pairs of first answer and opinion."""
        sim = np.sum(_unit(first_embeddings) * _unit(opinion_embeddings), axis=1)
        y = np.asarray(first_correct).astype(bool)
        if len(sim) < 20 or y.all() or not y.any():
            return self
        best, best_score = self.threshold, -1.0
        for cut in np.unique(np.quantile(sim, np.linspace(0.02, 0.98, 97))):
            agree = sim >= cut
            score = 0.5 * (agree[y].mean() + (~agree[~y]).mean())
            if score > best_score:
                best, best_score = float(cut), float(score)
        self.threshold = best
        return self


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norm > 0, norm, 1.0)


def _cosine(x: np.ndarray) -> np.ndarray:
    u = _unit(x)
    return u @ u.T
