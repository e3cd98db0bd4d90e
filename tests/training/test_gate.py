"""The gate's rules on given scores, and the feedback → training rows conversion."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest

from router.errors import ConfigurationError
from router.feedback.drift import calibration_drift, drift_metrics
from router.policy import Target
from training.feedback_data import concat_tables, feedback_table, prompt_key, table_keys
from training.gate import GateConfig, ModelScore, decide, target_miss


def score(apgr=0.56, ece=0.03, miss=0.0, brier=0.2, fb_apgr=None) -> ModelScore:
    feedback = {"brier": brier} | ({} if fb_apgr is None else {"apgr": fb_apgr})
    return ModelScore(
        {"apgr": apgr, "ece": ece, "target_miss": miss, "frontier_share": 0.7}, feedback
    )


def test_better_challenger_passes_every_check() -> None:
    decision = decide(score(apgr=0.58), score(apgr=0.56), GateConfig(margin=0.005))
    assert decision.promote
    assert all(c.passed for c in decision.checks)
    assert "PROMOTE" in decision.report()
    assert decision.metrics()["gate.promote"] == 1.0


@pytest.mark.parametrize(
    ("challenger", "failed"),
    [
        (score(apgr=0.562), "frozen apgr"),  # better, but not by the margin
        (score(apgr=0.50), "frozen apgr"),
        (score(apgr=0.60, ece=0.08), "frozen ece"),
        (score(apgr=0.60, miss=0.05), "frozen target miss"),
        (score(apgr=0.60, brier=0.3), "feedback brier"),
        (score(apgr=0.60, fb_apgr=0.50), "feedback apgr"),
    ],
)
def test_each_rule_can_refuse(challenger: ModelScore, failed: str) -> None:
    champion = score(fb_apgr=0.56)
    decision = decide(challenger, champion, GateConfig(margin=0.005))
    assert not decision.promote
    assert [c.name for c in decision.checks if not c.passed] == [failed]
    assert "KEEP CHAMPION" in decision.report()


def test_unknown_gate_metric_is_a_clear_error() -> None:
    with pytest.raises(ConfigurationError, match="unknown gate metric"):
        GateConfig(metric="vibes")
    assert decide(score(), score(), GateConfig(metric="cost_saved")).checks[0].name == (
        "frozen cost_saved"
    )


def test_without_champion_a_random_router_fails() -> None:
    assert not decide(score(apgr=0.501), None, GateConfig()).promote
    assert decide(score(apgr=0.55), None, GateConfig()).promote


def test_target_miss() -> None:
    assert target_miss(Target(quality_ratio=0.95), {"quality_ratio": 0.93}) == pytest.approx(0.02)
    assert target_miss(Target(quality_ratio=0.95), {"quality_ratio": 0.97}) == 0.0
    assert target_miss(Target(max_frontier_share=0.3), {"frontier_share": 0.4}) == pytest.approx(
        0.1
    )
    assert target_miss(Target(max_cost=0.002), {"cost_per_request": 0.003}) == pytest.approx(0.5)


def labelled_frame(small_table, n: int, tier_of=lambda i: i % 2) -> pd.DataFrame:
    rows = []
    now = time.time()
    for i in range(n):
        t = tier_of(i)
        tier = small_table.tiers[t]
        rows.append(
            {
                "request_id": f"r{i}",
                "step": str(small_table.steps[i]),
                "input_text": "  " + small_table.prompts[i] + " ",  # whitespace differs
                "tier": tier,
                "p_accept": 0.6,
                "probabilities": {small_table.tiers[0]: 0.6, small_table.tiers[1]: 0.8},
                "answers": {tier: f"answer {i}"},
                "accepted": bool(small_table.scores[i, t] < 0.5),  # production disagrees
                "labelled_at": now + i,
            }
        )
    return pd.DataFrame(rows)


def test_feedback_rows_completed_from_lookup(small_table) -> None:
    frame = labelled_frame(small_table, 40)
    rows = feedback_table(frame, small_table.tiers, lookup=small_table)
    assert rows.table is not None and len(rows.table) == 40
    assert rows.counts["completed_from_lookup"] == 40
    index = {k: i for i, k in enumerate(table_keys(small_table))}
    for j, prompt in enumerate(rows.table.prompts):
        i = index[prompt_key(prompt)]
        t = i % 2
        # the production label overrides the recorded score of the tier that answered
        assert rows.table.scores[j, t] == float(small_table.scores[i, t] < 0.5)
        assert rows.table.scores[j, 1 - t] == small_table.scores[i, 1 - t]
        assert rows.table.responses[t][j] == f"answer {i}"
    assert sum(rows.by_step_label.values()) == 40


def test_feedback_rows_without_lookup_drop_or_impute(small_table) -> None:
    frame = labelled_frame(small_table, 30)
    dropped = feedback_table(frame, small_table.tiers)
    assert dropped.table is None and dropped.counts["dropped_incomplete"] == 30
    imputed = feedback_table(
        frame,
        small_table.tiers,
        impute="parent",
        imputer=lambda texts, steps: np.full((len(texts), 2), 0.7),
    )
    assert imputed.table is not None and len(imputed.table) == 30
    scores = imputed.table.scores
    assert np.isin(scores, [0.0, 1.0, 0.7]).all() and (scores == 0.7).sum() == 30
    with pytest.raises(ConfigurationError):
        feedback_table(frame, small_table.tiers, impute="parent")


def test_feedback_rows_exclude_and_latest_label_wins(small_table) -> None:
    frame = labelled_frame(small_table, 10)
    again = frame.iloc[[0]].copy()
    again["request_id"] = "r0-again"
    again["accepted"] = not bool(frame.iloc[0]["accepted"])
    again["labelled_at"] = frame["labelled_at"].max() + 1
    frame = pd.concat([frame, again], ignore_index=True)
    exclude = {prompt_key(small_table.prompts[1])}
    rows = feedback_table(frame, small_table.tiers, lookup=small_table, exclude=exclude)
    assert rows.counts["superseded_same_input"] == 1
    assert rows.counts["dropped_excluded"] == 1
    assert rows.table is not None and len(rows.table) == 9
    j = [prompt_key(p) for p in rows.table.prompts].index(prompt_key(small_table.prompts[0]))
    assert rows.table.scores[j, 0] == float(again.iloc[0]["accepted"])
    merged = concat_tables([small_table.subset(np.arange(20)), rows.table])
    assert len(merged) == 20  # the feedback rows replace the base rows of the same inputs
    assert sum(str(p).startswith("feedback/") for p in merged.prompt_ids) == 9


def test_calibration_drift_flags_a_shifted_step() -> None:
    n = 200
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "step": ["math"] * n + ["law"] * n,
            "tier": ["small"] * (2 * n),
            "p_accept": [0.7] * (2 * n),
            "probabilities": [{"small": 0.7}] * (2 * n),
            # math is calibrated (70% accepted); law's acceptance fell to 40%
            "accepted": list(rng.random(n) < 0.7) + list(rng.random(n) < 0.4),
            "labelled_at": np.arange(2 * n, dtype=float),
        }
    )
    drift = {d.step: d for d in calibration_drift(frame, window=150, threshold=0.1)}
    assert not drift["math"].flagged and drift["law"].flagged
    assert drift["law"].n == 150 and drift["law"].gap > 0.2
    metrics = drift_metrics(list(drift.values()))
    assert metrics["drift.law.flagged"] == 1.0 and metrics["drift.any_flagged"] == 1.0
    assert calibration_drift(frame.iloc[:0]) == []


def test_held_out_slice_is_split_by_input() -> None:
    from training.retrain import split_recent

    # 10 inputs asked 5 times each, round robin: the latest labels touch every input
    frame = pd.DataFrame(
        {
            "input_text": [f"question {k % 10}" for k in range(50)],
            "labelled_at": np.arange(50, dtype=float),
        }
    )
    train, held = split_recent(frame, 0.2, exclude={prompt_key("question 9")})
    held_inputs = set(held["input_text"])
    assert held_inputs == {"question 7", "question 8"}  # the 2 most recent of 9 eligible
    assert len(held) == 10  # with every label of those inputs
    assert not held_inputs & set(train["input_text"])
    assert len(train) + len(held) == 50
    small = frame.iloc[:10]
    assert split_recent(small, 0.2, set())[1].empty  # too few labels for a slice
