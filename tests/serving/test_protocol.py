"""Model names select the step and target; request bodies are the library's request types."""

from __future__ import annotations

import re

import pytest

from router.backends import ChatRequest
from router.policy import Target
from serving.errors import APIError
from serving.protocol import (
    MODEL_PATTERN,
    CascadeOptions,
    ChatCompletionRequest,
    RouteRequest,
    select,
)


@pytest.mark.parametrize(
    ("model", "options", "step", "target"),
    [
        ("cascade", None, "default", None),
        ("cascade:intent", None, "intent", None),
        ("cascade:intent:quality=0.9", None, "intent", Target(quality_ratio=0.9)),
        (
            "cascade:tool_selection:share=0.2",
            None,
            "tool_selection",
            Target(max_frontier_share=0.2),
        ),
        ("cascade::share=0.2", None, "default", Target(max_frontier_share=0.2)),
        ("cascade:a", CascadeOptions(step="b", target="cost=0.001"), "b", Target(max_cost=0.001)),
    ],
)
def test_model_name_selects_step_and_target(model, options, step, target) -> None:
    chosen = select(model, options, "default")
    assert chosen.step == step
    assert chosen.target == target


@pytest.mark.parametrize(
    "model", ["gpt-4o", "cascades", "Cascade", "", "cascade:", "cascade::", "cascade:x:"]
)
def test_unknown_model_is_a_404(model: str) -> None:
    with pytest.raises(APIError) as info:
        select(model, None, "default")
    assert info.value.status == 404 and info.value.code == "model_not_found"


@pytest.mark.parametrize(
    "model",
    [
        "cascade",
        "cascade:intent",
        "cascade:intent:quality=0.9",
        "cascade::share=0.2",
        "cascade:x:speed=2",  # a name that exists, with a target that cannot be read: 400
        "cascade:a:b:c",
        "gpt-4o",
        "cascades",
        "Cascade",
        "",
        "cascade:",
        "cascade::",
        "cascade:x:",
        "xcascade",
    ],
)
def test_the_documented_pattern_names_the_served_models(model: str) -> None:
    # the document declares the pattern (with JSON Schema's search semantics): what it
    # matches is what select() serves, and what it does not match is a 404
    documented = re.search(MODEL_PATTERN, model) is not None
    try:
        select(model, None, "default")
        served = True
    except APIError as error:
        served = error.code != "model_not_found"
    assert documented == served
    field = ChatCompletionRequest.model_json_schema()["properties"]["model"]
    assert field["pattern"] == MODEL_PATTERN


def test_bad_target_is_a_400() -> None:
    with pytest.raises(APIError) as info:
        select("cascade:x:speed=2", None, "default")
    assert info.value.status == 400 and info.value.code == "invalid_target"


def test_the_body_is_the_librarys_request() -> None:
    body = ChatCompletionRequest.model_validate(
        {
            "model": "cascade",
            "messages": [{"role": "user", "content": [{"type": "text", "text": "a"}]}],
            "temperature": 0.2,
            "top_p": 1,
            "user": "u1",
            "max_completion_tokens": 9,
            "stream": True,
            "stream_options": {"include_usage": True},
            "cascade": {"step": "intent"},
        }
    )
    assert isinstance(body, ChatRequest)
    assert body.token_limit == 9 and body.include_usage
    # what goes upstream: the request fields, not the sidecar's
    assert body.to_openai() == {
        "messages": [{"role": "user", "content": [{"type": "text", "text": "a"}]}],
        "temperature": 0.2,
        "top_p": 1.0,
        "user": "u1",
        "max_completion_tokens": 9,
    }


@pytest.mark.parametrize(
    "extra",
    [{"stream": "yes"}, {"temperature": "hot"}, {"unknown_field": 1}, {"n": 2}, {"model": 5}],
)
def test_bodies_are_checked_strictly(extra: dict) -> None:
    with pytest.raises(ValueError):
        ChatCompletionRequest.model_validate(
            {"model": "cascade", "messages": [{"role": "user", "content": "x"}], **extra}
        )


def test_route_request_needs_one_input() -> None:
    with pytest.raises(APIError, match="exactly one"):
        RouteRequest().request()
    assert RouteRequest(input="hello").request().messages[0].content == "hello"
    with_tools = RouteRequest.model_validate(
        {
            "messages": [{"role": "user", "content": "weather?"}],
            "tools": [{"type": "function", "function": {"name": "get_weather"}}],
            "tool_choice": "required",
            "answer": {"role": "assistant", "content": "sunny"},
        }
    )
    assert with_tools.request().tool_names == ("get_weather",)
