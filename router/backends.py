"""Model backends: the things a cascade calls to get an answer.

Two kinds exist:

* :class:`OpenAIBackend` speaks the OpenAI chat-completions protocol over HTTP, so the one
  class talks to OpenAI itself, to ``vllm serve`` and to llama.cpp's ``llama-server`` alike
  (point ``base_url`` at the server's ``/v1``).
* :class:`ReplayBackend` answers from recorded outcomes (the long schema of
  :mod:`router.data`), for offline evaluation and tests without any model.

Both satisfy the :class:`ChatBackend` protocol; :func:`make_backend` builds either from a
plain mapping (as found in a config file).  The ``openai`` package is imported lazily, on
first use of an :class:`OpenAIBackend`, so importing this module stays cheap.
"""

from __future__ import annotations

import asyncio
import math
import os
import threading
import time
import weakref
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from router.errors import (
    BackendError,
    BackendTimeoutError,
    BackendUnavailableError,
    CascadeRouterError,
    ConfigurationError,
)
from router.opinions import MAX_SAMPLES, sample_model_names

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "VALID_ROLES",
    "ChatBackend",
    "Completion",
    "Messages",
    "OpenAIBackend",
    "ReplayBackend",
    "as_messages",
    "estimate_tokens",
    "input_text",
    "make_backend",
    "normalise_text",
]

Messages = list[dict[str, str]]
"""Chat messages as the OpenAI API takes them: ``[{"role": ..., "content": ...}, ...]``."""

VALID_ROLES: tuple[str, ...] = ("system", "user", "assistant", "tool", "developer")
"""Roles a chat message may carry."""

_OPTIONAL_STRING_KEYS = ("name", "tool_call_id")
_DEFAULT_OPENAI_BASE_URL = "https://api.openai.com/v1"
_PLACEHOLDER_API_KEY = "not-needed"


# --------------------------------------------------------------------------------------------
# Input handling
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Results and protocol
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Completion:
    """One answer of one model.

    Attributes:
        text: the answer text ("" when the model returned no text).
        model: the backend's model name (as configured, which is what prices are keyed on).
        input_tokens: prompt tokens (as reported, else estimated).
        output_tokens: completion tokens (as reported, else estimated).
        latency_s: wall-clock seconds the call took (replay: the configured profile).
        logprobs: per-token log-probabilities, when asked for and returned; else None.
        cost_usd: the known cost (replay records it); None lets the router price the tokens.
        score: replay only, the recorded quality score of this answer (for evaluation).
    """

    text: str
    model: str
    input_tokens: int
    output_tokens: int
    latency_s: float
    logprobs: tuple[float, ...] | None
    cost_usd: float | None
    score: float | None = None


@runtime_checkable
class ChatBackend(Protocol):
    """Anything that answers chat messages with a :class:`Completion`."""

    model: str

    def complete(self, messages: Messages, *, max_tokens: int | None = None) -> Completion:
        """Answer ``messages`` (blocking)."""
        ...

    async def acomplete(self, messages: Messages, *, max_tokens: int | None = None) -> Completion:
        """Answer ``messages`` (asyncio)."""
        ...


@runtime_checkable
class SamplingBackend(Protocol):
    """A backend that can also draw ``k`` extra samples of its answer (self-opinions)."""

    model: str

    def sample(
        self, messages: Messages, k: int, temperature: float, *, max_tokens: int | None = None
    ) -> list[Completion]:
        """``k`` answers to ``messages`` sampled at ``temperature`` (blocking)."""
        ...

    async def asample(
        self, messages: Messages, k: int, temperature: float, *, max_tokens: int | None = None
    ) -> list[Completion]:
        """``k`` answers to ``messages`` sampled at ``temperature`` (asyncio)."""
        ...


# --------------------------------------------------------------------------------------------
# OpenAI-compatible HTTP backend
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Replay backend
# --------------------------------------------------------------------------------------------

REPLAY_COLUMNS: tuple[str, ...] = (
    "prompt_id",
    "prompt",
    "model",
    "score",
    "response",
    "input_tokens",
    "output_tokens",
    "cost_usd",
)


@dataclass(frozen=True)
class _Recorded:
    prompt_id: str
    text: str
    input_tokens: int | None
    output_tokens: int | None
    cost_usd: float | None
    score: float | None


def _optional_float(value: Any) -> float | None:
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


def _optional_int(value: Any) -> int | None:
    number = _optional_float(value)
    return None if number is None else round(number)


