"""The bundled ``tools`` dataset (BFCL questions, two local models) loads and validates like
every other, and carries what its README promises."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest

from router.backends import step_text
from router.backends.request import ChatRequest, recorded_message
from router.data import bundled_data_dir, bundled_dataset, load_outcomes, load_prices, load_table
from router.validation import validate_answer

TIERS = ["smollm2-135m-instruct", "gemma-3-270m"]
CATEGORIES = {"simple_python", "multiple", "irrelevance", "live_simple"}


@pytest.fixture(scope="module")
def frame():
    return load_outcomes([bundled_dataset("tools")], models=TIERS)


@pytest.fixture(scope="module")
def companion() -> dict[str, dict]:
    with gzip.open(bundled_data_dir() / "tools_bfcl.jsonl.gz", "rt", encoding="utf-8") as fh:
        return {row["prompt_id"]: row for row in map(json.loads, fh)}


def test_every_question_has_both_tiers_graded(frame) -> None:
    assert frame["prompt_id"].nunique() >= 30
    assert (frame.groupby("prompt_id")["model"].nunique() == 2).all()
    assert set(frame["step"]) == {"tool_selection"}
    assert set(frame["task"]) <= CATEGORIES and {"simple_python", "irrelevance"} <= set(
        frame["task"]
    )
    assert set(frame["score"]) <= {0.0, 1.0}
    assert set(frame["valid"]) <= {0.0, 1.0}  # every request offers tools: always a verdict
    assert (frame["cost_usd"] > 0).mean() > 0.9 and (frame["input_tokens"] > 50).mean() > 0.9
    prices = load_prices()
    assert all(model in prices for model in TIERS)


def test_it_loads_as_a_table_with_the_validators_verdicts(frame) -> None:
    table = load_table([bundled_dataset("tools")], TIERS)
    assert len(table) == frame["prompt_id"].nunique() and table.dropped_prompts == 0
    assert table.validity is not None and np.isfinite(table.validity).all()
    assert set(table.steps) == {"tool_selection"}


def test_rows_agree_with_the_requests_and_grades_beside_them(frame, companion) -> None:
    assert set(companion) == set(frame["prompt_id"])
    for row in frame.itertuples():
        question = companion[row.prompt_id]
        assert question["category"] == row.task
        request = ChatRequest.of(
            question["request"]["messages"],
            **{k: v for k, v in question["request"].items() if k != "messages"},
        )
        assert row.prompt == step_text(request)  # the router's window of the request sent
        grade = question["grades"][row.model]
        assert float(grade["correct"]) == row.score
        if grade["error_type"] in ("timeout", "server_error"):
            assert row.valid == 0.0 and row.response == ""
        else:
            assert row.valid == validate_answer(request, recorded_message(row.response)).feature


def test_the_licence_and_attribution_ship_with_it() -> None:
    folder = bundled_data_dir()
    assert "Apache License" in (folder / "LICENSE-APACHE-2.0").read_text()
    readme = (folder / "README.md").read_text()
    assert "Berkeley Function Calling Leaderboard" in readme and "Changes made" in readme
    assert "stand in for a real small → frontier pair" in readme
