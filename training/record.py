"""Record a live model's answers (and extra samples of them) on the prompts of a dataset.

A router learns from recorded outcomes; a model nobody has recorded (your own small model
behind ``vllm serve`` or llama.cpp's server) has none.  :func:`record_answers` asks it every
prompt of a dataset once at temperature 0 (the answer a first tier gives) and, with
``samples=k``, ``k`` more times at a temperature (the extra samples a router may buy as second
opinions, :mod:`router.opinions`), and grades each answer against the answers the data already
records as correct for the same prompt, compared by the step's answer kind
(:mod:`router.answers.normalise`).  Prompts with no recorded correct answer cannot be graded and are
left out (counted).  The rows it writes are in the long schema, beside the dataset's own rows
for the same prompts, so the file trains a router on its own.

:func:`record_tool_answers` records tool-calling requests instead: BFCL questions
(:mod:`training.bfcl`) sent with their tools, each answer graded by BFCL's own checker.

Writing is incremental: the output is rewritten every ``checkpoint_every`` prompts, and a run
that finds its output already there (same model) carries on where it stopped.
"""

from __future__ import annotations

import collections
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from router.answers.normalise import NormaliserRegistry
from router.backends import Completion, OpenAIBackend, ReplayBackend
from router.data import SCHEMA_COLUMNS, load_outcomes, write_outcomes
from router.errors import ConfigurationError, DataValidationError
from router.opinions import SAMPLE_SEPARATOR, check_samples, sample_model_names
from training.bfcl import BfclGrader, BfclQuestion, Grade


@dataclass(frozen=True)
class RecordStats:
    """What one recording run did."""

    prompts_recorded: int  # prompts answered in this run
    prompts_resumed: int  # prompts already in the output from an earlier run
    prompts_ungraded: int  # prompts left out: no recorded correct answer to grade against
    accuracy: float  # share of this model's temperature-0 answers graded correct (all prompts)
    sample_accuracy: float  # the same for the extra samples (NaN without samples)
    output: Path
    per_step: dict[str, int] = field(default_factory=dict)


def reference_answers(frame: pd.DataFrame, registry: NormaliserRegistry) -> dict[str, str]:
    """Per prompt id, the answer the recorded correct answers settle on (their most common
    normalised form); prompts without a comparable correct answer are absent."""
    correct = frame[frame["score"] >= 0.5]
    out: dict[str, str] = {}
    for (prompt_id, step), group in correct.groupby(["prompt_id", "step"], sort=False):
        normaliser = registry.for_step(str(step))
        keys = [normaliser.normalise(r) for r in group["response"].tolist()]
        counted = collections.Counter(k for k in keys if k is not None)
        if counted:
            out[str(prompt_id)] = counted.most_common(1)[0][0]
    return out


def _row(
    template: Mapping[str, Any],
    model: str,
    completion: Completion,
    score: float,
    price: tuple[float, float] | None,
) -> dict[str, Any]:
    cost = 0.0
    if price is not None:
        cost = (completion.input_tokens * price[0] + completion.output_tokens * price[1]) / 1e6
    return {
        "source": f"recorded:{template['source']}",
        "task": template["task"],
        "split": template.get("split"),
        "prompt_id": template["prompt_id"],
        "prompt": template["prompt"],
        "model": model,
        "score": float(score),
        "response": completion.text,
        "input_tokens": int(completion.input_tokens),
        "output_tokens": int(completion.output_tokens),
        "cost_usd": float(cost),
        "cost_is_estimated": True,
    }


