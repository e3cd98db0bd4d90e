"""Validation and normalisation of one outcome file: every error names its file, row and column."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from router.data.schema import FILE_COL, REQUIRED_COLUMNS, ROW_COL, VALID_COLUMN
from router.errors import ConfigurationError, DataValidationError

_TRUE_STRINGS = frozenset({"true", "t", "yes", "y", "1", "1.0"})
_FALSE_STRINGS = frozenset({"false", "f", "no", "n", "0", "0.0"})


def first_index(mask: np.ndarray) -> int:
    """Position of the first True in a boolean array (caller ensures there is one)."""
    return int(np.argmax(mask))


def _fail(
    message: str, label: str, rows: np.ndarray, mask: np.ndarray, column: str
) -> DataValidationError:
    position = first_index(mask)
    count = int(mask.sum())
    more = f" ({count - 1} more row(s) with the same problem)" if count > 1 else ""
    return DataValidationError(message + more, file=label, row=int(rows[position]), column=column)


def _shorten(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _text_column(frame: pd.DataFrame, column: str) -> pd.Series:
    """A non-null text column as Python str values."""
    series = frame[column]
    if series.dtype == object or not pd.api.types.is_string_dtype(series.dtype):
        return series.map(str).astype(str)
    return series.astype(str)


def _optional_text(frame: pd.DataFrame, column: str, default: pd.Series | str | None) -> pd.Series:
    """An optional text column; missing values become ``default``.

    With a default the result is a ``str`` column; with ``None`` it is an object column holding
    str or None.
    """
    n = len(frame)
    if column in frame.columns:
        series = frame[column].astype(object)
        missing = pd.isna(series).to_numpy()
        values = series.to_numpy(dtype=object).copy()
        present = ~missing
        if present.any():
            values[present] = [str(v) for v in values[present]]
    else:
        missing = np.ones(n, dtype=bool)
        values = np.empty(n, dtype=object)
    if missing.any():
        if isinstance(default, pd.Series):
            values[missing] = default.to_numpy(dtype=object)[missing]
        else:
            values[missing] = default
    result = pd.Series(values, index=frame.index, dtype=object)
    return result if default is None else result.astype(str)


def _numeric_column(
    frame: pd.DataFrame,
    column: str,
    label: str,
    rows: np.ndarray,
    *,
    integer: bool,
) -> tuple[np.ndarray, np.ndarray] | None:
    """Parse an optional non-negative numeric column; return (values, missing) or None if absent."""
    if column not in frame.columns:
        return None
    raw = frame[column]
    missing = pd.isna(raw).to_numpy()
    values = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    kind = "a whole number" if integer else "a number"
    bad = ~missing & ~np.isfinite(values)
    if bad.any():
        value = raw.iloc[first_index(bad)]
        raise _fail(f"{column} {_shorten(value)} is not {kind}", label, rows, bad, column)
    negative = ~missing & (values < 0)
    if negative.any():
        value = values[first_index(negative)]
        raise _fail(f"{column} {float(value)!r} is negative", label, rows, negative, column)
    if integer:
        fractional = ~missing & (np.floor(np.nan_to_num(values)) != np.nan_to_num(values))
        if fractional.any():
            value = values[first_index(fractional)]
            raise _fail(f"{column} {float(value)!r} is not {kind}", label, rows, fractional, column)
    return values, missing


def _bool_column(
    frame: pd.DataFrame, column: str, label: str, rows: np.ndarray
) -> tuple[np.ndarray, np.ndarray] | None:
    """Parse an optional boolean column (bools, 0/1, 'true'/'false'); None if absent."""
    if column not in frame.columns:
        return None
    raw = frame[column]
    if pd.api.types.is_bool_dtype(raw.dtype):
        return raw.to_numpy(dtype=bool), np.zeros(len(raw), dtype=bool)
    missing = pd.isna(raw).to_numpy()
    values = np.zeros(len(raw), dtype=bool)
    bad = np.zeros(len(raw), dtype=bool)
    for i, item in enumerate(raw.to_numpy(dtype=object)):
        if missing[i]:
            continue
        if isinstance(item, bool | np.bool_):
            values[i] = bool(item)
            continue
        key = str(item).strip().lower()
        if key in _TRUE_STRINGS:
            values[i] = True
        elif key not in _FALSE_STRINGS:
            bad[i] = True
    if bad.any():
        value = raw.iloc[first_index(bad)]
        raise _fail(f"{column} {_shorten(value)} is not true/false", label, rows, bad, column)
    return values, missing


def _token_estimate(texts: pd.Series) -> np.ndarray:
    """ceil(chars / 4) per text; 0 for None."""
    lengths = texts.map(lambda t: 0 if t is None else len(t)).to_numpy(dtype=np.int64)
    return -(-lengths // 4)


def normalise_file(
    frame: pd.DataFrame,
    rows: np.ndarray,
    path: Path,
    label: str,
    models: Sequence[str] | None,
    prices: Mapping[str, tuple[float, float]] | None,
) -> pd.DataFrame:
    """Validate one file's rows and return them in the output schema (plus bookkeeping)."""
    for column in REQUIRED_COLUMNS:
        if column not in frame.columns:
            present = ", ".join(map(str, frame.columns)) or "none"
            raise DataValidationError(
                f"required column {column!r} is missing (columns present: {present}; required: "
                f"{', '.join(REQUIRED_COLUMNS)})",
                file=label,
                column=column,
            )
    if len(frame) == 0:
        raise DataValidationError("the file has no data rows", file=label)

    # prompt_id: never null or empty.
    ids = frame["prompt_id"]
    bad = pd.isna(ids).to_numpy()
    if bad.any():
        raise _fail("prompt_id is missing (null)", label, rows, bad, "prompt_id")
    prompt_id = _text_column(frame, "prompt_id")
    bad = (prompt_id.str.strip().str.len() == 0).to_numpy()
    if bad.any():
        raise _fail("prompt_id is empty", label, rows, bad, "prompt_id")

    # prompt: never null, empty or whitespace only.
    null_prompt = pd.isna(frame["prompt"]).to_numpy()
    if null_prompt.any():
        raise _fail("prompt is missing (null)", label, rows, null_prompt, "prompt")
    prompt = _text_column(frame, "prompt")
    blank = (prompt.str.strip().str.len() == 0).to_numpy()
    if blank.any():
        value = prompt.iloc[first_index(blank)]
        what = "empty" if value == "" else "whitespace only"
        raise _fail(f"prompt is {what}", label, rows, blank, "prompt")

    # model: never null or empty.
    bad = pd.isna(frame["model"]).to_numpy()
    if bad.any():
        raise _fail("model is missing (null)", label, rows, bad, "model")
    model = _text_column(frame, "model")
    bad = (model.str.strip().str.len() == 0).to_numpy()
    if bad.any():
        raise _fail("model is empty", label, rows, bad, "model")

    # Keep only the rows of the requested models (others are legitimately ignored).
    if models is not None:
        keep = model.isin(list(models)).to_numpy()
        if not keep.all():
            frame, rows = frame.loc[keep].reset_index(drop=True), rows[keep]
            prompt_id = prompt_id[keep].reset_index(drop=True)
            prompt = prompt[keep].reset_index(drop=True)
            model = model[keep].reset_index(drop=True)

    # score: a number in [0, 1].
    raw_score = frame["score"]
    if pd.api.types.is_bool_dtype(raw_score.dtype):
        score = raw_score.to_numpy(dtype=np.float64)
    else:
        score = pd.to_numeric(raw_score, errors="coerce").to_numpy(
            dtype=np.float64, na_value=np.nan
        )
    null_score = pd.isna(raw_score).to_numpy()
    bad = ~np.isfinite(score) | (score < 0) | (score > 1)
    if bad.any():
        position = first_index(bad)
        value = raw_score.iloc[position]
        if null_score[position]:
            message = "score is missing (null or NaN); expected a number in [0, 1]"
        elif np.isnan(score[position]):
            text = str(value).strip().lower()
            message = (
                "score is NaN; expected a number in [0, 1]"
                if text in {"nan", "-nan", "+nan"}
                else f"score {_shorten(value)} is not a number; expected a number in [0, 1]"
            )
        else:
            message = f"score {float(score[position])!r} is outside [0, 1]"
        raise _fail(message, label, rows, bad, "score")

    # Optional columns and their defaults.
    n = len(frame)
    source = _optional_text(frame, "source", path.stem)
    task = _optional_text(frame, "task", source)
    split = _optional_text(frame, "split", None)
    response = _optional_text(frame, "response", None)
    step = _optional_text(frame, "step", task)

    input_tokens = _token_estimate(prompt)
    parsed = _numeric_column(frame, "input_tokens", label, rows, integer=True)
    if parsed is not None:
        values, missing = parsed
        input_tokens = np.where(missing, input_tokens, np.nan_to_num(values)).astype(np.int64)
    output_tokens = _token_estimate(response)
    parsed = _numeric_column(frame, "output_tokens", label, rows, integer=True)
    if parsed is not None:
        values, missing = parsed
        output_tokens = np.where(missing, output_tokens, np.nan_to_num(values)).astype(np.int64)

    cost = np.zeros(n, dtype=np.float64)
    cost_missing = np.ones(n, dtype=bool)
    parsed = _numeric_column(frame, "cost_usd", label, rows, integer=False)
    if parsed is not None:
        values, cost_missing = parsed
        cost = np.where(cost_missing, 0.0, values)
    if prices is not None and cost_missing.any():
        needed = pd.unique(model.to_numpy(dtype=object)[cost_missing])
        unknown = [m for m in needed if m not in prices]
        if unknown:
            raise ConfigurationError(
                f"{label}: no price for model(s) {', '.join(map(repr, unknown))} to estimate "
                f"cost_usd; priced models: {', '.join(sorted(prices))}"
            )
        price_in = model.map(lambda m: prices[m][0] if m in prices else 0.0).to_numpy(float)
        price_out = model.map(lambda m: prices[m][1] if m in prices else 0.0).to_numpy(float)
        estimate = (input_tokens * price_in + output_tokens * price_out) / 1e6
        cost = np.where(cost_missing, estimate, cost)

    valid = np.full(n, np.nan)
    parsed_valid = _bool_column(frame, VALID_COLUMN, label, rows)
    if parsed_valid is not None:
        values_valid, missing_valid = parsed_valid
        valid = np.where(missing_valid, np.nan, values_valid.astype(np.float64))

    estimated = np.ones(n, dtype=bool)
    parsed_bool = _bool_column(frame, "cost_is_estimated", label, rows)
    if parsed_bool is not None:
        values_bool, missing_bool = parsed_bool
        estimated = np.where(missing_bool, True, values_bool)
    # A cost we had to fill in is an estimate, whatever the column said.
    estimated = estimated | cost_missing

    return pd.DataFrame(
        {
            "source": source,
            "task": task,
            "split": split,
            "prompt_id": prompt_id,
            "prompt": prompt,
            "model": model,
            "score": score,
            "response": response,
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "cost_usd": cost,
            "cost_is_estimated": estimated,
            "step": step,
            VALID_COLUMN: valid,
            FILE_COL: label,
            ROW_COL: rows,
        }
    )
