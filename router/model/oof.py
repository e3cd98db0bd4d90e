"""Out-of-fold outcomes of a fitted model: what the policy is fitted (and certified) on."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from router.policy import CascadeSignals


@dataclass(frozen=True, eq=False)
class OutOfFold:
    """Every training row's probabilities from models fitted without it, with its outcomes.

    ``signals`` are exactly what the policy reads live (the chosen pre-answer members averaged,
    the answer-aware probabilities blended with them, the opinion-aware ones), each row scored by
    the models of the fold that held it out (``fold[j]``).  ``scores``, ``costs`` (n × tiers),
    ``steps`` and ``opinion_costs`` (n × opinion sources, or None) are the rows' recorded outcomes.
    """

    signals: CascadeSignals
    scores: np.ndarray
    costs: np.ndarray
    steps: np.ndarray
    opinion_costs: np.ndarray | None
    prompt_ids: np.ndarray
    fold: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.signals)
        sizes = {len(self.scores), len(self.costs), len(self.steps), len(self.prompt_ids)}
        sizes.add(len(self.fold))
        if self.opinion_costs is not None:
            sizes.add(len(self.opinion_costs))
        if sizes != {n}:
            raise ValueError(f"out-of-fold fields differ in length (signals: {n} rows)")

    def __len__(self) -> int:
        return len(self.signals)

    def fit_args(
        self,
    ) -> tuple[CascadeSignals, np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
        """``(signals, scores, costs, steps, opinion_costs)``: the arguments of
        :meth:`~router.policy.CascadePolicy.fit`, in its order."""
        return self.signals, self.scores, self.costs, self.steps, self.opinion_costs
