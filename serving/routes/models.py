"""``GET /v1/models``: the model names a client may ask for (``cascade`` and one per step)."""

from __future__ import annotations

import time

from fastapi import APIRouter, Depends

from router.sdk import MODEL_PREFIX
from serving.dependencies import ServiceDep, require_key
from serving.errors import error_responses
from serving.schemas import ModelCard, ModelList

router = APIRouter(tags=["OpenAI"], dependencies=[Depends(require_key)])


@router.get(
    "/v1/models",
    response_model=ModelList,
    responses=error_responses(401, 500),
    summary="List the model names: cascade, and cascade:STEP for each step kind trained",
    operation_id="listModels",
)
async def models(service: ServiceDep) -> ModelList:
    served = service.holder.current
    created = int(time.time())
    names = [MODEL_PREFIX] + [f"{MODEL_PREFIX}:{s}" for s in served.router.step_kinds]
    return ModelList(
        object="list",
        data=[
            ModelCard(id=n, object="model", created=created, owned_by="cascade-router")
            for n in names
        ],
    )
