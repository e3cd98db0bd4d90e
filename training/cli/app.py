"""The ``cascade-router`` command: one typer app assembled from the command modules."""

from __future__ import annotations

import typer

from training.cli import demo, embedders, lifecycle, record, route, serve, simulate, train

app = typer.Typer(
    name="cascade-router",
    help="A learned cascade router for LLM agent pipelines: train, evaluate, route.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command()(train.train)
app.command()(train.evaluate)
app.command()(route.route)
app.command()(demo.demo)
app.command()(serve.serve)
app.command()(serve.standin)
app.command()(record.record)
app.command("retrain")(lifecycle.retrain)
app.command("promote")(lifecycle.promote_cmd)
app.command("rollback")(lifecycle.rollback_cmd)
app.command("versions")(lifecycle.versions_cmd)
app.command("drift")(lifecycle.drift_cmd)
app.command("simulate")(simulate.simulate_cmd)
app.add_typer(embedders.embedders_app, name="embedders")


def main() -> None:
    """Entry point of the ``cascade-router`` script."""
    app()
