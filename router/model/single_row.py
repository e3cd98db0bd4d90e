"""LightGBM's prepared single-row prediction: one routing decision without per-call set-up."""

from __future__ import annotations

import ctypes
import threading
from typing import Any

import numpy as np

from router.errors import ConfigurationError


class SingleRowPredictor:
    """LightGBM's single-row fast prediction (``LGBM_BoosterPredictForMatSingleRowFast``).

    ``Booster.predict`` re-parses its parameters and sets up a predictor on every call; for one
    row at a time (a routing decision) the C API's prepared configuration skips all of that.
    Calls are serialised: the prepared configuration holds one row buffer.
    """

    def __init__(self, handle: Any, lib: Any, n_features: int, booster: Any) -> None:
        self._booster = booster  # the prepared configuration points into the booster
        self._handle = handle
        self._lib = lib
        self.n_features = n_features
        self._row = np.zeros(n_features, dtype=np.float64)
        self._out = np.zeros(1, dtype=np.float64)
        self._out_len = ctypes.c_int64(0)
        self._lock = threading.Lock()

    @classmethod
    def create(
        cls, booster: Any, num_iteration: int, num_threads: int
    ) -> SingleRowPredictor | None:
        """A prepared raw-score predictor for ``booster``; None if LightGBM cannot make one."""
        try:
            from lightgbm.basic import _LIB
        except ImportError:  # pragma: no cover - a LightGBM without its C library
            return None
        lib = _LIB
        if not hasattr(lib, "LGBM_BoosterPredictForMatSingleRowFastInit"):
            return None
        n_features = int(booster.num_feature())
        handle = ctypes.c_void_p()
        status = lib.LGBM_BoosterPredictForMatSingleRowFastInit(
            booster._handle,
            ctypes.c_int(1),  # C_API_PREDICT_RAW_SCORE
            ctypes.c_int(0),  # start iteration
            ctypes.c_int(num_iteration),
            ctypes.c_int(1),  # C_API_DTYPE_FLOAT64
            ctypes.c_int32(n_features),
            ctypes.c_char_p(f"num_threads={max(num_threads, 1)}".encode()),
            ctypes.byref(handle),
        )
        if status != 0:
            return None
        return cls(handle, lib, n_features, booster)

    def predict(self, row: np.ndarray) -> float:
        """Raw margin of one feature row."""
        if row.shape[0] != self.n_features:
            raise ConfigurationError(f"expected {self.n_features} features, got {row.shape[0]}")
        with self._lock:
            self._row[:] = row
            status = self._lib.LGBM_BoosterPredictForMatSingleRowFast(
                self._handle,
                self._row.ctypes.data_as(ctypes.c_void_p),
                ctypes.byref(self._out_len),
                self._out.ctypes.data_as(ctypes.POINTER(ctypes.c_double)),
            )
            if status != 0:
                raise RuntimeError("LightGBM single-row prediction failed")
            return float(self._out[0])

    def __del__(self) -> None:
        handle, lib = getattr(self, "_handle", None), getattr(self, "_lib", None)
        if handle is not None and lib is not None:
            lib.LGBM_FastConfigFree(handle)
            self._handle = None
