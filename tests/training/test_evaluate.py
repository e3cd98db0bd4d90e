"""Evaluation and routing with three tiers on real MMLU-Pro outcomes."""

from __future__ import annotations

import numpy as np
import pytest

from router import Router
from router.backends import ReplayBackend
from router.data import OutcomeTable, bundled_dataset, load_outcomes
from router.model import CascadeModel
from router.policy import Target
from training.evaluate import evaluate, plot_curves

TIERS3 = ("phi-3-mini-4k-instruct", "llama-3.1-70b-instruct", "gpt-4o-2024-05-13")


@pytest.fixture(scope="module")
def three_tier(embedder):
    frame = load_outcomes([bundled_dataset("mmlu_pro")], models=list(TIERS3))
    table = OutcomeTable.from_long(frame, TIERS3).sample(800, seed=0)
    train, test = table.split_by_prompt(0.25, seed=0)
    # 150 calibration outcomes certify a quality ratio of 0.9, not the default 0.95
    model = CascadeModel(
        list(TIERS3),
        target=Target(quality_ratio=0.9),
        acceptance_params={"n_estimators": 200},
        capacity_cv_below=0,
    )
    train_f = model.featurize(train, embedder)
    model.fit(train, embedder, features=train_f)
    return frame, train, test, model, train_f, model.featurize(test, embedder)


def test_three_tier_report(three_tier, tmp_path) -> None:
    _, train, test, model, train_f, test_f = three_tier
    assert set(model.post_models_) == {0, 1}  # an answer-aware stage below each upper tier
    report, curves = evaluate(model, train, test, train_f, test_f, bootstrap_resamples=0)
    assert report["tiers"] == list(TIERS3)
    for key in ("apgr", "cpt50", "cpt80", "cpt95", "roc_auc", "ece", "cost_saved"):
        assert key in report
    assert {"random", "knn", "logreg", "oracle"} <= set(report["baselines"])
    policy = report["policy"]
    assert 0 <= policy["frontier_share"] <= 1
    # the realised cost lies between always-small and always-frontier (plus cascade overhead)
    assert report["cost_always_small"] <= policy["cost_per_request"]
    assert policy["cost_per_request"] <= report["cost_always_frontier"] * 1.5
    cert = report["certification"]
    assert cert["target"] == "quality_ratio=0.9" and cert["delta"] == 0.1
    assert cert["bound"] == {"quality_ratio": 0.9} and cert["method"] == "wsr"
    assert cert["n_outcomes"] + cert["n_selection"] == len(model.policy_.cal_scores_)
    assert cert["realised"]["quality_ratio"] == policy["quality_ratio"]
    assert cert["price_of_guarantee"] == pytest.approx(
        cert["uncertified"]["cost_saved"] - cert["realised"]["cost_saved"], abs=1e-6
    )
    assert set(cert["holds_on_test"]) == {"quality_ratio"}
    assert plot_curves(curves, tmp_path / "c.png", "three tiers").stat().st_size > 10_000
    # the policy curve spans cheap to expensive operating points
    c = curves.curves["cascade policy (with skips)"]
    assert c.share.min() < 0.2 and c.share.max() > 0.8
    assert np.all(np.diff(c.share) >= 0)


def test_three_tier_routing_paths(three_tier, embedder) -> None:
    frame, _, test, model, _, _ = three_tier
    router = Router(model, embedder).with_backends([ReplayBackend(frame, t) for t in TIERS3])
    paths = set()
    for target in ("share=0.0", "quality=1.0", None):
        for i in range(15):
            result = router.route(str(test.steps[i]), test.prompts[i], target=target)
            paths.add(result.path)
            assert result.role in {"small", "medium", "frontier"}
            assert result.score == test.scores[i, TIERS3.index(result.tier)]
            if target == "share=0.0":  # no frontier call at all; small or medium answer
                assert result.role != "frontier", result.path
    allowed = {
        "small→verified",
        "small→escalated→medium→verified",
        "small→escalated→medium→escalated→frontier",
        "skipped→medium→verified",
        "skipped→medium→escalated→frontier",
        "skipped→skipped→frontier",
        "small→escalated→skipped→frontier",
    }
    assert paths <= allowed
    assert len(paths) >= 2  # the targets lead to different paths


def test_the_baselines_get_bootstrap_intervals(three_tier) -> None:
    _, train, test, model, train_f, test_f = three_tier
    report, _ = evaluate(model, train, test, train_f, test_f, bootstrap_resamples=30)
    intervals = report["intervals"]["baselines"]
    assert set(intervals) == {"random", "knn", "logreg", "small_fail_logreg", "oracle"}
    for entry in intervals.values():
        for key in ("apgr_ci95", "share_at_95pct_quality_ci95"):
            low, high = entry[key]
            assert low <= high
    assert intervals["random"]["apgr_ci95"] == [0.5, 0.5]  # random escalation, by construction
    assert intervals["oracle"]["apgr_ci95"][0] > 0.5  # the oracle beats it on every resample
