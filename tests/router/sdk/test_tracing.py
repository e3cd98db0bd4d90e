"""The SDK's route() and aroute() emit the cascade's spans, over real HTTP upstreams, and give
each upstream call the context of its own CLIENT span."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from router import Router
from router.backends import OpenAIBackend
from tests.conftest import TIERS
from tests.support.openai_server import OpenAIStubServer

PROMPT = "Which is larger, 7 or 9? Options: (A) 7 (B) 9"


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def provider(exporter: InMemorySpanExporter) -> Iterator[TracerProvider]:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider
    provider.shutdown()


@pytest.fixture(scope="module")
def upstreams() -> Iterator[tuple[OpenAIStubServer, OpenAIStubServer]]:
    """The small model and the frontier, each an OpenAI-protocol server over real HTTP."""
    with (
        OpenAIStubServer(lambda messages: "The answer is (B).") as small,
        OpenAIStubServer(
            lambda messages: "(B) 9 is larger.", response_model="gpt-4o-2024-05-13-snapshot"
        ) as frontier,
    ):
        yield small, frontier


def traced_router(
    saved_model_dir: object,
    embedder: object,
    upstreams: tuple[OpenAIStubServer, OpenAIStubServer],
    provider: TracerProvider | None,
) -> Router:
    small, frontier = upstreams
    small.fail_with_status = None
    small.headers.clear()
    frontier.headers.clear()
    return Router.load(saved_model_dir, embedder=embedder, tracer_provider=provider).with_backends(  # type: ignore[arg-type]
        [
            OpenAIBackend(TIERS[0], base_url=small.base_url, max_retries=0, provider_name="vllm"),
            OpenAIBackend(TIERS[1], base_url=frontier.base_url, max_retries=0),
        ]
    )


def tree(spans: tuple[ReadableSpan, ...]) -> list[tuple[str, SpanKind, str | None]]:
    """(name, kind, parent name) of each span, in the order they ended."""
    names = {s.context.span_id: s.name for s in spans}
    return [(s.name, s.kind, names.get(s.parent.span_id) if s.parent else None) for s in spans]


def test_route_emits_the_cascade_spans(
    saved_model_dir, embedder, upstreams, provider, exporter
) -> None:
    router = traced_router(saved_model_dir, embedder, upstreams, provider)
    result = router.route("math", PROMPT, target="share=0.0", max_tokens=32, seed=3)
    assert result.path == "small→verified"
    spans = exporter.get_finished_spans()
    assert tree(spans) == [
        ("cascade.decide", SpanKind.INTERNAL, "cascade.route"),
        (f"chat {TIERS[0]}", SpanKind.CLIENT, "cascade.route"),
        ("cascade.decide", SpanKind.INTERNAL, "cascade.route"),
        ("cascade.route", SpanKind.INTERNAL, None),
    ]
    pre, call, post, route = spans
    assert pre.attributes["cascade.stage"] == "pre"
    assert pre.attributes["cascade.action"] == "call"
    assert pre.attributes["cascade.p_accept"] == pytest.approx(
        result.probabilities[f"pre:{TIERS[0]}"]
    )
    assert post.attributes["cascade.stage"] == "post"
    assert post.attributes["cascade.action"] == "verified"
    assert post.attributes["cascade.p_accept"] == pytest.approx(
        result.probabilities[f"post:{TIERS[0]}"]
    )
    small, _ = upstreams
    assert call.attributes["gen_ai.operation.name"] == "chat"
    assert call.attributes["gen_ai.provider.name"] == "vllm"
    assert call.attributes["gen_ai.request.model"] == TIERS[0]
    assert call.attributes["gen_ai.response.model"] == TIERS[0]
    assert call.attributes["gen_ai.request.max_tokens"] == 32
    assert call.attributes["gen_ai.request.seed"] == 3
    assert call.attributes["gen_ai.usage.input_tokens"] == result.input_tokens
    assert call.attributes["gen_ai.usage.output_tokens"] == result.output_tokens
    assert call.attributes["gen_ai.response.finish_reasons"] == ("stop",)
    assert str(call.attributes["gen_ai.response.id"]).startswith("chatcmpl-")
    assert call.attributes["server.port"] == small.port
    assert call.attributes["cascade.role"] == "small"
    assert call.attributes["cascade.cost_usd"] == pytest.approx(result.cost_usd)
    assert route.attributes["cascade.path"] == "small→verified"
    assert route.attributes["cascade.tier"] == TIERS[0]
    assert route.attributes["cascade.step"] == "math"
    assert route.attributes["cascade.target"] == result.target
    # the small upstream was told the router's CLIENT span as its parent
    (headers,) = small.headers
    span_id = format(call.context.span_id, "016x")
    trace_id = format(call.context.trace_id, "032x")
    assert headers["traceparent"].startswith(f"00-{trace_id}-{span_id}-")


def test_a_failed_call_escalates_and_says_why(
    saved_model_dir, embedder, upstreams, provider, exporter
) -> None:
    router = traced_router(saved_model_dir, embedder, upstreams, provider)
    small, frontier = upstreams
    small.fail_with_status = 500
    result = asyncio.run(router.aroute("math", PROMPT, target="share=0.0"))
    assert result.path == "small→failed→frontier"
    spans = exporter.get_finished_spans()
    assert [s.name for s in spans] == [
        "cascade.decide",
        f"chat {TIERS[0]}",
        f"chat {TIERS[1]}",
        "cascade.route",
    ]
    failed, answered = spans[1], spans[2]
    assert failed.status.status_code is StatusCode.ERROR
    assert failed.attributes["error.type"] == "router.errors.BackendError"
    assert answered.attributes["gen_ai.response.model"] == "gpt-4o-2024-05-13-snapshot"
    assert answered.attributes["gen_ai.request.model"] == TIERS[1]
    assert answered.attributes["cascade.role"] == "frontier"
    assert spans[-1].attributes["cascade.path"] == "small→failed→frontier"
    # each upstream saw its own call's span, both in the route's trace
    assert small.headers[0]["traceparent"].split("-")[2] == format(failed.context.span_id, "016x")
    assert frontier.headers[0]["traceparent"].split("-")[2] == format(
        answered.context.span_id, "016x"
    )


def test_route_and_aroute_make_the_same_tree(
    saved_model_dir, embedder, upstreams, provider, exporter
) -> None:
    router = traced_router(saved_model_dir, embedder, upstreams, provider)
    router.route("math", PROMPT, target="share=0.0")
    sync = tree(exporter.get_finished_spans())
    exporter.clear()
    asyncio.run(router.aroute("math", PROMPT, target="share=0.0"))
    assert tree(exporter.get_finished_spans()) == sync


def test_off_without_a_provider_sends_no_trace_header(saved_model_dir, embedder, upstreams) -> None:
    router = traced_router(saved_model_dir, embedder, upstreams, None)
    assert not router.tracing.enabled
    router.route("math", PROMPT, target="share=0.0")
    small, _ = upstreams
    assert "traceparent" not in small.headers[0]
