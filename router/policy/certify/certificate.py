"""A certificate: the target certified, at which risk, on how many outcomes, by which point."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from router.policy.certify.ltt import COST, QUALITY, SHARE
from router.policy.rules import Operating
from router.policy.target import Target

#: how each constraint reads in a sentence
_SYMBOLS = {QUALITY: "quality ratio ≥", SHARE: "frontier share ≤", COST: "cost per request ≤"}


@dataclass(frozen=True)
class Certificate:
    """What one operating point is certified to do, and how.

    With probability at least ``1 - delta`` over the calibration draw, every constraint of
    ``bound`` holds in expectation on new traffic from the calibration distribution (of the
    step, for a step's own certificate; of the pooled traffic for the global one).
    ``bound`` may be stricter than the ``target`` asked: a per-request target is read off a
    precomputed table, rounded towards the stricter side.
    """

    target: str  # as asked
    bound: dict[str, float]  # the constraints certified (rounded conservatively)
    delta: float  # the risk the whole statement holds at
    level: float  # the level each constraint of this group was tested at
    method: str  # "wsr" | "hb"
    n: int  # outcomes tested
    scope: str  # "global" or the step kind
    index: int  # the point's place on the path (0: always the top tier)
    point: Operating
    estimate: dict[str, float] = field(default_factory=dict)  # on the tested outcomes
    trivial: bool = False  # holds by construction (always the top tier)
    #: the top tier's mean score on the tested outcomes: a quality ratio ``r`` promises a mean
    #: quality of ``r`` times it (what production monitoring checks labels against)
    frontier_quality: float = float("nan")
    #: B, the largest cost of one request the cost certificate allows
    cost_bound: float = float("nan")

    def promised(self) -> dict[str, float]:
        """Per constraint, the mean the certificate promises on new traffic in the units a
        label or a request record measures: quality of the returned answer (score), share of
        requests calling the top tier, USD per request."""
        out = {}
        for kind, value in self.bound.items():
            out[kind] = value * self.frontier_quality if kind == QUALITY else value
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (infinite cost weights as strings, as in a saved policy)."""
        return {
            "target": self.target,
            "bound": dict(self.bound),
            "delta": self.delta,
            "level": self.level,
            "method": self.method,
            "n_outcomes": self.n,
            "scope": self.scope,
            "index": self.index,
            "point": self.point.to_dict(),
            "estimate": {k: _finite(v) for k, v in self.estimate.items()},
            "trivial": self.trivial,
            "frontier_quality": _finite(self.frontier_quality),
            "cost_bound": _finite(self.cost_bound),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Certificate:
        return cls(
            target=str(data["target"]),
            bound={k: float(v) for k, v in data["bound"].items()},
            delta=float(data["delta"]),
            level=float(data["level"]),
            method=str(data["method"]),
            n=int(data["n_outcomes"]),
            scope=str(data["scope"]),
            index=int(data["index"]),
            point=Operating.from_dict(data["point"]),
            estimate={k: _nan(v) for k, v in data["estimate"].items()},
            trivial=bool(data.get("trivial", False)),
            frontier_quality=_nan(data.get("frontier_quality")),
            cost_bound=_nan(data.get("cost_bound")),
        )

    def describe(self) -> str:
        """``quality ratio ≥ 0.95 with probability ≥ 90% (WSR, 1800 outcomes, global)``."""
        what = " and ".join(_phrase(k, v) for k, v in self.bound.items())
        how = f"{self.method.upper()}, {self.n} outcomes, {self.scope}"
        extra = "; always the top tier" if self.trivial else ""
        return f"{what} with probability ≥ {1 - self.delta:.0%} ({how}){extra}"


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _nan(value: Any) -> float:
    return float("nan") if value is None else float(value)


def _phrase(kind: str, value: float) -> str:
    shown = f"${value:.6g}" if kind == COST else f"{value:g}"
    return f"{_SYMBOLS.get(kind, kind)} {shown}"


def target_phrase(target: Target) -> str:
    """``quality ≥ 0.95 and frontier share ≤ 0.5`` (no delta)."""
    return " and ".join(_phrase(k, v) for k, v in target.constraints().items())
