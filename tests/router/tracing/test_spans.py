"""The span helpers against the OpenTelemetry SDK with its in-memory exporter."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from router.backends import OpenAIBackend
from router.errors import BackendTimeoutError
from router.tracing import Tracing, describe_backend, error_type, trace_headers
from tests.support.processes import ROOT

CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def provider(exporter: InMemorySpanExporter) -> Iterator[TracerProvider]:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider
    provider.shutdown()


def by_name(exporter: InMemorySpanExporter) -> dict[str, ReadableSpan]:
    return {s.name: s for s in exporter.get_finished_spans()}


def scope(path: str = "/v1/chat/completions", **headers: str) -> dict[str, Any]:
    """An ASGI HTTP scope as uvicorn builds it."""
    raw = [(b"host", b"127.0.0.1:8000"), (b"user-agent", b"OpenAI/Python 3.57.0")]
    raw += [(k.replace("_", "-").encode(), v.encode()) for k, v in headers.items()]
    return {
        "type": "http",
        "method": "POST",
        "path": path,
        "scheme": "http",
        "query_string": b"",
        "http_version": "1.1",
        "client": ("127.0.0.1", 50123),
        "headers": raw,
    }


class Route:  # what Starlette leaves in scope["route"] once it matched
    path = "/v1/chat/completions"


# ---------------------------------------------------------------------------- off


def test_off_without_a_provider_makes_no_span_and_sends_no_header() -> None:
    tracing = Tracing()  # this test process sets no global provider
    assert tracing.tracer is None and not tracing.enabled
    backend = OpenAIBackend("m", base_url="http://127.0.0.1:9/v1")
    with (
        tracing.server_span(scope()) as server,
        tracing.route_span("intent") as route,
        tracing.decision_span("intent", "pre") as decide,
        tracing.model_call(backend, role="small", tier="m") as call,
    ):
        assert server is route is decide is call is None
        assert trace_headers() == {}
    # the recorders accept the None that the helpers gave
    Tracing.end_server_span(None, scope(), 200, "chatcmpl-1")
    Tracing.end_route_span(
        None, tier="m", path="small", p_accept=0.5, cost_usd=0.0, router_version=None
    )
    tracing.end_model_call(None, response_model="m", input_tokens=1, output_tokens=1)


def test_the_global_provider_is_used_when_set_before_the_first_span() -> None:
    # set_tracer_provider works once per process: run it in a fresh interpreter
    code = textwrap.dedent(
        """
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
        from router.tracing import Tracing

        tracing = Tracing()          # made before the process configures tracing
        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        trace.set_tracer_provider(provider)   # what opentelemetry-instrument does
        with tracing.route_span("intent"):
            pass
        print([s.name for s in exporter.get_finished_spans()])
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['cascade.route']"


# ---------------------------------------------------------------------------- the tree


