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


#: An optional column: the validator's verdict on a recorded answer whose request constrained its
#: shape (tools, a JSON response format): 1 valid, 0 refused, empty where nothing was constrained.
VALID_COLUMN = "valid"

OUTPUT_COLUMNS: tuple[str, ...] = (*SCHEMA_COLUMNS, "step", VALID_COLUMN)


# Hidden bookkeeping columns: where each row came from, for error messages.
FILE_COL = "__file"
ROW_COL = "__row"
