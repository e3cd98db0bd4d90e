"""``embedders build|list``: the fast embedders' artefacts, built offline from MiniLM."""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Annotated

import typer
from rich.table import Table

from training.cli.common import console, handle_errors, load_settings, out

embedders_app = typer.Typer(
    name="embedders",
    help="Build and list embedder artefacts (static table, ONNX export) in the cache folder.",
    no_args_is_help=True,
)


class BuildKind(StrEnum):
    static = "static"
    onnx = "onnx"


@embedders_app.command("build")
def build(
    kind: Annotated[BuildKind, typer.Argument(help="static | onnx")],
    int8: Annotated[bool, typer.Option(help="onnx: quantise the weights to int8")] = False,
    dims: Annotated[int, typer.Option(help="static: dimensions kept by PCA (8-384)")] = 384,
    sif: Annotated[
        float, typer.Option(help="static: Zipf/SIF weight coefficient; 0 turns it off")
    ] = 1e-3,
) -> None:
    """Build an artefact offline from the packaged all-MiniLM-L6-v2 into CASCADE_CACHE_DIR."""

    @handle_errors
    def run() -> None:
        from router.embedders.build import build_onnx, build_static
        from router.errors import ConfigurationError

        settings = load_settings()
        if kind is BuildKind.static:
            if int8:
                raise ConfigurationError("--int8 applies to the onnx embedder only")
            console.print("[cyan]›[/] distilling a static table from all-MiniLM-L6-v2 (~1 min)")
            folder = build_static(
                settings.cache_dir, dims=dims, sif=sif or None, progress=settings.progress
            )
        else:
            console.print("[cyan]›[/] exporting all-MiniLM-L6-v2 to ONNX" + (" (int8)" * int8))
            folder = build_onnx(settings.cache_dir, int8=int8)
        meta = json.loads((folder / "artefact.json").read_text())
        out.print(f"built {folder} sha256 {meta['sha256']}", highlight=False, soft_wrap=True)
        kind_name = "static" if kind is BuildKind.static else ("onnx-int8" if int8 else "onnx")
        out.print(f"use it: CASCADE_EMBEDDER={kind_name} cascade-router train ...", highlight=False)

    run()


@embedders_app.command("list")
def list_artefacts() -> None:
    """The embedder kinds and the artefacts built in CASCADE_CACHE_DIR."""

    @handle_errors
    def run() -> None:
        from router.embedders import EMBEDDER_KINDS, artefact_root

        root = artefact_root(load_settings().cache_dir)
        table = Table("artefact", "kind", "dim", "sha256", "MiB")
        for meta_path in sorted(root.glob("*/artefact.json")):
            meta = json.loads(meta_path.read_text())
            size = sum(p.stat().st_size for p in meta_path.parent.iterdir() if p.is_file())
            table.add_row(
                meta_path.parent.name,
                str(meta.get("kind")) + (" int8" if meta.get("int8") else ""),
                str(meta.get("dim")),
                str(meta.get("sha256"))[:12],
                f"{size / 2**20:.1f}",
            )
        out.print(f"kinds (CASCADE_EMBEDDER): {', '.join(EMBEDDER_KINDS)}; artefacts in {root}:")
        out.print(table)

    run()
