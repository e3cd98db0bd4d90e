"""What a backend returns (:class:`Completion`) and the protocols every backend satisfies."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from router.backends.messages import Messages

if TYPE_CHECKING:
    pass


@dataclass(frozen=True)
class Completion:
    """One answer of one model.

    Attributes:
        text: the answer text ("" when the model returned no text).
        model: the backend's model name (as configured, which is what prices are keyed on).
        input_tokens: prompt tokens (as reported, else estimated).
        output_tokens: completion tokens (as reported, else estimated).
        latency_s: wall-clock seconds the call took (replay: the configured profile).
        logprobs: per-token log-probabilities, when asked for and returned; else None.
        cost_usd: the known cost (replay records it); None lets the router price the tokens.
        score: replay only, the recorded quality score of this answer (for evaluation).
    """

    text: str
    model: str
    input_tokens: int
    output_tokens: int
    latency_s: float
    logprobs: tuple[float, ...] | None
    cost_usd: float | None
    score: float | None = None


@runtime_checkable
class ChatBackend(Protocol):
    """Anything that answers chat messages with a :class:`Completion`."""

    model: str

    def complete(self, messages: Messages, *, max_tokens: int | None = None) -> Completion:
        """Answer ``messages`` (blocking)."""
        ...

    async def acomplete(self, messages: Messages, *, max_tokens: int | None = None) -> Completion:
        """Answer ``messages`` (asyncio)."""
        ...


@runtime_checkable
class SamplingBackend(Protocol):
    """A backend that can also draw ``k`` extra samples of its answer (self-opinions)."""

    model: str

    def sample(
        self, messages: Messages, k: int, temperature: float, *, max_tokens: int | None = None
    ) -> list[Completion]:
        """``k`` answers to ``messages`` sampled at ``temperature`` (blocking)."""
        ...

    async def asample(
        self, messages: Messages, k: int, temperature: float, *, max_tokens: int | None = None
    ) -> list[Completion]:
        """``k`` answers to ``messages`` sampled at ``temperature`` (asyncio)."""
        ...
