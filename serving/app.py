"""The sidecar: an OpenAI-compatible cascade endpoint over :mod:`router` (FastAPI on uvicorn).

Endpoints: ``POST /v1/chat/completions`` (JSON or SSE streaming), ``GET /v1/models``,
``POST /v1/route`` (decision only), ``POST /v1/feedback``, ``GET /healthz``, ``GET /readyz``,
``GET /metrics``.  Everything but the two health endpoints needs a bearer key when keys are
configured.  See ``serving/settings.py`` for the configuration.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hmac
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from router.backends import ChatBackend, Completion, Messages, SamplingBackend, input_text
from router.errors import (
    BackendError,
    BackendTimeoutError,
    BackendUnavailableError,
    CascadeRouterError,
    ConfigurationError,
)
from router.sdk import Decision, RouteResult, json_safe
from serving.batching import DecisionBatcher
from serving.errors import APIError, unauthorized
from serving.holder import RouterHolder, Served, upstream_urls
from serving.logs import request_id_var
from serving.metrics import ServiceMetrics, first_p_accept
from serving.protocol import (
    MODEL_PREFIX,
    CascadeOptions,
    ChatCompletionRequest,
    FeedbackRequest,
    RouteRequest,
    chat_completion_body,
    parse_body,
    select_policy,
    token_usage,
)
from serving.settings import ServiceSettings

logger = logging.getLogger("cascade.serving")

HEALTH_PATHS = frozenset({"/healthz", "/readyz"})


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

    def complete(self, messages: Messages, *, max_tokens: int | None = None) -> Completion:
        try:
            return self.inner.complete(messages, max_tokens=max_tokens)
        except BackendError as exc:
            self._count(exc)
            raise

    async def acomplete(self, messages: Messages, *, max_tokens: int | None = None) -> Completion:
        try:
            return await self.inner.acomplete(messages, max_tokens=max_tokens)
        except BackendError as exc:
            self._count(exc)
            raise

    def _sampler(self) -> SamplingBackend:
        if not isinstance(self.inner, SamplingBackend):
            raise ConfigurationError(f"the backend of {self.tier} cannot draw extra samples")
        return self.inner

    def sample(
        self, messages: Messages, k: int, temperature: float, *, max_tokens: int | None = None
    ) -> list[Completion]:
        try:
            return self._sampler().sample(messages, k, temperature, max_tokens=max_tokens)
        except BackendError as exc:
            self._count(exc)
            raise

    async def asample(
        self, messages: Messages, k: int, temperature: float, *, max_tokens: int | None = None
    ) -> list[Completion]:
        try:
            return await self._sampler().asample(messages, k, temperature, max_tokens=max_tokens)
        except BackendError as exc:
            self._count(exc)
            raise


class Admission:
    """Counts requests in flight; beyond ``limit`` the service answers 503 at once."""

    def __init__(self, limit: int, metrics: ServiceMetrics) -> None:
        self.limit, self.metrics, self.in_flight = limit, metrics, 0

    @contextlib.contextmanager
    def slot(self) -> Any:
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


class AccessLog:
    """ASGI middleware: one JSON log line and one latency observation per request.

    Plain ASGI rather than Starlette's ``BaseHTTPMiddleware``, whose per-request task group and
    memory streams cost more CPU than a routing decision.  The latency runs to the last byte
    sent, streams included.
    """

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        token = request_id_var.set(None)
        seen: dict[str, Any] = {"status": 500, "request_id": None}

        async def send_and_note(message: Message) -> None:
            if message["type"] == "http.response.start":
                seen["status"] = message["status"]
                for name, value in message.get("headers", ()):
                    if name == b"x-cascade-request-id":
                        seen["request_id"] = value.decode("latin-1")
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            elapsed = time.perf_counter() - started
            path: str = scope["path"]
            if path.startswith("/v1/"):
                self.metrics.request_latency.labels(path.removeprefix("/v1/")).observe(elapsed)
            if path not in HEALTH_PATHS and path != "/metrics":
                logger.info(
                    "%s %s %s",
                    scope["method"],
                    path,
                    seen["status"],
                    extra={
                        "request_id": seen["request_id"],
                        "status": seen["status"],
                        "latency_ms": round(elapsed * 1000, 2),
                    },
                )
            request_id_var.reset(token)


class Service:
    """The state of one running service: settings, router holder, store, batcher, metrics."""

    def __init__(self, settings: ServiceSettings, store: Any = None) -> None:
        self.settings = settings
        self.metrics = ServiceMetrics()
        self.holder = RouterHolder(
            settings,
            on_swap=self.metrics.set_version,
            on_reload=lambda outcome: self.metrics.reloads.labels(outcome).inc(),
            wrap=lambda tier, backend: CountingBackend(tier, backend, self.metrics),
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
        requests another version served are left to that version's check)."""
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
        await asyncio.to_thread(self.holder.load_initial)
        await asyncio.to_thread(lambda: self.store)
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

    # ---------------------------------------------------------------- guards
    def authorize(self, request: Request) -> None:
        if not self._keys:
            return
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        presented = token.strip().encode()
        valid = False
        for key in self._keys:  # compare with every key: time does not depend on which matched
            valid |= hmac.compare_digest(presented, key)
        if scheme.lower() != "bearer" or not valid:
            raise unauthorized()

    async def read_body(self, request: Request) -> bytes:
        limit = self.settings.max_body_bytes
        length = request.headers.get("content-length")
        too_big = APIError(
            413,
            f"The request body is larger than the limit of {limit} bytes.",
            "invalid_request_error",
            "request_too_large",
        )
        if length is not None and length.isdigit() and int(length) > limit:
            raise too_big
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise too_big
            chunks.append(chunk)
        return b"".join(chunks)


