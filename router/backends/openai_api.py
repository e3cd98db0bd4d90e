"""A model behind an OpenAI-compatible chat-completions endpoint (OpenAI, vLLM, llama.cpp)."""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
import uuid
import weakref
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

from pydantic import ValidationError

from router.backends.base import Completion
from router.backends.messages import ChatInput, as_request, estimate_tokens, prompt_chars
from router.backends.request import AssistantMessage, ChatRequest, message_text
from router.errors import (
    BackendError,
    BackendRequestError,
    BackendTimeoutError,
    BackendUnavailableError,
    ConfigurationError,
)
from router.tracing import trace_headers

Dialect = Literal["openai", "llama-cpp-python"]
#: How an upstream reads a request: OpenAI's API as documented (OpenAI, vLLM, llama.cpp's own
#: ``llama-server``), or llama-cpp-python's server, which takes a ``json_schema`` response format
#: only as ``{"type": "json_object", "schema": ...}``, reads ``max_tokens`` only and reads tools,
#: tool choices and tool turns its own way (see ``_to_llama_cpp_python``).
DIALECTS: tuple[str, ...] = ("openai", "llama-cpp-python")
#: What traces call an OpenAI-protocol upstream (``gen_ai.provider.name``) unless told otherwise.
DEFAULT_PROVIDER = "openai"
_DEFAULT_OPENAI_BASE_URL = "https://api.openai.com/v1"
_PLACEHOLDER_API_KEY = "not-needed"


