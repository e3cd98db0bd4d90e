"""Certified operating points on synthetic outcomes whose true risk is known exactly."""

from __future__ import annotations

import numpy as np
import pytest

from router.errors import TargetNotCertifiableError
from router.policy import CascadePolicy, CascadeSignals, Target
from router.policy.certify import (
    BettingConfidenceSequence,
    BettingTest,
    CandidatePath,
    PathOutcomes,
    certify_outcomes,
    hb_pvalues,
    wsr_pvalues,
)
from router.policy.certify.ltt import choose
from router.policy.rules import Operating

GRID = np.concatenate([[-np.inf], np.linspace(-1.0, 1.0, 201), [np.inf]])
PATH = CandidatePath(tuple(Operating(float(lam), (0.0,)) for lam in GRID))


class Population:
    """Two tiers; each request has a small-tier and a top-tier success probability and a gain
    signal.  The truth of any escalation threshold is known in expectation, without noise."""

    def __init__(self, p_small: np.ndarray, p_top: np.ndarray, gain: np.ndarray) -> None:
        self.p_small, self.p_top, self.gain = p_small, p_top, gain

    def truth(self, lam: float) -> tuple[float, float]:
        """(quality ratio, frontier share) of escalating where the gain exceeds ``lam``."""
        up = self.gain > lam
        quality = np.where(up, self.p_top, self.p_small).mean()
        return float(quality / self.p_top.mean()), float(up.mean())

    def draw(self, n: int, rng: np.random.Generator) -> PathOutcomes:
        """A calibration draw of ``n`` requests, run through every point of :data:`PATH`."""
        idx = rng.integers(0, len(self.gain), n)
        s = (rng.random(n) < self.p_small[idx]).astype(float)
        f = (rng.random(n) < self.p_top[idx]).astype(float)
        up = self.gain[idx, None] > GRID[None, :]
        return PathOutcomes(
            quality=np.where(up, f[:, None], s[:, None]),
            top=up,
            cost=0.0001 + 0.005 * up,
            frontier=f,
            cost_bound=0.0051,
        )


def informative(n: int = 200_000, seed: int = 0) -> Population:
    rng = np.random.default_rng(seed)
    gain = rng.uniform(-0.3, 0.6, n)
    p_top = np.full(n, 0.8)
    return Population(np.clip(p_top - gain, 0, 1), p_top, gain)


def certified_lam(outcomes: PathOutcomes, target: Target, delta: float = 0.1) -> float | None:
    choice = certify_outcomes(outcomes, outcomes.means(), target, delta, "wsr")
    return None if not choice.feasible(target) else float(GRID[choice.index])


def test_pvalues_are_valid_at_the_null_boundary() -> None:
    """Under E[X] = alpha exactly, P(p <= d) <= d (up to Monte Carlo noise), for both methods."""
    rng = np.random.default_rng(0)
    for X in (
        (rng.random((400, 3000)) < 0.5).astype(float),
        rng.choice([0.0, 0.5, 1.0], (400, 3000), p=[0.05, 0.9, 0.05]),  # low variance
    ):
        for d in (0.05, 0.1):
            assert (wsr_pvalues(X, 0.5, d) <= d).mean() <= d + 0.015
            assert (hb_pvalues(X.mean(axis=0), 0.5, 400) <= d).mean() <= d + 0.015
    # far from the null both reject, and the betting test sooner
    low = (rng.random((300, 50)) < 0.3).astype(float)
    assert (wsr_pvalues(low, 0.5, 0.1) <= 0.1).all()
    assert wsr_pvalues(low, 0.4, 0.1).mean() < hb_pvalues(low.mean(axis=0), 0.4, 300).mean()


def test_violation_rate_stays_below_delta() -> None:
    """Over many calibration draws, the certified point's *true* quality ratio falls below the
    target in at most a delta share of them (plus Monte Carlo noise)."""
    pop, rng = informative(), np.random.default_rng(1)
    target, draws = Target(quality_ratio=0.95), 300
    missed = saved = 0
    for _ in range(draws):
        lam = certified_lam(pop.draw(1000, rng), target)
        assert lam is not None  # 1,000 outcomes support the target
        ratio, share = pop.truth(lam)
        missed += ratio < 0.95
        saved += share < 0.9
    assert missed / draws <= 0.1 + 3 * np.sqrt(0.09 / draws)
    assert saved / draws > 0.9  # and it is not "always frontier" in disguise


