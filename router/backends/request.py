"""Chat-completions requests and answers, typed as OpenAI checks them.

:class:`ChatRequest` is every field of OpenAI's ``POST /chat/completions`` that shapes the answer:
structured messages (content as a string or a list of content parts, assistant ``tool_calls``,
``tool`` results), ``tools`` and ``tool_choice``, ``response_format``, the sampling parameters,
limits, ``logprobs``, ``user`` and ``metadata``.  Types are strict, as OpenAI's are: a string is
never coerced into a number or a boolean (``"temperature": "hot"`` is an error), and unknown
fields are refused.  The sidecar's request body is the same model plus ``model``, ``stream``,
``stream_options`` and ``cascade``, so the SDK and the HTTP contract agree.

The answer is an :class:`AssistantMessage` (content, tool calls exactly as the model produced
them, refusal).  :func:`message_text` is its text form (what features, answer normalisation and
replay read), :func:`recorded_message` reads an answer back from recorded data.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    model_validator,
)

from router.errors import ConfigurationError

#: Fields a :class:`ChatRequest` refuses to carry: the cascade picks the model of each tier and
#: returns one answer; streaming belongs to the sidecar, which streams the final answer itself.
SIDECAR_ONLY_FIELDS = frozenset({"model", "stream", "stream_options", "cascade"})
#: The text form of an answer that calls tools starts with this key (see :func:`message_text`).
TOOL_CALLS_KEY = "tool_calls"


class _Strict(BaseModel):
    """OpenAI's checking: no coercion between types, no unknown fields."""

    model_config = ConfigDict(strict=True, extra="forbid", populate_by_name=True)


# ------------------------------------------------------------------ content parts


class TextPart(_Strict):
    type: Literal["text"]
    text: str


class ImageURL(_Strict):
    url: str
    detail: Literal["auto", "low", "high"] | None = None


class ImagePart(_Strict):
    type: Literal["image_url"]
    image_url: ImageURL


class InputAudio(_Strict):
    data: str
    format: Literal["wav", "mp3"]


class AudioPart(_Strict):
    type: Literal["input_audio"]
    input_audio: InputAudio


class FileRef(_Strict):
    file_data: str | None = None
    file_id: str | None = None
    filename: str | None = None


class FilePart(_Strict):
    type: Literal["file"]
    file: FileRef


class RefusalPart(_Strict):
    type: Literal["refusal"]
    refusal: str


UserPart = Annotated[TextPart | ImagePart | AudioPart | FilePart, Field(discriminator="type")]
AssistantPart = Annotated[TextPart | RefusalPart, Field(discriminator="type")]


def parts_text(content: str | Sequence[BaseModel] | None) -> str:
    """The text of a message content: the string, or its text parts joined (others skipped)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(p.text for p in content if isinstance(p, TextPart))


# ------------------------------------------------------------------ messages


class FunctionCall(_Strict):
    """A function call of the model: ``arguments`` is the JSON text as the model wrote it."""

    name: str
    arguments: str


class ToolCall(_Strict):
    """One tool call of an assistant message."""

    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class SystemMessage(_Strict):
    role: Literal["system"]
    content: str | list[TextPart]
    name: str | None = None


class DeveloperMessage(_Strict):
    role: Literal["developer"]
    content: str | list[TextPart]
    name: str | None = None


class UserMessage(_Strict):
    role: Literal["user"]
    content: str | list[UserPart]
    name: str | None = None


class AssistantMessage(_Strict):
    """An assistant turn: in a conversation, or the answer of a model.

    An answer has a string ``content`` (None when it only calls tools), its ``tool_calls`` with
    the ids, names and argument texts the model produced, and a ``refusal`` when it refused.
    """

    role: Literal["assistant"] = "assistant"
    content: str | list[AssistantPart] | None = None
    refusal: str | None = None
    tool_calls: list[ToolCall] | None = None
    name: str | None = None

    @property
    def text(self) -> str:
        """The content's text ("" when there is none)."""
        return parts_text(self.content)

    def to_openai(self) -> dict[str, Any]:
        """The message as the OpenAI API writes it (role and content always present)."""
        out = self.model_dump(mode="json", exclude_none=True)
        out.setdefault("content", None)
        return out


class ToolMessage(_Strict):
    role: Literal["tool"]
    content: str | list[TextPart]
    tool_call_id: str


