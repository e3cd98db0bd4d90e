"""What the user asks of the cascade: a quality ratio, a frontier share, a cost per request (or
several at once), and the risk ``delta`` of its certificate."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from router.errors import ConfigurationError

#: the constraints a target may set, in the order they are written
CONSTRAINTS = ("quality_ratio", "max_frontier_share", "max_cost")
_ALIASES = {
    "quality": "quality_ratio",
    "quality_ratio": "quality_ratio",
    "share": "max_frontier_share",
    "max_frontier_share": "max_frontier_share",
    "frontier_share": "max_frontier_share",
    "cost": "max_cost",
    "max_cost": "max_cost",
    "delta": "delta",
}
_PART = re.compile(r"\s*([a-z_]+)\s*[=:]\s*([0-9.eE+-]+)\s*")


@dataclass(frozen=True)
class Target:
    """What the user asks of the cascade; one or more constraints are set.

    * ``quality_ratio``: reach at least this share of the top tier's quality (e.g. 0.95);
    * ``max_frontier_share``: call the top tier on at most this share of requests;
    * ``max_cost``: spend at most this many USD per request on average;
    * ``delta``: the risk of the certificate (the target holds with probability at least
      ``1 - delta`` over the calibration draw); None: the router's default (0.1).

    Several constraints (``quality=0.95,share=0.5``) are certified jointly.
    """

    quality_ratio: float | None = None
    max_frontier_share: float | None = None
    max_cost: float | None = None
    delta: float | None = None

    def __post_init__(self) -> None:
        set_fields = self.constraints()
        if not set_fields:
            raise ConfigurationError(
                "a target sets at least one of quality_ratio, max_frontier_share, max_cost"
            )
        for name, value in set_fields.items():
            if not math.isfinite(value) or value < 0:
                raise ConfigurationError(f"target {name} must be a finite number >= 0")
            if name != "max_cost" and value > 1:
                raise ConfigurationError(f"target {name} must lie in [0, 1], got {value}")
        if self.delta is not None and not 0.0 < float(self.delta) < 1.0:
            raise ConfigurationError(f"delta must lie in (0, 1), got {self.delta}")

    def constraints(self) -> dict[str, float]:
        """The constraints set, by field name, in :data:`CONSTRAINTS` order."""
        return {
            name: float(getattr(self, name))
            for name in CONSTRAINTS
            if getattr(self, name) is not None
        }

    def with_delta(self, delta: float | None) -> Target:
        """The same constraints with another risk level."""
        return Target(**self.constraints(), delta=delta)

    @classmethod
    def parse(cls, text: str | Target | None) -> Target | None:
        """``"quality=0.95"``, ``"share=0.2"``, ``"cost=0.002"`` (also full field names), several
        joined by commas (``"quality=0.95,share=0.5"``), optionally with ``delta=0.05``."""
        if text is None or isinstance(text, Target):
            return text
        values: dict[str, float] = {}
        for part in str(text).split(","):
            match = _PART.fullmatch(part)
            if not match or match.group(1) not in _ALIASES:
                raise ConfigurationError(
                    f"cannot read target {text!r}: use quality=0.95, share=0.2 or cost=0.002 "
                    "(several joined by commas; delta=0.05 sets the risk)"
                )
            name = _ALIASES[match.group(1)]
            if name in values:
                raise ConfigurationError(f"target {text!r} sets {name} twice")
            try:
                values[name] = float(match.group(2))
            except ValueError as exc:
                raise ConfigurationError(
                    f"target value {match.group(2)!r} is not a number"
                ) from exc
        return cls(**values)

    def __str__(self) -> str:
        parts = [f"{key}={value:g}" for key, value in self.constraints().items()]
        if self.delta is not None:
            parts.append(f"delta={self.delta:g}")
        return ",".join(parts)
