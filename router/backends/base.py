"""What a backend returns (:class:`Completion`) and the protocols every backend satisfies."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from router.backends.messages import ChatInput
from router.backends.request import AssistantMessage, ChatRequest, message_text


@dataclass(frozen=True)
class Completion:
    """One answer of one model.

    Attributes:
        message: the assistant message as the model produced it (content, tool calls, refusal).
        model: the backend's model name (as configured, which is what prices are keyed on).
        input_tokens: prompt tokens (as reported, else estimated).
        output_tokens: completion tokens (as reported, else estimated).
        latency_s: wall-clock seconds the call took (replay: the configured profile).
        logprobs: per-token log-probabilities (what the answer features read), when returned.
        cost_usd: the known cost (replay records it); None lets the router price the tokens.
        score: replay only, the recorded quality score of this answer (for evaluation).
        finish_reason: why the model stopped: ``stop``, ``length``, ``tool_calls``, …
        choice_logprobs: OpenAI's ``logprobs`` object of the choice, when the request asked.
        response_model: the model the upstream says answered (its response's ``model``), when
            it says (traces record it as ``gen_ai.response.model``).
        response_id: the upstream's id of the answer (``chatcmpl-…``), when it gives one.
    """

    message: AssistantMessage
    model: str
    input_tokens: int
    output_tokens: int
    latency_s: float
    logprobs: tuple[float, ...] | None = None
    cost_usd: float | None = None
    score: float | None = None
    finish_reason: str = "stop"
    choice_logprobs: dict[str, Any] | None = field(default=None, compare=False)
    response_model: str | None = field(default=None, compare=False)
    response_id: str | None = field(default=None, compare=False)

    @property
    def text(self) -> str:
        """The answer's text form (:func:`~router.backends.request.message_text`)."""
        return message_text(self.message)


@runtime_checkable
class ChatBackend(Protocol):
    """Anything that answers a chat request with a :class:`Completion`.

    ``request`` is a :class:`ChatRequest` (sent through whole), or a prompt string or a list of
    chat messages; ``max_tokens`` is a limit for this call where the request sets none.
    """

    model: str

    def complete(
        self, request: ChatRequest | ChatInput, *, max_tokens: int | None = None
    ) -> Completion:
        """Answer ``request`` (blocking)."""
        ...

    async def acomplete(
        self, request: ChatRequest | ChatInput, *, max_tokens: int | None = None
    ) -> Completion:
        """Answer ``request`` (asyncio)."""
        ...


@runtime_checkable
class SamplingBackend(Protocol):
    """A backend that can also draw ``k`` extra samples of its answer (self-opinions)."""

    model: str

    def sample(
        self,
        request: ChatRequest | ChatInput,
        k: int,
        temperature: float,
        *,
        max_tokens: int | None = None,
    ) -> list[Completion]:
        """``k`` answers to ``request`` sampled at ``temperature`` (blocking)."""
        ...

    async def asample(
        self,
        request: ChatRequest | ChatInput,
        k: int,
        temperature: float,
        *,
        max_tokens: int | None = None,
    ) -> list[Completion]:
        """``k`` answers to ``request`` sampled at ``temperature`` (asyncio)."""
        ...
