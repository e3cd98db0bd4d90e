"""Second opinions: a real router trained with a peer's recorded answers, saved, loaded and
routed through replay backends (tier and peer), sync and async."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math

import numpy as np
import pytest

from router import Router
from router.backends import ReplayBackend, as_messages
from router.data import OutcomeTable, bundled_dataset, load_outcomes, load_table
from router.errors import ConfigurationError, RouterLoadError
from router.metrics import roc_auc
from router.model import FORMAT_VERSION, CascadeModel, subset_features
from router.policy import CascadeSignals, Operating, Target, walk_recorded
from tests.conftest import TIERS

PEER = "phi-3-mini-4k-instruct"


@pytest.fixture(scope="module")
def frame():
    return load_outcomes([bundled_dataset("mmlu_pro")], models=[*TIERS, PEER])


@pytest.fixture(scope="module")
def tables(frame) -> tuple[OutcomeTable, OutcomeTable]:
    table = OutcomeTable.from_long(frame, TIERS, peers=[PEER]).sample(2000, seed=0)
    return table.split_by_prompt(0.25, seed=0)


@pytest.fixture(scope="module")
def peer_model(tables, embedder) -> CascadeModel:
    train, _ = tables
    return CascadeModel(
        list(TIERS),
        peers={0: PEER},
        acceptance_params={"n_estimators": 200, "early_stopping_rounds": 30},
        capacity_cv_below=0,
    ).fit(train, embedder)


@pytest.fixture(scope="module")
def test_signals(peer_model, tables, embedder) -> CascadeSignals:
    return peer_model.signals(tables[1], embedder)


def test_peer_columns_travel_with_the_table(frame) -> None:
    table = OutcomeTable.from_long(frame, TIERS, peers=[PEER])
    assert table.tiers == TIERS and table.peers is not None and table.peers.models == (PEER,)
    sub = table.subset(np.array([3, 1]))
    assert sub.peers is not None
    assert sub.peers.responses[0] == [table.peers.responses[0][3], table.peers.responses[0][1]]
    with pytest.raises(ConfigurationError, match="also tiers"):
        load_table([bundled_dataset("mmlu_pro")], TIERS, peers=[TIERS[0]])


def test_agreement_makes_the_answer_model_sharper(peer_model, test_signals, tables) -> None:
    """Measured on a small sample: agreement lifts ROC AUC over answer-only."""
    y = tables[1].labels(0)
    assert test_signals.op_self is not None
    auc_post = roc_auc(test_signals.post_self[:, 0], y)
    auc_op = roc_auc(test_signals.op_self[:, 0], y)
    assert auc_op > 0.7
    assert auc_op > auc_post


def test_opinion_cost_is_charged_only_where_asked(test_signals, tables, peer_model) -> None:
    test = tables[1]
    per_source = peer_model.opinion_costs(test)
    assert per_source is not None and per_source.shape == (len(test), 1)
    costs = per_source[:, 0]
    assert np.all(costs > 0)

    def run(band, opinion_costs):
        out, _ = walk_recorded(
            test_signals,
            test.scores,
            test.costs,
            0.1,
            peer_model.tier_weights_,
            (0.0,),
            opinion_bands=(band,),
            opinion_costs=opinion_costs,
        )
        return out

    free, paid = run((0.0, math.inf), np.zeros_like(costs)), run((0.0, math.inf), costs)
    assert paid.asked is not None and paid.asked.all()
    np.testing.assert_array_equal(free.answer_tier, paid.answer_tier)
    np.testing.assert_allclose(paid.cost - free.cost, costs)
    never = run(None, costs)
    assert never.asked is not None and not never.asked.any()
    part = run((0.3, 0.6), costs)
    inside = (test_signals.pre[:, 0] >= 0.3) & (test_signals.pre[:, 0] < 0.6)
    assert part.asked is not None and np.array_equal(part.asked, inside)
    assert part.summary()["opinion_share"] == pytest.approx(inside.mean())


def test_policy_band_is_fitted_and_saved(peer_model, tmp_path, tables, embedder) -> None:
    point = peer_model.policy_.operating(None)
    assert isinstance(point, Operating)
    folder = peer_model.save(tmp_path / "router")
    meta = json.loads((folder / "router.json").read_text())
    assert meta["format_version"] == FORMAT_VERSION
    assert meta["params"]["peers"] == {"0": [PEER]}
    loaded = CascadeModel.load(folder)
    assert loaded.peer_models == (PEER,)
    assert loaded.policy_.operating(None) == point
    assert loaded.scorer_.threshold == pytest.approx(peer_model.scorer_.threshold)
    a = peer_model.signals(tables[1].subset(np.arange(50)), embedder)
    b = loaded.signals(tables[1].subset(np.arange(50)), embedder)
    assert a.op_self is not None and b.op_self is not None
    np.testing.assert_allclose(a.op_self, b.op_self)
    np.testing.assert_allclose(a.op_next, b.op_next)  # type: ignore[arg-type]


def test_format_1_routers_still_load_and_unknown_formats_are_refused(
    saved_model_dir, tmp_path
) -> None:
    import shutil

    # a model is written in today's format with every key; files of formats 1-4 (written
    # before) still load, reading bare answers (tests/router/model/test_legacy.py: all formats)
    meta = json.loads((saved_model_dir / "router.json").read_text())
    assert meta["format_version"] == FORMAT_VERSION and meta["params"]["answer_option_text"]
    assert meta["opinion_models"] == {} and meta["params"]["peers"] == {}
    model = CascadeModel.load(saved_model_dir)
    assert model.peer_models == () and model.opinion_models_ == {}
    old = tmp_path / "old"
    shutil.copytree(saved_model_dir, old)
    format_3_keys = (
        "pre_members",
        "post_blend",
        "opinion_models",
        "agreement_threshold",
        "cv_results",
    )
    format_1 = {k: v for k, v in meta.items() if k not in format_3_keys}
    format_1["format_version"] = 1
    format_1["params"] = {
        k: v
        for k, v in meta["params"].items()
        if k
        not in (
            "pre_ensemble",
            "peers",
            "answer_kinds",
            "answer_option_text",
            "samples",
            "sample_temperature",
            "folds",
            "capacity_cv_below",
        )
    }
    (old / "router.json").write_text(json.dumps(format_1))
    format_1_model = CascadeModel.load(old)
    assert format_1_model.pre_members_.members == ("lgbm",)
    assert format_1_model.answer_option_text is False
    meta["format_version"] = 99
    (old / "router.json").write_text(json.dumps(meta))
    with pytest.raises(RouterLoadError, match="reads formats 1, 2, 3, 4, 5, 6"):
        CascadeModel.load(old)


def test_bad_peer_configuration(tables, embedder) -> None:
    train = tables[0]
    with pytest.raises(ConfigurationError, match="first tier"):
        CascadeModel(list(TIERS), peers={1: PEER}).fit(train, embedder)
    with pytest.raises(ConfigurationError, match="are tiers"):
        CascadeModel(list(TIERS), peers={0: TIERS[1]}).fit(train, embedder)
    with pytest.raises(ConfigurationError, match="answer-aware"):
        CascadeModel(list(TIERS), peers={0: PEER}, answer_aware=False).fit(train, embedder)
    with pytest.raises(ConfigurationError, match="unknown answer kind"):
        CascadeModel(list(TIERS), answer_kinds={"math": "regex"}).fit(train, embedder)
    plain = tables[0].subset(np.arange(len(tables[0])))
    object.__setattr__(plain, "peers", None)
    with pytest.raises(ConfigurationError, match="recorded answers"):
        CascadeModel(list(TIERS), peers={0: PEER}).featurize(plain, embedder)


@pytest.fixture(scope="module")
def peer_router(peer_model, frame, embedder, tmp_path_factory) -> Router:
    """A loaded copy whose band is set to (0.2, 0.5): the pre-answer probabilities of the test
    prompts lie on both sides of 0.5, so that routes both ask and do not."""
    model = CascadeModel.load(peer_model.save(tmp_path_factory.mktemp("peer") / "router"))
    policy = model.policy_
    policy.global_ = dataclasses.replace(policy.global_, opinion_bands=((0.2, 0.5),))
    policy.per_step_ = {
        k: dataclasses.replace(v, opinion_bands=((0.2, 0.5),)) for k, v in policy.per_step_.items()
    }
    policy.certified_ = None  # hand-set points are not certified: the policy runs them as set
    return Router(
        model,
        embedder=embedder,
        backends=[ReplayBackend(frame, t) for t in TIERS],
        peers=[ReplayBackend(frame, PEER)],
    )


def test_route_asks_the_peer_where_the_policy_says(peer_router, tables) -> None:
    test = tables[1]
    point = peer_router.model.policy_.operating(None)
    seen = set()
    for i in range(60):
        step, prompt = str(test.steps[i]), test.prompts[i]
        result = peer_router.route(step, prompt)
        decision = peer_router.decide(step, prompt)
        seen.add(result.path)
        asked = "peer" in result.path
        assert asked == decision.ask_opinion
        if asked:
            assert result.path in {"small→peer→verified", "small→peer→escalated→frontier"}
            peer_step = next(s for s in result.steps if s.role == "peer")
            assert peer_step.tier == PEER and peer_step.action in {"agreed", "disagreed"}
            assert peer_step.cost_usd == pytest.approx(test.peers.costs[i, 0])
            assert "opinion_agreement" in result.probabilities
        assert result.cost_usd == pytest.approx(sum(s.cost_usd for s in result.steps))
        if result.path == "small→peer→escalated→frontier":
            assert result.cost_usd == pytest.approx(test.costs[i].sum() + test.peers.costs[i, 0])
    assert point.opinion_bands == ((0.2, 0.5),)
    assert any("peer" in p for p in seen) and any("peer" not in p for p in seen)


def test_aroute_asks_in_parallel_with_the_same_result(peer_router, tables) -> None:
    test = tables[1]
    for i in range(15):
        step, prompt = str(test.steps[i]), test.prompts[i]
        sync = peer_router.route(step, prompt)
        result = asyncio.run(peer_router.aroute(step, prompt))
        assert result.path == sync.path and result.cost_usd == pytest.approx(sync.cost_usd)


def test_decide_with_opinions_matches_route(peer_router, frame, tables) -> None:
    test = tables[1]
    small, peer = ReplayBackend(frame, TIERS[0]), ReplayBackend(frame, PEER)
    checked = 0
    for i in range(60):
        step, prompt = str(test.steps[i]), test.prompts[i]
        result = peer_router.route(step, prompt)
        if "peer" not in result.path:
            continue
        answer = small.complete(as_messages(prompt)).text
        opinion = peer.complete(as_messages(prompt)).text
        d = peer_router.decide(step, prompt, answer, opinions=[opinion])
        assert d.ask_opinion
        assert (d.action == "escalate") == ("escalated" in result.path)
        checked += 1
    with pytest.raises(ConfigurationError, match="opinions need answers"):
        peer_router.decide_batch(["x"], ["y"], opinions=[["z"]])
    assert checked > 0


def test_missing_peer_backend_is_a_clear_error(peer_router, frame, embedder, tables) -> None:
    model = peer_router.model
    with pytest.raises(ConfigurationError, match="no backend for peer"):
        Router(model, embedder=embedder, peers={"other": ReplayBackend(frame, TIERS[0])})
    no_peers = Router(model, embedder=embedder, backends=[ReplayBackend(frame, t) for t in TIERS])
    raised = False
    test = tables[1]
    for i in range(60):
        if no_peers.decide(str(test.steps[i]), test.prompts[i]).ask_opinion:
            with pytest.raises(ConfigurationError, match="second opinions"):
                no_peers.route(str(test.steps[i]), test.prompts[i])
            raised = True
            break
    assert raised


def test_subset_features_keeps_opinion_rows(peer_model, tables, embedder) -> None:
    feats = peer_model.featurize(tables[1].subset(np.arange(40)), embedder)
    assert "peers" in feats.opinions
    sub = subset_features(feats, np.array([5, 2]))
    full, part = feats.opinions["peers"], sub.opinions["peers"]
    assert part.first == [full.first[5], full.first[2]]
    for j, old in ((0, 5), (1, 2)):
        if old in full.embeddings:
            np.testing.assert_array_equal(part.embeddings[j], full.embeddings[old])


def test_mlflow_pyfunc_takes_opinions(peer_router, frame, tables, tmp_path) -> None:
    """The logged MLflow model (real sqlite store) decides with the peers' answers too."""
    import mlflow
    import pandas as pd

    from router.settings import RouterSettings
    from training import registry

    settings = RouterSettings(
        tracking_uri=f"sqlite:///{tmp_path}/mlflow.db",
        artifact_location=str(tmp_path / "mlruns"),
        experiment="test-verifier",
    )
    registry.open_tracking(settings)
    folder = peer_router.model.save(tmp_path / "saved")
    with mlflow.start_run() as run:
        info = registry.log_router(folder, run=run, input_example=None, registered_model=None)
    loaded = mlflow.pyfunc.load_model(info.model_uri)
    test = tables[1]
    small, peer = ReplayBackend(frame, TIERS[0]), ReplayBackend(frame, PEER)
    rows = range(20)
    inputs = [test.prompts[i] for i in rows]
    steps = [str(test.steps[i]) for i in rows]
    answers = [small.complete(as_messages(p)).text for p in inputs]
    opinions = [peer.complete(as_messages(p)).text for p in inputs]
    out = loaded.predict(
        pd.DataFrame(
            {
                "step": steps,
                "input": inputs,
                "answer": answers,
                "opinions": [json.dumps([o]) for o in opinions],
            }
        )
    )
    expected = peer_router.decide_batch(steps, inputs, answers, opinions=[[o] for o in opinions])
    assert list(out["action"]) == [d.action for d in expected]
    np.testing.assert_allclose(
        out["p_accept_answer"], [d.p_accept_answer for d in expected], atol=1e-4
    )
    assert out["ask_opinion"].eq(1.0).all()
    pre = loaded.predict(pd.DataFrame({"step": steps, "input": inputs}))
    assert list(pre["ask_opinion"]) == [
        float(d.ask_opinion) for d in peer_router.decide_batch(steps, inputs)
    ]