def record_answers(
    frame: pd.DataFrame,
    backend: OpenAIBackend | ReplayBackend,
    output: Path,
    model: str,
    samples: int = 0,
    temperature: float = 0.7,
    answer_kinds: Mapping[str, str] | None = None,
    prices: Mapping[str, tuple[float, float]] | None = None,
    limit: int | None = None,
    seed: int = 0,
    max_tokens: int = 16,
    checkpoint_every: int = 50,
    progress: bool = False,
    on_prompt: Callable[[int], None] | None = None,
) -> RecordStats:
    """Ask ``backend`` every gradable prompt of ``frame`` (a loaded long-schema frame; at most
    ``limit`` of them, drawn with ``seed``) and write the graded rows of ``model`` (and of its
    ``samples`` extra samples, ``<model>#s1`` …) with the frame's rows for the same prompts to
    ``output`` (Parquet).

    Raises:
        ConfigurationError: bad arguments, or an output recorded for another model.
        BackendError: the model's server failed (what was recorded so far is kept on disk).
    """
    check_samples(samples, temperature)
    if samples == 0 and temperature <= 0:
        raise ConfigurationError("temperature must be positive")
    if model in set(frame["model"]):
        raise ConfigurationError(
            f"the data already records {model}: name the recorded model differently"
        )
    registry = NormaliserRegistry(dict(answer_kinds or {}))
    reference = reference_answers(frame, registry)
    firsts = frame.drop_duplicates("prompt_id")
    gradable = firsts[firsts["prompt_id"].astype(str).isin(reference)]
    ungraded = len(firsts) - len(gradable)
    if limit is not None and limit < len(gradable):
        # a prefix of one seeded permutation: a larger limit extends a smaller one's prompts
        pick = np.sort(np.random.default_rng(seed).permutation(len(gradable))[:limit])
        gradable = gradable.iloc[pick]
    names = [model, *sample_model_names(model, samples)]
    done_rows = _resume(output, names)
    done_ids = {str(p) for p in done_rows["prompt_id"]} if len(done_rows) else set()
    todo = gradable[~gradable["prompt_id"].astype(str).isin(done_ids)]
    price = (prices or {}).get(model)
    new_rows: list[dict[str, Any]] = []
    from tqdm.auto import tqdm

    def flush() -> None:
        recorded = pd.concat([done_rows, pd.DataFrame(new_rows)], ignore_index=True)
        ids = set(recorded["prompt_id"].astype(str))
        carried = frame[frame["prompt_id"].astype(str).isin(ids)]
        write_outcomes(
            pd.concat([carried[list(SCHEMA_COLUMNS)], recorded], ignore_index=True), output
        )

    try:
        for k, template in enumerate(
            tqdm(
                todo.to_dict("records"),
                desc=f"recording {model}",
                unit="prompt",
                disable=not progress,
            )
        ):
            messages = [{"role": "user", "content": str(template["prompt"])}]
            answer = backend.complete(messages, max_tokens=max_tokens)
            extra = (
                backend.sample(messages, samples, temperature, max_tokens=max_tokens)
                if samples
                else []
            )
            normaliser = registry.for_step(str(template["step"]))
            gold = reference[str(template["prompt_id"])]
            for name, completion in zip(names, [answer, *extra], strict=True):
                score = float(normaliser.normalise(completion.text) == gold)
                new_rows.append(
                    _row({str(k): v for k, v in template.items()}, name, completion, score, price)
                )
            if on_prompt is not None:
                on_prompt(k)
            if checkpoint_every and (k + 1) % checkpoint_every == 0:
                flush()
    finally:
        if new_rows:
            flush()
    everything = pd.concat([done_rows, pd.DataFrame(new_rows)], ignore_index=True)
    first: pd.Series | list[float] = (
        everything[everything["model"] == model]["score"] if len(everything) else []
    )
    extra_scores: pd.Series | list[float] = (
        everything[everything["model"].isin(names[1:])]["score"] if samples else []
    )
    per_step = (
        frame[frame["prompt_id"].astype(str).isin(set(everything["prompt_id"].astype(str)))]
        .drop_duplicates("prompt_id")["step"]
        .value_counts()
        .to_dict()
        if len(everything)
        else {}
    )
    return RecordStats(
        prompts_recorded=len(todo),
        prompts_resumed=len(done_ids),
        prompts_ungraded=ungraded,
        accuracy=float(np.mean(first)) if len(first) else math.nan,
        sample_accuracy=float(np.mean(extra_scores)) if len(extra_scores) else math.nan,
        output=output,
        per_step={str(k): int(v) for k, v in per_step.items()},
    )


