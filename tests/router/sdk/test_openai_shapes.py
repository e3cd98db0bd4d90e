"""OpenAI's shapes of a routed answer: model names, the JSON answer, and stream chunks that
reassemble into it byte for byte (tool calls included)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from router.backends import AssistantMessage, FunctionCall, ToolCall
from router.errors import ConfigurationError, UnknownModelError
from router.policy import Target
from router.sdk import RouteResult, StepTarget, TokenUsage
from router.sdk.openai_shapes import completion_body, completion_chunks, text_pieces


def result(message: AssistantMessage, logprobs: dict[str, Any] | None = None) -> RouteResult:
    return RouteResult(
        answer="",
        tier="small",
        role="small",
        path="small→verified",
        step="tool_select",
        probabilities={"pre:small": 0.7},
        steps=(),
        cost_usd=0.001,
        latency_s=0.2,
        router_latency_s=0.01,
        target="quality_ratio=0.95",
        message=message,
        finish_reason="tool_calls" if message.tool_calls else "stop",
        model="small-model",
        usage={"small": TokenUsage(10, 5, 0.001, 1), "frontier": TokenUsage(12, 7, 0.01, 1)},
        logprobs=logprobs,
    )


@pytest.mark.parametrize(
    "text",
    [
        "",
        "one",
        "Paris  is   the capital.\n\n\tSecond paragraph  ",
        "   leading spaces and a verylongwordthatisfarlongerthanonepieceofthestream end",
        "Ünïcödé — text · with\u00a0no-break spaces and emoji 🙂🙂",
        "x" * 100,
    ],
)
def test_text_pieces_keep_every_byte(text: str) -> None:
    pieces = text_pieces(text)
    assert "".join(pieces) == text
    assert all(pieces)


def reassemble(chunks: list[ChatCompletionChunk]) -> tuple[str, list[dict[str, str]], str]:
    """Content, tool calls and finish reason as an OpenAI client rebuilds them from a stream."""
    content, calls, finish = "", {}, ""
    for chunk in chunks:
        for choice in chunk.choices:
            delta = choice.delta
            content += delta.content or ""
            for call in delta.tool_calls or []:
                entry = calls.setdefault(call.index, {"id": "", "name": "", "arguments": ""})
                entry["id"] += call.id or ""
                if call.function is not None:
                    entry["name"] += call.function.name or ""
                    entry["arguments"] += call.function.arguments or ""
            finish = choice.finish_reason or finish
    return content, [calls[i] for i in sorted(calls)], finish


def test_streamed_tool_calls_reassemble_into_the_json_answer() -> None:
    arguments = ['{"city": "Paris", "unit": "c", "days": [1, 2, 3]}', '{"q":"weather  Paris"}']
    message = AssistantMessage(
        tool_calls=[
            ToolCall(
                id="call_a", function=FunctionCall(name="get_weather", arguments=arguments[0])
            ),
            ToolCall(id="call_b", function=FunctionCall(name="search", arguments=arguments[1])),
        ]
    )
    routed = result(message)
    body = ChatCompletion.model_validate(completion_body(routed, "chatcmpl-1", 7))
    chunks = [
        ChatCompletionChunk.model_validate(c)
        for c in completion_chunks(routed, "chatcmpl-1", 7, include_usage=True)
    ]
    content, calls, finish = reassemble(chunks)
    json_calls = body.choices[0].message.tool_calls
    assert content == "" and finish == "tool_calls" == body.choices[0].finish_reason
    assert calls == [
        {"id": c.id, "name": c.function.name, "arguments": c.function.arguments}  # type: ignore[union-attr]
        for c in json_calls  # type: ignore[union-attr]
    ]
    assert [c["arguments"] for c in calls] == arguments
    # the name comes first, then the arguments in several fragments
    first_delta = next(c for c in chunks if c.choices and c.choices[0].delta.tool_calls)
    head = first_delta.choices[0].delta.tool_calls[0]  # type: ignore[index]
    assert head.function.name == "get_weather" and head.function.arguments == ""  # type: ignore[union-attr]
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.tool_calls) > 4
    # with include_usage the last chunk has no choices and every model's tokens
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.total_tokens == 34 == body.usage.total_tokens  # type: ignore[union-attr]
    assert all(c.usage is None for c in chunks[:-1])


def test_streamed_text_with_logprobs_reassembles() -> None:
    text = "The  answer   is\n(B)."
    tokens = ["The", "  answer", "   is", "\n", "(B", ")."]
    logprobs = {
        "content": [
            {"token": t, "logprob": -0.5, "bytes": None, "top_logprobs": []} for t in tokens
        ],
        "refusal": None,
    }
    routed = result(AssistantMessage(content=text), logprobs)
    chunks = [ChatCompletionChunk.model_validate(c) for c in completion_chunks(routed, "id", 1)]
    content, calls, finish = reassemble(chunks)
    assert (content, calls, finish) == (text, [], "stop")
    streamed = []
    for c in chunks:
        logprobs_of_chunk = c.choices[0].logprobs
        if logprobs_of_chunk is not None:
            streamed += [t.token for t in logprobs_of_chunk.content or []]
    assert streamed == tokens
    body = completion_body(routed, "id", 1)
    assert body["choices"][0]["logprobs"] == logprobs
    assert body["cascade"]["usage"]["frontier"] == {
        "prompt_tokens": 12,
        "completion_tokens": 7,
        "total_tokens": 19,
        "cost_usd": 0.01,
    }
    json.dumps(body, allow_nan=False)


@pytest.mark.parametrize(
    ("model", "step", "target"),
    [
        ("cascade", "default", None),
        ("cascade:intent", "intent", None),
        ("cascade:intent:quality=0.9", "intent", Target(quality_ratio=0.9)),
        ("cascade::share=0.2", "default", Target(max_frontier_share=0.2)),
    ],
)
def test_model_names(model: str, step: str, target: Target | None) -> None:
    chosen = StepTarget.parse(model, "default")
    assert (chosen.step, chosen.target) == (step, target)


@pytest.mark.parametrize("model", ["cascade:", "cascade::", "cascade:intent:", "gpt-4o", "Cascade"])
def test_names_that_select_nothing_are_refused(model: str) -> None:
    with pytest.raises(UnknownModelError, match="does not exist"):
        StepTarget.parse(model, "default")


def test_body_options_win_and_bad_targets_are_refused() -> None:
    chosen = StepTarget.parse("cascade:a", "default", step="b", target="cost=0.001")
    assert (chosen.step, chosen.target) == ("b", Target(max_cost=0.001))
    with pytest.raises(ConfigurationError):
        StepTarget.parse("cascade:x:speed=2", "default")