def test_evaluation_report_shows_with_and_without_opinions(peer_model, tables, embedder) -> None:
    from training.evaluate import evaluate

    train, test = tables
    train_f = peer_model.featurize(train, embedder)
    test_f = peer_model.featurize(test, embedder)
    report, curves = evaluate(
        peer_model, train, test, train_f, test_f, bootstrap_resamples=20, baselines=False
    )
    op = report["second_opinion"]
    assert op["peers"] == [PEER] and op["roc_auc"] > report["cascade_answer_aware"]["roc_auc"]
    for key in ("always", "fitted_band"):
        assert 0 < op[key]["apgr"] < 1.2 and 0 <= op[key]["share_at_95pct_quality"] <= 1
    for key in ("cascade_with_opinions", "cascade_opinion_policy"):
        low, high = report["intervals"][key]["apgr_ci95"]
        assert low <= high
    # every first-tier call pays its opinion: the always-ask curve starts above always-small
    always = curves.curves["cascade + second opinion (always)"]
    costs = peer_model.opinion_costs(test)
    assert always.cost[0] == pytest.approx(test.costs[:, 0].mean() + costs.mean())
    assert always.cost[-1] == pytest.approx(test.costs.sum(axis=1).mean() + costs.mean())
    policy = report["policy"]
    assert policy["peers"] == [PEER] and 0 <= policy["opinion_share"] <= 1
    assert set(policy["without_opinions"]) >= {"quality_ratio", "frontier_share", "cost_saved"}


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_peer_is_asked_in_parallel_over_real_http(peer_router, frame, tables, mode) -> None:
    """Two OpenAI-compatible servers that each take 1 s: asking both costs ~1 s, not 2."""
    import time

    from router.backends import OpenAIBackend
    from tests.support.openai_server import OpenAIStubServer

    model = peer_router.model
    policy = model.policy_
    saved = policy.global_, policy.per_step_, dict(policy._cache), policy.certified_
    policy.global_ = dataclasses.replace(policy.global_, opinion_bands=((0.0, math.inf),))
    policy.per_step_ = {}
    policy.certified_ = None
    # the timed calls name a target: force the band on that target's operating point too
    share_1 = Target.parse("share=1.0")
    forced = dataclasses.replace(policy.operating(None, share_1), opinion_bands=((0.0, math.inf),))
    policy._cache[str(share_1)] = (forced, {})
    try:
        with (
            OpenAIStubServer(lambda m: "The answer is (A).", delay_s=1.0) as small_srv,
            OpenAIStubServer(lambda m: "The answer is (B).", delay_s=1.0) as peer_srv,
        ):
            live = Router(
                model,
                embedder=peer_router.embedder,
                backends=[
                    OpenAIBackend(model=TIERS[0], base_url=small_srv.base_url, timeout_s=10),
                    ReplayBackend(frame, TIERS[1]),
                ],
                peers=[OpenAIBackend(model=PEER, base_url=peer_srv.base_url, timeout_s=10)],
            )
            test = tables[1]
            i = next(
                i
                for i in range(len(test))
                if live.decide("math", test.prompts[i], target="share=1.0").action == "call"
            )
            # warm up (no delay): the encoder, the openai import and both HTTP clients
            live.embedder.encode([f"load the encoder before timing ({mode}, {time.time()})"])
            small_srv.delay_s = peer_srv.delay_s = 0.0
            live.route("math", test.prompts[i], target="share=1.0")
            asyncio.run(live.aroute("math", test.prompts[i], target="share=1.0"))
            small_srv.delay_s = peer_srv.delay_s = 1.0
            t = time.perf_counter()
            if mode == "sync":
                result = live.route("math", test.prompts[i], target="share=1.0")
            else:
                result = asyncio.run(live.aroute("math", test.prompts[i], target="share=1.0"))
            elapsed = time.perf_counter() - t
    finally:
        policy.global_, policy.per_step_, policy._cache, policy.certified_ = saved
    assert result.path.startswith("small→peer→")
    peer_step = next(s for s in result.steps if s.role == "peer")
    assert peer_step.action == "disagreed" and peer_step.cost_usd > 0
    assert peer_step.latency_s >= 1.0
    assert result.probabilities["opinion_agreement"] == 0.0
    assert elapsed < 1.8  # sequential calls would take at least 2 s


