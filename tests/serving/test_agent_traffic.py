"""Agent traffic through the cascade, with real components: SmolLM2-135M on llama.cpp's server
answers tool calls and ``json_schema`` requests through the SDK (and the OpenAI-shaped
CascadeClient) and through the sidecar with the official ``openai`` client; stub upstreams over
real HTTP record every body they receive, so each request field is checked at the upstream; the
validator never lets a refused first-tier answer through; bad input gets a 4xx and leaves the
keep-alive connection usable; the OpenAPI document describes every response the service sends.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import openai
import pytest

from router import CascadeClient, Router
from router.backends import OpenAIBackend
from router.feedback import FeedbackStore
from router.registry import bundled_router_path
from tests.router.backends.test_requests import CONVERSATION, EVERY_FIELD, PERSON, WEATHER
from tests.serving.conftest import API_KEYS, FRONTIER, SMALL, sidecar_settings
from tests.support.openai_server import OpenAIStubServer, obliging, tool_call
from tests.support.processes import LlamaServer, Sidecar

AUTH = {"Authorization": f"Bearer {API_KEYS[0]}"}
NAMED = {"type": "function", "function": {"name": "get_weather"}}
ASK_WEATHER = [{"role": "user", "content": "What is the weather in Paris?"}]
#: With both arguments required, SmolLM2 (greedy) writes a city that never ends: invalid JSON.
ASK_WEATHER_BADLY = [{"role": "user", "content": "What is the weather in Paris, in Celsius?"}]


@pytest.fixture(scope="module")
def obliging_frontier() -> Iterator[OpenAIStubServer]:
    with OpenAIStubServer(body_responder=obliging, models=[FRONTIER]) as server:
        yield server


@pytest.fixture(scope="module")
def small_stub() -> Iterator[OpenAIStubServer]:
    with OpenAIStubServer(body_responder=obliging, models=["small-stub"]) as server:
        yield server


@pytest.fixture(autouse=True)
def obliging_again(small_stub: OpenAIStubServer) -> Iterator[None]:
    yield
    small_stub.body_responder = obliging


def start_sidecar(
    workdir: Path, small_url: str, frontier_url: str, small_model: str, dialect: str
) -> Sidecar:
    workdir.mkdir()
    settings = sidecar_settings(workdir, small_url, frontier_url, small_timeout_s=120)
    settings["upstreams"][SMALL].update(model=small_model, dialect=dialect)
    return Sidecar(workdir, settings).start()


@pytest.fixture(scope="module")
def agent_sidecar(
    serving_dir: Path, llama: LlamaServer, obliging_frontier: OpenAIStubServer
) -> Iterator[Sidecar]:
    """The sidecar over the real small model and a frontier that answers what it is asked."""
    server = start_sidecar(
        serving_dir / "agent-traffic",
        llama.base_url,
        obliging_frontier.base_url,
        LlamaServer.model_alias,
        "llama-cpp-python",
    )
    yield server
    server.stop()


@pytest.fixture(scope="module")
def stub_sidecar(
    serving_dir: Path, small_stub: OpenAIStubServer, obliging_frontier: OpenAIStubServer
) -> Iterator[Sidecar]:
    """The sidecar over two recording stubs (the small one's answers set by each test)."""
    server = start_sidecar(
        serving_dir / "agent-stubs",
        small_stub.base_url,
        obliging_frontier.base_url,
        "small-stub",
        "openai",  # the stub takes OpenAI's API as documented: bodies arrive unchanged
    )
    yield server
    server.stop()


def client(sidecar: Sidecar) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{sidecar.url}/v1", api_key=API_KEYS[0], max_retries=0, timeout=300
    )


def post(sidecar: Sidecar, body: dict[str, Any], **kwargs: Any) -> httpx.Response:
    return httpx.post(
        f"{sidecar.url}/v1/chat/completions", json=body, headers=AUTH, timeout=300, **kwargs
    )


# ------------------------------------------------------------------ the SDK, the real model


@pytest.fixture(scope="module")
def sdk_router(llama: LlamaServer, obliging_frontier: OpenAIStubServer) -> Router:
    small = OpenAIBackend(
        LlamaServer.model_alias,
        base_url=llama.base_url,
        max_tokens=64,
        timeout_s=300,
        dialect="llama-cpp-python",
    )
    frontier = OpenAIBackend(FRONTIER, base_url=obliging_frontier.base_url)
    router = Router.load(bundled_router_path())  # with the embedder it was trained with
    return router.with_backends({SMALL: small, FRONTIER: frontier})


