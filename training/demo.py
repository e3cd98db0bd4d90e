"""The main job on the embedded default (what the README's first command runs)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from rich.console import Console

from router.policy import Target
from router.settings import RouterSettings
from training.pipeline import (
    DEFAULT_TIERS,
    TrainConfig,
    TrainingResult,
    log_to_mlflow,
    train_and_evaluate,
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
    from router.backends import ReplayBackend
    from router.core import Router
    from router.data import bundled_dataset, load_outcomes
    from training.cli import print_report, print_route

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
    alias = f"models:/{settings.registered_model}@{settings.champion_alias}"
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
