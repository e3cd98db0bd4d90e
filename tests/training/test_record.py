"""Recording a live model's answers and extra samples: SmolLM2-135M on llama.cpp's real server,
graded against RouterBench's recorded answers, written incrementally and resumed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from router.answers.normalise import NormaliserRegistry
from router.backends import OpenAIBackend
from router.data import bundled_dataset, load_outcomes, load_prices
from router.errors import ConfigurationError
from tests.support.processes import LlamaServer
from training.record import record_answers, reference_answers

MODEL = "smollm2-135m-instruct"
KINDS = {"winogrande": "choice"}


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    server = LlamaServer(tmp_path_factory.mktemp("llama") / "llama.log").start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    data = load_outcomes([bundled_dataset("routerbench")])
    return data[data["task"] == "winogrande"]


def backend(llama: LlamaServer) -> OpenAIBackend:
    return OpenAIBackend(MODEL, base_url=llama.base_url, max_tokens=4, temperature=0.0)


def test_reference_answers_come_from_correct_rows(frame) -> None:
    reference = reference_answers(frame, NormaliserRegistry(KINDS))
    correct = frame[(frame["model"] == "gpt-4-1106-preview") & (frame["score"] == 1.0)].head(20)
    for prompt_id, response in zip(correct["prompt_id"], correct["response"], strict=True):
        assert reference[str(prompt_id)] == response.strip()[0]
    nobody = set(frame["prompt_id"]) - set(frame[frame["score"] >= 0.5]["prompt_id"])
    assert nobody and not (nobody & set(reference))


def test_records_graded_answers_and_samples_then_resumes(llama, frame, tmp_path: Path) -> None:
    out = tmp_path / "recorded.parquet"
    stats = record_answers(
        frame,
        backend(llama),
        out,
        MODEL,
        samples=2,
        answer_kinds=KINDS,
        prices=load_prices(),
        limit=3,
        max_tokens=4,
    )
    assert stats.prompts_recorded == 3 and stats.prompts_resumed == 0
    written = load_outcomes([out])
    ids = set(written["prompt_id"])
    assert len(ids) == 3
    # every model of the dataset is carried for those prompts, beside the new rows
    assert set(written["model"]) == {*frame["model"], MODEL, f"{MODEL}#s1", f"{MODEL}#s2"}
    reference = reference_answers(frame, NormaliserRegistry(KINDS))
    new = written[written["model"].str.startswith(MODEL)]
    for _, row in new.iterrows():
        letter = NormaliserRegistry(KINDS).for_step("winogrande").normalise(row["response"])
        assert row["score"] == float(letter == reference[row["prompt_id"]])
        assert row["cost_usd"] > 0 and row["input_tokens"] > 0
    assert stats.accuracy == pytest.approx(written[written["model"] == MODEL]["score"].mean())
    # a second run with a larger limit keeps the first run's rows and records the rest
    more = record_answers(
        frame, backend(llama), out, MODEL, samples=2, answer_kinds=KINDS, limit=5, max_tokens=4
    )
    assert more.prompts_resumed == 3 and more.prompts_recorded == 2
    again = load_outcomes([out])
    assert ids <= set(again["prompt_id"]) and again["prompt_id"].nunique() == 5
    kept = again[again["prompt_id"].isin(ids) & (again["model"] == MODEL)]
    first = written[written["model"] == MODEL]
    assert sorted(kept["response"]) == sorted(first["response"])


def test_an_interrupted_run_keeps_what_it_recorded(llama, frame, tmp_path: Path) -> None:
    out = tmp_path / "partial.parquet"

    def stop_after_two(k: int) -> None:
        if k == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        record_answers(
            frame,
            backend(llama),
            out,
            MODEL,
            answer_kinds=KINDS,
            limit=6,
            checkpoint_every=0,
            on_prompt=stop_after_two,
        )
    kept = load_outcomes([out])
    assert kept[kept["model"] == MODEL]["prompt_id"].nunique() == 2


def test_bad_recordings_are_refused(llama, frame, tmp_path: Path) -> None:
    out = tmp_path / "x.parquet"
    with pytest.raises(ConfigurationError, match="already records"):
        record_answers(frame, backend(llama), out, "mistral-7b-chat", answer_kinds=KINDS)
    record_answers(frame, backend(llama), out, MODEL, answer_kinds=KINDS, limit=1, max_tokens=2)
    with pytest.raises(ConfigurationError, match="records 0 extra samples"):
        record_answers(frame, backend(llama), out, MODEL, samples=2, answer_kinds=KINDS, limit=1)
    with pytest.raises(ConfigurationError, match="records none of"):
        record_answers(frame, backend(llama), out, "other-model", answer_kinds=KINDS, limit=1)
    with pytest.raises(ConfigurationError, match="sample_temperature"):
        record_answers(frame, backend(llama), out, MODEL, samples=2, temperature=0.0)


def test_cli_record_refuses_an_unknown_task(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from training.cli.app import app

    result = CliRunner().invoke(
        app,
        [
            "record",
            "--model",
            MODEL,
            "--base-url",
            "http://127.0.0.1:9/v1",
            "-o",
            str(tmp_path / "o.parquet"),
            "--task",
            "chess",
        ],
        env={"CASCADE_PROGRESS": "false"},
    )
    assert result.exit_code == 2 and "no prompts of task(s) chess" in result.output
