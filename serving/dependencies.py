"""FastAPI dependencies: the running service, the bearer key, admission and batching slots."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from serving.batching import Announcement
from serving.errors import unauthorized
from serving.service import Service

bearer = HTTPBearer(
    auto_error=False,
    description="One of the keys in CASCADE_API_KEYS (every endpoint but the health checks)",
)


def get_service(request: Request) -> Service:
    """The service of the app serving this request."""
    service: Service = request.app.state.service
    return service


ServiceDep = Annotated[Service, Depends(get_service)]
"""The running service, as a handler parameter."""


def require_key(
    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)],
    service: ServiceDep,
) -> None:
    """Refuse a request without one of the configured keys (401); open when none is set."""
    if not service.authorized(credentials.credentials if credentials else None):
        raise unauthorized()


async def admitted(service: ServiceDep) -> AsyncIterator[None]:
    """Hold one of the service's concurrency slots for the request (503 when none is free)."""
    with service.admission.slot():
        yield


async def announced(service: ServiceDep) -> AsyncIterator[Announcement]:
    """Tell the decision batcher a decision is coming, before the body is validated, so that
    concurrent decisions share a batch."""
    with service.batcher.expecting() as announcement:
        yield announcement


AnnouncementDep = Annotated[Announcement, Depends(announced)]
"""The announcement of a coming decision, as a handler parameter."""