def test_a_request_makes_server_route_decision_and_client_spans(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    tracing = Tracing(provider)
    small = OpenAIBackend("smollm2-135m-instruct", base_url="http://127.0.0.1:8081/v1")
    frontier = OpenAIBackend("gpt-4o-2024-05-13")  # OpenAI's own URL
    request = {"messages": [{"role": "user", "content": "2+2?"}], "max_tokens": 64, "seed": 7}
    incoming = scope(traceparent=TRACEPARENT)
    with tracing.server_span(incoming) as server:
        with tracing.route_span("intent", "quality>=0.9", "chatcmpl-abc") as route:
            with tracing.decision_span("intent", "pre") as decide:
                tracing.end_decision_span(decide, action="call", tier="small", p_accept=0.4)
            with tracing.model_call(
                small, role="small", tier="llama-3.1-8b-instruct", step="intent", request=request
            ) as call:
                headers = trace_headers()
                tracing.end_model_call(
                    call,
                    response_model="smollm2-135m-instruct",
                    response_id="chatcmpl-up1",
                    input_tokens=12,
                    output_tokens=3,
                    finish_reasons=["stop"],
                    cost_usd=0.0001,
                )
            with tracing.decision_span("intent", "post") as decide:
                tracing.end_decision_span(
                    decide, action="escalate", tier="small", p_accept=0.3, gain=0.5
                )
            with tracing.model_call(
                frontier, role="frontier", tier="gpt-4o-2024-05-13", request=request
            ) as call:
                tracing.end_model_call(
                    call, response_model="gpt-4o-2024-05-13", input_tokens=12, output_tokens=9
                )
            Tracing.end_route_span(
                route,
                tier="gpt-4o-2024-05-13",
                path="small→escalated→frontier",
                p_accept=0.4,
                cost_usd=0.0123,
                router_version="7",
            )
        incoming["route"] = Route()
        Tracing.end_server_span(server, incoming, 200, "chatcmpl-abc")

    spans = exporter.get_finished_spans()
    assert [s.name for s in spans] == [
        "cascade.decide",
        "chat smollm2-135m-instruct",
        "cascade.decide",
        "chat gpt-4o-2024-05-13",
        "cascade.route",
        "POST /v1/chat/completions",
    ]
    srv, rte = spans[-1], spans[-2]
    # the caller's traceparent is the parent of the whole tree
    assert srv.kind is SpanKind.SERVER
    assert format(srv.context.trace_id, "032x") == CALLER_TRACE
    assert srv.parent is not None and srv.parent.is_remote
    assert format(srv.parent.span_id, "016x") == CALLER_SPAN
    assert {s.context.trace_id for s in spans} == {srv.context.trace_id}
    assert rte.parent.span_id == srv.context.span_id
    assert all(s.parent.span_id == rte.context.span_id for s in spans[:4])
    assert srv.attributes["http.route"] == "/v1/chat/completions"
    assert srv.attributes["http.request.method"] == "POST"
    assert srv.attributes["http.response.status_code"] == 200
    assert srv.attributes["server.address"] == "127.0.0.1"
    assert srv.attributes["server.port"] == 8000
    assert srv.attributes["http.response.header.x-request-id"] == ("chatcmpl-abc",)
    assert srv.status.status_code is StatusCode.UNSET
    assert dict(rte.attributes) == {
        "cascade.step": "intent",
        "cascade.target": "quality>=0.9",
        "cascade.request_id": "chatcmpl-abc",
        "cascade.tier": "gpt-4o-2024-05-13",
        "cascade.path": "small→escalated→frontier",
        "cascade.p_accept": 0.4,
        "cascade.cost_usd": 0.0123,
        "cascade.router_version": "7",
    }

    small_span, big_span = spans[1], spans[3]
    assert small_span.kind is SpanKind.CLIENT
    assert dict(small_span.attributes) == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "smollm2-135m-instruct",
        "gen_ai.request.max_tokens": 64,
        "gen_ai.request.seed": 7,
        "server.address": "127.0.0.1",
        "server.port": 8081,
        "cascade.role": "small",
        "cascade.tier": "llama-3.1-8b-instruct",
        "cascade.step": "intent",
        "gen_ai.response.model": "smollm2-135m-instruct",
        "gen_ai.response.id": "chatcmpl-up1",
        "gen_ai.usage.input_tokens": 12,
        "gen_ai.usage.output_tokens": 3,
        "gen_ai.response.finish_reasons": ("stop",),
        "cascade.cost_usd": 0.0001,
    }
    assert big_span.attributes["server.address"] == "api.openai.com"
    assert big_span.attributes["server.port"] == 443
    # the upstream is told the router's own CLIENT span, never the caller's span
    assert headers["traceparent"] == (
        f"00-{CALLER_TRACE}-{format(small_span.context.span_id, '016x')}-01"
    )
    decisions = [s for s in spans if s.name == "cascade.decide"]
    assert [d.attributes["cascade.action"] for d in decisions] == ["call", "escalate"]
    assert decisions[1].attributes["cascade.gain"] == 0.5
    assert decisions[1].attributes["cascade.stage"] == "post"


def test_a_failed_model_call_carries_its_error_type(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    tracing = Tracing(provider)
    backend = OpenAIBackend("m", base_url="http://127.0.0.1:9/v1")
    with (
        pytest.raises(BackendTimeoutError),
        tracing.model_call(backend, role="small", tier="m"),
    ):
        raise BackendTimeoutError("no answer within 1s")
    (span,) = exporter.get_finished_spans()
    assert span.attributes["error.type"] == "router.errors.BackendTimeoutError"
    assert span.status.status_code is StatusCode.ERROR
    assert [e.name for e in span.events] == ["exception"]


def test_a_cancelled_model_call_is_an_error(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    tracing = Tracing(provider)
    backend = OpenAIBackend("m", base_url="http://127.0.0.1:9/v1")

    async def call() -> None:
        with tracing.model_call(backend, role="frontier", tier="m"):
            await asyncio.sleep(10)

    async def main() -> None:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(call(), 0.01)

    asyncio.run(main())
    (span,) = exporter.get_finished_spans()
    assert span.attributes["error.type"] == "asyncio.exceptions.CancelledError"
    assert span.status.status_code is StatusCode.ERROR


@pytest.mark.parametrize(("status", "error"), [(404, False), (429, False), (502, True)])
def test_only_a_5xx_makes_the_server_span_an_error(
    provider: TracerProvider, exporter: InMemorySpanExporter, status: int, error: bool
) -> None:
    tracing = Tracing(provider)
    incoming = scope("/v1/nowhere")
    with tracing.server_span(incoming) as span:
        Tracing.end_server_span(span, incoming, status, None)
    (done,) = exporter.get_finished_spans()
    assert done.name == "POST"  # no route matched: the method alone
    assert "http.route" not in done.attributes
    assert done.attributes["http.response.status_code"] == status
    assert (done.status.status_code is StatusCode.ERROR) is error
    assert done.attributes.get("error.type") == ("502" if error else None)
    assert done.parent is None  # no traceparent: a new trace


def test_an_unknown_method_is_other(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    incoming = {**scope(), "method": "BREW"}
    with Tracing(provider).server_span(incoming) as span:
        Tracing.end_server_span(span, incoming, 405, None)
    (done,) = exporter.get_finished_spans()
    assert done.name == "HTTP"
    assert done.attributes["http.request.method"] == "_OTHER"
    assert done.attributes["http.request.method_original"] == "BREW"


def test_spans_cross_into_worker_threads_and_tasks(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    tracing = Tracing(provider)
    backend = OpenAIBackend("m", base_url="http://127.0.0.1:9/v1")

    async def one(k: int) -> None:
        with tracing.model_call(backend, role="peer", tier=f"p{k}"):
            await asyncio.to_thread(lambda: None)

    async def main() -> None:
        with tracing.route_span("intent"):
            await asyncio.gather(one(0), one(1))

    asyncio.run(main())
    spans = by_name(exporter)
    route = spans["cascade.route"]
    calls = [s for s in exporter.get_finished_spans() if s.kind is SpanKind.CLIENT]
    assert len(calls) == 2
    assert all(c.parent.span_id == route.context.span_id for c in calls)


# ---------------------------------------------------------------------------- content


def conversation() -> dict[str, Any]:
    return {
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": [{"type": "text", "text": "Weather in Paris?"}]},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "weather", "arguments": '{"city": "Paris"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
        ],
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "weather",
                    "description": "Current weather",
                    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
                },
            }
        ],
    }


