"""The state of one running sidecar: settings, the router holder, the feedback store, the
decision batcher, metrics, admission control, and the upstream backends wrapped to count their
failures."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hmac
import logging
from collections.abc import Iterator
from typing import Any

import httpx

from router.backends import (
    ChatBackend,
    ChatInput,
    ChatRequest,
    Completion,
    OpenAIBackend,
    SamplingBackend,
    step_text,
)
from router.errors import (
    BackendError,
    BackendRequestError,
    BackendTimeoutError,
    BackendUnavailableError,
    ConfigurationError,
)
from router.sdk import RouteResult, StepTarget
from router.tracing import Tracing
from serving.batching import DecisionBatcher
from serving.errors import APIError, error_code
from serving.holder import RouterHolder, Served, upstream_urls
from serving.metrics import ServiceMetrics, first_p_accept
from serving.settings import ServiceSettings

logger = logging.getLogger("cascade.serving")


class CountingBackend:
    """Wraps a tier's backend to count its failures by kind (timeout, unavailable, error)."""

    def __init__(self, tier: str, inner: ChatBackend, metrics: ServiceMetrics) -> None:
        self.tier, self.inner, self.metrics = tier, inner, metrics
        self.model = inner.model

    def _count(self, exc: BackendError) -> None:
        kind = (
            "timeout"
            if isinstance(exc, BackendTimeoutError)
            else "unavailable"
            if isinstance(exc, BackendUnavailableError)
            else "error"
        )
        self.metrics.upstream_errors.labels(self.tier, kind).inc()
        logger.warning("upstream %s failed (%s): %s", self.tier, kind, exc)

    def complete(
        self, request: ChatRequest | ChatInput, *, max_tokens: int | None = None
    ) -> Completion:
        try:
            return self.inner.complete(request, max_tokens=max_tokens)
        except BackendError as exc:
            self._count(exc)
            raise

    async def acomplete(
        self, request: ChatRequest | ChatInput, *, max_tokens: int | None = None
    ) -> Completion:
        try:
            return await self.inner.acomplete(request, max_tokens=max_tokens)
        except BackendError as exc:
            self._count(exc)
            raise

    async def awarm(self) -> None:
        """Warm the inner backend's HTTP client, when it has one to warm."""
        if isinstance(self.inner, OpenAIBackend):
            await self.inner.awarm()

    def _sampler(self) -> SamplingBackend:
        if not isinstance(self.inner, SamplingBackend):
            raise ConfigurationError(f"the backend of {self.tier} cannot draw extra samples")
        return self.inner

    def sample(
        self,
        request: ChatRequest | ChatInput,
        k: int,
        temperature: float,
        *,
        max_tokens: int | None = None,
    ) -> list[Completion]:
        try:
            return self._sampler().sample(request, k, temperature, max_tokens=max_tokens)
        except BackendError as exc:
            self._count(exc)
            raise

    async def asample(
        self,
        request: ChatRequest | ChatInput,
        k: int,
        temperature: float,
        *,
        max_tokens: int | None = None,
    ) -> list[Completion]:
        try:
            return await self._sampler().asample(request, k, temperature, max_tokens=max_tokens)
        except BackendError as exc:
            self._count(exc)
            raise


class Admission:
    """Counts requests in flight; beyond ``limit`` the service answers 503 at once."""

    def __init__(self, limit: int, metrics: ServiceMetrics) -> None:
        self.limit, self.metrics, self.in_flight = limit, metrics, 0

    @contextlib.contextmanager
    def slot(self) -> Iterator[None]:
        if self.in_flight >= self.limit:
            raise APIError(
                503,
                f"The service is at its limit of {self.limit} concurrent requests; retry shortly.",
                "server_error",
                "overloaded",
                headers={"Retry-After": "1"},
            )
        self.in_flight += 1
        self.metrics.in_flight.set(self.in_flight)
        try:
            yield
        finally:
            self.in_flight -= 1
            self.metrics.in_flight.set(self.in_flight)


