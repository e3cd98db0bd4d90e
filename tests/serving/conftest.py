"""Real servers for the service tests: SmolLM2 on llama.cpp, a replay frontier, the sidecar."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from router.data import bundled_dataset, load_outcomes
from tests.support.openai_server import OpenAIStubServer
from tests.support.processes import LlamaServer, LocalModelError, Sidecar, Standin

SMALL, FRONTIER = "llama-3.1-8b-instruct", "gpt-4o-2024-05-13"
API_KEYS = ["test-key-one", "test-key-two"]


@pytest.fixture(scope="session")
def frontier_frame() -> pd.DataFrame:
    """Recorded GPT-4o answers to the bundled MMLU-Pro prompts (what the frontier replays)."""
    return load_outcomes([bundled_dataset("mmlu_pro")], models=[FRONTIER])


@pytest.fixture(scope="session")
def prompts(frontier_frame: pd.DataFrame) -> list[tuple[str, str]]:
    """(step, prompt) pairs the replay frontier can answer, shortest first (fast on SmolLM2)."""
    frame = frontier_frame.assign(n=frontier_frame["prompt"].str.len()).sort_values("n")
    return [(str(s), str(p)) for s, p in zip(frame["step"], frame["prompt"], strict=True)][:200]


@pytest.fixture(scope="session")
def serving_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("serving")


@pytest.fixture(scope="session")
def llama(serving_dir: Path) -> Iterator[LlamaServer]:
    """The real small model: SmolLM2-135M-Instruct on llama.cpp's server."""
    try:
        server = LlamaServer(serving_dir / "llama.log").start()
    except LocalModelError as exc:  # a broken build fails every test that needs it: stop here
        pytest.exit(str(exc), returncode=1)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def llama_functions(serving_dir: Path) -> Iterator[LlamaServer]:
    """SmolLM2-135M-Instruct on llama.cpp's server with its function-calling chat format
    (``chatml-function-calling``: the model sees the tools and may answer with tool calls)."""
    try:
        server = LlamaServer(
            serving_dir / "llama-functions.log",
            extra_args=("--chat_format", "chatml-function-calling"),
        ).start()
    except LocalModelError as exc:
        pytest.exit(str(exc), returncode=1)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def frontier(frontier_frame: pd.DataFrame) -> Iterator[OpenAIStubServer]:
    """The paid frontier API's stand-in: OpenAI protocol over HTTP, answers from replay data."""
    with OpenAIStubServer(frame=frontier_frame) as server:
        yield server


def sidecar_settings(workdir: Path, small_url: str, frontier_url: str, **extra: object) -> dict:
    """CASCADE_* settings of a sidecar over the two upstreams (no registry: bundled router)."""
    return {
        "tracking_uri": f"sqlite:///{workdir / 'mlflow.db'}",
        "artifact_location": str(workdir / "mlruns"),
        "feedback_url": f"sqlite:///{workdir / 'feedback.db'}",
        "api_keys": API_KEYS,
        "upstreams": {
            SMALL: {
                "base_url": small_url,
                "model": LlamaServer.model_alias,
                "max_tokens": 64,
                "dialect": "llama-cpp-python",
            },
            FRONTIER: {"base_url": frontier_url},
        },
        **extra,
    }


@pytest.fixture(scope="session")
def functions_standin(serving_dir: Path, llama_functions: LlamaServer) -> Iterator[Standin]:
    """`cascade-router standin` as the agent tests' frontier: recorded GPT-4o answers, and
    SmolLM2 with function calling for the rest (it answers tool requests in shape)."""
    server = Standin(serving_dir, llama_functions).start()
    yield server
    server.stop()


def agent_sidecar_settings(workdir: Path, small: LlamaServer, frontier: Standin) -> dict:
    """Settings of a sidecar that agent loops drive over the local models: on a busy 2-core
    machine each model call may take a minute."""
    settings = sidecar_settings(
        workdir, small.base_url, frontier.base_url, small_timeout_s=120, request_timeout_s=600
    )
    settings["upstreams"][FRONTIER]["timeout_s"] = 300
    return settings


@pytest.fixture(scope="session")
def sidecar(serving_dir: Path, llama: LlamaServer, frontier: OpenAIStubServer) -> Iterator[Sidecar]:
    """`cascade-router serve` on 127.0.0.1 over the real small model and the replay frontier."""
    workdir = serving_dir / "main"
    workdir.mkdir()
    server = Sidecar(workdir, sidecar_settings(workdir, llama.base_url, frontier.base_url))
    server.start()
    yield server
    server.stop()