def test_sdk_tool_call_from_the_real_model(sdk_router: Router) -> None:
    result = sdk_router.route(
        "tool_select",
        ASK_WEATHER,
        tools=[WEATHER],
        tool_choice=NAMED,
        temperature=0.0,
        target="share=0",  # the small tier answers every valid call
    )
    assert (result.tier, result.path) == (SMALL, "small→verified")
    assert result.model == LlamaServer.model_alias
    assert result.finish_reason == "tool_calls"
    (call,) = result.message.tool_calls  # type: ignore[misc]
    assert call.function.name == "get_weather" and call.id
    arguments = json.loads(call.function.arguments)
    assert arguments["city"] == "Paris" and arguments["unit"] in ("c", "f")
    assert result.validity == {SMALL: True}
    assert result.usage[SMALL].output_tokens > 0


def test_sdk_json_schema_from_the_real_model(sdk_router: Router) -> None:
    completion = CascadeClient(sdk_router).chat.completions.create(
        model="cascade:extract:share=0",
        messages=[{"role": "user", "content": "Ann is 31 years old. Give her name and age."}],
        response_format=PERSON,
        temperature=0.0,
        max_completion_tokens=48,
    )
    assert completion.model == LlamaServer.model_alias
    person = json.loads(completion.choices[0].message.content or "")
    assert isinstance(person["name"], str) and isinstance(person["age"], int)


def test_sdk_never_returns_a_refused_answer_of_the_real_model(sdk_router: Router) -> None:
    result = sdk_router.route(
        "tool_select",
        ASK_WEATHER_BADLY,
        tools=[WEATHER],
        tool_choice=NAMED,
        temperature=0.0,
        target="share=0",
    )
    (call,) = result.message.tool_calls  # type: ignore[misc]
    arguments = json.loads(call.function.arguments)  # whoever answered, the call is valid
    assert set(arguments) == {"city", "unit"}
    if result.tier == FRONTIER:  # SmolLM2's call did not fit the schema: refused, escalated
        assert result.path == "small→invalid→frontier" and SMALL in result.invalid


# ------------------------------------------------------------------ the sidecar, the real model


