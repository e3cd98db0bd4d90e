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
    max_tokens: Annotated[
        int | None, typer.Option(min=1, help="answer length limit (default 16; --bfcl: 256)")
    ] = None,
    timeout_s: Annotated[float, typer.Option(help="per-call timeout")] = 120.0,
    bfcl: Annotated[
        list[str] | None,
        typer.Option(
            "--bfcl",
            help="record BFCL tool-calling questions instead of --data: CATEGORY[:N] "
            "(simple_python, multiple, irrelevance, live_simple, …), repeatable; graded by "
            "BFCL's checker (needs bfcl-eval)",
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="--bfcl: the seed of the question sample")] = 0,
) -> None:
    """Record a live model's answers (and extra samples) on a dataset's prompts, graded against
    the answers the data records as correct, or its tool calls on BFCL questions, graded by
    BFCL's own checker; resumes an interrupted run."""
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
    if bfcl:
        if data or task or samples:
            raise ConfigurationError(
                "--bfcl records BFCL questions: leave out --data, --task and --samples"
            )
        _record_bfcl(
            model,
            base_url,
            output,
            served_model,
            bfcl,
            seed,
            max_tokens or 256,
            timeout_s,
            prices,
            settings.progress,
        )
        return
    max_tokens = max_tokens or 16
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


def _record_bfcl(
    model: str,
    base_url: str,
    output: Path,
    served_model: str | None,
    categories: list[str],
    seed: int,
    max_tokens: int,
    timeout_s: float,
    prices: dict[str, tuple[float, float]],
    progress: bool,
) -> None:
    from router.backends import OpenAIBackend
    from training.bfcl import BfclGrader, load_questions, parse_counts
    from training.record import grades_path, record_tool_answers

    questions, skipped = load_questions(parse_counts(categories), seed=seed)
    # no retry: a timed-out request is still running on a llama.cpp server (it does not stop
    # on a client's disconnect), and a retry would queue behind it
    backend = OpenAIBackend(
        served_model or model,
        base_url=base_url,
        timeout_s=timeout_s,
        max_retries=0,
        temperature=0.0,
        max_tokens=max_tokens,
    )
    # after a timeout, wait (up to ten timeouts) until the server answers a one-token request:
    # the next question must not be charged for the abandoned one
    patient = OpenAIBackend(
        served_model or model,
        base_url=base_url,
        timeout_s=10 * timeout_s,
        max_retries=0,
        temperature=0.0,
        max_tokens=1,
    )

    def settle() -> None:
        patient.complete("Say OK.", max_tokens=1)

    stats = record_tool_answers(
        questions,
        backend,
        output,
        model,
        BfclGrader(),
        prices=prices,
        max_tokens=max_tokens,
        settle=settle,
        progress=progress,
    )
    per_category = ", ".join(
        f"{name} {n} ({accuracy:.2f})" for name, (n, accuracy) in stats.per_category.items()
    )
    out.print(
        f"{output}: {stats.questions_recorded} questions recorded now, "
        f"{stats.questions_resumed} from an earlier run, {stats.failed_calls} failed calls "
        f"recorded wrong; accuracy {stats.accuracy:.3f}; per category {per_category}"
        + (f"; left out (tools not a valid request): {skipped}" if skipped else "")
        + f"; requests and grades in {grades_path(output)}",
        highlight=False,
    )
