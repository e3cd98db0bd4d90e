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


def escalates(gain: Any, lam: float, weight: float, valid: Any = None) -> Any:
    """The escalation rule: the expected gain beats the cost weight times the tier's cost, or the
    validator refused the answer.

    Works on scalars and arrays; ``lam = ±inf`` means never / always escalate whatever the
    weight (even a zero-cost tier).  ``valid``: the validator's verdict on the answer, 1 valid,
    0 refused (escalates whatever the gain), NaN or None where the request constrains nothing.
    """
    threshold = lam * weight if math.isfinite(lam) else lam
    out = gain > threshold
    if valid is None:
        return out
    refused = np.asarray(valid, dtype=np.float64) == 0.0
    if np.ndim(out) or np.ndim(refused):
        return np.asarray(out) | refused
    return bool(out) or bool(refused)


def skips(p_pre: Any, threshold: float) -> Any:
    """The skip rule: the pre-answer acceptance probability is below the tier's threshold."""
    return p_pre < threshold


def first_called(p_pre: Any, thresholds: Any, start: int = 0) -> int:
    """The first tier from ``start`` that the skip rule does not skip (the top tier never is)."""
    tier, top = start, len(p_pre) - 1
    while tier < top and skips(p_pre[tier], thresholds[tier]):
        tier += 1
    return tier


def verdict(gain: float | None, lam: float, weight: float, valid: bool | None = None) -> str:
    """What happens to an answer below the top: ``invalid`` (the validator refused it: no gain
    is needed), ``escalated`` (the gain beats the cost) or ``verified`` (accepted)."""
    if valid is False:
        return "invalid"
    if gain is None:
        raise ValueError("the gain of escalating is needed to judge a valid answer")
    return "escalated" if escalates(gain, lam, weight) else "verified"
