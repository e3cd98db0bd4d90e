"""CascadeModel on real MMLU-Pro outcomes with the real embedder and real LightGBM."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from router.errors import (
    ConfigurationError,
    NotFittedError,
    RouterLoadError,
    TargetNotCertifiableError,
)
from router.metrics import roc_auc
from router.model import FORMAT_VERSION, CascadeModel, Folds
from tests.conftest import TIERS


def test_folds_are_seeded_stratified_and_independent_of_row_order() -> None:
    ids = np.array([f"p{i}" for i in range(1000)], dtype=object)
    strata = np.arange(1000) % 4
    a = Folds.make(ids, strata, 5, seed=3)
    b = Folds.make(ids[::-1], strata[::-1], 5, seed=3)
    assert all(set(ids[a.held(k)]) == set(ids[::-1][b.held(k)]) for k in range(5))
    assert np.bincount(a.fold).tolist() == [200] * 5
    for k in range(5):  # every fold holds every stratum in the same proportion
        assert np.bincount(strata[a.held(k)]).tolist() == [50] * 4
        assert not set(a.held(k)) & set(a.train(k))
    assert not np.array_equal(a.fold, Folds.make(ids, strata, 5, seed=4).fold)


def test_fitted_model_has_every_component(fitted_model: CascadeModel, split_tables) -> None:
    train, _ = split_tables
    assert len(fitted_model.pre_models_) == 2
    assert set(fitted_model.post_models_) == {0}
    assert fitted_model.policy_.global_.lam is not None
    assert fitted_model.embedder_name_.startswith("minilm:")
    oof = fitted_model.oof_  # the policy was fitted on every training row, out of fold
    assert len(oof) == len(train) and set(oof.fold) == set(range(fitted_model.folds))
    np.testing.assert_array_equal(oof.scores, train.scores)
    np.testing.assert_array_equal(fitted_model.policy_.cal_scores_, train.scores)


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


def test_pre_answer_members_are_chosen_out_of_fold(fitted_model) -> None:
    members = fitted_model.pre_members_.members
    record = fitted_model.cv_results_["pre_members"]
    # every candidate (kNN alone included) was scored, and the chosen one scored best
    assert set(record["oof_apgr"]) >= {"lgbm", "lgbm+linear", "lgbm+knn", "knn", "linear"}
    assert record["oof_apgr"]["+".join(members)] == max(record["oof_apgr"].values())
    assert record["knn_oof_apgr"][str(record["knn_k"])] == max(record["knn_oof_apgr"].values())


def test_every_member_survives_save_and_load(fitted_model, tmp_path, split_tables, embedder):
    import copy
    import json

    from router.model.members import LinearAcceptance, NeighbourAcceptance, PreAnswerMembers

    train, test = split_tables
    model = copy.copy(fitted_model)
    X = model.featurize(train, embedder, answers=False).inputs[:, 3:]
    Y = np.column_stack([train.labels(t) for t in range(2)])
    model.pre_members_ = PreAnswerMembers(
        ("lgbm", "linear", "knn"),
        {"linear": [LinearAcceptance().fit(X, Y[:, t]) for t in range(2)]},
        NeighbourAcceptance(k=25).fit(X, Y),
    )
    folder = model.save(tmp_path / "all-members")
    meta = json.loads((folder / "router.json").read_text())
    assert meta["format_version"] == FORMAT_VERSION and (folder / "neighbours.npz").exists()
    loaded = CascadeModel.load(folder)
    a, b = model.signals(test, embedder).pre, loaded.signals(test, embedder).pre
    np.testing.assert_allclose(a, b, atol=1e-6)  # keys are stored as float16
    lgbm_only = fitted_model.pre_probabilities(fitted_model.featurize(test, embedder).inputs)
    assert not np.allclose(a, lgbm_only)  # the members really take part

    (folder / "neighbours.npz").unlink()
    with pytest.raises(RouterLoadError, match="neighbour"):
        CascadeModel.load(folder)


def test_post_blend_is_chosen_out_of_fold_and_used_live(fitted_model, split_tables, embedder):
    import copy

    from router.model import POST_BLEND_GRID

    assert fitted_model.post_blend_ in POST_BLEND_GRID
    scores = fitted_model.cv_results_["post_blend_oof_apgr"]
    assert set(scores) == {f"{w:g}" for w in POST_BLEND_GRID}
    assert scores[f"{fitted_model.post_blend_:g}"] == max(scores.values())

    _, test = split_tables
    test = test.subset(np.arange(40))
    model = copy.copy(fitted_model)
    model.post_blend_ = 0.5
    offline = model.signals(test, embedder)
    raw = copy.copy(fitted_model)
    raw.post_blend_ = 0.0
    unblended = raw.signals(test, embedder)
    np.testing.assert_allclose(
        offline.post_self[:, 0], 0.5 * unblended.post_self[:, 0] + 0.5 * unblended.pre[:, 0]
    )
    # the live path (what Router.route calls once the small model has answered) agrees
    X = model.featurize(test, embedder, answers=False).inputs
    answers = list(test.responses[0])
    a_emb = embedder.encode(model.answer_windows(answers, test.prompts))
    live_self, live_next = model.post_probabilities(0, X, a_emb, answers)
    np.testing.assert_allclose(live_self, offline.post_self[:, 0], atol=1e-9)
    np.testing.assert_allclose(live_next, offline.post_next[:, 0], atol=1e-9)


def test_without_the_ensemble_the_boosters_alone_estimate(split_tables, embedder, tmp_path):
    import json

    train, _ = split_tables
    model = CascadeModel(
        list(TIERS),
        answer_aware=False,
        pre_ensemble=False,
        acceptance_params={"n_estimators": 50},
        capacity_cv_below=0,
    ).fit(train, embedder)
    assert model.pre_members_.members == ("lgbm",) and "pre_members" not in model.cv_results_
    folder = model.save(tmp_path / "plain")
    meta = json.loads((folder / "router.json").read_text())
    assert meta["pre_members"]["members"] == ["lgbm"]
    assert not (folder / "neighbours.npz").exists()


def test_load_errors(tmp_path, saved_model_dir) -> None:
    with pytest.raises(RouterLoadError, match=r"router\.json missing"):
        CascadeModel.load(tmp_path)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "router.json").write_text('{"format_version": 1}')
    with pytest.raises(RouterLoadError, match="damaged"):
        CascadeModel.load(broken)


def test_bad_configuration(split_tables, embedder) -> None:
    train = split_tables[0]
    with pytest.raises(ConfigurationError):
        CascadeModel(["only-one"]).fit(train, embedder)
    with pytest.raises(ConfigurationError):
        CascadeModel(list(TIERS)[::-1]).fit(train, embedder)
    with pytest.raises(ConfigurationError, match="folds"):
        CascadeModel(list(TIERS), folds=1).fit(train, embedder)
    with pytest.raises(NotFittedError):
        CascadeModel(list(TIERS)).pre_probabilities(np.zeros((1, 10)))


def test_a_model_reading_bare_answers_saves_and_loads_so(fitted_model, tmp_path):
    import copy
    import json

    model = copy.copy(fitted_model)
    model.answer_option_text = False
    folder = model.save(tmp_path / "bare")
    meta = json.loads((folder / "router.json").read_text())
    assert meta["params"]["answer_option_text"] is False
    assert CascadeModel.load(folder).answer_option_text is False
    assert model.answer_windows(["C"], ["Q?\nA) yes\nC) no"]) == ["C"]
    assert fitted_model.answer_windows(["C"], ["Q?\nA) yes\nC) no"]) == ["C\nno"]


def test_fit_policy_refits_only_the_policy_and_a_refusal_changes_nothing(
    fitted_model, saved_model_dir
) -> None:
    model = copy.deepcopy(fitted_model)
    boosters = model.pre_models_
    before = model.policy_
    with pytest.raises(TargetNotCertifiableError) as refused:
        model.set_params(target="quality=0.9999").fit_policy()
    assert model.policy_ is before and str(model.target_) == str(fitted_model.target_)
    model.set_params(target=refused.value.alternative or "share=1").fit_policy()
    assert model.policy_ is not before and model.pre_models_ is boosters
    assert str(model.policy_.target) == str(model.target_) != str(fitted_model.target_)
    with pytest.raises(NotFittedError, match="call fit"):
        CascadeModel.load(saved_model_dir).fit_policy()