def _new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def _decision_path(decision: Decision, roles: tuple[str, ...]) -> str:
    small, nxt = roles[0], roles[1]
    return {
        "call": small,
        "skip": f"skipped→{nxt}",
        "accept": f"{small}→verified",
        "escalate": f"{small}→escalated→{nxt}",
    }[decision.action]


def _cascade_headers(
    request_id: str, tier: str, path: str, p_accept: float, version: str
) -> dict[str, str]:
    # header values must be latin-1: the arrows become ASCII
    return {
        "x-cascade-request-id": request_id,
        "x-cascade-tier": tier,
        "x-cascade-path": path.replace("→", ">"),
        "x-cascade-p-accept": f"{p_accept:.4f}",
        "x-cascade-router-version": version,
    }


def create_app(settings: ServiceSettings | None = None, store: Any = None) -> FastAPI:
    """The FastAPI application (``store``: a feedback store; default from the settings)."""
    settings = settings or ServiceSettings.load()
    service = Service(settings, store)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await service.start()
        try:
            yield
        finally:
            await service.stop()

    app = FastAPI(
        title="cascade-router sidecar",
        description="OpenAI-compatible cascade endpoint",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.service = service

    # ------------------------------------------------------------------ errors
    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError) -> JSONResponse:
        service.metrics.http_errors.labels(str(exc.status), exc.code or exc.type).inc()
        rid = request_id_var.get()
        return exc.response({"x-cascade-request-id": rid} if rid else None)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        message = (
            f"No endpoint {request.method} {request.url.path}"
            if exc.status_code in (404, 405)
            else str(exc.detail)
        )
        return await _api_error(
            request, APIError(exc.status_code, message, "invalid_request_error", code)
        )

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return await _api_error(
            request, APIError(400, str(exc.errors()[0]["msg"]), code="invalid_value")
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unexpected error on %s", request.url.path)
        return await _api_error(
            request,
            APIError(500, "Internal error; see the service log.", "server_error", "internal_error"),
        )

    # ------------------------------------------------------------------ middleware
    app.add_middleware(AccessLog, metrics=service.metrics)

    # ------------------------------------------------------------------ health
    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        if not service.holder.loaded:
            return JSONResponse({"status": "loading"}, status_code=503)
        served = service.holder.current
        checks = await _probe_upstreams(service, served)
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

    @app.get("/metrics")
    async def metrics(request: Request) -> Response:
        service.authorize(request)
        return Response(service.metrics.exposition(), media_type=service.metrics.content_type)

    # ------------------------------------------------------------------ OpenAI API
    @app.get("/v1/models")
    async def models(request: Request) -> dict[str, Any]:
        service.authorize(request)
        served = service.holder.current
        created = int(time.time())
        steps = list(getattr(served.router.model.steps_, "steps", ()))
        names = [MODEL_PREFIX] + [f"{MODEL_PREFIX}:{s}" for s in steps]
        return {
            "object": "list",
            "data": [
                {"id": n, "object": "model", "created": created, "owned_by": "cascade-router"}
                for n in names
            ],
        }

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        request_id = _new_id("chatcmpl")
        request_id_var.set(request_id)
        service.authorize(request)
        with service.admission.slot():
            body = parse_body(await service.read_body(request), ChatCompletionRequest)
            policy = select_policy(body.model, body.cascade, settings.default_step)
            messages = body.chat_messages()
            served = service.holder.current  # one version for the whole request
            result = await _run_cascade(
                service, served, policy.step, messages, policy.target, body.token_limit()
            )
            service.metrics.observe_route(result)
            await asyncio.to_thread(_record, service, request_id, messages, result, served)
        answered_by = served.backends[result.tier].model
        headers = _cascade_headers(
            request_id, result.tier, result.path, first_p_accept(result), served.version
        )
        if body.stream:
            include_usage = bool((body.stream_options or {}).get("include_usage"))
            return StreamingResponse(
                _sse_chunks(request_id, answered_by, result, include_usage),
                media_type="text/event-stream",
                headers={**headers, "Cache-Control": "no-cache"},
            )
        return JSONResponse(_completion_body(request_id, answered_by, result), headers=headers)

    @app.post("/v1/route")
    async def route(request: Request) -> Response:
        request_id = _new_id("route")
        request_id_var.set(request_id)
        service.authorize(request)
        with service.admission.slot(), service.batcher.expecting() as announcement:
            body = parse_body(await service.read_body(request), RouteRequest)
            policy = select_policy(
                body.model,
                CascadeOptions(step=body.step, target=body.target),
                settings.default_step,
            )
            served = service.holder.current
            started = time.perf_counter()
            try:
                decision = await service.batcher.decide(
                    served.router,
                    policy.step,
                    body.text_input(),
                    body.answer,
                    policy.target,
                    announcement,
                )
            except ConfigurationError as exc:
                raise APIError(400, str(exc), code=_error_code(exc)) from exc
            service.metrics.router_latency.labels("route").observe(time.perf_counter() - started)
            service.metrics.observe_decision(decision)
        path = _decision_path(decision, served.router.roles)
        payload = {
            "id": request_id,
            "object": "cascade.decision",
            **decision.to_json_dict(),
            "path": path,
            "router_version": served.version,
            "target": str(policy.target) if policy.target else None,
        }
        return JSONResponse(
            payload,
            headers=_cascade_headers(
                request_id, decision.tier, path, decision.p_accept, served.version
            ),
        )

    @app.post("/v1/feedback")
    async def feedback(request: Request) -> Response:
        service.authorize(request)
        body = parse_body(await service.read_body(request), FeedbackRequest)
        request_id_var.set(body.request_id)
        try:
            record = await asyncio.to_thread(
                service.store.add_feedback, body.request_id, body.accepted, body.score, body.source
            )
        except CascadeRouterError as exc:
            if type(exc).__name__ == "UnknownRequestError":
                raise APIError(
                    404, str(exc), "invalid_request_error", "request_not_found", "request_id"
                ) from exc
            raise
        service.metrics.feedback.labels(str(bool(body.accepted)).lower()).inc()
        await asyncio.to_thread(
            service.observe_label, record.request_id, record.accepted, record.score
        )
        return JSONResponse(
            {
                "object": "cascade.feedback",
                "request_id": record.request_id,
                "accepted": record.accepted,
                "score": record.score,
                "source": record.source,
                "stored": True,
            }
        )

    return app


async def _run_cascade(
    service: Service,
    served: Served,
    step: str,
    messages: Messages,
    target: Any,
    max_tokens: int | None,
) -> RouteResult:
    settings = service.settings
    try:
        return await asyncio.wait_for(
            served.router.aroute(
                step,
                messages,
                target,
                max_tokens,
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
    except BackendError as exc:
        raise APIError(
            502, f"The top tier failed: {exc}", "server_error", "upstream_error"
        ) from exc
    except ConfigurationError as exc:
        raise APIError(400, str(exc), code=_error_code(exc)) from exc


def _record(
    service: Service, request_id: str, messages: Messages, result: RouteResult, served: Served
) -> None:
    from router.feedback import RequestRecord

    service.store.record_request(
        RequestRecord(
            request_id=request_id,
            step=result.step,
            input_text=input_text(messages),
            messages=[dict(m) for m in messages],
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
        )
    )


def _error_code(exc: ConfigurationError) -> str:
    """The error code of a refused request: a target the router cannot certify has its own."""
    return str(getattr(exc, "api_code", "invalid_value"))


def _cascade_summary(result: RouteResult, version: str) -> dict[str, Any]:
    return json_safe(
        {
            "tier": result.tier,
            "path": result.path,
            "step": result.step,
            "target": result.target,
            "certificate": result.certificate,
            "router_version": version,
            "cost_usd": result.cost_usd,
            "router_latency_s": result.router_latency_s,
            "probabilities": result.probabilities,
            "failures": result.failures,
        }
    )


def _completion_body(request_id: str, model: str, result: RouteResult) -> dict[str, Any]:
    body = chat_completion_body(
        request_id, model, result.answer, result.input_tokens, result.output_tokens
    )
    body["cascade"] = _cascade_summary(result, result.router_version or "")
    return body


def _pieces(text: str, size: int = 24) -> list[str]:
    """The answer in small pieces at word boundaries, for streaming."""
    pieces, current = [], ""
    for word in text.split(" "):
        candidate = f"{current} {word}" if current else word
        if len(candidate) > size and current:
            pieces.append(current + " ")
            current = word
        else:
            current = candidate
    if current:
        pieces.append(current)
    return pieces


async def _sse_chunks(
    request_id: str, model: str, result: RouteResult, include_usage: bool
) -> AsyncIterator[bytes]:
    """The answer as OpenAI ``chat.completion.chunk`` events, then ``data: [DONE]``.

    The cascade must read the whole small answer to verify it, so the stream starts once the
    answer is final; it is then sent in pieces like any OpenAI stream.
    """
    created = int(time.time())

    def event(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> bytes:
        chunk = {
            "id": request_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
            **extra,
        }
        return f"data: {json.dumps(chunk)}\n\n".encode()

    yield event({"role": "assistant", "content": ""})
    for piece in _pieces(result.answer):
        yield event({"content": piece})
    yield event({}, "stop")
    if include_usage:
        usage = {
            "id": request_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [],
            "usage": token_usage(result.input_tokens, result.output_tokens),
        }
        yield f"data: {json.dumps(usage)}\n\n".encode()
    yield b"data: [DONE]\n\n"


async def _probe_upstreams(service: Service, served: Served) -> dict[str, str]:
    """``ok`` or the reason, per tier: an OpenAI-compatible upstream must answer GET /models."""
    checks = {tier: "ok" for tier in served.router.tiers}
    assert service._http is not None
    client = service._http

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
