"""The feedback store on a real SQLite file and on a real PostgreSQL server (a fresh database
per test): idempotence, relabelling, the retrain read window, concurrent writers."""

from __future__ import annotations

import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from router.errors import CascadeRouterError, ConfigurationError, UnknownRequestError
from router.feedback import LABELLED_COLUMNS, FeedbackStore, RequestRecord
from router.settings import RouterSettings


def make_record(request_id: str, *, step: str = "answer", created_at: float | None = None):
    extra = {} if created_at is None else {"created_at": created_at}
    return RequestRecord(
        request_id=request_id,
        step=step,
        input_text=f"question {request_id}",
        messages=[{"role": "user", "content": f"question {request_id}"}],
        target="quality:0.9",
        router_version="3",
        tier="gpt-4o-2024-05-13",
        path="escalated",
        p_accept=0.25,
        probabilities={"llama-3.1-8b-instruct": 0.25, "gpt-4o-2024-05-13": 0.9},
        answers={"llama-3.1-8b-instruct": "A", "gpt-4o-2024-05-13": "B"},
        answer="B",
        cost_usd=0.0012,
        latency_s=0.8,
        **extra,
    )


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty store: a SQLite file, or a fresh database on the session's PostgreSQL server."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'feedback.db'}"
    return request.getfixturevalue("postgres_database")()


def test_round_trip_and_idempotent_record(url: str) -> None:
    with FeedbackStore(url) as store:
        record = make_record("r1")
        store.record_request(record)
        store.record_request(make_record("r1", step="other"))  # same id: ignored
        assert store.get_request("r1") == record
        assert store.get_request("missing") is None
        assert store.counts() == {"requests": 1, "labelled": 0}


def test_feedback_relabel_keeps_latest(url: str) -> None:
    with FeedbackStore(url) as store:
        store.record_request(make_record("r1"))
        first = store.add_feedback("r1", accepted=False, score=0.0, source="user")
        time.sleep(0.01)
        second = store.add_feedback("r1", accepted=True, score=1.0, source="grader")
        assert second.created_at > first.created_at
        frame = store.labelled()
        assert list(frame.columns) == list(LABELLED_COLUMNS)
        assert len(frame) == 1
        row = frame.iloc[0]
        assert bool(row["accepted"]) is True
        assert row["score"] == 1.0 and row["source"] == "grader"
        assert row["labelled_at"] == pytest.approx(second.created_at)
        assert row["answers"] == {"llama-3.1-8b-instruct": "A", "gpt-4o-2024-05-13": "B"}
        assert row["messages"][0]["role"] == "user"
        assert store.counts() == {"requests": 1, "labelled": 1}


def test_unknown_request_is_a_clear_error(url: str) -> None:
    with FeedbackStore(url) as store:
        with pytest.raises(UnknownRequestError, match="nope") as info:
            store.add_feedback("nope", accepted=True)
        assert isinstance(info.value, CascadeRouterError)
        assert info.value.exit_code == 2
        store.record_request(make_record("x"))
        with pytest.raises(ConfigurationError, match="finite"):
            store.add_feedback("x", accepted=True, score=float("nan"))
        assert store.counts() == {"requests": 1, "labelled": 0}


def test_labelled_window(url: str) -> None:
    with FeedbackStore(url) as store:
        for i in range(3):
            store.record_request(make_record(f"r{i}"))
        store.add_feedback("r0", accepted=True)
        time.sleep(0.02)
        middle = time.time()
        time.sleep(0.02)
        store.add_feedback("r1", accepted=False)
        assert list(store.labelled(since=middle)["request_id"]) == ["r1"]
        assert list(store.labelled(until=middle)["request_id"]) == ["r0"]
        assert list(store.labelled()["request_id"]) == ["r0", "r1"]
        empty = store.labelled(since=time.time() + 100)
        assert empty.empty and list(empty.columns) == list(LABELLED_COLUMNS)


def test_reopen_persists_and_from_settings(url: str) -> None:
    with FeedbackStore.from_settings(RouterSettings(feedback_url=url)) as store:
        store.record_request(make_record("r1"))
        store.add_feedback("r1", accepted=True)
    with FeedbackStore(url) as reopened:
        assert reopened.counts() == {"requests": 1, "labelled": 1}
    assert RouterSettings().feedback_url == "sqlite:///cascade-feedback.db"


def test_bad_url_is_a_clear_error() -> None:
    with pytest.raises(ConfigurationError):
        FeedbackStore("not a url at all")


def _write_many(url: str, prefix: str, n: int) -> int:
    """Record and label ``n`` requests (run in a worker thread or process)."""
    store = FeedbackStore(url)
    try:
        for i in range(n):
            request_id = f"{prefix}-{i}"
            store.record_request(make_record(request_id))
            store.add_feedback(request_id, accepted=i % 2 == 0, source=prefix)
            store.record_request(make_record(request_id))  # duplicate delivery
        return n
    finally:
        store.close()


