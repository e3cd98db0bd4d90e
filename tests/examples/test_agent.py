"""The example agent runs its five steps through a real sidecar over real local models."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.serving.conftest import API_KEYS, FRONTIER, sidecar_settings
from tests.support.processes import ROOT, LlamaServer, Sidecar, Standin


def load_agent():
    spec = importlib.util.spec_from_file_location("example_agent", ROOT / "examples" / "agent.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["example_agent"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def standin(serving_dir: Path, llama: LlamaServer) -> Iterator[Standin]:
    server = Standin(serving_dir, llama).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def agent_sidecar(serving_dir: Path, llama: LlamaServer, standin: Standin) -> Iterator[Sidecar]:
    workdir = serving_dir / "agent"
    workdir.mkdir()
    server = Sidecar(workdir, sidecar_settings(workdir, llama.base_url, standin.base_url)).start()
    yield server
    server.stop()


def test_standin_answers_recorded_prompts_and_falls_back(standin: Standin, prompts) -> None:
    _, recorded = prompts[0]
    body = {"model": FRONTIER, "messages": [{"role": "user", "content": recorded}]}
    answer = httpx.post(f"{standin.base_url}/chat/completions", json=body, timeout=60).json()
    assert answer["model"] == FRONTIER and answer["choices"][0]["message"]["content"]
    body["messages"] = [{"role": "user", "content": "Say hello in one word."}]
    fallback = httpx.post(f"{standin.base_url}/chat/completions", json=body, timeout=60)
    assert fallback.status_code == 200 and fallback.json()["choices"][0]["message"]["content"]
    wrong = httpx.post(f"{standin.base_url}/chat/completions", json={**body, "model": "x"})
    assert wrong.status_code == 404 and wrong.json()["error"]["code"] == "model_not_found"


@pytest.mark.slow
def test_agent_runs_five_steps_and_accounts_for_cost(
    agent_sidecar: Sidecar, capsys: pytest.CaptureFixture[str]
) -> None:
    agent = load_agent()
    client = openai.OpenAI(base_url=f"{agent_sidecar.url}/v1", api_key=API_KEYS[0], timeout=120)
    reports = agent.run_agent(client, "Please cancel order 55120, wrong size of shoes.")
    assert [r.step for r in reports] == [s for s, _, _ in agent.STEPS]
    for r in reports:
        assert r.tier in ("llama-3.1-8b-instruct", FRONTIER)
        assert r.cost_usd > 0 and r.frontier_cost_usd > 0 and r.latency_s > 0
        assert r.answer
        if r.path == "small>verified":  # the small model's price is far below the frontier's
            assert r.cost_usd < r.frontier_cost_usd / 10
    agent.print_reports(reports)
    out = capsys.readouterr().out
    assert "output_validation" in out and "saved" in out
    code = agent.main(
        ["--base-url", f"{agent_sidecar.url}/v1", "--api-key", "wrong", "--message", "hi"]
    )
    assert code == 3  # a clear error, no traceback
