"""Backends against a real OpenAI-compatible HTTP server and the real ``openai`` client."""

from __future__ import annotations

import asyncio
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from router.backends import (
    ChatBackend,
    Completion,
    OpenAIBackend,
    ReplayBackend,
    as_messages,
    make_backend,
    step_text,
)
from router.errors import BackendError, BackendUnavailableError, ConfigurationError
from tests.support.openai_server import DEFAULT_ANSWER, OpenAIStubServer


def echo(messages: list[dict[str, Any]]) -> str:
    """Answer with the last message's content, prefixed, so tests can check what was sent."""
    return f"echo: {messages[-1]['content']}"


@pytest.fixture(scope="module")
def server() -> Any:
    with OpenAIStubServer(responder=echo) as running:
        yield running


def closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ------------------------------------------------------------------------- input handling


def test_as_messages_from_string_and_list() -> None:
    assert as_messages("hello") == [{"role": "user", "content": "hello"}]
    given: list[dict[str, Any]] = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hi", "name": "ann"},
    ]
    assert as_messages(given) == given


@pytest.mark.parametrize(
    ("bad", "fragment"),
    [
        ([], "empty"),
        ([{"role": "robot", "content": "x"}], "role 'robot'"),
        ([{"content": "x"}], "needs a 'role'"),
        ([{"role": "user"}], "messages[0].content: field required"),
        ([{"role": "user", "content": ["a", "b"]}], "messages[0].content: no accepted form"),
        ([{"role": "user", "content": "hi", "extra": 3}], "messages[0].extra: unknown field"),
        (["just a string"], "must be a mapping"),
        ({"role": "user", "content": "x"}, "not dict"),
        (None, "not NoneType"),
        (b"bytes", "not bytes"),
    ],
)
def test_invalid_messages_raise_configuration_error(bad: Any, fragment: str) -> None:
    with pytest.raises(ConfigurationError, match=None) as info:
        as_messages(bad)
    assert fragment in str(info.value)


def test_step_text_is_the_documented_window() -> None:
    assert step_text("  plain prompt ") == "  plain prompt "
    assert step_text([{"role": "user", "content": "only me"}]) == "only me"
    conversation = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "what is 2+2?"},
    ]
    assert step_text(conversation) == "what is 2+2?"  # the system prompt is left out
    assert step_text([{"role": "assistant", "content": "hi"}]) == "hi"


# ------------------------------------------------------------------------- OpenAIBackend


def test_round_trip(server: OpenAIStubServer) -> None:
    backend = OpenAIBackend("small-model", base_url=server.base_url)
    result = backend.complete(as_messages("what is two plus two"))
    assert isinstance(result, Completion)
    assert result.text == "echo: what is two plus two"
    assert result.model == "small-model"
    assert result.input_tokens == 5  # ceil(20 chars / 4), as the server reports
    assert result.output_tokens == 6
    assert result.latency_s > 0
    assert result.logprobs is None
    assert result.cost_usd is None
    assert result.score is None
    sent = server.requests[-1]
    assert sent["model"] == "small-model"
    assert sent["temperature"] == 0.0
    assert sent["max_tokens"] == 512
    assert "logprobs" not in sent


def test_logprobs_when_asked(server: OpenAIStubServer) -> None:
    backend = OpenAIBackend("small-model", base_url=server.base_url, logprobs=True)
    result = backend.complete(as_messages("one two three"))
    assert server.requests[-1]["logprobs"] is True
    assert result.logprobs is not None
    assert len(result.logprobs) == result.output_tokens == 4
    assert all(lp == pytest.approx(-0.1) for lp in result.logprobs)


def test_messages_input_and_max_tokens_override(server: OpenAIStubServer) -> None:
    backend = OpenAIBackend("small-model", base_url=server.base_url, temperature=None)
    conversation = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "a b c d e f g h"},
    ]
    result = backend.complete(as_messages(conversation), max_tokens=3)
    sent = server.requests[-1]
    assert sent["messages"] == conversation
    assert sent["max_tokens"] == 3
    assert "temperature" not in sent
    assert result.text == "echo: a b"  # the server stops after 3 tokens
    assert result.output_tokens == 3


def test_default_answer_and_models_endpoint() -> None:
    import openai

    with OpenAIStubServer(models=["m1", "m2"]) as srv:
        backend = OpenAIBackend("m1", base_url=srv.base_url)
        assert backend.complete(as_messages("anything")).text == DEFAULT_ANSWER
        client = openai.OpenAI(base_url=srv.base_url, api_key="x")
        assert [m.id for m in client.models.list()] == ["m1", "m2"]


def test_invalid_messages_rejected_before_any_request(server: OpenAIStubServer) -> None:
    backend = OpenAIBackend("small-model", base_url=server.base_url)
    before = len(server.requests)
    with pytest.raises(ConfigurationError, match="role 'bot'"):
        backend.complete([{"role": "bot", "content": "x"}])
    assert len(server.requests) == before


