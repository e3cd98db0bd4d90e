"""A stand-in for a paid frontier API: an OpenAI-compatible server answering from replay data.

It answers ``POST /v1/chat/completions`` for the prompts that the outcome data recorded for
``model`` (the bundled data by default), in the real response shape (recorded tool calls as
tool calls), and lists the model at ``GET /v1/models``.  A prompt that was not recorded gets
a 404, or, with ``fallback_url``, the answer of another OpenAI-compatible server (e.g. a local
llama.cpp model), still reported under ``model`` (the whole request goes on: tools, response
format, sampling parameters): this keeps a local profile runnable end to end without a paid
key.  Used by ``cascade-router standin`` and the example agent; never in production.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
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
from router.errors import BackendError, ConfigurationError


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
) -> Starlette:
    """The stand-in's ASGI app (see the module docstring).  ``fallback_dialect``: how the
    fallback server reads requests (the default suits both llama.cpp servers)."""
    replay: ReplayBackend = (
        ReplayBackend.from_files(list(paths), model) if paths else replay_backend_for(model)
    )
    fallback: ChatBackend | None = None
    if fallback_url:
        fallback = OpenAIBackend(
            fallback_model or model,
            base_url=fallback_url,
            max_retries=0,
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
