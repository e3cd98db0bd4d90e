"""The walk as a state machine: what to call next, when to wait, what to stop with; the rules
shared by decide, route and the recorded walk; the validator stage in the walk."""

from __future__ import annotations

import math

import numpy as np
import pytest

from router import Router
from router.backends import (
    AssistantMessage,
    Completion,
    FunctionCall,
    ReplayBackend,
    ToolCall,
    as_request,
)
from router.errors import BackendUnavailableError
from router.policy import CascadeSignals, escalates, first_called, verdict, walk_recorded
from router.sdk import TierStep
from router.sdk.results import cascade_path
from router.sdk.walk import Call, CascadeWalk, Done, Wait
from tests.conftest import TIERS
from tests.router.backends.test_requests import WEATHER

NAMED = {"type": "function", "function": {"name": "get_weather"}}


@pytest.fixture(scope="module")
def router(saved_model_dir, mmlu_frame, embedder) -> Router:
    r = Router.load(saved_model_dir, embedder=embedder)
    return r.with_backends([ReplayBackend(mmlu_frame, t) for t in TIERS])


def answer(message: AssistantMessage, model: str = TIERS[0]) -> Completion:
    return Completion(message, model, input_tokens=20, output_tokens=10, latency_s=0.1)


def weather_call(arguments: str, name: str = "get_weather") -> AssistantMessage:
    return AssistantMessage(
        tool_calls=[ToolCall(id="c1", function=FunctionCall(name=name, arguments=arguments))]
    )


def test_the_walk_says_what_to_do_and_retries_the_top(router: Router) -> None:
    request = as_request("What is the weather in Paris?", tools=[WEATHER], tool_choice=NAMED)
    walk = CascadeWalk(router, "tool_select", request, "share=0", retries=2, retry_backoff_s=0.5)
    assert walk.next() == Call(0)  # share=0: never skip the small tier
    walk.failed(BackendUnavailableError("small down"))
    assert walk.next() == Call(1)
    walk.failed(BackendUnavailableError("top down"))
    assert walk.next() == Wait(0.5)
    assert walk.next() == Call(1)
    walk.failed(BackendUnavailableError("top down again"))
    assert walk.next() == Wait(1.0)
    assert walk.next() == Call(1)
    good = weather_call('{"city": "Paris", "unit": "c"}')
    walk.answered(answer(good, TIERS[1]))
    done = walk.next()
    assert isinstance(done, Done)
    assert done.result.path == "small→failed→frontier"
    assert done.result.message == good
    with pytest.raises(BackendUnavailableError, match="no more"):
        exhausted = CascadeWalk(router, "tool_select", request, "share=0")
        exhausted.failed(BackendUnavailableError("small"))
        exhausted.failed(BackendUnavailableError("no more"))


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (weather_call('{"city": "Paris"}'), "'unit' is a required property"),
        (weather_call('{"city": "Paris", "unit": "kelvin"}'), "'kelvin' is not one of"),
        (weather_call('{"city": 78.2, "unit": "c"}'), "78.2 is not of type 'string'"),
        (weather_call('{ "city": "78.2, 10C}\nThe weather'), "is not JSON"),
        (weather_call("{}", name="search"), "although tool_choice names 'get_weather'"),
        (AssistantMessage(content="It is sunny in Paris."), "tool_choice requires"),
    ],
)
def test_an_invalid_answer_escalates_whatever_the_probabilities(
    router: Router, message: AssistantMessage, reason: str
) -> None:
    request = as_request("What is the weather in Paris?", tools=[WEATHER], tool_choice=NAMED)
    # share=0 accepts every valid small answer: only the validator can send this one up
    walk = CascadeWalk(router, "tool_select", request, "share=0")
    walk.answered(answer(message))
    assert walk.next() == Call(1)
    assert reason in walk.invalid[TIERS[0]]
    top = weather_call('{"city": "Paris", "unit": "c"}')
    walk.answered(answer(top, TIERS[1]))
    result = walk.result()
    assert result.path == "small→invalid→frontier"
    assert result.message == top  # the refused answer is never returned
    assert result.validity == {TIERS[0]: False, TIERS[1]: True}
    assert f"post:{TIERS[0]}" not in result.probabilities  # refused before any probability
    assert set(result.usage) == set(TIERS)


