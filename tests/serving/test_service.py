"""The sidecar end to end: a real uvicorn server, the real openai client, the real small model.

The small tier is SmolLM2-135M-Instruct on llama.cpp; the frontier is the replay stand-in
(OpenAI protocol over HTTP).  Bad input and auth are sent as raw HTTP.
"""

from __future__ import annotations

import concurrent.futures
import json
from pathlib import Path

import httpx
import openai
import pytest

from router.feedback import FeedbackStore
from tests.serving.conftest import API_KEYS, FRONTIER, SMALL
from tests.support.processes import LlamaServer, Sidecar

AUTH = {"Authorization": f"Bearer {API_KEYS[0]}"}
CASCADE_HEADERS = (
    "x-cascade-tier",
    "x-cascade-path",
    "x-cascade-p-accept",
    "x-cascade-router-version",
    "x-cascade-request-id",
)


def client(sidecar: Sidecar, key: str = API_KEYS[0]) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{sidecar.url}/v1", api_key=key, max_retries=0, timeout=120)


def assert_openai_error(response: httpx.Response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    if code is not None:
        assert error["code"] == code, error
    return error


# ---------------------------------------------------------------- OpenAI compatibility


def test_chat_completion_through_the_openai_client(sidecar: Sidecar, prompts) -> None:
    step, prompt = prompts[0]
    raw = client(sidecar).chat.completions.with_raw_response.create(
        model=f"cascade:{step}", messages=[{"role": "user", "content": prompt}]
    )
    completion = raw.parse()
    headers = raw.headers
    for name in CASCADE_HEADERS:
        assert headers.get(name), name
    assert headers["x-cascade-request-id"] == completion.id
    assert headers["x-cascade-router-version"] == "bundled"
    assert 0.0 <= float(headers["x-cascade-p-accept"]) <= 1.0
    tier = headers["x-cascade-tier"]
    assert tier in (SMALL, FRONTIER)
    # the response names the model that answered: SmolLM2's alias or the frontier's name
    assert completion.model == (LlamaServer.model_alias if tier == SMALL else FRONTIER)
    assert completion.choices[0].message.content
    assert completion.usage is not None and completion.usage.total_tokens > 0


def test_streaming_through_the_openai_client(sidecar: Sidecar, prompts) -> None:
    step, prompt = prompts[1]
    messages = [{"role": "user", "content": prompt}]
    stream = client(sidecar).chat.completions.create(
        model=f"cascade:{step}",
        messages=messages,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip()
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    # the raw stream ends with the SSE terminator
    body = {"model": "cascade", "messages": messages, "stream": True}
    with httpx.stream(
        "POST", f"{sidecar.url}/v1/chat/completions", json=body, headers=AUTH, timeout=120
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["x-cascade-path"]
        lines = [line for line in response.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    assert all(line.startswith("data: ") for line in lines)


def test_models_list_the_policies(sidecar: Sidecar) -> None:
    ids = [m.id for m in client(sidecar).models.list()]
    assert ids[0] == "cascade"
    assert "cascade:math" in ids  # a step kind the bundled router was trained on


def test_per_request_target_changes_the_policy(sidecar: Sidecar, prompts) -> None:
    """share=0 never calls the frontier; the target reaches the policy, by name or in the body."""
    step, prompt = prompts[2]
    messages = [{"role": "user", "content": prompt}]
    cheap = client(sidecar).chat.completions.with_raw_response.create(
        model=f"cascade:{step}:share=0", messages=messages
    )
    assert cheap.headers["x-cascade-tier"] == SMALL
    assert cheap.headers["x-cascade-path"] == "small>verified"
    body = {"model": "cascade", "messages": messages, "cascade": {"target": "quality=1.0"}}
    best = httpx.post(f"{sidecar.url}/v1/chat/completions", json=body, headers=AUTH, timeout=120)
    assert best.status_code == 200, best.text
    assert best.json()["cascade"]["target"] == "quality_ratio=1"
    assert cheap.parse().model == LlamaServer.model_alias


def test_route_returns_a_decision_without_calling_a_model(
    sidecar: Sidecar, prompts, frontier
) -> None:
    calls_before = len(frontier.requests)
    step, prompt = prompts[3]
    response = httpx.post(
        f"{sidecar.url}/v1/route", json={"step": step, "input": prompt}, headers=AUTH
    )
    assert response.status_code == 200, response.text
    decision = response.json()
    assert decision["action"] in ("call", "skip")
    assert decision["tier"] in (SMALL, FRONTIER)
    assert 0 <= decision["p_accept"] <= 1
    assert decision["path"] in ("small", "skipped→frontier")
    assert response.headers["x-cascade-request-id"] == decision["id"]
    with_answer = httpx.post(
        f"{sidecar.url}/v1/route",
        json={"step": step, "input": prompt, "answer": "The answer is (A)."},
        headers=AUTH,
    ).json()
    assert with_answer["action"] in ("accept", "escalate")
    assert with_answer["p_accept_answer"] is not None
    assert len(frontier.requests) == calls_before  # no model was called


def test_a_target_with_an_infinite_threshold_is_strict_json(sidecar: Sidecar, prompts) -> None:
    # share=0 (never call the frontier) makes λ infinite: it must not become a 500 (a JSON
    # encoder refuses inf) nor the non-standard `Infinity`
    step, prompt = prompts[3]
    response = httpx.post(
        f"{sidecar.url}/v1/route",
        json={"step": step, "input": prompt, "target": "share=0"},
        headers=AUTH,
    )
    assert response.status_code == 200, response.text
    assert "Infinity" not in response.text and "NaN" not in response.text
    assert response.json()["lam"] == "inf"


def test_concurrent_route_requests_are_batched(sidecar: Sidecar, prompts) -> None:
    def decide(i: int) -> dict:
        step, prompt = prompts[i % len(prompts)]
        r = httpx.post(
            f"{sidecar.url}/v1/route", json={"step": step, "input": prompt}, headers=AUTH
        )
        assert r.status_code == 200, r.text
        return r.json()

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        decisions = list(pool.map(decide, range(64)))
    assert len(decisions) == 64
    # the same input always gets the same decision, batched or not
    alone = decide(5)
    batched = next(d for i, d in enumerate(decisions) if i % len(prompts) == 5)
    assert batched["p_accept"] == pytest.approx(alone["p_accept"], abs=1e-5)
    metrics = httpx.get(f"{sidecar.url}/metrics", headers=AUTH).text
    sizes = [
        line
        for line in metrics.splitlines()
        if line.startswith("cascade_decision_batch_size_bucket") and 'le="1.0"' in line
    ]
    count = next(
        float(line.split()[-1])
        for line in metrics.splitlines()
        if line.startswith("cascade_decision_batch_size_count")
    )
    ones = float(sizes[0].split()[-1])
    assert ones < count  # at least one batch held several requests


# ---------------------------------------------------------------- feedback


def test_feedback_is_stored_with_the_request(sidecar: Sidecar, prompts) -> None:
    step, prompt = prompts[4]
    completion = client(sidecar).chat.completions.create(
        model=f"cascade:{step}", messages=[{"role": "user", "content": prompt}]
    )
    response = httpx.post(
        f"{sidecar.url}/v1/feedback",
        json={"request_id": completion.id, "accepted": False, "score": 0.0, "source": "user"},
        headers=AUTH,
    )
    assert response.status_code == 200, response.text
    assert response.json()["stored"] is True
    store = FeedbackStore(f"sqlite:///{Path(sidecar.cwd) / 'feedback.db'}")
    try:
        record = store.get_request(completion.id)
        assert record is not None
        assert record.input_text == prompt
        assert record.step == step
        assert record.answer == completion.choices[0].message.content
        assert record.router_version == "bundled"
        assert record.tier in record.answers
        labelled = store.labelled()
        row = labelled[labelled["request_id"] == completion.id].iloc[0]
        assert not bool(row["accepted"])
        assert row["source"] == "user"
    finally:
        store.close()


def test_feedback_for_an_unknown_request_is_a_404(sidecar: Sidecar) -> None:
    response = httpx.post(
        f"{sidecar.url}/v1/feedback",
        json={"request_id": "chatcmpl-never-issued", "accepted": True},
        headers=AUTH,
    )
    assert_openai_error(response, 404, "request_not_found")


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"{not json", 400, "invalid_json"),
        (b"[1, 2]", 400, "invalid_json"),
        (b'{"model": "cascade"}', 400, "missing_field"),
        (b'{"messages": [{"role": "user", "content": "hi"}]}', 400, "missing_field"),
        (b'{"model": "cascade", "messages": []}', 400, "empty_messages"),
        (b'{"model": "cascade", "messages": "hello"}', 400, "invalid_value"),
        (b'{"model": "cascade", "messages": [{"role": "wizard", "content": "x"}]}', 400, None),
        (b'{"model": "cascade", "messages": [{"role": "user", "content": "  "}]}', 400, None),
        (b'{"model": "cascade", "messages": [{"role": "user", "content": 5}]}', 400, None),
        (
            b'{"model": "cascade", "messages": [{"role": "user", "content": "x"}], '
            b'"max_tokens": "many"}',
            400,
            "invalid_value",
        ),
        (
            b'{"model": "cascade", "messages": [{"role": "user", "content": "x"}], "n": 3}',
            400,
            "invalid_value",
        ),
        (b'{"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}]}', 404, None),
        (
            b'{"model": "cascade:intent:speed=9", "messages": [{"role": "user", "content": "x"}]}',
            400,
            "invalid_target",
        ),
    ],
)
def test_bad_chat_requests_get_openai_errors(
    sidecar: Sidecar, body: bytes, status: int, code: str | None
) -> None:
    response = httpx.post(
        f"{sidecar.url}/v1/chat/completions",
        content=body,
        headers={**AUTH, "content-type": "application/json"},
    )
    assert_openai_error(response, status, code)


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/route", {"step": "math"}),
        ("/v1/route", {"input": "x", "messages": [{"role": "user", "content": "x"}]}),
        ("/v1/route", {"input": "x", "unknown": 1}),
        ("/v1/feedback", {"request_id": "x"}),
        ("/v1/feedback", {"request_id": "x", "accepted": "maybe"}),
        ("/v1/feedback", {"request_id": "x", "accepted": True, "score": 7}),
    ],
)
def test_bad_route_and_feedback_requests_get_openai_errors(
    sidecar: Sidecar, path: str, body: dict
) -> None:
    assert_openai_error(httpx.post(f"{sidecar.url}{path}", json=body, headers=AUTH), 400)


