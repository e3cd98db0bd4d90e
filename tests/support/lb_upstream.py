"""A tiny real HTTP upstream for the load-balancer tests, run with uvicorn in its own process.

``python -m uvicorn tests.support.lb_upstream:app --port P`` with ``UPSTREAM_NAME`` (answered
in every response's ``x-upstream`` header) and ``UPSTREAM_JOURNAL`` (a file): the upstream
appends ``start <id>`` when a request arrives, ``head <id>`` once a streamed response has
handed its first chunk to the server, and ``end <id>`` when a response is complete, where
``<id>`` is the request's ``x-request-id``.  Each line is one ``write`` on an ``O_APPEND``
descriptor, so a SIGKILL loses no line that was written: after a kill the journal says
exactly which requests the upstream was holding.

Endpoints: ``GET /healthz``; ``GET|POST /work?ms=N`` (answers after N ms, echoing the body's
length); ``GET /stream?chunks=N&ms=M`` (N chunks, M ms apart, the last one ``done\\n``).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.routing import Route


class Journal:
    """Append-only request journal (one ``os.write`` per line)."""

    def __init__(self, path: str | None) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644) if path else -1

    def note(self, event: str, request_id: str) -> None:
        if self.fd >= 0:
            os.write(self.fd, f"{event} {request_id}\n".encode())


NAME = os.environ.get("UPSTREAM_NAME", "upstream")
JOURNAL = Journal(os.environ.get("UPSTREAM_JOURNAL"))


async def healthz(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


async def work(request: Request) -> JSONResponse:
    request_id = request.headers.get("x-request-id", "-")
    JOURNAL.note("start", request_id)
    body = await request.body()
    await asyncio.sleep(int(request.query_params.get("ms", "20")) / 1000)
    JOURNAL.note("end", request_id)
    return JSONResponse(
        {"upstream": NAME, "request_id": request_id, "body_bytes": len(body)},
        headers={"x-upstream": NAME},
    )


async def stream(request: Request) -> StreamingResponse:
    request_id = request.headers.get("x-request-id", "-")
    chunks = int(request.query_params.get("chunks", "10"))
    pause_s = int(request.query_params.get("ms", "20")) / 1000
    JOURNAL.note("start", request_id)

    async def body() -> AsyncIterator[bytes]:
        for i in range(chunks):
            yield f"chunk {i}\n".encode()
            if i == 0:  # the headers and a first chunk have been handed to the server
                JOURNAL.note("head", request_id)
            await asyncio.sleep(pause_s)
        JOURNAL.note("end", request_id)
        yield b"done\n"

    return StreamingResponse(body(), media_type="text/plain", headers={"x-upstream": NAME})


app = Starlette(
    routes=[
        Route("/healthz", healthz),
        Route("/work", work, methods=["GET", "POST"]),
        Route("/stream", stream),
    ]
)
