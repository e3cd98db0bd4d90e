"""The router that ships is the router the current training code builds, and it loads on a
machine that has never built its embedder artefact."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from router.embedders import STATIC_ARTEFACT, artefact_root
from router.registry import bundled_router_path
from router.sdk import Router
from router.settings import RouterSettings
from training.default_router import BUNDLED_EMBEDDER, build_default_router

pytestmark = pytest.mark.slow


def _layout(meta: dict[str, Any]) -> dict[str, Any]:
    """What a router's files must share with what ``train`` writes now: the format, the keys of
    every section, the embedder and its artefact, and each model's feature count (which
    pre-answer members the calibration split picks depends on the data, so not those)."""

    def features(models: Any) -> list[int]:
        return [int(m["n_features_in"]) for m in models]

    return {
        "format_version": meta["format_version"],
        "keys": sorted(meta),
        "params": sorted(meta["params"]),
        "tiers": meta["tiers"],
        "embedder": {k: meta["embedder"].get(k) for k in ("kind", "artefact", "sha256")},
        "pre_models": features(meta["pre_models"]),
        "post_models": {k: features(v) for k, v in sorted(meta["post_models"].items())},
        "policy": sorted(meta["policy"]),
        "steps": meta["steps"],
    }


def test_shipped_router_is_what_train_writes_now(cache_dir: Path, tmp_path: Path) -> None:
    """Rebuild (on a sample: the layout does not depend on its size) with the recipe of
    scripts/build_default_router.py and compare with the shipped files.  When this fails, run
    that script: the model code changed what a trained router holds."""
    shipped = json.loads((bundled_router_path() / "router.json").read_text())
    settings = RouterSettings(
        cache_dir=cache_dir,
        tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
        progress=False,
        capacity_cv_below=RouterSettings.model_fields["capacity_cv_below"].default,
    )
    result = build_default_router(tmp_path / "router", settings, sample=1500, log=lambda _: None)
    fresh = json.loads((result.model_dir / "router.json").read_text())
    assert _layout(shipped) == _layout(fresh), (
        "router/resources/router falls behind what `train` writes now: "
        "run `python scripts/build_default_router.py`"
    )
    assert shipped["embedder"]["kind"] == BUNDLED_EMBEDDER  # the fast path by default


def test_shipped_router_loads_and_decides(cache_dir: Path) -> None:
    """The bundled router's embedder artefact is built on first use (into the cache folder) and
    must hash to what the router recorded: a fresh distillation, in the session's empty cache,
    reproduces the artefact the shipped router was trained with byte for byte."""
    router = Router.load(bundled_router_path(), settings=RouterSettings(cache_dir=cache_dir))
    built = json.loads((artefact_root(cache_dir) / STATIC_ARTEFACT / "artefact.json").read_text())
    assert built["sha256"] == router.model.embedder_ref_["sha256"]
    decision = router.decide("math", "What is the derivative of x squared?")
    assert decision.tier in router.tiers
