"""What the SDK returns: a decision, the steps through the tiers, the routed result."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

ChatInput = str | Sequence[Mapping[str, Any]]
#: roles of the trail's opinion steps (asked alongside the first tier's call)
OPINION_ROLES = ("peer", "sample")


def tier_roles(n_tiers: int) -> tuple[str, ...]:
    """Readable role names: small → (medium | tier1, tier2, …) → frontier."""
    if n_tiers == 2:
        return ("small", "frontier")
    if n_tiers == 3:
        return ("small", "medium", "frontier")
    return ("small", *(f"tier{i}" for i in range(1, n_tiers - 1)), "frontier")


@dataclass(frozen=True)
class Decision:
    """The router's decision at the first tier, before (and optionally after) its answer."""

    step: str
    tier: str  # the tier to call first (the first tier not skipped)
    action: str  # "call" (tier 0), "skip" (straight to the next tier); after an answer:
    # "accept" or "escalate"
    p_accept: float  # pre-answer P(first tier accepted | input)
    p_next: float  # pre-answer P(next tier accepted | input)
    gain: float  # expected gain of escalating (post-answer when an answer was given)
    p_accept_answer: float | None = None  # P(first tier accepted | input, answer[, opinions])
    lam: float = 0.0
    skip_threshold: float = 0.0
    ask_opinion: bool = False  # the policy buys second opinions here
    opinion_source: str | None = None  # from which source: "peers" or "samples"
    #: the certificate of the operating point (target, delta, certified bound, point); None
    #: for a router saved before certification
    certificate: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json_dict(self) -> dict[str, Any]:
        """:meth:`to_dict` fit for strict JSON: an infinite ``lam`` (a step whose target makes it
        escalate everything, or nothing) is the string ``"-inf"``/``"inf"``, a NaN is null."""
        return json_safe(self.to_dict())


@dataclass(frozen=True)
class TierStep:
    """What happened at one tier on the way through the cascade."""

    tier: str
    role: str
    action: str  # skipped | verified | escalated | answered | failed; opinions: agreed | disagreed
    p_accept: float | None
    p_accept_answer: float | None = None
    gain: float | None = None
    cost_usd: float = 0.0
    latency_s: float = 0.0


@dataclass(frozen=True)
class RouteResult:
    """The answer of one routed step and how it was reached."""

    answer: str
    tier: str
    role: str
    path: str
    step: str
    probabilities: dict[str, float]
    steps: tuple[TierStep, ...]
    cost_usd: float
    latency_s: float
    router_latency_s: float
    target: str
    router_version: str | None = None
    certificate: dict[str, Any] | None = None  # see Decision.certificate
    score: float | None = None  # replay only: the recorded score of the answer
    input_tokens: int = 0  # tokens of the call that answered
    output_tokens: int = 0
    answers: dict[str, str] = field(default_factory=dict)  # every tier's answer, tier -> text
    failures: dict[str, str] = field(default_factory=dict)  # tiers that failed, tier -> error
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json_dict(self) -> dict[str, Any]:
        """:meth:`to_dict` fit for strict JSON (see :meth:`Decision.to_json_dict`)."""
        return json_safe(self.to_dict())


def json_safe(value: Any) -> Any:
    """``value`` with every non-finite float replaced: ±inf by ``"inf"``/``"-inf"`` (as in a
    saved policy), NaN by None; dicts, lists and tuples are walked."""
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value
