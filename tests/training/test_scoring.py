"""Scoring a feedback log with the registered pyfunc: batched, and through mlflow's spark_udf."""

from __future__ import annotations

import os
import shutil
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
    uri, _ = registered
    frame = log_to_model_input(feedback_log)
    scored = score_frame(frame, uri, batch_size=25)  # 3 batches
    expected = predict_frame(Router(fitted_model, embedder=embedder), frame)
    assert list(scored.columns) == list(DECISION_COLUMNS) and len(scored) == 60
    assert scored["tier"].tolist() == expected["tier"].tolist()
    np.testing.assert_allclose(
        scored["p_accept"].astype(float), expected["p_accept"].astype(float), atol=1e-9
    )
    with_answers = log_to_model_input(feedback_log, with_answers=True)
    post = score_frame(with_answers, uri)
    assert set(post["action"]) <= {"accept", "escalate"}


def _spark_available() -> bool:
    try:
        import pyspark  # noqa: F401
    except ImportError:
        return False
    return shutil.which("java") is not None or bool(os.environ.get("JAVA_HOME"))


@pytest.mark.slow
@pytest.mark.skipif(not _spark_available(), reason="pyspark or a Java runtime is not installed")
def test_spark_udf_scores_the_log(registered, feedback_log, fitted_model, embedder, monkeypatch):
    from pyspark.sql import SparkSession

    uri, settings = registered
    # executors are fresh Python processes: they import this checkout and read the registry
    monkeypatch.setenv("PYTHONPATH", f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", settings.tracking_uri)
    monkeypatch.setenv("PYSPARK_PYTHON", os.sys.executable)
    spark = (
        SparkSession.builder.master("local[1]")
        .appName("cascade-router-test")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .getOrCreate()
    )
    try:
        frame = log_to_model_input(feedback_log)
        scored = spark_score(spark, spark.createDataFrame(frame), uri)
        rows = scored.select("step", "input", "decision.*").toPandas()
    finally:
        spark.stop()
    expected = predict_frame(Router(fitted_model, embedder=embedder), frame)
    assert len(rows) == 60
    assert rows["tier"].tolist() == expected["tier"].tolist()
    np.testing.assert_allclose(rows["p_accept"], expected["p_accept"].astype(float), atol=1e-9)
