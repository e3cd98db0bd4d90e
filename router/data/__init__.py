"""Routing outcome data: loading, validation and the wide per-prompt view.

The *long* schema (:mod:`router.data.schema`) has one row per (prompt, model); see
``router/resources/data/README.md``.  :func:`load_outcomes` reads Parquet, CSV or JSONL files in
that schema, fills the optional columns with defaults, and validates every row; a bad input
raises one :class:`~router.errors.DataValidationError` naming the file, the 1-based data row and
the column at fault.

:class:`OutcomeTable` is the *wide* view used by training and evaluation: one row per prompt,
one column per model tier (cheapest first).
"""

from __future__ import annotations

from router.data.bundled import BUNDLED_DATASETS, bundled_data_dir, bundled_dataset
from router.data.outcomes import load_outcomes, write_outcomes
from router.data.prices import load_prices
from router.data.schema import REQUIRED_COLUMNS, SCHEMA_COLUMNS
from router.data.table import OpinionOutcomes, OutcomeTable, load_table

__all__ = [
    "BUNDLED_DATASETS",
    "REQUIRED_COLUMNS",
    "SCHEMA_COLUMNS",
    "OpinionOutcomes",
    "OutcomeTable",
    "bundled_data_dir",
    "bundled_dataset",
    "load_outcomes",
    "load_prices",
    "load_table",
    "write_outcomes",
]
