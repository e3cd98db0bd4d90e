"""An anytime-valid confidence sequence for the mean of [0, 1] values seen one at a time.

The hedged betting confidence sequence of Waudby-Smith & Ramdas (2023): for each candidate
mean ``m`` on a grid, two gamblers bet that the values run above and below ``m``, with
predictable bets; their hedged capital is a non-negative martingale when ``m`` is the true mean,
so by Ville's inequality it ever reaches ``1 / alpha`` with probability at most ``alpha``.  The
means whose capital never did form the sequence (a running intersection), and with probability
at least ``1 - alpha`` the true mean stays inside it *at every time at once*: a monitor may
look after every label and stop the first time the interval leaves a promised range, without
the false alarms that repeated fixed-sample tests pile up.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np


class BettingConfidenceSequence:
    """Online hedged-capital confidence sequence for the mean of values in [0, 1]."""

    def __init__(self, alpha: float = 0.05, grid_size: int = 1000, cap: float = 0.5) -> None:
        if not 0.0 < alpha < 1.0:
            raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
        self.alpha, self.cap = float(alpha), float(cap)
        self.grid = (np.arange(grid_size) + 0.5) / grid_size
        self._log_up = np.zeros(grid_size)  # capital of betting the mean is above m
        self._log_down = np.zeros(grid_size)
        self._alive = np.ones(grid_size, dtype=bool)
        self._threshold = math.log(1.0 / alpha)
        self.n = 0
        self._sum = 0.0
        self._sq = 0.0  # sum of squared deviations from the running means

    def update(self, x: float) -> None:
        """Add one value in [0, 1]."""
        x = min(max(float(x), 0.0), 1.0)
        t = self.n + 1
        var = (0.25 + self._sq) / t  # from the values before this one: predictable
        bet = math.sqrt(2.0 * math.log(2.0 / self.alpha) / (var * t * math.log(t + 1.0)))
        m = self.grid
        up = np.minimum(bet, self.cap / m)
        down = np.minimum(bet, self.cap / (1.0 - m))
        self._log_up += np.log1p(up * (x - m))
        self._log_down += np.log1p(-down * (x - m))
        hedged = np.logaddexp(self._log_up, self._log_down) - math.log(2.0)
        self._alive &= hedged < self._threshold
        self.n = t
        self._sum += x
        mean = (0.5 + self._sum) / (t + 1)
        self._sq += (x - mean) ** 2

    def extend(self, values: Iterable[float]) -> BettingConfidenceSequence:
        for x in values:
            self.update(x)
        return self

    @property
    def mean(self) -> float:
        return self._sum / self.n if self.n else float("nan")

    @property
    def interval(self) -> tuple[float, float]:
        """(lower, upper): the means not yet excluded (the whole [0, 1] before any value)."""
        alive = np.flatnonzero(self._alive)
        if len(alive) == 0:  # every grid mean excluded: the sample mean's cell
            return (self.mean, self.mean)
        step = 0.5 / len(self.grid)
        return (
            max(0.0, float(self.grid[alive[0]] - step)),
            min(1.0, float(self.grid[alive[-1]] + step)),
        )
