"""Anytime-valid inference on [0, 1] values seen one at a time: a confidence sequence for
their mean, and a test that their mean stays on one side of a level.

* :class:`BettingConfidenceSequence`: the hedged betting confidence sequence of Waudby-Smith &
  Ramdas (2023).  For each candidate mean ``m`` on a grid, two gamblers bet that the values
  run above and below ``m`` with predictable bets; their hedged capital is a non-negative
  martingale when ``m`` is the true mean, so by Ville's inequality it ever reaches
  ``1 / alpha`` with probability at most ``alpha``: the means whose capital is below it hold
  the true mean *at every time at once* with probability ``1 - alpha``.
* :class:`BettingTest`: the one-sided test behind a production alarm.  Its null is that every
  value's mean given the past is on the promised side of the level (it may change over time);
  the capital of betting against it is then a non-negative supermartingale, and the alarm (the
  capital reaching ``1 / alpha``) rings with probability at most ``alpha`` over the whole
  stream, however often it is read.  The bet is sized from an exponentially weighted estimate
  of the recent values, so it stakes nothing while they look fine and reacts to a shift that
  comes after a long good stretch.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

#: the reported capital is capped here (about 1e300; a float ends near 1.8e308)
_LOG_EVIDENCE_CAP = 300 * math.log(10)


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
        self._alive = hedged < self._threshold
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


class BettingTest:
    """Anytime-valid test that the values' mean stays at or above ``level`` (``side="above"``,
    the alarm rings when they run below it) or at or below it (``side="below"``)."""

    def __init__(
        self, level: float, side: str = "above", alpha: float = 0.05, memory: float = 0.02
    ) -> None:
        if side not in ("above", "below"):
            raise ValueError("side is 'above' or 'below'")
        self.level, self.side, self.alpha, self.memory = float(level), side, float(alpha), memory
        self.log_capital = 0.0
        self._mean, self._var = self.level, 0.25  # no bet before any evidence
        self._alarm = False
        self.n = 0

    def update(self, x: float) -> None:
        """Add one value in [0, 1]."""
        x = min(max(float(x), 0.0), 1.0)
        sign = 1.0 if self.side == "above" else -1.0
        # payoff of one unit staked against the null: positive when x falls on the wrong side
        edge = sign * (self.level - self._mean)
        limit = 0.5 / (1.0 - self.level if sign > 0 else self.level) if 0 < self.level < 1 else 0
        bet = min(max(edge / (self._var + edge * edge), 0.0), limit)
        self.log_capital += math.log1p(bet * sign * (self.level - x))
        self._alarm |= self.log_capital >= math.log(1.0 / self.alpha)
        delta = x - self._mean
        self._mean += self.memory * delta
        self._var = (1 - self.memory) * (self._var + self.memory * delta * delta)
        self.n += 1

    def extend(self, values: Iterable[float]) -> BettingTest:
        for x in values:
            self.update(x)
        return self

    @property
    def alarm(self) -> bool:
        """The null was rejected at some time (it stays rejected)."""
        return self._alarm

    @property
    def evidence(self) -> float:
        """The current capital (an e-value against the null), at most 1e300: a promise broken
        over a million requests grows it past what a float holds, and far past any alarm level."""
        return math.exp(min(self.log_capital, _LOG_EVIDENCE_CAP))
