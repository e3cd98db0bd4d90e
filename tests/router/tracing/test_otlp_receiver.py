"""Spans exported the way the OTEL_* variables say reach a real OTLP receiver (Phoenix) over
HTTP/protobuf and over gRPC, and read back with their tree, kinds and attributes intact."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from router.backends import OpenAIBackend
from router.tracing import Tracing, provider_from_env, trace_headers
from tests.support.phoenix import Phoenix, attribute_values, phoenix_executable

pytestmark = pytest.mark.slow

CALLER_TRACE = "0af7651916cd43dd8448eb211c80319c"
CALLER_SPAN = "b7ad6b7169203331"


@pytest.fixture(scope="module")
def phoenix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Phoenix]:
    server = Phoenix(phoenix_executable(), tmp_path_factory.mktemp("phoenix")).start()
    yield server
    server.stop()


def send_one_request(trace_id: str, parent_span: str) -> dict[str, str]:
    """The spans of one escalated request, through a provider built from the environment;
    returns the trace headers the small upstream would have been sent."""
    provider = provider_from_env()
    assert provider is not None
    tracing = Tracing(provider, capture_content=True)
    small = OpenAIBackend("smollm2-135m-instruct", base_url="http://127.0.0.1:8081/v1")
    request = {"messages": [{"role": "user", "content": "2+2?"}], "max_tokens": 16}
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/chat/completions",
        "headers": [(b"traceparent", f"00-{trace_id}-{parent_span}-01".encode())],
    }
    with tracing.server_span(scope) as server, tracing.route_span("intent") as route:
        with tracing.decision_span("intent", "pre") as decide:
            tracing.end_decision_span(decide, action="call", tier="small", p_accept=0.25)
        with tracing.model_call(small, role="small", tier="small", request=request) as call:
            headers = trace_headers()
            tracing.end_model_call(
                call,
                response_model="smollm2-135m-instruct",
                input_tokens=12,
                output_tokens=2,
                finish_reasons=["stop"],
                cost_usd=0.0,
                messages=["4"],
            )
        tracing.end_route_span(
            route,
            tier="small",
            path="small→verified",
            p_accept=0.8,
            cost_usd=0.0,
            router_version="3",
        )
        Tracing.end_server_span(server, scope, 200, "chatcmpl-1")
    provider.shutdown()  # flushes the batch processor
    return headers


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_spans_reach_a_real_otlp_receiver(
    phoenix: Phoenix, protocol: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    endpoint = phoenix.url if protocol == "http/protobuf" else phoenix.grpc_endpoint
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
    monkeypatch.setenv("OTEL_SERVICE_NAME", "cascade-router-test")
    trace_id = CALLER_TRACE[:-4] + ("0001" if protocol == "grpc" else "0002")
    headers = send_one_request(trace_id, CALLER_SPAN)

    spans = {s["name"]: s for s in phoenix.spans(trace_id, want=4)}
    assert set(spans) == {"POST", "cascade.route", "cascade.decide", "chat smollm2-135m-instruct"}
    server, route = spans["POST"], spans["cascade.route"]
    decide, chat = spans["cascade.decide"], spans["chat smollm2-135m-instruct"]
    assert server["parent_span_id"] == CALLER_SPAN  # the caller's traceparent was honoured
    assert route["parent_span_id"] == server["span_id"]
    assert decide["parent_span_id"] == chat["parent_span_id"] == route["span_id"]
    assert headers["traceparent"] == f"00-{trace_id}-{chat['span_id']}-01"

    attributes = attribute_values(chat)
    assert attributes["gen_ai.operation.name"] == "chat"
    assert attributes["gen_ai.provider.name"] == "openai"
    assert attributes["gen_ai.request.model"] == "smollm2-135m-instruct"
    assert attributes["gen_ai.response.model"] == "smollm2-135m-instruct"
    assert attributes["gen_ai.usage.input_tokens"] == 12
    assert attributes["gen_ai.usage.output_tokens"] == 2
    assert attributes["gen_ai.response.finish_reasons"] == ["stop"]
    assert attributes["server.port"] == 8081
    # opt-in content travels structured (OTLP kvlist and array values), not as a JSON string:
    # Phoenix stores nested values flattened into dotted keys
    assert attributes["gen_ai.input.messages.0.role"] == "user"
    assert attributes["gen_ai.input.messages.0.parts.0.type"] == "text"
    assert attributes["gen_ai.input.messages.0.parts.0.content"] == "2+2?"
    assert attributes["gen_ai.output.messages.0.parts.0.content"] == "4"
    assert attributes["gen_ai.output.messages.0.finish_reason"] == "stop"
    assert attribute_values(route)["cascade.path"] == "small→verified"
    assert attribute_values(route)["cascade.router_version"] == "3"
    assert attribute_values(decide)["cascade.p_accept"] == 0.25
    assert attribute_values(server)["http.response.status_code"] == 200
