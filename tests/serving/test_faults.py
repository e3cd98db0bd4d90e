"""Faults: a small tier that dies, hangs or errs escalates; a failing frontier is retried, then
answered with an OpenAI-style 502/504 within the deadline; overload gets a 503.

The upstreams are real HTTP servers whose behaviour the tests change while the sidecar runs.
"""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.serving.conftest import API_KEYS, FRONTIER, SMALL, sidecar_settings
from tests.serving.test_service import assert_openai_error
from tests.support.openai_server import OpenAIStubServer
from tests.support.processes import LlamaServer, Sidecar

AUTH = {"Authorization": f"Bearer {API_KEYS[0]}"}
DEADLINE_S = 3.0


def ask(
    sidecar: Sidecar, prompt: str, model: str = "cascade", timeout: float = 60
) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": prompt}]}
    return httpx.post(
        f"{sidecar.url}/v1/chat/completions", json=body, headers=AUTH, timeout=timeout
    )


def metric(sidecar: Sidecar, prefix: str) -> float:
    """Sum of the samples whose line starts with ``prefix`` (name and label text)."""
    text = httpx.get(f"{sidecar.url}/metrics", headers=AUTH).text
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(prefix))


@pytest.fixture(scope="module")
def small_stub() -> Iterator[OpenAIStubServer]:
    with OpenAIStubServer(lambda messages: "The answer is (A).", models=["small-stub"]) as s:
        yield s


@pytest.fixture(scope="module")
def frontier_stub(frontier_frame) -> Iterator[OpenAIStubServer]:
    with OpenAIStubServer(frame=frontier_frame) as server:
        yield server


@pytest.fixture(scope="module")
def fragile(
    serving_dir: Path, small_stub: OpenAIStubServer, frontier_stub: OpenAIStubServer
) -> Iterator[Sidecar]:
    """A sidecar with tight limits over two stubs whose faults the tests switch on and off."""
    workdir = serving_dir / "fragile"
    workdir.mkdir()
    settings = sidecar_settings(
        workdir,
        small_stub.base_url,
        frontier_stub.base_url,
        small_timeout_s=0.5,
        request_timeout_s=DEADLINE_S,
        upstream_retries=2,
        retry_backoff_s=0.05,
        max_concurrency=3,
    )
    settings["upstreams"][SMALL]["model"] = "small-stub"
    server = Sidecar(workdir, settings).start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def healthy(small_stub: OpenAIStubServer, frontier_stub: OpenAIStubServer) -> Iterator[None]:
    yield
    for stub in (small_stub, frontier_stub):
        stub.fail_with_status = stub.fail_times = None
        stub.delay_s = 0.0
        stub._failures = 0


def small_model(step: str) -> str:
    """A policy that always calls the small tier first (no skip) and keeps its answer."""
    return f"cascade:{step}:share=0"


def test_small_timeout_escalates(fragile: Sidecar, small_stub, prompts) -> None:
    step, prompt = prompts[10]
    small_stub.delay_s = 2.0  # beyond small_timeout_s=0.5
    before = metric(fragile, f'cascade_upstream_errors_total{{kind="timeout",tier="{SMALL}"}}')
    started = time.monotonic()
    response = ask(fragile, prompt, small_model(step))
    assert response.status_code == 200, response.text
    assert time.monotonic() - started < DEADLINE_S
    assert response.headers["x-cascade-path"] == "small>failed>frontier"
    assert response.headers["x-cascade-tier"] == FRONTIER
    after = metric(fragile, f'cascade_upstream_errors_total{{kind="timeout",tier="{SMALL}"}}')
    assert after == before + 1


@pytest.mark.parametrize("status", [500, 503])
def test_small_5xx_escalates(fragile: Sidecar, small_stub, prompts, status: int) -> None:
    step, prompt = prompts[11]
    small_stub.fail_with_status = status
    response = ask(fragile, prompt, small_model(step))
    assert response.status_code == 200, response.text
    assert response.headers["x-cascade-path"] == "small>failed>frontier"
    assert response.json()["cascade"]["failures"][SMALL]