class Service:
    """The state of one running service: settings, router holder, store, batcher, metrics."""

    def __init__(
        self, settings: ServiceSettings, store: Any = None, tracing: Tracing | None = None
    ) -> None:
        self.settings = settings
        self.metrics = ServiceMetrics()
        self.tracing = tracing or Tracing(capture_content=settings.trace_content)
        self.holder = RouterHolder(
            settings,
            on_swap=self.metrics.set_version,
            on_reload=lambda outcome: self.metrics.reloads.labels(outcome).inc(),
            wrap=lambda tier, backend: CountingBackend(tier, backend, self.metrics),
            tracing=self.tracing,
        )
        self._store = store
        self.batcher = DecisionBatcher(
            settings.batch_max_wait_ms / 1000.0,
            settings.batch_max_size,
            on_batch=self.metrics.batch_size.observe,
        )
        self.admission = Admission(settings.max_concurrency, self.metrics)
        self._keys = [k.get_secret_value().encode() for k in settings.api_keys]
        self._watch: asyncio.Task[None] | None = None
        self._http: httpx.AsyncClient | None = None
        self._monitor: tuple[str, Any] | None = None  # (router version, CertificateMonitor)

    @property
    def store(self) -> Any:
        if self._store is None:
            from router.feedback import FeedbackStore

            self._store = FeedbackStore(self.settings.feedback_url)
        return self._store

    def observe_label(self, request_id: str, accepted: bool, score: float | None) -> None:
        """Feed a label to the check of the served router's certified targets (labels of
        requests another version served are left to that version's check; blocking)."""
        from router.feedback import CertificateMonitor

        record = self.store.get_request(request_id)
        served = self.holder.current
        if record is None or record.router_version != served.version:
            return
        if self._monitor is None or self._monitor[0] != served.version:
            monitor = CertificateMonitor(
                served.router.model.policy_,
                served.router.tiers[-1],
                self.settings.certificate_alpha,
                self.settings.drift_min_labels,
            )
            self._monitor = (served.version, monitor)
        statuses = self._monitor[1].observe(
            record.step, record.target, record.tier, record.cost_usd, accepted, score
        )
        self.metrics.set_certificates(statuses)

    # ---------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        if not self._keys:
            logger.warning("no API keys configured: every endpoint is open (set CASCADE_API_KEYS)")
        served = await asyncio.to_thread(self.holder.load_initial)
        await asyncio.to_thread(lambda: self.store)
        for backend in {**served.backends, **served.peers}.values():
            if isinstance(backend, CountingBackend):
                await backend.awarm()  # the first request must not import the HTTP client
        # the loaded router, embedder and libraries are long-lived: keep them out of the cyclic
        # collector's scans, whose full passes otherwise stall requests for tens of ms
        gc.collect()
        gc.freeze()
        self.batcher.start()
        self._http = httpx.AsyncClient(timeout=self.settings.readiness_timeout_s)
        if self.settings.reload_interval_s > 0 and self.holder.watched is not None:
            self._watch = asyncio.create_task(self._watch_registry(), name="registry-watch")

    async def stop(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        await self.batcher.stop()
        if self._http is not None:
            await self._http.aclose()
        if self._store is not None:
            await asyncio.to_thread(self._store.close)

    async def _watch_registry(self) -> None:
        while True:
            await asyncio.sleep(self.settings.reload_interval_s)
            try:
                await asyncio.to_thread(self.holder.check_once)
            except Exception:  # the watch must outlive a registry hiccup
                logger.exception("registry check failed; will retry")

    def authorized(self, token: str | None) -> bool:
        """Whether ``token`` is one of the configured keys (always, when none is configured).

        Every key is compared, so the time taken does not say which one matched."""
        if not self._keys:
            return True
        presented = (token or "").strip().encode()
        valid = False
        for key in self._keys:
            valid |= hmac.compare_digest(presented, key)
        return valid and bool(presented)

    # ---------------------------------------------------------------- the work
    async def answer(self, served: Served, choice: StepTarget, request: ChatRequest) -> RouteResult:
        """Route ``request`` through the served router within the request deadline.

        Raises:
            APIError: 504 past the deadline or when the top tier times out, 502 when it fails,
            400 when it refuses the request as invalid or the request cannot be routed.
        """
        settings = self.settings
        try:
            return await asyncio.wait_for(
                served.router.aroute(
                    choice.step,
                    request,
                    target=choice.target,
                    retries=settings.upstream_retries,
                    retry_backoff_s=settings.retry_backoff_s,
                ),
                timeout=settings.request_timeout_s,
            )
        except TimeoutError as exc:
            raise APIError(
                504,
                f"No answer within the deadline of {settings.request_timeout_s:g} s.",
                "server_error",
                "deadline_exceeded",
            ) from exc
        except BackendTimeoutError as exc:
            raise APIError(
                504, f"The top tier timed out: {exc}", "server_error", "upstream_timeout"
            ) from exc
        except BackendRequestError as exc:
            raise APIError(
                400, f"The top tier refused the request: {exc}", code="upstream_refused"
            ) from exc
        except BackendError as exc:
            raise APIError(
                502, f"The top tier failed: {exc}", "server_error", "upstream_error"
            ) from exc
        except ConfigurationError as exc:
            raise APIError(400, str(exc), code=error_code(exc)) from exc

    def record(
        self, request_id: str, request: ChatRequest, result: RouteResult, served: Served
    ) -> None:
        """Store the request and how it was answered in the feedback store (blocking)."""
        from router.feedback import RequestRecord

        self.store.record_request(
            RequestRecord(
                request_id=request_id,
                step=result.step,
                input_text=step_text(request),
                messages=request.wire_messages(),
                target=result.target,
                router_version=served.version,
                tier=result.tier,
                path=result.path,
                p_accept=first_p_accept(result),
                probabilities=dict(result.probabilities),
                answers=dict(result.answers),
                answer=result.answer,
                cost_usd=result.cost_usd,
                latency_s=result.latency_s,
                validity=dict(result.validity),
            )
        )

    async def probe_upstreams(self, served: Served) -> dict[str, str]:
        """``ok`` or the reason, per tier: an OpenAI-compatible upstream must answer GET /models."""
        checks = {tier: "ok" for tier in served.router.tiers}
        client = self._http
        if client is None:
            raise RuntimeError("the service is not started")

        async def probe(tier: str, url: str) -> None:
            try:
                response = await client.get(f"{url.rstrip('/')}/models")
                # 401/403 still proves the server is up (upstream keys are not sent to probes)
                if response.status_code >= 500:
                    checks[tier] = f"HTTP {response.status_code}"
            except httpx.HTTPError as exc:
                checks[tier] = f"unreachable: {type(exc).__name__}"

        await asyncio.gather(*(probe(t, u) for t, u in upstream_urls(served).items()))
        return checks
