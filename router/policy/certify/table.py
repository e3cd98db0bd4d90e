"""A table of certificates over a grid of targets and risks, precomputed when the policy is fitted,
so that a target asked per request is certified by a lookup (microseconds) rather than by a
test over thousands of outcomes.

Each cell holds, per group of outcomes (global, and each step with its own point) and per
single constraint, where its certified stretch of the path ends (:func:`ltt.boundary`).  A
target off the grid is rounded towards the stricter side (a quality ratio up, a share or a
cost down, a risk down), which keeps the statement valid: a point certified for quality 0.955
at risk 0.05 is certified for quality 0.953 at risk 0.1.  Joint targets split the risk across
their constraints before rounding, as the direct certification does, so an on-grid target gets
exactly the point a direct certification gives.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from router.policy.certify.ltt import COST, QUALITY, SHARE, PathOutcomes, boundaries
from router.policy.target import Target

QUALITY_GRID = np.round(
    np.concatenate([np.arange(0.50, 0.80, 0.05), np.arange(0.80, 0.99001, 0.01), [0.995, 1.0]]), 4
)
SHARE_GRID = np.round(np.arange(0.0, 1.00001, 0.05), 4)
#: cost targets: these fractions of the mean cost of always calling the top tier
COST_FRACTIONS = np.round(np.arange(0.05, 1.00001, 0.05), 4)
DELTA_GRID = np.array([0.01, 0.05, 0.1, 0.2])


@dataclass(frozen=True)
class RoundedTarget:
    """A target read onto the table's grid: the cell per constraint and the risk's column."""

    target: Target  # the constraints as certified (rounded), with the risk of the whole
    cells: dict[str, int]  # constraint -> row of the grid
    delta_column: int


@dataclass(frozen=True)
class CertificateTable:
    """Boundaries per group, constraint, grid value and risk (see the module docstring)."""

    quality: np.ndarray
    share: np.ndarray
    cost: np.ndarray  # USD
    deltas: np.ndarray
    edges: dict[str, dict[str, np.ndarray]]  # group -> constraint -> (values, deltas) int

    def grid(self, kind: str) -> np.ndarray:
        return {QUALITY: self.quality, SHARE: self.share, COST: self.cost}[kind]

    @classmethod
    def build(
        cls,
        groups: dict[str, PathOutcomes],
        splits: int,
        method: str,
        cost_reference: float,
    ) -> CertificateTable:
        """Certify every cell on every group; a group's cells are tested at ``delta / splits``
        (the risk shared between the groups)."""
        cost_grid = np.round(COST_FRACTIONS * cost_reference, 12)
        grids = {QUALITY: QUALITY_GRID, SHARE: SHARE_GRID, COST: cost_grid}
        edges: dict[str, dict[str, np.ndarray]] = {}
        for name, outcomes in groups.items():
            edges[name] = {}
            for kind, grid in grids.items():
                cell = np.empty((len(grid), len(DELTA_GRID)), dtype=np.int32)
                for i, value in enumerate(grid):
                    levels = DELTA_GRID / splits
                    cell[i] = boundaries(outcomes, kind, float(value), levels, method)
                edges[name][kind] = cell
        return cls(QUALITY_GRID.copy(), SHARE_GRID.copy(), cost_grid, DELTA_GRID.copy(), edges)

    def round(self, target: Target, delta: float) -> RoundedTarget | None:
        """``target`` at risk ``delta`` on the grid, rounded to the stricter side; None when it
        lies beyond the grid (a risk or a cost below its smallest value)."""
        constraints = target.constraints()
        per_constraint = delta / len(constraints)
        column = int(np.searchsorted(self.deltas, per_constraint + 1e-12, side="right")) - 1
        if column < 0:
            return None
        cells: dict[str, int] = {}
        values: dict[str, float] = {}
        for kind, value in constraints.items():
            grid = self.grid(kind)
            if kind == QUALITY:
                row = int(np.searchsorted(grid, value - 1e-12, side="left"))
                if row >= len(grid):
                    return None
            else:
                row = int(np.searchsorted(grid, value + 1e-12, side="right")) - 1
                if row < 0:
                    return None
            cells[kind], values[kind] = row, float(grid[row])
        # the whole statement holds at the column's risk times the constraints it was split over
        certified_delta = min(float(self.deltas[column]) * len(constraints), 0.999)
        rounded = Target(**values, delta=certified_delta)
        return RoundedTarget(rounded, cells, column)

    def edge(self, group: str, kind: str, rounded: RoundedTarget) -> int:
        return int(self.edges[group][kind][rounded.cells[kind], rounded.delta_column])

    def to_arrays(self, groups: list[str]) -> dict[str, np.ndarray]:
        out = {
            "table_quality_grid": self.quality,
            "table_share_grid": self.share,
            "table_cost_grid": self.cost,
            "table_deltas": self.deltas,
        }
        for kind in (QUALITY, SHARE, COST):
            out[f"table_{kind}"] = np.stack([self.edges[g][kind] for g in groups])
        return out

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], groups: list[str]) -> CertificateTable:
        edges = {
            g: {kind: np.asarray(arrays[f"table_{kind}"][i]) for kind in (QUALITY, SHARE, COST)}
            for i, g in enumerate(groups)
        }
        return cls(
            np.asarray(arrays["table_quality_grid"]),
            np.asarray(arrays["table_share_grid"]),
            np.asarray(arrays["table_cost_grid"]),
            np.asarray(arrays["table_deltas"]),
            edges,
        )
