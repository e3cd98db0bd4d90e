"""The cascade policy on synthetic recorded outcomes: targets, skips, per-step points."""

from __future__ import annotations

import numpy as np
import pytest

from router.errors import ConfigurationError, NotFittedError
from router.policy import (
    CascadePolicy,
    CascadeSignals,
    Operating,
    Target,
    fit_skip_threshold,
    walk_recorded,
)


def synthetic(n: int = 3000, seed: int = 0):
    """Two tiers; the probabilities carry real signal about who is right."""
    rng = np.random.default_rng(seed)
    p_s = rng.uniform(0.05, 0.95, n)
    p_f = np.clip(p_s + rng.uniform(0.0, 0.5, n), 0, 0.99)
    s = (rng.uniform(size=n) < p_s).astype(float)
    f = (rng.uniform(size=n) < p_f).astype(float)
    pre = np.column_stack([p_s, p_f])
    post_self = np.clip(p_s + 0.3 * (s - p_s), 0, 1)[:, None]
    post_next = p_f[:, None].copy()
    costs = np.column_stack([np.full(n, 0.0001), np.full(n, 0.005)])
    steps = np.where(np.arange(n) % 2 == 0, "intent", "extract").astype(object)
    return CascadeSignals(pre, post_self, post_next), np.column_stack([s, f]), costs, steps


def test_target_parse_and_validation() -> None:
    assert Target.parse("quality=0.95") == Target(quality_ratio=0.95)
    assert Target.parse("share=0.2") == Target(max_frontier_share=0.2)
    assert Target.parse("cost=0.002") == Target(max_cost=0.002)
    assert str(Target(quality_ratio=0.9)) == "quality_ratio=0.9"
    with pytest.raises(ConfigurationError):
        Target.parse("speed=3")
    with pytest.raises(ConfigurationError):
        Target(quality_ratio=1.5)
    joint = Target.parse("quality=0.95, share=0.5,delta=0.05")
    assert joint == Target(quality_ratio=0.95, max_frontier_share=0.5, delta=0.05)
    assert str(joint) == "quality_ratio=0.95,max_frontier_share=0.5,delta=0.05"
    assert Target.parse(str(joint)) == joint
    assert joint.constraints() == {"quality_ratio": 0.95, "max_frontier_share": 0.5}
    for bad in ("quality=0.9,quality=0.8", "delta=0.1", "quality=0.9,delta=1.5", "quality=x"):
        with pytest.raises(ConfigurationError):
            Target.parse(bad)
    with pytest.raises(ConfigurationError):
        Target()


def test_simulate_hand_example() -> None:
    signals = CascadeSignals(
        pre=np.array([[0.9, 0.9], [0.1, 0.9], [0.5, 0.6]]),
        post_self=np.array([[0.9], [0.1], [0.2]]),
        post_next=np.array([[0.9], [0.9], [0.7]]),
    )
    scores = np.array([[1.0, 1.0], [0.0, 1.0], [0.0, 0.0]])
    costs = np.array([[1.0, 10.0]] * 3)
    out, thresholds = walk_recorded(
        signals, scores, costs, lam=0.3, tier_weights=np.array([1.0]), skip_thresholds=[0.2]
    )
    # prompt 0 accepted, prompt 1 skipped (pre 0.1 < 0.2), prompt 2 escalated (gain 0.5 > 0.3)
    assert out.answer_tier.tolist() == [0, 1, 1]
    assert out.skipped[:, 0].tolist() == [False, True, False]
    assert out.cost.tolist() == [1.0, 10.0, 11.0]
    assert out.top_called.tolist() == [False, True, True]
    assert thresholds == (0.2,)


def test_fit_skip_threshold_respects_tolerance() -> None:
    pre = np.linspace(0, 1, 200)
    accepted = pre > 0.3  # nothing below 0.3 was ever accepted
    t = fit_skip_threshold(pre, accepted, tolerance=0.0, min_count=10)
    assert 0.29 < t < 0.32
    assert fit_skip_threshold(pre[:5], accepted[:5], 0.1, min_count=20) == 0.0


def test_quality_target_met_on_calibration_and_saves_cost() -> None:
    signals, scores, costs, steps = synthetic()
    policy = CascadePolicy(
        ("s", "f"), np.array([1.0]), target=Target(quality_ratio=0.95), table=False
    )
    policy.fit(signals, scores, costs, steps)
    out = policy.run(signals, scores, costs, steps).summary()
    assert out["quality"] >= 0.95 * scores[:, 1].mean() - 1e-9
    assert out["frontier_share"] < 0.95
    assert out["cost"] < costs[:, 1].mean()


def test_share_and_cost_targets() -> None:
    signals, scores, costs, steps = synthetic()
    policy = CascadePolicy(
        ("s", "f"), np.array([1.0]), target=Target(max_frontier_share=0.3), table=False
    )
    policy.fit(signals, scores, costs, steps)
    share = policy.run(signals, scores, costs, steps).summary()["frontier_share"]
    assert share <= 0.3 + 1e-9
    cheap = policy.run(signals, scores, costs, steps, Target(max_cost=0.001)).summary()
    assert cheap["cost"] <= 0.001 + 1e-12
    more = policy.run(signals, scores, costs, steps, Target(max_frontier_share=0.6)).summary()
    assert more["quality"] >= policy.run(signals, scores, costs, steps).summary()["quality"]


