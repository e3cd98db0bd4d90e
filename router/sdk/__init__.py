"""The SDK: :class:`Router` decides and routes agent steps; :func:`route` uses the default one."""

from __future__ import annotations

from router.sdk.default import aroute, route
from router.sdk.results import Decision, RouteResult, TierStep, json_safe, tier_roles
from router.sdk.router import Router

__all__ = [
    "Decision",
    "RouteResult",
    "Router",
    "TierStep",
    "aroute",
    "json_safe",
    "route",
    "tier_roles",
]
