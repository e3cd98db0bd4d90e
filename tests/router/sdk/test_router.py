"""The SDK: Router.route / aroute / decide over real backends (replay and real HTTP)."""

from __future__ import annotations

import asyncio

import pytest

from router import Router, RouteResult
from router.backends import OpenAIBackend, ReplayBackend, as_messages
from router.embedders import SentenceTransformerEmbedder
from router.errors import BackendUnavailableError, ConfigurationError, RouterLoadError
from tests.conftest import TIERS
from tests.support.openai_server import OpenAIStubServer

PATHS = {"small→verified", "small→escalated→frontier", "skipped→frontier"}


@pytest.fixture(scope="module")
def router(saved_model_dir, mmlu_frame, embedder) -> Router:
    r = Router.load(saved_model_dir, embedder=embedder)
    return r.with_backends([ReplayBackend(mmlu_frame, t) for t in TIERS])


def test_route_returns_a_typed_result(router: Router, split_tables) -> None:
    _, test = split_tables
    seen = set()
    for i in range(40):
        result = router.route(str(test.steps[i]), test.prompts[i])
        assert isinstance(result, RouteResult)
        assert result.path in PATHS
        seen.add(result.path)
        assert result.tier in TIERS
        assert result.cost_usd > 0 and result.latency_s >= result.router_latency_s > 0
        assert 0 < result.probabilities[f"pre:{TIERS[0]}"] < 1
        # the recorded answer of the tier that answered comes back
        expected = test.scores[i, TIERS.index(result.tier)]
        assert result.score == expected
        if result.path == "small→escalated→frontier":
            assert result.cost_usd == pytest.approx(test.costs[i].sum())
    assert len(seen) >= 2


def test_route_accepts_chat_messages_and_async(router: Router, split_tables) -> None:
    _, test = split_tables
    messages = [{"role": "user", "content": test.prompts[0]}]
    sync = router.route(str(test.steps[0]), messages)
    result = asyncio.run(router.aroute(str(test.steps[0]), messages))
    assert result.path == sync.path and result.answer == sync.answer


def test_decide_matches_route(router: Router, split_tables) -> None:
    _, test = split_tables
    for i in range(10):
        d = router.decide(str(test.steps[i]), test.prompts[i])
        r = router.route(str(test.steps[i]), test.prompts[i])
        assert (d.action == "skip") == r.path.startswith("skipped")
        if d.action == "call":
            answer = router.backends[0].complete(as_messages(test.prompts[i])).text
            after = router.decide(str(test.steps[i]), test.prompts[i], answer=answer)
            assert (after.action == "escalate") == ("escalated" in r.path)


def test_route_reads_answers_as_the_offline_model_does(router: Router, split_tables) -> None:
    """The live answer-aware probability equals the offline one: both read each multiple-choice
    answer with the text of the option it picks."""
    import numpy as np

    from router.features import answer_window

    _, test = split_tables
    rows = np.arange(12)
    offline = router.model.signals(test.subset(rows), router.embedder).post_self[:, 0]
    for j in rows:
        result = router.route(str(test.steps[j]), test.prompts[j])
        live = result.probabilities.get(f"post:{TIERS[0]}")
        if live is not None:  # the small model was called (not skipped)
            assert live == pytest.approx(offline[j], abs=1e-9)
    answers = list(test.responses[0][:12])
    read = router.model.answer_windows(answers, test.prompts[:12])
    assert sum(r != answer_window(a) for r, a in zip(read, answers, strict=True)) >= 6


def test_per_request_target_changes_decisions(router: Router, split_tables) -> None:
    _, test = split_tables
    cheap = [
        router.decide(str(s), p, target="share=0.0")
        for s, p in zip(test.steps[:30], test.prompts[:30], strict=True)
    ]
    assert all(d.action == "call" for d in cheap)  # never skip to the frontier at share 0


def test_openai_backend_over_real_http(router: Router, mmlu_frame, split_tables) -> None:
    _, test = split_tables
    with OpenAIStubServer(lambda messages: "Let me think. The answer is (A).") as server:
        small = OpenAIBackend(model=TIERS[0], base_url=server.base_url, timeout_s=5)
        live = router.with_backends([small, ReplayBackend(mmlu_frame, TIERS[1])])
        result = live.route("math", test.prompts[1], target="share=0.0")
        assert result.path == "small→verified"
        assert result.answer == "Let me think. The answer is (A)."
        assert result.cost_usd > 0  # priced from the usage the server reported
        assert server.requests


