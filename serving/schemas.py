"""The response bodies of the sidecar, as pydantic models: the OpenAPI document is built from
them, and the tests check every response the service sends against that document."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

Number = float | None  # a probability or threshold: null where not applicable (NaN)


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorBody(BaseModel):
    """OpenAI's error body: every 4xx and 5xx the service sends."""

    error: ErrorDetail


# ------------------------------------------------------------------ chat completions


class FunctionCallOut(BaseModel):
    name: str
    arguments: str = Field(description="the JSON text of the arguments, as the model wrote it")


class ToolCallOut(BaseModel):
    id: str
    type: Literal["function"]
    function: FunctionCallOut


class AssistantMessageOut(BaseModel):
    """The answering model's message."""

    role: Literal["assistant"]
    content: str | None
    refusal: str | None = None
    tool_calls: list[ToolCallOut] | None = None


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None = None


class TokenLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None = None
    top_logprobs: list[TopLogprob] = Field(default_factory=list)


class ChoiceLogprobs(BaseModel):
    content: list[TokenLogprob] | None = None
    refusal: list[TokenLogprob] | None = None


FinishReason = Literal["stop", "length", "tool_calls", "content_filter", "function_call"]


class Choice(BaseModel):
    index: int
    message: AssistantMessageOut
    finish_reason: FinishReason
    logprobs: ChoiceLogprobs | None


class Usage(BaseModel):
    """Tokens of every model that ran for the request (tiers, peers, samples)."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ModelUsage(Usage):
    cost_usd: float


class CascadeSummary(BaseModel):
    """How the cascade reached the answer."""

    tier: str = Field(description="the tier that answered")
    path: str = Field(description="e.g. small→verified, small→invalid→frontier")
    step: str
    target: str
    certificate: dict[str, Any] | None = Field(
        None,
        description="what was certified for the target: risk delta, the certified bound, the "
        "operating point (null for a router saved before certification)",
    )
    router_version: str | None
    cost_usd: float
    router_latency_s: float
    probabilities: dict[str, Number]
    failures: dict[str, str] = Field(description="tiers (or opinions) that failed, and why")
    invalid: dict[str, str] = Field(description="answers the validator refused, and why")
    usage: dict[str, ModelUsage] = Field(description="tokens and cost per model that ran")


class ChatCompletionOut(BaseModel):
    """An OpenAI ``chat.completion`` with the ``cascade`` object."""

    id: str
    object: Literal["chat.completion"]
    created: int
    model: str = Field(description="the model that answered")
    choices: list[Choice]
    usage: Usage
    cascade: CascadeSummary


class DeltaFunction(BaseModel):
    name: str | None = None
    arguments: str | None = None


class DeltaToolCall(BaseModel):
    index: int
    id: str | None = None
    type: Literal["function"] | None = None
    function: DeltaFunction | None = None


class Delta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None
    refusal: str | None = None
    tool_calls: list[DeltaToolCall] | None = None


class ChunkChoice(BaseModel):
    index: int
    delta: Delta
    finish_reason: FinishReason | None
    logprobs: ChoiceLogprobs | None


class ChatCompletionChunkOut(BaseModel):
    """One ``data:`` event of a streamed answer (the stream ends with ``data: [DONE]``)."""

    id: str
    object: Literal["chat.completion.chunk"]
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None


# ------------------------------------------------------------------ the other endpoints


class RouteDecision(BaseModel):
    """``POST /v1/route``: the decision at the first tier, no model called."""

    id: str
    object: Literal["cascade.decision"]
    step: str
    tier: str = Field(description="the tier to call first")
    action: Literal["call", "skip", "accept", "escalate"]
    p_accept: Number
    p_next: Number
    gain: Number
    p_accept_answer: Number
    lam: float | Literal["inf", "-inf"] | None
    skip_threshold: Number
    ask_opinion: bool
    opinion_source: str | None
    path: str
    valid: bool | None = Field(description="the validator's verdict on the answer, if any")
    invalid_reason: str | None
    certificate: dict[str, Any] | None = Field(
        None, description="what was certified for the target (see the chat answer's cascade)"
    )
    router_version: str
    target: str | None


class FeedbackAck(BaseModel):
    object: Literal["cascade.feedback"]
    request_id: str
    accepted: bool
    score: float | None
    source: str | None
    stored: Literal[True]


class ModelCard(BaseModel):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"]
    data: list[ModelCard]


class Health(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    status: Literal["ready", "unready", "loading"]
    router_version: str | None = None
    tiers: list[str] | None = None
    upstreams: dict[str, str] | None = Field(None, description="per tier: ok, or why not")
