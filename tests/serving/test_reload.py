"""Hot reload: promoting a new version while requests are in flight swaps it in atomically; a
version that cannot load is refused and the old one keeps serving.  Real MLflow sqlite registry.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import mlflow
import pytest

from router.data import bundled_dataset, load_outcomes
from router.feedback import FeedbackStore
from router.settings import RouterSettings
from tests.serving.conftest import API_KEYS
from tests.support.processes import Sidecar
from training import registry

AUTH = {"Authorization": f"Bearer {API_KEYS[0]}"}
NAME = "reload-router"


def register(folder: Path, settings: RouterSettings) -> str:
    """Log ``folder`` as a new registered version and return its number."""
    registry.open_tracking(settings)
    with mlflow.start_run() as run:
        info = registry.log_router(folder, run=run, input_example=None, registered_model=NAME)
    return str(info.registered_model_version)


@pytest.fixture(scope="module")
def replay_prompts() -> list[tuple[str, str]]:
    """Prompts both tiers have recorded answers for (the upstreams replay them)."""
    frame = load_outcomes(
        [bundled_dataset("mmlu_pro")], models=["llama-3.1-8b-instruct", "gpt-4o-2024-05-13"]
    )
    both = frame.groupby("prompt")["model"].nunique()
    chosen = frame[frame["prompt"].isin(both[both == 2].index)].drop_duplicates("prompt")
    return [(str(s), str(p)) for s, p in zip(chosen["step"], chosen["prompt"], strict=True)][:300]


@pytest.fixture(scope="module")
def registry_setup(
    tmp_path_factory: pytest.TempPathFactory, saved_model_dir: Path
) -> Iterator[tuple[RouterSettings, Path]]:
    root = tmp_path_factory.mktemp("reload")
    settings = RouterSettings(
        tracking_uri=f"sqlite:///{root}/mlflow.db",
        artifact_location=str(root / "mlruns"),
        experiment="reload-test",
        registered_model=NAME,
    )
    previous = mlflow.get_tracking_uri()
    version = register(saved_model_dir, settings)
    registry.set_alias(NAME, "champion", version, registry.open_tracking(settings))
    yield settings, root
    mlflow.set_tracking_uri(previous)


def test_promotion_hot_reloads_without_failing_or_mixing(
    registry_setup: tuple[RouterSettings, Path], saved_model_dir: Path, replay_prompts
) -> None:
    settings, root = registry_setup
    sidecar = Sidecar(
        root,
        {
            "tracking_uri": settings.tracking_uri,
            "artifact_location": settings.artifact_location,
            "registered_model": NAME,
            "feedback_url": f"sqlite:///{root / 'feedback.db'}",
            "api_keys": API_KEYS,
            "reload_interval_s": 0.5,
        },
    ).start()
    seen: list[list[tuple[int, str, str]]] = [[], []]
    stop = threading.Event()

    def client_loop(index: int) -> None:
        i = index
        with httpx.Client(timeout=60) as http:
            while not stop.is_set():
                step, prompt = replay_prompts[i % len(replay_prompts)]
                i += 2
                r = http.post(
                    f"{sidecar.url}/v1/chat/completions",
                    json={
                        "model": f"cascade:{step}",
                        "messages": [{"role": "user", "content": prompt}],
                    },
                    headers=AUTH,
                )
                seen[index].append(
                    (
                        r.status_code,
                        r.headers.get("x-cascade-router-version", ""),
                        r.headers.get("x-cascade-request-id", ""),
                    )
                )

    threads = [threading.Thread(target=client_loop, args=(k,)) for k in range(2)]
    try:
        for t in threads:
            t.start()
        while len(seen[0]) < 3:
            time.sleep(0.05)
        v2 = register(saved_model_dir, settings)
        registry.set_alias(
            NAME, "champion", v2, registry.open_tracking(settings)
        )  # promotion while requests are in flight
        deadline = time.monotonic() + 60
        while not any(v == v2 for _, v, _ in seen[0][-3:] + seen[1][-3:]):
            assert time.monotonic() < deadline, "the sidecar never picked up the new version"
            time.sleep(0.1)

        # a version that cannot load is refused; the old one keeps serving
        broken = root / "broken"
        shutil.copytree(saved_model_dir, broken)
        meta = json.loads((broken / "router.json").read_text())
        meta["format_version"] = 999
        (broken / "router.json").write_text(json.dumps(meta))
        v3 = register(broken, settings)
        registry.set_alias(NAME, "champion", v3, registry.open_tracking(settings))
        deadline = time.monotonic() + 30
        refused = 0.0
        while refused < 1:
            assert time.monotonic() < deadline, "the broken version was not refused"
            metrics = httpx.get(f"{sidecar.url}/metrics", headers=AUTH).text
            refused = sum(
                float(line.split()[-1])
                for line in metrics.splitlines()
                if line.startswith('cascade_router_reloads_total{outcome="refused"}')
            )
            time.sleep(0.2)
        count = len(seen[0])
        while len(seen[0]) < count + 3:
            time.sleep(0.05)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
        sidecar.stop()

    everything = seen[0] + seen[1]
    assert [s for s, _, _ in everything] == [200] * len(everything)  # no request failed
    assert {v for _, v, _ in everything} == {"1", v2}  # never the broken v3
    for stream in seen:  # each client sees one swap, never back
        versions = [v for _, v, _ in stream]
        first_new = versions.index(v2)
        assert set(versions[first_new:]) == {v2}
        assert set(versions[:first_new]) == {"1"}
    # every stored request names the version its response header named: no mixing
    store = FeedbackStore(f"sqlite:///{root / 'feedback.db'}")
    try:
        for _, version, request_id in everything:
            record = store.get_request(request_id)
            assert record is not None and record.router_version == version
    finally:
        store.close()
    assert "refused router version" in sidecar.log()
