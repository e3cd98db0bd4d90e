"""Options shared by several commands, defined once.

``train`` and ``evaluate`` take the same dozen data and model options: :func:`training_options`
adds them to a command's signature and hands the command one :class:`TrainingOptions`.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from router.errors import ConfigurationError
from router.policy import Target
from training.cli.common import step_kind
from training.pipeline import DEFAULT_TIERS, TrainConfig

DataOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--data",
        "-d",
        help="bundled dataset (mmlu_pro, gsm8k, routerbench, routerbench_smollm2, tools) or a "
        ".parquet/.csv/.jsonl file in the outcome schema; repeatable",
    ),
]
AnswerKindOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--answer-kind",
        help="STEP=KIND, how a step's answers compare: choice, number, label:a,b, json, text, auto",
    ),
]
OutputDirOpt = Annotated[
    Path, typer.Option(help="where the plot, the report and the trained router (router/) go")
]


@dataclasses.dataclass(frozen=True)
class TrainingOptions:
    """The data and model options of ``train`` and ``evaluate``."""

    data: DataOpt = None
    tiers: Annotated[
        str | None,
        typer.Option(
            "--tiers",
            "-t",
            help="comma-separated models, cheapest first "
            "(default: llama-3.1-8b-instruct,gpt-4o-2024-05-13)",
        ),
    ] = None
    target: Annotated[
        str,
        typer.Option(
            "--target",
            help="quality=0.95 | share=0.2 | cost=0.002 (USD per request); several joined by "
            "commas are certified jointly (quality=0.95,share=0.5)",
        ),
    ] = "quality=0.95"
    delta: Annotated[
        float | None,
        typer.Option(
            "--delta",
            min=0.0,
            max=1.0,
            help="risk of the certificate: the target holds with probability ≥ 1 - delta "
            "(default 0.1, or the target's own delta=)",
        ),
    ] = None
    sample: Annotated[
        int | None, typer.Option("--sample", help="use N prompts (seeded sample)")
    ] = None
    source_split: Annotated[bool, typer.Option(help="use the data's own train/test split")] = False
    answer_aware: Annotated[bool, typer.Option(help="learn the answer-aware models")] = True
    peer: Annotated[
        list[str] | None,
        typer.Option("--peer", help="cheap model asked for second opinions at the first tier"),
    ] = None
    samples: Annotated[
        int,
        typer.Option(
            "--samples",
            min=0,
            max=16,
            help="K extra samples of the first tier as second opinions (recorded data needs "
            "rows of <first tier>#s1..#sK, e.g. from cascade-router record)",
        ),
    ] = 0
    sample_temperature: Annotated[
        float,
        typer.Option("--sample-temperature", help="temperature the extra samples are drawn at"),
    ] = 0.7
    answer_kind: AnswerKindOpt = None
    output_dir: OutputDirOpt = Path("outputs")
    bootstrap: Annotated[int, typer.Option(help="bootstrap resamples for intervals")] = 200

    def train_config(self, *, register: bool) -> TrainConfig:
        """The pipeline's configuration for these options."""
        tiers = (
            [t.strip() for t in self.tiers.split(",") if t.strip()]
            if self.tiers
            else list(DEFAULT_TIERS)
        )
        if len(tiers) < 2:
            raise ConfigurationError("--tiers needs at least two models, cheapest first")
        target = Target.parse(self.target)
        assert target is not None
        if self.delta is not None:
            target = target.with_delta(self.delta)
        if self.sample is not None and self.sample < 100:
            raise ConfigurationError("--sample must be at least 100 prompts")
        return TrainConfig(
            data=self.data or ["mmlu_pro"],
            tiers=tiers,
            target=target,
            sample=self.sample,
            source_split=self.source_split,
            answer_aware=self.answer_aware,
            peers=list(self.peer or []),
            samples=self.samples,
            sample_temperature=self.sample_temperature,
            answer_kinds=dict(step_kind(k) for k in self.answer_kind or []),
            register=register,
            output_dir=self.output_dir,
            bootstrap=self.bootstrap,
        )


def training_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Give ``command`` the :class:`TrainingOptions` as command-line options.

    ``command`` takes ``options: TrainingOptions`` plus its own options; the returned command's
    signature (which typer reads) lists the shared options first, then its own.
    """
    own = inspect.signature(command, eval_str=True)
    hints = inspect.get_annotations(TrainingOptions, eval_str=True)
    shared = [
        inspect.Parameter(
            f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default, annotation=hints[f.name]
        )
        for f in dataclasses.fields(TrainingOptions)
    ]
    names = [f.name for f in dataclasses.fields(TrainingOptions)]

    @functools.wraps(command)
    def wrapper(**kwargs: Any) -> Any:
        options = TrainingOptions(**{name: kwargs.pop(name) for name in names})
        return command(options=options, **kwargs)

    rest = [
        p.replace(kind=inspect.Parameter.KEYWORD_ONLY)
        for p in own.parameters.values()
        if p.name != "options"
    ]
    wrapper.__signature__ = own.replace(parameters=[*shared, *rest])  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in [*shared, *rest]}
    return wrapper
