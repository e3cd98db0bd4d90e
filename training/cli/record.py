"""``record``: a live model's answers (and extra samples) on a dataset's prompts, graded."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from router.errors import ConfigurationError
from training.cli.common import handle_errors, load_settings, out, step_kind
from training.cli.options import AnswerKindOpt, DataOpt


@handle_errors
def record(
    model: Annotated[
        str, typer.Option("--model", help="the name the recorded rows carry (and prices use)")
    ],
    base_url: Annotated[
        str, typer.Option(help="the model's OpenAI-compatible /v1 URL (vllm serve, llama.cpp)")
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="Parquet file to write")],
    data: DataOpt = None,
    served_model: Annotated[
        str | None, typer.Option(help="the model name the server expects (default: --model)")
    ] = None,
    samples: Annotated[
        int, typer.Option(min=0, max=16, help="extra samples per prompt (<model>#s1 …)")
    ] = 0,
    temperature: Annotated[float, typer.Option(help="temperature of the extra samples")] = 0.7,
    task: Annotated[
        list[str] | None, typer.Option("--task", help="record only prompts of this task")
    ] = None,
    limit: Annotated[
        int | None, typer.Option(min=1, help="at most N prompts (seeded sample)")
    ] = None,
    answer_kind: AnswerKindOpt = None,
    max_tokens: Annotated[int, typer.Option(min=1, help="answer length limit")] = 16,
    timeout_s: Annotated[float, typer.Option(help="per-call timeout")] = 120.0,
) -> None:
    """Record a live model's answers (and extra samples) on a dataset's prompts, graded against
    the answers the data records as correct; resumes an interrupted run."""
    from router.backends import OpenAIBackend
    from router.data import load_outcomes, load_prices
    from training.pipeline import resolve_data_paths
    from training.record import record_answers

    settings = load_settings()
    prices = load_prices(settings.prices_path)
    if model not in prices:
        raise ConfigurationError(
            f"no price for {model} in {settings.prices_path or 'the bundled prices.json'}: add "
            "its USD per million input and output tokens (a self-hosted model too: the router "
            "weighs every call's cost)"
        )
    frame = load_outcomes(resolve_data_paths(data or ["routerbench"]))
    if task:
        unknown = sorted(set(task) - set(frame["task"]))
        if unknown:
            raise ConfigurationError(
                f"no prompts of task(s) {', '.join(unknown)} "
                f"(tasks there: {', '.join(sorted(set(frame['task'])))})"
            )
        frame = frame[frame["task"].isin(task)]
    backend = OpenAIBackend(
        served_model or model,
        base_url=base_url,
        timeout_s=timeout_s,
        temperature=0.0,
        max_tokens=max_tokens,
    )
    stats = record_answers(
        frame,
        backend,
        output,
        model,
        samples=samples,
        temperature=temperature,
        answer_kinds=dict(step_kind(k) for k in answer_kind or []),
        prices=prices,
        limit=limit,
        max_tokens=max_tokens,
        progress=settings.progress,
    )
    out.print(
        f"{output}: {stats.prompts_recorded} prompts recorded now, {stats.prompts_resumed} "
        f"from an earlier run, {stats.prompts_ungraded} left out (no recorded correct answer); "
        f"accuracy {stats.accuracy:.3f}"
        + (f", samples {stats.sample_accuracy:.3f}" if samples else "")
        + f"; prompts per step {stats.per_step}",
        highlight=False,
    )
