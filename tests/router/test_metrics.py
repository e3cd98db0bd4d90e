"""Tests for router.metrics on hand-computed and seeded synthetic data."""

from __future__ import annotations

import math

import numpy as np
import pytest

from router import metrics as m

# Tiny hand example: gains f − s = [1, 1, 0, −1]; q_s = 0.5, q_f = 0.75.
SMALL = np.array([0.0, 0.0, 1.0, 1.0])
FRONTIER = np.array([1.0, 1.0, 1.0, 0.0])
Q_S, Q_F = 0.5, 0.75
ORACLE_ORDER = np.array([3.0, 2.0, 1.0, 0.0])  # escalate prompt 0 first, prompt 3 last
ANTI_ORDER = -ORACLE_ORDER


def _synthetic(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    small = (rng.random(n) < 0.5).astype(float)
    frontier = (rng.random(n) < 0.8).astype(float)
    return small, frontier


def test_deferral_curve_hand_example() -> None:
    c = m.deferral_curve(ORACLE_ORDER, SMALL, FRONTIER, 1.0, 10.0, cascade=False)
    np.testing.assert_allclose(c.share, [0, 0.25, 0.5, 0.75, 1])
    np.testing.assert_allclose(c.quality, [0.5, 0.75, 1.0, 1.0, 0.75])
    np.testing.assert_allclose(c.cost, (4 + 9 * np.arange(5)) / 4)
    cc = m.deferral_curve(ORACLE_ORDER, SMALL, FRONTIER, 1.0, 10.0, cascade=True)
    np.testing.assert_allclose(cc.quality, c.quality)
    np.testing.assert_allclose(cc.cost, (4 + 10 * np.arange(5)) / 4)


def test_deferral_curve_endpoints_and_monotone_share() -> None:
    rng = np.random.default_rng(1)
    small, frontier = _synthetic(500)
    c_s = rng.uniform(0.001, 0.002, 500)
    c_f = rng.uniform(0.01, 0.03, 500)
    score = rng.normal(size=500)
    router = m.deferral_curve(score, small, frontier, c_s, c_f, cascade=False)
    cascade = m.deferral_curve(score, small, frontier, c_s, c_f, cascade=True)
    ends = {"small": (small.mean(), c_s.mean()), "frontier": (frontier.mean(), c_f.mean())}
    assert router.quality[0] == pytest.approx(ends["small"][0])
    assert router.quality[-1] == pytest.approx(ends["frontier"][0])
    assert router.cost[0] == pytest.approx(ends["small"][1])
    assert router.cost[-1] == pytest.approx(ends["frontier"][1])
    # A cascade pays both calls on every escalated prompt.
    assert cascade.cost[0] == pytest.approx(c_s.mean())
    assert cascade.cost[-1] == pytest.approx(c_s.mean() + c_f.mean())
    np.testing.assert_allclose(cascade.quality, router.quality)
    assert len(router) == 501
    assert np.all(np.diff(router.share) > 0)
    assert router.share[0] == 0.0 and router.share[-1] == 1.0


def test_deferral_curve_ties_keep_input_order() -> None:
    c = m.deferral_curve(np.zeros(4), SMALL, FRONTIER, 0.0, 0.0, cascade=False)
    np.testing.assert_allclose(c.quality, [0.5, 0.75, 1.0, 1.0, 0.75])


def test_deferral_curve_rejects_bad_lengths() -> None:
    with pytest.raises(ValueError):
        m.deferral_curve(np.zeros(3), SMALL, FRONTIER, 0.0, 0.0, cascade=False)
    with pytest.raises(ValueError):
        m.deferral_curve(ORACLE_ORDER, SMALL, FRONTIER, np.ones(3), 0.0, cascade=False)


def test_curve_validates() -> None:
    with pytest.raises(ValueError):
        m.Curve(np.array([0.0, 0.5, 0.4]), np.zeros(3), np.zeros(3))
    with pytest.raises(ValueError):
        m.Curve(np.array([0.0, 1.0]), np.zeros(3), np.zeros(3))


def test_pgr() -> None:
    assert m.pgr(0.625, Q_S, Q_F) == pytest.approx(0.5)
    np.testing.assert_allclose(m.pgr(np.array([0.5, 0.75, 1.0]), Q_S, Q_F), [0, 1, 2])
    assert math.isnan(m.pgr(0.7, 0.5, 0.5))


@pytest.mark.parametrize("n_points", [5, 101])
def test_apgr_hand_example(n_points: int) -> None:
    oracle = m.deferral_curve(ORACLE_ORDER, SMALL, FRONTIER, 0.0, 0.0, cascade=False)
    anti = m.deferral_curve(ANTI_ORDER, SMALL, FRONTIER, 0.0, 0.0, cascade=False)
    # PGR [0, 1, 2, 2, 1] and [0, −1, −1, 0, 1] on shares 0, .25, .5, .75, 1.
    assert m.apgr(oracle, Q_S, Q_F, n_points) == pytest.approx(1.375, abs=1e-9)
    assert m.apgr(anti, Q_S, Q_F, n_points) == pytest.approx(-0.375, abs=1e-9)


def test_apgr_orderings_on_synthetic_data() -> None:
    small, frontier = _synthetic(20_000)
    q_s, q_f = small.mean(), frontier.mean()
    rng = np.random.default_rng(2)

    def area(score: np.ndarray) -> float:
        return m.apgr(m.deferral_curve(score, small, frontier, 0, 0, cascade=False), q_s, q_f)

    gain = m.oracle_escalation_score(small, frontier)
    oracle, random, anti = area(gain), area(rng.random(small.size)), area(-gain)
    assert random == pytest.approx(0.5, abs=0.05)
    assert oracle > 1.0 > random
    assert anti < 0.0 < random
    assert m.apgr(m.random_curve(small, frontier, 0, 0), q_s, q_f) == pytest.approx(0.5)


def test_apgr_degenerate_gap_is_nan() -> None:
    c = m.deferral_curve(ORACLE_ORDER, SMALL, SMALL, 0.0, 0.0, cascade=False)
    assert math.isnan(m.apgr(c, 0.5, 0.5))
    assert math.isnan(m.cpt(c, 0.5, 0.5, 0.5))


def test_cpt_interpolates() -> None:
    oracle = m.deferral_curve(ORACLE_ORDER, SMALL, FRONTIER, 0.0, 0.0, cascade=False)
    assert m.cpt50(oracle, Q_S, Q_F) == pytest.approx(0.125)
    assert m.cpt80(oracle, Q_S, Q_F) == pytest.approx(0.2)
    assert m.cpt95(oracle, Q_S, Q_F) == pytest.approx(0.2375)
    assert m.cpt(oracle, Q_S, Q_F, 1.5) == pytest.approx(0.375)
    assert m.cpt(oracle, Q_S, Q_F, 0.0) == 0.0
    assert math.isnan(m.cpt(oracle, Q_S, Q_F, 2.5))
    anti = m.deferral_curve(ANTI_ORDER, SMALL, FRONTIER, 0.0, 0.0, cascade=False)
    assert m.cpt50(anti, Q_S, Q_F) == pytest.approx(0.875)


def test_share_at_quality() -> None:
    oracle = m.deferral_curve(ORACLE_ORDER, SMALL, FRONTIER, 0.0, 0.0, cascade=False)
    assert m.share_at_quality(oracle, 0.6) == pytest.approx(0.1)
    assert m.share_at_quality(oracle, 0.95 * Q_F) == pytest.approx(0.2125)
    assert m.share_at_quality(oracle, 0.4) == 0.0
    assert math.isnan(m.share_at_quality(oracle, 1.1))


def test_cost_and_quality_at_share() -> None:
    c = m.deferral_curve(ORACLE_ORDER, SMALL, FRONTIER, 1.0, 10.0, cascade=False)
    assert m.cost_at_share(c, 0.125) == pytest.approx((4 + 4.5) / 4)
    assert m.quality_at_share(c, 0.375) == pytest.approx(0.875)
    np.testing.assert_allclose(m.quality_at_share(c, np.array([0.0, 1.0])), [0.5, 0.75])
    assert m.cost_saved(2.5, 10.0) == pytest.approx(0.75)


def test_aiq_hand_examples() -> None:
    # Hull (0,0)->(1,1), flat to cost 2: area 0.5 + 1 over range 2.
    assert m.aiq([0, 1, 2], [0, 1, 0.5]) == pytest.approx(0.75)
    # A point under the hull changes nothing.
    assert m.aiq([0, 0.5, 1, 2], [0, 0.2, 1, 0.5]) == pytest.approx(0.75)
    # A point above the chord lifts the hull: 0.5·0.4 + 0.5·0.9.
    assert m.aiq([1, 0, 0.5], [1, 0, 0.8]) == pytest.approx(0.65)
    # Decreasing quality with cost: the cheapest point held flat.
    assert m.aiq([0, 1, 2], [1, 0.5, 0.2]) == pytest.approx(1.0)
    assert m.aiq([1, 1], [0.3, 0.6]) == pytest.approx(0.6)


def test_ece() -> None:
    rng = np.random.default_rng(3)
    p = rng.random(50_000)
    y = (rng.random(p.size) < p).astype(float)
    assert m.expected_calibration_error(p, y) < 0.02
    assert m.expected_calibration_error(1 - p, y) > 0.3
    # Hand: bins 0 and 1, each half the weight: 0.5·0.95 + 0.5·0.15.
    assert m.expected_calibration_error([0.05, 0.15], [1, 0]) == pytest.approx(0.55)
    # p = 1.0 falls in the last bin.
    assert m.expected_calibration_error([1.0, 0.95], [1, 1]) == pytest.approx(0.025)


def test_roc_auc_matches_sklearn() -> None:
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(4)
    y = (rng.random(1000) < 0.3).astype(float)
    p = np.round(0.5 * y + rng.random(1000), 1)  # many ties
    assert m.roc_auc(p, y) == pytest.approx(roc_auc_score(y, p))
    assert m.roc_auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(0.75)
    assert math.isnan(m.roc_auc([0.1, 0.2], [1, 1]))


def test_random_curve_is_linear() -> None:
    small, frontier = _synthetic(100)
    c = m.random_curve(small, frontier, 1.0, 3.0, n_points=11)
    np.testing.assert_allclose(np.diff(c.quality, 2), 0, atol=1e-12)
    assert c.quality[0] == pytest.approx(small.mean())
    assert c.quality[-1] == pytest.approx(frontier.mean())
    np.testing.assert_allclose(c.cost[[0, -1]], [1.0, 3.0])
    cc = m.random_curve(small, frontier, 1.0, 3.0, n_points=11, cascade=True)
    np.testing.assert_allclose(cc.cost[[0, -1]], [1.0, 4.0])


def test_oracle_score_escalates_gains_first() -> None:
    gain = m.oracle_escalation_score(SMALL, FRONTIER)
    np.testing.assert_allclose(gain, [1, 1, 0, -1])


def test_bootstrap_interval() -> None:
    data = np.random.default_rng(5).normal(1.0, 1.0, 400)
    point = float(data.mean())

    def stat(idx: np.ndarray) -> float:
        return float(data[idx].mean())

    lo, hi = m.bootstrap_interval(stat, data.size, n_resamples=300, seed=7)
    assert lo < point < hi
    assert hi - lo == pytest.approx(2 * 1.96 / 20, rel=0.25)
    assert m.bootstrap_interval(stat, data.size, n_resamples=300, seed=7) == (lo, hi)
    assert m.bootstrap_interval(stat, data.size, n_resamples=300, seed=8) != (lo, hi)

    def half_nan(idx: np.ndarray) -> float:
        return float("nan") if idx[0] % 2 else float(data[idx].mean())

    lo2, hi2 = m.bootstrap_interval(half_nan, data.size, seed=7)
    assert lo2 < point < hi2
    assert all(math.isnan(v) for v in m.bootstrap_interval(lambda i: math.nan, 10))


def test_policy_curve_sorts_dedupes_and_invents_nothing() -> None:
    c = m.policy_curve([(0.6, 0.8, 3.0), (0.2, 0.6, 1.0), (0.6, 0.85, 3.5), (0.2, 0.6, 1.0)])
    np.testing.assert_allclose(c.share, [0.2, 0.6])
    np.testing.assert_allclose(c.quality, [0.6, 0.85])
    np.testing.assert_allclose(c.cost, [1.0, 3.5])
    with pytest.raises(ValueError):
        m.policy_curve([])
    with pytest.raises(ValueError):
        m.policy_curve([(1.5, 0.5, 1.0)])
