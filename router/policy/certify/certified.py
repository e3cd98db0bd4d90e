"""Certified operating points of a fitted policy, for its own target and for any asked later.

Fitting (:meth:`CertifiedPoints.fit`) splits the calibration outcomes, seeded, in two:

* the **selection** rows (``selection_fraction``, default a quarter) fix everything about the
  candidate points that is learnt from data: the cost weights (quantiles of the gains), each
  weight's skip thresholds (the tolerance rule) and the opinion bands (chosen for the target as
  an uncertified fit would);
* the **testing** rows run every candidate point, and Learn-then-Test (:mod:`.ltt`) certifies
  on them.  The path is fixed before the testing outcomes are seen, which is what makes the
  p-values valid.

Groups: the global group (every testing row) and, when the data has several step kinds, each
step with at least ``min_step_samples`` testing rows.  The risk is split evenly across the
groups (Bonferroni), so with probability at least ``1 - delta`` every group's statement holds at
once: a step with its own point keeps the target on that step's traffic; a step without one
runs the global point, whose statement is about the pooled traffic.  Whether a target is
certifiable at all is judged on the global group; a step whose own outcomes certify only
"always the top tier" for a quality target runs that (its certificate says so).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from router.errors import TargetNotCertifiableError
from router.policy.certify.certificate import Certificate, target_phrase
from router.policy.certify.ltt import (
    COST,
    QUALITY,
    SHARE,
    CandidatePath,
    Choice,
    PathMeans,
    PathOutcomes,
    certified_mask,
    certify_outcomes,
    choose,
)
from router.policy.certify.pvalues import METHODS
from router.policy.certify.table import (
    COST_FRACTIONS,
    QUALITY_GRID,
    CertificateTable,
    RoundedTarget,
)
from router.policy.fitting import choose_operating_point
from router.policy.rules import Band
from router.policy.signals import CascadeSignals
from router.policy.target import Target

GLOBAL = "global"
#: certificates of other targets kept per policy (a cell of the table or a direct one each)
CACHE_SIZE = 4096
#: what the certificate cache holds for a target that is not certifiable
_REFUSED: Any = object()
_SHORT = {QUALITY: "quality", SHARE: "share", COST: "cost"}


@dataclass(frozen=True)
class TestingRows:
    """The calibration outcomes Learn-then-Test certifies on."""

    signals: CascadeSignals
    scores: np.ndarray
    costs: np.ndarray
    steps: np.ndarray
    opinion_costs: np.ndarray | None
    tier_weights: np.ndarray

    def __len__(self) -> int:
        return len(self.scores)


def selection_mask(n: int, fraction: float, seed: int) -> np.ndarray:
    """Which calibration rows select the path (seeded; the rest test it)."""
    mask = np.zeros(n, dtype=bool)
    chosen = np.random.default_rng(seed).permutation(n)[: round(fraction * n)]
    mask[chosen] = True
    return mask


def testing_order(selection: np.ndarray, seed: int) -> np.ndarray:
    """The testing rows (those not selecting), in a seeded random order.

    The betting test reads its outcomes as a sequence, and its bets use the outcomes before
    each one: it is valid when that order carries no information, which a table's own order
    (sorted by prompt id, so often grouped by task) does not guarantee.
    """
    rows = np.flatnonzero(~np.asarray(selection, dtype=bool))
    return np.random.default_rng([seed, 1]).permutation(rows)


def step_groups(steps: np.ndarray, min_samples: int) -> dict[str, np.ndarray]:
    """The global group, then each step kind with enough testing rows (when there are several)."""
    groups = {GLOBAL: np.arange(len(steps))}
    kinds, counts = np.unique(np.asarray(steps).astype(str), return_counts=True)
    if len(kinds) > 1:
        for kind, count in zip(kinds, counts, strict=True):
            if count >= min_samples and str(kind) != GLOBAL:
                groups[str(kind)] = np.flatnonzero(np.asarray(steps).astype(str) == kind)
    return groups


def short(target: Target) -> str:
    """A target as a user writes it: ``quality=0.93,share=0.5``."""
    return ",".join(f"{_SHORT[k]}={v:g}" for k, v in target.constraints().items())


class CertifiedPoints:
    """The certified side of a fitted policy (see the module docstring)."""

    def __init__(
        self,
        *,
        method: str,
        default_delta: float,
        target: Target,
        path: CandidatePath,
        rows: TestingRows,
        min_step_samples: int,
        cost_bound: float,
        table: CertificateTable | None,
        means: dict[str, PathMeans] | None = None,
    ) -> None:
        if method not in METHODS:
            raise ValueError(f"unknown certification method {method!r}")
        self.method, self.default_delta, self.target = method, float(default_delta), target
        self.path, self.rows, self.cost_bound, self.table = path, rows, float(cost_bound), table
        self.groups = step_groups(rows.steps, min_step_samples)
        self._outcomes: PathOutcomes | None = None
        self._lock = threading.Lock()
        self._cache: dict[Any, Any] = {}  # Certificate or _REFUSED
        self.means = (
            means
            if means is not None
            else {g: self.outcomes.subset(r).means() for g, r in self.groups.items()}
        )
        self.own: dict[str, Certificate] = {}

    # ------------------------------------------------------------------ fitting
    @classmethod
    def fit(
        cls,
        signals: CascadeSignals,
        scores: np.ndarray,
        costs: np.ndarray,
        steps: np.ndarray,
        opinion_costs: np.ndarray | None,
        *,
        target: Target,
        tier_weights: np.ndarray,
        skip_tolerance: float | None,
        grid_size: int,
        min_step_samples: int,
        margin_z: float,
        method: str = "wsr",
        delta: float = 0.1,
        selection_fraction: float = 0.25,
        seed: int = 0,
        table: bool = True,
    ) -> tuple[CertifiedPoints, np.ndarray]:
        """Select the path, test it, certify ``target``; also the selection mask."""
        n = len(scores)
        select = selection_mask(n, selection_fraction, seed)
        sel, test = np.flatnonzero(select), testing_order(select, seed)
        bands: tuple[Band | None, ...] = ()
        if signals.has_opinions and opinion_costs is not None and len(sel):
            bands = choose_operating_point(
                target,
                signals.subset(sel),
                scores[sel],
                costs[sel],
                tier_weights,
                skip_tolerance,
                grid_size,
                margin_z,
                opinion_costs[sel],
            ).opinion_bands
        path = CandidatePath.fit(
            signals.subset(sel), tier_weights, skip_tolerance, grid_size, bands
        )
        rows = TestingRows(
            signals.subset(test),
            scores[test],
            costs[test],
            np.asarray(steps)[test],
            None if opinion_costs is None else opinion_costs[test],
            tier_weights,
        )
        certified = cls(
            method=method,
            default_delta=target.delta if target.delta is not None else delta,
            target=target,
            path=path,
            rows=rows,
            min_step_samples=min_step_samples,
            cost_bound=cost_bound(costs, opinion_costs),
            table=None,
        )
        certified.own = certified.certificates(target)
        if table:
            certified.table = CertificateTable.build(
                {g: certified.outcomes.subset(r) for g, r in certified.groups.items()},
                certified.splits,
                method,
                float(certified.means[GLOBAL].cost[0]),
            )
            certified._outcomes = None  # tens of MB; rebuilt if an off-table target needs them
        return certified, select

    def __getstate__(self) -> dict[str, Any]:
        # a copy (deepcopy, pickle to a worker) rebuilds its lock, cache and outcomes
        state = dict(self.__dict__)
        state.update(_lock=None, _cache={}, _outcomes=None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    @property
    def splits(self) -> int:
        """How many groups share the risk."""
        return len(self.groups)

    @property
    def outcomes(self) -> PathOutcomes:
        """Every candidate point run on the testing rows (rebuilt on first use after loading)."""
        if self._outcomes is None:
            r = self.rows
            self._outcomes = PathOutcomes.walk(
                self.path,
                r.signals,
                r.scores,
                r.costs,
                r.tier_weights,
                self.cost_bound,
                r.opinion_costs,
            )
        return self._outcomes

    # ------------------------------------------------------------------ certificates
    def group_of(self, step: str | None) -> str:
        return str(step) if step is not None and str(step) in self.groups else GLOBAL

    def delta_of(self, target: Target) -> float:
        return float(target.delta) if target.delta is not None else self.default_delta

    def certificate(self, step: str | None, target: Target | None = None) -> Certificate:
        """The certificate of the point a request of ``step`` runs for ``target`` (default: the
        policy's own); raises :class:`TargetNotCertifiableError` when it is not certifiable."""
        target = target or self.target
        group = self.group_of(step)
        if self.own and _same(target, self.target, self):
            return self.own[group]
        self._certify(GLOBAL, target)  # whether the target is certifiable at all
        return self._certify(group, target)

    def certificates(self, target: Target | None = None) -> dict[str, Certificate]:
        """Every group's certificate for ``target``: global first, then the steps."""
        target = target or self.target
        if self.own and _same(target, self.target, self):
            return dict(self.own)
        return {g: self._certify(g, target) for g in self.groups}

    def _certify(self, group: str, target: Target) -> Certificate:
        cert = self._certified(group, target)
        if cert is None:
            delta = self.delta_of(target)
            raise self._not_certifiable(group, target, delta, len(self.groups[group]))
        return cert

    def _certified(self, group: str, target: Target) -> Certificate | None:
        """The certificate of ``target`` on ``group``, or None when it is not certifiable
        (both cached)."""
        delta = self.delta_of(target)
        rounded = self.table.round(target, delta) if self.table is not None else None
        # a quality target below 1 asks for a saving: the same cells, judged differently
        saving = target.quality_ratio is not None and target.quality_ratio < 1.0
        key: Any = (
            (group, tuple(rounded.cells.items()), rounded.delta_column, saving)
            if rounded is not None
            else (group, str(target.with_delta(delta)))
        )
        with self._lock:
            cached = self._cache.get(key)
        if cached is None:
            cached = self._compute(group, target, delta, rounded) or _REFUSED
            with self._lock:
                if len(self._cache) >= CACHE_SIZE:
                    self._cache.clear()
                self._cache[key] = cached
        return None if cached is _REFUSED else _as_asked(cached, target)

    def _compute(
        self, group: str, target: Target, delta: float, rounded: RoundedTarget | None
    ) -> Certificate | None:
        means = self.means[group]
        if rounded is not None:
            assert self.table is not None
            width = len(self.path)
            mask = np.ones(width, dtype=bool)
            for kind in target.constraints():
                mask &= certified_mask(width, kind, self.table.edge(group, kind, rounded))
            bound_target = rounded.target
            level = float(self.table.deltas[rounded.delta_column]) / self.splits
            choice = Choice(choose(mask, bound_target, means), mask, level)
        else:
            outcomes = self.outcomes.subset(self.groups[group])
            choice = certify_outcomes(outcomes, means, target, delta / self.splits, self.method)
            bound_target = target.with_delta(delta)
        n = len(self.groups[group])
        # judged on the target as asked: quality 0.999 rounded up to 1 is still a request for
        # a saving, which always calling the top tier does not give
        global_ok = choice.feasible(target) if group == GLOBAL else choice.index is not None
        if not global_ok:
            return None
        assert choice.index is not None
        index = choice.index
        return Certificate(
            target=str(target),
            bound=bound_target.constraints(),
            delta=float(bound_target.delta if bound_target.delta is not None else delta),
            level=choice.level,
            method=self.method,
            n=n,
            scope=group,
            index=index,
            point=self.path.points[index],
            estimate=means.at(index),
            trivial=self._trivial(index, bound_target, means),
            frontier_quality=means.frontier,
            cost_bound=self.cost_bound,
        )

    def _trivial(self, index: int, target: Target, means: PathMeans) -> bool:
        """Every constraint holds by construction at this point (no test was needed)."""
        last = len(self.path) - 1
        never_top = index == last and means.share[last] == 0
        return all(
            (k == QUALITY and index == 0) or (k == SHARE and never_top)
            for k in target.constraints()
        )

    # ------------------------------------------------------------------ infeasibility
    def _not_certifiable(
        self, group: str, target: Target, delta: float, n: int
    ) -> TargetNotCertifiableError:
        alternative = self.alternative(group, target)
        where = "" if group == GLOBAL else f" on step {group!r}"
        frontier = target.quality_ratio is not None and len(target.constraints()) == 1
        options = [a for a in (alternative, "always-frontier (share=1)" if frontier else None) if a]
        tail = "; certifiable: " + ", or ".join(options) if options else "; nothing is certifiable"
        message = (
            f"{target_phrase(target)} cannot be certified with {n} outcomes at delta "
            f"{delta:g}{where}{tail}"
        )
        return TargetNotCertifiableError(
            message, target=str(target), delta=delta, n=n, scope=group, alternative=alternative
        )

    def alternative(self, group: str, target: Target) -> str | None:
        """The most demanding target of the same form that is certifiable: a lower quality
        ratio (the other constraints kept), else a higher cost; None when there is none."""
        constraints = target.constraints()
        if QUALITY in constraints:
            kind, grid = QUALITY, _quality_grid(self.table)[::-1]
            grid = grid[grid < constraints[QUALITY]]
        elif COST in constraints:
            kind = COST
            reference = float(self.means[GLOBAL].cost[0])
            grid = _cost_grid(self.table, reference)
            grid = grid[grid > constraints[COST]]
        else:
            return None
        for value in grid:
            candidate = Target(**(constraints | {kind: float(value)}), delta=target.delta)
            if self._certified(group, candidate) is not None:
                return short(candidate)
        return None

    # ------------------------------------------------------------------ persistence
    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "default_delta": self.default_delta,
            "cost_bound": self.cost_bound,
            "groups": list(self.groups),
            "path_opinion_bands": [
                None if b is None else list(b) for b in (self.path.points[0].opinion_bands or ())
            ],
            "certificates": {g: c.to_dict() for g, c in self.own.items()},
        }

    def arrays(self) -> dict[str, np.ndarray]:
        groups = list(self.groups)
        out = self.path.to_arrays()
        out["path_means"] = np.stack([self.means[g].to_array() for g in groups])
        if self.table is not None:
            out.update(self.table.to_arrays(groups))
        return out

    @classmethod
    def from_saved(
        cls,
        data: dict[str, Any],
        arrays: dict[str, np.ndarray],
        rows: TestingRows,
        *,
        target: Target,
        min_step_samples: int,
    ) -> CertifiedPoints:
        groups = list(data["groups"])
        bands = tuple(
            None if b is None else (float(b[0]), float(b[1])) for b in data["path_opinion_bands"]
        )
        means_array = np.asarray(arrays["path_means"])
        table = CertificateTable.from_arrays(arrays, groups) if "table_deltas" in arrays else None
        certified = cls(
            method=str(data["method"]),
            default_delta=float(data["default_delta"]),
            target=target,
            path=CandidatePath.from_arrays(arrays, bands),
            rows=rows,
            min_step_samples=min_step_samples,
            cost_bound=float(data["cost_bound"]),
            table=table,
            means={g: PathMeans.from_array(means_array[i]) for i, g in enumerate(groups)},
        )
        if list(certified.groups) != groups:
            raise ValueError("the saved certificate groups do not match the calibration steps")
        certified.own = {g: Certificate.from_dict(c) for g, c in data["certificates"].items()}
        return certified


def cost_bound(costs: np.ndarray, opinion_costs: np.ndarray | None) -> float:
    """B: the largest cost of one request calling every tier (and the dearest opinions)."""
    total = np.asarray(costs, dtype=np.float64).sum(axis=1)
    if opinion_costs is not None:
        total = total + np.asarray(opinion_costs, dtype=np.float64).reshape(len(total), -1).max(
            axis=1
        )
    return float(total.max()) if len(total) else 1.0


def _same(target: Target, own: Target, certified: CertifiedPoints) -> bool:
    return target.constraints() == own.constraints() and certified.delta_of(
        target
    ) == certified.delta_of(own)


def _as_asked(cert: Certificate, target: Target) -> Certificate:
    """A cached certificate reported for the target string this request asked."""
    return cert if cert.target == str(target) else replace(cert, target=str(target))


def _quality_grid(table: CertificateTable | None) -> np.ndarray:
    return np.asarray(table.quality if table is not None else QUALITY_GRID)


def _cost_grid(table: CertificateTable | None, reference: float) -> np.ndarray:
    return np.asarray(table.cost if table is not None else COST_FRACTIONS * reference)
