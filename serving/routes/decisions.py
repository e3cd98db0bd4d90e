"""``POST /v1/route``: the routing decision for a step, calling no model (micro-batched)."""

from __future__ import annotations

import time

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from router.errors import ConfigurationError
from serving.dependencies import AnnouncementDep, ServiceDep, admitted, require_key
from serving.errors import APIError, error_code, error_responses
from serving.logs import request_id_var
from serving.protocol import CascadeOptions, RouteRequest, select
from serving.routes.chat import cascade_headers
from serving.schemas import RouteDecision

router = APIRouter(tags=["cascade"], dependencies=[Depends(require_key)])


@router.post(
    "/v1/route",
    response_model=RouteDecision,
    responses=error_responses(400, 401, 404, 413, 500, 503),
    summary="Decide whether to call the small tier, or whether to accept its answer",
    operation_id="routeDecision",
    dependencies=[Depends(admitted)],
)
async def route(
    body: RouteRequest,
    service: ServiceDep,
    announcement: AnnouncementDep,
) -> JSONResponse:
    """Without ``answer``: call the first tier or skip it.  With the first tier's ``answer``:
    accept it or escalate (an answer that does not fit the request's tools or response format
    escalates).  Concurrent decisions share one embedding batch."""
    request_id = str(request_id_var.get())
    choice = select(
        body.model,
        CascadeOptions(step=body.step, target=body.target),
        service.settings.default_step,
    )
    request = body.request()
    served = service.holder.current
    started = time.perf_counter()
    with service.tracing.decision_span(choice.step, "route") as span:
        try:
            decision = await service.batcher.decide(
                served.router, choice.step, request, body.answer, choice.target, announcement
            )
        except ConfigurationError as exc:
            raise APIError(400, str(exc), code=error_code(exc)) from exc
        service.tracing.end_decision_span(
            span,
            action=decision.action,
            tier=decision.tier,
            p_accept=decision.p_accept
            if decision.p_accept_answer is None
            else decision.p_accept_answer,
            gain=decision.gain,
            opinion_source=decision.opinion_source if decision.ask_opinion else None,
            router_version=served.version,
        )
    service.metrics.router_latency.labels("route").observe(time.perf_counter() - started)
    service.metrics.observe_decision(decision)
    payload = {
        "id": request_id,
        "object": "cascade.decision",
        **decision.to_json_dict(),
        "router_version": served.version,
        "target": str(choice.target) if choice.target else None,
    }
    headers = cascade_headers(
        request_id, decision.tier, decision.path, decision.p_accept, served.version
    )
    return JSONResponse(payload, headers=headers)
