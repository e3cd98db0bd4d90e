"""Tests of router.data: loading, validation and the wide OutcomeTable view."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from router.data import (
    BUNDLED_DATASETS,
    OutcomeTable,
    bundled_data_dir,
    bundled_dataset,
    load_outcomes,
    load_prices,
    load_table,
)
from router.errors import ConfigurationError, DataValidationError

TIERS = ["small", "big"]
MMLU_PRO_TIERS = [
    "phi-3-mini-4k-instruct",
    "llama-3.1-8b-instruct",
    "llama-3.1-70b-instruct",
    "gpt-4o-2024-05-13",
]
ROUTERBENCH_TIERS = ["mistral-7b-chat", "WizardLM-13B-V1.2", "gpt-4-1106-preview"]


def _rows() -> list[dict[str, object]]:
    """Three prompts x two models, only the required columns plus a response."""
    rows: list[dict[str, object]] = []
    for pid, prompt, small, big in [
        ("p3", "What is 2+2?", 1.0, 1.0),
        ("p1", "Capital of France, briefly?", 0.0, 1.0),
        ("p2", "Name a prime number.", 1.0, 0.0),
    ]:
        rows.append(
            {"prompt_id": pid, "prompt": prompt, "model": "small", "score": small, "response": "x"}
        )
        rows.append(
            {"prompt_id": pid, "prompt": prompt, "model": "big", "score": big, "response": None}
        )
    return rows


def _write(path: Path, rows: list[dict[str, object]]) -> Path:
    """Write rows in the format given by the path's extension."""
    frame = pd.DataFrame(rows)
    if path.suffix == ".parquet":
        frame.to_parquet(path, index=False)
    elif path.suffix == ".csv":
        frame.to_csv(path, index=False)
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _error(path: Path, **kwargs: object) -> DataValidationError:
    with pytest.raises(DataValidationError) as info:
        load_outcomes(path, **kwargs)  # type: ignore[arg-type]
    return info.value


# --------------------------------------------------------------------------------------------
# Happy paths
# --------------------------------------------------------------------------------------------


def test_same_data_in_three_formats_gives_equal_frames(tmp_path: Path) -> None:
    frames = []
    for suffix in (".parquet", ".csv", ".jsonl"):
        folder = tmp_path / suffix.strip(".")
        folder.mkdir()
        frames.append(load_outcomes(_write(folder / f"data{suffix}", _rows())))
    pd.testing.assert_frame_equal(frames[0], frames[1])
    pd.testing.assert_frame_equal(frames[0], frames[2])


def test_defaults_and_dtypes(tmp_path: Path) -> None:
    frame = load_outcomes(
        _write(tmp_path / "bench.csv", _rows()), prices={"small": (1.0, 2.0), "big": (3.0, 4.0)}
    )
    assert list(frame.columns) == [
        "source",
        "task",
        "split",
        "prompt_id",
        "prompt",
        "model",
        "score",
        "response",
        "input_tokens",
        "output_tokens",
        "cost_usd",
        "cost_is_estimated",
        "step",
        "valid",
    ]
    assert frame["valid"].isna().all()  # no verdicts recorded
    assert len(frame) == 6
    assert set(frame["source"]) == {"bench"}
    assert set(frame["task"]) == {"bench"}
    assert set(frame["step"]) == {"bench"}
    assert frame["split"].isna().all()
    assert frame["score"].dtype == np.float64
    assert frame["input_tokens"].dtype == np.int64
    assert frame["output_tokens"].dtype == np.int64
    assert frame["cost_usd"].dtype == np.float64
    assert frame["cost_is_estimated"].all()
    first = frame.iloc[0]  # p3 / small: prompt "What is 2+2?" (12 chars), response "x"
    assert first["input_tokens"] == 3
    assert first["output_tokens"] == 1
    assert first["cost_usd"] == pytest.approx((3 * 1.0 + 1 * 2.0) / 1e6)
    assert frame.iloc[1]["response"] is None
    assert frame.iloc[1]["output_tokens"] == 0


def test_missing_price_is_configuration_error(tmp_path: Path) -> None:
    path = _write(tmp_path / "d.csv", _rows())
    with pytest.raises(ConfigurationError, match="big"):
        load_outcomes(path, prices={"small": (1.0, 2.0)}, models=TIERS)


def test_no_prices_gives_zero_cost(tmp_path: Path) -> None:
    frame = load_outcomes(_write(tmp_path / "d.jsonl", _rows()))
    assert (frame["cost_usd"] == 0.0).all()


