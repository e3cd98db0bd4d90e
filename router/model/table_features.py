"""Feature matrices of a whole outcome table, as the acceptance models read them."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from router.features import StepVocabulary


@dataclass
class OpinionInputs:
    """What the opinion features of the first tier are computed from (one source).

    ``opinions[j]`` holds the source's opinions on row ``j``; ``embeddings[j]`` (first answer,
    then the opinions) exists only for rows compared as free text.
    """

    steps: list[str]
    first: list[str | None]
    opinions: list[list[str | None]]
    embeddings: dict[int, np.ndarray] = field(default_factory=dict)

    def subset(self, index: np.ndarray) -> OpinionInputs:
        idx = [int(i) for i in np.asarray(index).reshape(-1)]
        position = {old: new for new, old in enumerate(idx)}
        return OpinionInputs(
            [self.steps[i] for i in idx],
            [self.first[i] for i in idx],
            [self.opinions[i] for i in idx],
            {position[i]: e for i, e in self.embeddings.items() if i in position},
        )


@dataclass
class TableFeatures:
    """Feature matrices of a table: the input features and, per tier, the answer features.

    Column 0 of every matrix is the step code, which depends on the fitted model's step
    vocabulary; ``steps`` keeps the rows' step kinds so that a model re-encodes that column
    with its own vocabulary (:meth:`encoded`) whenever the features were made before it was
    fitted (they hold NaN there: unknown).
    """

    inputs: np.ndarray
    answers: dict[int, np.ndarray]
    #: per opinion source (by name), what its opinion features are computed from
    opinions: dict[str, OpinionInputs] = field(default_factory=dict)
    #: the rows' step kinds (None: the step column is taken as encoded)
    steps: np.ndarray | None = None

    def encoded(self, vocabulary: StepVocabulary) -> TableFeatures:
        """These features with the step column encoded by ``vocabulary`` (self when it already
        is; otherwise copies: the caller's matrices are never changed)."""
        if self.steps is None:
            return self
        codes = vocabulary.encode(self.steps)
        if np.array_equal(self.inputs[:, 0], codes):
            return self

        def with_codes(X: np.ndarray) -> np.ndarray:
            out = X.copy()
            out[:, 0] = codes
            return out

        return replace(
            self,
            inputs=with_codes(self.inputs),
            answers={i: with_codes(X) for i, X in self.answers.items()},
        )


def subset_features(feats: TableFeatures, index: np.ndarray) -> TableFeatures:
    """Rows ``index`` of every feature matrix."""
    return TableFeatures(
        feats.inputs[index],
        {i: X[index] for i, X in feats.answers.items()},
        {name: o.subset(index) for name, o in feats.opinions.items()},
        None if feats.steps is None else np.asarray(feats.steps)[index],
    )