def test_oversize_body_is_a_413(sidecar: Sidecar) -> None:
    huge = "x" * 1_100_000
    body = {"model": "cascade", "messages": [{"role": "user", "content": huge}]}
    response = httpx.post(f"{sidecar.url}/v1/chat/completions", json=body, headers=AUTH)
    assert_openai_error(response, 413, "request_too_large")


def test_unknown_endpoint_is_an_openai_404(sidecar: Sidecar) -> None:
    assert_openai_error(httpx.get(f"{sidecar.url}/v1/engines", headers=AUTH), 404, "not_found")
    assert_openai_error(httpx.get(f"{sidecar.url}/v1/chat/completions", headers=AUTH), 405)


# ---------------------------------------------------------------- auth


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/chat/completions"),
        ("POST", "/v1/route"),
        ("POST", "/v1/feedback"),
        ("GET", "/v1/models"),
        ("GET", "/metrics"),
    ],
)
@pytest.mark.parametrize("header", [None, "Bearer wrong-key", f"Basic {API_KEYS[0]}", "Bearer"])
def test_every_endpoint_but_health_needs_a_key(
    sidecar: Sidecar, method: str, path: str, header: str | None
) -> None:
    headers = {"Authorization": header} if header else {}
    response = httpx.request(method, f"{sidecar.url}{path}", headers=headers, json={})
    assert_openai_error(response, 401, "invalid_api_key")


