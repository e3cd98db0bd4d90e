"""The router being served, its upstream backends, and the hot reload of a registry alias.

A request takes one :class:`Served` snapshot when it starts and uses it to the end, so a swap
never mixes versions inside a request.  A swap is one attribute assignment: requests that
started before it finish on the old version, later ones get the new one.  A version that fails
to load, has tiers without an upstream, or fails a probe decision is refused: the old one keeps
serving and the refusal is logged and counted.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from router.backends import ChatBackend, OpenAIBackend, make_backend, replay_backend_for
from router.errors import CascadeRouterError, ConfigurationError
from router.registry import ModelRef, alias_version, is_registry_uri, registry_client
from router.sdk import Router
from router.tracing import Tracing
from serving.settings import ServiceSettings

logger = logging.getLogger("cascade.serving")


@dataclass(frozen=True)
class Served:
    """One loaded router with a backend per tier; immutable, swapped as a whole."""

    router: Router
    version: str
    backends: dict[str, ChatBackend]  # tier -> backend
    peers: dict[str, ChatBackend]  # peer model -> backend (second opinions)


def build_backends(
    tiers: tuple[str, ...] | list[str],
    settings: ServiceSettings,
    peers: tuple[str, ...] | list[str] = (),
    samples: int = 0,
) -> dict[str, ChatBackend]:
    """A backend per tier from ``settings.upstreams`` (replay of bundled outcomes if empty;
    the first tier's then also replays ``samples`` recorded extra samples).

    Raises:
        ConfigurationError: a tier has no upstream, or a spec is invalid.
    """
    names = [*tiers, *peers]
    if not settings.upstreams:
        return {
            name: replay_backend_for(name, samples=samples if name == tiers[0] else 0)
            for name in names
        }
    missing = [t for t in names if t not in settings.upstreams]
    if missing:
        raise ConfigurationError(
            f"no upstream configured for tier(s) or peer(s) {', '.join(missing)} of this router "
            f"(configured: {', '.join(settings.upstreams)})"
        )
    backends: dict[str, ChatBackend] = {}
    top = len(tiers) - 1
    for i, tier in enumerate(names):
        spec = {"kind": "openai", **settings.upstreams[tier]}
        spec.setdefault("model", tier)
        if spec["kind"] == "openai":
            # retries happen in the cascade (top tier) or by escalating (lower tiers)
            spec.setdefault("max_retries", 0)
            spec.setdefault(
                "timeout_s", settings.request_timeout_s if i == top else settings.small_timeout_s
            )
        backends[tier] = make_backend(spec)
    return backends


def watched_alias(uri: str | None, settings: ServiceSettings) -> ModelRef | None:
    """The registry alias the served URI follows (None: a folder, a run or a pinned version)."""
    uri = uri or ModelRef.champion(settings).uri
    if is_registry_uri(uri):
        ref = ModelRef.parse(uri)
        return ref if ref.alias is not None else None
    return None


class RouterHolder:
    """Holds the :class:`Served` router and swaps in new registry versions."""

    def __init__(
        self,
        settings: ServiceSettings,
        on_swap: Callable[[str | None, str], None] | None = None,
        on_reload: Callable[[str], None] | None = None,
        wrap: Callable[[str, ChatBackend], ChatBackend] | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        self.settings = settings
        self.tracing = tracing or Tracing()  # where the routers it loads send spans
        self.on_swap, self.on_reload, self.wrap = on_swap, on_reload, wrap
        self._current: Served | None = None
        self._lock = threading.Lock()  # one load at a time
        self._refused: set[str] = set()
        self.watched = watched_alias(settings.model_uri, settings)

    @property
    def current(self) -> Served:
        served = self._current
        if served is None:
            raise RuntimeError("no router loaded yet")
        return served

    @property
    def loaded(self) -> bool:
        return self._current is not None

    def load_initial(self) -> Served:
        """Load the configured router (the default: @champion, else the bundled one)."""
        router = Router.load(
            self.settings.model_uri, settings=self.settings, tracer_provider=self.tracing
        )
        served = self._prepare(router, router.version or "local")
        self._swap(served)
        return served

    def _prepare(self, router: Router, version: str) -> Served:
        peer_names = tuple(router.model.peer_models)
        everything = build_backends(
            router.tiers, self.settings, peer_names, samples=router.model.samples
        )
        if self.wrap is not None:
            everything = {name: self.wrap(name, b) for name, b in everything.items()}
        backends = {t: everything[t] for t in router.tiers}
        peers = {p: everything[p] for p in peer_names}
        router = router.with_backends(backends, peers=peers or None)
        router.version = version
        router.decide("probe", "Is this router able to decide?")  # refuse a broken version early
        return Served(router, version, backends, peers)

    def _swap(self, served: Served) -> None:
        old = self._current.version if self._current else None
        self._current = served
        if self.on_swap is not None:
            self.on_swap(old, served.version)
        logger.info("serving router version %s", served.version, extra={"version": served.version})

    def registered_version(self) -> str | None:
        """The version the watched alias points at now (None: nothing registered)."""
        if self.watched is None:
            return None
        return alias_version(self.watched, registry_client(self.settings.tracking_uri))

    def check_once(self) -> str:
        """Swap in the alias's version if it moved: ``unchanged``, ``loaded`` or ``refused``."""
        with self._lock:
            version = self.registered_version()
            current = self._current.version if self._current else None
            if version is None or version == current or version in self._refused:
                return "unchanged"
            assert self.watched is not None
            try:
                shared = self._current.router.embedder if self._current else None
                uri = self.watched.at_version(version).uri
                try:
                    router = Router.load(
                        uri,
                        settings=self.settings,
                        embedder=shared,
                        tracer_provider=self.tracing,
                    )
                except ConfigurationError:  # another embedder: load its own
                    router = Router.load(uri, settings=self.settings, tracer_provider=self.tracing)
                served = self._prepare(router, version)
            except (CascadeRouterError, OSError, ValueError) as exc:
                self._refused.add(version)
                logger.error(
                    "refused router version %s (still serving %s): %s",
                    version,
                    current,
                    exc,
                    extra={"version": version},
                )
                if self.on_reload is not None:
                    self.on_reload("refused")
                return "refused"
            self._swap(served)
            if self.on_reload is not None:
                self.on_reload("loaded")
            return "loaded"


def upstream_urls(served: Served) -> dict[str, str]:
    """The base URL of each OpenAI-compatible upstream (for the readiness probe)."""
    return {
        tier: inner.display_url
        for tier, backend in {**served.backends, **served.peers}.items()
        if isinstance(inner := getattr(backend, "inner", backend), OpenAIBackend)
    }
