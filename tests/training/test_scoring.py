"""Scoring a feedback log with the registered pyfunc: batched, and through mlflow's spark_udf."""

from __future__ import annotations

import time
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from router.feedback import FeedbackStore, RequestRecord
from router.pyfunc import DECISION_COLUMNS, predict_frame
from router.sdk import Router
from router.settings import RouterSettings
from training.registry import log_router, open_tracking
from training.scoring import log_to_model_input, score_frame, spark_score

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def registered(fitted_model, tmp_path_factory) -> tuple[str, RouterSettings]:
    root = tmp_path_factory.mktemp("scoring")
    settings = RouterSettings(
        tracking_uri=f"sqlite:///{root / 'mlflow.db'}",
        artifact_location=str(root / "mlruns"),
        registered_model="scoring-router",
        feedback_url=f"sqlite:///{root / 'feedback.db'}",
    )
    open_tracking(settings)
    folder = fitted_model.save(root / "saved" / "router")
    with mlflow.start_run() as run:
        info = log_router(folder, run=run, input_example=None, registered_model="scoring-router")
    return f"models:/scoring-router/{info.registered_model_version}", settings


@pytest.fixture(scope="module")
def feedback_log(split_tables, registered) -> pd.DataFrame:
    _, test = split_tables
    _, settings = registered
    with FeedbackStore.from_settings(settings) as store:
        for i in range(60):
            rid = f"r{i}"
            store.record_request(
                RequestRecord(
                    rid,
                    str(test.steps[i]),
                    test.prompts[i],
                    [],
                    "quality_ratio=0.95",
                    "1",
                    test.tiers[0],
                    "verified",
                    0.6,
                    {t: 0.6 for t in test.tiers},
                    {test.tiers[0]: test.responses[0][i] or ""},
                    test.responses[0][i] or "",
                    0.001,
                    0.1,
                    time.time(),
                )
            )
            store.add_feedback(rid, accepted=bool(test.scores[i, 0] >= 0.5))
        return store.labelled()


def test_score_frame_matches_the_router(registered, feedback_log, fitted_model, embedder) -> None:
    uri, settings = registered
    frame = log_to_model_input(feedback_log)
    scored = score_frame(frame, uri, batch_size=25, tracking_uri=settings.tracking_uri)
    expected = predict_frame(Router(fitted_model, embedder=embedder), frame)
    assert list(scored.columns) == list(DECISION_COLUMNS) and len(scored) == 60
    assert scored["tier"].tolist() == expected["tier"].tolist()
    np.testing.assert_allclose(
        scored["p_accept"].astype(float), expected["p_accept"].astype(float), atol=1e-9
    )
    with_answers = log_to_model_input(feedback_log, with_answers=True)
    post = score_frame(with_answers, uri, tracking_uri=settings.tracking_uri)
    assert set(post["action"]) <= {"accept", "escalate"}


@pytest.mark.slow
def test_spark_udf_scores_the_log(registered, feedback_log, fitted_model, embedder, spark) -> None:
    """mlflow's spark_udf on a local[2] session: the same decisions as the router in process
    (the model resolved through the test's registry, not a process-wide tracking URI)."""
    uri, settings = registered
    frame = log_to_model_input(feedback_log)
    data = spark.session.createDataFrame(frame.assign(row=range(len(frame)))).repartition(2)
    scored = spark_score(spark.session, data, uri, tracking_uri=settings.tracking_uri)
    rows = scored.select("row", "decision.*").toPandas().sort_values("row")  # Spark reorders
    expected = predict_frame(Router(fitted_model, embedder=embedder), frame)
    assert len(rows) == 60
    assert rows["tier"].tolist() == expected["tier"].tolist()
    assert rows["action"].tolist() == expected["action"].tolist()
    np.testing.assert_allclose(rows["p_accept"], expected["p_accept"].astype(float), atol=1e-9)