def test_server_error_becomes_backend_error() -> None:
    with OpenAIStubServer(fail_with_status=500) as srv:
        backend = OpenAIBackend("big-model", base_url=srv.base_url, max_retries=0)
        with pytest.raises(BackendError) as info:
            backend.complete(as_messages("hi"))
    assert not isinstance(info.value, BackendUnavailableError)
    message = str(info.value)
    assert "500" in message
    assert "big-model" in message
    assert srv.base_url in message
    assert "Injected failure" in message
    assert "\n" not in message


def test_retry_recovers_from_one_failure() -> None:
    with OpenAIStubServer(fail_with_status=503, fail_times=1) as srv:
        backend = OpenAIBackend("big-model", base_url=srv.base_url, max_retries=1)
        assert backend.complete(as_messages("hi")).text == DEFAULT_ANSWER
        assert len(srv.requests) == 2


def test_timeout_becomes_unavailable_quickly() -> None:
    with OpenAIStubServer(delay_s=3.0) as srv:
        backend = OpenAIBackend("slow-model", base_url=srv.base_url, timeout_s=0.3, max_retries=0)
        start = time.perf_counter()
        with pytest.raises(BackendUnavailableError) as info:
            backend.complete(as_messages("hi"))
        elapsed = time.perf_counter() - start
    assert elapsed < 2.0
    message = str(info.value)
    assert "slow-model" in message
    assert "unreachable" in message
    assert "0.3s" in message


def test_unreachable_port_becomes_unavailable() -> None:
    url = f"http://127.0.0.1:{closed_port()}/v1"
    backend = OpenAIBackend("local-model", base_url=url, max_retries=0, timeout_s=2)
    start = time.perf_counter()
    with pytest.raises(BackendUnavailableError) as info:
        backend.complete(as_messages("hi"))
    assert time.perf_counter() - start < 2.0
    message = str(info.value)
    assert message.startswith(f"model local-model at {url} unreachable: ")
    assert "\n" not in message


def test_stopped_server_becomes_unavailable() -> None:
    srv = OpenAIStubServer().start()
    url = srv.base_url
    backend = OpenAIBackend("local-model", base_url=url, max_retries=0)
    assert backend.complete(as_messages("hi")).text == DEFAULT_ANSWER
    srv.stop()
    with pytest.raises(BackendUnavailableError, match="unreachable"):
        backend.complete(as_messages("hi"))


def test_acomplete_works_across_event_loops(server: OpenAIStubServer) -> None:
    backend = OpenAIBackend("small-model", base_url=server.base_url, logprobs=True)

    async def ask_two() -> list[Completion]:
        return list(
            await asyncio.gather(
                backend.acomplete(as_messages("first")), backend.acomplete(as_messages("second"))
            )
        )

    first = asyncio.run(ask_two())
    assert [c.text for c in first] == ["echo: first", "echo: second"]
    assert all(c.latency_s > 0 and c.logprobs for c in first)
    # A second event loop gets a fresh client rather than a dead loop's connections.
    again = asyncio.run(backend.acomplete(as_messages("third")))
    assert again.text == "echo: third"


def test_acomplete_errors_are_translated() -> None:
    url = f"http://127.0.0.1:{closed_port()}/v1"
    backend = OpenAIBackend("local-model", base_url=url, max_retries=0)
    with pytest.raises(BackendUnavailableError, match="local-model"):
        asyncio.run(backend.acomplete(as_messages("hi")))


def test_concurrent_threads_share_one_client(server: OpenAIStubServer) -> None:
    backend = OpenAIBackend("small-model", base_url=server.base_url)
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda i: backend.complete(as_messages(f"q{i}")), range(8)))
    assert [r.text for r in results] == [f"echo: q{i}" for i in range(8)]
    assert backend._sync_client() is backend._sync_client()
    backend.close()


