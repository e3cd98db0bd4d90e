"""The example agent runs its five steps through a real sidecar over real local models: its tool
selection is a tools request whose call the agent executes, its extraction a json_schema one."""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.serving.conftest import API_KEYS, FRONTIER, SMALL, agent_sidecar_settings
from tests.support.processes import ROOT, LlamaServer, Sidecar, Standin


def load_agent():
    spec = importlib.util.spec_from_file_location("example_agent", ROOT / "examples" / "agent.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["example_agent"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def agent_sidecar(
    serving_dir: Path, llama_functions: LlamaServer, functions_standin: Standin
) -> Iterator[Sidecar]:
    workdir = serving_dir / "agent"
    workdir.mkdir()
    settings = agent_sidecar_settings(workdir, llama_functions, functions_standin)
    settings["upstreams"][SMALL]["max_tokens"] = 128  # as examples/sidecar.local.toml
    server = Sidecar(workdir, settings).start()
    yield server
    server.stop()


def test_standin_answers_recorded_prompts_and_falls_back(
    functions_standin: Standin, prompts
) -> None:
    standin = functions_standin
    _, recorded = prompts[0]
    body = {"model": FRONTIER, "messages": [{"role": "user", "content": recorded}]}
    answer = httpx.post(f"{standin.base_url}/chat/completions", json=body, timeout=60).json()
    assert answer["model"] == FRONTIER and answer["choices"][0]["message"]["content"]
    body["messages"] = [{"role": "user", "content": "Say hello in one word."}]
    fallback = httpx.post(f"{standin.base_url}/chat/completions", json=body, timeout=60)
    assert fallback.status_code == 200 and fallback.json()["choices"][0]["message"]["content"]
    wrong = httpx.post(f"{standin.base_url}/chat/completions", json={**body, "model": "x"})
    assert wrong.status_code == 404 and wrong.json()["error"]["code"] == "model_not_found"


def test_the_local_tools_do_what_they_say() -> None:
    agent = load_agent()
    assert agent.lookup_order("88412")["status"] == "shipped"
    assert "error" in agent.cancel_order("88412") and agent.cancel_order("55120")["cancelled"]
    assert set(agent.FUNCTIONS) == {t["function"]["name"] for t in agent.TOOLS}
    executed = agent.execute(
        type("Call", (), {"id": "c1", "function": type("F", (), {"name": "x", "arguments": "{"})})
    )
    assert "error" in executed.result  # a broken call is reported back, never raised


@pytest.mark.slow
def test_agent_runs_five_steps_with_a_real_tool_call_and_accounts_for_cost(
    agent_sidecar: Sidecar, capsys: pytest.CaptureFixture[str]
) -> None:
    agent = load_agent()
    client = openai.OpenAI(base_url=f"{agent_sidecar.url}/v1", api_key=API_KEYS[0], timeout=600)
    reports = agent.run_agent(client, "Please cancel order 55120, wrong size of shoes.")
    assert [r.step for r in reports] == list(agent.TARGETS)
    for r in reports:
        assert r.tier in (SMALL, FRONTIER)
        assert r.cost_usd > 0 and r.frontier_cost_usd > 0 and r.latency_s > 0
        if r.path == "small>verified":  # the small model's price is far below the frontier's
            assert r.cost_usd < r.frontier_cost_usd / 10
    by_step = {r.step: r for r in reports}
    # tool selection: a real tool call, parsed and executed by the agent's own function
    (call,) = by_step["tool_selection"].calls
    assert call.name in agent.FUNCTIONS and isinstance(call.arguments, dict)
    assert call.result == agent.FUNCTIONS[call.name](**call.arguments)
    assert "raw" not in call.arguments  # the arguments parsed: the validator saw to that
    # extraction: the JSON answer fits the schema whoever answered
    entities = json.loads(by_step["extraction"].answer)
    assert set(entities) == {"order", "product"}
    assert by_step["response_generation"].answer  # the reply after the tool result
    agent.print_reports(reports)
    out = capsys.readouterr().out
    assert f"called {call.name}(" in out and "output_validation" in out and "saved" in out
    code = agent.main(
        ["--base-url", f"{agent_sidecar.url}/v1", "--api-key", "wrong", "--message", "hi"]
    )
    assert code == 3  # a clear error, no traceback
