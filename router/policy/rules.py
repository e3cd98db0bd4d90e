"""An operating point and the rules that apply it: skip a hopeless tier, escalate when it pays."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

Band = tuple[float, float]


@dataclass(frozen=True)
class Operating:
    """One fitted operating point: the cost weight, the per-tier skip thresholds and, per
    opinion source, the band of pre-answer probabilities where its opinions are bought."""

    lam: float
    skip_thresholds: tuple[float, ...]
    #: per source: ask where lo <= P(first tier accepted | input) < hi; None (or no entry): never
    opinion_bands: tuple[Band | None, ...] = ()

    def __post_init__(self) -> None:
        # no band at all is the same point however many sources there are
        if all(b is None for b in self.opinion_bands):
            object.__setattr__(self, "opinion_bands", ())

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "lam": _finite_or_str(self.lam),
            "skip_thresholds": list(self.skip_thresholds),
        }
        bands = self.opinion_bands
        if len(bands) == 1 and bands[0] is not None:
            out["opinion_band"] = list(bands[0])  # one source: as routers of format 2-3 wrote
        elif any(b is not None for b in bands):
            out["opinion_bands"] = [None if b is None else list(b) for b in bands]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Operating:
        bands = data.get("opinion_bands")
        if bands is None and data.get("opinion_band") is not None:  # routers of format 2-3
            bands = [data["opinion_band"]]
        return cls(
            float(data["lam"]),
            tuple(float(s) for s in data["skip_thresholds"]),
            tuple(None if b is None else (float(b[0]), float(b[1])) for b in bands or ()),
        )

    def opinion_source(self, p_pre: Any) -> Any:
        """The opinion rule: the index of the first source whose band holds the first tier's
        pre-answer probability; -1 where none does (scalar or array)."""
        p = np.asarray(p_pre, dtype=np.float64)
        chosen = np.full(p.shape, -1, dtype=int)
        for k, band in reversed(list(enumerate(self.opinion_bands))):
            if band is not None:
                chosen = np.where((band[0] <= p) & (p < band[1]), k, chosen)
        return chosen if np.ndim(p_pre) else int(chosen)

    def asks_opinion(self, p_pre: Any) -> Any:
        """Whether any source's opinions are bought (scalar or array)."""
        chosen = self.opinion_source(p_pre)
        return chosen >= 0 if np.ndim(p_pre) else bool(chosen >= 0)


def _finite_or_str(x: float) -> float | str:
    return x if math.isfinite(x) else ("inf" if x > 0 else "-inf")


def escalates(gain: Any, lam: float, weight: float) -> Any:
    """The escalation rule: the expected gain beats the cost weight times the tier's cost.

    Works on scalars and arrays; ``lam = ±inf`` means never / always escalate whatever the
    weight (even a zero-cost tier).
    """
    threshold = lam * weight if math.isfinite(lam) else lam
    return gain > threshold


def skips(p_pre: Any, threshold: float) -> Any:
    """The skip rule: the pre-answer acceptance probability is below the tier's threshold."""
    return p_pre < threshold
