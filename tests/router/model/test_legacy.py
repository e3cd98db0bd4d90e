"""Every router an earlier version saved still loads and decides as that version decided."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from router.model import READABLE_FORMATS, CascadeModel
from tests.support.legacy import (
    FORMATS,
    SAVED_ROUTERS,
    HashEmbedder,
    decisions,
    legacy_table,
    opinion_models,
    saved_decisions,
)

DATA = Path(__file__).parent / "data" / "legacy"
ROOT = Path(__file__).resolve().parents[3]


def _same(got: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> None:
    assert set(got) == set(expected)
    for key, value in expected.items():
        if value.dtype.kind == "f":
            np.testing.assert_allclose(got[key], value, rtol=0, atol=1e-9, err_msg=key)
        else:
            np.testing.assert_array_equal(got[key], value, err_msg=key)


@pytest.mark.parametrize("version", sorted(FORMATS))
def test_a_router_of_every_earlier_format_decides_as_before(version: int) -> None:
    folder = DATA / f"format{version}"
    assert json.loads((folder / "router.json").read_text())["format_version"] == version
    assert version in READABLE_FORMATS
    model = CascadeModel.load(folder)
    assert model.answer_option_text is (version >= 5)
    test = legacy_table(120, 1, opinion_models(version))
    with np.load(folder / "expected.npz", allow_pickle=False) as expected:
        _same(decisions(model, test, HashEmbedder()), dict(expected))


@pytest.mark.parametrize("name", SAVED_ROUTERS)
def test_the_routers_saved_in_the_repository_decide_as_before(name: str) -> None:
    model = CascadeModel.load(ROOT / name)
    width = model.pre_models_[0].n_features_in_ - 3
    with np.load(DATA / "expected_saved.npz", allow_pickle=False) as arrays:
        expected = {k.split("|")[1]: v for k, v in arrays.items() if k.startswith(f"{name}|")}
    _same(saved_decisions(model, width), expected)


def test_a_loaded_legacy_router_saves_in_todays_format(tmp_path) -> None:
    from router.model import FORMAT_VERSION

    model = CascadeModel.load(DATA / "format2")
    folder = model.save(tmp_path / "resaved")
    meta = json.loads((folder / "router.json").read_text())
    assert meta["format_version"] == FORMAT_VERSION
    assert "val_fraction" not in meta["params"]  # a parameter of older formats only
    again = CascadeModel.load(folder)
    test = legacy_table(120, 1, opinion_models(2))
    with np.load(DATA / "format2" / "expected.npz", allow_pickle=False) as expected:
        _same(decisions(again, test, HashEmbedder()), dict(expected))
