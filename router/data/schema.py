"""The long outcome schema: one row per (prompt, model)."""

from __future__ import annotations

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


OUTPUT_COLUMNS: tuple[str, ...] = (*SCHEMA_COLUMNS, "step")


# Hidden bookkeeping columns: where each row came from, for error messages.
FILE_COL = "__file"
ROW_COL = "__row"
