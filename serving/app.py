"""The sidecar: an OpenAI-compatible cascade endpoint over :mod:`router` (FastAPI on uvicorn).

Endpoints (one ``APIRouter`` per group, :mod:`serving.routes`): ``POST /v1/chat/completions``
(JSON or SSE streaming), ``GET /v1/models``, ``POST /v1/route`` (decision only),
``POST /v1/feedback``, ``GET /healthz``, ``GET /readyz``, ``GET /metrics``.  Everything but the
two health endpoints needs a bearer key when keys are configured.  The OpenAPI document is
served at ``/openapi.json`` (every response shape and error declared), the docs at ``/docs``.
See ``serving/settings.py`` for the configuration.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from serving.errors import APIError, install_handlers
from serving.middleware import RequestContext
from serving.routes import ROUTERS
from serving.schemas import ChatCompletionChunkOut
from serving.service import Service
from serving.settings import ServiceSettings

__all__ = ["Service", "create_app"]


def create_app(settings: ServiceSettings | None = None, store: Any = None) -> FastAPI:
    """The FastAPI application (``store``: a feedback store; default from the settings)."""
    settings = settings or ServiceSettings.load()
    service = Service(settings, store)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await service.start()
        try:
            yield
        finally:
            await service.stop()

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
        RequestContext, metrics=service.metrics, max_body_bytes=settings.max_body_bytes
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