def test_concurrent_threads_share_one_store(url: str) -> None:
    store = FeedbackStore(url)
    try:

        def work(k: int) -> None:
            for i in range(40):
                request_id = f"t{k}-{i}"
                store.record_request(make_record(request_id))
                store.add_feedback(request_id, accepted=bool(i % 2))

        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(work, range(8)))
        assert store.counts() == {"requests": 320, "labelled": 320}
        assert store.labelled()["request_id"].nunique() == 320
    finally:
        store.close()


def test_concurrent_processes_lose_nothing(url: str) -> None:
    FeedbackStore(url).close()  # create the schema once, as the sidecar does at start-up
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=4, mp_context=context) as pool:
        done = list(pool.map(_write_many, [url] * 4, [f"p{k}" for k in range(4)], [60] * 4))
    assert sum(done) == 240
    with FeedbackStore(url) as store:
        assert store.counts() == {"requests": 240, "labelled": 240}
        frame = store.labelled()
        assert frame.groupby("source").size().to_dict() == {f"p{k}": 60 for k in range(4)}
        assert int(frame["accepted"].sum()) == 120


def _open_write_relabel(url: str, prefix: str, n: int, barrier: Any) -> int:
    """A replica's life: open the store (creating the schema), record twice, label twice."""
    barrier.wait()  # all open at once: the schema race is in the first milliseconds
    store = FeedbackStore(url)
    try:
        for i in range(n):
            request_id = f"{prefix}-{i}"
            store.record_request(make_record(request_id))
            store.record_request(make_record(request_id, step="duplicate delivery"))
            store.add_feedback(request_id, accepted=False, source=prefix)
            store.add_feedback(request_id, accepted=i % 2 == 0, source=prefix)
        return n
    finally:
        store.close()


def test_processes_opening_a_fresh_store_together_lose_nothing(url: str) -> None:
    """Replicas started together all create the schema of an empty database at once (on
    PostgreSQL that raced before the advisory lock: a unique violation in about half the
    runs), then write, relabel and deliver twice."""
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager, ProcessPoolExecutor(4, mp_context=context) as pool:
        barrier = manager.Barrier(4)
        prefixes = [f"p{k}" for k in range(4)]
        done = list(pool.map(_open_write_relabel, [url] * 4, prefixes, [30] * 4, [barrier] * 4))
    assert done == [30] * 4
    with FeedbackStore(url) as store:
        assert store.counts() == {"requests": 120, "labelled": 120}
        frame = store.labelled()
        assert frame.groupby("source").size().to_dict() == {f"p{k}": 30 for k in range(4)}
        assert int(frame["accepted"].sum()) == 60
        assert set(frame["step"]) == {"answer"}  # the first delivery wins


def test_plain_postgresql_url_uses_psycopg3(postgres_database) -> None:
    url = postgres_database()
    plain = url.replace("postgresql+psycopg://", "postgresql://")
    with FeedbackStore(plain) as store:
        store.record_request(make_record("r1"))
        assert store.counts() == {"requests": 1, "labelled": 0}
        assert "postgresql+psycopg" in repr(store) and "cascade-test" not in repr(store)


def test_bulk_writes_and_streamed_reads(url: str) -> None:
    """An import of many requests and labels at once, read back in batches and by id."""
    from router.feedback import FeedbackRecord

    with FeedbackStore(url) as store:
        records = [make_record(f"b{i:03d}", created_at=1000.0 + i) for i in range(250)]
        assert store.record_requests(records) == 250
        store.record_requests([make_record("b000", step="again")])  # still idempotent
        labels = [
            FeedbackRecord(f"b{i:03d}", i % 2 == 0, None, "import", 2000.0 + i) for i in range(250)
        ]
        assert store.add_feedback_batch(labels) == 250
        relabel = [FeedbackRecord("b001", True, 1.0, "grader", 3000.0)]
        store.add_feedback_batch(relabel)  # replaces, and moves to the end of the window
        with pytest.raises(UnknownRequestError):
            store.add_feedback_batch([FeedbackRecord("nope", True, None, None, 1.0)])
        assert store.counts() == {"requests": 250, "labelled": 250}

        whole = store.labelled()
        batches = list(store.iter_labelled(batch_size=64, columns=("request_id", "accepted")))
        assert [len(b) for b in batches] == [64, 64, 64, 58]
        streamed = pd.concat(batches, ignore_index=True)
        assert list(streamed.columns) == ["request_id", "accepted"]
        assert streamed["request_id"].tolist() == whole["request_id"].tolist()
        assert whole["request_id"].iloc[-1] == "b001" and bool(whole["accepted"].iloc[-1])
        assert whole.set_index("request_id").loc["b000", "step"] == "answer"
        window = list(store.iter_labelled(since=2100.0, until=2200.0, columns=("request_id",)))
        assert len(pd.concat(window)) == 100

        wanted = ["b007", "b003", "b001", "missing"]
        some = store.labelled_rows(wanted, columns=("request_id", "answers", "labelled_at"))
        assert some["request_id"].tolist() == ["b003", "b007", "b001"]  # by labelled_at
        assert some["answers"].iloc[0] == {"llama-3.1-8b-instruct": "A", "gpt-4o-2024-05-13": "B"}
        with pytest.raises(ConfigurationError, match="unknown feedback column"):
            store.labelled_rows(["b001"], columns=("nope",))
