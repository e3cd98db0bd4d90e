"""The sidecar's one ASGI middleware: what every request gets, whatever its endpoint.

* a request id, sent back as ``x-request-id`` (the ``openai`` client's ``_request_id``) and
  ``x-cascade-request-id``, put in every log line of the request and used as the id of its
  answer and of its row in the feedback store;
* the body limit: a body larger than ``max_body_bytes`` gets a 413 (read and dropped, so the
  keep-alive connection stays usable);
* one JSON access-log line and one latency observation, the latency running to the last byte
  sent, streams included;
* the request's SERVER span (OpenTelemetry, when tracing is on), parented by the caller's
  ``traceparent``, named by the route template, carrying the request id;
* a 500 with OpenAI's error body for an error nobody expected, sent here rather than raised
  further: an exception that escapes to the server closes the client's keep-alive connection.

Plain ASGI rather than Starlette's ``BaseHTTPMiddleware``, whose per-request task group and
memory streams cost more CPU than a routing decision.
"""

from __future__ import annotations

import logging
import time
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from router.tracing import Tracing
from serving.errors import APIError, internal_error
from serving.logs import request_id_var
from serving.metrics import ServiceMetrics

logger = logging.getLogger("cascade.serving")

HEALTH_PATHS = frozenset({"/healthz", "/readyz"})
#: The id prefix per endpoint: a chat answer's id is its request id (OpenAI's ``chatcmpl-``).
ID_PREFIXES = {"/v1/chat/completions": "chatcmpl", "/v1/route": "route"}
_ID_HEADERS = (b"x-request-id", b"x-cascade-request-id")


def new_request_id(path: str) -> str:
    return f"{ID_PREFIXES.get(path, 'req')}-{uuid.uuid4().hex}"


class RequestContext:
    """The middleware of the module docstring."""

    def __init__(
        self,
        app: ASGIApp,
        metrics: ServiceMetrics,
        max_body_bytes: int,
        tracing: Tracing | None = None,
    ) -> None:
        self.app, self.metrics, self.max_body_bytes = app, metrics, max_body_bytes
        self.tracing = tracing or Tracing()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["path"] in HEALTH_PATHS or scope["path"] == "/metrics":
            await self._handle(scope, receive, send)  # probes and scrapes are not traced
            return
        # the request's SERVER span, current while the app runs: the cascade's spans and the
        # request's log lines join it
        with self.tracing.server_span(scope) as span:
            status, request_id = await self._handle(scope, receive, send)
            Tracing.end_server_span(span, scope, status, request_id)

    async def _handle(self, scope: Scope, receive: Receive, send: Send) -> tuple[int, str]:
        """The request: its id, the body limit, the app, a 500 for what nobody expected, the
        access-log line and the latency; returns the status sent and the request id."""
        started = time.perf_counter()
        path: str = scope["path"]
        request_id = new_request_id(path)
        token = request_id_var.set(request_id)
        seen = {"status": 500, "started": False}
        id_headers = [(name, request_id.encode("latin-1")) for name in _ID_HEADERS]

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                seen["status"], seen["started"] = message["status"], True
                headers = [h for h in message.get("headers", ()) if h[0] not in _ID_HEADERS]
                message = {**message, "headers": [*headers, *id_headers]}
            await send(message)

        try:
            body = await self._read_body(scope, receive)
            if body is None:
                await self._reply(
                    APIError(
                        413,
                        f"The request body is larger than the limit of {self.max_body_bytes} "
                        "bytes.",
                        "invalid_request_error",
                        "request_too_large",
                    ),
                    send_with_id,
                )
            else:
                await self.app(scope, _replay(body, receive), send_with_id)
        except Exception:
            logger.exception("unexpected error on %s", path)
            if not seen["started"]:
                await self._reply(internal_error(), send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            if path.startswith("/v1/"):
                self.metrics.request_latency.labels(path.removeprefix("/v1/")).observe(elapsed)
            if path not in HEALTH_PATHS and path != "/metrics":
                logger.info(
                    "%s %s %s",
                    scope["method"],
                    path,
                    seen["status"],
                    extra={
                        "request_id": request_id,
                        "status": seen["status"],
                        "latency_ms": round(elapsed * 1000, 2),
                    },
                )
            request_id_var.reset(token)
        return int(seen["status"]), request_id

    async def _read_body(self, scope: Scope, receive: Receive) -> bytes | None:
        """The whole request body, or None when it exceeds the limit (then read to its end
        and dropped, so the connection can serve the next request)."""
        limit = self.max_body_bytes
        for name, value in scope.get("headers", ()):
            if name == b"content-length" and value.isdigit() and int(value) > limit:
                await _drain(receive)
                return None
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break  # the client went away: the app sees an empty body and its disconnect
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                if message.get("more_body", False):
                    await _drain(receive)
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)

    async def _reply(self, error: APIError, send: Send) -> None:
        self.metrics.http_errors.labels(str(error.status), error.code or error.type).inc()
        await error.response()(
            {"type": "http", "method": "GET", "path": "", "headers": []},
            _empty_receive,
            send,
        )


async def _drain(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] != "http.request" or not message.get("more_body", False):
            return


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that gives the body already read, then waits on the real one (for the
    client's disconnect, which streaming responses listen for)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _empty_receive() -> Message:
    return {"type": "http.disconnect"}
