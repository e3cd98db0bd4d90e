"""A backend that answers from recorded outcomes (offline evaluation, tests, the default)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from router.backends.base import Completion
from router.backends.messages import (
    ChatInput,
    as_request,
    estimate_tokens,
    normalise_text,
    prompt_chars,
    step_text,
)
from router.backends.request import ChatRequest, UserMessage, parts_text, recorded_message
from router.errors import (
    BackendError,
    ConfigurationError,
)
from router.opinions import MAX_SAMPLES, sample_model_names

if TYPE_CHECKING:
    import pandas as pd

REPLAY_COLUMNS: tuple[str, ...] = (
    "prompt_id",
    "prompt",
    "model",
    "score",
    "response",
    "input_tokens",
    "output_tokens",
    "cost_usd",
)


@dataclass(frozen=True)
class _Recorded:
    prompt_id: str
    text: str
    input_tokens: int | None
    output_tokens: int | None
    cost_usd: float | None
    score: float | None


def _optional_float(value: Any) -> float | None:
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


def _optional_int(value: Any) -> int | None:
    number = _optional_float(value)
    return None if number is None else round(number)


class ReplayBackend:
    """A backend that answers from recorded outcomes of one model.

    ``frame`` has the long schema (one row per prompt and model, columns
    ``prompt_id, prompt, model, score, response, input_tokens, output_tokens, cost_usd``).
    Prompts are matched after normalising whitespace; the request's step text
    (:func:`~router.backends.messages.step_text`, what recorded data stores as the prompt) is
    tried first, then the text of the last user message alone.  When a prompt was recorded
    more than once for the model, the first row wins.  A recorded ``response`` that is the JSON
    of an assistant message with ``tool_calls`` is replayed as those tool calls.

    ``latency_s`` is the latency reported in each :class:`Completion` (a profile; nothing
    sleeps).  Rows of the models ``<model>#s1``, ``<model>#s2``, … (recorded extra samples,
    :mod:`router.opinions`) answer :meth:`sample`.
    """

    #: What traces call this backend (``gen_ai.provider.name``): recorded answers, no server.
    provider_name = "replay"

    def __init__(self, frame: pd.DataFrame, model: str, latency_s: float = 0.0) -> None:
        missing = [c for c in REPLAY_COLUMNS if c not in frame.columns]
        if missing:
            raise ConfigurationError(
                f"replay data lacks column(s) {', '.join(missing)}; "
                f"expected {', '.join(REPLAY_COLUMNS)}"
            )
        if latency_s < 0:
            raise ConfigurationError(f"latency_s must be >= 0, got {latency_s}")
        rows = frame[frame["model"] == model]
        if rows.empty:
            known = sorted(str(m) for m in frame["model"].dropna().unique())
            raise ConfigurationError(
                f"model {model} has no rows in the replay data "
                f"(models there: {', '.join(known) or 'none'})"
            )
        self.model = model
        self.latency_s = float(latency_s)
        self._answers = self._index(rows)
        self._samples: list[dict[str, _Recorded]] = []
        for name in sample_model_names(model, MAX_SAMPLES):
            sample_rows = frame[frame["model"] == name]
            if sample_rows.empty:
                break
            self._samples.append(self._index(sample_rows))

    @staticmethod
    def _index(rows: pd.DataFrame) -> dict[str, _Recorded]:
        answers: dict[str, _Recorded] = {}
        columns = [rows[c].tolist() for c in REPLAY_COLUMNS]
        for prompt_id, prompt, _, score, response, in_tok, out_tok, cost in zip(
            *columns, strict=True
        ):
            if not isinstance(prompt, str):
                continue
            key = normalise_text(prompt)
            if key in answers:
                continue
            answers[key] = _Recorded(
                prompt_id=str(prompt_id),
                text=response if isinstance(response, str) else "",
                input_tokens=_optional_int(in_tok),
                output_tokens=_optional_int(out_tok),
                cost_usd=_optional_float(cost),
                score=_optional_float(score),
            )
        return answers

    def __repr__(self) -> str:
        return f"ReplayBackend(model={self.model!r}, prompts={len(self._answers)})"

    @property
    def recorded_samples(self) -> int:
        """How many extra samples per prompt the replay data records (0: none)."""
        return len(self._samples)

    def __len__(self) -> int:
        return len(self._answers)

    def recorded_prompt_id(self, prompt: str) -> str | None:
        """The prompt id recorded for this prompt text (None: not recorded)."""
        found = self._answers.get(normalise_text(prompt))
        return None if found is None else found.prompt_id

    @classmethod
    def from_files(
        cls,
        paths: str | Path | Sequence[str | Path],
        model: str,
        latency_s: float = 0.0,
        samples: int = 0,
    ) -> ReplayBackend:
        """Load recorded outcomes of ``model`` (and of its ``samples`` recorded extra samples)
        from files via :func:`router.data.load_outcomes`."""
        from router.data import load_outcomes

        path_list: list[str | Path] = [paths] if isinstance(paths, str | Path) else list(paths)
        frame = load_outcomes(path_list, models=[model, *sample_model_names(model, samples)])
        return cls(frame, model, latency_s=latency_s)

    @staticmethod
    def _lookup(answers: dict[str, _Recorded], request: ChatRequest) -> _Recorded | None:
        found = answers.get(normalise_text(step_text(request)))
        if found is not None:
            return found
        users = [parts_text(m.content) for m in request.messages if isinstance(m, UserMessage)]
        if users:
            return answers.get(normalise_text(users[-1]))
        return None

    def complete(
        self, request: ChatRequest | ChatInput, *, max_tokens: int | None = None
    ) -> Completion:
        """Return the recorded answer for ``request``; ``max_tokens`` is ignored.

        Raises:
            ConfigurationError: ``request`` is not a valid chat request.
            BackendError: no answer of this model was recorded for the input.
        """
        return self._answer(self._answers, as_request(request), self.model)

    def _answer(
        self, answers: dict[str, _Recorded], request: ChatRequest, model: str
    ) -> Completion:
        found = self._lookup(answers, request)
        if found is None:
            raise BackendError(
                f"no recorded answer of {model} for this input "
                f"(replay covers {len(answers)} prompts)"
            )
        input_tokens = found.input_tokens
        if input_tokens is None:
            input_tokens = estimate_tokens(prompt_chars(request))
        output_tokens = found.output_tokens
        if output_tokens is None:
            output_tokens = estimate_tokens(found.text)
        message = recorded_message(found.text)
        return Completion(
            message=message,
            model=model,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            latency_s=self.latency_s,
            logprobs=None,
            cost_usd=found.cost_usd,
            score=found.score,
            finish_reason="tool_calls" if message.tool_calls else "stop",
        )

    async def acomplete(
        self, request: ChatRequest | ChatInput, *, max_tokens: int | None = None
    ) -> Completion:
        """Async form of :meth:`complete` (answers immediately)."""
        return self.complete(request, max_tokens=max_tokens)

    def sample(
        self,
        request: ChatRequest | ChatInput,
        k: int,
        temperature: float,
        *,
        max_tokens: int | None = None,
    ) -> list[Completion]:
        """The first ``k`` recorded extra samples for ``messages`` (``temperature`` is what
        they were recorded at; it is not checked).

        Raises:
            ConfigurationError: fewer than ``k`` samples per prompt are recorded.
            BackendError: no sample of this model was recorded for the input.
        """
        if k > len(self._samples):
            raise ConfigurationError(
                f"replay data records {len(self._samples)} extra sample(s) of {self.model} per "
                f"prompt, {k} asked (load it with ReplayBackend.from_files(..., samples={k}))"
            )
        names = sample_model_names(self.model, k)
        checked = as_request(request)
        return [
            self._answer(answers, checked, name)
            for answers, name in zip(self._samples[:k], names, strict=True)
        ]

    async def asample(
        self,
        request: ChatRequest | ChatInput,
        k: int,
        temperature: float,
        *,
        max_tokens: int | None = None,
    ) -> list[Completion]:
        """Async form of :meth:`sample` (answers immediately)."""
        return self.sample(request, k, temperature, max_tokens=max_tokens)