def test_optional_columns_are_kept(tmp_path: Path) -> None:
    rows = _rows()
    for row in rows:
        row.update(
            source="src",
            task="math",
            split="train",
            step="plan",
            input_tokens=10,
            output_tokens=5,
            cost_usd=0.25,
            cost_is_estimated=False,
        )
    frame = load_outcomes(_write(tmp_path / "d.csv", rows))
    assert set(frame["source"]) == {"src"}
    assert set(frame["task"]) == {"math"}
    assert set(frame["split"]) == {"train"}
    assert set(frame["step"]) == {"plan"}
    assert (frame["input_tokens"] == 10).all()
    assert (frame["cost_usd"] == 0.25).all()
    assert not frame["cost_is_estimated"].any()


def test_several_files_are_concatenated(tmp_path: Path) -> None:
    rows = _rows()
    a = _write(tmp_path / "a.parquet", rows[:2])
    b = _write(tmp_path / "b.jsonl", rows[2:])
    frame = load_outcomes([a, b], models=TIERS)
    assert len(frame) == 6
    assert list(frame["source"][:2]) == ["a", "a"]
    assert set(frame["source"][2:]) == {"b"}


def test_rows_of_unrequested_models_are_filtered(tmp_path: Path) -> None:
    rows = [*_rows(), {"prompt_id": "p1", "prompt": "q", "model": "other", "score": 0.5}]
    frame = load_outcomes(_write(tmp_path / "d.csv", rows), models=TIERS)
    assert set(frame["model"]) == set(TIERS)
    assert len(frame) == 6


def test_bundled_mmlu_pro_loads_fast() -> None:
    start = time.perf_counter()
    frame = load_outcomes(bundled_dataset("mmlu_pro"), models=MMLU_PRO_TIERS)
    table = OutcomeTable.from_long(frame, MMLU_PRO_TIERS)
    elapsed = time.perf_counter() - start
    assert frame["prompt_id"].nunique() == 12_032
    assert len(frame) == 12_032 * 4
    assert len(table) == 12_032
    assert table.scores.shape == (12_032, 4)
    assert elapsed < 10.0  # the target is < 3 s; generous here for slow CI machines
    # Cheapest tier is less accurate than the frontier tier.
    assert table.scores[:, 0].mean() < table.scores[:, 3].mean()


def test_bundled_helpers() -> None:
    assert bundled_data_dir().is_dir()
    for name in BUNDLED_DATASETS:
        assert bundled_dataset(name).is_file()
    with pytest.raises(ConfigurationError, match="gsm8k"):
        bundled_dataset("nope")


def test_load_prices_default_and_custom(tmp_path: Path) -> None:
    prices = load_prices()
    assert prices["gpt-4o-2024-05-13"] == (5.0, 15.0)
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"models": {"m": {"input_per_mtok": 1, "output_per_mtok": 2}}}))
    assert load_prices(path) == {"m": (1.0, 2.0)}
    path.write_text(json.dumps({"m": [1, -2]}))
    with pytest.raises(ConfigurationError, match="invalid price"):
        load_prices(path)
    with pytest.raises(ConfigurationError, match="not found"):
        load_prices(tmp_path / "missing.json")


# --------------------------------------------------------------------------------------------
# Bad inputs: one error naming file, row and column
# --------------------------------------------------------------------------------------------


def test_missing_required_column(tmp_path: Path) -> None:
    rows = [{k: v for k, v in r.items() if k != "score"} for r in _rows()]
    path = _write(tmp_path / "d.csv", rows)
    err = _error(path)
    assert (err.file, err.row, err.column) == (str(path), None, "score")
    assert str(path) in str(err) and "'score'" in str(err) and "missing" in str(err)


@pytest.mark.parametrize(
    ("value", "words"),
    [(1.5, "outside [0, 1]"), (-0.1, "outside [0, 1]"), ("high", "not a number")],
    ids=["score-above-1", "score-below-0", "score-not-numeric"],
)
def test_bad_score(tmp_path: Path, value: object, words: str) -> None:
    rows = _rows()
    rows[3]["score"] = value
    path = _write(tmp_path / "d.csv", rows)
    err = _error(path)
    assert (err.file, err.row, err.column) == (str(path), 4, "score")
    assert words in str(err)
    assert f"file {path}, row 4, column 'score'" in str(err)


def test_nan_score(tmp_path: Path) -> None:
    rows = _rows()
    rows[1]["score"] = float("nan")
    path = _write(tmp_path / "d.parquet", rows)
    err = _error(path)
    assert (err.file, err.row, err.column) == (str(path), 2, "score")


@pytest.mark.parametrize(
    ("prompt", "words"), [("", "empty"), ("   \t ", "whitespace")], ids=["empty", "whitespace"]
)
def test_bad_prompt(tmp_path: Path, prompt: str, words: str) -> None:
    rows = _rows()
    rows[4]["prompt"] = prompt
    path = _write(tmp_path / "d.jsonl", rows)
    err = _error(path)
    assert (err.file, err.row, err.column) == (str(path), 5, "prompt")
    assert words in str(err)


