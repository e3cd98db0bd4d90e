"""The frontier stand-in answers tool and JSON requests in the shape they ask for: the fallback
model's answer when it passes the validator, else one built deterministically from the request
(a real ``cascade-router standin`` over a recording stub as its fallback, over HTTP)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from router.backends import AssistantMessage, as_request
from router.validation import validate_answer
from serving.standin import CONFORMING_FINGERPRINT, conforming_answer, simplest_instance
from tests.router.backends.test_requests import PERSON, SEARCH, WEATHER
from tests.support.openai_server import OpenAIStubServer, tool_call
from tests.support.processes import Standin

FRONTIER = "gpt-4o-2024-05-13"
NAMED = {"type": "function", "function": {"name": "get_weather"}}
ORDER = {
    "type": "function",
    "function": {
        "name": "lookup_order",
        "parameters": {
            "type": "object",
            "properties": {
                "order": {"type": "string", "minLength": 5},
                "items": {"type": "array", "items": {"type": "integer"}, "minItems": 2},
                "urgent": {"type": ["boolean", "null"]},
                "limit": {"type": "integer", "exclusiveMinimum": 3},
                "note": {"type": "string"},
            },
            "required": ["order", "items", "urgent", "limit"],
        },
    },
}


def calling(name: str, arguments: Any) -> AssistantMessage:
    return AssistantMessage.model_validate(
        {"role": "assistant", "tool_calls": [tool_call(name, arguments)]}
    )


def test_simplest_instances_fit_their_schemas() -> None:
    arguments = simplest_instance(ORDER["function"]["parameters"])
    assert arguments == {"order": "xxxxx", "items": [0, 0], "urgent": False, "limit": 4}
    assert simplest_instance(WEATHER["function"]["parameters"]) == {"city": "", "unit": "c"}
    assert simplest_instance({"anyOf": [{"const": 7}, {"type": "string"}]}) == 7


def test_a_conforming_answer_is_built_only_for_an_invalid_one() -> None:
    named = as_request("Weather in Paris?", tools=[WEATHER, SEARCH], tool_choice=NAMED)
    good = calling("get_weather", {"city": "Paris", "unit": "c"})
    assert conforming_answer(named, good) is None  # valid: kept
    for bad in (calling("search", {}), calling("get_weather", "{"), AssistantMessage(content="hi")):
        built = conforming_answer(named, bad)
        assert built is not None and not validate_answer(named, built).invalid
        (call,) = built.tool_calls or []
        assert call.function.name == "get_weather"
    # "required" among several: the offered function the model tried to call, else the first
    required = as_request("Find it", tools=[WEATHER, ORDER], tool_choice="required")
    built = conforming_answer(required, calling("lookup_order", {"order": 1}))
    assert built is not None and built.tool_calls[0].function.name == "lookup_order"  # type: ignore[index]
    built = conforming_answer(required, AssistantMessage(content="no"))
    assert built is not None and built.tool_calls[0].function.name == "get_weather"  # type: ignore[index]
    extraction = as_request("Ann is 31.", response_format=PERSON)
    built = conforming_answer(extraction, AssistantMessage(content="Ann, 31"))
    assert built is not None and json.loads(built.text) == {"name": "", "age": 0}
    # a schema it cannot satisfy simply: nothing built, the caller keeps the model's answer
    patterned = {
        "type": "json_schema",
        "json_schema": {
            "name": "code",
            "schema": {
                "type": "object",
                "properties": {"c": {"type": "string", "pattern": "^[A-Z]{3}$"}},
                "required": ["c"],
            },
        },
    }
    assert conforming_answer(as_request("x", response_format=patterned), AssistantMessage()) is None


@pytest.fixture(scope="module")
def fallback() -> Iterator[OpenAIStubServer]:
    with OpenAIStubServer(models=["tiny"]) as server:
        yield server


@pytest.fixture(scope="module")
def standin(
    tmp_path_factory: pytest.TempPathFactory, fallback: OpenAIStubServer
) -> Iterator[Standin]:
    server = Standin(
        tmp_path_factory.mktemp("standin"),
        fallback,
        fallback_model="tiny",  # type: ignore[arg-type]
    ).start()
    yield server
    server.stop()


def ask(standin: Standin, **body: Any) -> dict[str, Any]:
    response = httpx.post(
        f"{standin.base_url}/chat/completions", json={"model": FRONTIER, **body}, timeout=60
    )
    assert response.status_code == 200, response.text
    return response.json()


def test_the_standin_answers_a_tool_request_in_shape(
    standin: Standin, fallback: OpenAIStubServer
) -> None:
    messages = [{"role": "user", "content": "What is the weather in Paris?"}]
    fallback.body_responder = lambda body: {"tool_calls": [tool_call("get_weather", {"c": 1})]}
    answer = ask(standin, messages=messages, tools=[WEATHER], tool_choice=NAMED)
    assert fallback.requests[-1]["tools"] == [WEATHER]  # the fallback was asked first, whole
    assert answer["system_fingerprint"] == CONFORMING_FINGERPRINT
    choice = answer["choices"][0]
    assert choice["finish_reason"] == "tool_calls" and answer["model"] == FRONTIER
    (call,) = choice["message"]["tool_calls"]
    assert call["function"]["name"] == "get_weather" and call["id"].startswith("call_standin_")
    assert json.loads(call["function"]["arguments"]) == {"city": "", "unit": "c"}
    # a valid answer of the fallback goes back as it is
    fallback.body_responder = lambda body: {
        "tool_calls": [tool_call("get_weather", {"city": "Paris", "unit": "c"})]
    }
    answer = ask(standin, messages=messages, tools=[WEATHER], tool_choice=NAMED)
    assert "system_fingerprint" not in answer
    arguments = answer["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"]
    assert json.loads(arguments) == {"city": "Paris", "unit": "c"}
    # plain text requests are never touched
    fallback.body_responder = lambda body: "plain words"
    answer = ask(standin, messages=messages)
    assert answer["choices"][0]["message"]["content"] == "plain words"