class OpenAIBackend:
    """A model behind an OpenAI-compatible chat-completions endpoint.

    Works with OpenAI, ``vllm serve`` and llama.cpp's server: set ``base_url`` to the server's
    ``/v1`` URL.  The API key is ``api_key`` if given, else the environment variable
    ``api_key_env``, else the placeholder ``"not-needed"`` (local servers ignore it).

    A :class:`~router.backends.request.ChatRequest` goes through whole: tools, tool choice,
    response format, sampling parameters, limits, logprobs, user and metadata as the caller set
    them, with the backend's ``temperature`` and ``max_tokens`` only where the request sets none
    (``dialect="llama-cpp-python"`` rewrites what that server reads otherwise: the response
    format, the token limit, the tool choice and tool turns).  The answer comes back whole: the
    assistant message with its tool calls, the finish reason and, when asked, OpenAI's logprobs
    object.

    Traces: inside the router's model call span, the span's context goes to the upstream as
    W3C ``traceparent``; ``provider_name`` is the span's ``gen_ai.provider.name`` (``openai``
    for the protocol by default; e.g. ``vllm`` or ``llama.cpp`` as custom values).

    Clients are created once, lazily and thread-safely, and reused; the async client is kept
    per event loop, so ``asyncio.run`` may be called repeatedly.

    Errors: a connection failure or timeout raises :class:`BackendUnavailableError`; a request
    the server refuses as invalid raises :class:`BackendRequestError`; any other error status or
    a malformed answer raises :class:`BackendError`.  All name the model and the base URL.
    """

    def __init__(
        self,
        model: str,
        base_url: str | None = None,
        api_key: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        timeout_s: float = 30.0,
        max_retries: int = 1,
        temperature: float | None = 0.0,
        logprobs: bool = False,
        max_tokens: int | None = 512,
        dialect: Dialect = "openai",
        provider_name: str = DEFAULT_PROVIDER,
    ) -> None:
        if not isinstance(model, str) or not model:
            raise ConfigurationError("OpenAIBackend needs a non-empty model name")
        if timeout_s <= 0:
            raise ConfigurationError(f"timeout_s must be positive, got {timeout_s}")
        if max_retries < 0:
            raise ConfigurationError(f"max_retries must be >= 0, got {max_retries}")
        if max_tokens is not None and max_tokens <= 0:
            raise ConfigurationError(f"max_tokens must be positive or None, got {max_tokens}")
        if dialect not in DIALECTS:
            raise ConfigurationError(
                f"dialect must be one of {', '.join(DIALECTS)}, got {dialect!r}"
            )
        self.model = model
        self.base_url = base_url.rstrip("/") if base_url else None
        self.api_key = api_key
        self.api_key_env = api_key_env
        self.timeout_s = float(timeout_s)
        self.max_retries = int(max_retries)
        self.temperature = temperature
        self.logprobs = bool(logprobs)
        self.max_tokens = max_tokens
        self.dialect = dialect
        self.provider_name = str(provider_name or DEFAULT_PROVIDER)
        self._lock = threading.Lock()
        #: whether the server honours OpenAI's ``n`` (None: not known yet; llama.cpp does not)
        self._honours_n: bool | None = None
        self._client: Any = None
        self._async_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = (
            weakref.WeakKeyDictionary()
        )

    def __repr__(self) -> str:
        return f"OpenAIBackend(model={self.model!r}, base_url={self.display_url!r})"

    @property
    def display_url(self) -> str:
        """The base URL used, for messages (OpenAI's own when none is configured)."""
        return self.base_url or os.environ.get("OPENAI_BASE_URL") or _DEFAULT_OPENAI_BASE_URL

    def _resolve_api_key(self) -> str:
        if self.api_key:
            return self.api_key
        return os.environ.get(self.api_key_env) or _PLACEHOLDER_API_KEY

    def _client_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "api_key": self._resolve_api_key(),
            "timeout": self.timeout_s,
            "max_retries": self.max_retries,
        }
        if self.base_url is not None:
            kwargs["base_url"] = self.base_url
        return kwargs

    def _sync_client(self) -> Any:
        client = self._client
        if client is None:
            with self._lock:
                if self._client is None:
                    import openai

                    self._client = openai.OpenAI(**self._client_kwargs())
                client = self._client
        return client

    def _async_client(self) -> Any:
        loop = asyncio.get_running_loop()
        with self._lock:
            client = self._async_clients.get(loop)
            if client is None:
                import openai

                client = openai.AsyncOpenAI(**self._client_kwargs())
                self._async_clients[loop] = client
        return client

    async def awarm(self) -> None:
        """Create this event loop's HTTP client now (importing ``openai`` takes seconds on a
        busy machine), so that the first request does not wait for it; no request is sent."""
        await asyncio.to_thread(_import_openai)
        self._async_client()

    def close(self) -> None:
        """Close the blocking HTTP client (async clients close with their event loop)."""
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    def _body(self, request: ChatRequest, max_tokens: int | None) -> dict[str, Any]:
        """The request as this upstream takes it: the caller's fields unchanged, the model's
        name, and the backend's defaults where the request sets none."""
        body = request.to_openai()
        if request.token_limit is None:
            limit = max_tokens if max_tokens is not None else self.max_tokens
            if limit is not None:
                body["max_tokens"] = int(limit)
        if request.temperature is None and self.temperature is not None:
            body["temperature"] = self.temperature
        if self.logprobs and not request.logprobs:
            body["logprobs"] = True  # the answer features read them
        if self.dialect == "llama-cpp-python":
            _to_llama_cpp_python(body)
        return {"model": self.model, **body}

    def _translate(self, exc: Exception) -> BackendError:
        import openai

        where = f"model {self.model} at {self.display_url}"
        if isinstance(exc, openai.APITimeoutError):
            return BackendTimeoutError(
                f"{where} unreachable: no answer within {self.timeout_s:g}s "
                f"(after {self.max_retries} retries)"
            )
        if isinstance(exc, openai.APIConnectionError):
            cause = exc.__cause__ or exc
            return BackendUnavailableError(f"{where} unreachable: {_one_line(cause)}")
        if isinstance(exc, openai.APIStatusError):
            error = BackendRequestError if exc.status_code in (400, 413, 422) else BackendError
            return error(
                f"{where} failed with HTTP status {exc.status_code}: {_status_detail(exc)}"
            )
        return BackendError(f"{where} failed: {_one_line(exc)}")

    def _completion(self, response: Any, request: ChatRequest, latency_s: float) -> Completion:
        return self._completions(response, request, latency_s)[0]

    def _completions(
        self, response: Any, request: ChatRequest, latency_s: float
    ) -> list[Completion]:
        """One :class:`Completion` per choice.  The prompt is charged once, to the first; the
        completion tokens are shared out by the choices' lengths when only a total is given."""
        choices = getattr(response, "choices", None) or []
        if not choices:
            raise BackendError(
                f"model {self.model} at {self.display_url} returned no choices in its answer"
            )
        try:
            messages = [_message(getattr(c, "message", None)) for c in choices]
        except (ValidationError, TypeError, ValueError) as exc:
            raise BackendError(
                f"model {self.model} at {self.display_url} returned an unreadable message: "
                f"{_one_line(exc)[:300]}"
            ) from exc
        texts = [message_text(m) for m in messages]
        usage = getattr(response, "usage", None)
        prompt_tokens = getattr(usage, "prompt_tokens", None)
        completion_tokens = getattr(usage, "completion_tokens", None)
        if not isinstance(prompt_tokens, int):
            prompt_tokens = estimate_tokens(prompt_chars(request))
        estimated = [estimate_tokens(t) for t in texts]
        if not isinstance(completion_tokens, int):
            shares = estimated
        elif len(texts) == 1:
            shares = [completion_tokens]
        else:
            total = max(sum(estimated), 1)
            shares = [round(completion_tokens * e / total) for e in estimated]
        answered_by = getattr(response, "model", None)
        answered_by = answered_by if isinstance(answered_by, str) and answered_by else None
        response_id = getattr(response, "id", None)
        response_id = response_id if isinstance(response_id, str) and response_id else None
        out = []
        for k, (choice, message) in enumerate(zip(choices, messages, strict=True)):
            logprobs: tuple[float, ...] | None = None
            detail = getattr(choice, "logprobs", None)
            content = getattr(detail, "content", None)
            if content:
                logprobs = tuple(float(token.logprob) for token in content)
            asked = bool(request.logprobs) and detail is not None
            out.append(
                Completion(
                    message=message,
                    model=self.model,
                    input_tokens=prompt_tokens if k == 0 else 0,
                    output_tokens=shares[k],
                    latency_s=latency_s,
                    logprobs=logprobs if (self.logprobs or request.logprobs) else None,
                    cost_usd=None,
                    finish_reason=str(getattr(choice, "finish_reason", None) or "stop"),
                    choice_logprobs=_as_dict(detail) if asked else None,
                    response_model=answered_by,
                    response_id=response_id,
                )
            )
        return out

    def _sample_body(
        self, request: ChatRequest, n: int, temperature: float, max_tokens: int | None
    ) -> dict[str, Any]:
        if not 1 <= n <= 128:
            raise ConfigurationError(f"the number of samples must lie in [1, 128], got {n}")
        body = self._body(request, max_tokens)
        body["temperature"] = float(temperature)
        if n > 1:
            body["n"] = n
        return body

    def _note_choices(self, asked: int, got: int) -> None:
        if asked > 1:
            self._honours_n = got >= asked

    def sample(
        self,
        request: ChatRequest | ChatInput,
        k: int,
        temperature: float,
        *,
        max_tokens: int | None = None,
    ) -> list[Completion]:
        """``k`` answers sampled at ``temperature``: one request with OpenAI's ``n`` (vLLM,
        OpenAI); a server that returns fewer choices (llama.cpp's) is asked again, in parallel,
        for the rest, and from then on asked ``k`` times at once.

        Raises: as :meth:`complete`.
        """
        import openai

        checked = as_request(request)
        client = self._sync_client()

        headers = _trace_headers()  # here: the calls below run in worker threads

        def call(n: int) -> list[Completion]:
            body = self._sample_body(checked, n, temperature, max_tokens)
            start = time.perf_counter()
            try:
                response = client.chat.completions.create(**body, **headers)
            except openai.OpenAIError as exc:
                raise self._translate(exc) from exc
            return self._completions(response, checked, time.perf_counter() - start)

        done: list[Completion] = []
        if self._honours_n is not False:
            done = call(k)
            self._note_choices(k, len(done))
            if len(done) >= k:
                return done[:k]
        missing = k - len(done)
        with ThreadPoolExecutor(max_workers=missing) as pool:
            batches = list(pool.map(call, [1] * missing))
        return done + [c for batch in batches for c in batch]

    async def asample(
        self,
        request: ChatRequest | ChatInput,
        k: int,
        temperature: float,
        *,
        max_tokens: int | None = None,
    ) -> list[Completion]:
        """Asyncio form of :meth:`sample`."""
        import openai

        checked = as_request(request)
        client = self._async_client()

        headers = _trace_headers()

        async def call(n: int) -> list[Completion]:
            body = self._sample_body(checked, n, temperature, max_tokens)
            start = time.perf_counter()
            try:
                response = await client.chat.completions.create(**body, **headers)
            except openai.OpenAIError as exc:
                raise self._translate(exc) from exc
            return self._completions(response, checked, time.perf_counter() - start)

        done: list[Completion] = []
        if self._honours_n is not False:
            done = await call(k)
            self._note_choices(k, len(done))
            if len(done) >= k:
                return done[:k]
        batches = await asyncio.gather(*(call(1) for _ in range(k - len(done))))
        return done + [c for batch in batches for c in batch]

    def complete(
        self, request: ChatRequest | ChatInput, *, max_tokens: int | None = None
    ) -> Completion:
        """Ask the model to answer ``request`` (blocking): every field the request sets is sent
        as given; ``max_tokens`` (else the backend's default) applies where the request sets no
        limit, the backend's temperature where it sets none.

        Raises:
            ConfigurationError: ``request`` is not a valid chat request.
            BackendUnavailableError: the server could not be reached or timed out.
            BackendRequestError: the server refused the request as invalid (HTTP 400/413/422).
            BackendError: the server answered with an error or an unusable answer.
        """
        import openai

        checked = as_request(request)
        body = self._body(checked, max_tokens)
        client = self._sync_client()
        start = time.perf_counter()
        try:
            response = client.chat.completions.create(**body, **_trace_headers())
        except openai.OpenAIError as exc:
            raise self._translate(exc) from exc
        latency_s = time.perf_counter() - start
        return self._completion(response, checked, latency_s)

    async def acomplete(
        self, request: ChatRequest | ChatInput, *, max_tokens: int | None = None
    ) -> Completion:
        """Ask the model to answer ``request`` (asyncio); see :meth:`complete`."""
        import openai

        checked = as_request(request)
        body = self._body(checked, max_tokens)
        client = self._async_client()
        start = time.perf_counter()
        try:
            response = await client.chat.completions.create(**body, **_trace_headers())
        except openai.OpenAIError as exc:
            raise self._translate(exc) from exc
        latency_s = time.perf_counter() - start
        return self._completion(response, checked, latency_s)


