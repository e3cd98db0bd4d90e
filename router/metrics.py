"""Routing-quality metrics: deferral curves, PGR/APGR, CPT, AIQ, calibration, bootstrap.

Definitions follow ``docs/metrics.md``. "Frontier" means the top tier; "share" is the
fraction of requests that call it. Everything is numpy-vectorised and side-effect free.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import overload

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

__all__ = [
    "Curve",
    "aiq",
    "apgr",
    "bootstrap_interval",
    "cost_at_share",
    "cost_saved",
    "cpt",
    "cpt50",
    "cpt80",
    "cpt95",
    "deferral_curve",
    "expected_calibration_error",
    "oracle_escalation_score",
    "pgr",
    "policy_curve",
    "quality_at_share",
    "random_curve",
    "roc_auc",
    "share_at_quality",
]


@dataclass(frozen=True)
class Curve:
    """A set of operating points, sorted by non-decreasing frontier-call share.

    ``share`` is the frontier (top-tier) call share in [0, 1], ``quality`` the mean score
    and ``cost`` the mean $ per request at each point.
    """

    share: FloatArray
    quality: FloatArray
    cost: FloatArray

    def __post_init__(self) -> None:
        arrays = [np.asarray(a, dtype=np.float64) for a in (self.share, self.quality, self.cost)]
        if any(a.ndim != 1 for a in arrays) or len({a.size for a in arrays}) != 1:
            raise ValueError("Curve arrays must be 1-D and of equal length")
        if arrays[0].size == 0:
            raise ValueError("Curve needs at least one point")
        share = arrays[0]
        if np.any(np.diff(share) < 0) or share[0] < 0 or share[-1] > 1:
            raise ValueError("Curve share must be non-decreasing within [0, 1]")
        for name, a in zip(("share", "quality", "cost"), arrays, strict=True):
            a.setflags(write=False)
            object.__setattr__(self, name, a)

    def __len__(self) -> int:
        return int(self.share.size)


def _as_1d(x: npt.ArrayLike, name: str) -> FloatArray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {a.shape}")
    return a


def _per_prompt(x: npt.ArrayLike, n: int, name: str) -> FloatArray:
    """Broadcast a scalar or length-n cost to a length-n float array."""
    a = np.asarray(x, dtype=np.float64)
    if a.ndim > 1 or (a.ndim == 1 and a.size != n):
        raise ValueError(f"{name} must be a scalar or have length {n}, got shape {a.shape}")
    return np.broadcast_to(a, (n,)).astype(np.float64)


def deferral_curve(
    escalation_score: npt.ArrayLike,
    small_scores: npt.ArrayLike,
    frontier_scores: npt.ArrayLike,
    small_cost: npt.ArrayLike,
    frontier_cost: npt.ArrayLike,
    *,
    cascade: bool,
) -> Curve:
    """Curve of escalating the top-k prompts by ``escalation_score`` for k = 0..n.

    Prompts are escalated in descending score order; ties keep input order (NaN scores go
    last). With ``cascade=False`` (a router) an escalated prompt pays only the frontier
    cost; with ``cascade=True`` it pays small + frontier. Costs are scalars or per-prompt.
    """
    score = _as_1d(escalation_score, "escalation_score")
    small = _as_1d(small_scores, "small_scores")
    frontier = _as_1d(frontier_scores, "frontier_scores")
    n = score.size
    if small.size != n or frontier.size != n:
        raise ValueError("escalation_score, small_scores and frontier_scores differ in length")
    if n == 0:
        raise ValueError("deferral_curve needs at least one prompt")
    c_s = _per_prompt(small_cost, n, "small_cost")
    c_f = _per_prompt(frontier_cost, n, "frontier_cost")

    order = np.argsort(-score, kind="stable")
    extra_cost = c_f if cascade else c_f - c_s
    zero = np.zeros(1)
    quality = (small.sum() + np.concatenate([zero, np.cumsum((frontier - small)[order])])) / n
    cost = (c_s.sum() + np.concatenate([zero, np.cumsum(extra_cost[order])])) / n
    share = np.arange(n + 1, dtype=np.float64) / n
    return Curve(share=share, quality=quality, cost=cost)


@overload
def pgr(quality: float, q_small: float, q_frontier: float) -> float: ...
@overload
def pgr(quality: FloatArray, q_small: float, q_frontier: float) -> FloatArray: ...
def pgr(quality: float | FloatArray, q_small: float, q_frontier: float) -> float | FloatArray:
    """Performance gap recovered: (q − q_small) / (q_frontier − q_small); NaN if the gap is 0."""
    q = np.asarray(quality, dtype=np.float64)
    gap = float(q_frontier) - float(q_small)
    out = np.full_like(q, np.nan) if gap == 0 else (q - q_small) / gap
    return float(out) if out.ndim == 0 else out


def _trapezoid(y: FloatArray, x: FloatArray) -> float:
    return float(np.sum((y[1:] + y[:-1]) * np.diff(x)) / 2.0)


def apgr(curve: Curve, q_small: float, q_frontier: float, n_points: int = 101) -> float:
    """Area under PGR over share in [0, 1] (trapezoid on ``n_points`` evenly spaced shares).

    The curve is linearly interpolated in share (held flat beyond its ends). NaN if
    ``q_frontier == q_small``.
    """
    if n_points < 2:
        raise ValueError("n_points must be >= 2")
    if q_frontier == q_small:
        return float("nan")
    grid = np.linspace(0.0, 1.0, n_points)
    return _trapezoid(pgr(np.interp(grid, curve.share, curve.quality), q_small, q_frontier), grid)


def _first_crossing(share: FloatArray, values: FloatArray, level: float) -> float:
    """Smallest share where piecewise-linear ``values`` reaches ``level``; NaN if never."""
    hit = values >= level
    if not hit.any():
        return float("nan")
    i = int(np.argmax(hit))
    if i == 0:
        return float(share[0])
    v0, v1, s0, s1 = values[i - 1], values[i], share[i - 1], share[i]
    if not np.isfinite(v0):
        return float(s1)
    return float(s0 + (level - v0) / (v1 - v0) * (s1 - s0))


def cpt(curve: Curve, q_small: float, q_frontier: float, level: float) -> float:
    """Call-performance threshold: smallest share whose PGR ≥ ``level`` (interpolated).

    NaN if the level is never reached or ``q_frontier == q_small``.
    """
    if q_frontier == q_small:
        return float("nan")
    return _first_crossing(curve.share, pgr(curve.quality, q_small, q_frontier), level)


def cpt50(curve: Curve, q_small: float, q_frontier: float) -> float:
    """CPT(50%)."""
    return cpt(curve, q_small, q_frontier, 0.5)


def cpt80(curve: Curve, q_small: float, q_frontier: float) -> float:
    """CPT(80%)."""
    return cpt(curve, q_small, q_frontier, 0.8)


def cpt95(curve: Curve, q_small: float, q_frontier: float) -> float:
    """CPT(95%)."""
    return cpt(curve, q_small, q_frontier, 0.95)


def share_at_quality(curve: Curve, target_quality: float) -> float:
    """Smallest share with quality ≥ ``target_quality`` (interpolated); NaN if never."""
    return _first_crossing(curve.share, curve.quality, float(target_quality))


@overload
def cost_at_share(curve: Curve, share: float) -> float: ...
@overload
def cost_at_share(curve: Curve, share: FloatArray) -> FloatArray: ...
def cost_at_share(curve: Curve, share: float | FloatArray) -> float | FloatArray:
    """Mean cost per request at ``share`` (linear interpolation, flat beyond the ends)."""
    out = np.interp(share, curve.share, curve.cost)
    return float(out) if np.ndim(out) == 0 else np.asarray(out, dtype=np.float64)


@overload
def quality_at_share(curve: Curve, share: float) -> float: ...
@overload
def quality_at_share(curve: Curve, share: FloatArray) -> FloatArray: ...
def quality_at_share(curve: Curve, share: float | FloatArray) -> float | FloatArray:
    """Mean quality at ``share`` (linear interpolation, flat beyond the ends)."""
    out = np.interp(share, curve.share, curve.quality)
    return float(out) if np.ndim(out) == 0 else np.asarray(out, dtype=np.float64)


def cost_saved(cost: float, frontier_cost: float) -> float:
    """1 − cost / always-frontier mean cost; NaN if the frontier cost is 0."""
    return float("nan") if frontier_cost == 0 else 1.0 - float(cost) / float(frontier_cost)


def _cross(o: FloatArray, a: FloatArray, b: FloatArray) -> float:
    return float((a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0]))


def aiq(cost: npt.ArrayLike, quality: npt.ArrayLike) -> float:
    """Average improvement in quality (RouterBench).

    Area under the non-decreasing upper convex hull of the (cost, quality) points, held
    flat from its best point to the largest cost, divided by the cost range. With a
    single distinct cost it is the best quality there.
    """
    c, q = _as_1d(cost, "cost"), _as_1d(quality, "quality")
    if c.size != q.size or c.size == 0:
        raise ValueError("cost and quality must be non-empty and of equal length")
    c_min, c_max = float(c.min()), float(c.max())
    if c_max == c_min:
        return float(q.max())
    order = np.lexsort((-q, c))  # by cost, then best quality first
    pts = np.column_stack([c[order], q[order]])
    hull: list[FloatArray] = []  # upper hull, monotone chain (left to right)
    for p in pts:
        if hull and p[0] == hull[-1][0]:
            continue  # same cost, lower quality
        while len(hull) >= 2 and _cross(hull[-2], hull[-1], p) >= 0:
            hull.pop()
        hull.append(p)
    h = np.array(hull)
    best = int(np.argmax(h[:, 1]))  # non-decreasing part ends at the best point
    h = h[: best + 1]
    x = np.append(h[:, 0], c_max)
    y = np.append(h[:, 1], h[-1, 1])
    return _trapezoid(y, x) / (c_max - c_min)


def expected_calibration_error(p: npt.ArrayLike, y: npt.ArrayLike, n_bins: int = 10) -> float:
    """ECE with ``n_bins`` equal-width bins on [0, 1], weighted by bin count."""
    prob, lab = _as_1d(p, "p"), _as_1d(y, "y")
    if prob.size != lab.size or prob.size == 0:
        raise ValueError("p and y must be non-empty and of equal length")
    bins = np.clip((prob * n_bins).astype(np.int64), 0, n_bins - 1)
    count = np.bincount(bins, minlength=n_bins)
    gap = np.bincount(bins, weights=prob, minlength=n_bins) - np.bincount(
        bins, weights=lab, minlength=n_bins
    )
    # sum_b |mean_p − mean_y| · count_b / n  ==  sum_b |sum_p − sum_y| / n
    return float(np.abs(gap[count > 0]).sum() / prob.size)


def roc_auc(p: npt.ArrayLike, y: npt.ArrayLike) -> float:
    """ROC AUC of scores ``p`` against binary labels ``y`` (ties count half); NaN if one class."""
    score, lab = _as_1d(p, "p"), _as_1d(y, "y") > 0.5
    if score.size != lab.size:
        raise ValueError("p and y must be of equal length")
    n_pos = int(lab.sum())
    n_neg = lab.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    _, inv, counts = np.unique(score, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    ranks = ((ends - counts + 1 + ends) / 2.0)[inv]  # average ranks, 1-based
    return float((ranks[lab].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def random_curve(
    small_scores: npt.ArrayLike,
    frontier_scores: npt.ArrayLike,
    small_cost: npt.ArrayLike,
    frontier_cost: npt.ArrayLike,
    n_points: int = 101,
    *,
    cascade: bool = False,
) -> Curve:
    """Expected curve of uniform random escalation: linear in share between the endpoints."""
    small = _as_1d(small_scores, "small_scores")
    frontier = _as_1d(frontier_scores, "frontier_scores")
    n = small.size
    if frontier.size != n or n == 0:
        raise ValueError("small_scores and frontier_scores must be non-empty, equal length")
    c_s = float(_per_prompt(small_cost, n, "small_cost").mean())
    c_f = float(_per_prompt(frontier_cost, n, "frontier_cost").mean())
    share = np.linspace(0.0, 1.0, n_points)
    q_s, q_f = float(small.mean()), float(frontier.mean())
    extra = c_f if cascade else c_f - c_s
    return Curve(share=share, quality=q_s + share * (q_f - q_s), cost=c_s + share * extra)


def oracle_escalation_score(
    small_scores: npt.ArrayLike, frontier_scores: npt.ArrayLike
) -> FloatArray:
    """Oracle escalation score: frontier − small gain (peeks at the true scores)."""
    small = _as_1d(small_scores, "small_scores")
    frontier = _as_1d(frontier_scores, "frontier_scores")
    if small.size != frontier.size:
        raise ValueError("small_scores and frontier_scores differ in length")
    return frontier - small


def bootstrap_interval(
    statistic: Callable[[npt.NDArray[np.intp]], float],
    n: int,
    n_resamples: int = 200,
    seed: int = 0,
    alpha: float = 0.05,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic`` over resampled index arrays.

    ``statistic`` receives the indices (length ``n``, drawn with replacement) of one
    resample. NaN results are ignored; (nan, nan) if all are NaN.
    """
    if n <= 0 or n_resamples <= 0:
        raise ValueError("n and n_resamples must be positive")
    idx = np.random.default_rng(seed).integers(0, n, size=(n_resamples, n))
    vals = np.array([statistic(i) for i in idx], dtype=np.float64)
    vals = vals[~np.isnan(vals)]
    if vals.size == 0:
        return float("nan"), float("nan")
    lo, hi = np.quantile(vals, [alpha / 2.0, 1.0 - alpha / 2.0])
    return float(lo), float(hi)


def policy_curve(points: Sequence[tuple[float, float, float]]) -> Curve:
    """Curve from (share, quality, cost) operating points of an N-tier policy sweep.

    Points are sorted by share; at a repeated share the best point (highest quality, then
    lowest cost) is kept. Endpoints at share 0 and 1 are not invented.
    """
    arr = np.asarray(points, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 3 or arr.shape[0] == 0:
        raise ValueError("points must be a non-empty sequence of (share, quality, cost)")
    if not np.isfinite(arr).all():
        raise ValueError("points must be finite")
    order = np.lexsort((arr[:, 2], -arr[:, 1], arr[:, 0]))  # share, then -quality, then cost
    arr = arr[order]
    keep = np.concatenate([[True], np.diff(arr[:, 0]) != 0])
    arr = arr[keep]
    return Curve(share=arr[:, 0], quality=arr[:, 1], cost=arr[:, 2])