def test_unreachable_backend_is_a_clear_error(router: Router, mmlu_frame, split_tables) -> None:
    _, test = split_tables
    with OpenAIStubServer() as server:
        url = server.base_url
    dead = OpenAIBackend(model=TIERS[0], base_url=url, timeout_s=2, max_retries=0)
    live = router.with_backends([dead, ReplayBackend(mmlu_frame, TIERS[1])])
    # a dead small tier: the request escalates and says why
    result = live.route("math", test.prompts[1], target="share=0.0")
    assert result.path == "small→failed→frontier"
    assert result.tier == TIERS[1]
    assert "unreachable" in result.failures[TIERS[0]]
    # a dead top tier too: retried, then a clear error
    dead_top = OpenAIBackend(model=TIERS[1], base_url=url, timeout_s=2, max_retries=0)
    failing = router.with_backends([dead, dead_top])
    with pytest.raises(BackendUnavailableError, match="unreachable"):
        failing.route("math", test.prompts[1], retries=1, retry_backoff_s=0)
    with pytest.raises(BackendUnavailableError, match="unreachable"):
        asyncio.run(failing.aroute("math", test.prompts[1], retries=2, retry_backoff_s=0.01))


def test_input_errors(router: Router) -> None:
    with pytest.raises(ConfigurationError):
        router.route("math", [])
    with pytest.raises(ConfigurationError):
        router.route("", "hello")
    with pytest.raises(ConfigurationError):
        router.route("math", "x", target="speed=1")
    with pytest.raises(ConfigurationError, match="backends"):
        Router(router.model, router.embedder).route("math", "hello")


def test_embedder_mismatch_is_refused(router: Router) -> None:
    other = SentenceTransformerEmbedder(max_seq_length=32)
    with pytest.raises(ConfigurationError, match="trained with embedder"):
        Router(router.model, other)


def test_load_errors(tmp_path) -> None:
    with pytest.raises(RouterLoadError):
        Router.load(tmp_path / "nothing")


def test_module_level_route_uses_default_router(saved_model_dir, monkeypatch, split_tables) -> None:
    import router as sdk

    _, test = split_tables
    monkeypatch.setenv("CASCADE_DEFAULT_ROUTER", str(saved_model_dir))
    result = sdk.route(str(test.steps[0]), test.prompts[0])
    assert result.path in PATHS and result.answer


def test_decisions_and_results_are_strict_json() -> None:
    import json
    import math

    from router.sdk import Decision, json_safe

    decision = Decision("math", "small", "call", 0.5, 0.6, 0.1, lam=-math.inf, skip_threshold=0.2)
    text = json.dumps(decision.to_json_dict(), allow_nan=False)
    assert json.loads(text)["lam"] == "-inf"
    assert decision.to_dict()["lam"] == -math.inf  # typed values stay typed in to_dict
    assert json_safe({"a": [math.nan, math.inf, 1.5], "b": (2,)}) == {
        "a": [None, "inf", 1.5],
        "b": [2],
    }


def test_per_request_targets_are_certified_as_evaluation_certifies(
    router: Router, split_tables, embedder
) -> None:
    """A target asked per request runs the point evaluation certifies for the same target, and
    the decision carries that certificate; one the router cannot certify is refused."""
    from router.errors import TargetNotCertifiableError
    from router.policy import Target
    from training.evaluate import evaluate

    train, test = split_tables
    model = router.model
    target = Target(quality_ratio=0.9)
    report, _ = evaluate(
        model,
        train,
        test,
        model.featurize(train, embedder),
        model.featurize(test, embedder),
        target,
        bootstrap_resamples=0,
        baselines=False,
    )
    certified = report["certification"]
    for i in range(8):
        decision = router.decide(str(test.steps[i]), test.prompts[i], target="quality=0.9")
        cert = decision.certificate
        assert cert is not None and cert["bound"] == certified["bound"] == {"quality_ratio": 0.9}
        assert cert["delta"] == certified["delta"] == 0.1
        scope = cert["scope"]
        expected = (
            certified["point"]["lam"] if scope == "global" else certified["per_step"][scope]["lam"]
        )
        assert cert["point"]["lam"] == expected == decision.lam
    routed = router.route(str(test.steps[0]), test.prompts[0], target="quality=0.9")
    assert (
        routed.certificate
        == router.decide(str(test.steps[0]), test.prompts[0], target=target).certificate
    )
    # the router's own target: the certificate fitted with it
    own = router.decide(str(test.steps[0]), test.prompts[0]).certificate
    assert own is not None and own["target"] == "quality_ratio=0.95"
    with pytest.raises(TargetNotCertifiableError, match=r"cannot be certified with .* outcomes"):
        router.route(str(test.steps[0]), test.prompts[0], target="quality=0.999")