def test_a_valid_answer_is_judged_by_the_probabilities(router: Router) -> None:
    request = as_request("What is the weather in Paris?", tools=[WEATHER], tool_choice=NAMED)
    good = weather_call('{"city": "Paris", "unit": "c"}')
    kept = CascadeWalk(router, "tool_select", request, "share=0")
    kept.answered(answer(good))
    assert kept.result().path == "small→verified" and kept.result().validity == {TIERS[0]: True}
    # the decision reads the same answer the same way
    decision = router.decide("tool_select", request, good, target="share=0")
    assert (decision.action, decision.valid, decision.path) == ("accept", True, "small→verified")
    bad = router.decide("tool_select", request, weather_call("{}"), target="share=0")
    assert (bad.action, bad.valid, bad.path) == ("escalate", False, "small→invalid→frontier")
    assert "required property" in str(bad.invalid_reason)


def test_decide_and_route_walk_alike(router: Router, split_tables) -> None:
    _, test = split_tables
    for i in range(12):
        step, prompt = str(test.steps[i]), test.prompts[i]
        routed = router.route(step, prompt)
        decided = router.decide(step, prompt)
        if decided.action == "skip":
            assert routed.path == decided.path == "skipped→frontier"
            continue
        assert decided.path == "small"
        small = router.backends[0].complete(prompt)  # type: ignore[index]
        after = router.decide(step, prompt, small.text)
        assert routed.path.startswith(after.path.removesuffix("→frontier"))
        assert after.valid is None  # a plain prompt constrains nothing


def test_the_rules_are_shared() -> None:
    assert escalates(0.2, 1.0, 0.1) and not escalates(0.05, 1.0, 0.1)
    assert escalates(-1.0, math.inf, 0.0, valid=0.0)  # refused: escalates even at lam = inf
    assert not escalates(-1.0, math.inf, 0.0, valid=math.nan)
    np.testing.assert_array_equal(
        escalates(np.array([0.0, 0.0, 0.5]), 1.0, 0.1, np.array([1.0, 0.0, np.nan])),
        [False, True, True],
    )
    assert first_called(np.array([0.1, 0.2, 0.9]), (0.3, 0.3)) == 2
    assert first_called(np.array([0.5, 0.2, 0.9]), (0.3, 0.3)) == 0
    assert verdict(None, 1.0, 0.1, valid=False) == "invalid"
    assert verdict(0.0, 1.0, 0.1, valid=True) == "verified"


def test_paths_are_built_by_one_function() -> None:
    small, peer = TierStep("s", "small", "verified", 0.5), TierStep("p", "peer", "agreed", None)
    assert cascade_path([small, peer]) == "small→peer→verified"
    assert cascade_path([], "small") == "small"
    assert cascade_path([TierStep("s", "small", "skipped", 0.1)], "frontier") == (
        "skipped→frontier"
    )
    invalid = TierStep("s", "small", "invalid", 0.5)
    assert cascade_path([invalid, TierStep("f", "frontier", "answered", 0.9)]) == (
        "small→invalid→frontier"
    )


def test_the_recorded_walk_applies_the_validator() -> None:
    pre = np.array([[0.9, 0.9]] * 4)
    signals = CascadeSignals(pre, pre[:, :1].copy(), pre[:, 1:].copy())  # gain 0: keep small
    scores = np.array([[1.0, 1.0], [0.0, 1.0], [1.0, 1.0], [0.0, 1.0]])
    costs = np.array([[0.1, 1.0]] * 4)
    weights = np.array([1.0])
    plain, _ = walk_recorded(signals, scores, costs, lam=0.5, tier_weights=weights)
    assert plain.answer_tier.tolist() == [0, 0, 0, 0]
    valid = np.array([1.0, 0.0, np.nan, 0.0])
    checked, _ = walk_recorded(signals, scores, costs, lam=0.5, tier_weights=weights, valid=valid)
    assert checked.answer_tier.tolist() == [0, 1, 0, 1]  # the refused answers escalated
    assert checked.quality.mean() > plain.quality.mean()
    assert checked.cost.tolist() == pytest.approx([0.1, 1.1, 0.1, 1.1])