class ReplayBackend:
    """A backend that answers from recorded outcomes of one model.

    ``frame`` has the long schema (one row per prompt and model, columns
    ``prompt_id, prompt, model, score, response, input_tokens, output_tokens, cost_usd``).
    Prompts are matched after normalising whitespace; the whole :func:`input_text` of the
    messages is tried first, then the content of the last user message alone.  When a prompt
    was recorded more than once for the model, the first row wins.

    ``latency_s`` is the latency reported in each :class:`Completion` (a profile; nothing
    sleeps).  Rows of the models ``<model>#s1``, ``<model>#s2``, … (recorded extra samples,
    :mod:`router.opinions`) answer :meth:`sample`.
    """

    def __init__(self, frame: pd.DataFrame, model: str, latency_s: float = 0.0) -> None:
        missing = [c for c in REPLAY_COLUMNS if c not in frame.columns]
        if missing:
            raise ConfigurationError(
                f"replay data lacks column(s) {', '.join(missing)}; "
                f"expected {', '.join(REPLAY_COLUMNS)}"
            )
        if latency_s < 0:
            raise ConfigurationError(f"latency_s must be >= 0, got {latency_s}")
        rows = frame[frame["model"] == model]
        if rows.empty:
            known = sorted(str(m) for m in frame["model"].dropna().unique())
            raise ConfigurationError(
                f"model {model} has no rows in the replay data "
                f"(models there: {', '.join(known) or 'none'})"
            )
        self.model = model
        self.latency_s = float(latency_s)
        self._answers = self._index(rows)
        self._samples: list[dict[str, _Recorded]] = []
        for name in sample_model_names(model, MAX_SAMPLES):
            sample_rows = frame[frame["model"] == name]
            if sample_rows.empty:
                break
            self._samples.append(self._index(sample_rows))

    @staticmethod
    def _index(rows: pd.DataFrame) -> dict[str, _Recorded]:
        answers: dict[str, _Recorded] = {}
        columns = [rows[c].tolist() for c in REPLAY_COLUMNS]
        for prompt_id, prompt, _, score, response, in_tok, out_tok, cost in zip(
            *columns, strict=True
        ):
            if not isinstance(prompt, str):
                continue
            key = normalise_text(prompt)
            if key in answers:
                continue
            answers[key] = _Recorded(
                prompt_id=str(prompt_id),
                text=response if isinstance(response, str) else "",
                input_tokens=_optional_int(in_tok),
                output_tokens=_optional_int(out_tok),
                cost_usd=_optional_float(cost),
                score=_optional_float(score),
            )
        return answers

    def __repr__(self) -> str:
        return f"ReplayBackend(model={self.model!r}, prompts={len(self._answers)})"

    @property
    def recorded_samples(self) -> int:
        """How many extra samples per prompt the replay data records (0: none)."""
        return len(self._samples)

    def __len__(self) -> int:
        return len(self._answers)

    @classmethod
    def from_files(
        cls,
        paths: str | Path | Sequence[str | Path],
        model: str,
        latency_s: float = 0.0,
        samples: int = 0,
    ) -> ReplayBackend:
        """Load recorded outcomes of ``model`` (and of its ``samples`` recorded extra samples)
        from files via :func:`router.data.load_outcomes`."""
        from router.data import load_outcomes

        path_list: list[str | Path] = [paths] if isinstance(paths, str | Path) else list(paths)
        frame = load_outcomes(path_list, models=[model, *sample_model_names(model, samples)])
        return cls(frame, model, latency_s=latency_s)

    @staticmethod
    def _lookup(answers: dict[str, _Recorded], messages: Messages) -> _Recorded | None:
        checked = as_messages(messages)
        found = answers.get(normalise_text(input_text(checked)))
        if found is not None:
            return found
        users = [m["content"] for m in checked if m["role"] == "user"]
        if users:
            return answers.get(normalise_text(users[-1]))
        return None

    def complete(self, messages: Messages, *, max_tokens: int | None = None) -> Completion:
        """Return the recorded answer for ``messages``; ``max_tokens`` is ignored.

        Raises:
            ConfigurationError: ``messages`` are not valid chat messages.
            BackendError: no answer of this model was recorded for the input.
        """
        return self._answer(self._answers, messages, self.model)

    def _answer(self, answers: dict[str, _Recorded], messages: Messages, model: str) -> Completion:
        found = self._lookup(answers, messages)
        if found is None:
            raise BackendError(
                f"no recorded answer of {model} for this input "
                f"(replay covers {len(answers)} prompts)"
            )
        checked = as_messages(messages)
        input_tokens = found.input_tokens
        if input_tokens is None:
            input_tokens = estimate_tokens("".join(m["content"] for m in checked))
        output_tokens = found.output_tokens
        if output_tokens is None:
            output_tokens = estimate_tokens(found.text)
        return Completion(
            text=found.text,
            model=model,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            latency_s=self.latency_s,
            logprobs=None,
            cost_usd=found.cost_usd,
            score=found.score,
        )

    async def acomplete(self, messages: Messages, *, max_tokens: int | None = None) -> Completion:
        """Async form of :meth:`complete` (answers immediately)."""
        return self.complete(messages, max_tokens=max_tokens)

    def sample(
        self, messages: Messages, k: int, temperature: float, *, max_tokens: int | None = None
    ) -> list[Completion]:
        """The first ``k`` recorded extra samples for ``messages`` (``temperature`` is what
        they were recorded at; it is not checked).

        Raises:
            ConfigurationError: fewer than ``k`` samples per prompt are recorded.
            BackendError: no sample of this model was recorded for the input.
        """
        if k > len(self._samples):
            raise ConfigurationError(
                f"replay data records {len(self._samples)} extra sample(s) of {self.model} per "
                f"prompt, {k} asked (load it with ReplayBackend.from_files(..., samples={k}))"
            )
        names = sample_model_names(self.model, k)
        return [
            self._answer(answers, messages, name)
            for answers, name in zip(self._samples[:k], names, strict=True)
        ]

    async def asample(
        self, messages: Messages, k: int, temperature: float, *, max_tokens: int | None = None
    ) -> list[Completion]:
        """Async form of :meth:`sample` (answers immediately)."""
        return self.sample(messages, k, temperature, max_tokens=max_tokens)


