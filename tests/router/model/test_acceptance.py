"""AcceptanceModel: real LightGBM with early stopping and calibration, on synthetic data."""

from __future__ import annotations

import numpy as np
import pytest

from router.errors import NotFittedError
from router.metrics import expected_calibration_error, roc_auc
from router.model.acceptance import AcceptanceModel, ProbabilityCalibrator


def data(n: int, seed: int):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 8)).astype(np.float32)
    X[:, 0] = rng.integers(0, 4, n)  # a categorical "step" column
    logit = 1.5 * X[:, 1] - X[:, 2] + 0.5 * (X[:, 0] == 2)
    y = (rng.uniform(size=n) < 1 / (1 + np.exp(-logit))).astype(int)
    return X, y


def fit(seed: int = 0, calibration: str = "isotonic") -> AcceptanceModel:
    X, y = data(3000, 1)
    Xv, yv = data(800, 2)
    Xc, yc = data(1500, 3)
    return AcceptanceModel(n_estimators=300, seed=seed, calibration=calibration).fit(
        X, y, eval_set=(Xv, yv), calibration_set=(Xc, yc)
    )


@pytest.mark.parametrize("calibration", ["isotonic", "sigmoid"])
def test_learns_and_is_calibrated(calibration: str) -> None:
    model = fit(calibration=calibration)
    Xt, yt = data(3000, 4)
    p = model.predict_accept(Xt)
    assert roc_auc(p, yt) > 0.75
    assert expected_calibration_error(p, yt) < 0.05
    assert model.best_iteration_ < 300  # early stopping stopped it
    assert model.predict_proba(Xt).shape == (3000, 2)
    np.testing.assert_allclose(model.predict_proba(Xt).sum(axis=1), 1.0)


def test_deterministic_and_round_trip() -> None:
    a, b = fit(seed=7), fit(seed=7)
    Xt, _ = data(200, 5)
    np.testing.assert_array_equal(a.predict_accept(Xt), b.predict_accept(Xt))
    copy = AcceptanceModel.from_dict(a.to_dict())
    np.testing.assert_allclose(copy.predict_accept(Xt), a.predict_accept(Xt), atol=1e-12)


def test_one_class_falls_back_to_base_rate() -> None:
    X, _ = data(300, 1)
    model = AcceptanceModel().fit(
        X, np.ones(300), eval_set=(X, np.ones(300)), calibration_set=(X, np.ones(300))
    )
    assert np.all(model.predict_accept(X) == 1.0)


def test_not_fitted() -> None:
    with pytest.raises(NotFittedError):
        AcceptanceModel().predict_accept(np.zeros((1, 3)))
    with pytest.raises(NotFittedError):
        ProbabilityCalibrator().transform(np.zeros(2))


def test_linear_stack_option_learns_and_round_trips() -> None:
    X, y = data(3000, 1)
    Xv, yv = data(800, 2)
    Xc, yc = data(1500, 3)
    model = AcceptanceModel(n_estimators=200, linear_stack=True).fit(
        X, y, eval_set=(Xv, yv), calibration_set=(Xc, yc)
    )
    Xt, yt = data(2000, 4)
    assert model.linear_ is not None and roc_auc(model.predict_accept(Xt), yt) > 0.75
    copy = AcceptanceModel.from_dict(model.to_dict())
    np.testing.assert_allclose(copy.predict_accept(Xt), model.predict_accept(Xt), atol=1e-12)
