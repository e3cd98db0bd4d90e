"""Production feedback: the store of routed requests and their labels, calibration drift, and
whether the certified targets still hold."""

from __future__ import annotations

from router.feedback.certified import (
    CertificateMonitor,
    CertificateStatus,
    certificate_metrics,
    certificate_status,
)
from router.feedback.drift import StepDrift, calibration_drift, drift_metrics
from router.feedback.store import (
    LABELLED_COLUMNS,
    REQUEST_COLUMNS,
    FeedbackRecord,
    FeedbackStore,
    RequestRecord,
)

__all__ = [
    "LABELLED_COLUMNS",
    "REQUEST_COLUMNS",
    "CertificateMonitor",
    "CertificateStatus",
    "FeedbackRecord",
    "FeedbackStore",
    "RequestRecord",
    "StepDrift",
    "calibration_drift",
    "certificate_metrics",
    "certificate_status",
    "drift_metrics",
]
