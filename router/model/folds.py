"""K-fold partitions of a training table for cross-fitting (out-of-fold predictions)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from router.errors import ConfigurationError


@dataclass(frozen=True)
class Folds:
    """Which of ``k`` folds holds out each training row (``fold[j]`` in ``0 .. k-1``).

    Rows are dealt to folds by prompt id, so the partition does not depend on the row order;
    within each stratum (e.g. the joint outcome of the first and top tiers) rows are dealt
    round-robin, so every fold sees every kind of row in the same proportion.
    """

    fold: np.ndarray
    k: int

    def __post_init__(self) -> None:
        if self.k < 2:
            raise ConfigurationError(f"cross-fitting needs at least 2 folds, got {self.k}")

    @classmethod
    def make(cls, prompt_ids: np.ndarray, strata: np.ndarray | None, k: int, seed: int) -> Folds:
        """Seeded stratified folds over rows identified by ``prompt_ids``."""
        n = len(prompt_ids)
        if k < 2 or k > n:
            raise ConfigurationError(f"cannot make {k} folds of {n} rows (2 <= k <= rows)")
        groups = np.zeros(n, dtype=np.int64) if strata is None else np.asarray(strata)
        order = np.argsort(np.asarray(prompt_ids).astype(str), kind="stable")
        rng = np.random.default_rng(seed)
        shuffled = order[rng.permutation(n)]
        fold = np.empty(n, dtype=np.int64)
        for stratum in np.unique(groups):
            rows = shuffled[groups[shuffled] == stratum]
            fold[rows] = (int(rng.integers(k)) + np.arange(len(rows))) % k
        return cls(fold, int(k))

    def __len__(self) -> int:
        return len(self.fold)

    def held(self, k: int) -> np.ndarray:
        """Rows that fold ``k`` scores (sorted)."""
        return np.flatnonzero(self.fold == k)

    def train(self, k: int) -> np.ndarray:
        """Rows the models of fold ``k`` are fitted on (sorted)."""
        return np.flatnonzero(self.fold != k)
