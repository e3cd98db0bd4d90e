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
    assert best == ("linear",)  # a member alone is a candidate too
    assert set(scores) == {
        "lgbm",
        "lgbm+linear",
        "lgbm+knn",
        "lgbm+linear+knn",
        "knn",
        "linear",
        "linear+knn",
    }
    # ties keep the earlier (simpler) candidate
    best, _ = choose_members({"lgbm": truth, "linear": truth, "knn": truth}, score)
    assert best == ("lgbm",)


def test_members_without_the_boosters_average_only_themselves() -> None:
    from router.model.members import PreAnswerMembers

    keys = np.array([[1.0, 0.0], [0.0, 1.0]])
    knn = NeighbourAcceptance(k=1).fit(keys, np.array([[1.0, 0.0], [0.0, 1.0]]))
    members = PreAnswerMembers(("knn",), neighbours=knn)
    assert not members.uses_boosters
    out = members.average(np.full((2, 2), 0.5), keys)  # the boosters' numbers are ignored
    np.testing.assert_array_equal(out, [[1.0, 0.0], [0.0, 1.0]])
    with pytest.raises(ValueError, match="lack"):
        PreAnswerMembers(("linear",))


def test_out_of_fold_members_never_see_the_row_they_score() -> None:
    from router.model import Folds
    from router.model.members import linear_oof, neighbour_oof

    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 5))
    y = (X[:, 0] > 0).astype(float)
    folds = Folds.make(np.arange(300).astype(str), y, 5, seed=0)
    # a row's duplicate elsewhere would be its own nearest neighbour; alone, it never is
    knn = neighbour_oof(X, y[:, None], folds, ks=(1,))[1][:, 0]
    nearest_other = NeighbourAcceptance(k=1)
    for k in range(5):
        held, train = folds.held(k), folds.train(k)
        expected = nearest_other.fit(X[train], y[train, None]).predict_accept(X[held])[:, 0]
        np.testing.assert_array_equal(knn[held], expected)
    lin = linear_oof(X, y[:, None], folds, Cs=(1.0,))[1.0][:, 0]
    assert ((lin > 0.5) == y).mean() > 0.9


def test_cross_fit_members_choose_k_and_c_out_of_fold_and_refit_what_was_chosen() -> None:
    from router.model import Folds, cross_fit_members
    from router.model.crossfit import router_score

    rng = np.random.default_rng(1)
    centres = rng.normal(size=(20, 6))
    cluster = rng.integers(0, 20, 600)
    X = centres[cluster] + 0.1 * rng.normal(size=(600, 6))
    rates = rng.uniform(size=(20, 2))
    scores = (rng.uniform(size=(600, 2)) < rates[cluster]).astype(float)
    folds = Folds.make(np.arange(600).astype(str), None, 5, seed=0)
    members = cross_fit_members(X, scores, folds, np.full((600, 2), 0.5), router_score(scores))
    assert set(members.oof) == {"lgbm", "linear", "knn"}
    assert members.knn_scores[members.knn_k] == max(members.knn_scores.values())
    assert members.linear_scores[members.linear_C] == max(members.linear_scores.values())
    # clusters of ~30 rows: a vote among the few nearest beats one over most of the data
    assert members.knn_k <= 50, members.knn_scores
    refit = members.refit(("knn",), X, scores)
    assert refit.members == ("knn",) and not refit.linear
    assert refit.neighbours is not None and refit.neighbours.k == members.knn_k
    both = members.refit(("lgbm", "linear"), X, scores)
    assert both.neighbours is None and members.linear_C == both.linear["linear"][0].C
