"""Request bodies of the service and how a model name selects the policy.

Model names: ``cascade`` (the default step and target), ``cascade:STEP`` (a step kind, e.g.
``cascade:intent``) and ``cascade:STEP:TARGET`` (a per-request target, e.g.
``cascade:intent:quality=0.95`` or ``cascade:tool_selection:share=0.2``).  The same can be given
in the body as ``"cascade": {"step": ..., "target": ...}`` (``extra_body`` in the openai
client), which wins over the name.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from router.backends import VALID_ROLES
from router.errors import ConfigurationError
from router.policy import Target
from serving.errors import APIError, bad_request

MODEL_PREFIX = "cascade"


class CascadeOptions(BaseModel):
    """The ``cascade`` object of a request body."""

    model_config = ConfigDict(extra="forbid")

    step: str | None = Field(None, min_length=1, max_length=200)
    target: str | None = Field(None, min_length=1, max_length=100)


class ChatMessage(BaseModel):
    """One chat message; content may be a string or OpenAI's list of text parts."""

    model_config = ConfigDict(extra="allow")

    role: str
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None

    @field_validator("role")
    @classmethod
    def _role(cls, value: str) -> str:
        if value not in VALID_ROLES:
            raise ValueError(f"role must be one of {', '.join(VALID_ROLES)}")
        return value

    def text(self) -> str:
        """The message's text (text parts joined; other parts refused)."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        parts = []
        for part in self.content:
            if part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise bad_request("only text content parts are supported", "messages")
            parts.append(part["text"])
        return "".join(parts)


class ChatCompletionRequest(BaseModel):
    """``POST /v1/chat/completions``: the OpenAI fields the cascade uses; others are ignored."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1)
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    max_tokens: int | None = Field(None, ge=1, le=1_000_000)
    max_completion_tokens: int | None = Field(None, ge=1, le=1_000_000)
    n: int = Field(1, ge=1, le=1)
    cascade: CascadeOptions | None = None

    def chat_messages(self) -> list[dict[str, str]]:
        """Messages as the router's backends take them."""
        out = []
        for message in self.messages:
            item = {"role": message.role, "content": message.text()}
            if message.name:
                item["name"] = message.name
            out.append(item)
        if not any(m["content"].strip() for m in out):
            raise bad_request("messages hold no text", "messages", "empty_messages")
        return out

    def token_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


class RouteRequest(BaseModel):
    """``POST /v1/route``: a decision without calling a model."""

    model_config = ConfigDict(extra="forbid")

    model: str = MODEL_PREFIX
    step: str | None = Field(None, min_length=1, max_length=200)
    target: str | None = Field(None, min_length=1, max_length=100)
    messages: list[ChatMessage] | None = Field(None, min_length=1)
    input: str | None = Field(None, min_length=1)
    answer: str | None = Field(None, description="the first tier's answer: accept or escalate")

    def text_input(self) -> str | list[dict[str, str]]:
        if (self.messages is None) == (self.input is None):
            raise bad_request("give exactly one of 'messages' and 'input'", "messages")
        if self.input is not None:
            if not self.input.strip():
                raise bad_request("input is empty", "input", "empty_messages")
            return self.input
        assert self.messages is not None
        return ChatCompletionRequest(model=self.model, messages=self.messages).chat_messages()


class FeedbackRequest(BaseModel):
    """``POST /v1/feedback``: was the answer of a request accepted?"""

    model_config = ConfigDict(extra="forbid")

    request_id: str = Field(min_length=1, max_length=200)
    accepted: bool
    score: float | None = Field(None, ge=0.0, le=1.0)
    source: Literal["user", "validator", "human", "evaluation", "other"] | str | None = Field(
        None, max_length=100
    )


@dataclass(frozen=True)
class Policy:
    """What a request asks for: the step kind and the target (None: the router's own)."""

    step: str
    target: Target | None

    @property
    def model_name(self) -> str:
        return f"{MODEL_PREFIX}:{self.step}" + (f":{self.target}" if self.target else "")


def select_policy(model: str, options: CascadeOptions | None, default_step: str) -> Policy:
    """The policy a model name (and an optional ``cascade`` body object) selects.

    Raises:
        APIError: 404 ``model_not_found`` for a name that is not ``cascade[:STEP[:TARGET]]``,
        400 for an unreadable target.
    """
    head, _, rest = model.partition(":")
    if head != MODEL_PREFIX:
        raise APIError(
            404,
            f"The model '{model}' does not exist: use 'cascade', 'cascade:STEP' or "
            "'cascade:STEP:TARGET' (e.g. cascade:intent:quality=0.95); GET /v1/models lists them.",
            "invalid_request_error",
            "model_not_found",
            "model",
        )
    step_name, _, target_text = rest.partition(":")
    step = (options.step if options and options.step else step_name) or default_step
    target_text = (options.target if options and options.target else target_text) or ""
    if not step.strip():
        raise bad_request("the step kind is empty", "model")
    try:
        target = Target.parse(target_text) if target_text else None
    except ConfigurationError as exc:
        raise bad_request(str(exc), "model", "invalid_target") from exc
    return Policy(step.strip(), target)


def parse_body(raw: bytes, model: type[BaseModel]) -> Any:
    """Validate a JSON body into ``model``; every failure is a 400 naming the field."""
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise bad_request(
            f"the request body is not valid JSON: {exc}", None, "invalid_json"
        ) from exc
    if not isinstance(data, dict):
        raise bad_request("the request body must be a JSON object", None, "invalid_json")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        param = ".".join(str(p) for p in first["loc"]) or None
        code = "missing_field" if first["type"] == "missing" else "invalid_value"
        message = f"{param}: {first['msg']}" if param else str(first["msg"])
        if param == "messages" and first["type"] == "too_short":
            message, code = "messages must hold at least one message", "empty_messages"
        raise bad_request(message, param, code) from exc


def chat_completion_body(
    completion_id: str, model: str, content: str, input_tokens: int, output_tokens: int
) -> dict[str, Any]:
    """An OpenAI ``chat.completion`` object with one assistant choice and its token usage."""
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop",
                "logprobs": None,
            }
        ],
        "usage": token_usage(input_tokens, output_tokens),
    }


def token_usage(input_tokens: int, output_tokens: int) -> dict[str, int]:
    """OpenAI's ``usage`` object."""
    return {
        "prompt_tokens": input_tokens,
        "completion_tokens": output_tokens,
        "total_tokens": input_tokens + output_tokens,
    }
