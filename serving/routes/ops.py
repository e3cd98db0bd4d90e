"""Operations: liveness, readiness (the upstreams answer) and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, Response

from serving.dependencies import ServiceDep, require_key
from serving.errors import error_responses
from serving.schemas import Health, Readiness

router = APIRouter(tags=["operations"])


@router.get(
    "/healthz",
    response_model=Health,
    summary="Liveness: the process answers",
    operation_id="healthz",
)
async def healthz() -> Health:
    return Health(status="ok")


@router.get(
    "/readyz",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "Loading, or an upstream is down"}},
    summary="Readiness: a router is loaded and every upstream answers",
    operation_id="readyz",
)
async def readyz(service: ServiceDep) -> JSONResponse:
    if not service.holder.loaded:
        return JSONResponse({"status": "loading"}, status_code=503)
    served = service.holder.current
    checks = await service.probe_upstreams(served)
    ready = all(v == "ok" for v in checks.values())
    return JSONResponse(
        {
            "status": "ready" if ready else "unready",
            "router_version": served.version,
            "tiers": list(served.router.tiers),
            "upstreams": checks,
        },
        status_code=200 if ready else 503,
    )


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {"content": {"text/plain": {"schema": {"type": "string"}}}},
        **error_responses(401),
    },
    summary="Prometheus metrics",
    operation_id="metrics",
    dependencies=[Depends(require_key)],
)
async def metrics(service: ServiceDep) -> Response:
    return Response(service.metrics.exposition(), media_type=service.metrics.content_type)