# --------------------------------------------------------------------------------------------
# Factory
# --------------------------------------------------------------------------------------------

_OPENAI_KEYS = frozenset(
    {
        "model",
        "base_url",
        "api_key",
        "api_key_env",
        "timeout_s",
        "max_retries",
        "temperature",
        "logprobs",
        "max_tokens",
    }
)
_REPLAY_KEYS = frozenset({"model", "paths", "latency_s"})


def replay_backend_for(
    model: str, paths: Sequence[str | Path] | None = None, samples: int = 0
) -> ReplayBackend:
    """A replay backend for ``model`` (and ``samples`` recorded extra samples of it) from the
    first file that records them (default: the bundled data).

    Raises:
        ConfigurationError: no file records answers of ``model``.
    """
    from router.data import BUNDLED_DATASETS, bundled_dataset

    candidates = list(paths) if paths else [bundled_dataset(n) for n in BUNDLED_DATASETS]
    for path in candidates:
        try:
            return ReplayBackend.from_files([path], model, samples=samples)
        except CascadeRouterError:
            continue
    names = ", ".join(Path(p).name for p in candidates)
    raise ConfigurationError(f"no recorded answers of {model!r} in {names}")


def make_backend(spec: Mapping[str, Any]) -> ChatBackend:
    """Build a backend from a plain mapping, e.g. one entry of a config file.

    ``{"kind": "openai", "model": ..., "base_url": ..., ...}`` gives an
    :class:`OpenAIBackend` (any of its constructor arguments may appear);
    ``{"kind": "replay", "model": ..., "paths": [...], "latency_s": ...}`` gives a
    :class:`ReplayBackend` loaded from files.

    Raises:
        ConfigurationError: unknown kind, missing model or paths, or unknown keys.
    """
    if not isinstance(spec, Mapping):
        raise ConfigurationError(f"backend spec must be a mapping, not {type(spec).__name__}")
    kind = spec.get("kind")
    options = {k: v for k, v in spec.items() if k != "kind"}
    if not options.get("model") or not isinstance(options.get("model"), str):
        raise ConfigurationError(f"backend spec {dict(spec)!r} needs a 'model' name")
    model = options["model"]
    if kind == "openai":
        _check_keys(options, _OPENAI_KEYS, kind, model)
        return OpenAIBackend(**options)
    if kind == "replay":
        _check_keys(options, _REPLAY_KEYS, kind, model)
        paths = options.get("paths")
        if not paths:
            raise ConfigurationError(f"replay backend for {model} needs 'paths' (outcome files)")
        return ReplayBackend.from_files(paths, model, latency_s=float(options.get("latency_s", 0)))
    raise ConfigurationError(
        f"unknown backend kind {kind!r} for model {model}; expected 'openai' or 'replay'"
    )


def _check_keys(options: Mapping[str, Any], allowed: frozenset[str], kind: str, model: str) -> None:
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise ConfigurationError(
            f"{kind} backend for {model} has unknown key(s) {', '.join(unknown)}; "
            f"allowed: kind, {', '.join(sorted(allowed))}"
        )
