"""Lifecycle commands: ``retrain``, ``promote``, ``rollback``, ``versions``, ``drift``."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from router.errors import CascadeRouterError, ConfigurationError
from router.settings import RouterSettings
from training.cli.common import console, handle_errors, load_settings, out
from training.cli.reports import certificate_table, drift_table
from training.feedback_window import read_index

if TYPE_CHECKING:
    from router.feedback import FeedbackStore

KEY_METRICS = ("apgr", "ece", "cost_saved", "frontier_share")


def _open_store(settings: RouterSettings) -> FeedbackStore:
    """The feedback store (created if missing)."""
    from router.feedback import FeedbackStore  # needs sqlalchemy: the train or serve extra

    return FeedbackStore.from_settings(settings)


def _existing_store(settings: RouterSettings) -> FeedbackStore | None:
    """The feedback store, or None when it is a SQLite file that does not exist yet."""
    from sqlalchemy import make_url

    url = make_url(settings.feedback_url)
    missing = not url.database or not Path(url.database).exists()
    if url.get_backend_name() == "sqlite" and missing:
        return None
    return _open_store(settings)


def version_metrics(client: Any, run_id: str | None) -> dict[str, float | None]:
    """Key metrics of a version's run (a retrain run's gate numbers, or a train run's)."""
    out: dict[str, float | None] = dict.fromkeys(KEY_METRICS)
    if not run_id:
        return out
    try:
        metrics = client.get_run(run_id).data.metrics
    except Exception:  # a run deleted from tracking: the version still lists
        return out
    for key in KEY_METRICS:
        value = metrics.get(f"gate.challenger.frozen.{key}")
        if value is None:
            value = metrics.get(f"policy.{key}" if key == "frontier_share" else key)
        out[key] = None if value is None or not math.isfinite(value) else float(value)
    return out


def certificate_check(
    settings: RouterSettings, store: FeedbackStore, router_uri: str | None = None
) -> list[Any]:
    """The production check of the served router's certified targets over its stored labels
    (``router_uri``, else ``settings.default_router``, else the champion or the bundled
    router); empty for a router saved before certification."""
    from router.feedback import certificate_status
    from router.model import CascadeModel
    from router.registry import open_default_router, open_router_folder

    target = router_uri or settings.default_router
    try:
        opened = (
            open_router_folder(str(target), settings) if target else open_default_router(settings)
        )
        with opened as (folder, version):
            model = CascadeModel.load(folder)
    except CascadeRouterError as exc:
        console.print(f"certified targets not checked: {exc}")
        return []
    return certificate_status(
        read_index(store),
        model.policy_,
        model.tiers_[-1],
        version=version,
        alpha=settings.certificate_alpha,
        min_labels=settings.drift_min_labels,
    )


@handle_errors
def retrain(
    since: Annotated[
        str,
        typer.Option(
            help="feedback window start: all | last (end of the parent's window) | Unix time"
        ),
    ] = "all",
    until: Annotated[float | None, typer.Option(help="window end (Unix time; default now)")] = None,
    base: Annotated[
        list[str] | None,
        typer.Option("--base", help="base dataset trained on next to the feedback; repeatable"),
    ] = None,
    base_sample: Annotated[int | None, typer.Option(help="seeded sample of N base prompts")] = None,
    lookup: Annotated[
        list[str] | None,
        typer.Option(
            "--lookup",
            help="recorded outcomes that complete the unlabelled tiers of a request; repeatable",
        ),
    ] = None,
    impute: Annotated[
        str, typer.Option(help="unlabelled tiers left: drop the row | parent (self-training)")
    ] = "drop",
    eval_data: Annotated[
        list[str] | None,
        typer.Option("--eval-data", help="data of the frozen evaluation set (default mmlu_pro)"),
    ] = None,
    eval_sample: Annotated[
        int | None, typer.Option(help="draw the frozen set from a seeded sample of N prompts")
    ] = None,
    holdout: Annotated[
        float, typer.Option(help="latest share of the window's labels kept for the gate")
    ] = 0.2,
    max_feedback_rows: Annotated[
        int,
        typer.Option(
            help="train on at most N feedback rows, a sample stratified by step, tier and "
            "label (0: all)"
        ),
    ] = 100_000,
    max_holdout_rows: Annotated[
        int, typer.Option(help="score at most N held-out labels, stratified (0: all)")
    ] = 20_000,
    metric: Annotated[str | None, typer.Option(help="gate metric (default: settings)")] = None,
    margin: Annotated[float | None, typer.Option(help="gate margin (default: settings)")] = None,
    n_estimators: Annotated[int, typer.Option(help="boosting rounds at most")] = 1500,
    promote: Annotated[bool, typer.Option(help="let the gate move @champion")] = True,
    shuffle_labels: Annotated[
        bool, typer.Option(help="train on permuted labels: a challenger that must fail")
    ] = False,
    if_drifted: Annotated[
        bool,
        typer.Option(
            help="retrain only when calibration drift is flagged or a certified target no "
            "longer holds on the labelled traffic"
        ),
    ] = False,
    json_out: Annotated[
        Path | None, typer.Option(help="write the lineage and gate decision as JSON")
    ] = None,
) -> None:
    """Train a challenger on production feedback; promote it if it beats @champion."""
    from router.feedback.drift import calibration_drift
    from training.gate import GateConfig
    from training.retrain import RetrainConfig, lineage_json
    from training.retrain import retrain as run_retrain

    settings = load_settings()
    if not 0.0 <= holdout < 1.0:
        raise ConfigurationError("--holdout must be in [0, 1)")
    store = _open_store(settings)
    try:
        if if_drifted:
            drift = calibration_drift(
                read_index(store),
                settings.drift_window,
                settings.drift_threshold,
                settings.drift_min_labels,
            )
            console.print(drift_table(drift, settings.drift_threshold))
            certified = certificate_check(settings, store)
            if certified:
                console.print(certificate_table(certified))
            if not any(d.flagged for d in [*drift, *certified]):
                console.print(
                    "no calibration drift flagged and every certified target holds: "
                    "nothing to retrain"
                )
                return
        config = RetrainConfig(
            since=since,
            until=until,
            base=base or (),
            base_sample=base_sample,
            lookup=lookup or (),
            impute=impute,
            eval_data=eval_data or ("mmlu_pro",),
            eval_sample=eval_sample,
            holdout_fraction=holdout,
            max_feedback_rows=max_feedback_rows or None,
            max_holdout_rows=max_holdout_rows or None,
            n_estimators=n_estimators,
            gate=GateConfig(
                metric=metric or settings.gate_metric,
                margin=settings.gate_margin if margin is None else margin,
            ),
            promote=promote,
            shuffle_labels=shuffle_labels,
        )
        result = run_retrain(config, settings, store, log=lambda m: console.print(m))
    finally:
        store.close()
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(lineage_json(result))
    summary = {
        "version": result.version,
        "promoted": result.promoted,
        "parent_version": result.parent_version,
        "run_id": result.run_id,
    }
    typer.echo(json.dumps(summary))  # one unwrapped line for scripts


