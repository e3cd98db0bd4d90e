"""Full chat-completions requests and answers: typed as OpenAI checks them, sent through whole to
a real HTTP upstream (the stub records every body it receives), answered back whole."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pandas as pd
import pytest

from router.backends import (
    AssistantMessage,
    ChatRequest,
    FunctionCall,
    OpenAIBackend,
    ReplayBackend,
    ToolCall,
    answer_text,
    as_request,
    message_text,
    record_text,
    recorded_message,
    step_text,
)
from router.errors import BackendRequestError, ConfigurationError
from tests.support.openai_server import OpenAIStubServer, obliging, tool_call

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city.\nUses the national service.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "unit": {"type": "string", "enum": ["c", "f"]},
            },
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
        "strict": True,
    },
}
SEARCH = {
    "type": "function",
    "function": {"name": "search", "parameters": {"type": "object", "properties": {}}},
}
PERSON = {
    "type": "json_schema",
    "json_schema": {
        "name": "person",
        "strict": True,
        "schema": {
            "type": "object",
            "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
            "required": ["name", "age"],
        },
    },
}
#: A conversation after one tool round: the assistant's call and the tool's result.
CONVERSATION: list[dict[str, Any]] = [
    {"role": "system", "content": "You are a weather assistant."},
    {"role": "developer", "content": [{"type": "text", "text": "Prefer Celsius."}]},
    {
        "role": "user",
        "content": [
            {"type": "text", "text": "Weather in Paris? "},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
            {"type": "text", "text": "And is it sunny?"},
        ],
        "name": "ann",
    },
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Paris", "unit": "c"}'},
            }
        ],
    },
    {"role": "tool", "tool_call_id": "call_1", "content": '{"temp": 21, "sky": "sunny"}'},
]
#: Every request field that shapes the answer, set to a non-default value.
EVERY_FIELD: dict[str, Any] = {
    "tools": [WEATHER, SEARCH],
    "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
    "parallel_tool_calls": False,
    "response_format": PERSON,
    "stop": ["\n\n", "END"],
    "temperature": 0.3,
    "top_p": 0.9,
    "seed": 42,
    "presence_penalty": 0.5,
    "frequency_penalty": -0.5,
    "logit_bias": {"50256": -100},
    "max_completion_tokens": 77,
    "logprobs": True,
    "top_logprobs": 2,
    "user": "user-7",
    "metadata": {"team": "agents", "run": "r1"},
    "store": False,
    "service_tier": "auto",
    "reasoning_effort": "low",
}


@pytest.fixture(scope="module")
def stub() -> Any:
    with OpenAIStubServer(body_responder=obliging) as server:
        yield server


# ------------------------------------------------------------------ the request type


@pytest.mark.parametrize(
    ("fields", "fragment"),
    [
        ({"temperature": "hot"}, "temperature: Input should be a valid number"),
        ({"temperature": True}, "temperature"),
        ({"temperature": 3.0}, "temperature"),
        ({"seed": "42"}, "seed"),
        ({"logprobs": "yes"}, "logprobs"),
        ({"parallel_tool_calls": 1}, "parallel_tool_calls"),
        ({"n": 2}, "n=2 is not supported"),
        ({"stream": True}, "stream: unknown field"),
        ({"model": "gpt-4o"}, "model: unknown field"),
        ({"colour": "red"}, "colour: unknown field"),
        ({"top_logprobs": 3}, "top_logprobs needs logprobs"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "at most 4"),
        ({"metadata": {"k": 1}}, "metadata"),
        ({"tool_choice": "sometimes"}, "tool_choice: no accepted form fits"),
        ({"tool_choice": "required"}, "needs tools"),
        (
            {"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "x"}}},
            "'x', which is not in tools",
        ),
        ({"tools": [WEATHER, WEATHER]}, "distinct function names"),
        (
            {"tools": [{"type": "function", "function": {"name": "bad name"}}]},
            "tools[0].function.name",
        ),
        (
            {"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": 5}}}]},
            "tools[0].function.parameters is not a valid JSON schema",
        ),
        ({"response_format": {"type": "xml"}}, "response_format"),
        (
            {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "p", "schema": {"required": "x"}},
                }
            },
            "response_format.json_schema.schema is not a valid JSON schema",
        ),
    ],
)
def test_fields_are_checked_strictly(fields: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        as_request("hello", **fields)
    assert fragment in str(info.value)


@pytest.mark.parametrize(
    ("messages", "fragment"),
    [
        (
            [{"role": "user", "content": "x\u0000\ud800"}],
            "messages[0].content holds text that is not valid",
        ),
        ([{"role": "tool", "content": "x"}], "messages[0].tool_call_id: field required"),
        (
            [{"role": "assistant", "tool_calls": [{"id": "1", "type": "function"}]}],
            "function: field required",
        ),
        ([{"role": "user", "content": [{"type": "video", "url": "x"}]}], "messages[0].content"),
        ([{"role": "function", "content": "x", "name": "f"}], "role 'function'"),
    ],
)
def test_messages_are_checked(messages: list[dict[str, Any]], fragment: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        as_request(messages)
    assert fragment in str(info.value)


def test_a_request_is_built_once_and_extended() -> None:
    base = as_request(CONVERSATION, tools=[WEATHER])
    assert as_request(base) is base
    more = as_request(base, temperature=0.1, tools=None)  # None leaves a field as it is
    assert more.temperature == 0.1 and more.tool_names == ("get_weather",)
    assert more.messages == base.messages
    assert base.constrains_answer and not as_request("x").constrains_answer
    assert not as_request("x", tools=[WEATHER], tool_choice="none").constrains_answer
    assert as_request("x", response_format={"type": "json_object"}).constrains_answer


def test_step_text_reads_the_last_turn_the_tools_and_the_last_result() -> None:
    request = as_request(CONVERSATION, tools=[WEATHER, SEARCH])
    assert step_text(request) == (
        "Weather in Paris? And is it sunny?\n\n"
        "Tools: get_weather: Current weather for a city.; search\n\n"
        'Tool result: {"temp": 21, "sky": "sunny"}'
    )
    # no tools, no results after the last user turn: the turn alone, as the bundled data reads
    assert step_text(CONVERSATION[:3]) == "Weather in Paris? And is it sunny?"
    long_result = [*CONVERSATION[:4], {**CONVERSATION[4], "content": "y" * 5000}]
    assert step_text(long_result).endswith("Tool result: " + "y" * 400)


# ------------------------------------------------------------------ sent through whole


def test_every_field_reaches_the_upstream_unchanged(stub: OpenAIStubServer) -> None:
    backend = OpenAIBackend("small-model", base_url=stub.base_url, temperature=0.0)
    request = as_request(CONVERSATION, **EVERY_FIELD)
    completion = backend.complete(request)
    sent = stub.requests[-1]
    assert sent == {"model": "small-model", "messages": CONVERSATION, **EVERY_FIELD}
    # the upstream was asked for get_weather: its call comes back exactly as produced
    call = completion.message.tool_calls[0]  # type: ignore[index]
    assert (call.id, call.function.name) == ("call_stub_0", "get_weather")
    assert json.loads(call.function.arguments) == {"city": "Paris", "unit": "c"}
    assert completion.finish_reason == "tool_calls"
    assert completion.message.content is None
    assert (
        completion.text
        == '{"tool_calls":[{"arguments":{"city":"Paris","unit":"c"},"name":"get_weather"}]}'
    )


def test_backend_defaults_apply_only_where_the_request_sets_nothing(stub: OpenAIStubServer) -> None:
    backend = OpenAIBackend("m", base_url=stub.base_url, temperature=0.0, max_tokens=64)
    backend.complete("hi")
    assert stub.requests[-1] == {
        "model": "m",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 64,
        "temperature": 0.0,
    }
    backend.complete(as_request("hi", temperature=1.5, max_completion_tokens=9))
    sent = stub.requests[-1]
    assert sent["temperature"] == 1.5 and sent["max_completion_tokens"] == 9
    assert "max_tokens" not in sent


def test_json_answers_and_the_llama_cpp_python_dialect(stub: OpenAIStubServer) -> None:
    plain = OpenAIBackend("m", base_url=stub.base_url)
    answer = plain.complete(as_request("Ann, 31", response_format=PERSON))
    assert json.loads(answer.text) == {"name": "Paris", "age": 3}
    assert stub.requests[-1]["response_format"] == PERSON
    llama = OpenAIBackend("m", base_url=stub.base_url, dialect="llama-cpp-python")
    llama.complete(as_request("Ann, 31", response_format=PERSON, max_completion_tokens=20))
    sent = stub.requests[-1]
    assert sent["response_format"] == {
        "type": "json_object",
        "schema": PERSON["json_schema"]["schema"],
    }
    assert sent["max_tokens"] == 20 and "max_completion_tokens" not in sent
    with pytest.raises(ConfigurationError, match="dialect"):
        OpenAIBackend("m", dialect="vllm")  # type: ignore[arg-type]


def test_the_llama_cpp_python_dialect_adapts_tool_requests(stub: OpenAIStubServer) -> None:
    llama = OpenAIBackend("m", base_url=stub.base_url, dialect="llama-cpp-python")
    # a conversation after one tool round: what that server refuses or hides is rewritten
    llama.complete(as_request(CONVERSATION, tools=[WEATHER], tool_choice="required"))
    sent = stub.requests[-1]
    assert sent["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assistant, result = sent["messages"][3:]
    assert assistant["content"] == "" and assistant["tool_calls"] == CONVERSATION[3]["tool_calls"]
    assert result == {
        "role": "user",
        "content": 'Result of get_weather: {"temp": 21, "sky": "sunny"}',
    }
    assert sent["messages"][:3] == CONVERSATION[:3]  # its own system message is kept
    # no system message: one is added, or the function-calling format shows no tools
    llama.complete(as_request("Weather in Paris?", tools=[WEATHER, SEARCH], tool_choice="auto"))
    sent = stub.requests[-1]
    assert sent["messages"][0]["role"] == "system" and sent["tool_choice"] == "auto"
    llama.complete(as_request("Weather?", tools=[WEATHER, SEARCH], tool_choice="required"))
    assert stub.requests[-1]["tool_choice"] == "auto"  # several tools: the model picks
    # no tool choice, or "none": left as the caller sent it (a text answer)
    llama.complete(as_request("Weather in Paris?", tools=[WEATHER]))
    sent = stub.requests[-1]
    assert "tool_choice" not in sent and [m["role"] for m in sent["messages"]] == ["user"]
    # other upstreams get the conversation unchanged
    OpenAIBackend("m", base_url=stub.base_url).complete(
        as_request(CONVERSATION, tools=[WEATHER], tool_choice="required")
    )
    assert stub.requests[-1]["messages"] == CONVERSATION
    assert stub.requests[-1]["tool_choice"] == "required"


def test_logprobs_object_comes_back_when_asked() -> None:
    with OpenAIStubServer(lambda messages: "one two") as server:
        backend = OpenAIBackend("m", base_url=server.base_url)
        asked = backend.complete(as_request("x", logprobs=True))
        assert asked.choice_logprobs is not None
        assert [t["token"] for t in asked.choice_logprobs["content"]] == ["one", " two"]
        assert asked.logprobs == pytest.approx((-0.1, -0.1))
        # a backend that reads logprobs for its features does not hand them to the caller
        reading = OpenAIBackend("m", base_url=server.base_url, logprobs=True)
        unasked = reading.complete("x")
        assert unasked.logprobs is not None and unasked.choice_logprobs is None


def test_async_and_samples_carry_the_request(stub: OpenAIStubServer) -> None:
    backend = OpenAIBackend("m", base_url=stub.base_url)
    request = as_request("weather?", tools=[WEATHER], tool_choice="required")
    answer = asyncio.run(backend.acomplete(request))
    assert answer.message.tool_calls and stub.requests[-1]["tool_choice"] == "required"
    samples = backend.sample(request, 2, 0.7)
    assert all(s.message.tool_calls for s in samples)
    assert stub.requests[-1]["tools"] == [WEATHER] and stub.requests[-1]["temperature"] == 0.7


def test_a_refused_request_is_a_request_error() -> None:
    with OpenAIStubServer(fail_with_status=400) as server:
        backend = OpenAIBackend("m", base_url=server.base_url, max_retries=0)
        with pytest.raises(BackendRequestError, match="400"):
            backend.complete("x")


def test_tool_calls_that_are_not_json_come_back_as_written() -> None:
    broken = {"content": "", "tool_calls": [tool_call("get_weather", '{"city": Par')]}
    with OpenAIStubServer(lambda messages: broken) as server:
        answer = OpenAIBackend("m", base_url=server.base_url).complete("x")
    assert answer.message.tool_calls[0].function.arguments == '{"city": Par'  # type: ignore[index]
    assert answer.text == '{"tool_calls":[{"arguments":"{\\"city\\": Par","name":"get_weather"}]}'


# ------------------------------------------------------------------ text forms and replay


def test_text_form_and_recorded_form_of_answers() -> None:
    calls = AssistantMessage(
        tool_calls=[
            ToolCall(id="a", function=FunctionCall(name="f", arguments='{"b": 1, "a": " x "}')),
            ToolCall(id="b", function=FunctionCall(name="g", arguments="{}")),
        ]
    )
    assert message_text(calls) == (
        '{"tool_calls":[{"arguments":{"a":" x ","b":1},"name":"f"},{"arguments":{},"name":"g"}]}'
    )
    recorded = record_text(calls)
    assert recorded_message(recorded) == calls  # ids, names and argument texts kept
    assert answer_text(recorded) == message_text(calls)
    assert message_text(AssistantMessage(content="  hi  ")) == "  hi  "
    assert message_text(AssistantMessage(refusal="no")) == "no"
    assert record_text(AssistantMessage(content="plain")) == "plain"
    assert (
        recorded_message('{"tool_calls": "not a list"}').content == '{"tool_calls": "not a list"}'
    )
    assert answer_text(None) is None and answer_text("x") == "x"


def test_replay_returns_recorded_tool_calls() -> None:
    request = as_request("Weather in Paris?", tools=[WEATHER])
    call = AssistantMessage(
        tool_calls=[
            ToolCall(
                id="call_9",
                function=FunctionCall(name="get_weather", arguments='{"city":"Paris","unit":"c"}'),
            )
        ]
    )
    frame = pd.DataFrame(
        [
            {
                "prompt_id": "w1",
                "prompt": step_text(request),  # recorded data stores the step text as the prompt
                "model": "small",
                "score": 1.0,
                "response": record_text(call),
                "input_tokens": 50,
                "output_tokens": 12,
                "cost_usd": 0.0001,
            }
        ]
    )
    backend = ReplayBackend(frame, "small")
    answer = backend.complete(request)
    assert answer.message == call
    assert answer.finish_reason == "tool_calls"
    assert answer.text == message_text(call)
    # the same prompt without the tools is another step text: not recorded
    assert backend._lookup(backend._answers, as_request("Weather in Paris?")) is None
    assert isinstance(as_request(request), ChatRequest)
