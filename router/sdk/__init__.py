"""The SDK: :class:`Router` decides and routes agent steps; :func:`route` uses the default one;
:class:`CascadeClient` is the same in the ``openai`` package's shape."""

from __future__ import annotations

from router.sdk.client import AsyncCascadeClient, CascadeClient
from router.sdk.default import aroute, default_router, route
from router.sdk.openai_shapes import MODEL_PREFIX, StepTarget
from router.sdk.results import (
    Decision,
    RouteResult,
    TierStep,
    TokenUsage,
    json_safe,
    tier_roles,
)
from router.sdk.router import Router

__all__ = [
    "MODEL_PREFIX",
    "AsyncCascadeClient",
    "CascadeClient",
    "Decision",
    "RouteResult",
    "Router",
    "StepTarget",
    "TierStep",
    "TokenUsage",
    "aroute",
    "default_router",
    "json_safe",
    "route",
    "tier_roles",
]
