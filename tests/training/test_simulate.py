"""simulate end to end: a real sidecar subprocess over HTTP, real feedback, retrain, the gate."""

from __future__ import annotations

import csv
from pathlib import Path

import mlflow
import pytest

from router.feedback import FeedbackStore
from router.policy import Target
from router.registry import registry_client
from router.settings import RouterSettings
from tests.conftest import SAMPLE, TIERS
from training.gate import GateConfig
from training.registry import current_version, list_versions
from training.simulate import SimulateConfig, simulate

pytestmark = pytest.mark.slow


def reg(settings: RouterSettings) -> mlflow.MlflowClient:
    """The registry client of the test's tracking store."""
    return registry_client(settings.tracking_uri)


def test_simulate_loop_through_the_sidecar(tmp_path: Path, cache_dir: Path) -> None:
    settings = RouterSettings(
        tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
        artifact_location=str(tmp_path / "mlruns"),
        cache_dir=cache_dir,
        feedback_url=f"sqlite:///{tmp_path / 'feedback.db'}",
        progress=False,
    )
    result = simulate(
        SimulateConfig(
            tiers=TIERS,
            sample=SAMPLE,
            seed_size=150,
            # ~28 calibration outcomes certify no quality target; a share target always is
            target=Target(max_frontier_share=0.5),
            checkpoints=(120, 240),
            n_estimators=100,
            offline=True,
            concurrency=3,
            gate=GateConfig(margin=0.005),
            output_dir=tmp_path / "out",
        ),
        settings,
    )
    # every request went through the sidecar and came back labelled in the store
    with FeedbackStore.from_settings(settings) as store:
        counts = store.counts()
        labelled = store.labelled()
    assert counts == {"requests": 240, "labelled": 240}
    assert set(labelled["source"]) == {"simulate"}
    assert set(labelled["tier"]) <= set(TIERS)
    assert sum(result.tier_counts.values()) == 240
    # seed version + one challenger per checkpoint, and @champion is one of them
    versions = [v["version"] for v in list_versions(settings.registered_model, reg(settings))]
    assert versions == [1, 2, 3]
    champion = current_version(settings.registered_model, "champion", reg(settings))
    promoted = [p for p in result.points if p.promoted]
    assert champion == (promoted[-1].challenger_version if promoted else "1")
    # the learning curve files
    rows = list(csv.DictReader(result.csv_path.open()))
    assert [int(r["labels"]) for r in rows] == [0, 120, 240]
    assert all(r["apgr"] and r["offline_apgr"] for r in rows)
    assert result.plot_path.exists() and result.plot_path.stat().st_size > 10_000
    assert result.offline is not None and result.offline["apgr"] is not None
