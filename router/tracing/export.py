"""Turning tracing on from the standard ``OTEL_*`` environment variables.

Tracing is off unless ``OTEL_TRACES_EXPORTER`` names an exporter: a service must not start
shipping spans to ``localhost:4318`` because a library happens to be installed (the
specification's default exporter is ``otlp``; this is the router's deliberate choice).
``OTEL_SDK_DISABLED=true`` always wins.  Everything else is read by the OpenTelemetry SDK
itself, untouched here: ``OTEL_SERVICE_NAME`` and ``OTEL_RESOURCE_ATTRIBUTES`` by the resource,
``OTEL_TRACES_SAMPLER(_ARG)`` by the provider, ``OTEL_EXPORTER_OTLP_[TRACES_]*`` (endpoint,
headers, timeout, compression, certificates) by the exporters, ``OTEL_BSP_*`` by the batch
processor and ``OTEL_PROPAGATORS`` by the propagator.

A process started by ``opentelemetry-instrument`` needs none of this: it sets the global
provider, which the router falls back on when it is given none.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from importlib.metadata import entry_points
from typing import TYPE_CHECKING

from router.errors import ConfigurationError
from router.tracing.attributes import CAPTURE_CONTENT_ENV

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

#: ``OTLP`` protocol → exporter entry point (``opentelemetry_traces_exporter`` group).
_OTLP_EXPORTERS = {"http/protobuf": "otlp_proto_http", "grpc": "otlp_proto_grpc"}
#: Values of the content switch that put prompts and answers on spans.
_CONTENT_ON_SPANS = frozenset({"SPAN_ONLY", "SPAN_AND_EVENT", "TRUE"})


def exporter_names(environ: Mapping[str, str] | None = None) -> list[str]:
    """The exporters ``OTEL_TRACES_EXPORTER`` asks for (empty: tracing is off)."""
    env = os.environ if environ is None else environ
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return []
    names = [n.strip() for n in env.get("OTEL_TRACES_EXPORTER", "").split(",") if n.strip()]
    return [] if names in ([], ["none"]) else names


def provider_from_env(environ: Mapping[str, str] | None = None) -> TracerProvider | None:
    """An SDK tracer provider exporting where the ``OTEL_*`` variables say, or None (off).

    ``otlp`` is OTLP over HTTP/protobuf unless ``OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`` or
    ``OTEL_EXPORTER_OTLP_PROTOCOL`` says ``grpc`` (the specification's default; the Python
    SDK's own auto-configuration picks gRPC instead).  Each exporter gets a batch processor;
    call ``shutdown()`` on the provider when the process stops, to flush them.

    Raises:
        ConfigurationError: an unknown exporter or protocol, or an exporter not installed.
    """
    env = os.environ if environ is None else environ
    names = exporter_names(env)
    if not names:
        return None
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    protocol = (
        env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    ).strip()
    exporters = []
    for name in names:
        if name == "otlp":
            if protocol not in _OTLP_EXPORTERS:
                raise ConfigurationError(
                    f"OTLP protocol {protocol!r} is not supported; use "
                    f"{' or '.join(_OTLP_EXPORTERS)}"
                )
            name = _OTLP_EXPORTERS[protocol]
        found = entry_points(group="opentelemetry_traces_exporter", name=name)
        if not found:
            raise ConfigurationError(
                f"OTEL_TRACES_EXPORTER asks for {name!r}, which is not installed (the OTLP "
                "exporters come with the serve extra: pip install 'cascade-router[serve]'; "
                "gRPC also needs opentelemetry-exporter-otlp-proto-grpc)"
            )
        exporters.append(next(iter(found)).load())
    provider = TracerProvider(resource=Resource.create())
    for exporter_class in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter_class()))
    return provider


def capture_content_from_env(environ: Mapping[str, str] | None = None) -> bool:
    """Whether prompts and answers go on spans, by the GenAI instrumentations' switch.

    ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT``: ``SPAN_ONLY`` or ``SPAN_AND_EVENT``
    (or the older ``true``) records them; ``NO_CONTENT`` (the default) and ``EVENT_ONLY``
    do not (the router emits no GenAI events).
    """
    env = os.environ if environ is None else environ
    return env.get(CAPTURE_CONTENT_ENV, "").strip().upper() in _CONTENT_ON_SPANS
