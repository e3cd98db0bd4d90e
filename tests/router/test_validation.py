"""The validator stage: deterministic checks of an answer against the shape its request asks for
(tool names, argument schemas, tool_choice, parallel calls, JSON response formats)."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from router.backends import AssistantMessage, FunctionCall, ToolCall, as_request
from router.validation import Verdict, validate_answer
from tests.router.backends.test_requests import PERSON, SEARCH, WEATHER

NAMED = {"type": "function", "function": {"name": "get_weather"}}
GOOD_ARGS = '{"city": "Paris", "unit": "c"}'


def calls(*pairs: tuple[str, str]) -> AssistantMessage:
    return AssistantMessage(
        tool_calls=[
            ToolCall(id=f"c{k}", function=FunctionCall(name=name, arguments=arguments))
            for k, (name, arguments) in enumerate(pairs)
        ]
    )


def text(content: str | None = None, refusal: str | None = None) -> AssistantMessage:
    return AssistantMessage(content=content, refusal=refusal)


@pytest.mark.parametrize(
    ("fields", "message", "valid", "reason"),
    [
        # nothing constrained: no verdict, whatever the answer
        ({}, text("hello"), None, None),
        ({"response_format": {"type": "text"}}, text("{"), None, None),
        ({"tools": [WEATHER], "tool_choice": "none"}, text("hi"), None, None),
        # tools offered with auto: a text answer or a valid call
        ({"tools": [WEATHER]}, text("It is sunny."), True, None),
        ({"tools": [WEATHER, SEARCH]}, calls(("search", "{}")), True, None),
        ({"tools": [WEATHER]}, calls(("get_weather", GOOD_ARGS)), True, None),
        ({"tools": [WEATHER]}, calls(("lookup", "{}")), False, "not among the tools"),
        ({"tools": [WEATHER]}, calls(("get_weather", "{}")), False, "required property"),
        (
            {"tools": [WEATHER]},
            calls(("get_weather", '{"city": "Paris", "unit": "c", "extra": 1}')),
            False,
            "Additional properties",
        ),
        ({"tools": [WEATHER]}, calls(("get_weather", "[1]")), False, "not an object"),
        ({"tools": [WEATHER]}, calls(("get_weather", "{'city': 1}")), False, "is not JSON"),
        ({"tools": [SEARCH]}, calls(("search", "not json")), False, "is not JSON"),
        # tool_choice
        ({"tools": [WEATHER], "tool_choice": NAMED}, text("sunny"), False, "requires a call"),
        ({"tools": [WEATHER], "tool_choice": "required"}, text("sunny"), False, "requires"),
        (
            {"tools": [WEATHER], "tool_choice": "required"},
            text(refusal="I cannot."),
            False,
            "a refusal",
        ),
        (
            {"tools": [WEATHER, SEARCH], "tool_choice": NAMED},
            calls(("search", "{}")),
            False,
            "tool_choice names 'get_weather'",
        ),
        (
            {"tools": [WEATHER], "tool_choice": "none"},
            calls(("get_weather", GOOD_ARGS)),
            False,
            "'none'",
        ),
        # parallel calls
        (
            {"tools": [WEATHER, SEARCH], "parallel_tool_calls": False},
            calls(("get_weather", GOOD_ARGS), ("search", "{}")),
            False,
            "parallel_tool_calls is false",
        ),
        (
            {"tools": [WEATHER, SEARCH]},
            calls(("get_weather", GOOD_ARGS), ("search", "{}")),
            True,
            None,
        ),
        # no tools offered at all, yet a call
        ({}, calls(("get_weather", GOOD_ARGS)), False, "no tools were offered"),
        # response formats
        ({"response_format": {"type": "json_object"}}, text('{"a": 1}'), True, None),
        ({"response_format": {"type": "json_object"}}, text("[1, 2]"), False, "not an object"),
        ({"response_format": {"type": "json_object"}}, text("Sure: {"), False, "is not JSON"),
        ({"response_format": PERSON}, text('{"name": "Ann", "age": 31}'), True, None),
        ({"response_format": PERSON}, text('{"name": "Ann", "age": "31"}'), False, "'31' is not"),
        ({"response_format": PERSON}, text('{"name": "Ann"}'), False, "'age' is a required"),
        ({"response_format": PERSON}, text(refusal="No."), False, "refuses"),
        (
            {"response_format": PERSON, "max_tokens": 5},
            text('{"name": "An'),  # cut short by the token limit
            False,
            "is not JSON",
        ),
    ],
)
def test_verdicts(
    fields: dict[str, Any], message: AssistantMessage, valid: bool | None, reason: str | None
) -> None:
    found = validate_answer(as_request("What is the weather in Paris?", **fields), message)
    assert found.valid is valid, found
    if reason is None:
        assert found.reason is None
    else:
        assert reason in str(found.reason)


def test_the_feature_is_missing_where_nothing_is_constrained() -> None:
    assert math.isnan(Verdict(None).feature)
    assert Verdict(True).feature == 1.0 and Verdict(False, "x").feature == 0.0


def test_a_schema_is_compiled_once() -> None:
    from router.validation import compiled

    request = as_request("x", response_format=PERSON)
    before = compiled.cache_info().hits
    for age in range(5):
        validate_answer(request, text(json.dumps({"name": "Ann", "age": age})))
    assert compiled.cache_info().hits >= before + 5


def test_validity_is_an_answer_feature_of_models_trained_with_it(
    small_table, embedder, saved_model_dir, tmp_path
) -> None:
    """A table that records the validator's verdicts trains routers that read it
    (``answer_validity``, format 6); routers trained without it ignore the verdict."""
    import dataclasses

    import numpy as np

    from router.model import FORMAT_VERSION, CascadeModel

    table = small_table.subset(np.arange(400))
    # verdicts that carry signal (refused answers were mostly wrong), NaN where unconstrained
    rng = np.random.default_rng(0)
    verdicts = table.labels(0).astype(float)
    flip = rng.random(len(table)) < 0.1
    verdicts[flip] = 1.0 - verdicts[flip]
    verdicts[::3] = np.nan
    validity = np.column_stack([verdicts, np.full(len(table), np.nan)])
    recorded = dataclasses.replace(table, validity=validity)
    params = {"n_estimators": 40, "early_stopping_rounds": 10}
    model = CascadeModel(list(table.tiers), acceptance_params=params, capacity_cv_below=0).fit(
        recorded, embedder
    )
    assert model.answer_validity_
    folder = model.save(tmp_path / "with-validity")
    saved = json.loads((folder / "router.json").read_text())
    assert saved["format_version"] == FORMAT_VERSION == 6 and saved["answer_validity"] is True
    loaded = CascadeModel.load(folder)
    assert loaded.answer_validity_
    texts, steps = table.prompts[:6], [str(s) for s in table.steps[:6]]
    X = loaded.input_matrix(texts, steps, loaded.embed_inputs(embedder, texts))
    answers = list(table.responses[0][:6])
    a_emb = embedder.encode(loaded.answer_windows(answers, texts))
    valid = loaded.post_probabilities(0, X, a_emb, answers, validity=[1.0] * 6)
    refused = loaded.post_probabilities(0, X, a_emb, answers, validity=[0.0] * 6)
    missing = loaded.post_probabilities(0, X, a_emb, answers)
    assert valid is not None and refused is not None and missing is not None
    assert not np.allclose(valid[0], refused[0])  # the verdict moves the probability
    # a router trained without verdicts ignores them and decides as before
    old = CascadeModel.load(saved_model_dir)
    assert not old.answer_validity_
    assert json.loads((saved_model_dir / "router.json").read_text())["answer_validity"] is False
    X_old = old.input_matrix(texts, steps, old.embed_inputs(embedder, texts))
    a_old = embedder.encode(old.answer_windows(answers, texts))
    plain = old.post_probabilities(0, X_old, a_old, answers)
    given = old.post_probabilities(0, X_old, a_old, answers, validity=[0.0] * 6)
    assert plain is not None and given is not None
    np.testing.assert_array_equal(plain[0], given[0])


def test_evaluation_reports_the_policy_with_and_without_the_validator(
    fitted_model, split_tables, embedder
) -> None:
    """On recorded outcomes that carry verdicts, the recorded walk refuses what the validator
    refused, so evaluation reports both; refusing wrong answers buys quality for cost."""
    import dataclasses

    import numpy as np

    from router.policy import Target
    from training.evaluate import _with_and_without_validator

    _, test = split_tables
    test = test.subset(np.arange(200))
    verdicts = test.labels(0).astype(float)  # the refused answers were the wrong ones
    verdicts[::2] = np.nan  # half the requests constrained nothing
    validity = np.column_stack([verdicts, np.full(len(test), np.nan)])
    recorded = dataclasses.replace(test, validity=validity)
    signals = fitted_model.signals(recorded, embedder)
    q_s, q_f = float(test.scores[:, 0].mean()), float(test.scores[:, -1].mean())
    report = _with_and_without_validator(
        fitted_model, signals, recorded, Target(max_frontier_share=0.0), None, q_s, q_f
    )
    assert report["constrained_share"] == 0.5
    assert report["refused_share"] == pytest.approx(float((verdicts[1::2] == 0).mean()))
    with_v, without = report["with_validator"], report["without_validator"]
    # share=0 keeps every small answer, unless the validator refuses it
    assert without["frontier_share"] < with_v["frontier_share"]
    assert with_v["quality"] >= without["quality"]
    assert with_v["cost_saved"] < without["cost_saved"]
