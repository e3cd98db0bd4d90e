"""Cross-fitting: no row is scored by a model that saw it, and the choices made out of fold pick
the estimator that is right by construction (synthetic data, real LightGBM and kNN)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from router.data import OutcomeTable
from router.metrics import roc_auc
from router.model import AcceptanceModel, CascadeModel, Folds
from router.model.crossfit import escalation_apgr
from router.model.members import NeighbourAcceptance, neighbour_oof
from tests.support.synthetic import LookupEmbedder, synthetic_table

#: a booster deep and loose enough to memorise its training rows
MEMORISER: dict[str, Any] = {
    "n_estimators": 200,
    "early_stopping_rounds": 200,  # never stops: early stopping would refuse to memorise
    "learning_rate": 0.3,
    "num_leaves": 63,
    "min_child_samples": 2,
    "lambda_l2": 0.0,
    "feature_fraction": 1.0,
    "bagging_fraction": 1.0,
    "categorical_features": (),
}


@pytest.mark.slow
def test_a_memorising_booster_is_perfect_in_sample_and_blind_out_of_fold() -> None:
    """Row identity is the only signal (noise features, random labels): a booster fitted on the
    rows ranks them perfectly, the cross-fitted probabilities of the same rows are chance."""
    rng = np.random.default_rng(0)
    n = 600
    X = np.column_stack([np.arange(n), rng.normal(size=(n, 10))]).astype(np.float32)
    y = rng.integers(0, 2, n)
    in_sample = AcceptanceModel(**MEMORISER).fit(X, y, eval_set=(X, y), calibration_set=(X, y))
    assert roc_auc(in_sample.decision_function(X), y) > 0.99
    folds = Folds.make(np.arange(n).astype(str), y, 5, seed=0)
    oof = AcceptanceModel(**MEMORISER).fit_folds(X, y, folds)
    assert abs(roc_auc(oof, y) - 0.5) < 0.07


def test_out_of_fold_probabilities_are_calibrated_out_of_fold_too() -> None:
    """Isotonic steps are label means: a calibrator fitted on every row's out-of-fold score and
    applied to the same rows carries each row's label back into its probability, so two noise
    scores rank escalation better than chance (APGR 0.546 on these seeds with such a calibrator).
    Each fold's rows are calibrated by a map fitted on the other folds: chance."""
    apgr = []
    for seed in range(6):
        rng = np.random.default_rng(seed)
        n = 2000
        X = rng.normal(size=(n, 8)).astype(np.float32)
        y = (rng.uniform(size=(n, 2)) < [0.5, 0.7]).astype(int)
        folds = Folds.make(np.arange(n).astype(str), 2 * y[:, 0] + y[:, 1], 5, seed=seed)
        p = np.column_stack(
            [
                AcceptanceModel(seed=seed, categorical_features=()).fit_folds(X, y[:, t], folds)
                for t in range(2)
            ]
        )
        apgr.append(escalation_apgr(p[:, 1] - p[:, 0], y[:, 0], y[:, 1]))
    assert abs(float(np.mean(apgr)) - 0.5) < 0.025, apgr


def test_nearest_neighbours_are_perfect_in_sample_and_blind_out_of_fold() -> None:
    rng = np.random.default_rng(1)
    n = 800
    E = rng.normal(size=(n, 16))
    y = rng.integers(0, 2, n)
    Y = np.column_stack([y, 1 - y])
    own = NeighbourAcceptance(k=1).fit(E, Y).predict_accept(E)[:, 0]  # each row its own nearest
    assert roc_auc(own, y) == 1.0
    folds = Folds.make(np.arange(n).astype(str), y, 5, seed=0)
    oof = neighbour_oof(E, Y, folds, ks=(1, 10))
    for k in (1, 10):
        assert abs(roc_auc(oof[k][:, 0], y) - 0.5) < 0.07


@pytest.fixture(scope="module")
def noise_model() -> tuple[CascadeModel, OutcomeTable, LookupEmbedder]:
    """A cascade fitted on pure noise: every signal it holds out of fold must be chance."""
    rng = np.random.default_rng(2)
    n = 600
    table, embedder = synthetic_table(rng.normal(size=(n, 16)), rng.integers(0, 2, (n, 2)))
    model = CascadeModel(
        ["small", "large"], acceptance_params=MEMORISER, capacity_cv_below=0, skip_tolerance=None
    ).fit(table, embedder)
    return model, table, embedder


