"""A stand-in for a paid frontier API: an OpenAI-compatible server answering from replay data.

It answers ``POST /v1/chat/completions`` for the prompts that the outcome data recorded for
``model`` (the bundled data by default), in the real response shape (recorded tool calls as
tool calls), and lists the model at ``GET /v1/models``.  A prompt that was not recorded gets
a 404, or, with ``fallback_url``, the answer of another OpenAI-compatible server (e.g. a local
llama.cpp model), still reported under ``model`` (the whole request goes on: tools, response
format, sampling parameters): this keeps a local profile runnable end to end without a paid
key.  Used by ``cascade-router standin`` and the example agent; never in production.

A frontier model answers a tool or JSON request in the shape it asks for; a tiny fallback model
often does not.  So when the fallback's answer fails the validator
(:func:`router.validation.validate_answer`), the stand-in answers deterministically from the
request instead (:func:`conforming_answer`): a call of the function ``tool_choice`` names (else
of the offered function the fallback tried to call, else of the first offered one) with the
simplest arguments its schema allows, or the simplest JSON the response format allows.  Such
an answer is marked with ``system_fingerprint: "standin-conforming"``.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from router.backends import (
    ChatBackend,
    ChatRequest,
    Completion,
    Dialect,
    OpenAIBackend,
    ReplayBackend,
    replay_backend_for,
)
from router.backends.request import (
    AssistantMessage,
    FunctionCall,
    JsonObjectFormat,
    JsonSchemaFormat,
    NamedToolChoice,
    ToolCall,
)
from router.errors import BackendError, ConfigurationError
from router.validation import validate_answer

#: The ``system_fingerprint`` of an answer the stand-in built from the request.
CONFORMING_FINGERPRINT = "standin-conforming"


def _error(status: int, message: str, code: str | None = None) -> JSONResponse:
    kind = "invalid_request_error" if status < 500 else "server_error"
    body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
    return JSONResponse(body, status_code=status)


def create_standin_app(
    model: str,
    paths: Sequence[str | Path] | None = None,
    fallback_url: str | None = None,
    fallback_model: str | None = None,
    fallback_dialect: Dialect = "llama-cpp-python",
    fallback_timeout_s: float = 300.0,
) -> Starlette:
    """The stand-in's ASGI app (see the module docstring).  ``fallback_dialect``: how the
    fallback server reads requests (the default suits both llama.cpp servers);
    ``fallback_timeout_s``: how long its answer may take (a tool request to a small model on a
    busy CPU takes tens of seconds)."""
    replay: ReplayBackend = (
        ReplayBackend.from_files(list(paths), model) if paths else replay_backend_for(model)
    )
    fallback: ChatBackend | None = None
    if fallback_url:
        fallback = OpenAIBackend(
            fallback_model or model,
            base_url=fallback_url,
            max_retries=0,
            timeout_s=fallback_timeout_s,
            dialect=fallback_dialect,
            max_tokens=None,
        )

    async def models(_: Request) -> JSONResponse:
        created = int(time.time())
        entry = {"id": model, "object": "model", "created": created, "owned_by": "standin"}
        return JSONResponse({"object": "list", "data": [entry]})

    async def chat(request: Request) -> JSONResponse:
        try:
            body: Any = await request.json()
        except ValueError:
            return _error(400, "The request body is not valid JSON.", "invalid_json")
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            return _error(400, "'messages' must be a non-empty array", "invalid_value")
        if body.get("model") != model:
            return _error(
                404, f"The model `{body.get('model')}` does not exist.", "model_not_found"
            )
        if body.get("stream"):
            return _error(400, "The stand-in does not stream.", "unsupported")
        fields = {k: v for k, v in body.items() if k not in ("model", "stream", "stream_options")}
        try:
            asked = ChatRequest.of(fields.pop("messages"), **fields)
            try:
                completion = await replay.acomplete(asked)
            except BackendError:
                if fallback is None:
                    return _error(
                        404, f"No recorded answer of {model} for this prompt.", "not_recorded"
                    )
                completion = await fallback.acomplete(asked)  # the whole request goes on
                built = conforming_answer(asked, completion.message)
                if built is not None:
                    completion = replace(
                        completion, message=built, finish_reason=built_reason(built)
                    )
                    return JSONResponse(
                        {
                            **_completion(completion, model),
                            "system_fingerprint": CONFORMING_FINGERPRINT,
                        }
                    )
        except ConfigurationError as exc:
            return _error(400, str(exc), "invalid_value")
        except BackendError as exc:
            return _error(502, f"The fallback failed: {exc}", "upstream_error")
        return JSONResponse(_completion(completion, model))

    return Starlette(
        routes=[
            Route("/v1/chat/completions", chat, methods=["POST"]),
            Route("/v1/models", models, methods=["GET"]),
        ]
    )


def _completion(completion: Completion, model: str) -> dict[str, Any]:
    """A ``chat.completion`` holding the whole answer (tool calls included) under ``model``."""
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": completion.message.to_openai(),
                "finish_reason": completion.finish_reason,
                "logprobs": completion.choice_logprobs,
            }
        ],
        "usage": {
            "prompt_tokens": completion.input_tokens,
            "completion_tokens": completion.output_tokens,
            "total_tokens": completion.input_tokens + completion.output_tokens,
        },
    }


def conforming_answer(request: ChatRequest, answer: AssistantMessage) -> AssistantMessage | None:
    """A deterministic answer in the shape ``request`` asks for, when ``answer`` does not have
    it (None: ``answer`` passes the validator, or no simple answer fits the request).

    A tool request (tools offered, ``tool_choice`` not ``"none"``, and a call required or
    attempted) gets one call of the named function, else of the offered function ``answer``
    called, else of the first offered one, its arguments the simplest instance of its
    ``parameters`` schema (:func:`simplest_instance`); a JSON response format gets the simplest
    instance of its schema (``{}`` for ``json_object``).
    """
    if not validate_answer(request, answer).invalid:
        return None
    built: AssistantMessage | None = None
    choice = request.tool_choice
    if request.tools and choice != "none":
        names = request.tool_names
        attempted = [c.function.name for c in answer.tool_calls or () if c.function.name in names]
        if isinstance(choice, NamedToolChoice):
            name = choice.function.name
        else:
            name = attempted[0] if attempted else names[0]
        tool = request.tool(name)
        schema = tool.function.parameters if tool is not None else None
        arguments = simplest_instance(schema or {"type": "object"})
        call = ToolCall(
            id=f"call_standin_{uuid.uuid4().hex[:12]}",
            function=FunctionCall(name=name, arguments=json.dumps(arguments)),
        )
        built = AssistantMessage(tool_calls=[call])
    fmt = request.response_format
    if built is None or validate_answer(request, built).invalid:
        if isinstance(fmt, JsonSchemaFormat):
            schema = fmt.json_schema.schema_ or {"type": "object"}
            built = AssistantMessage(content=json.dumps(simplest_instance(schema)))
        elif isinstance(fmt, JsonObjectFormat):
            built = AssistantMessage(content="{}")
    if built is None or validate_answer(request, built).invalid:
        return None
    return built


def built_reason(message: AssistantMessage) -> str:
    """The finish reason of a built answer."""
    return "tool_calls" if message.tool_calls else "stop"


def simplest_instance(schema: dict[str, Any]) -> Any:
    """The simplest value a JSON schema allows, built deterministically: its ``const``, else its
    first ``enum`` value, else by type (the first non-null one): an object with its required
    properties, an array of ``minItems`` items, ``"x" * minLength``, the smallest allowed number
    from 0, ``false``, ``null``; ``anyOf``/``oneOf`` take their first branch.  Schemas this
    does not cover (``$ref``, patterns, formats) may get a value they refuse: callers validate.
    """
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for key in ("anyOf", "oneOf"):
        if schema.get(key):
            return simplest_instance(schema[key][0])
    kind = schema.get("type", "object" if "properties" in schema else "string")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object":
        properties = schema.get("properties") or {}
        return {
            name: simplest_instance(properties.get(name) or {})
            for name in schema.get("required") or ()
        }
    if kind == "array":
        return [simplest_instance(schema.get("items") or {})] * int(schema.get("minItems", 0))
    if kind == "string":
        return "x" * int(schema.get("minLength", 0))
    if kind in ("integer", "number"):
        low = schema.get("minimum", schema.get("exclusiveMinimum"))
        value = max(0, low) if low is not None else 0
        if "exclusiveMinimum" in schema and value <= schema["exclusiveMinimum"]:
            value = schema["exclusiveMinimum"] + 1
        return int(value) if kind == "integer" else value
    if kind == "boolean":
        return False
    return None
