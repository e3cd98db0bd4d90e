"""A small, real OpenAI-compatible HTTP server for tests and local stand-ins.

:class:`OpenAIStubServer` runs a uvicorn server in a background thread on ``127.0.0.1`` (on a
free port chosen by the OS) and speaks enough of the OpenAI API for the ``openai`` client:

* ``POST /v1/chat/completions``: non-streaming answers in the real response shape, with
  ``usage`` and, when the request sets ``logprobs: true``, ``choices[0].logprobs.content``.
* ``GET /v1/models``: the models it serves.

Answers come from a ``responder`` (messages -> text, or an assistant message as a mapping with
``content`` and/or ``tool_calls``), a ``body_responder`` (the whole request body -> the same;
:func:`obliging` answers what a request asks for: the tool call ``tool_choice`` names, JSON
fitting the ``json_schema``), or a replay frame in the long schema (``prompt_id, prompt, model,
score, response, input_tokens, output_tokens, cost_usd``), looked up by the requested model and
the prompt.  Faults can be injected with
``fail_with_status`` (optionally only for the first ``fail_times`` requests) and ``delay_s``;
``api_key`` makes the server demand ``Authorization: Bearer <api_key>``.

Usage::

    with OpenAIStubServer(responder=lambda messages: "hi") as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="x")
"""

from __future__ import annotations

import asyncio
import json
import math
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

if TYPE_CHECKING:
    import pandas as pd

    from router.backends import ReplayBackend

Answer = str | Mapping[str, Any]
Responder = Callable[[list[dict[str, Any]]], Answer]
BodyResponder = Callable[[dict[str, Any]], Answer]

DEFAULT_ANSWER = "This is the stub server's answer."
DEFAULT_MODEL = "stub-model"

_STATUS_TYPES = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("permission_denied", None),
    404: ("invalid_request_error", "model_not_found"),
    429: ("rate_limit_exceeded", "rate_limit_exceeded"),
}


def _error(status: int, message: str, code: str | None = None) -> JSONResponse:
    """An error response with OpenAI's error body."""
    kind, default_code = _STATUS_TYPES.get(status, ("server_error", None))
    body = {
        "error": {"message": message, "type": kind, "param": None, "code": code or default_code}
    }
    return JSONResponse(body, status_code=status)


def _tokens(text: str) -> list[str]:
    """Split text into pseudo-tokens (whitespace-separated words, keeping the spaces)."""
    words = text.split(" ")
    return [w if i == 0 else " " + w for i, w in enumerate(words)] if text else []


def _estimate(text: str) -> int:
    return math.ceil(len(text) / 4)


