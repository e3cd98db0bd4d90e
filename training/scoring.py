"""Scoring a large feedback log with the registered router: in batches, or on Spark.

The router is one MLflow pyfunc model, so the same ``predict`` runs everywhere:

* :func:`score_frame` loads ``models:/NAME@alias`` once and scores a pandas frame in batches
  (what one machine does, and what each Spark task does on its partition);
* :func:`spark_score` wraps the model in :func:`mlflow.pyfunc.spark_udf` and adds a
  ``decision`` struct column to a Spark DataFrame with ``step`` and ``input`` columns
  (``answer`` optional), so a log of millions of requests is scored in parallel by the cluster.

Both resolve a ``models:/`` or ``runs:/`` URI through the registry named by ``tracking_uri``
(default: the settings' ``CASCADE_TRACKING_URI``), never MLflow's process-wide URI; Spark gets
the downloaded model folder and ships it to its executors itself.

A feedback log from :meth:`router.feedback.FeedbackStore.labelled` becomes the model's input
with :func:`log_to_model_input` (``input_text`` → ``input``).
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from router.pyfunc import _STRING_OUTPUTS, DECISION_COLUMNS
from router.registry import open_model_folder
from router.settings import RouterSettings

__all__ = ["decision_struct_type", "log_to_model_input", "score_frame", "spark_score"]


def log_to_model_input(labelled: pd.DataFrame, with_answers: bool = False) -> pd.DataFrame:
    """The pyfunc input of a feedback log: ``step``, ``input`` (and the first tier's answer)."""
    frame = pd.DataFrame({"step": labelled["step"].astype(str), "input": labelled["input_text"]})
    if with_answers:
        first = [str(p) for p in labelled["tier"]]  # fallback; replaced below where recorded
        answers = []
        for row_answers, probs in zip(labelled["answers"], labelled["probabilities"], strict=True):
            tiers = list(probs) if isinstance(probs, dict) and probs else first
            answers.append((row_answers or {}).get(tiers[0]) if tiers else None)
        frame["answer"] = answers
    return frame


def score_frame(
    frame: pd.DataFrame,
    model_uri: str,
    batch_size: int = 4096,
    params: dict[str, Any] | None = None,
    tracking_uri: str | None = None,
) -> pd.DataFrame:
    """Decisions for every row of ``frame``, ``batch_size`` rows per ``predict`` call."""
    import mlflow

    tracking_uri = tracking_uri or RouterSettings().tracking_uri
    with open_model_folder(model_uri, tracking_uri) as (folder, _):
        model = mlflow.pyfunc.load_model(str(folder))
        parts = [
            model.predict(frame.iloc[i : i + batch_size], params=params)
            for i in range(0, len(frame), batch_size)
        ]
        if not parts:
            return model.predict(frame, params=params)
    return pd.concat(parts)


def decision_struct_type() -> str:
    """The Spark SQL type of one decision (the pyfunc's output columns)."""
    fields = [f"{c} {'string' if c in _STRING_OUTPUTS else 'double'}" for c in DECISION_COLUMNS]
    return f"struct<{', '.join(fields)}>"


def spark_score(
    spark: Any,
    frame: Any,
    model_uri: str,
    column: str = "decision",
    tracking_uri: str | None = None,
) -> Any:
    """``frame`` (a Spark DataFrame with ``step``, ``input``) plus a ``decision`` struct column.

    ``env_manager="local"``: executors use their own Python, which must have cascade-router
    installed (as the driver's does).  The model is fetched once, on the driver; Spark copies
    it to the executors when the UDF is made, so the download can go right after.
    """
    import mlflow
    from pyspark.sql.functions import struct

    tracking_uri = tracking_uri or RouterSettings().tracking_uri
    with open_model_folder(model_uri, tracking_uri) as (folder, _):
        udf = mlflow.pyfunc.spark_udf(
            spark, str(folder), result_type=decision_struct_type(), env_manager="local"
        )
    inputs = [c for c in ("step", "input", "answer") if c in frame.columns]
    return frame.withColumn(column, udf(struct(*inputs)))
