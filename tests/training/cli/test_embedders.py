"""`cascade-router embedders build|list`: a real ONNX export into a fresh cache folder."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from training.cli.app import app

runner = CliRunner()


def test_build_and_list_onnx_int8(tmp_path) -> None:
    env = {"CASCADE_CACHE_DIR": str(tmp_path), "CASCADE_PROGRESS": "false"}
    result = runner.invoke(app, ["embedders", "build", "onnx", "--int8"], env=env)
    assert result.exit_code == 0, result.output
    meta = json.loads((tmp_path / "embedders" / "onnx-minilm-int8" / "artefact.json").read_text())
    assert meta["int8"] and meta["sha256"] in result.stdout
    assert "CASCADE_EMBEDDER=onnx-int8" in result.stdout
    listed = runner.invoke(app, ["embedders", "list"], env=env)
    assert listed.exit_code == 0 and "onnx-minilm-int8" in listed.stdout
    assert meta["sha256"][:12] in listed.stdout


def test_bad_build_options_exit_2(tmp_path) -> None:
    env = {"CASCADE_CACHE_DIR": str(tmp_path)}
    result = runner.invoke(app, ["embedders", "build", "static", "--int8"], env=env)
    assert result.exit_code == 2 and "onnx embedder only" in result.output
    result = runner.invoke(app, ["embedders", "build", "static", "--dims", "4"], env=env)
    assert result.exit_code == 2 and "dims" in result.output
    assert runner.invoke(app, ["embedders", "build", "word2vec"], env=env).exit_code == 2
