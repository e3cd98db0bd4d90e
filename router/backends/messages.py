"""Chat input: validating what a caller passes, and the text the router reads of a request."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from router.backends.request import (
    VALID_ROLES,
    ChatRequest,
    ToolMessage,
    UserMessage,
    parts_text,
)

Messages = list[dict[str, Any]]
"""Chat messages as the OpenAI API takes them: ``[{"role": ..., "content": ...}, ...]``."""

ChatInput = str | Sequence[Mapping[str, Any]]
"""What a caller may route: a prompt string or a list of chat messages in OpenAI's shape."""

#: How much of a tool's description and of a tool result the step text keeps.
TOOL_DESCRIPTION_CHARS = 120
TOOL_RESULT_CHARS = 400

__all__ = [
    "VALID_ROLES",
    "ChatInput",
    "Messages",
    "as_messages",
    "as_request",
    "estimate_tokens",
    "normalise_text",
    "step_text",
]


def as_request(input: ChatRequest | ChatInput, **params: Any) -> ChatRequest:
    """A validated :class:`ChatRequest` from a request, a prompt or a list of messages, with
    ``params`` (request fields, None: unset) set on it.

    Raises:
        ConfigurationError: the input or a field is invalid (the message names it).
    """
    return ChatRequest.of(input, **params)


def as_messages(input: ChatRequest | ChatInput) -> Messages:
    """Validated chat messages in OpenAI's shape: a string becomes one user message; a list must
    hold OpenAI chat messages (role, content or tool calls, ``name``, ``tool_call_id``).

    Raises:
        ConfigurationError: the input is neither a string nor a valid list of messages.
    """
    return as_request(input).wire_messages()


def step_text(input: ChatRequest | ChatInput) -> str:
    """The router's input window of a request: the text the embedder and the cheap features read,
    in training (the ``prompt`` of a data row) and at routing time alike.

    * a prompt string: itself;
    * a conversation: the text of its last user turn (a lone user message: its content,
      unchanged), then, when the request offers tools, a ``Tools:`` line naming each with the
      first line of its description, then, when tool results follow that user turn, the last
      one as ``Tool result: …`` (its first :data:`TOOL_RESULT_CHARS` characters).

    System and developer prompts, earlier turns and the assistant's own calls are left out: the
    window holds what this step is asked, not a dump of the whole conversation.  A conversation
    without a user turn reads its last message that holds text.

    Raises:
        ConfigurationError: the input is not a valid request.
    """
    if isinstance(input, str):
        return input
    request = as_request(input)
    messages = request.messages
    last_user = next(
        (i for i in range(len(messages) - 1, -1, -1) if isinstance(messages[i], UserMessage)),
        None,
    )
    if last_user is not None:
        text = parts_text(messages[last_user].content)
    else:
        texts = [parts_text(m.content) for m in messages]
        text = next((t for t in reversed(texts) if t.strip()), "")
    lines = [text]
    if request.tools:
        described = []
        for tool in request.tools:
            summary = (tool.function.description or "").strip().split("\n", 1)[0]
            summary = summary[:TOOL_DESCRIPTION_CHARS]
            described.append(f"{tool.function.name}: {summary}" if summary else tool.function.name)
        lines.append("Tools: " + "; ".join(described))
    after = messages[last_user + 1 :] if last_user is not None else []
    results = [m for m in after if isinstance(m, ToolMessage)]
    if results:
        lines.append("Tool result: " + parts_text(results[-1].content)[:TOOL_RESULT_CHARS])
    return "\n\n".join(lines)


def normalise_text(text: str) -> str:
    """Strip ``text`` and collapse every run of whitespace to one space (replay keys)."""
    return " ".join(text.split())


def estimate_tokens(text: str) -> int:
    """A rough token count when a backend reports none: ``ceil(len(text) / 4)``."""
    return math.ceil(len(text) / 4)


def prompt_chars(request: ChatRequest) -> str:
    """Every text of a request's messages, for estimating its prompt tokens."""
    return "".join(parts_text(m.content) for m in request.messages)