def test_a_target_just_inside_and_just_outside_what_the_data_supports() -> None:
    """The small tier is never better here, so every point cheaper than the frontier loses
    quality.  Inside (a cheaper point's true ratio clears the target by a point): certified,
    and the point truly meets it.  Outside (no point but the frontier reaches the target):
    refused, but for at most a delta share of the draws."""
    rng = np.random.default_rng(2)
    n = 200_000
    gain = rng.uniform(0.05, 0.6, n)
    pop = Population(0.8 - gain, np.full(n, 0.8), gain)
    truths = [pop.truth(lam) for lam in GRID[1:-1]]
    best_cheaper = max(r for r, share in truths if share < 1.0)
    assert 0.998 < best_cheaper < 0.999
    inside, outside = Target(quality_ratio=0.96), Target(quality_ratio=0.999)
    lam = certified_lam(pop.draw(20_000, rng), inside)
    assert lam is not None
    ratio, share = pop.truth(lam)
    assert ratio >= 0.96 and share < 0.9
    refused = sum(certified_lam(pop.draw(20_000, rng), outside) is None for _ in range(30))
    assert refused >= 27


def test_shuffled_labels_certify_no_point_cheaper_than_random_mixing() -> None:
    """With a gain signal that says nothing, escalating a share ``p`` at random reaches the
    quality ratio ``p + (1 - p) q_s / q_f``: every ratio below 1 is reachable *without* any
    signal, so "only always-frontier is certifiable" would be a wrong requirement.  The right
    one: no point cheaper than the random-mixing share ``p* = (r - q_s/q_f) / (1 - q_s/q_f)``
    is certified, except with probability delta; and the procedure still finds points near
    ``p*`` rather than giving up."""
    rng = np.random.default_rng(3)
    n = 200_000
    pop = Population(np.full(n, 0.6), np.full(n, 0.8), rng.uniform(-1, 1, n))
    r = 0.95
    p_star = (r - 0.75) / (1 - 0.75)  # q_s / q_f = 0.75
    shares = []
    for _ in range(60):
        lam = certified_lam(pop.draw(3000, rng), Target(quality_ratio=r))
        shares.append(1.0 if lam is None else pop.truth(lam)[1])
    shares_arr = np.array(shares)
    assert (shares_arr < p_star).mean() <= 0.1 + 3 * np.sqrt(0.09 / 60)
    assert np.median(shares_arr) < 0.95  # something cheaper than always-frontier


def test_joint_constraints_hold_together() -> None:
    pop, rng = informative(), np.random.default_rng(4)
    target = Target(quality_ratio=0.9, max_frontier_share=0.5)
    misses = 0
    for _ in range(50):
        lam = certified_lam(pop.draw(2000, rng), target)
        assert lam is not None
        ratio, share = pop.truth(lam)
        misses += ratio < 0.9 or share > 0.5
    assert misses / 50 <= 0.1 + 3 * np.sqrt(0.09 / 50)
    # a share the quality target cannot live with is refused
    outcomes = pop.draw(2000, rng)
    tight = Target(quality_ratio=0.99, max_frontier_share=0.05)
    assert certify_outcomes(outcomes, outcomes.means(), tight, 0.1, "wsr").index is None


def test_choose_takes_the_cheapest_certified_point_for_quality() -> None:
    outcomes = informative().draw(500, np.random.default_rng(5))
    means = outcomes.means()
    mask = np.zeros(len(GRID), dtype=bool)
    mask[[0, 40, 90]] = True
    assert choose(mask, Target(quality_ratio=0.9), means) == 90
    # budgets: the best quality among the certified points (here the small tier is sometimes
    # better than the top one, so that is not always-frontier)
    best = [0, 40, 90][int(np.argmax(means.quality[[0, 40, 90]]))]
    assert choose(mask, Target(max_frontier_share=0.9), means) == best


# ------------------------------------------------------------------ the policy