@handle_errors
def promote_cmd(
    version: Annotated[int, typer.Argument(help="registered version to make @champion")],
) -> None:
    """Make VERSION the @champion by hand (the old champion becomes @previous)."""
    from training.registry import open_tracking, promote_version

    settings = load_settings()
    client = open_tracking(settings)
    old, new = promote_version(
        settings.registered_model,
        version,
        champion_alias=settings.champion_alias,
        previous_alias=settings.previous_alias,
        client=client,
    )
    console.print(
        f"@{settings.champion_alias} → version {new}"
        + (f" (version {old} is @{settings.previous_alias})" if old and old != new else "")
    )


@handle_errors
def rollback_cmd() -> None:
    """Give @champion back to the @previous version (run again to undo)."""
    from training.registry import open_tracking, rollback

    settings = load_settings()
    client = open_tracking(settings)
    demoted, restored = rollback(
        settings.registered_model,
        champion_alias=settings.champion_alias,
        previous_alias=settings.previous_alias,
        client=client,
    )
    console.print(
        f"@{settings.champion_alias} → version {restored}; version {demoted} is "
        f"@{settings.previous_alias}"
    )


@handle_errors
def versions_cmd(
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """The registered versions with their aliases, key metrics and the drift status."""
    from router.feedback.drift import calibration_drift
    from training.registry import list_versions, open_tracking

    settings = load_settings()
    client = open_tracking(settings)
    rows = list_versions(settings.registered_model, client)
    for row in rows:
        row["metrics"] = version_metrics(client, row["run_id"])
        try:
            tags = client.get_model_version(settings.registered_model, row["version"]).tags
        except Exception:
            tags = {}
        row["gate_decision"] = tags.get("gate_decision")
        row["parent_version"] = tags.get("parent_version")
    store = _existing_store(settings)
    drift = []
    if store is not None:
        try:
            drift = calibration_drift(
                read_index(store),
                settings.drift_window,
                settings.drift_threshold,
                settings.drift_min_labels,
            )
        finally:
            store.close()
    if as_json:
        out.print_json(
            json.dumps({"versions": rows, "drift": [d.to_dict() for d in drift]}, default=str)
        )
        return
    table = Table(title=f"{settings.registered_model}: registered versions")
    for col in ("version", "aliases", "created", "parent", "gate", *KEY_METRICS):
        table.add_column(
            col,
            justify="right" if col in KEY_METRICS else "left",
            no_wrap=col in ("version", "aliases"),
        )
    for row in rows:
        m = row["metrics"]
        table.add_row(
            str(row["version"]),
            ", ".join(f"@{a}" for a in row["aliases"]),
            (row["created"] or "")[:19],
            str(row["parent_version"] or "—"),
            str(row["gate_decision"] or "—"),
            *("—" if m[k] is None else f"{m[k]:.3f}" for k in KEY_METRICS),
        )
    out.print(table)
    if drift:
        out.print(drift_table(drift, settings.drift_threshold))
        if any(d.flagged for d in drift):
            out.print(
                "[bold red]calibration drift flagged[/]: `cascade-router retrain "
                "--if-drifted` would retrain now"
            )


@handle_errors
def drift_cmd(
    window: Annotated[int | None, typer.Option(help="latest labels per step")] = None,
    threshold: Annotated[float | None, typer.Option(help="flag above this gap")] = None,
    router_uri: Annotated[
        str | None,
        typer.Option(
            "--router", help="router whose certified targets are checked (default: the served)"
        ),
    ] = None,
) -> None:
    """Predicted against observed acceptance per step over the latest feedback, and whether
    each certified target still holds on the labelled traffic (exit 5 when either is flagged)."""
    from router.feedback.drift import calibration_drift

    settings = load_settings()
    store = _open_store(settings)
    try:
        drift = calibration_drift(
            read_index(store),
            window or settings.drift_window,
            threshold or settings.drift_threshold,
            settings.drift_min_labels,
        )
        certified = certificate_check(settings, store, router_uri)
    finally:
        store.close()
    out.print(drift_table(drift, threshold or settings.drift_threshold))
    if certified:
        out.print(certificate_table(certified))
    if any(d.flagged for d in [*drift, *certified]):
        raise typer.Exit(5)
