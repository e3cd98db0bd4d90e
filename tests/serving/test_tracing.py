"""The sidecar's traces over real HTTP: the sidecar (in this process, on uvicorn, so the SDK's
in-memory exporter can read its spans) between a caller that sends a ``traceparent`` and two
upstreams that record what they receive.  The request id is the same in the response header,
the spans, the log lines and the feedback store.  The slow test runs ``cascade-router serve``
exporting over OTLP to a real receiver (Phoenix), configured by the OTEL_* variables only."""

from __future__ import annotations

import io
import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from router.feedback import FeedbackStore
from serving.app import create_app
from serving.logs import JsonFormatter
from serving.settings import ServiceSettings
from tests.serving.conftest import API_KEYS, FRONTIER, SMALL, sidecar_settings
from tests.support.openai_server import OpenAIStubServer, obliging
from tests.support.phoenix import Phoenix, attribute_values, phoenix_executable
from tests.support.processes import Sidecar

AUTH = {"Authorization": f"Bearer {API_KEYS[0]}"}
CALLER_TRACE = "5b8efff798038103d269b633813fc60c"
CALLER_SPAN = "eee19b7ec3c1b174"
TRACEPARENT = f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"
QUESTION = [{"role": "user", "content": "Which is larger, 7 or 9?"}]


class InProcess:
    """An ASGI app on uvicorn in a background thread, on a free loopback port."""

    def __init__(self, app: Any) -> None:
        self.socket = socket.socket()
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.socket.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.socket.getsockname()[1]}"
        config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.socket]}, daemon=True
        )

    def __enter__(self) -> InProcess:
        self.thread.start()
        deadline = time.monotonic() + 300
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "no start"
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.socket.close()


@pytest.fixture(scope="module")
def upstreams() -> Iterator[tuple[OpenAIStubServer, OpenAIStubServer]]:
    with (
        OpenAIStubServer(body_responder=obliging, models=["small-stub"]) as small,
        OpenAIStubServer(body_responder=obliging, models=[FRONTIER]) as frontier,
    ):
        yield small, frontier


@pytest.fixture(scope="module")
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture(scope="module")
def traced(
    tmp_path_factory: pytest.TempPathFactory,
    upstreams: tuple[OpenAIStubServer, OpenAIStubServer],
    exporter: InMemorySpanExporter,
) -> Iterator[tuple[InProcess, Path]]:
    workdir = tmp_path_factory.mktemp("traced")
    small, frontier = upstreams
    values = sidecar_settings(workdir, small.base_url, frontier.base_url)
    values["upstreams"][SMALL].update(model="small-stub", provider_name="llama.cpp")
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    app = create_app(ServiceSettings(**values), tracer_provider=provider)
    with InProcess(app) as server:
        yield server, workdir
    provider.shutdown()


