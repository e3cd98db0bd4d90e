"""Does a certified target still hold in production?  Anytime-valid monitoring from feedback.

A router's certificate says: on traffic from the calibration distribution, the target holds in
expectation (the mean quality of the returned answers is at least ``r`` times the top tier's
calibration quality; at most a share ``s`` of requests call the top tier; a request costs at
most ``c`` on average).  Each labelled request served under a certificate is one more draw of
what it promises, so per step and target the monitor keeps, over every label since the router
version started serving, a betting confidence sequence of the realised mean
(:class:`~router.policy.certify.BettingConfidenceSequence`, what is shown) and a one-sided
betting test of the promise (:class:`~router.policy.certify.BettingTest`, what flags):

* quality: the label's score (its acceptance, 0 or 1, when no score came);
* frontier share: whether the request was answered by the top tier (a cascade that escalated);
* cost: the request's cost, as a share of the certificate's bound ``B``.

Both are anytime-valid, so they may be read after every label.  The test's null is that every
label's expected value given the past keeps the promise (quality at least ``r`` times the top
tier's calibration quality; share and cost at most theirs), even if it moves over time; a step
is **flagged** when the test rejects it on at least ``min_labels`` labels, which happens with
probability at most ``alpha`` over the whole stream while the promise holds.  A flag means the
certificate no longer holds on this traffic: the traffic or the models moved away from the
calibration distribution.  ``cascade-router retrain --if-drifted`` treats it as a
trigger, like calibration drift; the sidecar exports it in ``/metrics`` and
``cascade-router drift`` prints it.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import pandas as pd

from router.errors import CascadeRouterError
from router.policy import Target
from router.policy.certify import BettingConfidenceSequence, BettingTest, Certificate

if TYPE_CHECKING:
    from router.policy import CascadePolicy

__all__ = ["CertificateMonitor", "CertificateStatus", "certificate_metrics", "certificate_status"]

_QUALITY, _SHARE, _COST = "quality_ratio", "max_frontier_share", "max_cost"


@dataclass(frozen=True)
class CertificateStatus:
    """One constraint of one step's certificate, against the labels seen so far."""

    step: str
    target: str
    constraint: str  # quality_ratio | max_frontier_share | max_cost
    n: int
    realised: float  # mean so far, in the constraint's units (score, share, USD)
    lower: float  # the anytime-valid confidence sequence
    upper: float
    promised: float  # what the certificate promises in the same units
    flagged: bool
    evidence: float = 1.0  # the test's capital against the promise (an e-value)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Tracker:
    """The confidence sequences of one (step, target)."""

    def __init__(self, certificate: Certificate, alpha: float) -> None:
        self.certificate = certificate
        self.sequences = {kind: BettingConfidenceSequence(alpha) for kind in certificate.bound}
        promised = certificate.promised()
        self.tests = {
            kind: BettingTest(
                promised[kind] / self.scale(kind), "above" if kind == _QUALITY else "below", alpha
            )
            for kind in certificate.bound
        }

    def scale(self, kind: str) -> float:
        """Values are checked in [0, 1]: a cost as a share of the certificate's bound."""
        bound = self.certificate.cost_bound
        return bound if kind == _COST and bound > 0 else 1.0

    def observe(self, top: bool, cost: float, quality: float) -> None:
        values = {_QUALITY: quality, _SHARE: float(top), _COST: cost / self.scale(_COST)}
        for kind, cs in self.sequences.items():
            cs.update(values[kind])
            self.tests[kind].update(values[kind])