def _trace_headers() -> dict[str, Any]:
    """``extra_headers`` carrying the current span's trace context (the router's CLIENT span
    of this call, when tracing is on), as keyword arguments for ``create``; none when off."""
    headers = trace_headers()
    return {"extra_headers": headers} if headers else {}


def _import_openai() -> None:
    import openai  # noqa: F401


#: The system message llama-cpp-python's function-calling format needs to show the tools at all
#: (it lists them inside the system message) when a tool request brings none of its own.
LLAMA_CPP_TOOLS_SYSTEM = "You are a helpful assistant. Call a function when the request needs one."


def _to_llama_cpp_python(body: dict[str, Any]) -> None:
    """Rewrite a request for llama-cpp-python's server (0.3.x), which reads some fields otherwise:

    * a ``json_schema`` response format goes inside ``json_object`` (its own extension), and
      ``max_completion_tokens`` is ``max_tokens``;
    * an assistant turn that only called tools has ``content: null`` or none, which it refuses
      (500): its content becomes ``""``;
    * its ``chatml-function-calling`` format shows no ``tool`` message to the model: each tool
      result goes as a user turn naming the function (``Result of lookup_order: …``);
    * it shows the tools only inside a system message, so a tool request without one gets
      :data:`LLAMA_CPP_TOOLS_SYSTEM`; and it answers ``tool_choice: "required"`` with a 500, so
      that becomes the one offered function, or ``"auto"`` among several (the validator still
      holds the answer to the caller's ``"required"``).

    An omitted ``tool_choice`` stays omitted: that format then reads the request as having no
    tools (a text answer, which OpenAI's default ``"auto"`` allows); ask for ``"auto"`` to let
    the model choose a call.
    """
    fmt = body.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        schema = (fmt.get("json_schema") or {}).get("schema")
        body["response_format"] = {"type": "json_object", **({"schema": schema} if schema else {})}
    if "max_completion_tokens" in body:
        body["max_tokens"] = body.pop("max_completion_tokens")
    body["messages"] = _llama_cpp_messages(body["messages"])
    tools = body.get("tools") or []
    choice = body.get("tool_choice")
    if choice == "required":
        names = [t["function"]["name"] for t in tools]
        body["tool_choice"] = (
            {"type": "function", "function": {"name": names[0]}} if len(names) == 1 else "auto"
        )
    has_system = any(m.get("role") == "system" for m in body["messages"])
    if tools and choice not in (None, "none") and not has_system:
        body["messages"].insert(0, {"role": "system", "content": LLAMA_CPP_TOOLS_SYSTEM})


