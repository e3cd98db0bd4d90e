"""``demo``: the main job on the embedded default (what the README's first command runs)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.console import Console

from router.backends import ReplayBackend
from router.data import bundled_dataset, load_outcomes
from router.policy import Target
from router.registry import ModelRef
from router.sdk import Router
from router.settings import RouterSettings
from training.cli.common import console, handle_errors, load_settings, out
from training.cli.options import OutputDirOpt
from training.cli.reports import print_report, print_route
from training.pipeline import (
    DEFAULT_TIERS,
    TrainConfig,
    TrainingResult,
    log_to_mlflow,
    train_and_evaluate,
)


@handle_errors
def demo(
    sample: Annotated[
        int,
        typer.Option(
            "--sample",
            help="train on a seeded sample of N bundled MMLU-Pro prompts so that the job "
            "finishes in minutes from a cold embedding cache; 0 uses all 12,032",
        ),
    ] = 6000,
    output_dir: OutputDirOpt = Path("outputs"),
) -> None:
    """The main job on the embedded default: train, evaluate, register @champion, route samples."""
    run_demo(
        load_settings(), sample=sample or None, output_dir=output_dir, console=console, out=out
    )


def run_demo(
    settings: RouterSettings,
    *,
    sample: int | None,
    output_dir: Path,
    console: Console,
    out: Console,
) -> None:
    """Train on bundled MMLU-Pro, evaluate against baselines, register @champion, route samples."""
    started = time.perf_counter()

    def log(message: str) -> None:
        console.print(f"[cyan]›[/] {message}", highlight=False)

    config = TrainConfig(
        data=["mmlu_pro"],
        tiers=list(DEFAULT_TIERS),
        target=Target(quality_ratio=0.95),
        sample=sample,
        output_dir=output_dir,
        run_name="demo",
    )
    result = train_and_evaluate(config, settings, log=log)
    result = log_to_mlflow(result, config, settings, result.report["dataset_digest"], log=log)
    print_report(result.report, out)
    alias = ModelRef.champion(settings).uri
    out.print(
        f"registered {settings.registered_model} version {result.version}"
        + (
            f" → @{settings.champion_alias}"
            if result.aliased
            else " (an earlier version keeps the alias)"
        ),
        highlight=False,
    )
    out.print(f"plot: {result.plot_path}", highlight=False)

    log(f"loading {alias} back from the registry and routing sample step inputs (replayed answers)")
    frame = load_outcomes([bundled_dataset("mmlu_pro")], models=list(DEFAULT_TIERS))
    router = Router.load(alias, settings=settings).with_backends(
        [ReplayBackend(frame, tier) for tier in DEFAULT_TIERS]
    )
    for step, text in pick_samples(result):
        print_route(router.route(step, text))
    out.print(f"done in {time.perf_counter() - started:.0f} s", highlight=False)


def pick_samples(result: TrainingResult, per_path: int = 2) -> list[tuple[str, str]]:
    """Test prompts that show each path the policy takes (verified, escalated, skipped)."""
    assert result.test is not None and result.test_features is not None
    test, model = result.test, result.model
    signals = model.signals_from_features(result.test_features)
    outcome = model.policy_.run(signals, test.scores, test.costs, test.steps)
    skipped = outcome.skipped.any(axis=1)
    groups = {
        "verified": np.flatnonzero(outcome.answer_tier == 0),
        "escalated": np.flatnonzero(outcome.top_called & ~skipped),
        "skipped": np.flatnonzero(skipped),
    }
    picks = [int(i) for idx in groups.values() for i in idx[:per_path]]
    return [(str(test.steps[i]), test.prompts[i]) for i in picks]
