"""``train`` and ``evaluate``: fit a router on outcome data, report it against the baselines."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from training.cli.common import handle_errors, load_settings, log_line, out
from training.cli.options import TrainingOptions, training_options
from training.cli.reports import print_report


@training_options
@handle_errors
def train(
    options: TrainingOptions,
    register: Annotated[bool, typer.Option(help="register in the MLflow Model Registry")] = True,
    json_out: Annotated[bool, typer.Option("--json", help="print the report as JSON")] = False,
) -> None:
    """Train a router, evaluate it, log the run to MLflow and register it (first → @champion)."""
    from training.pipeline import log_to_mlflow, train_and_evaluate

    settings = load_settings()
    config = options.train_config(register=register)
    result = train_and_evaluate(config, settings, log=log_line)
    result = log_to_mlflow(result, config, settings, result.report["dataset_digest"], log=log_line)
    if json_out:
        print(
            json.dumps(
                result.report | {"run_id": result.run_id, "version": result.version}, indent=2
            )
        )
        return
    print_report(result.report, out)
    reg = (
        f"registered {settings.registered_model} v{result.version}"
        + (f" as @{settings.champion_alias}" if result.aliased else " (champion unchanged)")
        if result.version
        else "not registered"
    )
    out.print(f"plot: {result.plot_path}  report: {result.report_path}  {reg}", highlight=False)


@training_options
@handle_errors
def evaluate(
    options: TrainingOptions,
    json_out: Annotated[bool, typer.Option("--json", help="print everything as JSON")] = False,
) -> None:
    """Fit on a seeded split of any dataset and tier list; report curves, APGR, CPT, baselines."""
    from training.pipeline import train_and_evaluate

    settings = load_settings()
    config = options.train_config(register=False)
    result = train_and_evaluate(
        config,
        settings.model_copy(update={"progress": settings.progress and not json_out}),
        log=(lambda m: None) if json_out else log_line,
    )
    if json_out:
        print(json.dumps(result.report, indent=2))
        return
    print_report(result.report, out)
    out.print(f"plot: {result.plot_path}  report: {result.report_path}", highlight=False)
