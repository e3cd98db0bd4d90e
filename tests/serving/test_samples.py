"""Extra samples of the real small model as second opinions: SmolLM2-135M on llama.cpp (which
ignores OpenAI's ``n``, so the samples come from parallel calls), through the SDK and through
the sidecar, whose ``x-cascade-path`` shows the samples taken."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from pathlib import Path

import httpx
import pandas as pd
import pytest

from router import Router
from router.backends import OpenAIBackend
from router.data import OutcomeTable, bundled_dataset, load_outcomes
from router.model import CascadeModel
from router.opinions import sample_model_names
from tests.serving.conftest import API_KEYS
from tests.support.openai_server import OpenAIStubServer
from tests.support.processes import LlamaServer, Sidecar

SMALL, FRONTIER = "smollm2-135m-instruct", "gpt-4-1106-preview"
SAMPLES = sample_model_names(SMALL, 3)


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return load_outcomes(
        [bundled_dataset("routerbench_smollm2")], models=[SMALL, FRONTIER, *SAMPLES]
    )


@pytest.fixture(scope="module")
def table(frame: pd.DataFrame) -> OutcomeTable:
    return OutcomeTable.from_long(frame, (SMALL, FRONTIER), peers=list(SAMPLES))


@pytest.fixture(scope="module")
def router_dir(table: OutcomeTable, embedder, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A router trained with 3 samples whose every operating point buys them."""
    model = CascadeModel(
        [SMALL, FRONTIER],
        samples=3,
        answer_kinds={"arc-challenge": "choice", "winogrande": "choice"},
        acceptance_params={"n_estimators": 100, "early_stopping_rounds": 20},
        skip_tolerance=None,
        capacity_cv_below=0,
    ).fit(table, embedder)
    policy = model.policy_
    band = ((0.0, math.inf),)
    policy.global_ = dataclasses.replace(policy.global_, opinion_bands=band)
    policy.per_step_ = {
        k: dataclasses.replace(v, opinion_bands=band) for k, v in policy.per_step_.items()
    }
    policy.certified_ = None  # hand-set points are not certified: saved and run as set
    return model.save(tmp_path_factory.mktemp("samples") / "router")


@pytest.fixture(scope="module")
def frontier(frame: pd.DataFrame) -> Iterator[OpenAIStubServer]:
    with OpenAIStubServer(frame=frame[frame["model"] == FRONTIER]) as server:
        yield server


def test_sdk_samples_the_real_small_model(
    router_dir, embedder, llama: LlamaServer, frontier, table
):
    small = OpenAIBackend(LlamaServer.model_alias, base_url=llama.base_url, max_tokens=8)
    big = OpenAIBackend(FRONTIER, base_url=frontier.base_url)
    router = Router(CascadeModel.load(router_dir), embedder=embedder, backends=[small, big])
    result = router.route(str(table.steps[0]), table.prompts[0])
    assert result.path.startswith("small→sample→sample→sample→"), result.path
    sampled = [s for s in result.steps if s.role == "sample"]
    assert [s.tier for s in sampled] == list(SAMPLES)
    assert all(s.latency_s > 0 and s.cost_usd > 0 for s in sampled)
    assert small._honours_n is False  # llama.cpp answered n=3 with one choice


def test_sidecar_path_shows_the_samples(
    router_dir, llama: LlamaServer, frontier, table, tmp_path: Path
) -> None:
    settings = {
        "tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "artifact_location": str(tmp_path / "mlruns"),
        "feedback_url": f"sqlite:///{tmp_path / 'feedback.db'}",
        "api_keys": API_KEYS,
        "model_uri": str(router_dir),
        "upstreams": {
            SMALL: {"base_url": llama.base_url, "model": LlamaServer.model_alias, "max_tokens": 8},
            FRONTIER: {"base_url": frontier.base_url},
        },
    }
    sidecar = Sidecar(tmp_path, settings).start()
    try:
        body = {
            "model": f"cascade:{table.steps[1]}",
            "messages": [{"role": "user", "content": table.prompts[1]}],
        }
        response = httpx.post(
            f"{sidecar.url}/v1/chat/completions",
            json=body,
            headers={"Authorization": f"Bearer {API_KEYS[0]}"},
            timeout=120,
        )
        assert response.status_code == 200, response.text
        path = response.headers["x-cascade-path"]
        assert path.startswith("small>sample>sample>sample>"), path
        cascade = response.json()["cascade"]
        assert cascade["path"].split("→").count("sample") == 3
        assert 0.0 <= cascade["probabilities"]["opinion_agreement"] <= 1.0
    finally:
        sidecar.stop()