def test_sidecar_tool_call_with_the_openai_client(agent_sidecar: Sidecar) -> None:
    raw = client(agent_sidecar).chat.completions.with_raw_response.create(
        model="cascade:tool_select:share=0",
        messages=ASK_WEATHER,  # type: ignore[arg-type]
        tools=[WEATHER],  # type: ignore[list-item]
        tool_choice=NAMED,  # type: ignore[arg-type]
        temperature=0.0,
    )
    completion = raw.parse()
    assert raw.headers["x-cascade-path"] == "small>verified"
    assert completion._request_id == completion.id == raw.headers["x-cascade-request-id"]
    assert completion.model == LlamaServer.model_alias
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    call = choice.message.tool_calls[0]  # type: ignore[index]
    assert call.function.name == "get_weather"  # type: ignore[union-attr]
    assert json.loads(call.function.arguments)["city"] == "Paris"  # type: ignore[union-attr]
    # streamed: the same call, as indexed deltas, name first, arguments in fragments
    stream = client(agent_sidecar).chat.completions.create(
        model="cascade:tool_select:share=0",
        messages=ASK_WEATHER,  # type: ignore[arg-type]
        tools=[WEATHER],  # type: ignore[list-item]
        tool_choice=NAMED,  # type: ignore[arg-type]
        temperature=0.0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    deltas = [d for c in chunks if c.choices for d in c.choices[0].delta.tool_calls or []]
    assert deltas[0].function.name == "get_weather" and deltas[0].id  # type: ignore[union-attr]
    streamed = "".join(d.function.arguments or "" for d in deltas if d.function is not None)
    assert streamed == call.function.arguments  # type: ignore[union-attr]
    assert len(deltas) > 2
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"
    assert chunks[-1].choices == [] and chunks[-1].usage == completion.usage


def test_sidecar_json_schema_with_the_openai_client(agent_sidecar: Sidecar) -> None:
    completion = client(agent_sidecar).chat.completions.create(
        model="cascade:extract:share=0",
        messages=[{"role": "user", "content": "Ann is 31 years old. Give her name and age."}],
        response_format=PERSON,  # type: ignore[arg-type]
        temperature=0.0,
        max_tokens=48,
    )
    person = json.loads(completion.choices[0].message.content or "")
    assert isinstance(person["name"], str) and isinstance(person["age"], int)
    assert completion.model == LlamaServer.model_alias


def test_sidecar_streamed_text_is_the_json_answer_byte_for_byte(agent_sidecar: Sidecar) -> None:
    body = {
        "model": "cascade:chat:share=0",
        "messages": [{"role": "user", "content": "Write a short poem  about   rain."}],
        "temperature": 0.0,
        "max_tokens": 48,
    }
    answer = post(agent_sidecar, body).json()["choices"][0]["message"]["content"]
    streamed = ""
    with httpx.stream(
        "POST",
        f"{agent_sidecar.url}/v1/chat/completions",
        json={**body, "stream": True},
        headers=AUTH,
        timeout=300,
    ) as response:
        for line in response.iter_lines():
            if line.startswith("data: {"):
                chunk = json.loads(line.removeprefix("data: "))
                streamed += chunk["choices"][0]["delta"].get("content") or ""
    assert answer and streamed == answer


# ------------------------------------------------------------------ every field, both ways


def test_every_field_reaches_the_upstream_and_the_message_comes_back(
    stub_sidecar: Sidecar, small_stub: OpenAIStubServer
) -> None:
    body = {"model": "cascade:tool_select:share=0", "messages": CONVERSATION, **EVERY_FIELD}
    response = post(stub_sidecar, body)
    assert response.status_code == 200, response.text
    assert small_stub.requests[-1] == {
        "model": "small-stub",
        "messages": CONVERSATION,
        **EVERY_FIELD,
    }
    answer = response.json()
    message = answer["choices"][0]["message"]
    assert message["content"] is None
    assert message["tool_calls"] == [tool_call("get_weather", {"city": "Paris", "unit": "c"})]
    assert answer["choices"][0]["finish_reason"] == "tool_calls"
    assert answer["model"] == "small-stub"
    # asked for logprobs on a text answer: OpenAI's object comes back as the model gave it
    text = post(
        stub_sidecar,
        {
            "model": "cascade:chat:share=0",
            "messages": [{"role": "user", "content": "hello"}],
            "logprobs": True,
            "top_logprobs": 1,
        },
    ).json()
    tokens = text["choices"][0]["logprobs"]["content"]
    assert "".join(t["token"] for t in tokens) == text["choices"][0]["message"]["content"]


def test_a_refused_first_answer_is_never_returned(
    stub_sidecar: Sidecar, small_stub: OpenAIStubServer
) -> None:
    small_stub.body_responder = lambda body: {
        "content": None,
        "tool_calls": [tool_call("get_weather", {"city": 78.2})],  # no unit, city not a string
    }
    before = _metric(stub_sidecar, "cascade_invalid_answers_total")
    raw = client(stub_sidecar).chat.completions.with_raw_response.create(
        model="cascade:tool_select:share=0",  # share=0 would keep any valid small answer
        messages=ASK_WEATHER,  # type: ignore[arg-type]
        tools=[WEATHER],  # type: ignore[list-item]
        tool_choice=NAMED,  # type: ignore[arg-type]
    )
    completion = raw.parse()
    assert raw.headers["x-cascade-path"] == "small>invalid>frontier"
    arguments = completion.choices[0].message.tool_calls[0].function.arguments  # type: ignore[index,union-attr]
    assert json.loads(arguments) == {"city": "Paris", "unit": "c"}  # the frontier's valid call
    assert completion.model == FRONTIER
    cascade = completion.model_extra["cascade"]  # type: ignore[index]
    assert "'unit' is a required property" in cascade["invalid"][SMALL]
    # usage counts both models; the cascade object breaks it down
    per_model = cascade["usage"]
    assert set(per_model) == {SMALL, FRONTIER}
    assert completion.usage.total_tokens == sum(u["total_tokens"] for u in per_model.values())  # type: ignore[union-attr]
    assert _metric(stub_sidecar, "cascade_invalid_answers_total") == before + 1
    store = FeedbackStore(f"sqlite:///{Path(stub_sidecar.cwd) / 'feedback.db'}")
    try:
        record = store.get_request(completion.id)
        assert record is not None
        assert record.validity == {SMALL: False, FRONTIER: True}
        assert record.path == "small→invalid→frontier"
        assert "Tools: get_weather" in record.input_text  # the step text, as training reads it
    finally:
        store.close()


def _metric(sidecar: Sidecar, prefix: str) -> float:
    text = httpx.get(f"{sidecar.url}/metrics", headers=AUTH).text
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(prefix))


