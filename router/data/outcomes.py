"""Loading and writing outcome files in the long schema."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

import pandas as pd

from router.data.readers import read_file
from router.data.schema import FILE_COL, OUTPUT_COLUMNS, ROW_COL, SCHEMA_COLUMNS, VALID_COLUMN
from router.data.validation import first_index, normalise_file
from router.errors import ConfigurationError, DataValidationError
from router.opinions import SAMPLE_SEPARATOR

logger = logging.getLogger(__name__)
#: where :func:`load_outcomes` leaves the number of prompts it dropped (``frame.attrs``)
DROPPED_PROMPTS = "dropped_prompts"


def _as_paths(paths: str | Path | Sequence[str | Path]) -> list[str | Path]:
    if isinstance(paths, str | Path):
        return [paths]
    result = list(paths)
    if not result:
        raise ConfigurationError("no data files given")
    return result


def _where(frame: pd.DataFrame, position: int) -> tuple[str, int]:
    return str(frame[FILE_COL].iat[position]), int(frame[ROW_COL].to_numpy()[position])


def write_outcomes(frame: pd.DataFrame, path: str | Path) -> Path:
    """Write outcome rows (the :data:`SCHEMA_COLUMNS`, the validator's verdicts when the
    frame has a ``valid`` column, and the step kind where it differs from the task) to a
    Parquet file, atomically: a reader never sees a
    half-written file, and a crash keeps the previous one."""
    out = Path(path)
    missing = [c for c in SCHEMA_COLUMNS if c not in frame.columns]
    if missing:
        raise ConfigurationError(f"cannot write outcomes without column(s) {', '.join(missing)}")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    columns = [*SCHEMA_COLUMNS, *([VALID_COLUMN] if VALID_COLUMN in frame.columns else [])]
    if "step" in frame.columns and not frame["step"].astype(str).equals(frame["task"].astype(str)):
        columns.append("step")  # the step kind, where it is not the task
    frame[columns].to_parquet(tmp, compression="zstd", index=False)
    tmp.replace(out)
    return out


def load_outcomes(
    paths: str | Path | Sequence[str | Path],
    models: Sequence[str] | None = None,
    prices: Mapping[str, tuple[float, float]] | None = None,
    incomplete: Literal["error", "drop"] = "error",
) -> pd.DataFrame:
    """Load and validate routing outcome data in the long schema.

    Args:
        paths: one file or several (``.parquet``/``.pq``, ``.csv``, ``.jsonl``/``.ndjson``);
            several files are concatenated in the given order.
        models: if given, keep only these models' rows, and require every prompt to have a row
            for each of them.  Rows of other models are dropped; rows of these never are.
        prices: model -> (input, output) USD per million tokens, used to estimate ``cost_usd``
            where a file has none.  Without it, missing costs are 0.0.
        incomplete: what to do with prompts that lack a row for one of ``models``: ``"error"``
            (raise) or ``"drop"`` (leave them out, log how many, and record the count in
            ``frame.attrs["dropped_prompts"]``).

    Returns:
        A frame with the columns of :data:`SCHEMA_COLUMNS` plus ``step`` (the agent step kind,
        defaulting to ``task``) and ``valid`` (the validator's verdict: 1.0 / 0.0, NaN where
        absent), in file order: text columns as ``str`` (``split`` and ``response`` may hold
        None), ``score`` float, token counts int, ``cost_usd`` float, ``cost_is_estimated``
        bool.

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
        raw, rows = read_file(path, label)
        if "model" in raw.columns:
            models_seen.update(str(m) for m in pd.unique(raw["model"].dropna()))
        parts.append(normalise_file(raw, rows, path, label, models, prices))
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
        position = first_index(duplicated)
        pid, model = frame["prompt_id"].iat[position], frame["model"].iat[position]
        same = (frame["prompt_id"] == pid) & (frame["model"] == model)
        first_file, first_row = _where(frame, first_index(same.to_numpy()))
        file, row = _where(frame, position)
        raise DataValidationError(
            f"duplicate row for prompt_id {pid!r} and model {model!r} (first seen in file "
            f"{first_file}, row {first_row}; {int(duplicated.sum())} duplicate row(s) in all)",
            file=file,
            row=row,
            column="prompt_id",
        )

    dropped = 0
    if models is not None:
        counts = frame["prompt_id"].map(frame["prompt_id"].value_counts())
        lacking = (counts < len(models)).to_numpy()
        if lacking.any() and incomplete == "drop":
            dropped = int(frame.loc[lacking, "prompt_id"].nunique())
            by_prompt = frame.loc[lacking].groupby("prompt_id")["model"].agg(set)
            short = sorted({m for got in by_prompt for m in models if m not in got})
            logger.warning(
                "dropped %d of %d prompts that lack a row for %s",
                dropped,
                int(frame["prompt_id"].nunique()),
                ", ".join(short),
            )
            frame = frame.loc[~lacking]
        elif lacking.any():
            position = first_index(lacking)
            pid = frame["prompt_id"].iat[position]
            have = set(frame.loc[frame["prompt_id"] == pid, "model"])
            missing = [m for m in models if m not in have]
            n_prompts = int(frame.loc[lacking, "prompt_id"].nunique())
            file, row = _where(frame, position)
            raise DataValidationError(
                f"prompt_id {pid!r} has no row for model(s) {', '.join(map(repr, missing))} "
                f"(this is the prompt's first row; {n_prompts} prompt(s) lack a requested "
                "model)",
                file=file,
                row=row,
                column="prompt_id",
            )

    out = frame.drop(columns=[FILE_COL, ROW_COL]).reset_index(drop=True)[list(OUTPUT_COLUMNS)]
    out.attrs[DROPPED_PROMPTS] = dropped
    return out
