"""A tiny real HTTP upstream for the load-balancer tests, run with uvicorn in its own process.

``python -m uvicorn tests.support.lb_upstream:app --port P`` with ``UPSTREAM_NAME`` (answered
in every response's ``x-upstream`` header) and ``UPSTREAM_JOURNAL`` (a file).  The upstream
appends ``<event> <id>`` lines, ``<id>`` being the request's ``x-request-id``:

- ``start``: the request reached the handler;
- ``answer``: the response is about to be handed to the server (its first bytes may be on the
  wire from here on);
- ``head``: a streamed response's headers and first chunk have been handed to the server (they
  are on the wire);
- ``last``: a streamed response's last chunk is about to be handed over (until then the
  response is certainly incomplete);
- ``end``: the whole response has been handed to the server.

The server writes a response's headers and body in separate writes, so a SIGKILL can land
between them; the events bracket those writes from both sides, so a test can say which requests
*may* have broken (``answer``/``head`` without ``end``) and which *must* have (``head`` without
``last``).  Each line is one ``write`` on an ``O_APPEND`` descriptor, so a SIGKILL loses no line
that was written: after a kill the journal says exactly which requests the upstream was holding.

Endpoints: ``GET /healthz``; ``GET|POST /work?ms=N`` (answers after N ms, echoing the body's
length); ``GET /stream?chunks=N&ms=M`` (N chunks, M ms apart, the last one ``done\\n``).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.background import BackgroundTask
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
    JOURNAL.note("answer", request_id)
    return JSONResponse(
        {"upstream": NAME, "request_id": request_id, "body_bytes": len(body)},
        headers={"x-upstream": NAME},
        background=BackgroundTask(JOURNAL.note, "end", request_id),  # runs once it is sent
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
        JOURNAL.note("last", request_id)
        yield b"done\n"

    JOURNAL.note("answer", request_id)
    return StreamingResponse(
        body(),
        media_type="text/plain",
        headers={"x-upstream": NAME},
        background=BackgroundTask(JOURNAL.note, "end", request_id),
    )


app = Starlette(
    routes=[
        Route("/healthz", healthz),
        Route("/work", work, methods=["GET", "POST"]),
        Route("/stream", stream),
    ]
)
