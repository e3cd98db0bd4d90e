"""How a training table's rows are shared out between fitting, early stopping and calibration."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    pass


@dataclass(frozen=True)
class FitSplits:
    """Row indices of an OutcomeTable used to fit boosters, stop them early, and calibrate."""

    fit: np.ndarray
    val: np.ndarray
    cal: np.ndarray

    @classmethod
    def make(cls, prompt_ids: np.ndarray, val: float, cal: float, seed: int) -> FitSplits:
        order = np.argsort(np.asarray(prompt_ids).astype(str), kind="stable")
        perm = order[np.random.default_rng(seed).permutation(len(order))]
        n_val, n_cal = round(len(perm) * val), round(len(perm) * cal)
        return cls(
            np.sort(perm[n_val + n_cal :]),
            np.sort(perm[:n_val]),
            np.sort(perm[n_val : n_val + n_cal]),
        )