def _earlier_outcomes(output: Path) -> pd.DataFrame | None:
    """What an earlier recording wrote to ``output`` (None when there is no such file)."""
    if not output.exists():
        return None
    try:
        return load_outcomes([output])
    except DataValidationError as exc:
        raise ConfigurationError(
            f"{output} exists but is not outcome data ({exc}): remove it or pick another output"
        ) from exc


def _resume(output: Path, names: Sequence[str]) -> pd.DataFrame:
    """The rows of ``names`` an earlier run wrote to ``output`` (complete prompts only)."""
    earlier = _earlier_outcomes(output)
    if earlier is None:
        return pd.DataFrame(columns=list(SCHEMA_COLUMNS))
    models = set(earlier["model"])
    ours = earlier[earlier["model"].isin(names)]
    if ours.empty:
        raise ConfigurationError(
            f"{output} exists and records none of {', '.join(names)}: remove it or pick "
            "another output (resuming needs the same model and sample count)"
        )
    recorded_samples = {m for m in models if m.startswith(f"{names[0]}{SAMPLE_SEPARATOR}")}
    if recorded_samples != set(names[1:]):
        raise ConfigurationError(
            f"{output} records {len(recorded_samples)} extra samples of {names[0]}, "
            f"{len(names) - 1} asked: remove it or ask the same number"
        )
    complete = ours.groupby("prompt_id")["model"].nunique()
    keep = set(complete[complete == len(names)].index.astype(str))
    rows = ours[ours["prompt_id"].astype(str).isin(keep)]
    return rows[list(SCHEMA_COLUMNS)].reset_index(drop=True)


@dataclass(frozen=True)
class ToolRecordStats:
    """What one tool-call recording run did."""

    questions_recorded: int  # questions answered in this run
    questions_resumed: int  # questions already in the output from an earlier run
    accuracy: float  # share of this model's answers graded right (all questions in the output)
    failed_calls: int  # answers recorded wrong because the call timed out or the server failed
    output: Path
    per_category: dict[str, tuple[int, float]] = field(default_factory=dict)  # n, accuracy


def grades_path(output: Path) -> Path:
    """Where :func:`record_tool_answers` logs each answer's request and grade (JSON lines)."""
    return output.with_name(f"{output.stem}.grades.jsonl")