def test_route_decision_applies_the_validator(stub_sidecar: Sidecar) -> None:
    base = {"messages": ASK_WEATHER, "tools": [WEATHER], "tool_choice": NAMED, "target": "share=0"}
    bad = {"role": "assistant", "tool_calls": [tool_call("get_weather", {"city": "Paris"})]}
    good = {**bad, "tool_calls": [tool_call("get_weather", {"city": "Paris", "unit": "c"})]}
    refused = httpx.post(
        f"{stub_sidecar.url}/v1/route", json={**base, "answer": bad}, headers=AUTH
    ).json()
    kept = httpx.post(
        f"{stub_sidecar.url}/v1/route", json={**base, "answer": good}, headers=AUTH
    ).json()
    assert (refused["action"], refused["valid"], refused["path"]) == (
        "escalate",
        False,
        "small→invalid→frontier",
    )
    assert (kept["action"], kept["valid"], kept["path"]) == ("accept", True, "small→verified")


# ------------------------------------------------------------------ bad input


BAD_BODIES: list[tuple[bytes, int, str | None]] = [
    (
        b'{"model": "cascade", "messages": [{"role": "user", "content": "\\u0000\\ud800"}]}',
        400,
        None,
    ),
    (
        b'{"model": "cascade::", "messages": [{"role": "user", "content": "x"}]}',
        404,
        "model_not_found",
    ),
    (
        b'{"model": "cascade:", "messages": [{"role": "user", "content": "x"}]}',
        404,
        "model_not_found",
    ),
    (
        b'{"model": "cascade", "messages": [{"role": "user", "content": "x"}], "stream": "yes"}',
        400,
        "invalid_value",
    ),
    (
        b'{"model": "cascade", "messages": [{"role": "user", "content": "x"}], '
        b'"temperature": "hot"}',
        400,
        "invalid_value",
    ),
    (b'{"model": "cascade", "messages": [{"role": "user", "content": "x"}], "n": 2}', 400, None),
    (
        b'{"model": "cascade", "messages": [{"role": "user", "content": "x"}], '
        b'"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": 3}}}]}',
        400,
        None,
    ),
    (b'{"model": "cascade", "messages": [{"role": "tool", "content": "x"}]}', 400, None),
    (b"{not json", 400, "invalid_json"),
    (b"\xff\xfe", 400, "invalid_json"),
    (b'{"model": "cascade", "messages": [{"role": "user", "content": "x"}], "oops": 1}', 400, None),
]


def test_bad_input_gets_a_4xx_and_the_connection_serves_the_next_request(
    stub_sidecar: Sidecar,
) -> None:
    host, port = stub_sidecar.url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=120)
    headers = {**AUTH, "content-type": "application/json"}
    good = json.dumps(
        {"model": "cascade:chat:share=0", "messages": [{"role": "user", "content": "hi"}]}
    )
    try:
        connection.request("POST", "/v1/chat/completions", body=good, headers=headers)
        first = connection.getresponse()
        first.read()
        assert first.status == 200
        local = connection.sock.getsockname()  # type: ignore[union-attr]
        huge = (
            b'{"model": "cascade", "messages": [{"role": "user", "content": "'
            + b"x" * 1_100_000
            + b'"}]}'
        )
        for body, status, code in [*BAD_BODIES, (huge, 413, "request_too_large")]:
            connection.request("POST", "/v1/chat/completions", body=body, headers=headers)
            response = connection.getresponse()
            payload = json.loads(response.read())
            assert response.status == status, (body[:80], payload)
            assert set(payload["error"]) == {"message", "type", "param", "code"}
            if code is not None:
                assert payload["error"]["code"] == code, payload
            assert response.getheader("x-request-id")
            assert response.getheader("connection") != "close", body[:80]
            # the same connection serves the next request
            connection.request("POST", "/v1/chat/completions", body=good, headers=headers)
            after = connection.getresponse()
            after.read()
            assert after.status == 200, body[:80]
            assert connection.sock.getsockname() == local, body[:80]  # type: ignore[union-attr]
    finally:
        connection.close()


def test_every_response_carries_a_request_id(stub_sidecar: Sidecar) -> None:
    responses = [
        httpx.get(f"{stub_sidecar.url}/healthz"),
        httpx.get(f"{stub_sidecar.url}/v1/models"),  # 401
        httpx.get(f"{stub_sidecar.url}/v1/models", headers=AUTH),
        httpx.get(f"{stub_sidecar.url}/v1/nothing-here", headers=AUTH),  # 404
        httpx.post(f"{stub_sidecar.url}/v1/feedback", json={"request_id": "x"}, headers=AUTH),
        httpx.post(f"{stub_sidecar.url}/v1/route", json={"input": "hi"}, headers=AUTH),
    ]
    ids = [r.headers.get("x-request-id") for r in responses]
    assert all(ids) and len(set(ids)) == len(ids)
    assert [r.headers["x-cascade-request-id"] for r in responses] == ids
    assert responses[-1].json()["id"] == ids[-1]
    logged = {
        json.loads(line).get("request_id")
        for line in stub_sidecar.log().splitlines()
        if line.startswith("{")
    }
    assert set(ids[1:]) <= logged  # every request but the health check is logged with its id


