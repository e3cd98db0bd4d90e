"""Request bodies of the service and how a model name selects the step and target.

``POST /v1/chat/completions`` takes the library's :class:`~router.backends.ChatRequest` (every
OpenAI field that shapes the answer, checked as strictly as OpenAI checks it) plus ``model``,
``stream``, ``stream_options`` and ``cascade``.  Model names: ``cascade`` (the default step and
target), ``cascade:STEP`` and ``cascade:STEP:TARGET`` (e.g. ``cascade:intent:quality=0.95`` or
``cascade:tool_selection:share=0.2``); the same can be given in the body as ``"cascade":
{"step": ..., "target": ...}`` (``extra_body`` in the openai client), which wins over the name.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from router.backends import AssistantMessage, ChatMessage, ChatRequest, ResponseFormat, Tool
from router.backends.request import ToolChoice, describe_error
from router.errors import ConfigurationError, UnknownModelError
from router.sdk import MODEL_PREFIX, StepTarget
from serving.errors import APIError, bad_request

__all__ = [
    "MODEL_PATTERN",
    "MODEL_PREFIX",
    "CascadeOptions",
    "ChatCompletionRequest",
    "FeedbackRequest",
    "RouteRequest",
    "StreamOptions",
    "select",
]


#: The model names that exist, as the OpenAPI document declares them: ``cascade``,
#: ``cascade:STEP``, ``cascade:STEP:TARGET`` (``cascade::TARGET`` for the default step).  Only
#: declared: any other name is still parsed by :func:`select` and answered with OpenAI's 404
#: ``model_not_found`` rather than a validation error; declared, it tells clients and API
#: fuzzers which names are served.
MODEL_PATTERN = r"^cascade(:[^:]+|:[^:]*:[\s\S]+)?$"


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")


class CascadeOptions(_Strict):
    """The ``cascade`` object of a request body: the step kind and target, by name."""

    step: str | None = Field(None, min_length=1, max_length=200)
    target: str | None = Field(None, min_length=1, max_length=100)


class StreamOptions(_Strict):
    include_usage: bool | None = None
    include_obfuscation: bool | None = None


class ChatCompletionRequest(ChatRequest):
    """``POST /v1/chat/completions``: an OpenAI chat-completions request; the request fields go
    whole to the tier that answers."""

    model: str = Field(
        min_length=1,
        max_length=300,
        json_schema_extra={"pattern": MODEL_PATTERN, "examples": [MODEL_PREFIX]},
    )
    stream: bool = False
    stream_options: StreamOptions | None = None
    cascade: CascadeOptions | None = None

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class RouteRequest(_Strict):
    """``POST /v1/route``: a decision without calling a model.

    Give the input as ``messages`` (with ``tools`` and ``response_format`` when the step asks
    for them) or as one ``input`` string; with the first tier's ``answer`` (its text, or its
    assistant message when it calls tools), the decision is whether to accept it.
    """

    model: str = MODEL_PREFIX
    step: str | None = Field(None, min_length=1, max_length=200)
    target: str | None = Field(None, min_length=1, max_length=100)
    messages: list[ChatMessage] | None = Field(None, min_length=1)
    input: str | None = Field(None, min_length=1)
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    answer: str | AssistantMessage | None = Field(
        None, description="the first tier's answer: accept or escalate"
    )

    def request(self) -> ChatRequest:
        """The step input as a request (tools and format included).

        Raises:
            APIError: 400 when neither or both of ``messages`` and ``input`` are given.
        """
        if (self.messages is None) == (self.input is None):
            raise bad_request("give exactly one of 'messages' and 'input'", "messages")
        fields: dict[str, Any] = {
            "tools": self.tools,
            "tool_choice": self.tool_choice,
            "parallel_tool_calls": self.parallel_tool_calls,
            "response_format": self.response_format,
        }
        given = {k: v for k, v in fields.items() if v is not None}
        messages: Any = self.messages or [{"role": "user", "content": self.input}]
        try:
            return ChatRequest.model_validate({"messages": messages, **given})
        except ValidationError as exc:
            raise bad_request(describe_error(exc), "messages") from exc


class FeedbackRequest(_Strict):
    """``POST /v1/feedback``: was the answer of a request accepted?"""

    request_id: str = Field(min_length=1, max_length=200)
    accepted: bool
    score: float | None = Field(None, ge=0.0, le=1.0)
    source: Literal["user", "validator", "human", "evaluation", "other"] | str | None = Field(
        None, max_length=100
    )


def select(model: str, options: CascadeOptions | None, default_step: str) -> StepTarget:
    """The step and target a model name (and an optional ``cascade`` body object) selects.

    Raises:
        APIError: 404 ``model_not_found`` for a name that is not ``cascade[:STEP[:TARGET]]``
        (``cascade:`` and ``cascade::`` name nothing), 400 for an unreadable target.
    """
    try:
        return StepTarget.parse(
            model,
            default_step,
            step=options.step if options else None,
            target=options.target if options else None,
        )
    except UnknownModelError as exc:
        raise APIError(404, str(exc), "invalid_request_error", "model_not_found", "model") from exc
    except ConfigurationError as exc:
        raise bad_request(str(exc), "model", "invalid_target") from exc
