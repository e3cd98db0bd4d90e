"""Several uvicorn workers: each loads the router; the stores are prepared once, no race."""

from __future__ import annotations

import httpx

from tests.serving.conftest import API_KEYS
from tests.support.processes import Sidecar


def test_two_workers_serve(serving_dir, prompts) -> None:
    workdir = serving_dir / "workers"
    workdir.mkdir()
    settings = {
        "tracking_uri": f"sqlite:///{workdir / 'mlflow.db'}",
        "feedback_url": f"sqlite:///{workdir / 'feedback.db'}",
        "api_keys": API_KEYS,
        "workers": 2,
    }
    sidecar = Sidecar(workdir, settings).start()
    try:
        for step, prompt in prompts[:8]:
            r = httpx.post(
                f"{sidecar.url}/v1/route",
                json={"step": step, "input": prompt},
                headers={"Authorization": f"Bearer {API_KEYS[0]}"},
                timeout=60,
            )
            assert r.status_code == 200, r.text
    finally:
        sidecar.stop()
    log = sidecar.log()
    assert "Traceback" not in log
    assert log.count("serving router version bundled") == 2
