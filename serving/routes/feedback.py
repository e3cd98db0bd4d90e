"""``POST /v1/feedback``: the label of an answered request, stored for retraining."""

from __future__ import annotations

import asyncio
import logging

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from router.errors import UnknownRequestError
from serving.dependencies import ServiceDep, require_key
from serving.errors import APIError, error_responses
from serving.protocol import FeedbackRequest
from serving.schemas import FeedbackAck

router = APIRouter(tags=["cascade"], dependencies=[Depends(require_key)])
logger = logging.getLogger("cascade.serving")


@router.post(
    "/v1/feedback",
    response_model=FeedbackAck,
    responses=error_responses(400, 401, 404, 413, 500),
    summary="Say whether the answer of a request was accepted",
    operation_id="giveFeedback",
)
async def feedback(body: FeedbackRequest, service: ServiceDep) -> JSONResponse:
    """Labels a request by its id (the chat completion's ``id``, ``x-request-id``); a later
    label replaces an earlier one.  404 for an id the service never answered."""
    try:
        record = await asyncio.to_thread(
            service.store.add_feedback, body.request_id, body.accepted, body.score, body.source
        )
    except UnknownRequestError as exc:
        raise APIError(
            404, str(exc), "invalid_request_error", "request_not_found", "request_id"
        ) from exc
    service.metrics.feedback.labels(str(bool(body.accepted)).lower()).inc()
    await asyncio.to_thread(service.observe_label, record.request_id, record.accepted, record.score)
    logger.info("feedback stored", extra={"labelled_request_id": record.request_id})
    return JSONResponse(
        {
            "object": "cascade.feedback",
            "request_id": record.request_id,
            "accepted": record.accepted,
            "score": record.score,
            "source": record.source,
            "stored": True,
        }
    )
