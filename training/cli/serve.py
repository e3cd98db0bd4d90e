"""``serve`` and ``standin``: the sidecar, and the frontier stand-in of the local profile."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from training.cli.common import handle_errors
from training.cli.options import DataOpt


@handle_errors
def serve(
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="TOML or JSON settings file (see the README)"),
    ] = None,
    host: Annotated[str | None, typer.Option(help="interface to bind [127.0.0.1]")] = None,
    port: Annotated[int | None, typer.Option(help="TCP port [8000]")] = None,
    workers: Annotated[int | None, typer.Option(help="worker processes [1]")] = None,
    model_uri: Annotated[
        str | None,
        typer.Option(
            "--model-uri",
            help="router folder or MLflow URI [models:/cascade-router@champion, else bundled]",
        ),
    ] = None,
) -> None:
    """Run the OpenAI-compatible sidecar (settings: flags > CASCADE_* env > --config file)."""
    from serving.run import serve as run_server
    from serving.settings import ServiceSettings

    settings = ServiceSettings.load(
        config, host=host, port=port, workers=workers, model_uri=model_uri
    )
    run_server(settings)


@handle_errors
def standin(
    model: Annotated[
        str, typer.Option(help="the frontier model it stands in for")
    ] = "gpt-4o-2024-05-13",
    data: DataOpt = None,
    host: Annotated[str, typer.Option(help="interface to bind")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 8002,
    fallback_url: Annotated[
        str | None,
        typer.Option(help="OpenAI-compatible server answering prompts the data did not record"),
    ] = None,
    fallback_model: Annotated[str | None, typer.Option(help="model name at the fallback")] = None,
    fallback_timeout: Annotated[
        float, typer.Option(help="seconds to wait for the fallback's answer")
    ] = 300.0,
) -> None:
    """Serve recorded answers of a frontier model over the OpenAI API (local profile, tests)."""
    import uvicorn

    from serving.standin import create_standin_app
    from training.pipeline import resolve_data_paths

    paths = resolve_data_paths(data) if data else None
    app_ = create_standin_app(
        model, paths, fallback_url, fallback_model, fallback_timeout_s=fallback_timeout
    )
    uvicorn.run(app_, host=host, port=port, log_level="warning")
