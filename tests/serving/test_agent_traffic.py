"""Agent traffic with a real model: SmolLM2-135M on llama.cpp's server answers a tool call and a
``json_schema`` request through the SDK (and the OpenAI-shaped CascadeClient); the frontier is
a stand-in over real HTTP that answers what it is asked."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from router import CascadeClient, Router
from router.backends import OpenAIBackend
from router.registry import bundled_router_path
from tests.router.backends.test_requests import PERSON, WEATHER
from tests.serving.conftest import FRONTIER, SMALL
from tests.support.openai_server import OpenAIStubServer, obliging
from tests.support.processes import LlamaServer

NAMED = {"type": "function", "function": {"name": "get_weather"}}


@pytest.fixture(scope="module")
def obliging_frontier() -> Iterator[OpenAIStubServer]:
    with OpenAIStubServer(body_responder=obliging) as server:
        yield server


@pytest.fixture(scope="module")
def sdk_router(llama: LlamaServer, obliging_frontier: OpenAIStubServer, embedder) -> Router:
    small = OpenAIBackend(
        LlamaServer.model_alias,
        base_url=llama.base_url,
        max_tokens=64,
        timeout_s=120,
        dialect="llama-cpp-python",
    )
    frontier = OpenAIBackend(FRONTIER, base_url=obliging_frontier.base_url)
    router = Router.load(bundled_router_path(), embedder=embedder)
    return router.with_backends({SMALL: small, FRONTIER: frontier})


def test_sdk_tool_call_from_the_real_model(sdk_router: Router) -> None:
    result = sdk_router.route(
        "tool_select",
        [{"role": "user", "content": "What is the weather in Paris?"}],
        tools=[WEATHER],
        tool_choice=NAMED,
        temperature=0.0,
        target="share=0",  # the small tier answers
    )
    assert (result.tier, result.path) == (SMALL, "small→verified")
    assert result.model == LlamaServer.model_alias
    assert result.finish_reason == "tool_calls"
    (call,) = result.message.tool_calls  # type: ignore[misc]
    assert call.function.name == "get_weather" and call.id
    arguments = json.loads(call.function.arguments)
    assert set(arguments) >= {"city", "unit"} and arguments["unit"] in ("c", "f")
    assert result.usage[SMALL].output_tokens > 0


def test_sdk_json_schema_from_the_real_model(sdk_router: Router) -> None:
    client = CascadeClient(sdk_router)
    completion = client.chat.completions.create(
        model="cascade:extract:share=0",
        messages=[{"role": "user", "content": "Ann is 31 years old. Give her name and age."}],
        response_format=PERSON,
        temperature=0.0,
        max_completion_tokens=48,
    )
    assert completion.model == LlamaServer.model_alias
    person = json.loads(completion.choices[0].message.content or "")
    assert isinstance(person["name"], str) and isinstance(person["age"], int)
