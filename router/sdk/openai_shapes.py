"""The cascade in OpenAI's shapes: model names, ``chat.completion`` bodies and stream chunks.

Model names select the step kind and the target: ``cascade`` (the default step and the router's
own target), ``cascade:STEP`` and ``cascade:STEP:TARGET`` (e.g. ``cascade:intent:quality=0.95``;
``cascade::share=0.2`` keeps the default step).  A name ending in an empty part (``cascade:``,
``cascade::``) names nothing and is refused.

The in-process client (:mod:`router.sdk.client`) and the sidecar build their answers here, so a
streamed answer is the JSON answer cut into chunks: :func:`text_pieces` cuts text without
changing one byte of it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from router.errors import ConfigurationError, UnknownModelError
from router.policy import Target
from router.sdk.results import RouteResult, TokenUsage, json_safe

MODEL_PREFIX = "cascade"
#: Roughly how many characters one streamed chunk carries.
PIECE_CHARS = 24


@dataclass(frozen=True)
class StepTarget:
    """What a request asks for: the step kind and the target (None: the router's own)."""

    step: str
    target: Target | None

    @property
    def model_name(self) -> str:
        return f"{MODEL_PREFIX}:{self.step}" + (f":{self.target}" if self.target else "")

    @classmethod
    def parse(
        cls,
        model: str,
        default_step: str,
        step: str | None = None,
        target: str | None = None,
    ) -> StepTarget:
        """The step kind and target a model name selects; ``step`` and ``target`` (the
        ``cascade`` body object of a request) win over the name's parts.

        Raises:
            UnknownModelError: the name is not ``cascade[:STEP[:TARGET]]``.
            ConfigurationError: the target cannot be read.
        """
        head, colon, rest = model.partition(":")
        step_name, second, target_text = rest.partition(":")
        empty_tail = (colon and not rest) or (second and not target_text)
        if head != MODEL_PREFIX or empty_tail:
            raise UnknownModelError(
                f"The model '{model}' does not exist: use 'cascade', 'cascade:STEP' or "
                "'cascade:STEP:TARGET' (e.g. cascade:intent:quality=0.95); GET /v1/models "
                "lists them."
            )
        chosen = (step or step_name or default_step).strip()
        if not chosen:
            raise ConfigurationError("the step kind is empty")
        target_text = target or target_text
        return cls(chosen, Target.parse(target_text) if target_text else None)


# ------------------------------------------------------------------ bodies


def usage_body(usage: TokenUsage) -> dict[str, int]:
    """OpenAI's ``usage`` object."""
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.total_tokens,
    }


def cascade_summary(result: RouteResult) -> dict[str, Any]:
    """The ``cascade`` object of an answer: how the cascade reached it, and the tokens and cost
    of every model that ran (``usage``, by tier, peer or sample)."""
    return json_safe(
        {
            "tier": result.tier,
            "path": result.path,
            "step": result.step,
            "target": result.target,
            "certificate": result.certificate,
            "router_version": result.router_version,
            "cost_usd": result.cost_usd,
            "router_latency_s": result.router_latency_s,
            "probabilities": result.probabilities,
            "failures": result.failures,
            "invalid": result.invalid,
            "usage": {
                name: {**usage_body(u), "cost_usd": u.cost_usd} for name, u in result.usage.items()
            },
        }
    )


def completion_body(result: RouteResult, completion_id: str, created: int) -> dict[str, Any]:
    """The answer as an OpenAI ``chat.completion`` (plus the ``cascade`` object): the answering
    model's message, finish reason and logprobs, and the usage of every model that ran."""
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": result.model,
        "choices": [
            {
                "index": 0,
                "message": result.message.to_openai(),
                "finish_reason": result.finish_reason,
                "logprobs": result.logprobs,
            }
        ],
        "usage": usage_body(result.total_usage),
        "cascade": cascade_summary(result),
    }


# ------------------------------------------------------------------ streaming

_PIECE = re.compile(r"\s*\S+|\s+")


def text_pieces(text: str, size: int = PIECE_CHARS) -> list[str]:
    """``text`` cut at word boundaries into pieces of about ``size`` characters; the pieces
    joined are ``text``, byte for byte (runs of spaces, newlines and tabs included)."""
    pieces: list[str] = []
    current = ""
    for match in _PIECE.finditer(text):
        word = match.group()
        if current and len(current) + len(word) > size:
            pieces.append(current)
            current = ""
        current += word
    if current:
        pieces.append(current)
    return pieces


def _token_groups(text: str, logprobs: dict[str, Any] | None) -> list[tuple[str, Any]] | None:
    """The content pieces aligned with the logprobs' tokens (each piece with its tokens), or
    None when the tokens do not spell the content."""
    tokens = (logprobs or {}).get("content") or []
    if not tokens or "".join(str(t.get("token", "")) for t in tokens) != text:
        return None
    groups: list[tuple[str, Any]] = []
    current, members = "", []
    for token in tokens:
        current += str(token.get("token", ""))
        members.append(token)
        if len(current) >= PIECE_CHARS:
            groups.append((current, members))
            current, members = "", []
    if members:
        groups.append((current, members))
    return groups


def completion_chunks(
    result: RouteResult, completion_id: str, created: int, include_usage: bool = False
) -> Iterator[dict[str, Any]]:
    """The answer as OpenAI ``chat.completion.chunk`` objects: the role, the content in pieces
    (with their logprobs, when asked), each tool call as indexed deltas (id and name first,
    then the arguments in fragments), the finish reason, and with ``include_usage`` one last
    chunk with no choices and the usage of every model that ran."""
    base: dict[str, Any] = {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": result.model,
    }
    if include_usage:
        base["usage"] = None

    def chunk(delta: dict[str, Any], finish: str | None = None, logprobs: Any = None) -> Any:
        choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": logprobs}
        return {**base, "choices": [choice]}

    message = result.message
    text = message.text
    calls = message.tool_calls or []
    yield chunk({"role": "assistant", "content": "" if text or not calls else None})
    groups = _token_groups(text, result.logprobs)
    if groups is not None:
        for piece, members in groups:
            yield chunk({"content": piece}, logprobs={"content": members, "refusal": None})
    else:
        for k, piece in enumerate(text_pieces(text)):
            # logprobs that do not spell the content go whole with its first piece
            lp = result.logprobs if k == 0 else None
            yield chunk({"content": piece}, logprobs=lp)
    if message.refusal:
        for piece in text_pieces(message.refusal):
            yield chunk({"refusal": piece})
    for index, call in enumerate(calls):
        head = {
            "index": index,
            "id": call.id,
            "type": "function",
            "function": {"name": call.function.name, "arguments": ""},
        }
        yield chunk({"tool_calls": [head]})
        for fragment in _fragments(call.function.arguments):
            yield chunk({"tool_calls": [{"index": index, "function": {"arguments": fragment}}]})
    yield chunk({}, result.finish_reason)
    if include_usage:
        yield {**base, "choices": [], "usage": usage_body(result.total_usage)}


def _fragments(arguments: str, size: int = 16) -> Sequence[str]:
    return [arguments[i : i + size] for i in range(0, len(arguments), size)]
