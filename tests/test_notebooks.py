"""The notebooks run top to bottom on the embedded default (small samples)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from router.embedders.build import ensure_static

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))

pytestmark = pytest.mark.slow


def test_there_are_the_two_notebooks() -> None:
    names = {p.name for p in NOTEBOOKS}
    assert {"cost_quality.ipynb", "feedback_loop.ipynb"} <= names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_executes(path: Path, tmp_path: Path, cache_dir: Path, monkeypatch) -> None:
    import nbclient
    import nbformat

    # the kernel is a fresh process: it imports this checkout and writes under tmp_path
    monkeypatch.setenv("PYTHONPATH", f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    monkeypatch.setenv("CASCADE_CACHE_DIR", str(cache_dir))
    # the shipped router's embedder (5-10x MiniLM's speed here); what the notebooks show does
    # not depend on which one embeds
    ensure_static(cache_dir)
    monkeypatch.setenv("CASCADE_EMBEDDER", "static")
    monkeypatch.setenv("CASCADE_NOTEBOOK_OUT", str(tmp_path / "out"))
    monkeypatch.setenv("CASCADE_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    notebook = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        notebook,
        timeout=900,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
    )
    client.execute()
    errors = [
        o
        for c in notebook.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
        if o.get("output_type") == "error"
    ]
    assert not errors
