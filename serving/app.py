"""The sidecar: an OpenAI-compatible cascade endpoint over :mod:`router` (FastAPI on uvicorn).

Endpoints (one ``APIRouter`` per group, :mod:`serving.routes`): ``POST /v1/chat/completions``
(JSON or SSE streaming), ``GET /v1/models``, ``POST /v1/route`` (decision only),
``POST /v1/feedback``, ``GET /healthz``, ``GET /readyz``, ``GET /metrics``.  Everything but the
two health endpoints needs a bearer key when keys are configured.  The OpenAPI document is
served at ``/openapi.json`` (every response shape and error declared), the docs at ``/docs``.
See ``serving/settings.py`` for the configuration.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from router.tracing import Tracing, provider_from_env
from serving.errors import APIError, install_handlers
from serving.middleware import RequestContext
from serving.routes import ROUTERS
from serving.schemas import ChatCompletionChunkOut
from serving.service import Service
from serving.settings import ServiceSettings

if TYPE_CHECKING:
    from opentelemetry.trace import TracerProvider

__all__ = ["Service", "create_app"]


def create_app(
    settings: ServiceSettings | None = None,
    store: Any = None,
    tracer_provider: TracerProvider | None = None,
) -> FastAPI:
    """The FastAPI application (``store``: a feedback store; default from the settings).

    Traces go to ``tracer_provider``; without one, to the provider that the standard
    ``OTEL_*`` variables describe (:func:`router.tracing.provider_from_env`: off unless
    ``OTEL_TRACES_EXPORTER`` names an exporter), else to the process's global provider (as
    ``opentelemetry-instrument`` sets it).  A provider built here is shut down (its last
    spans flushed) when the app stops.

    Raises:
        ConfigurationError: the ``OTEL_*`` variables name an exporter that cannot be built.
    """
    settings = settings or ServiceSettings.load()
    owned = None if tracer_provider is not None else provider_from_env()
    tracing = Tracing(tracer_provider or owned, capture_content=settings.trace_content)
    service = Service(settings, store, tracing)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await service.start()
        try:
            yield
        finally:
            await service.stop()
            if owned is not None:
                await asyncio.to_thread(owned.shutdown)

    app = FastAPI(
        title="cascade-router sidecar",
        description="An OpenAI-compatible chat-completions endpoint that answers each request "
        "with the cheapest model likely to be accepted: a learned cascade of models.",
        version="1",
        lifespan=lifespan,
    )
    app.state.service = service

    def count(error: APIError) -> None:
        service.metrics.http_errors.labels(str(error.status), error.code or error.type).inc()

    install_handlers(app, count)
    for router in ROUTERS:
        app.include_router(router)
    app.add_middleware(
        RequestContext,
        metrics=service.metrics,
        max_body_bytes=settings.max_body_bytes,
        tracing=tracing,
    )
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document, made honest: request validation errors are answered 400 with
    OpenAI's error body (declared per route), never FastAPI's 422; the stream's chunk schema is
    listed among the components."""
    if app.openapi_schema is not None:
        return app.openapi_schema
    document = get_openapi(
        title=app.title, version=app.version, description=app.description, routes=app.routes
    )
    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            operation.get("responses", {}).pop("422", None)
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    chunk = ChatCompletionChunkOut.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(chunk.pop("$defs", {}))
    schemas["ChatCompletionChunkOut"] = chunk
    app.openapi_schema = document
    return document
