"""The validator stage: a deterministic check that an answer has the shape its request asks for.

Whenever a request constrains the answer (tools the model may call, a JSON response format),
the cascade checks each answer below the top tier before any probability is read:

* a tool call must name a tool of the request, its arguments must parse as a JSON object and
  validate against that tool's ``parameters`` schema (required keys, types, enums, …);
* ``tool_choice`` naming a function, or ``"required"``, must be honoured (``"none"``: no call),
  and ``parallel_tool_calls: false`` allows one call at most;
* a ``json_object`` answer must parse as a JSON object, a ``json_schema`` one must also
  validate against the schema.

An invalid answer escalates whatever the acceptance probabilities say.  Schemas are checked
and compiled by the ``jsonschema`` package (Draft 2020-12 unless the schema names its draft)
and cached by their canonical JSON, so a request that repeats its tools pays for them once.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from router.backends.request import AssistantMessage, ChatRequest

#: The feature value of a request whose answer shape is not constrained.
UNCONSTRAINED = math.nan


@dataclass(frozen=True)
class Verdict:
    """What the validator found: ``valid`` is None where the request constrains nothing."""

    valid: bool | None
    reason: str | None = None

    @property
    def feature(self) -> float:
        """The answer feature: 1.0 valid, 0.0 invalid, NaN (missing) unconstrained."""
        return UNCONSTRAINED if self.valid is None else float(self.valid)

    @property
    def invalid(self) -> bool:
        return self.valid is False


NOT_CONSTRAINED = Verdict(None)
VALID = Verdict(True)


def validate_answer(request: ChatRequest, message: AssistantMessage) -> Verdict:
    """Check ``message`` against the shape ``request`` asks for (see the module docstring)."""
    from router.backends.request import JsonObjectFormat, JsonSchemaFormat, NamedToolChoice

    if not request.constrains_answer and not message.tool_calls:
        return NOT_CONSTRAINED
    choice = request.tool_choice
    named = choice.function.name if isinstance(choice, NamedToolChoice) else None
    calls = message.tool_calls or []
    if calls:
        if not request.tools:
            return Verdict(False, f"calls {calls[0].function.name!r} but no tools were offered")
        if choice == "none":
            return Verdict(False, "calls a tool although tool_choice is 'none'")
        if request.parallel_tool_calls is False and len(calls) > 1:
            return Verdict(False, f"makes {len(calls)} calls although parallel_tool_calls is false")
        for call in calls:
            name = call.function.name
            if named is not None and name != named:
                return Verdict(False, f"calls {name!r} although tool_choice names {named!r}")
            tool = request.tool(name)
            if tool is None:
                offered = ", ".join(request.tool_names)
                return Verdict(False, f"calls {name!r}, which is not among the tools ({offered})")
            problem = _check_json(call.function.arguments, tool.function.parameters, "arguments")
            if problem is not None:
                return Verdict(False, f"{name}: {problem}")
        return VALID
    if named is not None or choice == "required":
        what = f"a call of {named!r}" if named else "a tool call"
        found = "a refusal" if message.refusal and not message.text.strip() else "text"
        return Verdict(False, f"answers with {found} although tool_choice requires {what}")
    fmt = request.response_format
    if isinstance(fmt, JsonObjectFormat | JsonSchemaFormat):
        if message.refusal and not message.text.strip():
            return Verdict(False, "refuses instead of answering in JSON")
        schema = fmt.json_schema.schema_ if isinstance(fmt, JsonSchemaFormat) else None
        problem = _check_json(message.text, schema, "the answer")
        return VALID if problem is None else Verdict(False, problem)
    return VALID


def _check_json(text: str, schema: dict[str, Any] | None, what: str) -> str | None:
    """Why ``text`` is not a JSON object fitting ``schema`` (None: it is)."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        return f"{what} is not JSON ({exc.msg} at char {exc.pos})"
    if not isinstance(value, dict):
        return f"{what} is JSON but not an object"
    if schema is None:
        return None
    validator = compiled(_canonical(schema))
    if validator.is_valid(value):
        return None  # the common case: no error report to build
    error = _first_error(validator, value)
    if error is None:
        return None
    path = "".join(f"[{p!r}]" for p in error.absolute_path)
    return f"{what}{path} do not fit the schema: {error.message}"[:500]


def _first_error(validator: Any, value: Any) -> Any:
    import jsonschema

    errors = list(validator.iter_errors(value))
    return jsonschema.exceptions.best_match(errors) if errors else None


def _canonical(schema: dict[str, Any]) -> str:
    return json.dumps(schema, sort_keys=True, separators=(",", ":"))


@functools.lru_cache(maxsize=512)
def compiled(schema_json: str) -> Any:
    """The ``jsonschema`` validator of a schema given as canonical JSON (checked, cached)."""
    import jsonschema

    schema = json.loads(schema_json)
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    cls.check_schema(schema)
    return cls(schema)


def check_schema(schema: dict[str, Any], where: str) -> None:
    """Refuse a schema that is not a valid JSON schema (raises ValueError naming ``where``)."""
    import jsonschema

    try:
        compiled(_canonical(schema))
    except jsonschema.exceptions.SchemaError as exc:
        raise ValueError(f"{where} is not a valid JSON schema: {exc.message}") from None
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where} is not a valid JSON schema: {exc}") from None


def check_schemas(request: ChatRequest) -> None:
    """Refuse a request whose tools or response format carry an invalid JSON schema."""
    from router.backends.request import JsonSchemaFormat

    for i, tool in enumerate(request.tools or ()):
        if tool.function.parameters is not None:
            check_schema(tool.function.parameters, f"tools[{i}].function.parameters")
    fmt = request.response_format
    if isinstance(fmt, JsonSchemaFormat) and fmt.json_schema.schema_ is not None:
        check_schema(fmt.json_schema.schema_, "response_format.json_schema.schema")
