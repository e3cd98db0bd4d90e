"""Prometheus metrics of one service instance (own registry: no process-global state)."""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from router.feedback.certified import CertificateStatus
from router.sdk import Decision, RouteResult

LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)
PROBABILITY_BUCKETS = tuple(i / 10 for i in range(1, 11))


def first_p_accept(result: RouteResult) -> float:
    """The pre-answer probability that the first tier's answer is accepted."""
    return float(next(iter(result.probabilities.values()), float("nan")))


class ServiceMetrics:
    """Requests by step, path and tier; escalations; refused answers; p_accept; latencies;
    cost; errors."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "cascade_requests",
            "Answered chat requests by step kind, cascade path and answering tier",
            ["step", "path", "tier"],
            registry=r,
        )
        self.decisions = Counter(
            "cascade_decisions", "Decisions served by /v1/route", ["step", "action"], registry=r
        )
        self.escalations = Counter(
            "cascade_escalations",
            "Chat requests answered above the first tier they called",
            ["step"],
            registry=r,
        )
        self.escalation_rate = Gauge(
            "cascade_escalation_rate",
            "Share of chat requests answered above the first tier (since start)",
            ["step"],
            registry=r,
        )
        self.p_accept = Histogram(
            "cascade_p_accept",
            "Pre-answer probability that the small tier's answer is accepted",
            ["step"],
            buckets=PROBABILITY_BUCKETS,
            registry=r,
        )
        self.router_latency = Histogram(
            "cascade_router_latency_seconds",
            "Time spent deciding (embedding + boosters), per request",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.request_latency = Histogram(
            "cascade_request_latency_seconds",
            "End-to-end latency per request",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.invalid = Counter(
            "cascade_invalid_answers",
            "Answers the validator refused (a tool call or JSON that does not fit the request), "
            "by step kind and tier",
            ["step", "tier"],
            registry=r,
        )
        self.cost = Counter("cascade_cost_usd", "Model spend in USD by tier", ["tier"], registry=r)
        self.upstream_errors = Counter(
            "cascade_upstream_errors",
            "Failed upstream calls by tier and kind (timeout, unavailable, error)",
            ["tier", "kind"],
            registry=r,
        )
        self.http_errors = Counter(
            "cascade_http_errors",
            "Error responses by status and code",
            ["status", "code"],
            registry=r,
        )
        self.batch_size = Histogram(
            "cascade_decision_batch_size",
            "Size of the decision micro-batches of /v1/route",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
            registry=r,
        )
        self.in_flight = Gauge("cascade_in_flight", "Requests being served", registry=r)
        self.router_version = Gauge(
            "cascade_router_info",
            "The router version being served (value 1)",
            ["version"],
            registry=r,
        )
        self.reloads = Counter(
            "cascade_router_reloads",
            "Hot reloads by outcome (loaded, refused)",
            ["outcome"],
            registry=r,
        )
        self.feedback = Counter(
            "cascade_feedback", "Feedback labels stored", ["accepted"], registry=r
        )
        labels = ["step", "target", "constraint"]
        self.certificate_lower = Gauge(
            "cascade_certificate_realised_lower",
            "Anytime-valid lower end of the realised mean of a certified constraint (quality: "
            "score of the returned answer; share: top-tier answers; cost: USD per request)",
            labels,
            registry=r,
        )
        self.certificate_upper = Gauge(
            "cascade_certificate_realised_upper",
            "Anytime-valid upper end of the realised mean of a certified constraint",
            labels,
            registry=r,
        )
        self.certificate_promised = Gauge(
            "cascade_certificate_promised",
            "What the certificate promises for that mean (quality: ratio × the top tier's "
            "calibration quality)",
            labels,
            registry=r,
        )
        self.certificate_labels = Gauge(
            "cascade_certificate_labels", "Labels the check has read", labels, registry=r
        )
        self.certificate_violated = Gauge(
            "cascade_certificate_violated",
            "1 when the certified target no longer holds on the labelled traffic (retrain)",
            labels,
            registry=r,
        )
        self._totals: dict[str, list[int]] = {}

    def observe_route(self, result: RouteResult) -> None:
        """Count one answered chat request."""
        self.requests.labels(result.step, result.path, result.tier).inc()
        for tier in result.invalid:
            self.invalid.labels(result.step, tier).inc()
        for step in result.steps:
            if step.cost_usd:
                self.cost.labels(step.tier).inc(step.cost_usd)
        if result.probabilities:
            self.p_accept.labels(result.step).observe(first_p_accept(result))
        called = [s for s in result.steps if s.action != "skipped"]
        escalated = bool(called) and called[0].tier != result.tier
        if escalated:
            self.escalations.labels(result.step).inc()
        total = self._totals.setdefault(result.step, [0, 0])
        total[0] += 1
        total[1] += int(escalated)
        self.escalation_rate.labels(result.step).set(total[1] / total[0])
        self.router_latency.labels("chat").observe(result.router_latency_s)

    def observe_decision(self, decision: Decision) -> None:
        """Count one decision of /v1/route."""
        self.decisions.labels(decision.step, decision.action).inc()
        self.p_accept.labels(decision.step).observe(decision.p_accept)

    def set_certificates(self, statuses: Sequence[CertificateStatus]) -> None:
        """Export the production check of the certified targets (router.feedback.certified)."""
        for s in statuses:
            key = (s.step, s.target, s.constraint)
            self.certificate_lower.labels(*key).set(s.lower)
            self.certificate_upper.labels(*key).set(s.upper)
            self.certificate_promised.labels(*key).set(s.promised)
            self.certificate_labels.labels(*key).set(s.n)
            self.certificate_violated.labels(*key).set(float(s.flagged))

    def set_version(self, old: str | None, new: str) -> None:
        if old is not None:
            self.router_version.remove(old)
        self.router_version.labels(new).set(1)

    def exposition(self) -> bytes:
        """The text format Prometheus scrapes."""
        return generate_latest(self.registry)