def test_module_level_route_replays_the_peer_too(peer_router, tables, monkeypatch, tmp_path):
    """The default router answers from the bundled data: its peers are replayed as well."""
    import router as sdk

    folder = peer_router.model.save(tmp_path / "default")
    monkeypatch.setenv("CASCADE_DEFAULT_ROUTER", str(folder))
    test = tables[1]
    paths = {sdk.route(str(test.steps[i]), test.prompts[i]).path for i in range(25)}
    assert any("peer" in p for p in paths)


def test_three_tiers_with_a_peer_at_the_first(embedder) -> None:
    """phi-3 → llama-70b → gpt-4o with llama-8b's opinion at the first tier."""
    from training.evaluate import evaluate

    tiers = ["phi-3-mini-4k-instruct", "llama-3.1-70b-instruct", "gpt-4o-2024-05-13"]
    peer = "llama-3.1-8b-instruct"
    table = load_table([bundled_dataset("mmlu_pro")], tiers, peers=[peer]).sample(900, seed=2)
    train, test = table.split_by_prompt(0.25, seed=0)
    model = CascadeModel(
        tiers,
        peers={0: [peer]},
        acceptance_params={"n_estimators": 100},
        min_step_samples=10**6,
        capacity_cv_below=0,
    )
    train_f = model.featurize(train, embedder)
    model.fit(train, embedder, features=train_f)
    assert set(model.opinion_models_) == {"peers"}
    test_f = model.featurize(test, embedder)
    report, curves = evaluate(
        model, train, test, train_f, test_f, bootstrap_resamples=0, baselines=False
    )
    assert report["second_opinion"] is None  # the two-tier curves only
    c = curves.curves["cascade policy + second opinion (with skips)"]
    assert c.share.min() < 0.2 and c.share.max() > 0.8
    assert "curve_with_opinions" in report["policy"]
    # routing: an opinion never reaches past the first tier
    model.policy_.global_ = dataclasses.replace(model.policy_.global_, opinion_bands=((0.0, 1.1),))
    frame = load_outcomes([bundled_dataset("mmlu_pro")], models=[*tiers, peer])
    router = Router(
        model,
        embedder=embedder,
        backends=[ReplayBackend(frame, t) for t in tiers],
        peers=[ReplayBackend(frame, peer)],
    )
    for i in range(15):
        result = router.route(str(test.steps[i]), test.prompts[i])
        assert result.path.count("peer") <= 1
        if "peer" in result.path:
            assert result.path.startswith("small→peer→")


