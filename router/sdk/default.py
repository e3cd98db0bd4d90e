"""The module-level ``route()``: the default router answering from the bundled outcomes."""

from __future__ import annotations

import asyncio
import functools

from router.backends import replay_backend_for
from router.errors import ConfigurationError
from router.policy import Target
from router.sdk.results import ChatInput, RouteResult
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


def route(
    step: str, input: ChatInput, target: Target | str | None = None, max_tokens: int | None = None
) -> RouteResult:
    """Route one step with the default router (``CASCADE_DEFAULT_ROUTER`` or ``@champion``)."""
    settings = RouterSettings()
    router = _cached_default_router(settings.default_router, settings.tracking_uri)
    return router.route(step, input, target=target, max_tokens=max_tokens)


async def aroute(
    step: str, input: ChatInput, target: Target | str | None = None, max_tokens: int | None = None
) -> RouteResult:
    """Async twin of :func:`route`."""
    settings = RouterSettings()
    router = await asyncio.to_thread(
        _cached_default_router, settings.default_router, settings.tracking_uri
    )
    return await router.aroute(step, input, target=target, max_tokens=max_tokens)
