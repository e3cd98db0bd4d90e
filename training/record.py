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

Writing is incremental: the output is rewritten every ``checkpoint_every`` prompts, and a run
that finds its output already there (same model) carries on where it stopped.
"""

from __future__ import annotations

import collections
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


def _resume(output: Path, names: Sequence[str]) -> pd.DataFrame:
    """The rows of ``names`` an earlier run wrote to ``output`` (complete prompts only)."""
    if not output.exists():
        return pd.DataFrame(columns=list(SCHEMA_COLUMNS))
    try:
        earlier = load_outcomes([output])
    except DataValidationError as exc:
        raise ConfigurationError(
            f"{output} exists but is not outcome data ({exc}): remove it or pick another output"
        ) from exc
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