def synthetic_policy_data(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    p_s = rng.uniform(0.05, 0.95, n)
    p_f = np.clip(p_s + rng.uniform(0.0, 0.5, n), 0, 0.99)
    s = (rng.uniform(size=n) < p_s).astype(float)
    f = (rng.uniform(size=n) < p_f).astype(float)
    signals = CascadeSignals(
        np.column_stack([p_s, p_f]),
        np.clip(p_s + 0.3 * (s - p_s), 0, 1)[:, None],
        p_f[:, None].copy(),
    )
    costs = np.column_stack([np.full(n, 0.0001), np.full(n, 0.005)])
    steps = np.where(np.arange(n) % 2 == 0, "intent", "extract").astype(object)
    return signals, np.column_stack([s, f]), costs, steps


@pytest.fixture(scope="module")
def fitted() -> tuple[CascadePolicy, tuple]:
    data = synthetic_policy_data(1200)
    policy = CascadePolicy(("s", "f"), np.array([1.0]), min_step_samples=400).fit(*data)
    return policy, data


def test_infeasible_target_names_the_best_certifiable_alternative() -> None:
    data = synthetic_policy_data(300, seed=7)
    policy = CascadePolicy(("s", "f"), np.array([1.0]), target=Target(quality_ratio=0.9))
    policy.fit(*data)
    with pytest.raises(TargetNotCertifiableError) as info:
        policy.certificate(None, Target(quality_ratio=0.995))
    message = str(info.value)
    assert message.startswith("quality ratio ≥ 0.995 cannot be certified with 225 outcomes at")
    assert "delta 0.1; certifiable: quality=0." in message and "or always-frontier" in message
    alternative = Target.parse(info.value.alternative)
    assert alternative is not None and alternative.quality_ratio is not None
    assert policy.certificate(None, alternative).bound["quality_ratio"] < 0.995
    # a cost below what never escalating costs: nothing cheaper is certifiable
    with pytest.raises(TargetNotCertifiableError, match="certifiable: cost="):
        policy.certificate(None, Target(max_cost=0.00005))
    # the model's own target cannot be certified: fitting refuses, naming the alternative
    with pytest.raises(TargetNotCertifiableError, match="certifiable: quality="):
        CascadePolicy(("s", "f"), np.array([1.0]), target=Target(quality_ratio=0.999)).fit(*data)
    # quality 1 is what always calling the top tier certifies by construction
    frontier = policy.certificate(None, Target(quality_ratio=1.0))
    assert frontier.trivial and frontier.index == 0 and frontier.point.lam == -np.inf


def test_a_refusal_certifies_each_alternative_once_and_a_saving_is_judged_apart(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = synthetic_policy_data(300, seed=7)
    policy = CascadePolicy(("s", "f"), np.array([1.0]), target=Target(quality_ratio=0.9))
    certified = policy.fit(*data).certified_
    assert certified is not None
    computed: list[tuple[str, str]] = []
    compute = certified._compute

    def counted(group, target, *rest):  # type: ignore[no-untyped-def]
        computed.append((group, str(target)))
        return compute(group, target, *rest)

    monkeypatch.setattr(certified, "_compute", counted)
    assert policy.certificate(None, Target(quality_ratio=1.0)).index == 0
    # 0.9999 rounds to the same cells as 1, but asks for a saving always-frontier cannot give
    with pytest.raises(TargetNotCertifiableError, match="certifiable: quality="):
        policy.certificate(None, Target(quality_ratio=0.9999))
    with pytest.raises(TargetNotCertifiableError):
        policy.certificate(None, Target(quality_ratio=0.9999))
    # the search for the alternative walks down the grid once: no target is certified twice
    assert len(computed) == len(set(computed)) and len(computed) > 2


def test_per_request_targets_match_direct_certification(fitted) -> None:
    policy, _ = fitted
    certified = policy.certified_
    assert certified is not None and set(certified.groups) == {"global", "intent", "extract"}
    for text in ("quality=0.9", "share=0.3", "quality=0.9,share=0.6", "quality=0.85,delta=0.05"):
        target = Target.parse(text)
        assert target is not None
        for group in certified.groups:
            looked_up = policy.certificate(None if group == "global" else group, target)
            direct = certify_outcomes(
                certified.outcomes.subset(certified.groups[group]),
                certified.means[group],
                target,
                certified.delta_of(target) / certified.splits,
                "wsr",
            )
            assert looked_up.index == direct.index, (text, group)
            assert looked_up.bound == target.constraints()
    # off the grid: rounded to the stricter side, and the same as certifying that directly
    off = policy.certificate("intent", Target(quality_ratio=0.953, delta=0.07))
    assert off.bound == {"quality_ratio": 0.96} and off.delta == 0.05
    assert off.index == policy.certificate("intent", Target(quality_ratio=0.96, delta=0.05)).index
    assert off.target == "quality_ratio=0.953,delta=0.07"
    # a cost target is read in USD off a grid of fractions of the frontier's cost
    cost = policy.certificate(None, Target(max_cost=0.003))
    assert cost.bound["max_cost"] <= 0.003 and cost.estimate["cost_per_request"] <= 0.003 + 1e-9


def test_certified_policy_round_trip(fitted) -> None:
    policy, _ = fitted
    copy = CascadePolicy.from_dict(policy.to_dict(), policy.calibration_arrays())
    for step in ("intent", "extract", "never-seen"):
        assert copy.operating(step) == policy.operating(step)
        assert copy.certificate(step) == policy.certificate(step)
        for text in ("share=0.2", "quality=0.97", "cost=0.0021,delta=0.2"):
            target = Target.parse(text)
            assert copy.certificate(step, target) == policy.certificate(step, target)
    # a risk below the table's smallest is certified directly, on outcomes rebuilt from the
    # calibration arrays
    tiny = Target(quality_ratio=0.9, delta=0.005)
    assert copy.certificate(None, tiny) == policy.certificate(None, tiny)
    assert copy.certificate(None, tiny).level == pytest.approx(0.005 / 3)


def test_a_certified_policy_copies(fitted) -> None:
    import copy
    import pickle

    policy, _ = fitted
    for twin in (copy.deepcopy(policy), pickle.loads(pickle.dumps(policy))):
        target = Target(quality_ratio=0.93, delta=0.005)  # off the table: certified directly
        assert twin.certificate("intent", target) == policy.certificate("intent", target)


def test_uncertified_policy_of_older_routers(fitted) -> None:
    policy, _ = fitted
    old = policy.to_dict()
    old.pop("certification")
    legacy = CascadePolicy.from_dict(old, policy.calibration_arrays())
    assert legacy.certify is None and legacy.certificate("intent") is None
    assert legacy.operating("intent") == policy.operating("intent")  # the saved points
    assert legacy.operating(None, Target(max_frontier_share=0.3)).lam > -np.inf


def test_confidence_sequence_covers_the_mean_at_every_time() -> None:
    rng = np.random.default_rng(8)
    misses = 0
    for _ in range(100):
        cs = BettingConfidenceSequence(alpha=0.1, grid_size=400)
        ever_out = False
        for x in (rng.random(300) < 0.7).astype(float):
            cs.update(x)
            lo, hi = cs.interval
            ever_out |= not lo <= 0.7 <= hi
        misses += ever_out
    assert misses <= 10 + 3 * 3  # alpha = 0.1 over the whole sequence, Monte Carlo noise
    lo, hi = cs.interval
    assert hi - lo < 0.25 and lo <= cs.mean <= hi


def test_betting_test_alarms_rarely_under_the_null_and_soon_after_a_shift() -> None:
    rng = np.random.default_rng(9)
    false_alarms = 0
    for _ in range(200):
        # the promise (mean >= 0.6) holds throughout, at its edge for the second half
        values = np.concatenate([rng.random(300) < 0.8, rng.random(300) < 0.6]).astype(float)
        false_alarms += BettingTest(0.6, "above", alpha=0.05).extend(values).alarm
    assert false_alarms <= 10 + 3 * 3
    # a long good stretch, then the traffic drops well below the promise: caught, and soon
    detected = []
    for _ in range(50):
        test = BettingTest(0.6, "above", alpha=0.05).extend((rng.random(1000) < 0.8) * 1.0)
        at = next((t for t, x in enumerate(rng.random(400) < 0.4) if test.extend([x]).alarm), None)
        detected.append(at)
    assert all(t is not None for t in detected)
    assert np.median([t for t in detected if t is not None]) < 150
    # the other side: a share promised to stay at or below 0.3
    assert BettingTest(0.3, "below").extend((rng.random(400) < 0.5) * 1.0).alarm
    assert not BettingTest(0.3, "below").extend((rng.random(400) < 0.2) * 1.0).alarm


def test_a_promise_broken_for_long_reports_a_finite_capital() -> None:
    """The capital's logarithm passes 709 (where a float overflows) on a long store of labels
    that all break the promise (a retrain over a million requests met it): the e-value is
    capped, the alarm stays raised."""
    test = BettingTest(0.9, "above", alpha=0.05).extend(np.zeros(10_000))
    assert test.log_capital > 709 and test.alarm
    assert test.evidence == pytest.approx(1e300)


def test_the_table_order_of_the_outcomes_cannot_fool_the_test() -> None:
    """The betting test reads outcomes in sequence: rows sorted so that every request the small
    tier gets right comes first (as a table sorted by prompt id can group them by task) would let
    it bet on a streak.  Read in a seeded random order, an uninformative gain certifies nothing
    cheaper than random mixing."""
    rng = np.random.default_rng(11)
    n = 3000
    s = (np.arange(n) < 1800).astype(float)  # the small tier right on the first 60%
    f = np.ones(n)
    gain = rng.uniform(0.0, 0.5, n)  # says nothing about which requests those are
    pre = np.column_stack([np.full(n, 0.5), np.full(n, 0.9)])
    signals = CascadeSignals(pre, (0.5 - gain / 2)[:, None], (0.5 + gain / 2)[:, None])
    costs = np.column_stack([np.full(n, 0.0001), np.full(n, 0.005)])
    policy = CascadePolicy(
        ("s", "f"), np.array([1.0]), skip_tolerance=None, target=Target(quality_ratio=0.95)
    )
    policy.fit(signals, np.column_stack([s, f]), costs, np.full(n, "x", dtype=object))
    cert = policy.certificate(None)
    assert cert is not None
    # random mixing reaches 0.95 at a frontier share of (0.95 - 0.6) / 0.4 = 0.875
    escalated = float((gain > cert.point.lam).mean())
    assert escalated >= 0.85
