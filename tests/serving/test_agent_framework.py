"""A real agent framework drives the sidecar end to end: the OpenAI Agents SDK's agent loop (model
call → tool call → the SDK runs the function tool → tool result → final answer) through a live
``cascade-router serve`` whose small tier is SmolLM2-135M on llama.cpp's server (function-calling
chat format) and whose frontier is the ``cascade-router standin`` over the same model.

The tiny model is made deterministic honestly: the agent's model settings force the function
(``tool_choice``), at temperature 0 with a fixed seed; a call the validator refuses would be
answered by the stand-in, which answers tool requests in shape.  Tracing export is off.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

agents = pytest.importorskip("agents")  # the `dev` extra installs openai-agents

from openai import AsyncOpenAI  # noqa: E402

from tests.serving.conftest import API_KEYS, SMALL, agent_sidecar_settings  # noqa: E402
from tests.support.processes import LlamaServer, Sidecar, Standin  # noqa: E402

MODEL = "cascade:tool_selection:share=0"  # a valid small answer is kept; an invalid one escalates
#: Instructions that name the tool make SmolLM2 write its final answer as another call, in text
#: (it imitates the call the function-calling format shows it); the tool is forced anyway.
INSTRUCTIONS = "You are a helpful assistant."


@pytest.fixture(scope="module")
def framework_sidecar(
    serving_dir: Path, llama_functions: LlamaServer, functions_standin: Standin
) -> Iterator[Sidecar]:
    workdir = serving_dir / "framework"
    workdir.mkdir()
    server = Sidecar(
        workdir, agent_sidecar_settings(workdir, llama_functions, functions_standin)
    ).start()
    yield server
    server.stop()


def stored_requests(sidecar: Sidecar, expected: int, timeout_s: float = 30.0) -> list[tuple]:
    """The sidecar's feedback store rows (step, input_text, path, tier), oldest first."""
    deadline = time.monotonic() + timeout_s
    rows: list[tuple] = []
    while time.monotonic() < deadline:
        with sqlite3.connect(Path(sidecar.cwd) / "feedback.db") as db:
            rows = db.execute(
                "SELECT step, input_text, path, tier FROM requests ORDER BY created_at"
            ).fetchall()
        if len(rows) >= expected:
            break
        time.sleep(0.3)
    return rows


def test_an_agents_sdk_agent_loop_runs_through_the_sidecar(framework_sidecar: Sidecar) -> None:
    executed: list[dict[str, Any]] = []

    @agents.function_tool
    def get_weather(city: str) -> str:
        """Current weather for a city."""
        executed.append({"city": city})
        return f"Sunny, 21 C in {city}"

    client = AsyncOpenAI(
        base_url=f"{framework_sidecar.url}/v1", api_key=API_KEYS[0], max_retries=0, timeout=600
    )
    agent = agents.Agent(
        name="weather",
        instructions=INSTRUCTIONS,
        tools=[get_weather],
        model=agents.OpenAIChatCompletionsModel(model=MODEL, openai_client=client),
        model_settings=agents.ModelSettings(
            tool_choice="get_weather", temperature=0.0, max_tokens=64, extra_args={"seed": 0}
        ),
    )
    result = asyncio.run(
        agents.Runner.run(
            agent,
            "What is the weather in Paris?",
            run_config=agents.RunConfig(tracing_disabled=True),
            max_turns=4,
        )
    )
    # the SDK parsed the model's call and ran the function once, with its arguments
    assert len(executed) == 1 and isinstance(executed[0]["city"], str)
    calls = [i for i in result.new_items if isinstance(i, agents.ToolCallItem)]
    outputs = [i for i in result.new_items if isinstance(i, agents.ToolCallOutputItem)]
    assert [c.raw_item.name for c in calls] == ["get_weather"]  # type: ignore[union-attr]
    assert json.loads(calls[0].raw_item.arguments) == executed[0]  # type: ignore[union-attr]
    assert outputs[0].output == f"Sunny, 21 C in {executed[0]['city']}"
    # then the model answered in text, and that answer is the run's final output
    assert isinstance(result.final_output, str) and result.final_output.strip()
    assert "get_weather" not in result.final_output  # an answer, not a call written as text
    messages = [i for i in result.new_items if isinstance(i, agents.MessageOutputItem)]
    assert agents.ItemHelpers.text_message_output(messages[-1]) == result.final_output
    assert len(result.raw_responses) == 2
    # both model calls went through the cascade; the second carried the tool result, which the
    # router read in its input window
    (first, second) = stored_requests(framework_sidecar, 2)[-2:]
    assert first[0] == second[0] == "tool_selection"
    assert first[1].startswith("What is the weather in Paris?\n\nTools: get_weather: Current")
    assert second[1].endswith(f"Tool result: Sunny, 21 C in {executed[0]['city']}")
    for _, _, path, tier in (first, second):
        assert path in ("small→verified", "small→invalid→frontier")
        if path == "small→verified":
            assert tier == SMALL
