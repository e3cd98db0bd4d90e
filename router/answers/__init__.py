"""Reading answers: parsing a final answer, and normalising answers so that they compare."""

from __future__ import annotations

from router.answers.normalise import (
    Normaliser,
    NormaliserRegistry,
    build_normaliser,
    normaliser_spec,
)
from router.answers.parse import chosen_option, parse_choice, parse_final_answer, parse_number

__all__ = [
    "Normaliser",
    "NormaliserRegistry",
    "build_normaliser",
    "chosen_option",
    "normaliser_spec",
    "parse_choice",
    "parse_final_answer",
    "parse_number",
]