class OpenAIStubServer:
    """An OpenAI-compatible chat server on a free local port, run in a background thread.

    Args:
        responder: maps the request's messages to the answer text (or an assistant message
            mapping); default answers :data:`DEFAULT_ANSWER`.  Ignored when ``frame`` is given.
        body_responder: maps the whole request body to the answer; wins over ``responder``.
        frame: recorded outcomes (long schema) to answer from, per requested model; an
            unknown model or prompt gets a 404.
        models: model ids listed by ``/v1/models`` (default: the frame's models, else
            ``["stub-model"]``).  Requests for other models are still answered by the
            responder.
        fail_with_status: answer every chat request with this HTTP error status.
        fail_times: with ``fail_with_status``, fail only the first this-many requests.
        delay_s: sleep this long before answering each chat request.
        api_key: when set, requests must carry ``Authorization: Bearer <api_key>``.
        token_logprob: the log-probability reported for every token.
        honour_n: answer a request's ``n`` with that many choices (each from the responder);
            False answers one choice whatever ``n`` asks, as llama.cpp's server does.
        response_model: the ``model`` the answers name (default: the requested one), as OpenAI
            names a dated snapshot when asked for an alias.

    Attributes can be changed while the server runs (``server.delay_s = 1.0``); every
    received chat request body is appended to :attr:`requests`, its headers to :attr:`headers`.
    """

    def __init__(
        self,
        responder: Responder | None = None,
        *,
        body_responder: BodyResponder | None = None,
        frame: pd.DataFrame | None = None,
        models: Sequence[str] | None = None,
        fail_with_status: int | None = None,
        fail_times: int | None = None,
        delay_s: float = 0.0,
        api_key: str | None = None,
        token_logprob: float = -0.1,
        honour_n: bool = True,
        response_model: str | None = None,
    ) -> None:
        self.responder: Responder = responder or (lambda messages: DEFAULT_ANSWER)
        self.body_responder = body_responder
        self.frame = frame
        if models is not None:
            self.models = list(models)
        elif frame is not None:
            self.models = sorted(str(m) for m in frame["model"].dropna().unique())
        else:
            self.models = [DEFAULT_MODEL]
        self.fail_with_status = fail_with_status
        self.fail_times = fail_times
        self.delay_s = delay_s
        self.api_key = api_key
        self.token_logprob = token_logprob
        self.honour_n = honour_n
        self.requests: list[dict[str, Any]] = []
        #: the headers of every chat request received (lower-case names), in order
        self.headers: list[dict[str, str]] = []
        self.response_model = response_model
        self._failures = 0
        self._stopping = threading.Event()
        self._replays: dict[str, ReplayBackend | None] = {}
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None
        self.host = "127.0.0.1"
        self.port = 0
        self.app = Starlette(
            routes=[
                Route("/v1/chat/completions", self._chat, methods=["POST"]),
                Route("/v1/models", self._models, methods=["GET"]),
            ]
        )

    # ---------------------------------------------------------------- lifecycle

    @property
    def base_url(self) -> str:
        """The OpenAI base URL of the running server, ``http://127.0.0.1:PORT/v1``."""
        if not self.port:
            raise RuntimeError("OpenAIStubServer is not started")
        return f"http://{self.host}:{self.port}/v1"

    def start(self, timeout_s: float = 10.0) -> OpenAIStubServer:
        """Start serving in a background thread; returns once the server accepts requests."""
        if self._thread is not None:
            return self
        self._stopping.clear()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, 0))
        self.port = sock.getsockname()[1]
        self._socket = sock
        config = uvicorn.Config(
            self.app,
            log_level="warning",
            lifespan="off",
            access_log=False,
            timeout_graceful_shutdown=1,
        )
        server = uvicorn.Server(config)
        self._server = server
        self._thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name="openai-stub-server", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("OpenAIStubServer failed to start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        """Stop the server and wait for its thread (in-flight requests get ~1 s)."""
        server, thread, sock = self._server, self._thread, self._socket
        self._server = self._thread = self._socket = None
        self._stopping.set()
        if server is not None:
            server.should_exit = True
        if thread is not None:
            thread.join(timeout=10)
        if sock is not None:
            sock.close()

    def __enter__(self) -> OpenAIStubServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # ---------------------------------------------------------------- endpoints

    def _authorised(self, request: Request) -> bool:
        if self.api_key is None:
            return True
        return request.headers.get("authorization", "") == f"Bearer {self.api_key}"

    async def _models(self, request: Request) -> JSONResponse:
        if not self._authorised(request):
            return _error(401, "Incorrect API key provided.")
        data = [
            {"id": m, "object": "model", "created": 0, "owned_by": "openai-stub-server"}
            for m in self.models
        ]
        return JSONResponse({"object": "list", "data": data})

    async def _chat(self, request: Request) -> JSONResponse:
        if not self._authorised(request):
            return _error(401, "Incorrect API key provided.")
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "The request body is not valid JSON.")
        if not isinstance(body, dict):
            return _error(400, "The request body must be a JSON object.")
        self.requests.append(body)
        self.headers.append(dict(request.headers))
        if self.delay_s > 0:
            # Sleep in small steps so that stopping the server does not wait for the delay.
            deadline = time.monotonic() + self.delay_s
            while not self._stopping.is_set() and (left := deadline - time.monotonic()) > 0:
                await asyncio.sleep(min(left, 0.02))
            if self._stopping.is_set():
                return _error(503, "The server is shutting down.")
        if self.fail_with_status is not None and (
            self.fail_times is None or self._failures < self.fail_times
        ):
            self._failures += 1
            return _error(self.fail_with_status, f"Injected failure {self.fail_with_status}.")
        messages = body.get("messages")
        model = body.get("model")
        if not isinstance(model, str) or not model:
            return _error(400, "you must provide a model parameter")
        if not isinstance(messages, list) or not messages:
            return _error(400, "'messages' must be a non-empty array")
        if body.get("stream"):
            return _error(400, "This stub server does not support streaming.")

        n = body.get("n") or 1
        if not isinstance(n, int) or n < 1:
            return _error(400, "'n' must be a positive integer")
        choices, prompt_tokens, completion_tokens = [], 0, 0
        for index in range(n if self.honour_n else 1):
            made = self._choice(index, model, messages, body)
            if isinstance(made, JSONResponse):
                return made
            choice, prompt_tokens, used = made
            choices.append(choice)
            completion_tokens += used
        return JSONResponse(
            {
                "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": self.response_model or model,
                "choices": choices,
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion_tokens,
                    "total_tokens": prompt_tokens + completion_tokens,
                },
                "system_fingerprint": None,
            }
        )

    def _choice(
        self, index: int, model: str, messages: list[Any], body: dict[str, Any]
    ) -> tuple[dict[str, Any], int, int] | JSONResponse:
        """One choice of the answer, its prompt tokens and its completion tokens."""
        prompt_tokens: int | None = None
        completion_tokens: int | None = None
        if self.frame is not None:
            found = self._replay(model, messages)
            if isinstance(found, JSONResponse):
                return found
            text, prompt_tokens, completion_tokens = found
        else:
            answer = (
                self.body_responder(body)
                if self.body_responder is not None
                else self.responder(messages)
            )
            if isinstance(answer, Mapping):
                return self._message_choice(index, messages, answer)
            text = answer

        finish_reason = "stop"
        tokens = _tokens(text)
        max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
        if isinstance(max_tokens, int) and 0 < max_tokens < len(tokens):
            tokens = tokens[:max_tokens]
            text = "".join(tokens)
            completion_tokens = None
            finish_reason = "length"
        if prompt_tokens is None:
            prompt_tokens = sum(_estimate(str(m.get("content") or "")) for m in messages)
        if completion_tokens is None:
            completion_tokens = len(tokens)

        logprobs: dict[str, Any] | None = None
        if body.get("logprobs"):
            logprobs = {
                "content": [
                    {
                        "token": t,
                        "logprob": self.token_logprob,
                        "bytes": list(t.encode()),
                        "top_logprobs": [],
                    }
                    for t in tokens
                ],
                "refusal": None,
            }
        choice = {
            "index": index,
            "message": {"role": "assistant", "content": text, "refusal": None},
            "logprobs": logprobs,
            "finish_reason": finish_reason,
        }
        return choice, prompt_tokens, completion_tokens

    def _message_choice(
        self, index: int, messages: list[Any], answer: Mapping[str, Any]
    ) -> tuple[dict[str, Any], int, int]:
        """A choice holding the assistant message ``answer`` (content and/or tool calls)."""
        calls = list(answer.get("tool_calls") or [])
        content = answer.get("content")
        message = {"role": "assistant", "content": content, "refusal": answer.get("refusal")}
        if calls:
            message["tool_calls"] = calls
        produced = (content or "") + "".join(c["function"]["arguments"] for c in calls)
        prompt_tokens = sum(_estimate(str(m.get("content") or "")) for m in messages)
        choice = {
            "index": index,
            "message": message,
            "logprobs": None,
            "finish_reason": "tool_calls" if calls else "stop",
        }
        return choice, prompt_tokens, max(_estimate(produced), 1)

    def _replay(
        self, model: str, messages: list[Any]
    ) -> tuple[str, int | None, int | None] | JSONResponse:
        from router.backends import ReplayBackend
        from router.errors import BackendError, ConfigurationError

        assert self.frame is not None
        if model not in self._replays:
            try:
                self._replays[model] = ReplayBackend(self.frame, model)
            except ConfigurationError:
                self._replays[model] = None
        backend = self._replays[model]
        if backend is None:
            return _error(404, f"The model `{model}` does not exist in the replay data.")
        try:
            completion = backend.complete(messages)
        except ConfigurationError as exc:
            return _error(400, str(exc))
        except BackendError as exc:
            return _error(404, str(exc))
        return completion.text, completion.input_tokens, completion.output_tokens


# ---------------------------------------------------------------- answering what is asked


def _example(schema: Mapping[str, Any] | None) -> Any:
    """A value that fits a (simple) JSON schema: its required properties filled in."""
    schema = schema or {}
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type", "object")
    kind = kind[0] if isinstance(kind, list) else kind
    if kind == "object":
        properties = schema.get("properties") or {}
        required = schema.get("required") or list(properties)
        return {name: _example(properties.get(name)) for name in required}
    if kind == "array":
        return [_example(schema.get("items"))]
    return {"string": "Paris", "integer": 3, "number": 2.5, "boolean": True}.get(kind)


def tool_call(name: str, arguments: Any, call_id: str = "call_stub_0") -> dict[str, Any]:
    """One tool call in OpenAI's shape (``arguments`` written as JSON unless a string)."""
    text = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": text}}


def obliging(body: dict[str, Any]) -> Answer:
    """The answer a request asks for: a call of the tool ``tool_choice`` names (the first tool
    for ``"required"``) with arguments fitting its schema, a JSON object fitting the
    ``json_schema`` response format (``{"answer": ...}`` for ``json_object``), else text."""
    tools = body.get("tools") or []
    choice = body.get("tool_choice")
    name = None
    if isinstance(choice, dict):
        name = choice["function"]["name"]
    elif choice == "required" and tools:
        name = tools[0]["function"]["name"]
    if name is not None:
        tool = next(t for t in tools if t["function"]["name"] == name)
        arguments = _example(tool["function"].get("parameters"))
        return {"content": None, "tool_calls": [tool_call(name, arguments)]}
    fmt = body.get("response_format") or {}
    if fmt.get("type") == "json_schema":
        return json.dumps(_example(fmt["json_schema"].get("schema")))
    if fmt.get("type") == "json_object":
        return json.dumps({"answer": DEFAULT_ANSWER})
    return DEFAULT_ANSWER
