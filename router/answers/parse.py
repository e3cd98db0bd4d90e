"""Cheap parsing of a model's final answer (multiple-choice letter or number)."""

from __future__ import annotations

import re

_CHOICE_PATTERNS = [
    re.compile(r"answer is:?\s*\(?\s*([A-J])\s*\)?(?![A-Za-z])", re.IGNORECASE),
    re.compile(r"answer:\s*\(?([A-J])\)?(?![A-Za-z])", re.IGNORECASE),
    re.compile(r"^\s*\(?([A-J])\)?[.)]?\s*$", re.MULTILINE),
]
_FINAL_NUMBER = re.compile(r"####\s*\$?\s*(-?[\d,]*\.?\d+)")
_ANSWER_NUMBER = re.compile(r"answer is:?\s*\$?\s*(-?[\d,]*\.?\d+)", re.IGNORECASE)


def parse_choice(text: str) -> str | None:
    """The multiple-choice letter a response settles on, if it states one."""
    for pattern in _CHOICE_PATTERNS:
        matches = pattern.findall(text)
        if matches:
            return str(matches[-1]).upper()
    return None


def parse_number(text: str) -> str | None:
    """The final number of a math response (GSM8K ``####`` style, else "answer is N")."""
    for pattern in (_FINAL_NUMBER, _ANSWER_NUMBER):
        matches = pattern.findall(text)
        if matches:
            return _clean_number(matches[-1])
    return None


def _clean_number(raw: str) -> str:
    value = raw.replace(",", "").rstrip(".")
    try:
        number = float(value)
    except ValueError:
        return value
    return str(int(number)) if number.is_integer() else str(number)


def parse_final_answer(text: str | None) -> str | None:
    """A final answer a checker could compare: a choice letter or a number, else None."""
    if not text:
        return None
    return parse_choice(text) or parse_number(text)


_OPTION_LINE = re.compile(r"^[ \t]*\(?([A-J])[).:][ \t]+(\S.*?)[ \t]*$", re.MULTILINE)


def chosen_option(answer: str | None, prompt: str) -> str | None:
    """The text of the option a multiple-choice answer picks, read from the input's last
    option list (``A) ...``, ``A. ...`` or ``(A) ...`` lines), or None."""
    letter = parse_choice(answer) if answer else None
    if letter is None:
        return None
    options = _OPTION_LINE.findall(prompt)
    last_a = max((i for i, (label, _) in enumerate(options) if label == "A"), default=None)
    if last_a is None:
        return None
    for label, text in options[last_a:]:
        if label == letter:
            return str(text)
    return None