def test_auth(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with OpenAIStubServer(api_key="sekrit") as srv:
        wrong = OpenAIBackend("m", base_url=srv.base_url, api_key="nope", max_retries=0)
        with pytest.raises(BackendError) as info:
            wrong.complete(as_messages("hi"))
        assert not isinstance(info.value, BackendUnavailableError)
        assert "401" in str(info.value)
        assert "Incorrect API key" in str(info.value)

        # No key anywhere: the placeholder is sent, which this server refuses.
        with pytest.raises(BackendError, match="401"):
            OpenAIBackend("m", base_url=srv.base_url, max_retries=0).complete(as_messages("x"))

        right = OpenAIBackend("m", base_url=srv.base_url, api_key="sekrit")
        assert right.complete(as_messages("hi")).text == DEFAULT_ANSWER

        monkeypatch.setenv("MY_KEY", "sekrit")
        from_env = OpenAIBackend("m", base_url=srv.base_url, api_key_env="MY_KEY")
        assert from_env.complete(as_messages("hi")).text == DEFAULT_ANSWER


def test_backends_satisfy_protocol(server: OpenAIStubServer) -> None:
    assert isinstance(OpenAIBackend("m", base_url=server.base_url), ChatBackend)


def test_bad_constructor_arguments() -> None:
    with pytest.raises(ConfigurationError, match="timeout_s"):
        OpenAIBackend("m", timeout_s=0)
    with pytest.raises(ConfigurationError, match="model name"):
        OpenAIBackend("")


# ------------------------------------------------------------------------- ReplayBackend


def outcomes_frame() -> pd.DataFrame:
    rows = []
    prompts = {
        "p1": "What is the capital of France?",
        "p2": "Sum   the numbers\n1 and 2.",
        "p3": "Write a haiku about rain.",
    }
    for model, base_cost, quality in (("small", 0.001, 0.5), ("large", 0.01, 0.9)):
        for i, (pid, prompt) in enumerate(prompts.items()):
            rows.append(
                {
                    "prompt_id": pid,
                    "prompt": prompt,
                    "model": model,
                    "score": quality - 0.1 * i,
                    "response": None if (model, pid) == ("small", "p3") else f"{model} on {pid}",
                    "input_tokens": 10 + i,
                    "output_tokens": 20 + i,
                    "cost_usd": base_cost * (i + 1),
                }
            )
    return pd.DataFrame(rows)


@pytest.fixture
def frame(tmp_path: Path) -> pd.DataFrame:
    path = tmp_path / "outcomes.parquet"
    outcomes_frame().to_parquet(path, index=False)
    return pd.read_parquet(path)


def test_replay_known_prompt(frame: pd.DataFrame) -> None:
    backend = ReplayBackend(frame, "large", latency_s=0.25)
    result = backend.complete(as_messages("What is the capital of France?"))
    assert result.text == "large on p1"
    assert result.model == "large"
    assert result.cost_usd == pytest.approx(0.01)
    assert result.score == pytest.approx(0.9)
    assert (result.input_tokens, result.output_tokens) == (10, 20)
    assert result.latency_s == 0.25
    assert result.logprobs is None
    assert isinstance(backend, ChatBackend)
    assert len(backend) == 3


def test_replay_normalises_whitespace_and_uses_last_user_message(frame: pd.DataFrame) -> None:
    backend = ReplayBackend(frame, "small")
    assert backend.complete(as_messages("  Sum the numbers 1   and\t2. ")).text == "small on p2"
    conversation = [
        {"role": "system", "content": "You are helpful."},
        {"role": "user", "content": "What is the capital of France?"},
    ]
    assert backend.complete(as_messages(conversation)).text == "small on p1"
    missing_response = backend.complete(as_messages("Write a haiku about rain."))
    assert missing_response.text == ""
    assert missing_response.score == pytest.approx(0.3)


def test_replay_unknown_prompt(frame: pd.DataFrame) -> None:
    backend = ReplayBackend(frame, "small")
    with pytest.raises(BackendError, match=r"no recorded answer of small .*covers 3 prompts"):
        backend.complete(as_messages("Something never recorded"))


def test_replay_async_and_bad_frames(frame: pd.DataFrame) -> None:
    backend = ReplayBackend(frame, "small")
    assert asyncio.run(backend.acomplete(as_messages("Write a haiku about rain."))).text == ""
    with pytest.raises(ConfigurationError, match="model huge has no rows"):
        ReplayBackend(frame, "huge")
    with pytest.raises(ConfigurationError, match="cost_usd"):
        ReplayBackend(frame.drop(columns=["cost_usd"]), "small")


def test_stub_server_answers_from_replay_frame(frame: pd.DataFrame) -> None:
    with OpenAIStubServer(frame=frame) as srv:
        assert srv.models == ["large", "small"]
        backend = OpenAIBackend("large", base_url=srv.base_url, max_retries=0)
        result = backend.complete(as_messages("What is the capital of France?"))
        assert result.text == "large on p1"
        assert (result.input_tokens, result.output_tokens) == (10, 20)
        with pytest.raises(BackendError, match="404"):
            backend.complete(as_messages("never recorded"))
        with pytest.raises(BackendError, match="404"):
            OpenAIBackend("huge", base_url=srv.base_url, max_retries=0).complete(
                as_messages("What is the capital of France?")
            )


def test_replay_from_files(tmp_path: Path) -> None:
    path = tmp_path / "outcomes.parquet"
    outcomes_frame().to_parquet(path, index=False)
    backend = ReplayBackend.from_files([path], "small")
    assert backend.complete(as_messages("What is the capital of France?")).text == "small on p1"
    via_spec = make_backend({"kind": "replay", "model": "large", "paths": [str(path)]})
    assert isinstance(via_spec, ReplayBackend)


# ------------------------------------------------------------------------- factory


def test_make_backend() -> None:
    backend = make_backend(
        {"kind": "openai", "model": "m", "base_url": "http://127.0.0.1:1/v1", "timeout_s": 5}
    )
    assert isinstance(backend, OpenAIBackend)
    assert backend.timeout_s == 5
    assert backend.base_url == "http://127.0.0.1:1/v1"
    with pytest.raises(ConfigurationError, match="unknown backend kind 'magic'"):
        make_backend({"kind": "magic", "model": "m"})
    with pytest.raises(ConfigurationError, match="unknown key"):
        make_backend({"kind": "openai", "model": "m", "colour": "red"})
    with pytest.raises(ConfigurationError, match="needs a 'model'"):
        make_backend({"kind": "openai"})
    with pytest.raises(ConfigurationError, match="needs 'paths'"):
        make_backend({"kind": "replay", "model": "m"})


# ------------------------------------------------------------------ extra samples (OpenAI n)


def counting_responder() -> Any:
    """Answers "sample 1", "sample 2", … so that every choice is told apart."""
    calls = {"n": 0}

    def respond(messages: list[dict[str, Any]]) -> str:
        calls["n"] += 1
        return f"sample {calls['n']}"

    return respond


def test_sample_asks_once_with_n_when_the_server_honours_it() -> None:
    with OpenAIStubServer(responder=counting_responder()) as stub:
        backend = OpenAIBackend("stub-model", base_url=stub.base_url, max_tokens=None)
        got = backend.sample(as_messages("hello there"), 3, 0.8)
        assert [c.text for c in got] == ["sample 1", "sample 2", "sample 3"]
        assert len(stub.requests) == 1
        assert stub.requests[0]["n"] == 3 and stub.requests[0]["temperature"] == 0.8
        # the prompt is charged once; every choice carries its own completion tokens
        assert got[0].input_tokens > 0 and [c.input_tokens for c in got[1:]] == [0, 0]
        assert sum(c.output_tokens for c in got) == 6


def test_sample_falls_back_to_parallel_calls_when_n_is_ignored() -> None:
    with OpenAIStubServer(responder=counting_responder(), honour_n=False) as stub:
        backend = OpenAIBackend("stub-model", base_url=stub.base_url)
        got = backend.sample(as_messages("hello"), 3, 0.5)
        assert sorted(c.text for c in got) == ["sample 1", "sample 2", "sample 3"]
        assert len(stub.requests) == 3  # one with n=3 answered once, then two more
        assert backend._honours_n is False
        again = backend.sample(as_messages("hello"), 2, 0.5)
        assert len(again) == 2 and len(stub.requests) == 5  # no n request any more
        assert all("n" not in r for r in stub.requests[3:])


def test_asample_and_its_errors() -> None:
    with OpenAIStubServer(responder=counting_responder(), honour_n=False) as stub:
        backend = OpenAIBackend("stub-model", base_url=stub.base_url)
        got = asyncio.run(backend.asample(as_messages("hi"), 4, 0.9))
        assert len(got) == 4 and len({c.text for c in got}) == 4
    with OpenAIStubServer(fail_with_status=500) as failing:
        backend = OpenAIBackend("stub-model", base_url=failing.base_url, max_retries=0)
        with pytest.raises(BackendError, match="500"):
            backend.sample(as_messages("hi"), 2, 0.7)
        with pytest.raises(BackendError, match="500"):
            asyncio.run(backend.asample(as_messages("hi"), 2, 0.7))
    with pytest.raises(ConfigurationError, match="number of samples"):
        OpenAIBackend("m", base_url="http://127.0.0.1:9/v1").sample(as_messages("x"), 0, 0.7)


def test_replay_answers_samples_from_recorded_rows(frame: pd.DataFrame) -> None:
    rows = frame[frame["model"] == "small"]
    samples = [
        rows.assign(model=f"small#s{i}", response=rows["response"] + f" #{i}") for i in (1, 2)
    ]
    recorded = pd.concat([frame, *samples], ignore_index=True)
    backend = ReplayBackend(recorded, "small")
    assert backend.recorded_samples == 2
    got = backend.sample(as_messages("What is the capital of France?"), 2, 0.7)
    assert [c.text for c in got] == ["small on p1 #1", "small on p1 #2"]
    assert [c.model for c in got] == ["small#s1", "small#s2"]
    with pytest.raises(ConfigurationError, match="records 2 extra sample"):
        backend.sample(as_messages("What is the capital of France?"), 3, 0.7)
    assert ReplayBackend(frame, "small").recorded_samples == 0