def test_content_is_not_recorded_unless_asked(
    provider: TracerProvider, exporter: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", raising=False)
    tracing = Tracing(provider)
    assert not tracing.capture_content
    backend = OpenAIBackend("m", base_url="http://127.0.0.1:9/v1")
    with tracing.model_call(backend, role="small", tier="m", request=conversation()) as span:
        tracing.end_model_call(
            span, response_model="m", input_tokens=1, output_tokens=1, messages=["It is 18C."]
        )
    (done,) = exporter.get_finished_spans()
    assert not [k for k in done.attributes if k.endswith(("messages", "definitions"))]


@pytest.mark.parametrize("switch", ["SPAN_ONLY", "span_and_event", "true"])
def test_content_is_recorded_structured_when_the_user_opts_in(
    provider: TracerProvider,
    exporter: InMemorySpanExporter,
    monkeypatch: pytest.MonkeyPatch,
    switch: str,
) -> None:
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", switch)
    tracing = Tracing(provider)
    backend = OpenAIBackend("m", base_url="http://127.0.0.1:9/v1")
    answer = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "c2", "type": "function", "function": {"name": "weather", "arguments": "{}"}}
        ],
    }
    with tracing.model_call(backend, role="small", tier="m", request=conversation()) as span:
        tracing.end_model_call(
            span,
            response_model="m",
            input_tokens=1,
            output_tokens=1,
            finish_reasons=["tool_calls"],
            messages=[answer],
        )
    (done,) = exporter.get_finished_spans()
    inputs = done.attributes["gen_ai.input.messages"]
    assert [m["role"] for m in inputs] == ["system", "user", "assistant", "tool"]
    assert inputs[1]["parts"] == ({"type": "text", "content": "Weather in Paris?"},)
    assert inputs[2]["parts"][0] == {
        "type": "tool_call",
        "id": "call_1",
        "name": "weather",
        "arguments": '{"city": "Paris"}',
    }
    assert inputs[3]["parts"][0] == {
        "type": "tool_call_response",
        "id": "call_1",
        "response": "18C",
    }
    (output,) = done.attributes["gen_ai.output.messages"]
    assert output["finish_reason"] == "tool_calls"
    assert output["parts"][0]["name"] == "weather"
    (tool,) = done.attributes["gen_ai.tool.definitions"]
    assert (
        tool["name"] == "weather" and tool["parameters"]["properties"]["city"]["type"] == "string"
    )


def test_the_setting_overrides_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "SPAN_ONLY")
    assert not Tracing(capture_content=False).capture_content
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "NO_CONTENT")
    assert Tracing(capture_content=True).capture_content
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "EVENT_ONLY")
    assert not Tracing().capture_content  # the router emits no GenAI events


# ---------------------------------------------------------------------------- helpers


def test_backends_are_described_through_wrappers() -> None:
    class Counting:  # the sidecar's counting wrapper keeps the backend in `inner`
        def __init__(self, inner: Any) -> None:
            self.inner, self.model = inner, inner.model

    local = OpenAIBackend("smollm2", base_url="http://localhost:8081/v1")
    assert describe_backend(Counting(local)) == ("smollm2", "openai", "localhost", 8081)
    local.provider_name = "llama.cpp"  # type: ignore[attr-defined]
    assert describe_backend(local)[1] == "llama.cpp"

    class InProcess:
        model = "tiny"

    assert describe_backend(InProcess()) == ("tiny", "inprocess", None, None)


def test_error_types_are_qualified_names() -> None:
    assert error_type(BackendTimeoutError("x")) == "router.errors.BackendTimeoutError"
    assert error_type(ValueError("x")) == "ValueError"


def test_the_global_provider_is_untouched(provider: TracerProvider) -> None:
    Tracing(provider)
    assert isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)
