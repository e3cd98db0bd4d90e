"""Feature matrices of a whole outcome table, as the acceptance models read them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    pass


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
    """Feature matrices of a table: the input features and, per tier, the answer features."""

    inputs: np.ndarray
    answers: dict[int, np.ndarray]
    #: per opinion source (by name), what its opinion features are computed from
    opinions: dict[str, OpinionInputs] = field(default_factory=dict)


def subset_features(feats: TableFeatures, index: np.ndarray) -> TableFeatures:
    """Rows ``index`` of every feature matrix."""
    return TableFeatures(
        feats.inputs[index],
        {i: X[index] for i, X in feats.answers.items()},
        {name: o.subset(index) for name, o in feats.opinions.items()},
    )
