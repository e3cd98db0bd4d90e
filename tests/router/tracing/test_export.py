"""Tracing is switched on by the standard OTEL_* variables, and only by them."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

from router.errors import ConfigurationError
from router.tracing import capture_content_from_env, exporter_names, provider_from_env


def exporters(provider: TracerProvider) -> list[object]:
    """The exporter behind each batch processor of an SDK provider."""
    processors = provider._active_span_processor._span_processors  # no public accessor
    assert all(isinstance(p, BatchSpanProcessor) for p in processors)
    return [p._batch_processor._exporter for p in processors]


@pytest.mark.parametrize(
    "environ",
    [
        {},
        {"OTEL_TRACES_EXPORTER": ""},
        {"OTEL_TRACES_EXPORTER": "none"},
        {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true"},
        # the endpoint alone does not turn tracing on: the exporter must be named
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"},
    ],
)
def test_off_unless_an_exporter_is_named(environ: dict[str, str]) -> None:
    assert exporter_names(environ) == []
    assert provider_from_env(environ) is None


def test_otlp_is_http_protobuf_by_default() -> None:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    provider = provider_from_env({"OTEL_TRACES_EXPORTER": "otlp"})
    assert provider is not None
    try:
        (exporter,) = exporters(provider)
        assert isinstance(exporter, OTLPSpanExporter)
    finally:
        provider.shutdown()


def test_the_sdk_reads_the_resource_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "cascade-router-test")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment.name=test")
    provider = provider_from_env()
    assert provider is not None
    try:
        assert provider.resource.attributes["service.name"] == "cascade-router-test"
        assert provider.resource.attributes["deployment.environment.name"] == "test"
        (exporter,) = exporters(provider)
        assert isinstance(exporter, ConsoleSpanExporter)
    finally:
        provider.shutdown()


@pytest.mark.parametrize(
    "variable", ["OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"]
)
def test_grpc_when_the_protocol_says_so(variable: str) -> None:
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    provider = provider_from_env({"OTEL_TRACES_EXPORTER": "otlp", variable: "grpc"})
    assert provider is not None
    try:
        (exporter,) = exporters(provider)
        assert isinstance(exporter, OTLPSpanExporter)
    finally:
        provider.shutdown()


def test_several_exporters() -> None:
    provider = provider_from_env({"OTEL_TRACES_EXPORTER": "console, otlp"})
    assert provider is not None
    try:
        assert [type(e).__name__ for e in exporters(provider)] == [
            "ConsoleSpanExporter",
            "OTLPSpanExporter",
        ]
    finally:
        provider.shutdown()


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"OTEL_TRACES_EXPORTER": "zipkin"}, "'zipkin', which is not installed"),
        (
            {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"},
            "'http/json' is not supported",
        ),
    ],
)
def test_a_wrong_setting_is_a_clear_error(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        provider_from_env(environ)


@pytest.mark.parametrize(
    ("value", "on"),
    [
        (None, False),
        ("NO_CONTENT", False),
        ("EVENT_ONLY", False),
        ("SPAN_ONLY", True),
        ("span_and_event", True),
        ("true", True),
        ("false", False),
    ],
)
def test_content_capture_switch(value: str | None, on: bool) -> None:
    environ = {} if value is None else {"OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": value}
    assert capture_content_from_env(environ) is on