def test_empty_prompt_in_csv(tmp_path: Path) -> None:
    rows = _rows()
    rows[2]["prompt"] = ""
    path = _write(tmp_path / "d.csv", rows)
    err = _error(path)
    assert (err.file, err.row, err.column) == (str(path), 3, "prompt")


def test_null_prompt_id(tmp_path: Path) -> None:
    rows = _rows()
    rows[5]["prompt_id"] = None
    path = _write(tmp_path / "d.jsonl", rows)
    err = _error(path)
    assert (err.file, err.row, err.column) == (str(path), 6, "prompt_id")


def test_prompt_missing_for_requested_model(tmp_path: Path) -> None:
    rows = _rows()
    del rows[5]  # p2 / big
    path = _write(tmp_path / "d.csv", rows)
    err = _error(path, models=TIERS)
    # p2's first row is data row 5.
    assert (err.file, err.row, err.column) == (str(path), 5, "prompt_id")
    assert "'p2'" in str(err) and "'big'" in str(err)


def test_a_table_leaves_out_prompts_a_model_lacks_and_says_so(tmp_path: Path, caplog) -> None:
    rows = _rows()
    del rows[5]  # p2 / big
    path = _write(tmp_path / "d.csv", rows)
    with caplog.at_level("WARNING"):
        table = load_table(path, TIERS)
    assert "p2" not in set(table.prompt_ids) and table.dropped_prompts == 1
    assert "dropped 1 of" in caplog.text and "big" in caplog.text
    assert table.subset([0]).dropped_prompts == 1  # the count travels with the rows
    with pytest.raises(DataValidationError, match="'p2'"):
        load_table(path, TIERS, incomplete="error")


def test_unknown_model(tmp_path: Path) -> None:
    path = _write(tmp_path / "d.csv", _rows())
    err = _error(path, models=["small", "huge"])
    assert err.file == str(path) and err.row is None and err.column == "model"
    assert "'huge'" in str(err) and "big, small" in str(err)


def test_duplicate_row(tmp_path: Path) -> None:
    rows = [*_rows(), dict(_rows()[2])]  # p1 / small again as data row 7
    path = _write(tmp_path / "d.csv", rows)
    err = _error(path)
    assert (err.file, err.row, err.column) == (str(path), 7, "prompt_id")
    assert "duplicate" in str(err) and "'p1'" in str(err) and "row 3" in str(err)


def test_duplicate_across_files(tmp_path: Path) -> None:
    a = _write(tmp_path / "a.csv", _rows())
    b = _write(tmp_path / "b.jsonl", _rows()[:1])
    with pytest.raises(DataValidationError) as info:
        load_outcomes([a, b])
    assert (info.value.file, info.value.row) == (str(b), 1)


def test_unsupported_extension(tmp_path: Path) -> None:
    path = tmp_path / "d.xlsx"
    path.write_text("whatever")
    err = _error(path)
    assert err.file == str(path) and err.row is None
    assert "unsupported" in str(err) and ".xlsx" in str(err)


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.parquet"
    err = _error(path)
    assert err.file == str(path) and "not found" in str(err)


def test_malformed_jsonl_line(tmp_path: Path) -> None:
    lines = [json.dumps(r) for r in _rows()]
    lines[2] = '{"prompt_id": "p1", "prompt": "oops'
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(lines) + "\n")
    err = _error(path)
    assert err.file == str(path) and err.row == 3
    assert "not valid JSON" in str(err)


def test_unparseable_parquet(tmp_path: Path) -> None:
    path = tmp_path / "d.parquet"
    path.write_bytes(b"this is not parquet")
    err = _error(path)
    assert err.file == str(path) and "cannot read Parquet" in str(err)


def test_bad_token_count(tmp_path: Path) -> None:
    rows = _rows()
    for row in rows:
        row["output_tokens"] = 3
    rows[1]["output_tokens"] = -2
    path = _write(tmp_path / "d.csv", rows)
    err = _error(path)
    assert (err.row, err.column) == (2, "output_tokens")


# --------------------------------------------------------------------------------------------
# OutcomeTable
# --------------------------------------------------------------------------------------------


@pytest.fixture
def table(tmp_path: Path) -> OutcomeTable:
    return load_table(
        _write(tmp_path / "d.csv", _rows()), TIERS, prices={"small": (1, 1), "big": (10, 10)}
    )


