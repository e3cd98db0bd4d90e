"""``POST /v1/chat/completions``: an OpenAI chat completion answered through the cascade."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.responses import Response

from router.sdk import RouteResult
from router.sdk.openai_shapes import completion_body, completion_chunks
from serving.dependencies import ServiceDep, admitted, require_key
from serving.errors import error_responses
from serving.logs import request_id_var
from serving.metrics import first_p_accept
from serving.protocol import ChatCompletionRequest, select
from serving.schemas import ChatCompletionChunkOut, ChatCompletionOut

router = APIRouter(tags=["OpenAI"], dependencies=[Depends(require_key)])


def cascade_headers(
    request_id: str, tier: str, path: str, p_accept: float, version: str
) -> dict[str, str]:
    """The ``x-cascade-*`` headers of an answer or a decision."""
    # header values must be latin-1: the arrows become ASCII
    return {
        "x-cascade-request-id": request_id,
        "x-cascade-tier": tier,
        "x-cascade-path": path.replace("→", ">"),
        "x-cascade-p-accept": f"{p_accept:.4f}",
        "x-cascade-router-version": version,
    }


@router.post(
    "/v1/chat/completions",
    response_model=ChatCompletionOut,
    responses={
        200: {
            "description": "The answer: JSON, or with ``stream: true`` server-sent events, "
            "each ``data:`` a chat.completion.chunk, then ``data: [DONE]``",
            "links": {
                "GiveFeedback": {
                    "operationId": "giveFeedback",
                    "requestBody": {"request_id": "$response.body#/id"},
                    "description": "Label this answer: its id is the request id",
                }
            },
            "content": {
                # OpenAPI 3.1 has no itemSchema: the schema of an event stream describes one
                # event (what API tools such as Schemathesis validate), not the whole text
                "text/event-stream": {
                    "schema": {
                        "type": "object",
                        "description": "One server-sent event: its data is a "
                        "chat.completion.chunk (ChatCompletionChunkOut) as JSON, the last "
                        "one's `[DONE]`",
                        "properties": {
                            "data": {"type": "string", "pattern": r"^(\{[\s\S]*\}|\[DONE\])$"}
                        },
                        "required": ["data"],
                    }
                }
            },
        },
        **error_responses(400, 401, 404, 413, 500, 502, 503, 504),
    },
    summary="Answer a chat completion through the cascade",
    operation_id="createChatCompletion",
    dependencies=[Depends(admitted)],
)
async def chat_completions(body: ChatCompletionRequest, service: ServiceDep) -> Response:
    """The request (tools, tool choice, response format, sampling parameters, …) goes whole to
    each tier called; the answer is the answering model's message.  ``model`` names the step and
    target (``cascade``, ``cascade:STEP``, ``cascade:STEP:TARGET``)."""
    request_id = str(request_id_var.get())
    choice = select(body.model, body.cascade, service.settings.default_step)
    served = service.holder.current  # one version for the whole request
    result = await service.answer(served, choice, body)
    service.metrics.observe_route(result)
    await asyncio.to_thread(service.record, request_id, body, result, served)
    headers = cascade_headers(
        request_id, result.tier, result.path, first_p_accept(result), served.version
    )
    created = int(time.time())
    if body.stream:
        return StreamingResponse(
            _events(result, request_id, created, body.include_usage),
            media_type="text/event-stream",
            headers={**headers, "Cache-Control": "no-cache"},
        )
    return JSONResponse(completion_body(result, request_id, created), headers=headers)


async def _events(
    result: RouteResult, request_id: str, created: int, include_usage: bool
) -> AsyncIterator[bytes]:
    """The answer as server-sent ``chat.completion.chunk`` events, then ``data: [DONE]``.

    The cascade reads the whole small answer to verify it, so the stream starts once the answer
    is final; it is then sent in pieces like any OpenAI stream, which join into the JSON answer.
    """
    for chunk in completion_chunks(result, request_id, created, include_usage):
        yield f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n".encode()
    yield b"data: [DONE]\n\n"


__all__ = ["ChatCompletionChunkOut", "cascade_headers", "router"]
