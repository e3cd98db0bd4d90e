"""BFCL questions as tool-calling requests, and the grader: BFCL's own checker on known right
and wrong calls."""

from __future__ import annotations

import json

import pytest

from router.backends.request import AssistantMessage
from router.errors import ConfigurationError
from router.validation import validate_answer
from training.bfcl import (
    STEP,
    SYSTEM_PROMPT,
    BfclGrader,
    BfclQuestion,
    load_category,
    load_questions,
    openai_tools,
    parse_counts,
)

pytest.importorskip("bfcl_eval")


def _question(category: str, question_id: str) -> BfclQuestion:
    questions, _ = load_category(category)
    return next(q for q in questions if q.id == question_id)


def _calls(*calls: tuple[str, str | dict]) -> AssistantMessage:
    return AssistantMessage.model_validate(
        {
            "role": "assistant",
            "tool_calls": [
                {
                    "id": f"call_{k}",
                    "type": "function",
                    "function": {
                        "name": name,
                        "arguments": args if isinstance(args, str) else json.dumps(args),
                    },
                }
                for k, (name, args) in enumerate(calls)
            ],
        }
    )


@pytest.fixture(scope="module")
def grader() -> BfclGrader:
    return BfclGrader()


def test_a_question_becomes_the_request_bfcl_sends_plus_what_llama_cpp_needs() -> None:
    question = _question("simple_python", "simple_python_1")  # math.factorial
    request = question.request
    assert request.tool_choice == "auto" and request.temperature == 0.0
    assert request.messages[0].role == "system" and request.messages[0].content == SYSTEM_PROMPT
    assert request.messages[1].content == "Calculate the factorial of 5 using math functions."
    (tool,) = request.tools or []
    assert tool.function.name == "math_factorial"  # OpenAI names cannot hold dots
    assert tool.function.description.endswith(
        "Note that the provided function is in Python 3 syntax."
    )
    assert tool.function.parameters == {
        "type": "object",
        "properties": {
            "number": {
                "type": "integer",
                "description": "The number for which factorial needs to be calculated.",
            }
        },
        "required": ["number"],
    }
    # the checker reads the functions as BFCL wrote them
    assert question.functions[0]["name"] == "math.factorial"
    assert question.functions[0]["parameters"]["type"] == "dict"


def test_bfcl_types_become_json_schema_types() -> None:
    (tool,) = openai_tools(
        [
            {
                "name": "a.b",
                "description": "d",
                "parameters": {
                    "type": "dict",
                    "properties": {
                        "x": {"type": "float", "description": "x"},
                        "t": {"type": "tuple", "items": {"type": "float"}},
                        "o": {"type": "dict", "properties": {"k": {"type": "any"}}},
                    },
                },
            }
        ]
    )
    props = tool["function"]["parameters"]["properties"]
    assert tool["function"]["name"] == "a_b"
    assert props["x"] == {
        "type": "number",
        "format": "float",
        "description": "x This is a float type value.",
    }
    assert props["t"] == {"type": "array", "items": {"type": "number", "format": "float"}}
    assert props["o"] == {"type": "object", "properties": {"k": {"type": "string"}}}


def test_right_calls_are_graded_right(grader: BfclGrader) -> None:
    triangle = _question("simple_python", "simple_python_0")
    right = _calls(("calculate_triangle_area", {"base": 10, "height": 5}))
    assert grader.grade(triangle, right).correct
    # with the optional unit the ground truth allows
    assert grader.grade(
        triangle, _calls(("calculate_triangle_area", {"base": 10, "height": 5, "unit": "units"}))
    ).correct
    # a dotted BFCL name called by its underscored tool name
    factorial = _question("simple_python", "simple_python_1")
    assert grader.grade(factorial, _calls(("math_factorial", {"number": 5}))).correct


@pytest.mark.parametrize(
    ("call", "error_type"),
    [
        (("calculate_triangle_area", {"base": 10, "height": "5"}), "type_error:simple"),
        (("calculate_triangle_area", {"base": 10, "height": 6}), "value_error:others"),
        (("calculate_triangle_area", {"base": 10}), "simple_function_checker:missing_required"),
        (("area", {"base": 10, "height": 5}), "simple_function_checker:wrong_func_name"),
        (("calculate_triangle_area", '{"base": 10, "height": 5'), "decode:arguments_not_json"),
    ],
    ids=["string-for-integer", "wrong-value", "missing-required", "wrong-name", "not-json"],
)
def test_wrong_calls_are_graded_wrong(grader: BfclGrader, call, error_type: str) -> None:
    grade = grader.grade(_question("simple_python", "simple_python_0"), _calls(call))
    assert not grade.correct
    assert grade.error_type == error_type


def test_no_call_or_two_calls_are_wrong_where_one_is_expected(grader: BfclGrader) -> None:
    triangle = _question("simple_python", "simple_python_0")
    assert not grader.grade(triangle, AssistantMessage(content="The area is 25.")).correct
    twice = _calls(*[("calculate_triangle_area", {"base": 10, "height": 5})] * 2)
    assert not grader.grade(triangle, twice).correct


def test_irrelevance_is_right_iff_no_call_decodes(grader: BfclGrader) -> None:
    question = _question("irrelevance", "irrelevance_0")
    assert question.ground_truth is None
    assert grader.grade(question, AssistantMessage(content="I cannot do that.")).correct
    called = grader.grade(question, _calls(("determine_body_mass_index", {"weight": 1.0})))
    assert not called.correct and called.error_type == "irrelevance:called_a_function"
    # BFCL's rule: arguments that are not JSON do not decode into a call
    assert grader.grade(question, _calls(("determine_body_mass_index", "{oops"))).correct


def test_the_validator_and_the_checker_disagree_where_they_should(grader: BfclGrader) -> None:
    """A string for an integer fails both; a wrong value fits the schema but not the answer."""
    triangle = _question("simple_python", "simple_python_0")
    bad_type = _calls(("calculate_triangle_area", {"base": 10, "height": "5"}))
    assert validate_answer(triangle.request, bad_type).invalid
    wrong_value = _calls(("calculate_triangle_area", {"base": 10, "height": 6}))
    assert validate_answer(triangle.request, wrong_value).valid
    assert not grader.grade(triangle, wrong_value).correct


def test_samples_extend_and_interleave() -> None:
    small, _ = load_questions({"simple_python": 3, "irrelevance": 2}, seed=0)
    large, _ = load_questions({"simple_python": 6, "irrelevance": 4}, seed=0)
    assert len(small) == 5 and len(large) == 10
    assert {q.id for q in small} <= {q.id for q in large}
    assert {q.category for q in large} == {"simple_python", "irrelevance"}
    assert [q.id for q in large if q.id in {s.id for s in small}] == [q.id for q in small]
    other, _ = load_questions({"simple_python": 3, "irrelevance": 2}, seed=1)
    assert {q.id for q in other} != {q.id for q in small}
    assert STEP == "tool_selection"


def test_bad_categories_and_counts_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="unknown BFCL category"):
        load_questions({"simple_java": 2})
    with pytest.raises(ConfigurationError, match="positive integer"):
        parse_counts(["simple_python:0"])
    assert parse_counts(["simple_python:3,irrelevance", "multiple:2"]) == {
        "simple_python": 3,
        "irrelevance": None,
        "multiple": 2,
    }
