"""Calibration drift: the router's predicted acceptance against the acceptance observed in feedback.

For every labelled request the router recorded, before any answer, P(tier accepted) for each
tier (``probabilities``); the label says whether the returned tier's answer was accepted.  Per
step, over a sliding window of the latest ``window`` labelled requests, drift is

    |mean predicted P(returned tier accepted) − observed acceptance rate|

and a step is flagged when that gap exceeds ``threshold`` on at least ``min_labels`` labels.
A calibrated router keeps the gap near zero whatever its routing does; a shift in the traffic
or in the models behind the tiers moves it.  ``cascade-router retrain --if-drifted`` uses the
flag as its trigger; ``cascade-router versions`` and ``cascade-router drift`` show it; the
sidecar can export :func:`drift_metrics` as gauges.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

logger = logging.getLogger(__name__)

__all__ = ["StepDrift", "calibration_drift", "drift_metrics"]


@dataclass(frozen=True)
class StepDrift:
    """Predicted against observed acceptance of one step over its latest labels."""

    step: str
    n: int
    predicted: float
    observed: float
    gap: float
    flagged: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _predicted(row: Any) -> float:
    if hasattr(row, "predicted"):  # already read out (training.feedback_window.read_index)
        return float(row.predicted)
    probs = row.probabilities if isinstance(row.probabilities, dict) else {}
    value = probs.get(row.tier)
    if value is None:
        value = row.p_accept
    return float(value)


def calibration_drift(
    labelled: pd.DataFrame,
    window: int = 500,
    threshold: float = 0.1,
    min_labels: int = 50,
) -> list[StepDrift]:
    """Per-step drift over the latest ``window`` labels of each step (see the module docstring).

    ``labelled`` is :meth:`router.feedback.FeedbackStore.labelled` output (or any frame with
    ``step``, ``accepted``, ``labelled_at`` and a ``predicted`` column of the recorded
    P(answering tier accepted)).  Steps are sorted by name; a flagged step is also logged as a
    warning.
    """
    if labelled.empty:
        return []
    frame = labelled.sort_values("labelled_at", kind="stable")
    out: list[StepDrift] = []
    for step, group in frame.groupby("step", sort=True, observed=True):
        recent = group.tail(window)
        predicted = np.array([_predicted(r) for r in recent.itertuples(index=False)])
        finite = np.isfinite(predicted)
        if not finite.any():
            continue
        observed = recent["accepted"].to_numpy(dtype=float)[finite]
        p_mean, o_mean = float(predicted[finite].mean()), float(observed.mean())
        gap = abs(p_mean - o_mean)
        n = int(finite.sum())
        flagged = n >= min_labels and gap > threshold
        if flagged:
            logger.warning(
                "calibration drift on step %r: predicted %.3f, observed %.3f over %d labels",
                step,
                p_mean,
                o_mean,
                n,
            )
        out.append(StepDrift(str(step), n, p_mean, o_mean, gap, flagged))
    return out


def drift_metrics(drift: list[StepDrift]) -> dict[str, float]:
    """Flat metric names: ``drift.<step>.gap`` / ``.predicted`` / ``.observed`` / ``.flagged``."""
    metrics: dict[str, float] = {}
    for d in drift:
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in d.step) or "default"
        for name in ("gap", "predicted", "observed"):
            value = float(getattr(d, name))
            if math.isfinite(value):
                metrics[f"drift.{safe}.{name}"] = value
        metrics[f"drift.{safe}.flagged"] = float(d.flagged)
        metrics[f"drift.{safe}.n"] = float(d.n)
    metrics["drift.any_flagged"] = float(any(d.flagged for d in drift))
    return metrics
