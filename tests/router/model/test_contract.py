"""CascadeModel follows scikit-learn's estimator contract, and persists what get_params says."""

from __future__ import annotations

import inspect
import json

import numpy as np
import pytest

from router.errors import ConfigurationError
from router.model import CascadeModel
from router.policy import Target
from tests.support.synthetic import synthetic_table

FAST = {"n_estimators": 30, "early_stopping_rounds": 10, "categorical_features": ()}


@pytest.fixture(scope="module")
def small_fit():
    # uninformative inputs: a 95% quality target could not be certified, a 50% one can
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(300, 8))
    scores = (rng.uniform(size=(300, 2)) < [0.4, 0.8]).astype(float)
    answers = [f"answer {j}" for j in range(300)]
    table, embedder = synthetic_table(emb, scores, answers)
    model = CascadeModel(
        ["small", "large"], target="quality=0.5", acceptance_params=FAST, capacity_cv_below=0
    )
    return model.fit(table, embedder), table, embedder


def test_init_stores_every_argument_as_given() -> None:
    tiers, peers, params = ["a", "b"], {0: "p"}, {"n_estimators": 10}
    model = CascadeModel(tiers, target="quality=0.9", peers=peers, acceptance_params=params)
    assert model.tiers is tiers and model.peers is peers and model.acceptance_params is params
    assert model.target == "quality=0.9"
    # nothing is checked or derived before fit, and nothing fitted exists
    CascadeModel(["only-one"], folds=0, samples=-3)
    assert not [k for k in vars(model) if k.endswith("_")]


def test_get_params_follows_the_signature_and_set_params_checks_names() -> None:
    names = [p for p in inspect.signature(CascadeModel.__init__).parameters if p != "self"]
    model = CascadeModel(["a", "b"], seed=3)
    assert list(model.get_params()) == names
    assert model.set_params(seed=4, folds=3) is model and (model.seed, model.folds) == (4, 3)
    with pytest.raises(ValueError, match="not a parameter"):
        model.set_params(val_fraction=0.2)


def test_sklearn_clone_round_trips(small_fit) -> None:
    from sklearn.base import clone

    model, table, embedder = small_fit
    copy = clone(model)
    assert copy.get_params() == model.get_params()
    assert not hasattr(copy, "policy_")  # a clone is unfitted
    refit = copy.fit(table, embedder)
    X = model.featurize(table, embedder).inputs
    np.testing.assert_array_equal(refit.pre_probabilities(X), model.pre_probabilities(X))


def test_validation_happens_in_fit(small_fit) -> None:
    _, table, embedder = small_fit
    with pytest.raises(ConfigurationError, match="folds"):
        CascadeModel(["small", "large"], folds=1).fit(table, embedder)
    with pytest.raises(ConfigurationError, match="samples"):
        CascadeModel(["small", "large"], samples=-1).fit(table, embedder)
    with pytest.raises(ConfigurationError, match="target"):
        CascadeModel(["small", "large"], target="quality=2").fit(table, embedder)


def test_featurize_fits_nothing(small_fit) -> None:
    _, table, embedder = small_fit
    model = CascadeModel(["small", "large"])
    feats = model.featurize(table, embedder)
    assert not [k for k in vars(model) if k.endswith("_")]  # no vocabulary, nothing learned
    assert np.isnan(feats.inputs[:, 0]).all()  # the step code waits for a fitted vocabulary
    fitted, _, _ = small_fit
    encoded = fitted.featurize(table, embedder)
    assert (encoded.inputs[:, 0] == 0).all()  # one step kind: code 0
    np.testing.assert_array_equal(feats.encoded(fitted.steps_).inputs, encoded.inputs)


def test_the_parsed_target_is_fitted_state(small_fit) -> None:
    model, _, _ = small_fit
    # stored as given (a string), parsed when fitted
    assert model.target == "quality=0.5" and model.target_ == Target(quality_ratio=0.5)
    assert model.tiers_ == ("small", "large")


def test_persistence_writes_exactly_the_parameters(small_fit, tmp_path) -> None:
    model, table, embedder = small_fit
    folder = model.save(tmp_path / "router")
    meta = json.loads((folder / "router.json").read_text())
    assert set(meta["params"]) == set(CascadeModel.param_names()) - {"tiers"}
    loaded = CascadeModel.load(folder)
    assert loaded.get_params() | {"tiers": None} == model.get_params() | {
        "tiers": None,
        "target": Target(quality_ratio=0.5),  # written parsed
        "peers": {},
        "answer_kinds": {},
        "acceptance_params": FAST | {"categorical_features": []},
    }
    assert loaded.cv_results_ == json.loads(json.dumps(model.cv_results_))
    X = model.featurize(table, embedder).inputs
    np.testing.assert_allclose(loaded.pre_probabilities(X), model.pre_probabilities(X))


def test_blank_answers_get_no_answer_aware_models() -> None:
    rng = np.random.default_rng(1)
    scores = (rng.uniform(size=(200, 2)) < [0.4, 0.8]).astype(float)
    table, embedder = synthetic_table(rng.normal(size=(200, 8)), scores, [""] * 200)
    model = CascadeModel(
        ["small", "large"], target="quality=0.5", acceptance_params=FAST, capacity_cv_below=0
    )
    assert model.featurize(table, embedder).answers == {}
    assert model.fit(table, embedder).post_models_ == {}