def test_per_step_points_and_round_trip() -> None:
    signals, scores, costs, steps = synthetic()
    policy = CascadePolicy(("s", "f"), np.array([1.0]), min_step_samples=200)
    policy.fit(signals, scores, costs, steps)
    assert set(policy.per_step_) == {"intent", "extract"}
    assert policy.operating("never-seen") == policy.global_
    copy = CascadePolicy.from_dict(policy.to_dict(), policy.calibration_arrays())
    assert copy.operating("intent") == policy.operating("intent")
    assert copy.operating("x", Target(max_frontier_share=0.1)) == policy.operating(
        "x", Target(max_frontier_share=0.1)
    )


def test_unfitted_policy_raises() -> None:
    with pytest.raises(NotFittedError):
        CascadePolicy(("s", "f"), np.array([1.0])).operating("x")


# ------------------------------------------------------------------ several opinion sources


def with_sources(n: int = 3000, seed: int = 0, informative_cost: float = 0.00005):
    """The synthetic outcomes plus two opinion sources: one that adds nothing (its
    probabilities are the plain answer-aware ones) and one that nearly reveals the answer."""
    signals, scores, costs, steps = synthetic(n, seed)
    rng = np.random.default_rng(seed + 1)
    s, f = scores[:, 0], scores[:, 1]
    sharp_self = np.clip(0.1 + 0.8 * s + rng.normal(0, 0.05, n), 0.01, 0.99)
    sharp_next = np.clip(0.1 + 0.8 * f + rng.normal(0, 0.05, n), 0.01, 0.99)
    op_self = np.column_stack([signals.post_self[:, 0], sharp_self])
    op_next = np.column_stack([signals.post_next[:, 0], sharp_next])
    full = CascadeSignals(signals.pre, signals.post_self, signals.post_next, op_self, op_next)
    opinion_costs = np.column_stack([np.full(n, 0.00001), np.full(n, informative_cost)])
    return full, scores, costs, steps, opinion_costs


def test_operating_picks_the_first_source_whose_band_holds_p() -> None:
    point = Operating(0.1, (0.0,), ((0.2, 0.5), None, (0.4, 0.9)))
    p = np.array([0.1, 0.3, 0.45, 0.6, 0.95])
    assert point.opinion_source(p).tolist() == [-1, 0, 0, 2, -1]
    assert point.opinion_source(0.6) == 2 and point.asks_opinion(0.6) is True
    assert point.asks_opinion(0.05) is False
    again = Operating.from_dict(point.to_dict())
    assert again == point
    # one source is written as routers of format 2-3 wrote it, and read back the same
    single = Operating(0.1, (0.0,), ((0.2, 0.5),))
    assert "opinion_band" in single.to_dict() and Operating.from_dict(single.to_dict()) == single
    assert Operating.from_dict({"lam": 0.1, "skip_thresholds": [0.0]}).opinion_bands == ()


def test_simulate_charges_the_chosen_source() -> None:
    signals, scores, costs, _, opinion_costs = with_sources(500)
    bands = ((0.0, 0.5), (0.5, np.inf))

    def run(paid_costs):
        out, _ = walk_recorded(
            signals,
            scores,
            costs,
            0.1,
            np.array([1.0]),
            (0.0,),
            opinion_bands=bands,
            opinion_costs=paid_costs,
        )
        return out

    out, free = run(opinion_costs), run(np.zeros_like(opinion_costs))
    first = signals.pre[:, 0] < 0.5
    assert out.source is not None and out.asked is not None and out.asked.all()
    assert np.array_equal(out.source, np.where(first, 0, 1))
    paid = np.where(first, opinion_costs[:, 0], opinion_costs[:, 1])
    np.testing.assert_allclose(out.cost - free.cost, paid)
    shares = out.source_shares(2)
    assert shares == pytest.approx([first.mean(), 1 - first.mean()])


def test_policy_buys_the_source_that_pays() -> None:
    signals, scores, costs, steps, opinion_costs = with_sources()
    target = Target(quality_ratio=0.95)

    def fitted(sig, oc):
        return CascadePolicy(
            ("small", "frontier"), np.array([1.0]), target=target, table=False
        ).fit(sig, scores, costs, steps, oc)

    policy = fitted(signals, opinion_costs)
    out = policy.run(signals, scores, costs, steps, opinion_costs=opinion_costs)
    plain = fitted(signals.without_opinions(), None)
    base = plain.run(signals.without_opinions(), scores, costs, steps)
    shares = out.source_shares(2)
    assert shares[1] > 0.2  # the informative source is bought …
    assert shares[1] > shares[0]  # … rather than the one that adds nothing
    assert out.summary()["cost"] < base.summary()["cost"]  # and it pays, costs included
    # priced like the frontier itself, the informative opinion is never worth buying
    dear = opinion_costs.copy()
    dear[:, 1] = 0.01
    dear_out = fitted(signals, dear).run(signals, scores, costs, steps, opinion_costs=dear)
    assert dear_out.source_shares(2)[1] == 0.0
