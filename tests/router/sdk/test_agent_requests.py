"""Agent traffic through the SDK: tools, tool calls, JSON formats and multi-turn messages reach
the tiers whole (real HTTP upstreams record every body) and the answering model's message comes
back whole, through Router.route / aroute and the OpenAI-shaped CascadeClient."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from router import AsyncCascadeClient, CascadeClient, Router
from router.backends import AssistantMessage, OpenAIBackend, ReplayBackend, as_request
from router.errors import ConfigurationError, UnknownModelError
from tests.conftest import TIERS
from tests.router.backends.test_requests import CONVERSATION, EVERY_FIELD, PERSON, WEATHER
from tests.support.openai_server import OpenAIStubServer, obliging

NAMED = {"type": "function", "function": {"name": "get_weather"}}


@pytest.fixture(scope="module")
def upstreams() -> Iterator[tuple[OpenAIStubServer, OpenAIStubServer]]:
    with (
        OpenAIStubServer(body_responder=obliging) as small,
        OpenAIStubServer(body_responder=obliging) as frontier,
    ):
        yield small, frontier


@pytest.fixture(scope="module")
def router(saved_model_dir, embedder, upstreams) -> Router:
    small, frontier = upstreams
    return Router.load(saved_model_dir, embedder=embedder).with_backends(
        [
            OpenAIBackend(TIERS[0], base_url=small.base_url, timeout_s=10),
            OpenAIBackend(TIERS[1], base_url=frontier.base_url, timeout_s=10),
        ]
    )


def test_route_forwards_every_field_and_returns_the_message(router: Router, upstreams) -> None:
    small, _ = upstreams
    fields = {k: v for k, v in EVERY_FIELD.items() if k not in ("tools", "response_format")}
    result = router.route(
        "tool_select",
        CONVERSATION,
        tools=EVERY_FIELD["tools"],
        response_format=PERSON,
        target="share=0.0",  # the small tier answers
        **fields,
    )
    assert result.path == "small→verified"
    assert small.requests[-1] == {"model": TIERS[0], "messages": CONVERSATION, **EVERY_FIELD}
    call = result.message.tool_calls[0]  # type: ignore[index]
    assert call.function.name == "get_weather" and call.id == "call_stub_0"
    assert result.finish_reason == "tool_calls"
    assert result.model == TIERS[0]
    assert (
        result.answer
        == result.answers[TIERS[0]]
        == ('{"tool_calls":[{"arguments":{"city":"Paris","unit":"c"},"name":"get_weather"}]}')
    )
    usage = result.usage[TIERS[0]]
    assert usage.calls == 1 and usage.input_tokens > 0 and usage.output_tokens > 0
    assert result.total_usage == usage


def test_aroute_and_a_request_object(router: Router, upstreams) -> None:
    small, frontier = upstreams
    request = as_request("Ann is 31. Extract her.", response_format=PERSON, seed=3)
    result = asyncio.run(router.aroute("extract", request, target="quality=1.0"))
    assert json.loads(result.answer) == {"name": "Paris", "age": 3}
    assert result.message == AssistantMessage(content=result.answer)
    answered = small if result.tier == TIERS[0] else frontier
    assert answered.requests[-1]["response_format"] == PERSON
    assert answered.requests[-1]["seed"] == 3
    if "escalated" in result.path:  # both ran: usage counts both
        assert set(result.usage) == set(TIERS)
        assert result.total_usage.total_tokens > result.usage[TIERS[1]].total_tokens


def test_escalation_counts_every_model_that_ran(router: Router) -> None:
    result = router.route("tool_select", "Weather in Paris?", tools=[WEATHER], target="share=1.0")
    # share=1: the frontier may answer everything; whatever ran is in the usage
    ran = [s.tier for s in result.steps if s.action != "skipped"]
    assert set(result.usage) == set(ran)
    assert result.total_usage.cost_usd == pytest.approx(result.cost_usd)


def test_cascade_client_returns_openai_types(router: Router, upstreams) -> None:
    small, _ = upstreams
    client = CascadeClient(router)
    completion = client.chat.completions.create(
        model="cascade:tool_select:share=0",
        messages=CONVERSATION,
        tools=[WEATHER],
        tool_choice=NAMED,
        temperature=0.2,
    )
    assert isinstance(completion, ChatCompletion)
    call = completion.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert call.function.name == "get_weather"  # type: ignore[union-attr]
    assert completion.choices[0].finish_reason == "tool_calls"
    assert completion.model == TIERS[0]
    assert completion.usage is not None and completion.usage.total_tokens > 0
    assert completion.model_extra["cascade"]["path"] == "small→verified"  # type: ignore[index]
    assert small.requests[-1]["tool_choice"] == NAMED
    assert small.requests[-1]["temperature"] == 0.2
    # streamed: the same call, as indexed deltas
    chunks = list(
        client.chat.completions.create(  # type: ignore[arg-type]
            model="cascade:tool_select:share=0",
            messages=CONVERSATION,
            tools=[WEATHER],
            tool_choice=NAMED,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert all(isinstance(c, ChatCompletionChunk) for c in chunks)
    arguments = "".join(
        d.function.arguments or ""
        for c in chunks
        if c.choices
        for d in c.choices[0].delta.tool_calls or []
        if d.function is not None
    )
    assert arguments == call.function.arguments  # type: ignore[union-attr]
    assert chunks[-1].usage is not None and chunks[-1].choices == []


def test_cascade_client_options_and_errors(router: Router, upstreams) -> None:
    import openai

    small, _ = upstreams
    client = AsyncCascadeClient(router)
    completion = asyncio.run(
        client.chat.completions.create(
            model="cascade",
            messages=[{"role": "user", "content": "hello"}],
            tools=openai.NOT_GIVEN,  # agent frameworks pass "not given" for unset parameters
            extra_body={"cascade": {"step": "intent", "target": "share=0"}, "top_p": 0.5},
            extra_headers={"x-trace": "1"},
        )
    )
    assert completion.model_extra["cascade"]["step"] == "intent"  # type: ignore[index,union-attr]
    assert small.requests[-1]["top_p"] == 0.5 and "tools" not in small.requests[-1]
    sync = CascadeClient(router)
    with pytest.raises(UnknownModelError):
        sync.chat.completions.create(model="cascade::", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(ConfigurationError, match="n=2"):
        sync.chat.completions.create(model="cascade", messages="hi", n=2)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="temperature"):
        sync.chat.completions.create(model="cascade", messages="hi", temperature="hot")


def test_decide_reads_a_tool_call_answer(router: Router) -> None:
    request = as_request("Weather in Paris?", tools=[WEATHER])
    answer = router.backends[0].complete(as_request(request, tool_choice=NAMED))  # type: ignore[index]
    by_message = router.decide("tool_select", request, answer=answer.message)
    by_text = router.decide("tool_select", request, answer=answer.text)
    assert by_message.p_accept_answer == by_text.p_accept_answer is not None


def test_replay_routes_recorded_tool_calls(router: Router, mmlu_frame) -> None:
    """The default replay backends still answer plain prompts, and the result carries the text
    answer as a message."""
    replay = router.with_backends([ReplayBackend(mmlu_frame, t) for t in TIERS])
    prompt = str(mmlu_frame["prompt"].iloc[0])
    result = replay.route("math", prompt)
    assert result.message.content == result.answer
    assert result.finish_reason == "stop"
    assert result.model in TIERS


def test_the_router_reads_the_window_of_an_agent_conversation() -> None:
    from router.backends import step_text
    from router.registry import bundled_router_path
    from tests.router.backends.test_messages import TOOLS, TURN_1, TURN_2

    router = Router.load(bundled_router_path())
    request = as_request(TURN_2, tools=TOOLS, tool_choice="auto")
    whole = router.decide("tool_selection", request, target="quality=0.9")
    window = router.decide("tool_selection", step_text(request), target="quality=0.9")
    assert (whole.p_accept, whole.p_next, whole.action) == (
        window.p_accept,
        window.p_next,
        window.action,
    )
    # another turn of the same conversation is another input
    first = router.decide("tool_selection", as_request(TURN_1, tools=TOOLS), target="quality=0.9")
    assert first.p_accept != whole.p_accept
