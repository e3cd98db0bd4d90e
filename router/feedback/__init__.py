"""Production feedback: the store of routed requests and their labels, and calibration drift."""

from __future__ import annotations

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
    "FeedbackRecord",
    "FeedbackStore",
    "RequestRecord",
    "StepDrift",
    "calibration_drift",
    "drift_metrics",
]