ChatMessage = Annotated[
    SystemMessage | DeveloperMessage | UserMessage | AssistantMessage | ToolMessage,
    Field(discriminator="role"),
]
"""One message of a conversation, told apart by its ``role``."""

VALID_ROLES: tuple[str, ...] = ("system", "user", "assistant", "tool", "developer")
"""Roles a chat message may carry."""


# ------------------------------------------------------------------ tools and formats


class FunctionDefinition(_Strict):
    name: str = Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(_Strict):
    """A function the model may call; ``parameters`` is its arguments' JSON schema."""

    type: Literal["function"]
    function: FunctionDefinition


class NamedFunction(_Strict):
    name: str


class NamedToolChoice(_Strict):
    """``tool_choice`` naming the one function the model must call."""

    type: Literal["function"]
    function: NamedFunction


ToolChoice = Literal["none", "auto", "required"] | NamedToolChoice


class JsonSchemaSpec(_Strict):
    name: str = Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")
    description: str | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = None


class TextFormat(_Strict):
    type: Literal["text"]


class JsonObjectFormat(_Strict):
    type: Literal["json_object"]


class JsonSchemaFormat(_Strict):
    type: Literal["json_schema"]
    json_schema: JsonSchemaSpec


ResponseFormat = Annotated[
    TextFormat | JsonObjectFormat | JsonSchemaFormat, Field(discriminator="type")
]


# ------------------------------------------------------------------ the request

#: The largest answer a request may ask for (no model served here writes more).
MAX_TOKENS = 1_000_000
#: A ``logit_bias`` key: a token id, written as a decimal string.
TokenId = Annotated[str, StringConstraints(pattern=r"^[0-9]{1,10}$")]


