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
            "estimate": {k: v if math.isfinite(v) else None for k, v in self.estimate.items()},
            "trivial": self.trivial,
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
            estimate={
                k: float("nan") if v is None else float(v) for k, v in data["estimate"].items()
            },
            trivial=bool(data.get("trivial", False)),
        )

    def describe(self) -> str:
        """``quality ratio ≥ 0.95 with probability ≥ 90% (WSR, 1800 outcomes, global)``."""
        what = " and ".join(_phrase(k, v) for k, v in self.bound.items())
        how = f"{self.method.upper()}, {self.n} outcomes, {self.scope}"
        extra = "; always the top tier" if self.trivial else ""
        return f"{what} with probability ≥ {1 - self.delta:.0%} ({how}){extra}"


def _phrase(kind: str, value: float) -> str:
    shown = f"${value:.6g}" if kind == COST else f"{value:g}"
    return f"{_SYMBOLS.get(kind, kind)} {shown}"


def target_phrase(target: Target) -> str:
    """``quality ≥ 0.95 and frontier share ≤ 0.5`` (no delta)."""
    return " and ".join(_phrase(k, v) for k, v in target.constraints().items())
