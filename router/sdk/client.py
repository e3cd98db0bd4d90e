"""An in-process client shaped like the ``openai`` package's: swap ``openai.OpenAI()`` for the
cascade without running a sidecar.

    client = CascadeClient(router)
    completion = client.chat.completions.create(
        model="cascade:tool_select", messages=[...], tools=[...], tool_choice="auto"
    )
    completion.choices[0].message.tool_calls   # the openai package's own ChatCompletion

``model`` selects the step kind and target as the sidecar's names do
(:class:`~router.sdk.openai_shapes.StepTarget`); ``extra_body={"cascade": {"step": ...,
"target": ...}}`` wins over the name.  ``stream=True`` returns the answer as the ``openai``
package's ``ChatCompletionChunk`` objects, cut as the sidecar cuts it.  Errors are the router's
(:class:`~router.errors.ConfigurationError` for a bad request, :class:`~router.errors.BackendError`
when the top tier fails).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from router.errors import ConfigurationError
from router.sdk.openai_shapes import StepTarget, completion_body, completion_chunks
from router.sdk.results import RouteResult

if TYPE_CHECKING:
    from openai.types.chat import ChatCompletion, ChatCompletionChunk

    from router.sdk.router import Router

#: Arguments of the openai client's ``create`` that shape the HTTP call, not the answer.
_TRANSPORT_ARGUMENTS = frozenset({"extra_headers", "extra_query", "timeout"})


def _given(params: Mapping[str, Any]) -> dict[str, Any]:
    """``params`` without the openai package's "not given" markers (agent frameworks pass them
    for every parameter they leave unset)."""
    import openai

    markers = tuple(
        t for t in (getattr(openai, "NotGiven", None), getattr(openai, "Omit", None)) if t
    )
    return {k: v for k, v in params.items() if not (markers and isinstance(v, markers))}


class _Call:
    """One ``create`` call: the request fields, the step and target, the streaming options."""

    def __init__(self, default_step: str, model: str, params: dict[str, Any]) -> None:
        params = _given(params)
        extra = params.pop("extra_body", None) or {}
        for name in _TRANSPORT_ARGUMENTS:
            params.pop(name, None)
        if not isinstance(extra, Mapping):
            raise ConfigurationError("extra_body must be a mapping")
        params.update({k: v for k, v in extra.items() if k != "cascade"})
        options = extra.get("cascade") or {}
        if not isinstance(options, Mapping):
            raise ConfigurationError("cascade must be a mapping with 'step' and/or 'target'")
        self.choice = StepTarget.parse(
            model, default_step, step=options.get("step"), target=options.get("target")
        )
        self.stream = params.pop("stream", False) is True
        stream_options = params.pop("stream_options", None) or {}
        self.include_usage = bool(stream_options.get("include_usage"))
        self.messages = params.pop("messages")
        self.params = params
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())


class Completions:
    """``client.chat.completions``: :meth:`create` answers through the cascade (blocking)."""

    def __init__(self, client: CascadeClient) -> None:
        self._client = client

    def create(
        self, *, model: str, messages: Any, **params: Any
    ) -> ChatCompletion | Iterator[ChatCompletionChunk]:
        """Answer one chat-completions request through the cascade; the arguments are those of
        ``openai.OpenAI().chat.completions.create`` (``model`` names the step and target)."""
        client = self._client
        call = _Call(client.default_step, model, {"messages": messages, **params})
        result = client.router.route(
            call.choice.step,
            call.messages,
            target=call.choice.target,
            retries=client.retries,
            retry_backoff_s=client.retry_backoff_s,
            **call.params,
        )
        return _answer(result, call)


class AsyncCompletions:
    """``client.chat.completions`` of :class:`AsyncCascadeClient` (asyncio)."""

    def __init__(self, client: AsyncCascadeClient) -> None:
        self._client = client

    async def create(
        self, *, model: str, messages: Any, **params: Any
    ) -> ChatCompletion | AsyncIterator[ChatCompletionChunk]:
        """Asyncio form of :meth:`Completions.create`."""
        client = self._client
        call = _Call(client.default_step, model, {"messages": messages, **params})
        router = await asyncio.to_thread(lambda: client.router)
        result = await router.aroute(
            call.choice.step,
            call.messages,
            target=call.choice.target,
            retries=client.retries,
            retry_backoff_s=client.retry_backoff_s,
            **call.params,
        )
        answer = _answer(result, call)
        if not call.stream:
            return answer
        return _aiter(answer)


def _answer(result: RouteResult, call: _Call) -> Any:
    from openai.types.chat import ChatCompletion, ChatCompletionChunk

    if call.stream:
        chunks = completion_chunks(result, call.id, call.created, call.include_usage)
        return (ChatCompletionChunk.model_validate(c) for c in chunks)
    return ChatCompletion.model_validate(completion_body(result, call.id, call.created))


async def _aiter(chunks: Iterator[ChatCompletionChunk]) -> AsyncIterator[ChatCompletionChunk]:
    for chunk in chunks:
        yield chunk


class _Chat:
    def __init__(self, completions: Any) -> None:
        self.completions = completions


class _Base:
    def __init__(
        self,
        router: Router | None = None,
        *,
        default_step: str = "default",
        retries: int = 0,
        retry_backoff_s: float = 0.25,
    ) -> None:
        self._router = router
        self.default_step = default_step
        self.retries = retries
        self.retry_backoff_s = retry_backoff_s

    @property
    def router(self) -> Router:
        """The router answering (by default the default router, loaded on first use)."""
        if self._router is None:
            from router.sdk.default import default_router

            self._router = default_router()
        return self._router


class CascadeClient(_Base):
    """``openai.OpenAI``'s shape over a :class:`~router.sdk.router.Router`: ``chat.completions.
    create(...)`` returns the ``openai`` package's ``ChatCompletion`` (see the module doc)."""

    def __init__(self, router: Router | None = None, **options: Any) -> None:
        super().__init__(router, **options)
        self.chat = _Chat(Completions(self))


class AsyncCascadeClient(_Base):
    """``openai.AsyncOpenAI``'s shape over a router: ``await chat.completions.create(...)``."""

    def __init__(self, router: Router | None = None, **options: Any) -> None:
        super().__init__(router, **options)
        self.chat = _Chat(AsyncCompletions(self))