def record_tool_answers(
    questions: Sequence[BfclQuestion],
    backend: OpenAIBackend | ReplayBackend,
    output: Path,
    model: str,
    grader: BfclGrader,
    prices: Mapping[str, tuple[float, float]] | None = None,
    max_tokens: int = 256,
    checkpoint_every: int = 5,
    settle: Callable[[], None] | None = None,
    progress: bool = False,
    on_prompt: Callable[[int], None] | None = None,
) -> ToolRecordStats:
    """Ask ``backend`` every BFCL question (a tool-calling request, :mod:`training.bfcl`) and
    write the graded rows of ``model`` to ``output`` (Parquet, the long schema: ``task`` is the
    BFCL category, step kind :data:`~training.bfcl.STEP`, ``prompt`` the router's input window
    of the request, ``response`` the answer as recorded data stores it, ``valid`` the validator's
    verdict), resuming where an earlier run of the same model stopped.

    A call that times out or that the server fails (HTTP 5xx, or a request it refuses) is
    recorded as a wrong answer with an empty response and ``valid`` 0 (as the live cascade
    escalates a failed tier); ``settle`` is then called before the
    next question (e.g. to wait until a server still generating the abandoned answer is free).
    Each answer's request, raw message and grade also go to :func:`grades_path` (JSON lines).

    Raises:
        ConfigurationError: the output exists and records another model.
        BackendUnavailableError: the server cannot be reached (what was recorded is kept).
    """
    from router.backends import step_text
    from router.backends.request import AssistantMessage, record_text
    from router.data.schema import VALID_COLUMN
    from router.errors import BackendError, BackendTimeoutError, BackendUnavailableError
    from router.validation import Verdict, validate_answer
    from training.bfcl import STEP

    done_rows = _resume_tools(output, model)
    done_ids = {str(p) for p in done_rows["prompt_id"]} if len(done_rows) else set()
    todo = [q for q in questions if q.id not in done_ids]
    price = (prices or {}).get(model)
    new_rows: list[dict[str, Any]] = []
    failed = 0
    log_path = grades_path(output)
    from tqdm.auto import tqdm

    def rows_so_far() -> pd.DataFrame:
        frames = [f for f in (done_rows, pd.DataFrame(new_rows)) if len(f)]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    def flush() -> None:
        write_outcomes(rows_so_far(), output)

    try:
        with log_path.open("a", encoding="utf-8") as log:
            for k, question in enumerate(
                tqdm(todo, desc=f"recording {model}", unit="question", disable=not progress)
            ):
                failure: str | None = None
                try:
                    completion = backend.complete(question.request, max_tokens=max_tokens)
                except BackendTimeoutError as exc:
                    failure, completion = f"timeout: {exc}", None
                except BackendUnavailableError:
                    raise
                except BackendError as exc:
                    failure, completion = f"server_error: {exc}", None
                if completion is None:
                    failed += 1
                    message = AssistantMessage(content="")
                    grade = Grade(False, (failure or "").split(":", 1)[0], failure)
                    tokens, latency = (0, 0), None
                else:
                    message = completion.message
                    grade = grader.grade(question, message)
                    tokens = (completion.input_tokens, completion.output_tokens)
                    latency = round(completion.latency_s, 3)
                # a failed call has no answer to check; recorded as refused, it escalates in the
                # offline walk as the live cascade escalates a failed small tier
                verdict = (
                    validate_answer(question.request, message)
                    if completion is not None
                    else Verdict(False, "no answer: the call failed")
                )
                cost = 0.0
                if price is not None:
                    cost = (tokens[0] * price[0] + tokens[1] * price[1]) / 1e6
                new_rows.append(
                    {
                        "source": "recorded:bfcl",
                        "task": question.category,
                        "step": STEP,
                        "split": None,
                        "prompt_id": question.id,
                        "prompt": step_text(question.request),
                        "model": model,
                        "score": float(grade.correct),
                        "response": record_text(message),
                        "input_tokens": int(tokens[0]),
                        "output_tokens": int(tokens[1]),
                        "cost_usd": float(cost),
                        "cost_is_estimated": True,
                        VALID_COLUMN: verdict.feature,
                    }
                )
                log.write(
                    json.dumps(
                        {
                            "id": question.id,
                            "category": question.category,
                            "model": model,
                            "correct": grade.correct,
                            "error_type": grade.error_type,
                            "error": grade.error,
                            "validator": verdict.reason,
                            "latency_s": latency,
                            "message": message.to_openai(),
                            "request": question.request.to_openai(),
                        },
                        ensure_ascii=False,
                    )
                    + "\n"
                )
                log.flush()
                if on_prompt is not None:
                    on_prompt(k)
                if checkpoint_every and (k + 1) % checkpoint_every == 0:
                    flush()
                if failure is not None and settle is not None:
                    settle()
    finally:
        if new_rows:
            flush()
    ours = rows_so_far()  # what the output now holds: this model's rows only
    per_category = (
        {
            str(task): (len(group), float(group["score"].mean()))
            for task, group in ours.groupby("task", sort=True)
        }
        if len(ours)
        else {}
    )
    return ToolRecordStats(
        questions_recorded=len(todo),
        questions_resumed=len(done_ids),
        accuracy=float(ours["score"].mean()) if len(ours) else math.nan,
        failed_calls=failed,
        output=output,
        per_category=per_category,
    )


def _resume_tools(output: Path, model: str) -> pd.DataFrame:
    """The rows of ``model`` an earlier tool-call recording wrote to ``output`` (step kind and
    the validator's verdicts kept)."""
    from router.data.schema import OUTPUT_COLUMNS

    earlier = _earlier_outcomes(output)
    if earlier is None:
        return pd.DataFrame()
    ours = earlier[earlier["model"] == model]
    if ours.empty:
        raise ConfigurationError(
            f"{output} exists and records none of {model}'s answers: remove it or pick another "
            "output (one file per recorded model)"
        )
    return ours[list(OUTPUT_COLUMNS)].reset_index(drop=True)
