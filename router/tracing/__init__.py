"""OpenTelemetry traces of the cascade: GenAI client spans per model call, a span per routing
decision and per request, W3C context to the upstreams; off unless a provider is configured.

``Tracing(provider)`` is what the SDK's :class:`~router.sdk.Router` and the sidecar use;
:func:`provider_from_env` builds a provider from the standard ``OTEL_*`` variables (it needs
``opentelemetry-sdk`` and an exporter, which come with the ``serve`` extra).
"""

from router.tracing import attributes
from router.tracing.content import input_messages, output_messages, tool_definitions
from router.tracing.export import capture_content_from_env, exporter_names, provider_from_env
from router.tracing.spans import Tracing, describe_backend, error_type, trace_headers

__all__ = [
    "Tracing",
    "attributes",
    "capture_content_from_env",
    "describe_backend",
    "error_type",
    "exporter_names",
    "input_messages",
    "output_messages",
    "provider_from_env",
    "tool_definitions",
    "trace_headers",
]
