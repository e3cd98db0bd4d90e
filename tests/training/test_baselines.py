"""Tests for training.baselines on seeded synthetic embeddings with feature-dependent labels."""

from __future__ import annotations

import numpy as np
import pytest

from router.errors import ConfigurationError, DataValidationError, NotFittedError
from router.metrics import apgr, deferral_curve
from training import baselines as b


def _make_data(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Topic clusters in 16-D; each topic has its own P(small ok) and P(frontier ok)."""
    rng = np.random.default_rng(seed)
    topics = np.random.default_rng(123)  # fixed topics shared by every split
    centres = topics.normal(size=(8, 16))
    p_small = topics.uniform(0.05, 0.95, 8)
    p_frontier = np.clip(p_small + topics.uniform(-0.2, 0.7, 8), 0.05, 0.95)
    c = rng.integers(0, 8, n)
    X = centres[c] + 0.4 * rng.normal(size=(n, 16))
    scores = np.column_stack([rng.random(n) < p_small[c], rng.random(n) < p_frontier[c]]).astype(
        float
    )
    return X, scores


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    X_tr, s_tr = _make_data(1500, seed=0)
    X_te, s_te = _make_data(2000, seed=1)
    return X_tr, s_tr, X_te, s_te


def _test_apgr(scorer: b.EscalationScorer, X: np.ndarray, s: np.ndarray) -> float:
    curve = deferral_curve(scorer.escalation_score(X), s[:, 0], s[:, 1], 0.0, 0.0, cascade=False)
    return apgr(curve, s[:, 0].mean(), s[:, 1].mean())


def test_learned_baselines_beat_random(data) -> None:
    X_tr, s_tr, X_te, s_te = data
    random = _test_apgr(b.RandomScorer(seed=0).fit(X_tr, s_tr), X_te, s_te)
    knn = _test_apgr(b.KNNScorer(seed=0).fit(X_tr, s_tr), X_te, s_te)
    logreg = _test_apgr(b.LogRegScorer().fit(X_tr, s_tr), X_te, s_te)
    small_fail = _test_apgr(b.SmallFailScorer().fit(X_tr, s_tr), X_te, s_te)
    oracle = b.OracleScorer().escalation_score_from_scores(s_te)
    oracle_apgr = apgr(
        deferral_curve(oracle, s_te[:, 0], s_te[:, 1], 0, 0, cascade=False),
        s_te[:, 0].mean(),
        s_te[:, 1].mean(),
    )
    assert random == pytest.approx(0.5, abs=0.08)
    assert knn > random + 0.15
    assert logreg > random + 0.15
    assert small_fail > random
    assert oracle_apgr > max(knn, logreg)


def test_knn_tunes_k_among_candidates(data) -> None:
    X_tr, s_tr, _, _ = data
    cands = (3, 7, 40, 90)
    knn = b.KNNScorer(candidate_ks=cands, seed=3).fit(X_tr, s_tr)
    assert knn.k_ in cands
    assert set(knn.cv_apgr_) == set(cands)
    assert knn.cv_apgr_[knn.k_] == max(knn.cv_apgr_.values())
    # Refit on all data after tuning.
    assert knn.gain_.size == X_tr.shape[0]
    fixed = b.KNNScorer(k=11).fit(X_tr, s_tr)
    assert fixed.k_ == 11 and fixed.cv_apgr_ == {}


def test_knn_predicts_neighbour_mean_gain() -> None:
    X = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    scores = np.array([[0, 1], [0, 1], [1, 1], [1, 0]], dtype=float)
    knn = b.KNNScorer(k=2).fit(X, scores)
    # Cosine: scale does not matter.
    np.testing.assert_allclose(knn.escalation_score(np.array([[5.0, 0.2], [0.0, 3.0]])), [1, -0.5])


@pytest.mark.parametrize(
    "scorer",
    [b.RandomScorer(), b.KNNScorer(k=5), b.LogRegScorer(), b.SmallFailScorer(), b.OracleScorer()],
)
def test_not_fitted_raises(scorer: b.EscalationScorer) -> None:
    with pytest.raises(NotFittedError, match="not fitted"):
        scorer.escalation_score(np.zeros((3, 4)))


def test_input_validation(data) -> None:
    X_tr, s_tr, _, _ = data
    with pytest.raises(DataValidationError):
        b.LogRegScorer().fit(X_tr[:10], s_tr[:9])
    with pytest.raises(DataValidationError):
        b.LogRegScorer().fit(X_tr, s_tr[:, 0])
    fitted = b.LogRegScorer().fit(X_tr, s_tr)
    with pytest.raises(DataValidationError):
        fitted.escalation_score(X_tr[:, :5])
    with pytest.raises(ConfigurationError):
        b.KNNScorer(k=0).fit(X_tr, s_tr)


def test_logreg_handles_single_class() -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(50, 4))
    scores = np.column_stack([np.ones(50), (rng.random(50) < 0.5).astype(float)])
    lr = b.LogRegScorer().fit(X, scores)
    out = lr.escalation_score(X)
    assert out.shape == (50,) and np.all(out <= 0.0) and np.all(out >= -1.0)
    np.testing.assert_allclose(b.SmallFailScorer().fit(X, scores).escalation_score(X), 0.0)


def test_random_scorer_is_seeded() -> None:
    X, s = _make_data(20)
    a = b.RandomScorer(seed=1).fit(X, s).escalation_score(X)
    np.testing.assert_array_equal(a, b.RandomScorer(seed=1).fit(X, s).escalation_score(X))
    assert not np.array_equal(a, b.RandomScorer(seed=2).fit(X, s).escalation_score(X))


def test_oracle_scorer_peeks_at_labels() -> None:
    X, s = _make_data(10)
    oracle = b.OracleScorer().fit(X, s)
    np.testing.assert_allclose(oracle.escalation_score_from_scores(s), s[:, 1] - s[:, 0])
    np.testing.assert_allclose(b.escalation_score_from_scores(s), s[:, 1] - s[:, 0])
    with pytest.raises(ConfigurationError):
        oracle.escalation_score(X)


def test_endpoint_points() -> None:
    pts = b.endpoint_points([0, 1, 1, 0], [1, 1, 1, 0], 0.5, np.array([1.0, 2.0, 3.0, 4.0]))
    assert pts == {
        "always_small": {"quality": 0.5, "cost": 0.5},
        "always_frontier": {"quality": 0.75, "cost": 2.5},
    }
