"""Valid p-values for the null "the mean of a [0, 1]-bounded loss exceeds alpha".

Each function tests, for every column of a loss matrix (one column per candidate operating
point, one row per calibration outcome, rows i.i.d.), the null ``E[X] >= alpha``; a p-value
``p`` satisfies ``P(p <= d) <= d`` for every ``d`` under the null, which is all that
Learn-then-Test needs.

* :func:`wsr_pvalues`: the betting test of Waudby-Smith & Ramdas (2023). The capital
  ``K_t = prod_{i<=t} (1 + lam_i (alpha - X_i))`` with a predictable bet ``0 <= lam_i <=
  cap / (1 - alpha)`` is a non-negative supermartingale under the null, so by Ville's
  inequality ``1 / max_t K_t`` is a valid p-value.  The bet grows where the losses vary little,
  so it adapts to the variance: it certifies more than Hoeffding-type bounds on the few hundred
  outcomes of a small calibration split, and on low-variance losses (a cost scaled by its
  largest value).
* :func:`hb_pvalues`: Hoeffding-Bentkus, from the mean alone (cheap, conservative).
"""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import binom

#: the p-value methods, by name
METHODS = ("wsr", "hb")


def wsr_pvalues(
    X: np.ndarray, alpha: float, delta: float | np.ndarray, cap: float = 0.5
) -> np.ndarray:
    """Betting p-values of ``E[X[:, j]] >= alpha`` for every column of ``X`` (n x J, in [0, 1],
    rows in a data-independent order).  ``delta`` only tunes the bet size; an array of them
    gives one row of p-values per value, (D, J), sharing the running moments."""
    X = np.asarray(X, dtype=np.float64)
    if X.ndim == 1:
        X = X[:, None]
    deltas = np.atleast_1d(np.asarray(delta, dtype=np.float64))
    n, width = X.shape
    if alpha >= 1.0:
        out = np.zeros((len(deltas), width))  # a mean of [0, 1] losses never exceeds 1
    elif alpha <= 0.0 or n == 0:
        out = np.ones((len(deltas), width))
    else:
        t = np.arange(1, n + 1, dtype=np.float64)[:, None]
        mu = (0.5 + np.cumsum(X, axis=0)) / (t + 1)
        var = (0.25 + np.cumsum((X - mu) ** 2, axis=0)) / (t + 1)
        # predictable: the bet on row i reads rows before it only
        scale = 1.0 / np.sqrt(n * np.vstack([np.full((1, width), 0.25), var[:-1]]))
        edge = alpha - X
        out = np.empty((len(deltas), width))
        for k, d in enumerate(deltas):
            bet = np.minimum(math.sqrt(2.0 * math.log(1.0 / d)) * scale, cap / (1.0 - alpha))
            log_capital = np.cumsum(np.log1p(bet * edge), axis=0)
            out[k] = np.minimum(1.0, np.exp(-np.maximum(log_capital.max(axis=0), 0.0)))
    return out if np.ndim(delta) else out[0]


def hb_pvalues(means: np.ndarray, alpha: float, n: int) -> np.ndarray:
    """Hoeffding-Bentkus p-values of ``E[X] >= alpha`` from the empirical means of ``n``
    [0, 1]-bounded losses."""
    rhat = np.atleast_1d(np.asarray(means, dtype=np.float64))
    if alpha >= 1.0:
        return np.zeros_like(rhat)
    if alpha <= 0.0 or n == 0:
        return np.ones_like(rhat)
    a = np.clip(rhat, 1e-12, 1 - 1e-12)
    kl = a * np.log(a / alpha) + (1 - a) * np.log((1 - a) / (1 - alpha))
    hoeffding = np.exp(-n * kl)
    bentkus = math.e * binom.cdf(np.ceil(n * rhat), n, alpha)
    return np.where(rhat >= alpha, 1.0, np.minimum(np.minimum(hoeffding, bentkus), 1.0))


def pvalues(method: str, X: np.ndarray, alpha: float, delta: float | np.ndarray) -> np.ndarray:
    """The p-values of ``method`` (one of :data:`METHODS`) for every column of ``X``; with an
    array of ``delta`` one row per value (the betting test sizes its bets by it)."""
    if method == "wsr":
        return wsr_pvalues(X, alpha, delta)
    if method == "hb":
        p = hb_pvalues(np.asarray(X, dtype=np.float64).mean(axis=0), alpha, len(X))
        return np.tile(p, (len(np.atleast_1d(delta)), 1)) if np.ndim(delta) else p
    raise ValueError(f"unknown certification method {method!r} (use one of {', '.join(METHODS)})")
