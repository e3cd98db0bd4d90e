"""Chat messages: validating what a caller passes, and the text the router reads of it."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from router.errors import (
    ConfigurationError,
)

if TYPE_CHECKING:
    pass


Messages = list[dict[str, str]]
"""Chat messages as the OpenAI API takes them: ``[{"role": ..., "content": ...}, ...]``."""

VALID_ROLES: tuple[str, ...] = ("system", "user", "assistant", "tool", "developer")
"""Roles a chat message may carry."""

_OPTIONAL_STRING_KEYS = ("name", "tool_call_id")


def as_messages(input: str | Sequence[Mapping[str, Any]]) -> Messages:
    """Turn a prompt string or a list of chat messages into validated :data:`Messages`.

    A string becomes one user message.  A list must be non-empty and every item must be a
    mapping with a ``role`` among :data:`VALID_ROLES` and a string ``content``; the optional
    string keys ``name`` and ``tool_call_id`` are kept, anything else is dropped.

    Raises:
        ConfigurationError: the input is neither a string nor a valid list of messages.
    """
    if isinstance(input, str):
        return [{"role": "user", "content": input}]
    if isinstance(input, Mapping | bytes | bytearray) or not isinstance(input, Sequence):
        raise ConfigurationError(
            f"input must be a string or a list of chat messages, not {type(input).__name__}"
        )
    if len(input) == 0:
        raise ConfigurationError("input is an empty list of chat messages; give at least one")
    messages: Messages = []
    for i, item in enumerate(input):
        if not isinstance(item, Mapping):
            raise ConfigurationError(
                f"chat message {i} must be a mapping with 'role' and 'content', "
                f"not a {type(item).__name__}"
            )
        role = item.get("role")
        if role not in VALID_ROLES:
            raise ConfigurationError(
                f"chat message {i} has role {role!r}; expected one of {', '.join(VALID_ROLES)}"
            )
        content = item.get("content")
        if not isinstance(content, str):
            got = "no content" if content is None else f"content of type {type(content).__name__}"
            raise ConfigurationError(
                f"chat message {i} ({role}) has {got}; content must be a string"
            )
        message = {"role": str(role), "content": content}
        for key in _OPTIONAL_STRING_KEYS:
            value = item.get(key)
            if isinstance(value, str):
                message[key] = value
        messages.append(message)
    return messages


def input_text(input: str | Sequence[Mapping[str, Any]]) -> str:
    """The text the router embeds for an input.

    A string is returned unchanged, and so is the content of a lone user message.  Any other
    list of messages becomes its contents joined with newlines, each prefixed ``role: ``.

    Raises:
        ConfigurationError: the input is not a valid prompt (see :func:`as_messages`).
    """
    if isinstance(input, str):
        return input
    messages = as_messages(input)
    if len(messages) == 1 and messages[0]["role"] == "user":
        return messages[0]["content"]
    return "\n".join(f"{m['role']}: {m['content']}" for m in messages)


def normalise_text(text: str) -> str:
    """Strip ``text`` and collapse every run of whitespace to one space (replay keys)."""
    return " ".join(text.split())


def estimate_tokens(text: str) -> int:
    """A rough token count when a backend reports none: ``ceil(len(text) / 4)``."""
    return math.ceil(len(text) / 4)
