"""The extra pre-answer members and the choice of which to average."""

from __future__ import annotations

import numpy as np
import pytest

from router.errors import NotFittedError
from router.model.members import (
    LinearAcceptance,
    NeighbourAcceptance,
    choose_members,
)


def test_linear_member_learns_a_direction() -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, 8))
    y = X[:, 0] + 0.3 * rng.normal(size=400) > 0
    p = LinearAcceptance(C=1.0).fit(X, y).predict_accept(X)
    assert ((p > 0.5) == y).mean() > 0.9
    assert np.all((p > 0) & (p < 1))


def test_linear_member_with_one_class_is_a_constant() -> None:
    X = np.ones((10, 3))
    p = LinearAcceptance().fit(X, np.ones(10)).predict_accept(np.zeros((2, 3)))
    assert p == pytest.approx([0.999, 0.999], abs=1e-6)
    with pytest.raises(NotFittedError):
        LinearAcceptance().predict_accept(X)


def test_neighbour_member_votes_among_the_nearest() -> None:
    keys = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    labels = np.array([[1, 0], [1, 0], [0, 1], [0, 1]])
    knn = NeighbourAcceptance(k=2).fit(keys, labels)
    out = knn.predict_accept(np.array([[2.0, 0.1], [0.0, 3.0]]))
    assert out.tolist() == [[1.0, 0.0], [0.0, 1.0]]
    assert knn.keys_.dtype == np.float16
    assert NeighbourAcceptance(k=10).fit(keys, labels).predict_accept(keys).shape == (4, 2)


def test_choice_takes_the_best_average_and_reports_every_candidate() -> None:
    truth = np.array([0.1, 0.9, 0.2, 0.8])
    members = {
        "lgbm": np.array([0.5, 0.5, 0.5, 0.5]),
        "linear": truth,
        "knn": 1 - truth,
    }

    def score(p: np.ndarray) -> float:
        return -float(np.abs(p - truth).sum())

    best, scores = choose_members(members, score)
    assert best == ("lgbm", "linear")
    assert set(scores) == {"lgbm", "lgbm+linear", "lgbm+knn", "lgbm+linear+knn"}