def test_health_is_open_and_every_key_works(sidecar: Sidecar) -> None:
    assert httpx.get(f"{sidecar.url}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{sidecar.url}/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["upstreams"] == {SMALL: "ok", FRONTIER: "ok"}
    for key in API_KEYS:
        assert client(sidecar, key).models.list().data


def test_keys_never_reach_the_log(sidecar: Sidecar) -> None:
    httpx.get(f"{sidecar.url}/v1/models", headers={"Authorization": "Bearer wrong-key-xyz"})
    log = sidecar.log()
    assert log
    for key in [*API_KEYS, "wrong-key-xyz"]:
        assert key not in log


# ---------------------------------------------------------------- operations


def test_metrics_and_json_logs(sidecar: Sidecar, prompts) -> None:
    step, prompt = prompts[5]
    completion = client(sidecar).chat.completions.create(
        model=f"cascade:{step}", messages=[{"role": "user", "content": prompt}]
    )
    metrics = httpx.get(f"{sidecar.url}/metrics", headers=AUTH).text
    for family in (
        "cascade_requests_total",
        "cascade_escalation_rate",
        "cascade_p_accept_bucket",
        "cascade_router_latency_seconds_bucket",
        "cascade_request_latency_seconds_bucket",
        "cascade_cost_usd_total",
        "cascade_router_info",
    ):
        assert family in metrics, family
    assert f'step="{step}"' in metrics
    entries = [json.loads(line) for line in sidecar.log().splitlines() if line.startswith("{")]
    assert entries
    mine = [e for e in entries if e.get("request_id") == completion.id]
    assert mine and mine[-1]["status"] == 200
    assert all({"ts", "level", "logger", "message"} <= set(e) for e in entries)
