"""What the SDK returns: a decision, the steps through the tiers, the routed result."""

from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from router.backends import AssistantMessage, ChatInput, ChatRequest

__all__ = [
    "OPINION_ROLES",
    "ChatInput",
    "ChatRequest",
    "Decision",
    "RouteResult",
    "TierStep",
    "TokenUsage",
    "cascade_path",
    "json_safe",
    "tier_roles",
]
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
    path: str = ""  # the walk so far, as RouteResult.path writes it (cascade_path)
    valid: bool | None = None  # the validator's verdict on the answer (None: unconstrained)
    invalid_reason: str | None = None  # why the validator refused the answer
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
    action: str  # skipped | verified | escalated | invalid | answered | failed;
    # opinions: agreed | disagreed (asked, in a decision that only read them)
    p_accept: float | None
    p_accept_answer: float | None = None
    gain: float | None = None
    cost_usd: float = 0.0
    latency_s: float = 0.0


@dataclass(frozen=True)
class TokenUsage:
    """Tokens and cost of the calls of one model (a tier, a peer or the extra samples)."""

    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    calls: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def __add__(self, other: TokenUsage) -> TokenUsage:
        return TokenUsage(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.cost_usd + other.cost_usd,
            self.calls + other.calls,
        )


@dataclass(frozen=True)
class RouteResult:
    """The answer of one routed step and how it was reached.

    ``message`` is the answering model's assistant message (content, tool calls, refusal) and
    ``answer`` its text form; ``usage`` holds the tokens and cost of every model that ran, by
    name (tiers, peers, samples), and :attr:`total_usage` their sum.
    """

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
    message: AssistantMessage = field(default_factory=AssistantMessage)
    finish_reason: str = "stop"
    model: str = ""  # the answering backend's model name (what an OpenAI response reports)
    usage: dict[str, TokenUsage] = field(default_factory=dict)
    logprobs: dict[str, Any] | None = None  # OpenAI's logprobs object, when the request asked
    invalid: dict[str, str] = field(default_factory=dict)  # answers the validator refused: why
    validity: dict[str, bool] = field(default_factory=dict)  # its verdicts, constrained requests

    @property
    def total_usage(self) -> TokenUsage:
        """The tokens and cost of every model that ran for this request."""
        return sum(self.usage.values(), TokenUsage())

    def to_dict(self) -> dict[str, Any]:
        out = {
            name: copy.deepcopy(getattr(self, name))
            for name in self.__dataclass_fields__
            if name not in ("message", "steps", "usage")
        }
        out["steps"] = [asdict(s) for s in self.steps]
        out["usage"] = {k: asdict(v) for k, v in self.usage.items()}
        out["message"] = self.message.to_openai()
        return out

    def to_json_dict(self) -> dict[str, Any]:
        """:meth:`to_dict` fit for strict JSON (see :meth:`Decision.to_json_dict`)."""
        return json_safe(self.to_dict())


def cascade_path(trail: Sequence[TierStep], next_role: str | None = None) -> str:
    """The path of a walk, as results, decisions, headers and metrics write it.

    Each tier called appears by role, followed by the opinions asked alongside it and what
    became of its answer (``small→peer→verified``, ``small→invalid→frontier``); a skipped tier
    is ``skipped``; the answering top tier is its role.  ``next_role``: the tier a decision goes
    to next (``small`` for a call, ``skipped→frontier``, ``small→escalated→frontier``).
    """
    parts: list[str] = []
    for k, s in enumerate(trail):
        if s.action == "skipped":
            parts.append("skipped")
        elif s.action == "answered":
            parts.append(s.role)
        elif s.role not in OPINION_ROLES:
            # opinions asked alongside this tier show between its name and its verdict
            asked = itertools.takewhile(lambda t: t.role in OPINION_ROLES, trail[k + 1 :])
            parts += [s.role, *(t.role for t in asked), s.action]
    if next_role is not None:
        parts.append(next_role)
    return "→".join(parts)


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
