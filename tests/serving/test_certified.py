"""A certified router behind the sidecar: certificates in every answer, an uncertifiable target is a
400, and labels feed the production check in /metrics.  Real uvicorn server, replay upstreams."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from router.data import bundled_dataset, load_outcomes
from tests.conftest import TIERS
from tests.serving.conftest import API_KEYS
from tests.support.processes import Sidecar

AUTH = {"Authorization": f"Bearer {API_KEYS[0]}"}


@pytest.fixture(scope="module")
def replayable() -> list[tuple[str, str]]:
    """(step, prompt) pairs both tiers have recorded answers for (the upstreams replay them)."""
    frame = load_outcomes([bundled_dataset("mmlu_pro")], models=list(TIERS))
    both = frame.groupby("prompt")["model"].nunique()
    chosen = frame[frame["prompt"].isin(both[both == 2].index)].drop_duplicates("prompt")
    return [(str(s), str(p)) for s, p in zip(chosen["step"], chosen["prompt"], strict=True)][:40]


@pytest.fixture(scope="module")
def certified_sidecar(
    tmp_path_factory: pytest.TempPathFactory, saved_model_dir: Path
) -> Iterator[Sidecar]:
    root = tmp_path_factory.mktemp("certified-sidecar")
    server = Sidecar(
        root,
        {
            "tracking_uri": f"sqlite:///{root / 'mlflow.db'}",
            "artifact_location": str(root / "mlruns"),
            "feedback_url": f"sqlite:///{root / 'feedback.db'}",
            "model_uri": str(saved_model_dir),
            "api_keys": API_KEYS,
            "drift_min_labels": 5,
        },
    ).start()
    yield server
    server.stop()


def test_route_and_chat_report_the_certificate(certified_sidecar: Sidecar, replayable) -> None:
    url = certified_sidecar.url
    step, prompt = replayable[0]
    decision = httpx.post(
        f"{url}/v1/route",
        json={"step": step, "input": prompt, "target": "quality=0.9,delta=0.05"},
        headers=AUTH,
    )
    assert decision.status_code == 200, decision.text
    cert = decision.json()["certificate"]
    assert cert["target"] == "quality_ratio=0.9,delta=0.05"
    assert cert["bound"] == {"quality_ratio": 0.9} and cert["delta"] == 0.05
    assert cert["method"] == "wsr" and cert["n_outcomes"] > 0
    assert cert["point"]["lam"] == decision.json()["lam"]
    chat = httpx.post(
        f"{url}/v1/chat/completions",
        json={"model": f"cascade:{step}", "messages": [{"role": "user", "content": prompt}]},
        headers=AUTH,
        timeout=60,
    )
    assert chat.status_code == 200, chat.text
    summary = chat.json()["cascade"]
    assert summary["certificate"]["target"] == summary["target"] == "quality_ratio=0.95"
    assert summary["certificate"]["bound"] == {"quality_ratio": 0.95}


def test_an_uncertifiable_target_is_a_400_naming_the_alternative(
    certified_sidecar: Sidecar, replayable
) -> None:
    step, prompt = replayable[1]
    for path, body in (
        ("/v1/route", {"step": step, "input": prompt, "target": "quality=0.999"}),
        (
            "/v1/chat/completions",
            {
                "model": f"cascade:{step}:quality=0.999",
                "messages": [{"role": "user", "content": prompt}],
            },
        ),
    ):
        response = httpx.post(f"{certified_sidecar.url}{path}", json=body, headers=AUTH)
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["code"] == "target_not_certifiable"
        assert "quality ratio ≥ 0.999 cannot be certified with" in error["message"]
        assert "certifiable: quality=" in error["message"]


def test_labels_feed_the_certificate_check_in_metrics(
    certified_sidecar: Sidecar, replayable
) -> None:
    url = certified_sidecar.url
    for step, prompt in replayable[2:10]:
        chat = httpx.post(
            f"{url}/v1/chat/completions",
            json={"model": f"cascade:{step}", "messages": [{"role": "user", "content": prompt}]},
            headers=AUTH,
            timeout=60,
        )
        assert chat.status_code == 200, chat.text
        stored = httpx.post(
            f"{url}/v1/feedback",
            json={"request_id": chat.json()["id"], "accepted": False},
            headers=AUTH,
        )
        assert stored.status_code == 200, stored.text
    metrics = httpx.get(f"{url}/metrics", headers=AUTH).text
    for family in (
        "cascade_certificate_realised_lower",
        "cascade_certificate_realised_upper",
        "cascade_certificate_promised",
        "cascade_certificate_labels",
        "cascade_certificate_violated",
    ):
        assert family in metrics, family
    assert 'constraint="quality_ratio"' in metrics and 'target="quality_ratio=0.95"' in metrics