def test_table_shapes_and_order(table: OutcomeTable) -> None:
    assert table.tiers == ("small", "big")
    assert len(table) == 3
    assert list(table.prompt_ids) == ["p1", "p2", "p3"]
    assert table.prompts[0] == "Capital of France, briefly?"
    assert table.scores.shape == table.costs.shape == table.output_tokens.shape == (3, 2)
    np.testing.assert_array_equal(table.scores, [[0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    assert table.output_tokens.dtype == np.int64
    assert (table.costs[:, 1] > table.costs[:, 0]).all()
    assert len(table.responses) == 2 and all(len(r) == 3 for r in table.responses)
    assert table.responses[0] == ["x", "x", "x"] and table.responses[1] == [None] * 3
    assert list(table.steps) == ["d"] * 3
    assert list(table.splits) == [None] * 3
    np.testing.assert_array_equal(table.labels(0), [0, 1, 1])
    np.testing.assert_array_equal(table.labels(1, threshold=0.5), [1, 0, 1])


def test_from_long_errors(table: OutcomeTable, tmp_path: Path) -> None:
    frame = load_outcomes(_write(tmp_path / "e.csv", _rows()))
    with pytest.raises(ConfigurationError):
        OutcomeTable.from_long(frame, ["small"])
    with pytest.raises(ConfigurationError):
        OutcomeTable.from_long(frame, ["small", "small"])
    with pytest.raises(DataValidationError, match="huge"):
        OutcomeTable.from_long(frame, ["small", "huge"])
    with pytest.raises(DataValidationError, match="'p2'"):
        OutcomeTable.from_long(frame.drop(index=5), TIERS)


def test_from_long_ignores_row_order(tmp_path: Path) -> None:
    frame = load_outcomes(_write(tmp_path / "d.csv", _rows()))
    a = OutcomeTable.from_long(frame, TIERS)
    b = OutcomeTable.from_long(frame.sample(frac=1.0, random_state=3), TIERS)
    assert a.digest() == b.digest()
    assert a.prompts == b.prompts


def test_subset(table: OutcomeTable) -> None:
    part = table.subset(np.array([2, 0]))
    assert list(part.prompt_ids) == ["p3", "p1"]
    assert part.responses[0] == ["x", "x"]
    masked = table.subset(np.array([True, False, True]))
    assert list(masked.prompt_ids) == ["p1", "p3"]
    assert masked.scores.shape == (2, 2)


def test_split_by_prompt_deterministic_disjoint_covering() -> None:
    table = load_table(
        bundled_dataset("gsm8k"), ["mixtral-8x7b-instruct-v0.1", "gpt-4-1106-preview"]
    )
    train, test = table.split_by_prompt(0.25, seed=7)
    train2, test2 = table.split_by_prompt(0.25, seed=7)
    assert list(train.prompt_ids) == list(train2.prompt_ids)
    assert list(test.prompt_ids) == list(test2.prompt_ids)
    ids_train, ids_test = set(train.prompt_ids), set(test.prompt_ids)
    assert not ids_train & ids_test
    assert ids_train | ids_test == set(table.prompt_ids)
    assert len(test) == round(0.25 * len(table))
    other, _ = table.split_by_prompt(0.25, seed=8)
    assert list(other.prompt_ids) != list(train.prompt_ids)
    # Same seed, shuffled input rows: same split.
    shuffled = table.subset(np.random.default_rng(0).permutation(len(table)))
    train3, test3 = shuffled.split_by_prompt(0.25, seed=7)
    assert set(train3.prompt_ids) == ids_train and set(test3.prompt_ids) == ids_test
    with pytest.raises(ConfigurationError):
        table.split_by_prompt(1.5, seed=0)


def test_sample(table: OutcomeTable) -> None:
    assert table.sample(10, seed=0) is table
    a, b = table.sample(2, seed=1), table.sample(2, seed=1)
    assert len(a) == 2 and list(a.prompt_ids) == list(b.prompt_ids)


def test_digest_stable_and_sensitive(table: OutcomeTable) -> None:
    digest = table.digest()
    assert digest == table.digest() and len(digest) == 64
    scores = table.scores.copy()
    scores[0, 0] = 1.0 - scores[0, 0]
    changed = OutcomeTable(
        tiers=table.tiers,
        prompt_ids=table.prompt_ids,
        prompts=table.prompts,
        steps=table.steps,
        splits=table.splits,
        scores=scores,
        costs=table.costs,
        responses=table.responses,
        output_tokens=table.output_tokens,
    )
    assert changed.digest() != digest


def test_source_split_routerbench() -> None:
    table = load_table(bundled_dataset("routerbench"), ROUTERBENCH_TIERS)
    train, test = table.source_split("train"), table.source_split("test")
    assert len(train) + len(test) == len(table) == 3150
    assert set(train.splits) == {"train"} and set(test.splits) == {"test"}
    assert not set(train.prompt_ids) & set(test.prompt_ids)
    with pytest.raises(ConfigurationError, match="train"):
        table.source_split("validation")
