"""The probabilities the policy reads for each request, offline or live."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from router.errors import NotFittedError


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
