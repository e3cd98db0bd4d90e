"""The router's spans: one object that knows where they go, and helpers that follow the
OpenTelemetry GenAI and HTTP conventions.

A request to the sidecar makes this tree (the SDK's ``route()`` makes the same without the
first span)::

    POST /v1/chat/completions            SERVER  (parent: the caller's ``traceparent``)
    └── cascade.route                    INTERNAL  step, target, path, tier, p_accept, cost
        ├── cascade.decide               INTERNAL  stage=pre: call or skip the first tier
        ├── chat smollm2-135m-instruct   CLIENT    one per model call (small, peer, samples,
        ├── chat smollm2-135m-instruct   CLIENT    frontier); its context is the upstream's
        ├── cascade.decide               INTERNAL  stage=post: accept or escalate    parent
        └── chat gpt-4o                  CLIENT

Tracing is off unless a tracer provider was passed, or the process set a global one (as
``opentelemetry-instrument`` does) before the first request.  Off, every helper returns at
once: an attribute read and a shared no-op context manager, no OpenTelemetry call at all.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any
from urllib.parse import urlsplit

from opentelemetry import propagate, trace
from opentelemetry.trace import (
    NoOpTracerProvider,
    ProxyTracerProvider,
    Span,
    SpanKind,
    Status,
    StatusCode,
    Tracer,
    TracerProvider,
)

from router.tracing import attributes as A
from router.tracing.content import input_messages, output_messages, tool_definitions
from router.tracing.export import capture_content_from_env

_OFF: AbstractContextManager[None] = contextlib.nullcontext()
_HTTP_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"}
)
#: Request fields recorded on a model call span, by GenAI attribute.
_REQUEST_FIELDS = (
    (A.REQUEST_MAX_TOKENS, ("max_completion_tokens", "max_tokens")),
    (A.REQUEST_TEMPERATURE, ("temperature",)),
    (A.REQUEST_TOP_P, ("top_p",)),
    (A.REQUEST_SEED, ("seed",)),
    (A.REQUEST_FREQUENCY_PENALTY, ("frequency_penalty",)),
    (A.REQUEST_PRESENCE_PENALTY, ("presence_penalty",)),
)


def _get_tracer(provider: TracerProvider) -> Tracer:
    from router import __version__

    return trace.get_tracer(A.INSTRUMENTATION_NAME, __version__, tracer_provider=provider)


class Tracing:
    """Where the router's spans go and what they may hold.

    Args:
        provider: the tracer provider to use; None falls back to the process's global one,
            and tracing is off while that is the API's default (a proxy or no-op provider).
        capture_content: record prompts, answers and tool definitions on the model call
            spans; None reads ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT``.
    """

    def __init__(
        self, provider: TracerProvider | None = None, *, capture_content: bool | None = None
    ) -> None:
        self.provider = provider
        self.capture_content = (
            capture_content_from_env() if capture_content is None else bool(capture_content)
        )
        self._tracer: Tracer | None = None if provider is None else _get_tracer(provider)
        self._resolved = provider is not None

    def __repr__(self) -> str:
        return f"Tracing(provider={self.provider!r}, capture_content={self.capture_content})"

    @property
    def tracer(self) -> Tracer | None:
        """The tracer, or None while tracing is off.

        Without an explicit provider, the global one is looked up once, at the first span:
        a process that sets it (``opentelemetry-instrument`` does, before the program starts)
        must do so before the router's first request.  Looking it up once keeps the off path
        to an attribute read (the API's lookup reads the environment on every call).
        """
        if self._resolved:
            return self._tracer
        found = trace.get_tracer_provider()
        if not isinstance(found, ProxyTracerProvider | NoOpTracerProvider):
            self._tracer = _get_tracer(found)
        self._resolved = True
        return self._tracer

    @property
    def enabled(self) -> bool:
        """Whether spans are being made."""
        return self.tracer is not None

    # ------------------------------------------------------------------ the HTTP request
    def server_span(self, scope: Mapping[str, Any]) -> AbstractContextManager[Span | None]:
        """The SERVER span of one HTTP request (an ASGI ``scope``), current while it runs.

        Its parent is the caller's W3C ``traceparent`` (and ``tracestate``), when one came.
        It is named by the method until :meth:`end_server_span` knows the route template.
        """
        tracer = self.tracer
        if tracer is None:
            return _OFF
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        method = scope["method"]
        attributes: dict[str, Any] = {
            A.HTTP_REQUEST_METHOD: method if method in _HTTP_METHODS else "_OTHER",
            A.URL_PATH: scope["path"],
            A.URL_SCHEME: scope.get("scheme", "http"),
        }
        if method not in _HTTP_METHODS:
            attributes["http.request.method_original"] = method
        if scope.get("query_string"):
            attributes[A.URL_QUERY] = scope["query_string"].decode("latin-1")
        host = headers.get("host")
        if host:
            address, _, port = host.rpartition(":") if host.count(":") == 1 else (host, "", "")
            attributes[A.SERVER_ADDRESS] = address or host
            if port.isdigit():
                attributes[A.SERVER_PORT] = int(port)
        if scope.get("client"):
            attributes[A.CLIENT_ADDRESS] = scope["client"][0]
        if scope.get("http_version"):
            attributes[A.NETWORK_PROTOCOL_VERSION] = scope["http_version"]
        if "user-agent" in headers:
            attributes[A.USER_AGENT] = headers["user-agent"]
        return tracer.start_as_current_span(
            method if method in _HTTP_METHODS else "HTTP",
            context=propagate.extract(headers),
            kind=SpanKind.SERVER,
            attributes=attributes,
        )

    @staticmethod
    def end_server_span(
        span: Span | None, scope: Mapping[str, Any], status: int, request_id: str | None
    ) -> None:
        """Name the SERVER span ``{method} {route}`` and record the response.

        Only a 5xx makes it an error: a 4xx is the client's fault, not the server's.
        """
        if span is None or not span.is_recording():
            return
        route = getattr(scope.get("route"), "path", None)
        if route:
            method = scope["method"] if scope["method"] in _HTTP_METHODS else "HTTP"
            span.update_name(f"{method} {route}")
            span.set_attribute(A.HTTP_ROUTE, route)
        span.set_attribute(A.HTTP_RESPONSE_STATUS_CODE, status)
        if request_id:
            span.set_attribute(A.RESPONSE_REQUEST_ID_HEADER, (request_id,))
            span.set_attribute(A.REQUEST_ID, request_id)
        if status >= 500:
            span.set_attribute(A.ERROR_TYPE, str(status))
            span.set_status(Status(StatusCode.ERROR))

    # ------------------------------------------------------------------ the cascade
    def route_span(
        self, step: str, target: str | None = None, request_id: str | None = None
    ) -> AbstractContextManager[Span | None]:
        """The span of one request's whole walk down the tiers (``cascade.route``)."""
        tracer = self.tracer
        if tracer is None:
            return _OFF
        attributes: dict[str, Any] = {A.STEP: step}
        if target is not None:
            attributes[A.TARGET] = target
        if request_id is not None:
            attributes[A.REQUEST_ID] = request_id
        return tracer.start_as_current_span(A.ROUTE_SPAN, attributes=attributes)

    @staticmethod
    def end_route_span(
        span: Span | None,
        *,
        tier: str,
        path: str,
        p_accept: float | None,
        cost_usd: float,
        router_version: str | None,
        target: str | None = None,
    ) -> None:
        """Record where the walk ended: the answering tier, the path taken and its cost."""
        if span is None or not span.is_recording():
            return
        values: dict[str, Any] = {A.TIER: tier, A.PATH: path, A.COST_USD: float(cost_usd)}
        if p_accept is not None:
            values[A.P_ACCEPT] = float(p_accept)
        if router_version is not None:
            values[A.ROUTER_VERSION] = router_version
        if target is not None:
            values[A.TARGET] = target
        span.set_attributes(values)

    def decision_span(self, step: str, stage: str) -> AbstractContextManager[Span | None]:
        """The span of one routing decision (``cascade.decide``): the embeddings and models.

        ``stage``: ``pre`` (before any answer: call the first tier, or skip it), ``post``
        (an answer in hand: accept it or escalate) or ``route`` (a decision-only request).
        """
        tracer = self.tracer
        if tracer is None:
            return _OFF
        return tracer.start_as_current_span(
            A.DECIDE_SPAN, attributes={A.STEP: step, A.STAGE: stage}
        )

    @staticmethod
    def end_decision_span(
        span: Span | None,
        *,
        action: str,
        tier: str,
        p_accept: float,
        gain: float | None = None,
        opinion_source: str | None = None,
        router_version: str | None = None,
    ) -> None:
        """Record the decision: its action, the tier it concerns and the probabilities."""
        if span is None or not span.is_recording():
            return
        values: dict[str, Any] = {A.ACTION: action, A.TIER: tier, A.P_ACCEPT: float(p_accept)}
        if gain is not None:
            values[A.GAIN] = float(gain)
        if opinion_source is not None:
            values[A.OPINION_SOURCE] = opinion_source
        if router_version is not None:
            values[A.ROUTER_VERSION] = router_version
        span.set_attributes(values)

    # ------------------------------------------------------------------ model calls
    def model_call(
        self,
        backend: Any,
        *,
        role: str,
        tier: str,
        step: str | None = None,
        request: Any = None,
        choices: int = 1,
    ) -> AbstractContextManager[Span | None]:
        """The CLIENT span ``chat {model}`` of one call to a model (GenAI conventions).

        ``backend`` is the backend called (its ``model``, ``provider_name`` and base URL name
        the upstream); ``role`` is ``small``, ``frontier``, ``peer``, ``sample``…;
        ``request`` the chat request sent (a mapping or an object with the OpenAI fields);
        ``choices`` the number of answers asked for (extra samples).  The span is current
        while the call runs, so :func:`trace_headers` gives its context to the upstream.  An
        exception leaving it sets ``error.type``.
        """
        tracer = self.tracer
        if tracer is None:
            return _OFF
        return self._model_call(tracer, backend, role, tier, step, request, choices)

    @contextlib.contextmanager
    def _model_call(
        self,
        tracer: Tracer,
        backend: Any,
        role: str,
        tier: str,
        step: str | None,
        request: Any,
        choices: int,
    ) -> Iterator[Span]:
        model, provider, address, port = describe_backend(backend)
        attributes: dict[str, Any] = {
            A.OPERATION_NAME: A.CHAT,
            A.PROVIDER_NAME: provider,
            A.REQUEST_MODEL: model,
            A.ROLE: role,
            A.TIER: tier,
        }
        if step is not None:
            attributes[A.STEP] = step
        if address is not None:
            attributes[A.SERVER_ADDRESS] = address
        if port is not None:
            attributes[A.SERVER_PORT] = port
        if choices != 1:
            attributes[A.REQUEST_CHOICE_COUNT] = choices
        if request is not None:
            attributes.update(_request_attributes(request))
        with tracer.start_as_current_span(
            f"{A.CHAT} {model}", kind=SpanKind.CLIENT, attributes=attributes
        ) as span:
            if self.capture_content and request is not None and span.is_recording():
                messages = _field(request, "messages")
                if messages:
                    span.set_attribute(A.INPUT_MESSAGES, input_messages(messages))
                tools = _field(request, "tools")
                if tools:
                    span.set_attribute(A.TOOL_DEFINITIONS, tool_definitions(tools))
            try:
                yield span
            except BaseException as exc:
                if not isinstance(exc, GeneratorExit):
                    span.set_attribute(A.ERROR_TYPE, error_type(exc))
                    if not isinstance(exc, Exception):  # cancelled: the SDK records no status
                        span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
                raise

    def end_model_call(
        self,
        span: Span | None,
        *,
        response_model: str | None,
        input_tokens: int | None,
        output_tokens: int | None,
        finish_reasons: Sequence[str] = (),
        response_id: str | None = None,
        cost_usd: float | None = None,
        messages: Sequence[Any] = (),
    ) -> None:
        """Record a model's answer on its span: who answered, tokens, finish reasons, cost;
        with content capture on, the answer ``messages`` (OpenAI assistant messages)."""
        if span is None or not span.is_recording():
            return
        values: dict[str, Any] = {}
        if response_model:
            values[A.RESPONSE_MODEL] = response_model
        if response_id:
            values[A.RESPONSE_ID] = response_id
        if input_tokens is not None:
            values[A.USAGE_INPUT_TOKENS] = int(input_tokens)
        if output_tokens is not None:
            values[A.USAGE_OUTPUT_TOKENS] = int(output_tokens)
        if finish_reasons:
            values[A.RESPONSE_FINISH_REASONS] = tuple(r or "error" for r in finish_reasons)
        if cost_usd is not None:
            values[A.COST_USD] = float(cost_usd)
        span.set_attributes(values)
        if self.capture_content and messages:
            span.set_attribute(A.OUTPUT_MESSAGES, output_messages(messages, finish_reasons))


def trace_headers() -> dict[str, str]:
    """W3C trace headers carrying the current span's context, for an outgoing call.

    Inside a model call span this is that CLIENT span (so the upstream's own spans become its
    children); with no valid current span (tracing off) it is empty and costs next to nothing.
    """
    if not trace.get_current_span().get_span_context().is_valid:
        return {}
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


def describe_backend(backend: Any) -> tuple[str, str, str | None, int | None]:
    """``(model, provider name, server address, server port)`` of a backend.

    A wrapper that keeps the wrapped backend in ``inner`` is looked through.  The provider is
    the backend's ``provider_name``, else ``openai`` for anything with a base URL (the
    protocol spoken), else the backend's class name.
    """
    inner = getattr(backend, "inner", backend)
    model = str(getattr(backend, "model", None) or getattr(inner, "model", "unknown"))
    url = getattr(inner, "display_url", None) or getattr(inner, "base_url", None)
    provider = getattr(inner, "provider_name", None) or (
        A.OPENAI_PROVIDER if url else type(inner).__name__.lower()
    )
    if not url:
        return model, str(provider), None, None
    parts = urlsplit(str(url))
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return model, str(provider), parts.hostname, port


def error_type(exc: BaseException) -> str:
    """``error.type`` of an exception: its fully qualified class name (low cardinality)."""
    cls = type(exc)
    if cls.__module__ == "builtins":
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"


def _field(request: Any, name: str) -> Any:
    if isinstance(request, Mapping):
        return request.get(name)
    return getattr(request, name, None)


def _request_attributes(request: Any) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for attribute, names in _REQUEST_FIELDS:
        for name in names:
            value = _field(request, name)
            if value is not None and not isinstance(value, bool):
                values[attribute] = value
                break
    stop = _field(request, "stop")
    if stop:
        values[A.REQUEST_STOP_SEQUENCES] = (stop,) if isinstance(stop, str) else tuple(stop)
    n = _field(request, "n")
    if isinstance(n, int) and not isinstance(n, bool) and n != 1:
        values[A.REQUEST_CHOICE_COUNT] = n
    return values
