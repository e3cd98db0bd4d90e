"""A model behind an OpenAI-compatible chat-completions endpoint (OpenAI, vLLM, llama.cpp)."""

from __future__ import annotations

import asyncio
import os
import threading
import time
import weakref
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from router.backends.base import Completion
from router.backends.messages import Messages, as_messages, estimate_tokens
from router.errors import (
    BackendError,
    BackendTimeoutError,
    BackendUnavailableError,
    ConfigurationError,
)

if TYPE_CHECKING:
    pass

_DEFAULT_OPENAI_BASE_URL = "https://api.openai.com/v1"
_PLACEHOLDER_API_KEY = "not-needed"


class OpenAIBackend:
    """A model behind an OpenAI-compatible chat-completions endpoint.

    Works with OpenAI, ``vllm serve`` and llama.cpp's server: set ``base_url`` to the server's
    ``/v1`` URL.  The API key is ``api_key`` if given, else the environment variable
    ``api_key_env``, else the placeholder ``"not-needed"`` (local servers ignore it).

    Clients are created once, lazily and thread-safely, and reused; the async client is kept
    per event loop, so ``asyncio.run`` may be called repeatedly.

    Errors: a connection failure or timeout raises :class:`BackendUnavailableError`; an HTTP
    error status or a malformed answer raises :class:`BackendError`.  Both name the model and
    the base URL.
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
    ) -> None:
        if not isinstance(model, str) or not model:
            raise ConfigurationError("OpenAIBackend needs a non-empty model name")
        if timeout_s <= 0:
            raise ConfigurationError(f"timeout_s must be positive, got {timeout_s}")
        if max_retries < 0:
            raise ConfigurationError(f"max_retries must be >= 0, got {max_retries}")
        if max_tokens is not None and max_tokens <= 0:
            raise ConfigurationError(f"max_tokens must be positive or None, got {max_tokens}")
        self.model = model
        self.base_url = base_url.rstrip("/") if base_url else None
        self.api_key = api_key
        self.api_key_env = api_key_env
        self.timeout_s = float(timeout_s)
        self.max_retries = int(max_retries)
        self.temperature = temperature
        self.logprobs = bool(logprobs)
        self.max_tokens = max_tokens
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

    def close(self) -> None:
        """Close the blocking HTTP client (async clients close with their event loop)."""
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    def _request(self, messages: Messages, max_tokens: int | None) -> dict[str, Any]:
        request: dict[str, Any] = {"model": self.model, "messages": as_messages(messages)}
        limit = max_tokens if max_tokens is not None else self.max_tokens
        if limit is not None:
            request["max_tokens"] = int(limit)
        if self.temperature is not None:
            request["temperature"] = self.temperature
        if self.logprobs:
            request["logprobs"] = True
        return request

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
            return BackendError(
                f"{where} failed with HTTP status {exc.status_code}: {_status_detail(exc)}"
            )
        return BackendError(f"{where} failed: {_one_line(exc)}")

    def _completion(self, response: Any, messages: Messages, latency_s: float) -> Completion:
        return self._completions(response, messages, latency_s)[0]

    def _completions(self, response: Any, messages: Messages, latency_s: float) -> list[Completion]:
        """One :class:`Completion` per choice.  The prompt is charged once, to the first; the
        completion tokens are shared out by the choices' lengths when only a total is given."""
        choices = getattr(response, "choices", None) or []
        if not choices:
            raise BackendError(
                f"model {self.model} at {self.display_url} returned no choices in its answer"
            )
        texts = [getattr(getattr(c, "message", None), "content", None) or "" for c in choices]
        usage = getattr(response, "usage", None)
        prompt_tokens = getattr(usage, "prompt_tokens", None)
        completion_tokens = getattr(usage, "completion_tokens", None)
        if not isinstance(prompt_tokens, int):
            prompt_tokens = estimate_tokens("".join(m["content"] for m in messages))
        estimated = [estimate_tokens(t) for t in texts]
        if not isinstance(completion_tokens, int):
            shares = estimated
        elif len(texts) == 1:
            shares = [completion_tokens]
        else:
            total = max(sum(estimated), 1)
            shares = [round(completion_tokens * e / total) for e in estimated]
        out = []
        for k, (choice, text) in enumerate(zip(choices, texts, strict=True)):
            logprobs: tuple[float, ...] | None = None
            if self.logprobs:
                content = getattr(getattr(choice, "logprobs", None), "content", None)
                if content:
                    logprobs = tuple(float(token.logprob) for token in content)
            out.append(
                Completion(
                    text=text,
                    model=self.model,
                    input_tokens=prompt_tokens if k == 0 else 0,
                    output_tokens=shares[k],
                    latency_s=latency_s,
                    logprobs=logprobs,
                    cost_usd=None,
                )
            )
        return out

    def _sample_request(
        self, messages: Messages, n: int, temperature: float, max_tokens: int | None
    ) -> dict[str, Any]:
        if not 1 <= n <= 128:
            raise ConfigurationError(f"the number of samples must lie in [1, 128], got {n}")
        request = self._request(messages, max_tokens)
        request["temperature"] = float(temperature)
        if n > 1:
            request["n"] = n
        return request

    def _note_choices(self, asked: int, got: int) -> None:
        if asked > 1:
            self._honours_n = got >= asked

    def sample(
        self, messages: Messages, k: int, temperature: float, *, max_tokens: int | None = None
    ) -> list[Completion]:
        """``k`` answers sampled at ``temperature``: one request with OpenAI's ``n`` (vLLM,
        OpenAI); a server that returns fewer choices (llama.cpp's) is asked again, in parallel,
        for the rest, and from then on asked ``k`` times at once.

        Raises: as :meth:`complete`.
        """
        import openai

        client = self._sync_client()

        def call(n: int) -> list[Completion]:
            request = self._sample_request(messages, n, temperature, max_tokens)
            start = time.perf_counter()
            try:
                response = client.chat.completions.create(**request)
            except openai.OpenAIError as exc:
                raise self._translate(exc) from exc
            return self._completions(response, request["messages"], time.perf_counter() - start)

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
        self, messages: Messages, k: int, temperature: float, *, max_tokens: int | None = None
    ) -> list[Completion]:
        """Asyncio form of :meth:`sample`."""
        import openai

        client = self._async_client()

        async def call(n: int) -> list[Completion]:
            request = self._sample_request(messages, n, temperature, max_tokens)
            start = time.perf_counter()
            try:
                response = await client.chat.completions.create(**request)
            except openai.OpenAIError as exc:
                raise self._translate(exc) from exc
            return self._completions(response, request["messages"], time.perf_counter() - start)

        done: list[Completion] = []
        if self._honours_n is not False:
            done = await call(k)
            self._note_choices(k, len(done))
            if len(done) >= k:
                return done[:k]
        batches = await asyncio.gather(*(call(1) for _ in range(k - len(done))))
        return done + [c for batch in batches for c in batch]

    def complete(self, messages: Messages, *, max_tokens: int | None = None) -> Completion:
        """Ask the model to answer ``messages`` (blocking).

        ``max_tokens`` overrides the backend's default for this call.

        Raises:
            ConfigurationError: ``messages`` are not valid chat messages.
            BackendUnavailableError: the server could not be reached or timed out.
            BackendError: the server answered with an error or an unusable answer.
        """
        import openai

        request = self._request(messages, max_tokens)
        client = self._sync_client()
        start = time.perf_counter()
        try:
            response = client.chat.completions.create(**request)
        except openai.OpenAIError as exc:
            raise self._translate(exc) from exc
        latency_s = time.perf_counter() - start
        return self._completion(response, request["messages"], latency_s)

    async def acomplete(self, messages: Messages, *, max_tokens: int | None = None) -> Completion:
        """Ask the model to answer ``messages`` (asyncio); see :meth:`complete`."""
        import openai

        request = self._request(messages, max_tokens)
        client = self._async_client()
        start = time.perf_counter()
        try:
            response = await client.chat.completions.create(**request)
        except openai.OpenAIError as exc:
            raise self._translate(exc) from exc
        latency_s = time.perf_counter() - start
        return self._completion(response, request["messages"], latency_s)


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
