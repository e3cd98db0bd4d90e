"""cascade-router: a learned cascade router for LLM agent pipelines.

Importing this package is cheap: torch, sentence-transformers, LightGBM and MLflow load on
first use, never at import time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = [
    "AsyncCascadeClient",
    "CascadeClient",
    "RouteResult",
    "Router",
    "Target",
    "aroute",
    "route",
]
__version__ = "0.1.0"

if TYPE_CHECKING:
    from router.policy import Target
    from router.sdk import AsyncCascadeClient, CascadeClient, Router, RouteResult, aroute, route


def __getattr__(name: str) -> Any:
    if name in {"Router", "RouteResult", "route", "aroute", "CascadeClient", "AsyncCascadeClient"}:
        from router import sdk

        return getattr(sdk, name)
    if name == "Target":
        from router.policy import Target

        return Target
    raise AttributeError(f"module 'router' has no attribute {name!r}")
