"""Monotone maps from raw booster scores to probabilities: isotonic or sigmoid (Platt)."""

from __future__ import annotations

from typing import Any

import numpy as np

from router.errors import ConfigurationError, NotFittedError


class ProbabilityCalibrator:
    """Monotone map from raw booster scores to probabilities (isotonic, or sigmoid fallback)."""

    def __init__(self, method: str = "isotonic") -> None:
        if method not in {"isotonic", "sigmoid"}:
            raise ConfigurationError(f"calibration must be 'isotonic' or 'sigmoid', not {method!r}")
        self.method = method

    def fit(self, raw: np.ndarray, y: np.ndarray) -> ProbabilityCalibrator:
        raw = np.asarray(raw, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        if self.method == "isotonic":
            from sklearn.isotonic import IsotonicRegression

            iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(raw, y)
            self.x_ = np.asarray(iso.X_thresholds_, dtype=np.float64)
            self.y_ = np.asarray(iso.y_thresholds_, dtype=np.float64)
            # never return exactly 0 or 1: a calibrated probability is never certain
            eps = 1.0 / (len(y) + 2)
            self.y_ = np.clip(self.y_, eps, 1 - eps)
        else:
            from sklearn.linear_model import LogisticRegression

            lr = LogisticRegression(C=1e6).fit(raw.reshape(-1, 1), y.astype(int))
            self.a_, self.b_ = float(lr.coef_[0, 0]), float(lr.intercept_[0])
        return self

    def transform(self, raw: np.ndarray) -> np.ndarray:
        raw = np.asarray(raw, dtype=np.float64)
        if self.method == "isotonic":
            if not hasattr(self, "x_"):
                raise NotFittedError("calibrator is not fitted")
            return np.interp(raw, self.x_, self.y_)
        if not hasattr(self, "a_"):
            raise NotFittedError("calibrator is not fitted")
        return 1.0 / (1.0 + np.exp(-(self.a_ * raw + self.b_)))

    def to_dict(self) -> dict[str, Any]:
        if self.method == "isotonic":
            return {"method": "isotonic", "x": self.x_.tolist(), "y": self.y_.tolist()}
        return {"method": "sigmoid", "a": self.a_, "b": self.b_}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ProbabilityCalibrator:
        cal = cls(data["method"])
        if cal.method == "isotonic":
            cal.x_ = np.asarray(data["x"], dtype=np.float64)
            cal.y_ = np.asarray(data["y"], dtype=np.float64)
        else:
            cal.a_, cal.b_ = float(data["a"]), float(data["b"])
        return cal