# ------------------------------------------------------------------ the OpenAPI contract


def response_schema(document: dict[str, Any], path: str, method: str, status: int) -> Any:
    """A validator of one documented response (its schema, with the document's components)."""
    operation = document["paths"][path][method]
    content = operation["responses"][str(status)]["content"]["application/json"]
    schema = {**content["schema"], "components": document["components"]}
    return jsonschema.Draft202012Validator(schema)


def test_openapi_document_describes_what_the_service_sends(stub_sidecar: Sidecar) -> None:
    document = httpx.get(f"{stub_sidecar.url}/openapi.json").json()
    assert document["openapi"].startswith("3.1")
    chat = document["paths"]["/v1/chat/completions"]["post"]
    assert set(chat["responses"]) == {"200", "400", "401", "404", "413", "500", "502", "503", "504"}
    assert "text/event-stream" in chat["responses"]["200"]["content"]
    assert "422" not in json.dumps(document["paths"])
    assert document["components"]["securitySchemes"]
    url = stub_sidecar.url
    answer = post(
        stub_sidecar,
        {
            "model": "cascade:tool_select:share=0",
            "messages": ASK_WEATHER,
            "tools": [WEATHER],
            "tool_choice": NAMED,
        },
    )
    checks = [
        ("/v1/chat/completions", "post", answer),
        ("/v1/chat/completions", "post", post(stub_sidecar, {"model": "cascade", "messages": []})),
        (
            "/v1/chat/completions",
            "post",
            post(stub_sidecar, {"model": "nope", "messages": ASK_WEATHER}),
        ),
        (
            "/v1/route",
            "post",
            httpx.post(f"{url}/v1/route", json={"input": "hi", "answer": "yes"}, headers=AUTH),
        ),
        (
            "/v1/route",
            "post",
            httpx.post(f"{url}/v1/route", json={"input": "hi", "target": "share=0"}, headers=AUTH),
        ),
        (
            "/v1/feedback",
            "post",
            httpx.post(
                f"{url}/v1/feedback",
                json={"request_id": answer.json()["id"], "accepted": True},
                headers=AUTH,
            ),
        ),
        (
            "/v1/feedback",
            "post",
            httpx.post(
                f"{url}/v1/feedback", json={"request_id": "never", "accepted": True}, headers=AUTH
            ),
        ),
        ("/v1/models", "get", httpx.get(f"{url}/v1/models", headers=AUTH)),
        ("/v1/models", "get", httpx.get(f"{url}/v1/models")),
        ("/healthz", "get", httpx.get(f"{url}/healthz")),
        ("/readyz", "get", httpx.get(f"{url}/readyz")),
    ]
    for path, method, response in checks:
        validator = response_schema(document, path, method, response.status_code)
        errors = list(validator.iter_errors(response.json()))
        assert not errors, (path, response.status_code, errors[0].message)
    # a streamed chunk fits the chunk schema listed among the components
    chunk_schema = {
        "$ref": "#/components/schemas/ChatCompletionChunkOut",
        "components": document["components"],
    }
    with httpx.stream(
        "POST",
        f"{url}/v1/chat/completions",
        json={
            "model": "cascade:chat:share=0",
            "messages": ASK_WEATHER,
            "stream": True,
            "stream_options": {"include_usage": True},
        },
        headers=AUTH,
        timeout=60,
    ) as response:
        events = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    chunks = [json.loads(data) for data in events if data.startswith("{")]
    for chunk in chunks:
        jsonschema.validate(chunk, chunk_schema, cls=jsonschema.Draft202012Validator)
    # the stream's declared schema describes each event (OpenAPI 3.1 has no itemSchema)
    stream = document["paths"]["/v1/chat/completions"]["post"]["responses"]["200"]["content"]
    event_schema = stream["text/event-stream"]["schema"]
    assert events[-1] == "[DONE]" and len(chunks) == len(events) - 1
    for data in events:
        jsonschema.validate(
            {"data": data, "event": "message"}, event_schema, cls=jsonschema.Draft202012Validator
        )


def test_openapi_links_an_answer_to_its_feedback(stub_sidecar: Sidecar) -> None:
    document = httpx.get(f"{stub_sidecar.url}/openapi.json").json()
    ok = document["paths"]["/v1/chat/completions"]["post"]["responses"]["200"]
    link = ok["links"]["GiveFeedback"]
    assert link["operationId"] == document["paths"]["/v1/feedback"]["post"]["operationId"]
    assert link["requestBody"] == {"request_id": "$response.body#/id"}
