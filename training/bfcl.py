"""Berkeley Function Calling Leaderboard (BFCL) questions as tool-calling requests, graded by
BFCL's own AST checker.

The questions, their ground truth and the checker come from the ``bfcl-eval`` package
(Apache-2.0; install it with ``pip install --no-deps bfcl-eval==2026.3.23``: its declared
dependencies are every vendor SDK and a CUDA torch, none of which the checker needs).

A question becomes a chat-completions request the way BFCL's OpenAI function-calling handler
builds one: the question's messages, the functions as OpenAI ``tools`` (dots in names become
underscores, BFCL's types become JSON-schema types), ``temperature`` 0, plus two things
llama.cpp's ``chatml-function-calling`` handler needs and other servers ignore: a system message
(that handler shows the tools only inside one) and ``tool_choice: "auto"`` sent explicitly
(omitted, it renders no tools).  The answer is decoded as BFCL decodes an OpenAI answer
(``[{name: json.loads(arguments)}]``) and graded as BFCL's runner grades it: irrelevance
questions are right iff the answer makes no decodable call, every other category goes through
``ast_checker`` with the functions as BFCL wrote them.
"""

from __future__ import annotations

import copy
import hashlib
import importlib
import json
import sys
import types
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from router.backends.request import AssistantMessage, ChatRequest
from router.errors import ConfigurationError

#: The step kind of a tool-selection request.
STEP = "tool_selection"
#: The ``bfcl-eval`` release the questions are read from (data files change between releases).
BFCL_VERSION = "2026.3.23"
#: The categories recorded here: single-turn, Python-typed, graded by the AST checker or by the
#: irrelevance rule.  The parallel ones are accepted but llama.cpp's handler makes one call at
#: most, so a local model cannot answer them.
CATEGORIES: tuple[str, ...] = (
    "simple_python",
    "multiple",
    "parallel",
    "parallel_multiple",
    "irrelevance",
    "live_simple",
    "live_multiple",
    "live_parallel",
    "live_parallel_multiple",
    "live_irrelevance",
)
#: Added when a question has no system message of its own (see the module docstring).
SYSTEM_PROMPT = (
    "You are a helpful assistant. Call a function only when the user's request needs one."
)
#: A BFCL model key whose configuration says "dots in function names were sent as
#: underscores" (OpenAI tool names cannot hold dots), so the checker compares them that way.
CHECKER_MODEL = "gpt-4o-2024-11-20-FC"
_MODEL_CONFIG = "bfcl_eval.constants.model_config"


@dataclass(frozen=True)
class BfclQuestion:
    """One BFCL question: its id, category, the request sent and what grading needs."""

    id: str
    category: str
    request: ChatRequest
    functions: tuple[dict[str, Any], ...]  # the functions as BFCL wrote them (the checker's)
    ground_truth: tuple[dict[str, Any], ...] | None  # None: irrelevance (no call expected)


@dataclass(frozen=True)
class Grade:
    """BFCL's verdict on one answer: ``error_type`` as the checker names it, else ours
    (``irrelevance:called_a_function``, ``decode:arguments_not_json``, ``timeout``, …)."""

    correct: bool
    error_type: str | None = None
    error: str | None = None


