"""The router as an MLflow pyfunc model: a DataFrame of step inputs in, one decision per row out.

The logged model carries the saved :class:`~router.model.CascadeModel` folder as its artifact
``router`` and, as its model code, :mod:`router.mlflow_model`, which imports this module from the
installed package (no pickled object; the training package is not needed to score).
``mlflow.pyfunc.load_model("models:/cascade-router@champion").predict(frame)`` takes columns

* ``step`` (str): the step kind (``"intent"``, ``"math"``, ...);
* ``input`` (str): the step's input text;
* ``answer`` (str or null, optional): the first tier's answer; rows with one get the
  post-answer decision (``accept`` / ``escalate``), rows without the pre-answer one
  (``call`` / ``skip``, and ``ask_opinion`` = 1 where the policy buys second opinions);
* ``opinions`` (str or null, optional; routers trained with opinion sources): the second
  opinions on the same input, a JSON list: the peers' answers in peer order (one peer: the
  plain answer text also works) or the first tier's extra samples; rows with an answer and
  opinions are decided by that source's opinion-aware model;

and the optional params ``target`` (``"quality=0.95"``, ``"share=0.2"``, ``"cost=0.002"``) and
``opinion_source`` (``"peers"`` or ``"samples"``: whose opinions the column holds; default the
router's first source).  The output's ``opinion_source`` names the source a pre-answer decision
buys opinions from (empty where none).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.pyfunc import PythonModel, PythonModelContext
from mlflow.types.schema import ColSpec, ParamSchema, ParamSpec, Schema, TensorSpec

from router.embedders import Embedder, build_embedder
from router.errors import CascadeRouterError
from router.model import CascadeModel
from router.opinions import OpinionSource
from router.sdk import Decision, Router

ARTIFACT_KEY = "router"  # context.artifacts key; folder <model>/artifacts/router
INPUT_COLUMNS = ("step", "input")
ANSWER_COLUMN = "answer"
OPINIONS_COLUMN = "opinions"
TARGET_PARAM = "target"
SOURCE_PARAM = "opinion_source"
DECISION_COLUMNS = (
    "step",
    "tier",
    "action",
    "p_accept",
    "p_next",
    "gain",
    "p_accept_answer",
    "lam",
    "skip_threshold",
    "ask_opinion",
    "opinion_source",
)
_STRING_OUTPUTS = ("step", "tier", "action", "opinion_source")


def model_code_path() -> Path:
    """The file MLflow logs as the model's code (:mod:`router.mlflow_model`)."""
    return Path(__file__).with_name("mlflow_model.py")


def router_signature() -> ModelSignature:
    """The model's signature, written out rather than inferred (inferring runs the model)."""
    inputs = Schema(
        [
            ColSpec("string", "step"),
            ColSpec("string", "input"),
            ColSpec("string", ANSWER_COLUMN, required=False),
            ColSpec("string", OPINIONS_COLUMN, required=False),
        ]
    )
    columns: list[ColSpec | TensorSpec] = [
        ColSpec("string" if c in _STRING_OUTPUTS else "double", c) for c in DECISION_COLUMNS
    ]
    outputs = Schema(columns)
    params = ParamSchema(
        [ParamSpec(TARGET_PARAM, "string", None), ParamSpec(SOURCE_PARAM, "string", None)]
    )
    return ModelSignature(inputs=inputs, outputs=outputs, params=params)


@functools.lru_cache(maxsize=4)
def _embedder_for(reference_json: str) -> Embedder:
    return build_embedder(json.loads(reference_json))


def shared_embedder(reference: dict[str, Any]) -> Embedder:
    """One embedder per reference in this process (the encoder is loaded once, lazily)."""
    return _embedder_for(json.dumps(reference, sort_keys=True))


def _invalid(message: str) -> MlflowException:
    return MlflowException(message, error_code=INVALID_PARAMETER_VALUE)


def _is_missing(value: Any) -> bool:
    if value is None:
        return True
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):  # a list or an array: not a scalar null
        return False


def _text_column(frame: pd.DataFrame, column: str) -> list[str]:
    values = frame[column].tolist()
    for row, value in enumerate(values):
        if _is_missing(value):
            raise _invalid(f"column {column!r} is null at row {row}: every row needs a {column}")
    return [str(v) for v in values]


def decisions_frame(decisions: list[Decision], index: pd.Index | None = None) -> pd.DataFrame:
    """Decisions as a DataFrame with :data:`DECISION_COLUMNS` (None → NaN in float columns)."""
    frame = pd.DataFrame(
        [d.to_dict() for d in decisions], columns=list(DECISION_COLUMNS), index=index
    )
    frame["opinion_source"] = frame["opinion_source"].fillna("")
    for column in DECISION_COLUMNS:
        if column not in _STRING_OUTPUTS:
            frame[column] = frame[column].astype(np.float64)
    return frame


def json_safe(frame: pd.DataFrame) -> pd.DataFrame:
    """The decisions with every NaN or ±inf number replaced by None (JSON ``null``).

    MLflow's scoring server writes predictions with Python's ``json``, which emits ``NaN`` and
    ``Infinity`` — not JSON, and refused by strict parsers.  A non-finite value here means "not
    applicable" (no answer-aware probability without an answer; an unbounded threshold), so
    ``null`` says the same thing.  Number columns become ``object`` columns of floats and Nones
    (Parquet and Spark read them back as nullable doubles).
    """
    out = frame.copy()
    for column in DECISION_COLUMNS:
        if column in _STRING_OUTPUTS or column not in out.columns:
            continue
        values = out[column].to_numpy(np.float64)
        finite = np.isfinite(values)
        if finite.all():
            continue
        out[column] = pd.Series(
            [float(v) if ok else None for v, ok in zip(values, finite, strict=True)],
            index=out.index,
            dtype=object,
        )
    return out


