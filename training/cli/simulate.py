"""``simulate``: the feedback loop end to end on replayed traffic, with its learning curve."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from router.errors import ConfigurationError
from router.policy import Target
from training.cli.common import console, handle_errors, load_settings, out


@handle_errors
def simulate_cmd(
    data: Annotated[
        list[str] | None, typer.Option("--data", "-d", help="replayed data [mmlu_pro]")
    ] = None,
    tiers: Annotated[
        str, typer.Option(help="cheapest first")
    ] = "llama-3.1-8b-instruct,gpt-4o-2024-05-13",
    sample: Annotated[
        int | None, typer.Option(help="use a seeded sample of N prompts of the data")
    ] = None,
    seed_size: Annotated[int, typer.Option(help="prompts the seed router trains on")] = 500,
    target: Annotated[
        str,
        typer.Option(
            help="the routers' target (certified: a seed of 500 prompts certifies quality=0.9, "
            "not 0.95)"
        ),
    ] = "quality=0.9",
    checkpoints: Annotated[
        str, typer.Option(help="retrain after these numbers of feedback labels")
    ] = "500,2000,8000",
    retrain_every: Annotated[
        int | None, typer.Option(help="retrain every N labels (instead of --checkpoints)")
    ] = None,
    labels: Annotated[
        int | None, typer.Option(help="feedback labels in all (with --retrain-every)")
    ] = None,
    n_estimators: Annotated[int, typer.Option(help="boosting rounds at most")] = 1500,
    offline: Annotated[bool, typer.Option(help="train the offline reference")] = True,
    url: Annotated[str | None, typer.Option(help="a running sidecar; default: start one")] = None,
    concurrency: Annotated[int, typer.Option(help="requests in flight")] = 4,
    output_dir: Annotated[Path, typer.Option(help="CSV and PNG go here")] = Path(
        "outputs/simulate"
    ),
) -> None:
    """Replay held-out traffic through the sidecar, send feedback, retrain, let the gate
    promote; write the learning curve (CSV + PNG)."""
    from training.gate import GateConfig
    from training.simulate import SimulateConfig, simulate

    settings = load_settings()
    if retrain_every is not None:
        if labels is None or retrain_every < 1 or labels < retrain_every:
            raise ConfigurationError("--retrain-every N needs --labels M >= N")
        marks = list(range(retrain_every, labels + 1, retrain_every))
    else:
        try:
            marks = [int(c) for c in checkpoints.split(",") if c.strip()]
        except ValueError:
            raise ConfigurationError(f"--checkpoints: not integers: {checkpoints!r}") from None
    tier_list = [t.strip() for t in tiers.split(",") if t.strip()]
    result = simulate(
        SimulateConfig(
            data=data or ["mmlu_pro"],
            tiers=tier_list,
            sample=sample,
            seed_size=seed_size,
            target=Target.parse(target) or Target(quality_ratio=0.9),
            checkpoints=marks,
            n_estimators=n_estimators,
            offline=offline,
            url=url,
            concurrency=concurrency,
            gate=GateConfig(metric=settings.gate_metric, margin=settings.gate_margin),
            output_dir=output_dir,
        ),
        settings,
        log=lambda m: console.print(m, highlight=False),
    )
    table = Table(title="learning curve: the serving @champion on the frozen set")
    for col in ("labels", "champion", "APGR", "cost saved", "challenger APGR", "promoted"):
        table.add_column(col, justify="right")
    for p in result.points:
        table.add_row(
            str(p.labels),
            p.champion_version,
            "—" if p.apgr is None else f"{p.apgr:.3f}",
            "—" if p.cost_saved is None else f"{p.cost_saved:.3f}",
            "—" if p.challenger_apgr is None else f"{p.challenger_apgr:.3f}",
            "yes" if p.promoted else ("—" if p.labels == 0 else "no"),
        )
    if result.offline is not None:
        table.add_row(
            "offline (all)",
            "",
            f"{result.offline['apgr']:.3f}",
            f"{result.offline['cost_saved']:.3f}",
            "",
            "",
        )
    out.print(table)
    out.print(f"learning curve: {result.csv_path} and {result.plot_path}")