class CertificateMonitor:
    """Per step and target served, the confidence sequences of the certificate's constraints.

    ``policy`` is the served router's policy (None or uncertified: nothing is monitored);
    ``top_tier`` its top tier.  Thread-safe: the sidecar observes labels from its workers.
    """

    def __init__(
        self,
        policy: CascadePolicy | None,
        top_tier: str,
        alpha: float = 0.05,
        min_labels: int = 50,
    ) -> None:
        self.policy, self.top_tier = policy, top_tier
        self.alpha, self.min_labels = alpha, min_labels
        self._trackers: dict[tuple[str, str], _Tracker | None] = {}
        self._lock = threading.Lock()

    def _tracker(self, step: str, target: str) -> _Tracker | None:
        key = (step, target)
        if key not in self._trackers:
            self._trackers[key] = None
            cert = self._certificate(step, target)
            if cert is not None:
                self._trackers[key] = _Tracker(cert, self.alpha)
        return self._trackers[key]

    def _certificate(self, step: str, target: str) -> Certificate | None:
        if self.policy is None or self.policy.certified_ is None:
            return None
        try:
            return self.policy.certificate(step, Target.parse(target) if target else None)
        except CascadeRouterError:  # an unreadable or uncertifiable target was never served
            return None

    def observe(
        self,
        step: str,
        target: str,
        tier: str,
        cost_usd: float,
        accepted: bool,
        score: float | None = None,
    ) -> list[CertificateStatus]:
        """Add one labelled request; the statuses of its (step, target) after it."""
        quality = float(score) if score is not None and math.isfinite(score) else float(accepted)
        with self._lock:
            tracker = self._tracker(str(step), str(target))
            if tracker is None:
                return []
            tracker.observe(tier == self.top_tier, float(cost_usd), min(max(quality, 0.0), 1.0))
            return self._statuses(str(step), str(target), tracker)

    def statuses(self) -> list[CertificateStatus]:
        """Every monitored (step, target, constraint), sorted."""
        with self._lock:
            out = [
                s
                for (step, target), tracker in sorted(self._trackers.items())
                if tracker is not None
                for s in self._statuses(step, target, tracker)
            ]
        return out

    def _statuses(self, step: str, target: str, tracker: _Tracker) -> list[CertificateStatus]:
        promised = tracker.certificate.promised()
        out = []
        for kind, cs in tracker.sequences.items():
            scale = tracker.scale(kind)
            lo, hi = cs.interval
            test = tracker.tests[kind]
            out.append(
                CertificateStatus(
                    step,
                    target,
                    kind,
                    cs.n,
                    cs.mean * scale,
                    lo * scale,
                    hi * scale,
                    promised[kind],
                    cs.n >= self.min_labels and test.alarm,
                    test.evidence,
                )
            )
        return out


def certificate_status(
    labelled: pd.DataFrame,
    policy: CascadePolicy | None,
    top_tier: str,
    *,
    version: str | None = None,
    alpha: float = 0.05,
    min_labels: int = 50,
) -> list[CertificateStatus]:
    """The monitor run over stored labels (:meth:`router.feedback.FeedbackStore.labelled`), in
    the order they were given; only requests served by ``version`` when it is given."""
    monitor = CertificateMonitor(policy, top_tier, alpha, min_labels)
    if labelled.empty:
        return []
    frame = labelled.sort_values("labelled_at", kind="stable")
    if version is not None:
        frame = frame[frame["router_version"].astype(str) == str(version)]
    columns = [frame[c].tolist() for c in ("step", "target", "tier", "cost_usd", "accepted")]
    scores: list[Any] = frame["score"].tolist()
    for (step, target, tier, cost, accepted), score in zip(
        zip(*columns, strict=True), scores, strict=True
    ):
        label = None if score is None or pd.isna(score) else float(score)
        monitor.observe(str(step), str(target), str(tier), float(cost), bool(accepted), label)
    return monitor.statuses()


def certificate_metrics(statuses: Sequence[CertificateStatus]) -> dict[str, float]:
    """Flat metric names: ``certificate.<step>.<constraint>.lower`` / ``.upper`` / ... and
    ``certificate.any_flagged``."""
    metrics: dict[str, float] = {}
    for s in statuses:
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in s.step) or "default"
        prefix = f"certificate.{safe}.{s.constraint}"
        for name in ("realised", "lower", "upper", "promised", "evidence"):
            value = float(getattr(s, name))
            if math.isfinite(value):
                metrics[f"{prefix}.{name}"] = value
        metrics[f"{prefix}.n"] = float(s.n)
        metrics[f"{prefix}.flagged"] = float(s.flagged)
    metrics["certificate.any_flagged"] = float(any(s.flagged for s in statuses))
    return metrics
