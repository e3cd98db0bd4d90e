"""Recording tool calls: BFCL questions asked of SmolLM2-135M on llama.cpp's real server
(``chatml-function-calling``), graded by BFCL's checker, written incrementally and resumed."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from router.backends import OpenAIBackend, step_text
from router.backends.request import recorded_message
from router.data import load_outcomes, load_prices
from router.errors import ConfigurationError
from router.validation import validate_answer
from tests.support.processes import LlamaServer
from training.bfcl import STEP, BfclGrader, BfclQuestion, load_category
from training.record import grades_path, record_tool_answers

pytest.importorskip("bfcl_eval")

MODEL = "smollm2-135m-instruct"


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    server = LlamaServer(
        tmp_path_factory.mktemp("llama") / "llama.log",
        extra_args=("--chat_format", "chatml-function-calling", "--n_ctx", "2048"),
    ).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def questions() -> list[BfclQuestion]:
    wanted = {"irrelevance": "irrelevance_24", "simple_python": "simple_python_0"}
    return [
        next(q for q in load_category(category)[0] if q.id == question_id)
        for category, question_id in wanted.items()
    ]


def backend(llama: LlamaServer, timeout_s: float = 300.0) -> OpenAIBackend:
    return OpenAIBackend(MODEL, base_url=llama.base_url, timeout_s=timeout_s, max_retries=0)


def test_records_graded_tool_calls_and_resumes(llama, questions, tmp_path: Path) -> None:
    out = tmp_path / "tools.parquet"
    grader = BfclGrader()

    def stop_after_one(k: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        record_tool_answers(
            questions, backend(llama), out, MODEL, grader, prices=load_prices(),
            checkpoint_every=0, on_prompt=stop_after_one,
        )  # fmt: skip
    assert load_outcomes([out])["prompt_id"].tolist() == [questions[0].id]

    stats = record_tool_answers(
        questions, backend(llama), out, MODEL, grader, prices=load_prices(), max_tokens=64
    )
    assert (stats.questions_resumed, stats.questions_recorded, stats.failed_calls) == (1, 1, 0)
    rows = load_outcomes([out]).set_index("prompt_id")
    assert list(rows.index) == [q.id for q in questions]
    log = [json.loads(line) for line in grades_path(out).read_text().splitlines()]
    assert [entry["id"] for entry in log] == [q.id for q in questions]
    for question, entry in zip(questions, log, strict=True):
        row = rows.loc[question.id]
        assert (row["task"], row["step"], row["model"]) == (question.category, STEP, MODEL)
        assert row["prompt"] == step_text(question.request)  # the router's window of it
        answer = recorded_message(row["response"])
        # the row's grade is BFCL's on the recorded answer, its verdict the validator's
        assert row["score"] == float(grader.grade(question, answer).correct)
        assert row["score"] == float(entry["correct"])
        assert row["valid"] == validate_answer(question.request, answer).feature
        assert row["input_tokens"] > 100 and row["cost_usd"] > 0  # the tools are in the prompt
    assert stats.per_category == {
        q.category: (1, float(rows.loc[q.id, "score"])) for q in questions
    }


def test_a_timed_out_call_is_recorded_wrong_and_the_server_settles(
    llama, questions, tmp_path: Path
) -> None:
    out = tmp_path / "timeouts.parquet"
    settled: list[bool] = []

    def settle() -> None:
        # wait until the server has finished the abandoned answer
        backend(llama).complete("Say OK.", max_tokens=1)
        settled.append(True)

    stats = record_tool_answers(
        questions[1:], backend(llama, timeout_s=0.05), out, MODEL, BfclGrader(), settle=settle
    )
    assert stats.failed_calls == 1 and settled == [True]
    row = load_outcomes([out]).iloc[0]
    assert row["score"] == 0.0 and row["response"] == "" and row["valid"] == 0.0
    entry = json.loads(grades_path(out).read_text())
    assert entry["error_type"] == "timeout" and not entry["correct"]
    with pytest.raises(ConfigurationError, match="records none of"):
        record_tool_answers(questions, backend(llama), out, "other-model", BfclGrader())


def test_the_record_command_checks_its_bfcl_arguments(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from training.cli.app import app

    base = ["record", "--model", MODEL, "--base-url", "http://127.0.0.1:9/v1"]
    out = ["-o", str(tmp_path / "x.parquet")]
    runner = CliRunner()
    mixed = runner.invoke(app, [*base, *out, "--bfcl", "simple_python:1", "--data", "gsm8k"])
    assert mixed.exit_code == 2 and "--bfcl records BFCL questions" in mixed.output
    unknown = runner.invoke(app, [*base, *out, "--bfcl", "simple_java:1"])
    assert unknown.exit_code == 2 and "unknown BFCL category" in unknown.output
    down = runner.invoke(app, [*base, *out, "--bfcl", "irrelevance:1", "--timeout-s", "5"])
    assert down.exit_code == 3 and "unreachable" in down.output