def test_cli_evaluate_with_a_peer(cache_dir, tmp_path) -> None:
    from typer.testing import CliRunner

    from training.cli.app import app

    env = {
        "CASCADE_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db",
        "CASCADE_ARTIFACT_LOCATION": str(tmp_path / "mlruns"),
        "CASCADE_CACHE_DIR": str(cache_dir),
        "CASCADE_PROGRESS": "false",
        "COLUMNS": "200",
    }
    runner = CliRunner()
    args = ["evaluate", "--sample", "800", "--bootstrap", "0", "--peer", PEER]
    args += ["--output-dir", str(tmp_path / "out")]
    result = runner.invoke(app, [*args, "--answer-kind", "math=number"], env=env)
    assert result.exit_code == 0, result.output
    assert "cascade + opinion (fitted band)" in result.output
    assert "second opinions bought on" in result.output
    assert f"peers({PEER})" in result.output
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["second_opinion"]["peers"] == [PEER]
    bad = runner.invoke(app, [*args, "--answer-kind", "math"], env=env)
    assert bad.exit_code == 2 and "STEP=KIND" in bad.output
    bad = runner.invoke(app, [*args, "--answer-kind", "math=regex"], env=env)
    assert bad.exit_code == 2 and "unknown answer kind" in bad.output
