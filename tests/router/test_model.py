"""CascadeModel on real MMLU-Pro outcomes with the real embedder and real LightGBM."""

from __future__ import annotations

import numpy as np
import pytest

from router.errors import ConfigurationError, NotFittedError, RouterLoadError
from router.metrics import roc_auc
from router.model import CascadeModel, FitSplits
from tests.conftest import TIERS


def test_splits_are_disjoint_and_seeded() -> None:
    ids = np.array([f"p{i}" for i in range(1000)], dtype=object)
    a = FitSplits.make(ids, 0.15, 0.25, seed=3)
    b = FitSplits.make(ids[::-1], 0.15, 0.25, seed=3)
    assert set(ids[a.fit]) == set(ids[::-1][b.fit])  # same prompts whatever the row order
    assert (
        not set(a.fit) & set(a.val) and not set(a.fit) & set(a.cal) and not set(a.val) & set(a.cal)
    )
    assert len(a.fit) + len(a.val) + len(a.cal) == 1000


def test_fitted_model_has_every_component(fitted_model: CascadeModel) -> None:
    assert len(fitted_model.pre_models_) == 2
    assert set(fitted_model.post_models_) == {0}
    assert fitted_model.policy_.global_.lam is not None
    assert fitted_model.embedder_name_.startswith("minilm:")


def test_answer_aware_model_beats_chance(fitted_model, split_tables, embedder) -> None:
    _, test = split_tables
    signals = fitted_model.signals(test, embedder)
    # the answer-aware P(small accepted) ranks real outcomes well above chance
    assert roc_auc(signals.post_self[:, 0], test.labels(0)) > 0.6
    assert np.all((signals.pre >= 0) & (signals.pre <= 1))


def test_save_load_gives_identical_probabilities(
    fitted_model, saved_model_dir, split_tables, embedder
) -> None:
    _, test = split_tables
    loaded = CascadeModel.load(saved_model_dir)
    a = fitted_model.signals(test, embedder)
    b = loaded.signals(test, embedder)
    np.testing.assert_allclose(a.pre, b.pre, atol=1e-12)
    np.testing.assert_allclose(a.post_self, b.post_self, atol=1e-12)
    assert loaded.policy_.global_ == fitted_model.policy_.global_
    assert loaded.policy_.per_step_ == fitted_model.policy_.per_step_


def test_load_errors(tmp_path, saved_model_dir) -> None:
    with pytest.raises(RouterLoadError, match=r"router\.json missing"):
        CascadeModel.load(tmp_path)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "router.json").write_text('{"format_version": 1}')
    with pytest.raises(RouterLoadError, match="damaged"):
        CascadeModel.load(broken)


def test_bad_configuration(split_tables, embedder) -> None:
    with pytest.raises(ConfigurationError):
        CascadeModel(["only-one"])
    with pytest.raises(ConfigurationError):
        CascadeModel(list(TIERS)[::-1]).fit(split_tables[0], embedder)
    with pytest.raises(NotFittedError):
        CascadeModel(list(TIERS)).pre_probabilities(np.zeros((1, 10)))