@pytest.fixture
def logged() -> Iterator[io.StringIO]:
    """The service's log lines (JSON) while a test runs."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    log = logging.getLogger("cascade")
    log.addHandler(handler)
    level = log.level
    log.setLevel(logging.INFO)
    yield stream
    log.removeHandler(handler)
    log.setLevel(level)


def spans_of(exporter: InMemorySpanExporter, trace_id: str) -> list[Any]:
    """The finished spans of one trace, once its SERVER span has ended (the server ends it,
    and writes the access-log line, after the client has the response)."""
    deadline = time.monotonic() + 10
    while True:
        spans = [
            s
            for s in exporter.get_finished_spans()
            if format(s.context.trace_id, "032x") == trace_id
        ]
        if any(s.kind is SpanKind.SERVER for s in spans) or time.monotonic() > deadline:
            return spans
        time.sleep(0.05)


def test_a_chat_request_is_one_trace_from_the_caller_to_the_upstreams(
    traced: tuple[InProcess, Path],
    upstreams: tuple[OpenAIStubServer, OpenAIStubServer],
    exporter: InMemorySpanExporter,
    logged: io.StringIO,
) -> None:
    server, workdir = traced
    small, _ = upstreams
    small.headers.clear()
    response = httpx.post(
        f"{server.url}/v1/chat/completions",
        json={"model": "cascade:math:share=0.0", "messages": QUESTION, "max_tokens": 16},
        headers={**AUTH, "traceparent": TRACEPARENT},
        timeout=120,
    )
    assert response.status_code == 200, response.text
    request_id = response.headers["x-request-id"]
    assert response.json()["id"] == request_id

    spans = spans_of(exporter, CALLER_TRACE)
    by_name = {s.name: s for s in spans}
    server_span = by_name["POST /v1/chat/completions"]
    assert server_span.kind is SpanKind.SERVER
    assert format(server_span.parent.span_id, "016x") == CALLER_SPAN
    assert server_span.attributes["http.route"] == "/v1/chat/completions"
    assert server_span.attributes["http.response.status_code"] == 200
    assert server_span.attributes["cascade.request_id"] == request_id
    assert server_span.attributes["http.response.header.x-request-id"] == (request_id,)
    route = by_name["cascade.route"]
    assert route.parent.span_id == server_span.context.span_id
    assert route.attributes["cascade.path"] == response.json()["cascade"]["path"]
    call = by_name["chat small-stub"]
    assert call.kind is SpanKind.CLIENT
    assert call.parent.span_id == route.context.span_id
    assert call.attributes["gen_ai.provider.name"] == "llama.cpp"
    assert call.attributes["gen_ai.request.max_tokens"] == 16
    assert (
        call.attributes["gen_ai.usage.output_tokens"]
        == response.json()["usage"]["completion_tokens"]
    )
    decisions = [s for s in spans if s.name == "cascade.decide"]
    assert [d.attributes["cascade.stage"] for d in decisions] == ["pre", "post"]
    # the upstream got the router's CLIENT span as parent, in the caller's trace
    (headers,) = small.headers
    assert headers["traceparent"].startswith(
        f"00-{CALLER_TRACE}-{format(call.context.span_id, '016x')}-"
    )

    # the same id in the log lines, with the trace
    lines = [json.loads(line) for line in logged.getvalue().splitlines()]
    access = [e for e in lines if e.get("message") == "POST /v1/chat/completions 200"]
    assert access and access[-1]["request_id"] == request_id
    assert access[-1]["trace_id"] == CALLER_TRACE
    # and in the feedback store
    store = FeedbackStore(f"sqlite:///{workdir / 'feedback.db'}")
    try:
        record = store.get_request(request_id)
        assert record is not None and record.path == route.attributes["cascade.path"]
    finally:
        store.close()


def test_a_decision_request_has_its_decision_span(
    traced: tuple[InProcess, Path], exporter: InMemorySpanExporter
) -> None:
    server, _ = traced
    trace_id = CALLER_TRACE[:-4] + "0002"
    response = httpx.post(
        f"{server.url}/v1/route",
        json={"step": "math", "input": "Which is larger, 7 or 9?"},
        headers={**AUTH, "traceparent": f"00-{trace_id}-{CALLER_SPAN}-01"},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    spans = {s.name: s for s in spans_of(exporter, trace_id)}
    assert set(spans) == {"POST /v1/route", "cascade.decide"}
    decide = spans["cascade.decide"]
    assert decide.attributes["cascade.stage"] == "route"
    assert decide.attributes["cascade.action"] == response.json()["action"]
    assert decide.attributes["cascade.p_accept"] == pytest.approx(response.json()["p_accept"])


def test_errors_and_probes(traced: tuple[InProcess, Path], exporter: InMemorySpanExporter) -> None:
    server, _ = traced
    exporter.clear()
    assert httpx.get(f"{server.url}/healthz").status_code == 200
    assert httpx.get(f"{server.url}/metrics", headers=AUTH).status_code == 200
    assert exporter.get_finished_spans() == ()  # probes and scrapes make no span
    trace_id = CALLER_TRACE[:-4] + "0003"
    response = httpx.post(
        f"{server.url}/v1/chat/completions",
        json={"model": "cascade", "messages": "not a list"},
        headers={**AUTH, "traceparent": f"00-{trace_id}-{CALLER_SPAN}-01"},
    )
    assert response.status_code == 400
    (span,) = spans_of(exporter, trace_id)
    assert span.attributes["http.response.status_code"] == 400
    assert "error.type" not in span.attributes  # a client's error is not the server's


def test_off_by_default(
    tmp_path: Path, upstreams: tuple[OpenAIStubServer, OpenAIStubServer]
) -> None:
    small, frontier = upstreams
    small.headers.clear()
    values = sidecar_settings(tmp_path, small.base_url, frontier.base_url)
    values["upstreams"][SMALL]["model"] = "small-stub"
    with InProcess(create_app(ServiceSettings(**values))) as server:
        response = httpx.post(
            f"{server.url}/v1/chat/completions",
            json={"model": "cascade:math:share=0.0", "messages": QUESTION},
            headers={**AUTH, "traceparent": TRACEPARENT},
            timeout=120,
        )
    assert response.status_code == 200
    assert response.headers["x-request-id"]
    # no span of its own, and the caller's context is not passed on as if it were
    assert "traceparent" not in small.headers[0]


# ------------------------------------------------------------------ a real OTLP receiver


@pytest.mark.slow
def test_a_served_sidecar_exports_to_a_real_receiver(
    tmp_path: Path, upstreams: tuple[OpenAIStubServer, OpenAIStubServer]
) -> None:
    small, frontier = upstreams
    phoenix = Phoenix(phoenix_executable(), tmp_path / "phoenix")
    (tmp_path / "phoenix").mkdir()
    phoenix.start()
    try:
        (tmp_path / "sidecar").mkdir()
        values = sidecar_settings(tmp_path / "sidecar", small.base_url, frontier.base_url)
        values["upstreams"][SMALL]["model"] = "small-stub"
        sidecar = Sidecar(tmp_path / "sidecar", values)
        sidecar.env |= {
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_EXPORTER_OTLP_ENDPOINT": phoenix.url,
            "OTEL_SERVICE_NAME": "cascade-router-test",
            "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "SPAN_ONLY",
        }
        sidecar.start()
        try:
            response = httpx.post(
                f"{sidecar.url}/v1/chat/completions",
                json={"model": "cascade:math:share=0.0", "messages": QUESTION},
                headers={**AUTH, "traceparent": TRACEPARENT},
                timeout=120,
            )
            assert response.status_code == 200, response.text
        finally:
            sidecar.stop()  # its lifespan's end flushes the batch
        stored = {s["name"]: s for s in phoenix.spans(CALLER_TRACE, want=5, timeout_s=60)}
    finally:
        phoenix.stop()
    assert {"POST /v1/chat/completions", "cascade.route", "chat small-stub"} <= set(stored)
    server_span = stored["POST /v1/chat/completions"]
    assert server_span["parent_span_id"] == CALLER_SPAN
    assert attribute_values(server_span)["cascade.request_id"] == response.headers["x-request-id"]
    chat = attribute_values(stored["chat small-stub"])
    assert chat["gen_ai.operation.name"] == "chat"
    assert chat["gen_ai.input.messages.0.parts.0.content"] == QUESTION[0]["content"]
