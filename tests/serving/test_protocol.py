"""Model names select the policy; request bodies are validated into OpenAI-style errors."""

from __future__ import annotations

import pytest

from router.policy import Target
from serving.errors import APIError
from serving.protocol import (
    CascadeOptions,
    ChatCompletionRequest,
    RouteRequest,
    parse_body,
    select_policy,
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
    policy = select_policy(model, options, "default")
    assert policy.step == step
    assert policy.target == target


@pytest.mark.parametrize("model", ["gpt-4o", "cascades", "Cascade", ""])
def test_unknown_model_is_a_404(model: str) -> None:
    with pytest.raises(APIError) as info:
        select_policy(model, None, "default")
    assert info.value.status == 404 and info.value.code == "model_not_found"


def test_bad_target_is_a_400() -> None:
    with pytest.raises(APIError) as info:
        select_policy("cascade:x:speed=2", None, "default")
    assert info.value.status == 400 and info.value.code == "invalid_target"


def test_text_parts_are_joined_and_other_parts_refused() -> None:
    body = parse_body(
        b'{"model": "cascade", "messages": [{"role": "user", "content": '
        b'[{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}]}',
        ChatCompletionRequest,
    )
    assert body.chat_messages() == [{"role": "user", "content": "ab"}]
    image = parse_body(
        b'{"model": "cascade", "messages": [{"role": "user", "content": '
        b'[{"type": "image_url", "image_url": {"url": "x"}}]}]}',
        ChatCompletionRequest,
    )
    with pytest.raises(APIError, match="only text"):
        image.chat_messages()


def test_unknown_openai_fields_are_ignored() -> None:
    body = parse_body(
        b'{"model": "cascade", "messages": [{"role": "user", "content": "x"}], '
        b'"temperature": 0.2, "top_p": 1, "user": "u1", "max_completion_tokens": 9}',
        ChatCompletionRequest,
    )
    assert body.token_limit() == 9


def test_route_request_needs_one_input() -> None:
    with pytest.raises(APIError, match="exactly one"):
        RouteRequest().text_input()
    assert RouteRequest(input="hello").text_input() == "hello"
