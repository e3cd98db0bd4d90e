"""Extra samples of the first tier as a second-opinion source, beside a peer: a real router
trained on SmolLM2-135M's recorded answers and samples (bundled ``routerbench_smollm2``)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math

import numpy as np
import pytest

from router import Router
from router.backends import Completion, ReplayBackend, as_messages
from router.data import OutcomeTable, bundled_dataset, load_outcomes
from router.errors import ConfigurationError
from router.model import CascadeModel
from router.opinions import sample_model_names
from router.policy import CascadeSignals

SMALL, FRONTIER, PEER = "smollm2-135m-instruct", "gpt-4-1106-preview", "mistral-7b-chat"
TIERS = (SMALL, FRONTIER)
SAMPLES = sample_model_names(SMALL, 3)
KINDS = {"arc-challenge": "choice", "winogrande": "choice"}
FAST = {"n_estimators": 120, "early_stopping_rounds": 20}


@pytest.fixture(scope="module")
def frame():
    return load_outcomes([bundled_dataset("routerbench_smollm2")], models=[*TIERS, PEER, *SAMPLES])


@pytest.fixture(scope="module")
def tables(frame) -> tuple[OutcomeTable, OutcomeTable]:
    table = OutcomeTable.from_long(frame, TIERS, peers=[PEER, *SAMPLES])
    return table.split_by_prompt(0.25, seed=0)


@pytest.fixture(scope="module")
def model(tables, embedder) -> CascadeModel:
    return CascadeModel(
        list(TIERS),
        peers={0: PEER},
        samples=3,
        answer_kinds=KINDS,
        acceptance_params=FAST,
        min_step_samples=10_000,
        capacity_cv_below=0,
    ).fit(tables[0], embedder)


@pytest.fixture(scope="module")
def signals(model, tables, embedder) -> CascadeSignals:
    return model.signals(tables[1], embedder)


def forced(model: CascadeModel, bands) -> CascadeModel:
    """The model with every operating point buying opinions in ``bands`` (one per source) and
    skipping nothing (SmolLM2 is hopeless on many prompts)."""
    policy = model.policy_

    def force(point):
        return dataclasses.replace(
            point, opinion_bands=bands, skip_thresholds=(0.0,) * len(point.skip_thresholds)
        )

    policy.global_ = force(policy.global_)
    policy.per_step_ = {k: force(v) for k, v in policy.per_step_.items()}
    policy.certified_ = None  # hand-set points are not certified: the policy runs them as set
    return model


@pytest.fixture
def router(model, frame, embedder, tmp_path) -> Router:
    """A fresh copy of the model (its bands may be forced) routing through replay backends."""
    copy = CascadeModel.load(model.save(tmp_path / "router"))
    return Router(
        copy,
        embedder=embedder,
        backends=[ReplayBackend(frame, SMALL), ReplayBackend(frame, FRONTIER)],
        peers=[ReplayBackend(frame, PEER)],
    )


def test_sources_signals_and_costs(model, signals, tables) -> None:
    names = [s.name for s in model.opinion_sources]
    assert names == ["peers", "samples"]
    assert model.opinion_source("samples").models == SAMPLES
    assert model.opinion_source("samples").temperature == 0.7
    assert set(model.opinion_models_) == {"peers", "samples"}
    assert signals.n_sources == 2 and signals.op_self is not None
    assert signals.op_self.shape == (len(tables[1]), 2)
    costs = model.opinion_costs(tables[1])
    assert costs is not None and costs.shape == (len(tables[1]), 2)
    # three samples of a 135M model cost less than one answer of a 7B peer
    assert costs[:, 1].mean() < costs[:, 0].mean()
    with pytest.raises(ConfigurationError, match="no opinion source 'votes'"):
        model.opinion_source("votes")


def test_samples_need_recorded_samples_and_sane_settings(frame, embedder) -> None:
    no_samples = OutcomeTable.from_long(frame, TIERS, peers=[PEER])
    with pytest.raises(ConfigurationError, match="reads samples from"):
        CascadeModel(list(TIERS), samples=3, acceptance_params=FAST).fit(no_samples, embedder)
    for bad in ({"samples": -1}, {"samples": 17}, {"samples": 2, "sample_temperature": 0.0}):
        with pytest.raises(ConfigurationError):
            CascadeModel(list(TIERS), **bad).fit(no_samples, embedder)
    with pytest.raises(ConfigurationError, match="answer-aware"):
        CascadeModel(list(TIERS), samples=2, answer_aware=False).fit(no_samples, embedder)


def test_saved_and_loaded_the_same(model, tables, embedder, signals, tmp_path) -> None:
    from router.model import FORMAT_VERSION

    folder = model.save(tmp_path / "m")
    meta = json.loads((folder / "router.json").read_text())
    assert meta["format_version"] == FORMAT_VERSION and meta["params"]["samples"] == 3
    loaded = CascadeModel.load(folder)
    assert [s.name for s in loaded.opinion_sources] == ["peers", "samples"]
    again = loaded.signals(tables[1], embedder)
    assert again.op_self is not None and signals.op_self is not None
    np.testing.assert_allclose(again.op_self, signals.op_self)
    assert loaded.policy_.global_ == model.policy_.global_


def test_route_buys_the_samples_where_their_band_says(router, frame, tables) -> None:
    forced(router.model, (None, (0.0, math.inf)))
    test = tables[1]
    for i in range(5):
        result = router.route(str(test.steps[i]), test.prompts[i])
        assert result.path.startswith("small→sample→sample→sample→"), result.path
        sampled = [s for s in result.steps if s.role == "sample"]
        assert [s.tier for s in sampled] == list(SAMPLES)
        assert all(s.action in ("agreed", "disagreed") for s in sampled)
        assert "opinion_agreement" in result.probabilities
        recorded = frame[frame["prompt"] == test.prompts[i]].set_index("model")["cost_usd"]
        paid = recorded[SMALL] + sum(recorded[s] for s in SAMPLES)
        if result.tier == FRONTIER:
            paid += recorded[FRONTIER]
        assert result.cost_usd == pytest.approx(paid)
        again = asyncio.run(router.aroute(str(test.steps[i]), test.prompts[i]))
        assert (again.path, again.answer, again.cost_usd) == (
            result.path,
            result.answer,
            pytest.approx(result.cost_usd),
        )


def test_the_first_source_whose_band_holds_p_is_asked(router, tables) -> None:
    forced(router.model, ((0.0, math.inf), (0.0, math.inf)))
    test = tables[1]
    result = router.route(str(test.steps[0]), test.prompts[0])
    assert result.path.startswith("small→peer→"), result.path
    assert not any(s.role == "sample" for s in result.steps)
    decision = router.decide(str(test.steps[0]), test.prompts[0])
    assert decision.ask_opinion and decision.opinion_source == "peers"
    forced(router.model, (None, None))
    plain = router.route(str(test.steps[0]), test.prompts[0])
    assert plain.path in ("small→verified", "small→escalated→frontier", "skipped→frontier")
    assert router.decide(str(test.steps[0]), test.prompts[0]).opinion_source is None


def test_decide_with_samples_matches_route(router, frame, tables) -> None:
    forced(router.model, (None, (0.0, math.inf)))
    test = tables[1]
    step, prompt = str(test.steps[2]), test.prompts[2]
    result = router.route(step, prompt)
    rows = frame[frame["prompt"] == prompt].set_index("model")["response"]
    decision = router.decide(
        step,
        prompt,
        answer=rows[SMALL],
        opinions=[rows[s] for s in SAMPLES],
        opinion_source="samples",
    )
    assert decision.opinion_source == "samples"
    assert decision.p_accept_answer == pytest.approx(result.probabilities[f"post:{SMALL}"])
    with pytest.raises(ConfigurationError, match="give 3 samples"):
        router.decide(
            step, prompt, answer=rows[SMALL], opinions=[rows[SAMPLES[0]]], opinion_source="samples"
        )


class NoSampling:
    """A chat backend that cannot draw extra samples."""

    def __init__(self, inner: ReplayBackend) -> None:
        self.inner, self.model = inner, inner.model

    def complete(self, messages, *, max_tokens=None) -> Completion:
        return self.inner.complete(messages, max_tokens=max_tokens)

    async def acomplete(self, messages, *, max_tokens=None) -> Completion:
        return self.inner.complete(messages, max_tokens=max_tokens)


def test_a_backend_that_cannot_sample_is_a_clear_error(router, frame, tables) -> None:
    forced(router.model, (None, (0.0, math.inf)))
    plain = router.with_backends([NoSampling(ReplayBackend(frame, SMALL)), router.backends[1]])
    test = tables[1]
    with pytest.raises(ConfigurationError, match="cannot sample"):
        plain.route(str(test.steps[0]), test.prompts[0])


def test_replayed_samples_answer_as_recorded(frame, tables) -> None:
    backend = ReplayBackend(frame, SMALL)
    assert backend.recorded_samples == 3
    prompt = tables[1].prompts[0]
    got = backend.sample(as_messages(prompt), 3, 0.7)
    rows = frame[frame["prompt"] == prompt].set_index("model")["response"]
    assert [c.text for c in got] == [rows[s] for s in SAMPLES]


def test_data_without_samples_says_how_to_record_them() -> None:
    from router.data import load_table
    from router.errors import DataValidationError

    tiers = ["mixtral-8x7b-instruct-v0.1", "gpt-4-1106-preview"]
    with pytest.raises(DataValidationError, match="cascade-router record --samples"):
        load_table([bundled_dataset("gsm8k")], tiers, peers=sample_model_names(tiers[0], 2))
