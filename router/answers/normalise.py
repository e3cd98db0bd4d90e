"""Answer normalisation per step kind: two answers agree when their normal forms are equal.

A normal form is a multiple-choice letter, a number, a label from a fixed set, a canonical JSON
object or the tool calls an answer makes; free text has none (:class:`TextNormaliser`). A
:class:`NormaliserRegistry` maps step kinds (``"intent"``, ``"math"``, …) to normalisers; the
agent steps ``tool_selection`` and ``extraction`` read tool calls and JSON unless told otherwise,
and steps it does not name use ``"auto"`` (tool calls, else choice letter, else number, else
JSON, else free text).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from router.answers.parse import parse_choice, parse_number
from router.errors import ConfigurationError


@runtime_checkable
class Normaliser(Protocol):
    """Turns an answer into a comparable key (``None``: nothing comparable found)."""

    kind: str

    def normalise(self, text: str | None) -> str | None: ...


class ChoiceNormaliser:
    """The multiple-choice letter an answer settles on (``"answer is (C)"`` → ``"C"``)."""

    kind = "choice"

    def normalise(self, text: str | None) -> str | None:
        return parse_choice(text) if text else None


class NumberNormaliser:
    """The final number of an answer (GSM8K ``#### 1,234`` → ``"1234"``; ``3.50`` → ``"3.5"``).

    An answer with no ``####`` or "answer is" marker settles on the last number it states
    (chat models often end "…, so she makes $18 every day.").
    """

    kind = "number"
    _LAST = re.compile(r"-?\d[\d,]*(?:\.\d+)?")

    def normalise(self, text: str | None) -> str | None:
        if not text:
            return None
        marked = parse_number(text)
        if marked is not None:
            return marked
        found = self._LAST.findall(text)
        return parse_number(f"#### {found[-1]}") if found else None


class LabelNormaliser:
    """One label of a fixed set: the answer itself, else the last label the answer names."""

    kind = "label"

    def __init__(self, labels: Sequence[str]) -> None:
        cleaned = [str(label).strip() for label in labels]
        if not cleaned or any(not label for label in cleaned):
            raise ConfigurationError("a label normaliser needs a non-empty list of labels")
        self.labels = tuple(cleaned)
        self._by_lower = {label.lower(): label for label in self.labels}
        alternatives = "|".join(
            re.escape(label) for label in sorted(self.labels, key=len, reverse=True)
        )
        self._pattern = re.compile(rf"(?<![\w-])({alternatives})(?![\w-])", re.IGNORECASE)

    def normalise(self, text: str | None) -> str | None:
        if not text:
            return None
        stripped = text.strip().strip("\"'`.").strip()
        if stripped.lower() in self._by_lower:
            return self._by_lower[stripped.lower()]
        found = self._pattern.findall(text)
        return self._by_lower[found[-1].lower()] if found else None


class JsonNormaliser:
    """A JSON object in canonical form: sorted keys, no whitespace, numbers as parsed.

    Finds the object in a fenced code block or as the outermost ``{…}`` of the answer, so
    ``'Sure: {"b": 1, "a": [1, 2]}'`` and ``'{"a":[1,2],"b":1.0}'`` normalise alike.
    """

    kind = "json"
    _FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL | re.IGNORECASE)

    def normalise(self, text: str | None) -> str | None:
        if not text:
            return None
        candidates = [m.strip() for m in self._FENCE.findall(text)]
        start, end = text.find("{"), text.rfind("}")
        if 0 <= start < end:
            candidates.append(text[start : end + 1])
        candidates.append(text.strip())
        for candidate in candidates:
            try:
                value = json.loads(candidate)
            except (json.JSONDecodeError, ValueError):
                continue
            if isinstance(value, dict | list):
                return json.dumps(_canonical(value), sort_keys=True, separators=(",", ":"))
        return None


def _canonical(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_canonical(v) for v in value]
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        return value.strip()
    return value


class ToolCallNormaliser:
    """The calls an answer makes: each function's name with its arguments in canonical JSON,
    ids left out and the calls in sorted order, so two models making the same call agree.

    Reads the text form of an answer that calls tools
    (:func:`router.backends.request.message_text`: ``{"tool_calls": [{"name": …, "arguments":
    …}]}``) and the recorded form (the JSON of the assistant message).
    """

    kind = "tool_call"

    def normalise(self, text: str | None) -> str | None:
        if not text or '"tool_calls"' not in text:
            return None
        try:
            data = json.loads(text)
        except ValueError:
            return None
        calls = data.get("tool_calls") if isinstance(data, dict) else None
        if not isinstance(calls, list) or not calls:
            return None
        keys = []
        for call in calls:
            if not isinstance(call, dict):
                return None
            function = call.get("function", call)
            name, arguments = function.get("name"), function.get("arguments")
            if not isinstance(name, str):
                return None
            if isinstance(arguments, str):
                try:
                    arguments = json.loads(arguments)
                except ValueError:
                    arguments = arguments.strip()
            canonical = json.dumps(_canonical(arguments), sort_keys=True, separators=(",", ":"))
            keys.append(f"{name}({canonical})")
        return ";".join(sorted(keys))


class TextNormaliser:
    """Free text: no normal form; agreement is decided by embedding similarity."""

    kind = "text"

    def normalise(self, text: str | None) -> str | None:
        return None


class AutoNormaliser:
    """Tool calls, else a choice letter, else a number, else a JSON object, else nothing (free
    text).  Tool calls come first: their arguments hold numbers and JSON of their own."""

    kind = "auto"

    def __init__(self) -> None:
        self._chain: tuple[Normaliser, ...] = (
            ToolCallNormaliser(),
            ChoiceNormaliser(),
            NumberNormaliser(),
            JsonNormaliser(),
        )

    def normalise(self, text: str | None) -> str | None:
        for normaliser in self._chain:
            key = normaliser.normalise(text)
            if key is not None:
                return f"{normaliser.kind}:{key}"
        return None


def build_normaliser(spec: str | Mapping[str, Any] | Normaliser) -> Normaliser:
    """``"choice"``, ``"number"``, ``"json"``, ``"tool_call"``, ``"text"``, ``"auto"``,
    ``"label:yes,no,maybe"`` or ``{"kind": "label", "labels": [...]}`` (or a normaliser)."""
    if isinstance(spec, Normaliser):
        return spec
    if isinstance(spec, Mapping):
        kind, labels = str(spec.get("kind")), spec.get("labels")
    else:
        kind, _, rest = str(spec).partition(":")
        labels = [x for x in rest.split(",") if x.strip()] if rest else None
    simple: dict[str, type[Normaliser]] = {
        "choice": ChoiceNormaliser,
        "number": NumberNormaliser,
        "json": JsonNormaliser,
        "tool_call": ToolCallNormaliser,
        "text": TextNormaliser,
        "auto": AutoNormaliser,
    }
    if kind in simple:
        return simple[kind]()
    if kind == "label":
        if not labels:
            raise ConfigurationError("a label normaliser needs labels: 'label:yes,no'")
        return LabelNormaliser(list(labels))
    raise ConfigurationError(
        f"unknown answer kind {spec!r}: use choice, number, label:A,B,…, json, tool_call, text "
        "or auto"
    )


def normaliser_spec(normaliser: Normaliser) -> str | dict[str, Any]:
    """The JSON-able spec :func:`build_normaliser` reads back."""
    if isinstance(normaliser, LabelNormaliser):
        return {"kind": "label", "labels": list(normaliser.labels)}
    if normaliser.kind not in ("choice", "number", "json", "tool_call", "text", "auto"):
        raise ConfigurationError(f"cannot save custom normaliser of kind {normaliser.kind!r}")
    return normaliser.kind


#: The agent steps whose answers have a known shape: a tool selection is its tool calls, an
#: extraction its JSON object (``auto`` would read the last number of ``{"order": "55120", …}``
#: and call two extractions of the same order number alike).  A registry's own kinds win.
AGENT_STEP_KINDS: Mapping[str, str] = {"tool_selection": "tool_call", "extraction": "json"}


class NormaliserRegistry:
    """Normalisers per step kind: the given ``kinds``, then :data:`AGENT_STEP_KINDS` for the
    agent steps they do not name; other steps use ``default`` (``"auto"``)."""

    def __init__(
        self,
        kinds: Mapping[str, str | Mapping[str, Any] | Normaliser] | None = None,
        default: str | Mapping[str, Any] | Normaliser = "auto",
    ) -> None:
        self.default = build_normaliser(default)
        self.by_step: dict[str, Normaliser] = {
            str(step): build_normaliser(spec) for step, spec in (kinds or {}).items()
        }
        self._agent_steps = {step: build_normaliser(k) for step, k in AGENT_STEP_KINDS.items()}

    def register(self, step: str, spec: str | Mapping[str, Any] | Normaliser) -> None:
        self.by_step[str(step)] = build_normaliser(spec)

    def for_step(self, step: str) -> Normaliser:
        key = str(step)
        return self.by_step.get(key) or self._agent_steps.get(key) or self.default

    def to_dict(self) -> dict[str, Any]:
        return {
            "default": normaliser_spec(self.default),
            "steps": {k: normaliser_spec(v) for k, v in self.by_step.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> NormaliserRegistry:
        return cls(data.get("steps", {}), data.get("default", "auto"))
