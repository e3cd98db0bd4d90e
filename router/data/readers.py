"""Reading Parquet, CSV and JSONL outcome files into frames of text cells."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from router.errors import DataValidationError

_PARQUET_SUFFIXES = frozenset({".parquet", ".pq"})
_CSV_SUFFIXES = frozenset({".csv"})
_JSONL_SUFFIXES = frozenset({".jsonl", ".ndjson"})


def _read_parquet(path: Path, label: str) -> tuple[pd.DataFrame, np.ndarray]:
    try:
        frame = pd.read_parquet(path)
    except Exception as exc:
        raise DataValidationError(
            f"cannot read Parquet file: {type(exc).__name__}: {exc}", file=label
        ) from exc
    return frame.reset_index(drop=True), np.arange(1, len(frame) + 1, dtype=np.int64)


def _read_csv(path: Path, label: str) -> tuple[pd.DataFrame, np.ndarray]:
    try:
        # Everything as text, and only empty cells count as missing: a prompt "NA" stays "NA".
        frame = pd.read_csv(
            path, dtype=str, keep_default_na=False, na_values=[""], encoding="utf-8"
        )
    except pd.errors.EmptyDataError:
        raise DataValidationError("the CSV file is empty (no header row)", file=label) from None
    except Exception as exc:
        raise DataValidationError(
            f"cannot parse CSV file: {type(exc).__name__}: {exc}", file=label
        ) from exc
    return frame.reset_index(drop=True), np.arange(1, len(frame) + 1, dtype=np.int64)


def _read_jsonl(path: Path, label: str) -> tuple[pd.DataFrame, np.ndarray]:
    try:
        text = path.read_text(encoding="utf-8")
    except Exception as exc:
        raise DataValidationError(
            f"cannot read JSONL file: {type(exc).__name__}: {exc}", file=label
        ) from exc
    records: list[dict[str, Any]] = []
    line_numbers: list[int] = []
    decode = json.JSONDecoder().decode
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = decode(line)
        except json.JSONDecodeError as exc:
            raise DataValidationError(
                f"line {number} is not valid JSON: {exc.msg} (character {exc.pos + 1})",
                file=label,
                row=number,
            ) from None
        if not isinstance(record, dict):
            raise DataValidationError(
                f"line {number} is a JSON {type(record).__name__}, expected an object",
                file=label,
                row=number,
            )
        records.append(record)
        line_numbers.append(number)
    frame = pd.DataFrame(records, dtype=object) if records else pd.DataFrame()
    return frame, np.asarray(line_numbers, dtype=np.int64)


def read_file(path: Path, label: str) -> tuple[pd.DataFrame, np.ndarray]:
    """Read one file by its extension; return the frame and each row's 1-based row number."""
    suffix = path.suffix.lower()
    if suffix in _PARQUET_SUFFIXES:
        reader = _read_parquet
    elif suffix in _CSV_SUFFIXES:
        reader = _read_csv
    elif suffix in _JSONL_SUFFIXES:
        reader = _read_jsonl
    else:
        raise DataValidationError(
            f"unsupported file type {path.suffix or '(no extension)'!r}; expected .parquet/.pq, "
            ".csv or .jsonl/.ndjson",
            file=label,
        )
    if not path.exists():
        raise DataValidationError("file not found", file=label)
    if path.is_dir():
        raise DataValidationError("is a directory, expected a data file", file=label)
    return reader(path, label)
