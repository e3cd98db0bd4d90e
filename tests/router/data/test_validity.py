"""Recorded data carries the validator's verdicts and tool-calling answers: the ``valid`` column
and a ``response`` that is an assistant message's JSON reach the table as training reads them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from router.backends import AssistantMessage, FunctionCall, ToolCall, message_text, record_text
from router.data import OutcomeTable, load_outcomes, write_outcomes
from router.errors import DataValidationError

CALL = AssistantMessage(
    tool_calls=[
        ToolCall(id="c1", function=FunctionCall(name="get_weather", arguments='{"city":"Paris"}'))
    ]
)


def rows(valid: list[object]) -> pd.DataFrame:
    out = []
    for i, verdict in enumerate(valid):
        for model, response in (("small", record_text(CALL) if i == 0 else "text"), ("big", "ok")):
            out.append(
                {
                    "prompt_id": f"p{i}",
                    "prompt": f"prompt {i}",
                    "model": model,
                    "score": 1.0,
                    "response": response,
                    "valid": verdict if model == "small" else None,
                }
            )
    return pd.DataFrame(out)


def test_verdicts_and_tool_calls_reach_the_table(tmp_path: Path) -> None:
    path = tmp_path / "calls.jsonl"
    rows([True, False, None]).to_json(path, orient="records", lines=True)
    frame = load_outcomes([path])
    small = frame[frame["model"] == "small"]
    np.testing.assert_array_equal(small["valid"].to_numpy(), [1.0, 0.0, np.nan])
    table = OutcomeTable.from_long(frame, ["small", "big"])
    assert table.validity is not None
    np.testing.assert_array_equal(table.validity[:, 0], [1.0, 0.0, np.nan])
    assert np.isnan(table.validity[:, 1]).all()
    assert table.subset(np.array([1])).validity[0, 0] == 0.0  # type: ignore[index]
    # the recorded message is read as its text form, as routing reads a live answer
    assert table.responses[0][0] == message_text(CALL)
    assert json.loads(table.responses[0][0])["tool_calls"][0]["name"] == "get_weather"
    # written back, the verdicts survive
    out = write_outcomes(frame, tmp_path / "again.parquet")
    assert load_outcomes([out])["valid"].notna().sum() == 2


def test_no_verdicts_no_validity(tmp_path: Path) -> None:
    path = tmp_path / "plain.csv"
    rows([None, None]).drop(columns=["valid"]).to_csv(path, index=False)
    table = OutcomeTable.from_long(load_outcomes([path]), ["small", "big"])
    assert table.validity is None


def test_a_bad_verdict_names_the_row(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    rows(["maybe"]).to_csv(path, index=False)
    with pytest.raises(DataValidationError, match="valid 'maybe' is not true/false"):
        load_outcomes([path])
