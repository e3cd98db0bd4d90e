"""The module-level ``route()``: the default router answering from the bundled outcomes."""

from __future__ import annotations

import asyncio
import functools
from typing import Any

from router.backends import ChatInput, ChatRequest, replay_backend_for
from router.errors import ConfigurationError
from router.sdk.results import RouteResult
from router.sdk.router import Router
from router.settings import RouterSettings


@functools.lru_cache(maxsize=4)
def _cached_default_router(target: str | None, tracking_uri: str) -> Router:
    settings = RouterSettings(tracking_uri=tracking_uri)
    router = Router.load(target, settings=settings)
    try:
        # the embedded default answers from the bundled recorded outcomes
        return router.with_backends(
            [replay_backend_for(tier) for tier in router.tiers],
            [replay_backend_for(peer) for peer in router.model.peer_models] or None,
        )
    except ConfigurationError:
        return router  # decide() still works; route() says which backends are missing


def default_router() -> Router:
    """The default router (``CASCADE_DEFAULT_ROUTER`` or ``@champion``, else the bundled one),
    answering from the bundled recorded outcomes; loaded once per setting."""
    settings = RouterSettings()
    return _cached_default_router(settings.default_router, settings.tracking_uri)


def route(step: str, input: ChatInput | ChatRequest, **options: Any) -> RouteResult:
    """Route one step with the default router; ``options`` as :meth:`Router.route` takes them
    (``tools``, ``response_format``, ``target``, any request field)."""
    return default_router().route(step, input, **options)


async def aroute(step: str, input: ChatInput | ChatRequest, **options: Any) -> RouteResult:
    """Async twin of :func:`route`."""
    router = await asyncio.to_thread(default_router)
    return await router.aroute(step, input, **options)