def predict_frame(
    router: Router, model_input: pd.DataFrame, params: dict[str, Any] | None = None
) -> pd.DataFrame:
    """Decisions for a frame of step inputs (see the module docstring); one output row per row."""
    if not isinstance(model_input, pd.DataFrame):
        try:
            model_input = pd.DataFrame(model_input)
        except (TypeError, ValueError) as exc:
            raise _invalid(
                f"cascade router input must be a table with columns 'step' and 'input': {exc}"
            ) from exc
    missing = [c for c in INPUT_COLUMNS if c not in model_input.columns]
    if missing:
        got = [str(c) for c in model_input.columns]
        raise _invalid(
            f"cascade router input is missing column(s) {', '.join(map(repr, missing))}: it needs "
            f"'step' and 'input' (and optionally 'answer'); got {got}"
        )
    target = (params or {}).get(TARGET_PARAM) or None
    steps = _text_column(model_input, "step")
    texts = _text_column(model_input, "input")
    n = len(steps)
    if ANSWER_COLUMN in model_input.columns:
        raw = model_input[ANSWER_COLUMN].tolist()
        answers: list[str | None] = [None if _is_missing(a) else str(a) for a in raw]
    else:
        answers = [None] * n
    source_name = (params or {}).get(SOURCE_PARAM) or None
    sources = router.model.opinion_sources
    try:
        source = router.model.opinion_source(source_name) if source_name else None
    except CascadeRouterError as exc:
        raise _invalid(str(exc)) from exc
    source = source or (sources[0] if sources else None)
    opinions = _opinions_column(model_input, n, source)
    with_answer = [j for j in range(n) if answers[j] is not None and opinions[j] is None]
    with_opinions = [j for j in range(n) if answers[j] is not None and opinions[j] is not None]
    without = [j for j in range(n) if answers[j] is None]
    out: list[Decision | None] = [None] * n
    try:
        if without:
            pre = router.decide_batch(
                [steps[j] for j in without], [texts[j] for j in without], target=target
            )
            for j, d in zip(without, pre, strict=True):
                out[j] = d
        if with_answer:
            post = router.decide_batch(
                [steps[j] for j in with_answer],
                [texts[j] for j in with_answer],
                answers=[answers[j] for j in with_answer],
                target=target,
            )
            for j, d in zip(with_answer, post, strict=True):
                out[j] = d
        if with_opinions:
            post = router.decide_batch(
                [steps[j] for j in with_opinions],
                [texts[j] for j in with_opinions],
                answers=[answers[j] for j in with_opinions],
                target=target,
                opinions=[opinions[j] or [] for j in with_opinions],
                opinion_source=None if source is None else source.name,
            )
            for j, d in zip(with_opinions, post, strict=True):
                out[j] = d
    except CascadeRouterError as exc:  # a bad target, mostly: a client error, not a crash
        raise _invalid(str(exc)) from exc
    return decisions_frame([d for d in out if d is not None], index=model_input.index)


def _opinions_column(
    frame: pd.DataFrame, n: int, source: OpinionSource | None
) -> list[list[str | None] | None]:
    """Per row: the source's opinions (a JSON list, or one plain answer for one), or None."""
    if OPINIONS_COLUMN not in frame.columns:
        return [None] * n
    out: list[list[str | None] | None] = []
    for row, value in enumerate(frame[OPINIONS_COLUMN].tolist()):
        if _is_missing(value):
            out.append(None)
            continue
        parsed: Any = value
        if isinstance(value, str):
            try:
                parsed = json.loads(value)
            except json.JSONDecodeError:
                parsed = [value]
        if not isinstance(parsed, list | tuple | np.ndarray):
            parsed = [value]
        if source is None:
            raise _invalid(
                f"column 'opinions' at row {row}: this router was trained without second opinions"
            )
        if len(parsed) != source.size:
            what = "extra samples" if source.is_samples else "peer answer(s)"
            raise _invalid(
                f"column 'opinions' at row {row}: this router takes {source.size} {what} "
                f"from its {source.name}, got {len(parsed)}"
            )
        out.append([None if _is_missing(v) else str(v) for v in parsed])
    return out


class CascadeRouterPyfunc(PythonModel):
    """Decisions of a saved cascade router, calling no model (no backends)."""

    def __init__(self) -> None:
        self.router: Router | None = None

    def load_context(self, context: PythonModelContext) -> None:
        model = CascadeModel.load(context.artifacts[ARTIFACT_KEY], num_threads=1)
        self.router = Router(model, embedder=shared_embedder(model.embedder_ref_))

    def predict(
        self,
        context: PythonModelContext | None,
        model_input: pd.DataFrame,
        params: dict[str, Any] | None = None,
    ) -> pd.DataFrame:
        if self.router is None:
            if context is None:
                raise MlflowException("CascadeRouterPyfunc.predict before load_context")
            self.load_context(context)
        assert self.router is not None
        return json_safe(predict_frame(self.router, model_input, params))