class ChatRequest(BaseModel):
    """A chat-completions request: everything of OpenAI's that shapes the answer.

    Build one from a prompt or a message list with :meth:`of`; backends send it through whole
    (:meth:`to_openai`).  ``n`` above 1 is refused: the cascade returns one answer.
    """

    model_config = ConfigDict(strict=True, extra="forbid", populate_by_name=True)

    messages: list[ChatMessage] = Field(min_length=1)
    tools: list[Tool] | None = Field(None, max_length=128)
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    stop: str | list[str] | None = None
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, ge=0.0, le=1.0)
    seed: int | None = Field(None, ge=-(2**63), le=2**63 - 1)
    presence_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    logit_bias: dict[TokenId, int] | None = None
    max_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS)
    max_completion_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS)
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=20)
    n: int | None = Field(None, ge=1)
    user: str | None = None
    metadata: dict[str, str] | None = None
    store: bool | None = None
    service_tier: str | None = None
    reasoning_effort: Literal["minimal", "low", "medium", "high"] | None = None

    @model_validator(mode="before")
    @classmethod
    def _encodable(cls, data: Any) -> Any:
        # a lone surrogate cannot be sent to any model (UTF-8 has no encoding for it): refuse it
        # here rather than let a tokenizer fail on it deep inside a tier
        where = _unencodable(data, "")
        if where is not None:
            raise ValueError(f"{where or 'the request'} holds text that is not valid Unicode")
        return data

    @model_validator(mode="after")
    def _consistent(self) -> ChatRequest:
        if self.n is not None and self.n > 1:
            raise ValueError(
                f"n={self.n} is not supported: the cascade returns one answer per request "
                "(send the request n times)"
            )
        if isinstance(self.stop, list) and len(self.stop) > 4:
            raise ValueError("stop takes at most 4 sequences")
        if self.top_logprobs is not None and not self.logprobs:
            raise ValueError("top_logprobs needs logprobs: true")
        if self.metadata is not None and (
            len(self.metadata) > 16
            or any(len(k) > 64 or len(v) > 512 for k, v in self.metadata.items())
        ):
            raise ValueError("metadata holds at most 16 pairs, keys of 64 and values of 512 chars")
        bias = self.logit_bias or {}
        if any(not -100 <= v <= 100 for v in bias.values()):
            raise ValueError("logit_bias values must lie in [-100, 100]")
        names = [t.function.name for t in self.tools or ()]
        if len(set(names)) != len(names):
            raise ValueError("tools must have distinct function names")
        choice = self.tool_choice
        if isinstance(choice, NamedToolChoice) and choice.function.name not in names:
            raise ValueError(f"tool_choice names {choice.function.name!r}, which is not in tools")
        if choice == "required" and not names:
            raise ValueError("tool_choice 'required' needs tools")
        from router.validation import check_schemas  # the validator owns schema checking

        check_schemas(self)
        return self

    # ---------------------------------------------------------------- building
    @classmethod
    def of(
        cls, input: str | Sequence[Mapping[str, Any]] | ChatRequest, **params: Any
    ) -> ChatRequest:
        """A request from a prompt string (one user message), a list of messages (mappings in
        OpenAI's shape) or another request, with ``params`` (request fields) set on it.

        Fields given as None are left unset.

        Raises:
            ConfigurationError: the input or a field is invalid (names the field).
        """
        given = {k: v for k, v in params.items() if v is not None}
        if isinstance(input, ChatRequest):
            if not given:
                return input
            data = input.model_dump(mode="python", by_alias=True, exclude_unset=True)
            data["messages"] = input.messages
            return _validated(cls, {**data, **given})
        if isinstance(input, str):
            messages: Any = [{"role": "user", "content": input}]
        elif isinstance(input, Mapping | bytes | bytearray) or not isinstance(input, Sequence):
            raise ConfigurationError(
                f"input must be a string or a list of chat messages, not {type(input).__name__}"
            )
        else:
            messages = list(input)
            for i, item in enumerate(messages):
                if not isinstance(item, Mapping | BaseModel):
                    raise ConfigurationError(
                        f"chat message {i} must be a mapping with 'role' and 'content', "
                        f"not a {type(item).__name__}"
                    )
        if not messages:
            raise ConfigurationError("input is an empty list of chat messages; give at least one")
        return _validated(cls, {"messages": messages, **given})

    # ---------------------------------------------------------------- reading
    def to_openai(self) -> dict[str, Any]:
        """The request body as OpenAI takes it, without ``model``: every field that was set,
        unchanged (a backend adds its model name and its own defaults)."""
        body = self.model_dump(mode="json", by_alias=True, exclude_unset=True)
        body.pop("n", None)
        for name in SIDECAR_ONLY_FIELDS:
            body.pop(name, None)
        return body

    def wire_messages(self) -> list[dict[str, Any]]:
        """The messages as OpenAI takes them."""
        return [m.model_dump(mode="json", by_alias=True, exclude_unset=True) for m in self.messages]

    @property
    def token_limit(self) -> int | None:
        """The answer's token limit the request sets (``max_completion_tokens`` first)."""
        return self.max_completion_tokens or self.max_tokens

    @property
    def tool_names(self) -> tuple[str, ...]:
        return tuple(t.function.name for t in self.tools or ())

    def tool(self, name: str) -> Tool | None:
        """The offered tool called ``name`` (None: not offered)."""
        return next((t for t in self.tools or () if t.function.name == name), None)

    @property
    def constrains_answer(self) -> bool:
        """Whether the request constrains the answer's shape (tools the model may call, or a
        JSON response format), so that the validator has something to check."""
        offers_tools = bool(self.tools) and self.tool_choice != "none"
        fmt = self.response_format
        return offers_tools or isinstance(fmt, JsonObjectFormat | JsonSchemaFormat)


def _validated(cls: type[ChatRequest], data: dict[str, Any]) -> ChatRequest:
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        raise ConfigurationError(describe_error(exc)) from None


def _unencodable(value: Any, where: str) -> str | None:
    """The path of the first string in ``value`` that UTF-8 cannot encode (None: all can)."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return where
        return None
    if isinstance(value, Mapping):
        for key, item in value.items():
            found = _unencodable(key, where) if isinstance(key, str) else None
            found = found if found is not None else _unencodable(item, _join(where, str(key)))
            if found is not None:
                return found
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            found = _unencodable(item, f"{where}[{i}]")
            if found is not None:
                return found
    return None


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


_PART_TYPES = frozenset({"text", "image_url", "input_audio", "file", "refusal"})
_FORMAT_TYPES = frozenset({"text", "json_object", "json_schema"})
_TYPE_NAMES = frozenset({"str", "int", "float", "bool", "dict", "list", "none"})


def _is_branch(part: str, previous: int | str | None) -> bool:
    """Whether a pydantic location element names a union branch, not a field of the request."""
    if part in _TYPE_NAMES or "[" in part or part[:1].isupper():
        return True
    if isinstance(previous, int):  # a tagged item of a list: a message's role, a part's type
        return part in VALID_ROLES or part in _PART_TYPES
    return previous == "response_format" and part in _FORMAT_TYPES


def _split(loc: Sequence[int | str]) -> tuple[str, str | None]:
    """A pydantic error location as a request path (``messages[0].content``) and, for an error
    of one branch of a union that failed as a whole, the path of that union (else None)."""
    out, previous, union = "", None, None
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _is_branch(part, previous):
            # a tagged union picked its branch by the tag; any other union tried them all
            tagged = part in VALID_ROLES or part in _PART_TYPES or part in _FORMAT_TYPES
            if not tagged and union is None:
                union = out
        else:
            out = _join(out, part)
        previous = part
    return out, union


def error_location(loc: Sequence[int | str]) -> str:
    """A pydantic error location as a request path: ``messages[0].content``."""
    return _split(loc)[0]


def describe_error(exc: ValidationError) -> str:
    """The first error of a request's validation as one line naming the field."""
    return describe_errors(list(exc.errors()))