def openai_tools(functions: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """BFCL function docs as OpenAI ``tools``: dots in names become underscores, the parameters
    an ``object`` schema, BFCL's types (``dict``, ``float``, ``tuple``, ``any`` …) JSON-schema
    types, one level into ``properties`` and ``items`` as BFCL's OpenAI handler does; a float
    keeps ``"format": "float"`` and says so in its description."""
    mapping = _type_mapping()
    tools = []
    for doc in functions:
        function = copy.deepcopy(dict(doc))
        function["name"] = function["name"].replace(".", "_")
        parameters = function.setdefault("parameters", {})
        parameters["type"] = "object"
        parameters["properties"] = _cast_properties(parameters.get("properties", {}), mapping)
        tools.append({"type": "function", "function": function})
    return tools


def _cast_properties(properties: Mapping[str, Any], mapping: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, spec in properties.items():
        prop = dict(spec)
        kind = prop.get("type", "string")
        if kind == "float":
            prop["format"] = "float"
            prop["description"] = f"{prop.get('description', '')} This is a float type value."
        prop["type"] = mapping.get(kind, "string")
        if isinstance(prop.get("items"), Mapping):
            items = dict(prop["items"])
            item_kind = items.get("type", "string")
            if item_kind == "float":
                items["format"] = "float"
            items["type"] = mapping.get(item_kind, "string")
            prop["items"] = items
        if isinstance(prop.get("properties"), Mapping):
            prop["properties"] = _cast_properties(prop["properties"], mapping)
        out[name] = prop
    return out


def _type_mapping() -> dict[str, str]:
    return dict(_bfcl("bfcl_eval.constants.type_mappings").GORILLA_TO_OPENAPI)


def question_request(
    messages: Sequence[Mapping[str, Any]], functions: Sequence[Mapping[str, Any]]
) -> ChatRequest:
    """The chat-completions request of one BFCL question (see the module docstring).

    Raises:
        ConfigurationError: the converted tools are not a valid request (e.g. an invalid
            JSON schema).
    """
    wire = [dict(m) for m in messages]
    if not any(m.get("role") == "system" for m in wire):
        wire = [{"role": "system", "content": SYSTEM_PROMPT}, *wire]
    return ChatRequest.of(
        wire, tools=openai_tools(functions) or None, tool_choice="auto", temperature=0.0
    )


def _order_key(seed: int, question_id: str) -> str:
    return hashlib.sha256(f"{seed}:{question_id}".encode()).hexdigest()


def load_category(category: str) -> tuple[list[BfclQuestion], int]:
    """Every single-turn question of a BFCL category, in the package's order, and how many
    were left out because their tools do not make a valid request (an invalid JSON schema).

    Raises:
        ConfigurationError: an unknown category, or ``bfcl-eval`` missing.
    """
    if category not in CATEGORIES:
        raise ConfigurationError(
            f"unknown BFCL category {category!r}; known: {', '.join(CATEGORIES)}"
        )
    utils = _bfcl("bfcl_eval.utils")
    hinted = utils.load_dataset_entry(category)  # BFCL sends "… in Python 3 syntax."
    raw = {
        e["id"]: e for e in utils.load_dataset_entry(category, include_language_specific_hint=False)
    }
    truths = (
        {}
        if "irrelevance" in category
        else {t["id"]: t["ground_truth"] for t in utils.load_ground_truth_entry(category)}
    )
    questions, skipped = [], 0
    for entry in hinted:
        if len(entry["question"]) != 1:
            continue  # multi-turn: not a single tool-selection step
        try:
            request = question_request(entry["question"][0], entry["function"])
        except ConfigurationError:
            skipped += 1
            continue
        truth = truths.get(entry["id"])
        questions.append(
            BfclQuestion(
                id=str(entry["id"]),
                category=category,
                request=request,
                functions=tuple(raw[entry["id"]]["function"]),
                ground_truth=None if truth is None else tuple(truth),
            )
        )
    return questions, skipped


def load_questions(
    counts: Mapping[str, int | None], seed: int = 0
) -> tuple[list[BfclQuestion], dict[str, int]]:
    """A seeded sample of BFCL questions: ``counts`` maps a category to how many (None: all).

    Within a category the questions with the smallest seeded hashes of their ids are taken, so
    a larger count extends a smaller one's sample; the list is in seeded hash order across the
    categories, so a run stopped part-way has covered every category alike.  Questions whose
    tools do not make a valid request are left out (their count per category is returned).

    Raises:
        ConfigurationError: an unknown category, or ``bfcl-eval`` missing.
    """
    picked: list[BfclQuestion] = []
    skipped: dict[str, int] = {}
    for category, count in counts.items():
        questions, left_out = load_category(category)
        if left_out:
            skipped[category] = left_out
        ranked = sorted(questions, key=lambda q: _order_key(seed, q.id))
        picked.extend(ranked if count is None else ranked[:count])
    picked.sort(key=lambda q: _order_key(seed, q.id))
    return picked, skipped


def decode_calls(message: AssistantMessage) -> list[dict[str, Any]] | None:
    """The answer's calls as BFCL decodes an OpenAI answer, ``[{name: arguments}]`` (strict
    JSON, as BFCL reads it); None when an argument text is not JSON."""
    try:
        return [
            {c.function.name: json.loads(c.function.arguments)} for c in message.tool_calls or []
        ]
    except ValueError:
        return None


class BfclGrader:
    """Grades an answer to a BFCL question with BFCL's own checker (one job, no state but the
    checker's functions, imported on first use)."""

    def __init__(self, checker_model: str = CHECKER_MODEL) -> None:
        self.checker_model = checker_model
        self._checker: Callable[..., dict[str, Any]] | None = None
        self._utils: Any = None
        self._python: Any = None

    def _load(self) -> None:
        if self._checker is None:
            _ensure_model_config(self.checker_model)
            self._checker = _bfcl("bfcl_eval.eval_checker.ast_eval.ast_checker").ast_checker
            self._utils = _bfcl("bfcl_eval.utils")
            self._python = _bfcl("bfcl_eval.constants.enums").Language.PYTHON

    def grade(self, question: BfclQuestion, message: AssistantMessage) -> Grade:
        """Whether ``message`` answers ``question`` right, as BFCL's runner decides."""
        self._load()
        decoded = decode_calls(message)
        if question.ground_truth is None:
            # irrelevance: right iff nothing decodes into a call (BFCL: undecodable = no call)
            called = decoded is not None and not self._utils.is_empty_output(decoded)
            if called:
                return Grade(False, "irrelevance:called_a_function", "a function was called")
            return Grade(True)
        if decoded is None:
            return Grade(False, "decode:arguments_not_json", "tool call arguments are not JSON")
        if not self._utils.is_function_calling_format_output(decoded):
            return Grade(False, "decode:not_a_call", "the answer is not in call format")
        assert self._checker is not None
        result = self._checker(
            list(question.functions),
            decoded,
            list(question.ground_truth),
            self._python,
            question.category,
            self.checker_model,
        )
        if result.get("valid"):
            return Grade(True)
        errors = result.get("error") or []
        return Grade(False, str(result.get("error_type") or "ast:invalid"), _one(errors))


def _one(errors: Sequence[Any]) -> str | None:
    if not errors:
        return None
    first = errors[0]
    text = first if isinstance(first, str) else json.dumps(first, default=str)
    return text[:500]


def _bfcl(module: str) -> Any:
    """Import a module of ``bfcl-eval``, with the hint to install it when it is missing."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name is not None and exc.name.split(".")[0] == "bfcl_eval":
            raise ConfigurationError(
                f"bfcl-eval is not installed: pip install --no-deps 'bfcl-eval=={BFCL_VERSION}'"
            ) from None
        raise


def _ensure_model_config(checker_model: str) -> None:
    """Make ``bfcl_eval.constants.model_config`` importable for the checker.

    The real module imports every vendor SDK BFCL can call; the checker reads one flag of it
    (whether a model's dots became underscores).  When the real module does not import (a
    ``--no-deps`` install), a stand-in answering that flag for ``checker_model`` is registered.
    """
    if _MODEL_CONFIG in sys.modules:
        return
    try:
        importlib.import_module(_MODEL_CONFIG)
        return
    except Exception:  # any failure of a vendor SDK's import: the flag is all we need
        pass
    stub = types.ModuleType(_MODEL_CONFIG)
    stub.MODEL_CONFIG_MAPPING = {  # type: ignore[attr-defined]
        checker_model.replace("_", "/"): types.SimpleNamespace(underscore_to_dot=True)
    }
    sys.modules[_MODEL_CONFIG] = stub


def parse_counts(items: Iterable[str]) -> dict[str, int | None]:
    """``CATEGORY`` or ``CATEGORY:N`` items (commas allowed) as a category → count mapping.

    Raises:
        ConfigurationError: a count that is not a positive integer.
    """
    counts: dict[str, int | None] = {}
    for item in items:
        for part in filter(None, (p.strip() for p in item.split(","))):
            name, _, number = part.partition(":")
            if number and (not number.isdigit() or int(number) < 1):
                raise ConfigurationError(f"--bfcl {part}: the count must be a positive integer")
            counts[name] = int(number) if number else None
    return counts