def test_frontier_failures_are_retried(
    fragile: Sidecar, small_stub, frontier_stub, prompts
) -> None:
    step, prompt = prompts[12]
    small_stub.fail_with_status = 500  # the request must reach the frontier
    frontier_stub.fail_with_status, frontier_stub.fail_times = 503, 2
    response = ask(fragile, prompt, f"cascade:{step}:quality=1")
    assert response.status_code == 200, response.text
    assert response.headers["x-cascade-tier"] == FRONTIER
    assert frontier_stub._failures == 2


def test_frontier_down_is_a_502(fragile: Sidecar, small_stub, frontier_stub, prompts) -> None:
    step, prompt = prompts[13]
    small_stub.fail_with_status = 500
    frontier_stub.fail_with_status = 500
    started = time.monotonic()
    response = ask(fragile, prompt, f"cascade:{step}:quality=1")
    assert time.monotonic() - started < DEADLINE_S + 1
    error = assert_openai_error(response, 502, "upstream_error")
    assert error["type"] == "server_error"
    assert metric(fragile, f'cascade_upstream_errors_total{{kind="error",tier="{FRONTIER}"}}') >= 3


def test_hanging_frontier_is_a_504_within_the_deadline(
    fragile: Sidecar, small_stub, frontier_stub, prompts
) -> None:
    step, prompt = prompts[14]
    small_stub.fail_with_status = 500
    frontier_stub.delay_s = 30.0
    started = time.monotonic()
    response = ask(fragile, prompt, f"cascade:{step}:quality=1")
    elapsed = time.monotonic() - started
    assert response.status_code == 504, response.text
    assert_openai_error(response, 504)
    assert elapsed < DEADLINE_S + 1.5


def test_overload_is_a_503(fragile: Sidecar, small_stub, prompts) -> None:
    step, prompt = prompts[15]
    small_stub.delay_s = 0.3  # each request holds its slot for a while
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(lambda _: ask(fragile, prompt, small_model(step)), range(8)))
    statuses = sorted(r.status_code for r in responses)
    assert statuses.count(200) >= 1
    assert 503 in statuses
    for r in responses:
        if r.status_code == 503:
            assert_openai_error(r, 503, "overloaded")


def test_small_model_stopped_mid_run_every_request_is_answered(
    serving_dir: Path, frontier: OpenAIStubServer, prompts
) -> None:
    """Kill the real llama.cpp server while requests flow: every request still gets an answer."""
    workdir = serving_dir / "kill-small"
    workdir.mkdir()
    llama = LlamaServer(workdir / "llama.log").start()
    sidecar = Sidecar(
        workdir, sidecar_settings(workdir, llama.base_url, frontier.base_url, small_timeout_s=30)
    ).start()
    try:
        work = [prompts[i] for i in range(20, 44)]

        def one(item: tuple[str, str]) -> httpx.Response:
            step, prompt = item
            return ask(sidecar, prompt, small_model(step))

        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            futures = [pool.submit(one, item) for item in work]
            while sum(f.done() for f in futures) < 3:
                time.sleep(0.05)
            llama.stop()  # the small model goes away mid-run
            responses = [f.result() for f in futures]
        assert [r.status_code for r in responses] == [200] * len(work)
        paths = [r.headers["x-cascade-path"] for r in responses]
        assert "small>verified" in paths  # answered by SmolLM2 before the kill
        assert "small>failed>frontier" in paths  # escalated after it
        failures = sum(
            metric(sidecar, f'cascade_upstream_errors_total{{kind="{kind}",tier="{SMALL}"}}')
            for kind in ("unavailable", "timeout", "error")
        )
        assert failures == paths.count("small>failed>frontier")
        ready = httpx.get(f"{sidecar.url}/readyz")
        assert ready.status_code == 503
        assert ready.json()["upstreams"][SMALL].startswith("unreachable")
    finally:
        sidecar.stop()
        llama.stop()