def _llama_cpp_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The messages of :func:`_to_llama_cpp_python`: empty content for tool-calling turns, tool
    results as user turns naming the function that produced them."""
    called: dict[str, str] = {}
    out = []
    for message in messages:
        role = message.get("role")
        if role == "assistant":
            for call in message.get("tool_calls") or ():
                called[call["id"]] = call["function"]["name"]
            if message.get("content") is None:
                message = {**message, "content": ""}
        elif role == "tool":
            content = message.get("content")
            text = content if isinstance(content, str) else _wire_parts_text(content)
            name = called.get(str(message.get("tool_call_id")), "the tool")
            message = {"role": "user", "content": f"Result of {name}: {text}"}
        out.append(message)
    return out


def _wire_parts_text(content: Any) -> str:
    """The text parts of a message content in OpenAI's wire shape, joined."""
    parts = content if isinstance(content, list) else []
    return "".join(str(p.get("text", "")) for p in parts if isinstance(p, dict))


def _as_dict(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if hasattr(value, "model_dump"):
        dumped = value.model_dump(mode="json", exclude_unset=True)
        return dumped if isinstance(dumped, dict) else None
    return dict(value) if isinstance(value, Mapping) else None


def _message(raw: Any) -> AssistantMessage:
    """The assistant message of a choice: content, tool calls (ids, names and argument texts as
    the model produced them; arguments given as an object are written as JSON) and refusal."""
    data = _as_dict(raw) or {}
    content = data.get("content")
    calls = []
    for k, call in enumerate(data.get("tool_calls") or []):
        function = call.get("function") or {}
        arguments = function.get("arguments")
        if not isinstance(arguments, str):
            arguments = json.dumps(arguments if arguments is not None else {})
        calls.append(
            {
                "id": str(call.get("id") or f"call_{k}_{uuid.uuid4().hex[:12]}"),
                "type": "function",
                "function": {"name": str(function.get("name") or ""), "arguments": arguments},
            }
        )
    return AssistantMessage.model_validate(
        {
            "role": "assistant",
            "content": content if isinstance(content, str) else None,
            "refusal": data.get("refusal") if isinstance(data.get("refusal"), str) else None,
            "tool_calls": calls or None,
        }
    )


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def _status_detail(exc: Any) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, Mapping):
        error = body.get("error", body)
        if isinstance(error, Mapping) and error.get("message"):
            return " ".join(str(error["message"]).split())
        if isinstance(error, str) and error:
            return " ".join(error.split())
    return _one_line(exc)
