"""Choosing training rows from a large feedback window: the light first pass, the latest label
of each input, and the stratified cap (real stores: SQLite and PostgreSQL)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from router.feedback import FeedbackRecord, FeedbackStore, RequestRecord
from training.feedback_data import prompt_key
from training.feedback_window import key_hash, read_index, select_rows, stratified_sample

TIERS = ("small", "frontier")


def _record(i: int, text: str, step: str, tier: str) -> RequestRecord:
    return RequestRecord(
        request_id=f"r{i:04d}",
        step=step,
        input_text=text,
        messages=[{"role": "user", "content": text}],
        target="quality_ratio=0.95",
        router_version="1",
        tier=tier,
        path="x",
        p_accept=0.4,
        probabilities={"small": 0.4, "frontier": 0.8},
        answers={tier: f"answer {i}"},
        answer=f"answer {i}",
        cost_usd=0.001,
        latency_s=0.1,
        created_at=float(i),
    )


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path) -> FeedbackStore:
    url = (
        f"sqlite:///{tmp_path / 'fb.db'}"
        if request.param == "sqlite"
        else request.getfixturevalue("postgres_database")()
    )
    with FeedbackStore(url) as opened:
        yield opened


def test_index_is_light_and_matches_the_full_read(store: FeedbackStore) -> None:
    records = [
        _record(i, f"question {i % 150}  ", "math" if i % 3 else "law", TIERS[i % 2])
        for i in range(400)
    ]
    store.record_requests(records)
    store.add_feedback_batch(
        FeedbackRecord(r.request_id, i % 4 != 0, None, None, 1000.0 + i)
        for i, r in enumerate(records)
    )
    index = read_index(store, batch_size=97)
    full = store.labelled()
    assert index["request_id"].tolist() == full["request_id"].tolist()
    assert list(index.columns) == [
        "request_id", "key", "step", "tier", "accepted", "labelled_at", "predicted",
        "target", "cost_usd", "score", "router_version",
    ]  # fmt: skip
    # what the production check of a certified target reads, as the full read has it
    assert index["target"].astype(str).tolist() == full["target"].astype(str).tolist()
    np.testing.assert_allclose(index["cost_usd"], full["cost_usd"])
    np.testing.assert_allclose(index["score"], full["score"].astype(float))
    assert index["key"].tolist() == [key_hash(t) for t in full["input_text"]]
    assert key_hash("question 3 ") == key_hash(" question   3")  # the prompt key's whitespace
    np.testing.assert_allclose(
        index["predicted"], [0.4 if t == "small" else 0.8 for t in full["tier"]]
    )
    window = read_index(store, since=1100.0, until=1200.0)
    assert len(window) == 100

    chosen, counts = select_rows(index, TIERS, {key_hash("question 7")}, 60, seed=0)
    assert counts == {
        "dropped_unknown_tier": 0,
        "dropped_excluded": 3,  # question 7 was asked three times (i = 7, 157, 307)
        "superseded_same_input": 400 - 3 - 149,
        "capped": 149 - 60,
    }
    assert len(chosen) == 60 and chosen["key"].is_unique
    latest = index.sort_values("labelled_at").drop_duplicates("key", keep="last")
    assert set(chosen["request_id"]) <= set(latest["request_id"])
    fetched = store.labelled_rows(chosen["request_id"], columns=("request_id", "input_text"))
    assert sorted(fetched["request_id"]) == sorted(chosen["request_id"])
    assert {prompt_key(t) for t in fetched["input_text"]}.isdisjoint({"question 7"})


def test_stratified_sample_keeps_each_stratum_share() -> None:
    rng = np.random.default_rng(1)
    frame = pd.DataFrame(
        {
            "key": rng.integers(-(2**63), 2**63 - 1, size=5000, dtype=np.int64),
            "step": rng.choice(["a", "b", "c"], size=5000, p=[0.6, 0.3, 0.1]),
            "tier": rng.choice(list(TIERS), size=5000, p=[0.7, 0.3]),
            "accepted": rng.random(5000) < 0.55,
        }
    )
    sample = stratified_sample(frame, 1000, seed=3)
    assert len(sample) == 1000 and sample.index.is_monotonic_increasing
    share = sample.groupby(["step", "tier", "accepted"]).size() / 1000
    full = frame.groupby(["step", "tier", "accepted"]).size() / 5000
    np.testing.assert_allclose(share.reindex(full.index).fillna(0), full, atol=0.002)
    assert stratified_sample(frame, 1000, seed=3).index.tolist() == sample.index.tolist()
    assert len(stratified_sample(frame, 10_000, seed=3)) == 5000  # under the cap: all
    # stable: a smaller cap keeps a subset of a larger one; another seed, another sample
    assert set(stratified_sample(frame, 400, seed=3).index) < set(sample.index)
    assert set(stratified_sample(frame, 1000, seed=4).index) != set(sample.index)
