"""The production check of certified targets, over labels stored in a real SQLite feedback store."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from router.feedback import (
    CertificateMonitor,
    FeedbackStore,
    RequestRecord,
    certificate_metrics,
    certificate_status,
)
from router.policy import CascadePolicy, Target
from tests.router.policy.test_certify import synthetic_policy_data

SMALL, TOP = "s", "f"


@pytest.fixture(scope="module")
def policy() -> CascadePolicy:
    return CascadePolicy(
        (SMALL, TOP),
        np.array([1.0]),
        target=Target(quality_ratio=0.9),
        table=False,
    ).fit(*synthetic_policy_data(1200))


def serve(store: FeedbackStore, n: int, *, quality: float, top_share: float, seed: int, target):
    """Record ``n`` requests of step "intent" and their labels: each answer is accepted with
    probability ``quality`` and answered by the top tier with probability ``top_share``."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        rid = f"{seed}-{i}"
        top = bool(rng.random() < top_share)
        store.record_request(
            RequestRecord(
                request_id=rid,
                step="intent",
                input_text=f"q{rid}",
                messages=[{"role": "user", "content": f"q{rid}"}],
                target=target,
                router_version="7",
                tier=TOP if top else SMALL,
                path="small→escalated→frontier" if top else "small→verified",
                p_accept=0.5,
                probabilities={SMALL: 0.5, TOP: 0.8},
                answers={},
                answer="x",
                cost_usd=0.0051 if top else 0.0001,
                latency_s=0.1,
            )
        )
        store.add_feedback(rid, accepted=bool(rng.random() < quality))


def test_traffic_like_calibration_holds_and_a_shift_is_flagged(policy, tmp_path: Path) -> None:
    cert = policy.certificate("intent")
    assert cert is not None
    promised = cert.promised()["quality_ratio"]
    assert promised == pytest.approx(0.9 * cert.frontier_quality)
    with FeedbackStore(f"sqlite:///{tmp_path / 'a.db'}") as store:
        # answers as good as the certified point's calibration estimate: no flag
        good = cert.estimate["quality_ratio"] * cert.frontier_quality
        serve(store, 400, quality=good, top_share=0.3, seed=1, target=str(policy.target))
        (status,) = certificate_status(store.labelled(), policy, TOP, version="7")
        assert status.step == "intent" and status.constraint == "quality_ratio"
        assert status.n == 400 and not status.flagged
        assert status.lower <= status.realised <= status.upper
        # the traffic shifts: answers accepted far less often than promised
        serve(store, 600, quality=promised - 0.2, top_share=0.3, seed=2, target=str(policy.target))
        (status,) = certificate_status(store.labelled(), policy, TOP, version="7")
        assert status.flagged and status.evidence >= 1 / 0.05
        # another version's labels are not this router's
        assert certificate_status(store.labelled(), policy, TOP, version="8") == []
    metrics = certificate_metrics([status])
    assert metrics["certificate.intent.quality_ratio.flagged"] == 1.0
    assert metrics["certificate.any_flagged"] == 1.0


def test_a_share_target_served_per_request_is_checked_on_its_own(policy, tmp_path: Path) -> None:
    with FeedbackStore(f"sqlite:///{tmp_path / 'b.db'}") as store:
        serve(store, 500, quality=0.7, top_share=0.6, seed=3, target="share=0.3")
        statuses = certificate_status(store.labelled(), policy, TOP, version="7")
    (status,) = statuses
    assert status.target == "share=0.3" and status.constraint == "max_frontier_share"
    assert status.promised == pytest.approx(0.3)
    assert status.flagged and status.lower > 0.3


def test_uncertified_or_unknown_targets_are_not_monitored(policy) -> None:
    old = policy.to_dict()
    old.pop("certification")
    legacy = CascadePolicy.from_dict(old, policy.calibration_arrays())
    assert CertificateMonitor(legacy, TOP).observe("intent", "quality=0.9", TOP, 0.1, True) == []
    monitor = CertificateMonitor(policy, TOP)
    assert monitor.observe("intent", "quality=0.9999", TOP, 0.1, True) == []  # not certifiable
    assert monitor.observe("intent", "quality=0.85", TOP, 0.1, True)[0].n == 1