def describe_errors(errors: Sequence[Mapping[str, Any]]) -> str:
    """:func:`describe_error` of pydantic's error list (as ``ValidationError.errors()`` gives)."""
    first = errors[0]
    where, union = _split(first["loc"])
    kind = first["type"]
    if union is not None:
        # every branch of a union failed: say what each wanted, not only the first's complaint
        forms: list[str] = []
        for error in errors:
            path, other = _split(error["loc"])
            if other != union:
                continue
            inner = path[len(union) :].lstrip(".")
            form = f"{inner}: {error['msg']}" if inner else str(error["msg"])
            if form not in forms:
                forms.append(form)
        return f"{union}: no accepted form fits ({'; or '.join(forms[:3])})"
    if kind == "union_tag_invalid":
        tag = first.get("input", {}).get("role") if isinstance(first.get("input"), dict) else None
        if tag is not None:
            return f"{where}: role {tag!r} is not one of {', '.join(VALID_ROLES)}"
    if kind == "union_tag_not_found" and first["ctx"].get("discriminator") == "'role'":
        return f"{where}: a chat message needs a 'role' ({', '.join(VALID_ROLES)})"
    if kind == "missing":
        return f"{where}: field required"
    if kind == "extra_forbidden":
        return f"{where}: unknown field"
    message = str(first["msg"]).removeprefix("Value error, ")
    return f"{where}: {message}" if where else message


# ------------------------------------------------------------------ the text form of answers


def message_text(message: AssistantMessage) -> str:
    """The text form of an answer, defined once for features, normalisation and replay.

    The content when it holds text; else, for an answer that calls tools, canonical JSON of the
    calls, ``{"tool_calls":[{"arguments":{…},"name":"…"}]}`` (arguments parsed when they are
    JSON, keys sorted, no whitespace, ids left out: two models making the same call read alike);
    else the refusal; else "".
    """
    text = message.text
    if text.strip():
        return text
    if message.tool_calls:
        calls = [
            {"name": call.function.name, "arguments": _parsed(call.function.arguments)}
            for call in message.tool_calls
        ]
        return json.dumps(
            {TOOL_CALLS_KEY: calls}, sort_keys=True, separators=(",", ":"), ensure_ascii=False
        )
    return message.refusal or text


def _parsed(arguments: str) -> Any:
    try:
        return json.loads(arguments)
    except ValueError:
        return arguments


def recorded_message(response: str | None) -> AssistantMessage:
    """An answer read back from recorded data: a ``response`` that is the JSON of an assistant
    message with ``tool_calls`` becomes that message; any other text is its content."""
    text = response if isinstance(response, str) else ""
    if text.lstrip().startswith("{") and f'"{TOOL_CALLS_KEY}"' in text:
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        if isinstance(data, dict) and isinstance(data.get(TOOL_CALLS_KEY), list):
            try:
                return AssistantMessage.model_validate({"role": "assistant", **data})
            except ValidationError:
                pass
    return AssistantMessage(content=text)


def record_text(message: AssistantMessage) -> str:
    """What recorded data stores as an answer's ``response``: the content of a plain answer,
    the JSON of the whole message for one that calls tools (:func:`recorded_message` reads
    both back)."""
    if not message.tool_calls:
        return message.text
    return json.dumps(message.to_openai(), ensure_ascii=False)


def answer_text(response: str | None) -> str | None:
    """The text form (:func:`message_text`) of a recorded ``response`` (None stays None)."""
    if response is None:
        return None
    if f'"{TOOL_CALLS_KEY}"' not in response:
        return response
    return message_text(recorded_message(response))
