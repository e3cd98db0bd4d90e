"""What the user asks of the cascade: a quality ratio, a frontier share or a cost per request."""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass

from router.errors import ConfigurationError


@dataclass(frozen=True)
class Target:
    """What the user asks of the cascade; exactly one field is set.

    * ``quality_ratio``: reach this share of the top tier's quality (e.g. 0.95);
    * ``max_frontier_share``: call the top tier on at most this share of requests;
    * ``max_cost``: spend at most this many USD per request on average.
    """

    quality_ratio: float | None = None
    max_frontier_share: float | None = None
    max_cost: float | None = None

    def __post_init__(self) -> None:
        set_fields = [k for k, v in asdict(self).items() if v is not None]
        if len(set_fields) != 1:
            raise ConfigurationError(
                "a target sets exactly one of quality_ratio, max_frontier_share, max_cost"
            )
        value = float(getattr(self, set_fields[0]))
        if not math.isfinite(value) or value < 0:
            raise ConfigurationError(f"target {set_fields[0]} must be a finite number >= 0")
        if set_fields[0] != "max_cost" and value > 1:
            raise ConfigurationError(f"target {set_fields[0]} must lie in [0, 1], got {value}")

    @classmethod
    def parse(cls, text: str | Target | None) -> Target | None:
        """``"quality=0.95"``, ``"share=0.2"`` or ``"cost=0.002"`` (also full field names)."""
        if text is None or isinstance(text, Target):
            return text
        match = re.fullmatch(r"\s*([a-z_]+)\s*[=:]\s*([0-9.eE+-]+)\s*", text)
        aliases = {
            "quality": "quality_ratio",
            "quality_ratio": "quality_ratio",
            "share": "max_frontier_share",
            "max_frontier_share": "max_frontier_share",
            "frontier_share": "max_frontier_share",
            "cost": "max_cost",
            "max_cost": "max_cost",
        }
        if not match or match.group(1) not in aliases:
            raise ConfigurationError(
                f"cannot read target {text!r}: use quality=0.95, share=0.2 or cost=0.002"
            )
        try:
            value = float(match.group(2))
        except ValueError as exc:
            raise ConfigurationError(f"target value {match.group(2)!r} is not a number") from exc
        return cls(**{aliases[match.group(1)]: value})

    def __str__(self) -> str:
        for key, value in asdict(self).items():
            if value is not None:
                return f"{key}={value:g}"
        return "none"  # pragma: no cover
