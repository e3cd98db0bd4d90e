"""OpenAI chat messages in the GenAI conventions' structured shape (opt-in content capture).

``gen_ai.input.messages`` / ``gen_ai.output.messages`` are lists of ``{role, parts}`` where a
part is ``{type: "text", content}``, ``{type: "tool_call", id, name, arguments}``,
``{type: "tool_call_response", id, response}`` or ``{type: "uri", modality, uri}``; output
messages also carry their ``finish_reason``.  Messages may be mappings (OpenAI's JSON) or
objects with the same fields (pydantic models).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def _get(obj: Any, name: str) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(name)
    return getattr(obj, name, None)


def _content_parts(content: Any) -> list[dict[str, Any]]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "content": content}]
    parts: list[dict[str, Any]] = []
    for part in content:
        kind = _get(part, "type")
        if kind == "text":
            parts.append({"type": "text", "content": _get(part, "text") or ""})
        elif kind == "refusal":
            parts.append({"type": "text", "content": _get(part, "refusal") or ""})
        elif kind == "image_url":
            url = _get(_get(part, "image_url"), "url")
            parts.append({"type": "uri", "modality": "image", "uri": str(url or "")})
        else:  # audio, files: the kind is told, never the bytes
            parts.append({"type": str(kind)})
    return parts


def _tool_call_parts(tool_calls: Any) -> list[dict[str, Any]]:
    parts = []
    for call in tool_calls or ():
        function = _get(call, "function")
        parts.append(
            {
                "type": "tool_call",
                "id": _get(call, "id"),
                "name": _get(function, "name"),
                "arguments": _get(function, "arguments"),
            }
        )
    return parts


def _message(message: Any) -> dict[str, Any]:
    role = str(_get(message, "role") or "user")
    if role == "tool":
        text = _content_parts(_get(message, "content"))
        response = "".join(p.get("content", "") for p in text)
        call_id = _get(message, "tool_call_id")
        parts = [{"type": "tool_call_response", "id": call_id, "response": response}]
    else:
        parts = _content_parts(_get(message, "content"))
        parts += _tool_call_parts(_get(message, "tool_calls"))
        refusal = _get(message, "refusal")
        if refusal:
            parts.append({"type": "text", "content": refusal})
    out: dict[str, Any] = {"role": role, "parts": parts}
    name = _get(message, "name")
    if name:
        out["name"] = name
    return out


def input_messages(messages: Sequence[Any]) -> list[dict[str, Any]]:
    """``gen_ai.input.messages`` for the chat messages sent."""
    return [_message(m) for m in messages]


def output_messages(
    messages: Sequence[Any], finish_reasons: Sequence[str] = ()
) -> list[dict[str, Any]]:
    """``gen_ai.output.messages`` for the assistant messages returned (one per choice)."""
    out = []
    for k, message in enumerate(messages):
        if message is None or isinstance(message, str):
            message = {"role": "assistant", "content": message}
        entry = _message(message)
        entry["role"] = "assistant"
        entry["finish_reason"] = finish_reasons[k] if k < len(finish_reasons) else "stop"
        out.append(entry)
    return out


def tool_definitions(tools: Sequence[Any]) -> list[dict[str, Any]]:
    """``gen_ai.tool.definitions`` for the tools offered (OpenAI's function tools)."""
    out = []
    for tool in tools:
        function = _get(tool, "function")
        entry: dict[str, Any] = {"type": str(_get(tool, "type") or "function")}
        for key in ("name", "description", "parameters"):
            value = _get(function, key)
            if value is not None:
                entry[key] = value
        out.append(entry)
    return out