def test_every_out_of_fold_signal_of_a_noise_cascade_is_chance(noise_model) -> None:
    model, table, _ = noise_model
    oof = model.oof_
    assert len(oof) == len(table) and sorted(set(oof.fold)) == list(range(5))
    for t in range(2):
        assert abs(roc_auc(oof.signals.pre[:, t], table.labels(t)) - 0.5) < 0.08


def test_the_refit_booster_memorised_what_the_out_of_fold_signal_ignores(noise_model) -> None:
    """The final (refit) booster does learn the noise of its training rows: only
    cross-fitting keeps that out of the signals the policy is fitted on."""
    model, table, embedder = noise_model
    X = model.featurize(table, embedder, answers=False).inputs
    y = table.labels(0)
    assert roc_auc(model.pre_models_[0].decision_function(X), y) > 0.9
    assert abs(roc_auc(model.oof_.signals.pre[:, 0], y) - 0.5) < 0.08


def clustered(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """kNN is right by construction: 200 clusters in 256 dimensions, each with its own chance
    that either tier is right.  No direction separates them, and no single coordinate does
    either (the clusters overlap along each axis; only the whole distance tells them apart)."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(0).normal(size=(200, 256))  # the same world for every seed
    rates = np.random.default_rng(1).uniform([0.0, 0.4], [0.6, 1.0], size=(200, 2))
    cluster = rng.integers(0, 200, n)
    emb = centres[cluster] + 1.5 * rng.normal(size=(n, 256))
    scores = (rng.uniform(size=(n, 2)) < rates[cluster]).astype(float)
    return emb, scores


def thresholded(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The boosters are right by construction: whether each tier is right is an exclusive-or of
    two coordinates' signs (axis-aligned splits find it; a linear model cannot; with 30 more
    noise dimensions the nearest neighbours are mostly noise)."""
    rng = np.random.default_rng(seed)
    emb = rng.normal(size=(n, 32))
    xor = (emb[:, 0] > 0) ^ (emb[:, 1] > 0)
    p_small = np.where(xor, 0.8, 0.1)
    p_large = np.where(xor, 0.7, 0.95)
    scores = (rng.uniform(size=(n, 2)) < np.column_stack([p_small, p_large])).astype(float)
    return emb, scores


@pytest.mark.slow
@pytest.mark.parametrize(
    ("make", "right", "wrong"),
    [(clustered, "knn", "lgbm"), (thresholded, "lgbm", "knn")],
    ids=["knn-world", "booster-world"],
)
def test_the_choice_picks_the_estimator_that_is_right(make, right, wrong) -> None:
    emb, scores = make(3000, seed=3)
    table, embedder = synthetic_table(emb, scores)
    model = CascadeModel(
        ["small", "large"],
        acceptance_params={"n_estimators": 300, "categorical_features": ()},
        capacity_cv_below=0,
    ).fit(table, embedder)
    record = model.cv_results_["pre_members"]
    assert right in model.pre_members_.members, record
    members = model.pre_members_.members
    if wrong in members and wrong != "lgbm":  # averaged in only where it ties out of fold
        assert record["oof_apgr"]["+".join(members)] - record["oof_apgr"][right] < 0.005, record
    # out of fold, the right estimator alone ranks escalation clearly better than the wrong one
    assert record["oof_apgr"][right] > record["oof_apgr"][wrong] + 0.05, record
    # and the choice holds on fresh data from the same world
    emb_new, scores_new = make(1000, seed=4)
    fresh, fresh_embedder = synthetic_table(emb_new, scores_new)
    X = model.featurize(fresh, fresh_embedder, answers=False).inputs
    chosen = escalation_apgr(model.signals(fresh, fresh_embedder).pre_gain(0), *scores_new.T)
    boosters = np.column_stack([m.predict_accept(X) for m in model.pre_models_])
    alone = escalation_apgr(boosters[:, 1] - boosters[:, 0], *scores_new.T)
    if right == "knn":
        assert chosen > alone + 0.05  # the boosters alone would have done much worse
    else:
        assert chosen > 0.7 and abs(chosen - alone) < 0.02
