"""Routing outcome data: loading, validation and the wide per-prompt view.

The *long* schema has one row per (prompt, model) with the columns in :data:`SCHEMA_COLUMNS`
(see ``router/resources/data/README.md``).  :func:`load_outcomes` reads Parquet, CSV or JSONL
files in that schema, fills the optional columns with defaults, and validates every row; a bad
input raises one :class:`~router.errors.DataValidationError` naming the file, the 1-based data
row and the column at fault.

:class:`OutcomeTable` is the *wide* view used by training and evaluation: one row per prompt,
one column per model tier (cheapest first).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from router.errors import ConfigurationError, DataValidationError
from router.opinions import SAMPLE_SEPARATOR

__all__ = [
    "BUNDLED_DATASETS",
    "REQUIRED_COLUMNS",
    "SCHEMA_COLUMNS",
    "OutcomeTable",
    "PeerOutcomes",
    "bundled_data_dir",
    "bundled_dataset",
    "load_outcomes",
    "load_prices",
    "load_table",
    "write_outcomes",
]

#: Columns of the long schema, in output order (``step`` is appended after them).
SCHEMA_COLUMNS: tuple[str, ...] = (
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
)
#: Columns every data file must have.
REQUIRED_COLUMNS: tuple[str, ...] = ("prompt_id", "prompt", "model", "score")
#: Names accepted by :func:`bundled_dataset` and the files they map to.
BUNDLED_DATASETS: dict[str, str] = {
    "mmlu_pro": "mmlu_pro.parquet",
    "gsm8k": "gsm8k.parquet",
    "routerbench": "routerbench.parquet",
    # SmolLM2-135M-Instruct's answers and extra samples, recorded here (cascade-router record)
    "routerbench_smollm2": "routerbench_smollm2.parquet",
}

_OUTPUT_COLUMNS: tuple[str, ...] = (*SCHEMA_COLUMNS, "step")
_PARQUET_SUFFIXES = frozenset({".parquet", ".pq"})
_CSV_SUFFIXES = frozenset({".csv"})
_JSONL_SUFFIXES = frozenset({".jsonl", ".ndjson"})
_TRUE_STRINGS = frozenset({"true", "t", "yes", "y", "1", "1.0"})
_FALSE_STRINGS = frozenset({"false", "f", "no", "n", "0", "0.0"})
# Hidden bookkeeping columns: where each row came from, for error messages.
_FILE_COL = "__file"
_ROW_COL = "__row"


# --------------------------------------------------------------------------------------------
# Resources
# --------------------------------------------------------------------------------------------


def _resources_dir() -> Path:
    return Path(__file__).resolve().parent / "resources"


def bundled_data_dir() -> Path:
    """Return the folder of the data files shipped with the package (``router/resources/data``)."""
    return _resources_dir() / "data"


def bundled_dataset(name: str) -> Path:
    """Return the path of a bundled dataset: ``mmlu_pro``, ``gsm8k``, ``routerbench`` or
    ``routerbench_smollm2``.

    Raises:
        ConfigurationError: ``name`` is not one of the bundled datasets.
    """
    try:
        filename = BUNDLED_DATASETS[name]
    except KeyError:
        available = ", ".join(sorted(BUNDLED_DATASETS))
        raise ConfigurationError(
            f"unknown bundled dataset {name!r}; available: {available}"
        ) from None
    return bundled_data_dir() / filename


def load_prices(path: Path | None = None) -> dict[str, tuple[float, float]]:
    """Read a price table: model -> (input, output) USD per million tokens.

    The default is the bundled ``router/resources/prices.json``, whose format is
    ``{"models": {name: {"input_per_mtok": x, "output_per_mtok": y, ...}}}``.  A plain
    ``{name: [x, y]}`` mapping (or ``{name: {"input_per_mtok": ..., ...}}``) is accepted too.

    Raises:
        ConfigurationError: the file is missing, not JSON, or a price is not a number >= 0.
    """
    price_path = Path(path) if path is not None else _resources_dir() / "prices.json"
    try:
        raw = json.loads(price_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigurationError(f"price file not found: {price_path}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigurationError(f"cannot read price file {price_path}: {exc}") from exc
    table = raw.get("models", raw) if isinstance(raw, dict) else None
    if not isinstance(table, dict):
        raise ConfigurationError(f"price file {price_path}: expected a JSON object of models")
    prices: dict[str, tuple[float, float]] = {}
    for model, entry in table.items():
        if isinstance(entry, Mapping):
            pair: Any = (entry.get("input_per_mtok"), entry.get("output_per_mtok"))
        else:
            pair = entry
        if not isinstance(pair, Sequence) or isinstance(pair, str) or len(pair) != 2:
            raise ConfigurationError(
                f"price file {price_path}: model {model!r} needs an input and an output price"
            )
        values: list[float] = []
        for value in pair:
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ConfigurationError(
                    f"price file {price_path}: model {model!r} has an invalid price {value!r} "
                    "(expected a number >= 0, USD per million tokens)"
                )
            values.append(float(value))
        prices[str(model)] = (values[0], values[1])
    return prices


# --------------------------------------------------------------------------------------------
# Reading files
# --------------------------------------------------------------------------------------------


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


def _read_file(path: Path, label: str) -> tuple[pd.DataFrame, np.ndarray]:
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


# --------------------------------------------------------------------------------------------
# Validation and normalisation of one file
# --------------------------------------------------------------------------------------------


def _first(mask: np.ndarray) -> int:
    """Position of the first True in a boolean array (caller ensures there is one)."""
    return int(np.argmax(mask))


def _fail(
    message: str, label: str, rows: np.ndarray, mask: np.ndarray, column: str
) -> DataValidationError:
    position = _first(mask)
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
        value = raw.iloc[_first(bad)]
        raise _fail(f"{column} {_shorten(value)} is not {kind}", label, rows, bad, column)
    negative = ~missing & (values < 0)
    if negative.any():
        value = values[_first(negative)]
        raise _fail(f"{column} {float(value)!r} is negative", label, rows, negative, column)
    if integer:
        fractional = ~missing & (np.floor(np.nan_to_num(values)) != np.nan_to_num(values))
        if fractional.any():
            value = values[_first(fractional)]
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
        value = raw.iloc[_first(bad)]
        raise _fail(f"{column} {_shorten(value)} is not true/false", label, rows, bad, column)
    return values, missing


def _token_estimate(texts: pd.Series) -> np.ndarray:
    """ceil(chars / 4) per text; 0 for None."""
    lengths = texts.map(lambda t: 0 if t is None else len(t)).to_numpy(dtype=np.int64)
    return -(-lengths // 4)


def _normalise_file(
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
        value = prompt.iloc[_first(blank)]
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
        position = _first(bad)
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
            _FILE_COL: label,
            _ROW_COL: rows,
        }
    )


# --------------------------------------------------------------------------------------------
# Public loading API
# --------------------------------------------------------------------------------------------


def _as_paths(paths: str | Path | Sequence[str | Path]) -> list[str | Path]:
    if isinstance(paths, str | Path):
        return [paths]
    result = list(paths)
    if not result:
        raise ConfigurationError("no data files given")
    return result


def _where(frame: pd.DataFrame, position: int) -> tuple[str, int]:
    return str(frame[_FILE_COL].iat[position]), int(frame[_ROW_COL].to_numpy()[position])


def write_outcomes(frame: pd.DataFrame, path: str | Path) -> Path:
    """Write outcome rows (the :data:`SCHEMA_COLUMNS`) to a Parquet file, atomically: a
    reader never sees a half-written file, and a crash keeps the previous one."""
    out = Path(path)
    missing = [c for c in SCHEMA_COLUMNS if c not in frame.columns]
    if missing:
        raise ConfigurationError(f"cannot write outcomes without column(s) {', '.join(missing)}")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    frame[list(SCHEMA_COLUMNS)].to_parquet(tmp, compression="zstd", index=False)
    tmp.replace(out)
    return out


def load_outcomes(
    paths: str | Path | Sequence[str | Path],
    models: Sequence[str] | None = None,
    prices: Mapping[str, tuple[float, float]] | None = None,
) -> pd.DataFrame:
    """Load and validate routing outcome data in the long schema.

    Args:
        paths: one file or several (``.parquet``/``.pq``, ``.csv``, ``.jsonl``/``.ndjson``);
            several files are concatenated in the given order.
        models: if given, keep only these models' rows, and require every prompt to have a row
            for each of them.  Rows of other models are dropped; rows of these never are.
        prices: model -> (input, output) USD per million tokens, used to estimate ``cost_usd``
            where a file has none.  Without it, missing costs are 0.0.

    Returns:
        A frame with the columns of :data:`SCHEMA_COLUMNS` plus ``step`` (the agent step kind,
        defaulting to ``task``), in file order: text columns as ``str`` (``split`` and
        ``response`` may hold None), ``score`` float, token counts int, ``cost_usd`` float,
        ``cost_is_estimated`` bool.

    Raises:
        DataValidationError: naming the file, the 1-based data row (the line for JSONL, the data
            row after the header for CSV) and the column of the first offending row.
        ConfigurationError: no paths, a model listed twice, or a model without a price.
    """
    path_list = _as_paths(paths)
    if models is not None:
        models = [str(m) for m in models]
        if not models:
            raise ConfigurationError("models must not be empty")
        repeated = sorted({m for m in models if models.count(m) > 1})
        if repeated:
            raise ConfigurationError(f"model(s) listed more than once: {', '.join(repeated)}")

    parts: list[pd.DataFrame] = []
    models_seen: set[str] = set()
    for item in path_list:
        path = Path(item)
        label = str(item)
        raw, rows = _read_file(path, label)
        if "model" in raw.columns:
            models_seen.update(str(m) for m in pd.unique(raw["model"].dropna()))
        parts.append(_normalise_file(raw, rows, path, label, models, prices))
    frame = parts[0] if len(parts) == 1 else pd.concat(parts, ignore_index=True)
    labels = [str(p) for p in path_list]
    file_label = labels[0] if len(labels) == 1 else ", ".join(labels)

    if models is not None:
        absent = [m for m in models if m not in models_seen]
        if absent:
            present = ", ".join(sorted(models_seen)) or "none"
            hint = ""
            if any(SAMPLE_SEPARATOR in m for m in absent):
                hint = (
                    "; extra samples of a model are rows of <model>#s1, #s2, …: record them with "
                    "`cascade-router record --samples K`"
                )
            raise DataValidationError(
                f"model(s) {', '.join(map(repr, absent))} not found in the data; models present: "
                f"{present}{hint}",
                file=file_label,
                column="model",
            )

    duplicated = frame.duplicated(["prompt_id", "model"], keep="first").to_numpy()
    if duplicated.any():
        position = _first(duplicated)
        pid, model = frame["prompt_id"].iat[position], frame["model"].iat[position]
        same = (frame["prompt_id"] == pid) & (frame["model"] == model)
        first_file, first_row = _where(frame, _first(same.to_numpy()))
        file, row = _where(frame, position)
        raise DataValidationError(
            f"duplicate row for prompt_id {pid!r} and model {model!r} (first seen in file "
            f"{first_file}, row {first_row}; {int(duplicated.sum())} duplicate row(s) in all)",
            file=file,
            row=row,
            column="prompt_id",
        )

    if models is not None:
        counts = frame["prompt_id"].map(frame["prompt_id"].value_counts())
        incomplete = (counts < len(models)).to_numpy()
        if incomplete.any():
            position = _first(incomplete)
            pid = frame["prompt_id"].iat[position]
            have = set(frame.loc[frame["prompt_id"] == pid, "model"])
            missing = [m for m in models if m not in have]
            n_prompts = int(frame.loc[incomplete, "prompt_id"].nunique())
            file, row = _where(frame, position)
            raise DataValidationError(
                f"prompt_id {pid!r} has no row for model(s) {', '.join(map(repr, missing))} "
                f"(this is the prompt's first row; {n_prompts} prompt(s) lack a requested "
                "model)",
                file=file,
                row=row,
                column="prompt_id",
            )

    return frame.drop(columns=[_FILE_COL, _ROW_COL]).reset_index(drop=True)[list(_OUTPUT_COLUMNS)]


# --------------------------------------------------------------------------------------------
# The wide view
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class PeerOutcomes:
    """Recorded answers of cheap *peer* models on the same prompts: second opinions.

    Column ``k`` of ``scores``/``costs`` (and ``responses[k]``) is peer ``models[k]``.
    """

    models: tuple[str, ...]
    scores: np.ndarray
    costs: np.ndarray
    responses: list[list[str | None]]

    def subset(self, idx: np.ndarray) -> PeerOutcomes:
        return PeerOutcomes(
            self.models,
            self.scores[idx],
            self.costs[idx],
            [[column[i] for i in idx] for column in self.responses],
        )


@dataclass(frozen=True, eq=False)
class OutcomeTable:
    """Per-prompt outcomes for an ordered list of model tiers (cheapest first).

    Row ``i`` is one prompt; column ``t`` of ``scores``/``costs``/``output_tokens`` (and
    ``responses[t][i]``) is tier ``tiers[t]`` on that prompt.  Rows are sorted by prompt id.
    """

    tiers: tuple[str, ...]
    prompt_ids: np.ndarray
    prompts: list[str]
    steps: np.ndarray
    splits: np.ndarray
    scores: np.ndarray
    costs: np.ndarray
    responses: list[list[str | None]]
    output_tokens: np.ndarray
    peers: PeerOutcomes | None = None

    def __post_init__(self) -> None:
        n, n_tiers = len(self.prompt_ids), len(self.tiers)
        shapes_ok = (
            len(self.prompts) == n
            and len(self.steps) == n
            and len(self.splits) == n
            and self.scores.shape == (n, n_tiers)
            and self.costs.shape == (n, n_tiers)
            and self.output_tokens.shape == (n, n_tiers)
            and len(self.responses) == n_tiers
            and all(len(r) == n for r in self.responses)
            and (self.peers is None or self.peers.scores.shape == (n, len(self.peers.models)))
        )
        if not shapes_ok:
            raise ValueError(
                f"OutcomeTable fields disagree in shape (expected {n} prompts x {n_tiers} tiers)"
            )

    @classmethod
    def from_long(
        cls, frame: pd.DataFrame, tiers: Sequence[str], peers: Sequence[str] = ()
    ) -> OutcomeTable:
        """Pivot a long frame (as returned by :func:`load_outcomes`) to one row per prompt.

        Rows of models not in ``tiers`` (or ``peers``, kept as :class:`PeerOutcomes`) are
        ignored; rows are sorted by prompt id.

        Raises:
            ConfigurationError: fewer than 2 tiers, or a tier listed twice.
            DataValidationError: a required column or a tier is missing from the frame, a
                (prompt_id, model) pair repeats, or a prompt lacks a row for some tier.
        """
        tier_list = tuple(str(t) for t in tiers)
        if len(tier_list) < 2:
            raise ConfigurationError(
                f"a cascade needs at least 2 tiers, got {len(tier_list)}: {list(tier_list)}"
            )
        if peers:
            return cls.from_long(frame, (*tier_list, *(str(p) for p in peers)))._split_peers(
                len(tier_list)
            )
        if len(set(tier_list)) != len(tier_list):
            repeated = sorted({t for t in tier_list if tier_list.count(t) > 1})
            raise ConfigurationError(f"tier(s) listed more than once: {', '.join(repeated)}")
        for column in REQUIRED_COLUMNS:
            if column not in frame.columns:
                raise DataValidationError(f"required column {column!r} is missing", column=column)

        model_all = frame["model"].astype(str)
        present = set(pd.unique(model_all))
        absent = [t for t in tier_list if t not in present]
        if absent:
            raise DataValidationError(
                f"tier model(s) {', '.join(map(repr, absent))} not found in the data; models "
                f"present: {', '.join(sorted(present)) or 'none'}",
                column="model",
            )
        keep = model_all.isin(tier_list).to_numpy()
        sub = frame.loc[keep] if not keep.all() else frame

        tier_codes = pd.Categorical(sub["model"].astype(str), categories=tier_list).codes
        tier_codes = np.asarray(tier_codes, dtype=np.int64)
        prompt_codes, unique_ids = pd.factorize(sub["prompt_id"].astype(str), sort=True)
        prompt_codes = np.asarray(prompt_codes, dtype=np.int64)
        n, n_tiers = len(unique_ids), len(tier_list)

        flat = prompt_codes * n_tiers + tier_codes
        counts = np.bincount(flat, minlength=n * n_tiers)
        if (counts > 1).any():
            cell = _first(counts > 1)
            raise DataValidationError(
                f"duplicate row for prompt_id {unique_ids[cell // n_tiers]!r} and model "
                f"{tier_list[cell % n_tiers]!r}",
                column="prompt_id",
            )
        if (counts == 0).any():
            cell = _first(counts == 0)
            raise DataValidationError(
                f"prompt_id {unique_ids[cell // n_tiers]!r} has no row for model "
                f"{tier_list[cell % n_tiers]!r}",
                column="prompt_id",
            )

        scores = np.empty((n, n_tiers), dtype=np.float64)
        scores[prompt_codes, tier_codes] = pd.to_numeric(sub["score"]).to_numpy(np.float64)
        costs = np.zeros((n, n_tiers), dtype=np.float64)
        if "cost_usd" in sub.columns:
            costs[prompt_codes, tier_codes] = (
                pd.to_numeric(sub["cost_usd"]).fillna(0.0).to_numpy(np.float64)
            )
        out_tokens = np.zeros((n, n_tiers), dtype=np.int64)
        if "output_tokens" in sub.columns:
            out_tokens[prompt_codes, tier_codes] = (
                pd.to_numeric(sub["output_tokens"]).fillna(0).to_numpy(np.int64)
            )
        grid = np.full((n_tiers, n), None, dtype=object)
        if "response" in sub.columns:
            values = sub["response"].to_numpy(dtype=object).copy()
            values[pd.isna(values)] = None
            grid[tier_codes, prompt_codes] = values
        responses: list[list[str | None]] = [row.tolist() for row in grid]

        # Per-prompt attributes come from each prompt's first row.
        first = np.unique(prompt_codes, return_index=True)[1]

        def per_prompt(column: str, fallback: str | None) -> np.ndarray:
            if column not in sub.columns:
                return np.full(n, fallback, dtype=object)
            values = sub[column].to_numpy(dtype=object)[first].copy()
            values[pd.isna(values)] = fallback
            return values

        steps = per_prompt("task", "") if "step" not in sub.columns else per_prompt("step", "")
        return cls(
            tiers=tier_list,
            prompt_ids=np.asarray(unique_ids, dtype=object),
            prompts=[str(p) for p in sub["prompt"].to_numpy(dtype=object)[first]],
            steps=steps,
            splits=per_prompt("split", None),
            scores=scores,
            costs=costs,
            responses=responses,
            output_tokens=out_tokens,
        )

    def _split_peers(self, n_tiers: int) -> OutcomeTable:
        """The first ``n_tiers`` columns as tiers, the others as peers."""
        return OutcomeTable(
            tiers=self.tiers[:n_tiers],
            prompt_ids=self.prompt_ids,
            prompts=self.prompts,
            steps=self.steps,
            splits=self.splits,
            scores=self.scores[:, :n_tiers],
            costs=self.costs[:, :n_tiers],
            responses=self.responses[:n_tiers],
            output_tokens=self.output_tokens[:, :n_tiers],
            peers=PeerOutcomes(
                self.tiers[n_tiers:],
                self.scores[:, n_tiers:],
                self.costs[:, n_tiers:],
                self.responses[n_tiers:],
            ),
        )

    def __len__(self) -> int:
        """Number of prompts."""
        return len(self.prompt_ids)

    def subset(self, index: np.ndarray) -> OutcomeTable:
        """Rows selected by an integer index array or a boolean mask of length ``len(self)``."""
        idx = np.asarray(index)
        if idx.dtype == bool:
            if idx.shape != (len(self),):
                raise ValueError(f"boolean mask has shape {idx.shape}, expected ({len(self)},)")
            idx = np.flatnonzero(idx)
        idx = idx.astype(np.int64, copy=False).reshape(-1)
        return OutcomeTable(
            tiers=self.tiers,
            prompt_ids=self.prompt_ids[idx],
            prompts=[self.prompts[i] for i in idx],
            steps=self.steps[idx],
            splits=self.splits[idx],
            scores=self.scores[idx],
            costs=self.costs[idx],
            responses=[[column[i] for i in idx] for column in self.responses],
            output_tokens=self.output_tokens[idx],
            peers=None if self.peers is None else self.peers.subset(idx),
        )

    def _shuffled_positions(self, seed: int) -> np.ndarray:
        """Row positions in sorted-prompt-id order, then shuffled with ``seed``."""
        order = np.argsort(self.prompt_ids.astype(str), kind="stable")
        return order[np.random.default_rng(seed).permutation(len(order))]

    def split_by_prompt(self, test_size: float, seed: int) -> tuple[OutcomeTable, OutcomeTable]:
        """Split into (train, test) by prompt id, deterministically for a given seed.

        ``test_size`` is the fraction of prompts in the test part (0 < test_size < 1); both
        parts keep at least one prompt when the table has two or more.
        """
        if not 0.0 < float(test_size) < 1.0:
            raise ConfigurationError(f"test_size must be in (0, 1), got {test_size!r}")
        n = len(self)
        n_test = round(float(test_size) * n)
        if n >= 2:
            n_test = min(max(n_test, 1), n - 1)
        shuffled = self._shuffled_positions(seed)
        test = np.sort(shuffled[:n_test])
        train = np.sort(shuffled[n_test:])
        return self.subset(train), self.subset(test)

    def source_split(self, name: str) -> OutcomeTable:
        """Rows whose source split (e.g. RouterBench's ``train``/``test``) equals ``name``.

        Raises:
            ConfigurationError: no row has that split.
        """
        mask = np.array([s == name for s in self.splits], dtype=bool)
        if not mask.any():
            available = sorted({str(s) for s in self.splits if s is not None})
            raise ConfigurationError(
                f"no prompts with split {name!r}; splits present: "
                f"{', '.join(available) or 'none (this data has no source split)'}"
            )
        return self.subset(mask)

    def sample(self, n: int, seed: int) -> OutcomeTable:
        """A deterministic random subsample of ``n`` prompts (``self`` if ``n >= len(self)``)."""
        if n < 1:
            raise ConfigurationError(f"sample size must be >= 1, got {n}")
        if n >= len(self):
            return self
        return self.subset(np.sort(self._shuffled_positions(seed)[:n]))

    def digest(self) -> str:
        """A stable sha256 hex digest of the tiers, the prompt ids and the scores."""
        h = hashlib.sha256()
        h.update("\x1f".join(self.tiers).encode("utf-8"))
        h.update(b"\x1e")
        h.update("\x1f".join(str(p) for p in self.prompt_ids).encode("utf-8"))
        h.update(b"\x1e")
        h.update(np.ascontiguousarray(self.scores, dtype="<f8").tobytes())
        return h.hexdigest()

    def labels(self, tier: int, threshold: float = 0.5) -> np.ndarray:
        """1 where tier ``tier`` scored at least ``threshold``, else 0 (int array of length n)."""
        if not -len(self.tiers) <= tier < len(self.tiers):
            raise ConfigurationError(f"tier index {tier} out of range for {len(self.tiers)} tiers")
        return (self.scores[:, tier] >= threshold).astype(np.int64)


def load_table(
    paths: str | Path | Sequence[str | Path],
    tiers: Sequence[str],
    prices: Mapping[str, tuple[float, float]] | None = None,
    peers: Sequence[str] = (),
) -> OutcomeTable:
    """Load, validate and pivot outcome data for ``tiers`` (cheapest first) in one call.

    ``peers`` names cheap models whose recorded answers serve as second opinions
    (:attr:`OutcomeTable.peers`); every prompt needs a row for each of them too.
    """
    tier_list = [str(t) for t in tiers]
    if len(tier_list) < 2:
        raise ConfigurationError(
            f"a cascade needs at least 2 tiers, got {len(tier_list)}: {tier_list}"
        )
    peer_list = [str(p) for p in peers]
    overlap = sorted(set(peer_list) & set(tier_list))
    if overlap:
        raise ConfigurationError(f"peer model(s) {', '.join(overlap)} are also tiers")
    frame = load_outcomes(paths, models=tier_list + peer_list, prices=prices)
    return OutcomeTable.from_long(frame, tier_list, peer_list)
