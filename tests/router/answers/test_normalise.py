"""Answer normalisers on the bundled data's real responses, and the agreement features."""

from __future__ import annotations

import numpy as np
import pytest

from router.answers.normalise import (
    AutoNormaliser,
    ChoiceNormaliser,
    JsonNormaliser,
    LabelNormaliser,
    Normaliser,
    NormaliserRegistry,
    NumberNormaliser,
    TextNormaliser,
    build_normaliser,
    normaliser_spec,
)
from router.data import OutcomeTable, bundled_dataset, load_outcomes
from router.errors import ConfigurationError
from router.features import answer_window
from router.opinions.agreement import AGREEMENT_COLUMNS, AgreementScorer


def _pair(dataset: str, a: str, b: str, n: int, task: str | None = None) -> OutcomeTable:
    frame = load_outcomes([bundled_dataset(dataset)], models=[a, b])
    if task is not None:
        frame = frame[frame["task"] == task]
    return OutcomeTable.from_long(frame, [a, b]).sample(n, seed=1)


def _consistency(table: OutcomeTable, normaliser: Normaliser) -> tuple[float, float, float]:
    """Parse rate, and how often equal / different keys match the recorded scores.

    Two answers with the same key to the same question must score alike; two with different
    keys cannot both be right (one gold answer). A parser that misreads answers fails this.
    """
    keys = [[normaliser.normalise(r) for r in column] for column in table.responses]
    both = [j for j in range(len(table)) if keys[0][j] is not None and keys[1][j] is not None]
    same = [j for j in both if keys[0][j] == keys[1][j]]
    diff = [j for j in both if keys[0][j] != keys[1][j]]
    s = table.scores
    same_ok = np.mean([s[j, 0] == s[j, 1] for j in same])
    diff_ok = np.mean([not (s[j, 0] >= 0.5 and s[j, 1] >= 0.5) for j in diff])
    return len(both) / len(table), float(same_ok), float(diff_ok)


def test_choice_letters_on_mmlu_pro_responses() -> None:
    table = _pair("mmlu_pro", "llama-3.1-8b-instruct", "phi-3-mini-4k-instruct", 1500)
    parsed, same_ok, diff_ok = _consistency(table, ChoiceNormaliser())
    assert parsed > 0.7
    assert same_ok > 0.97 and diff_ok > 0.97


def test_numbers_on_gsm8k_responses() -> None:
    table = _pair("gsm8k", "mixtral-8x7b-instruct-v0.1", "gpt-4-1106-preview", 600)
    parsed, same_ok, diff_ok = _consistency(table, NumberNormaliser())
    assert parsed > 0.95  # gpt-4 rarely writes "####": its last number is its answer
    # the recorded grader marks "$2.00" wrong where the gold answer is 2 (≈ 5% of pairs)
    assert same_ok > 0.93 and diff_ok > 0.97


@pytest.mark.parametrize("task", ["arc-challenge", "winogrande"])
def test_labels_on_routerbench_responses(task: str) -> None:
    table = _pair("routerbench", "mistral-7b-chat", "WizardLM-13B-V1.2", 400, task)
    labels = LabelNormaliser(["A", "B", "C", "D"] if task == "arc-challenge" else ["A", "B"])
    parsed, same_ok, diff_ok = _consistency(table, labels)
    assert parsed > 0.9
    assert same_ok > 0.95 and diff_ok > 0.95


def test_number_forms() -> None:
    n = NumberNormaliser()
    assert n.normalise("so 3 + 4 = 7\n#### 1,234") == "1234"
    assert n.normalise("The answer is $3.50.") == "3.5"
    assert n.normalise("#### 12.0") == "12"
    assert n.normalise("no number here") is None


def test_label_forms() -> None:
    n = LabelNormaliser(["billing", "tech-support", "other"])
    assert n.normalise(" Billing.") == "billing"
    assert n.normalise("This looks like a tech-support request.") == "tech-support"
    assert n.normalise("support") is None  # a label inside another word does not count
    with pytest.raises(ConfigurationError):
        LabelNormaliser([])


def test_json_canonical_form() -> None:
    n = JsonNormaliser()
    a = n.normalise('Here you go:\n```json\n{"b": 1, "a": ["x", 2.0]}\n```')
    b = n.normalise('{"a":["x",2],"b":1.0}')
    c = n.normalise('The tool call is {\n  "a": [" x "],\n  "b": 1\n}. Done.')
    assert a == b == '{"a":["x",2],"b":1}'
    assert c == '{"a":["x"],"b":1}'
    assert n.normalise('{"a": 1') is None  # broken JSON is not an answer
    assert n.normalise("") is None


def test_auto_and_registry_round_trip() -> None:
    auto = AutoNormaliser()
    assert auto.normalise("the answer is (B)") == "choice:B"
    assert auto.normalise("#### 42") == "number:42"
    assert auto.normalise("def f(): pass") is None
    registry = NormaliserRegistry({"intent": "label:a,b", "math": "number", "code": "text"})
    again = NormaliserRegistry.from_dict(registry.to_dict())
    assert again.for_step("intent").normalise("B") == "b"
    assert isinstance(again.for_step("code"), TextNormaliser)
    assert isinstance(again.for_step("unknown"), AutoNormaliser)
    assert build_normaliser({"kind": "label", "labels": ["x"]}).normalise("x") == "x"
    with pytest.raises(ConfigurationError, match="unknown answer kind"):
        build_normaliser("regex")


def test_agreement_features() -> None:
    scorer = AgreementScorer(NormaliserRegistry({"mc": "choice"}))
    f = dict(
        zip(
            AGREEMENT_COLUMNS,
            scorer.features("mc", "answer is (A)", ["answer is A", "answer is (B)", "?"]),
            strict=True,
        )
    )
    assert f["n_opinions"] == 3
    assert f["agreement_rate"] == pytest.approx(1 / 3)
    assert f["largest_cluster_share"] == pytest.approx(2 / 4)
    assert f["first_in_largest_cluster"] == 1.0
    assert f["first_parsed"] == 1.0
    assert f["opinions_parsed_share"] == pytest.approx(2 / 3)
    alone = scorer.features("mc", "answer is (A)", [])
    assert alone[0] == 0 and np.isnan(alone[1])


def test_free_text_threshold_is_learned_on_real_code_answers(embedder) -> None:
    """mbpp answers have no normal form: similarity of the answers, cut where it best
    separates right first answers from wrong ones; agreeing pairs are right more often."""
    table = _pair("routerbench", "mistral-7b-chat", "WizardLM-13B-V1.2", 300, "mbpp")
    first = embedder.encode([answer_window(r) for r in table.responses[0]])
    other = embedder.encode([answer_window(r) for r in table.responses[1]])
    y = table.labels(0)
    scorer = AgreementScorer(NormaliserRegistry({"mbpp": "text"}), threshold=2.0)
    scorer.fit(first[:200], other[:200], y[:200])
    assert 0.0 < scorer.threshold < 1.0
    agree = np.array(
        [
            scorer.features(
                "mbpp",
                table.responses[0][j],
                [table.responses[1][j]],
                np.vstack([first[j], other[j]]),
            )[1]
            for j in range(200, 300)
        ]
    )
    held_y = y[200:]
    assert 0 < agree.sum() < len(agree)
    assert held_y[agree == 1].mean() > held_y[agree == 0].mean()


def test_tool_calls_agree_on_name_and_canonical_arguments() -> None:
    from router.answers.normalise import ToolCallNormaliser
    from router.backends import AssistantMessage, FunctionCall, ToolCall, message_text, record_text

    def answer(*calls: tuple[str, str], ids: str = "a") -> AssistantMessage:
        return AssistantMessage(
            tool_calls=[
                ToolCall(id=f"{ids}{k}", function=FunctionCall(name=n, arguments=a))
                for k, (n, a) in enumerate(calls)
            ]
        )

    one = answer(("get_weather", '{"city": "Paris", "unit": "c"}'), ("search", "{}"))
    # another model: other ids, key order, whitespace, the calls the other way round
    two = answer(("search", "{ }"), ("get_weather", '{"unit":"c","city":" Paris"}'), ids="zz")
    other = answer(("get_weather", '{"city": "Lyon", "unit": "c"}'), ("search", "{}"))
    normaliser, auto = ToolCallNormaliser(), build_normaliser("auto")
    keys = [normaliser.normalise(message_text(m)) for m in (one, two, other)]
    assert keys[0] == keys[1] == 'get_weather({"city":"Paris","unit":"c"});search({})'
    assert keys[2] != keys[0]
    assert normaliser.normalise(record_text(one)) == keys[0]  # the recorded form reads alike
    assert auto.normalise(message_text(one)) == f"tool_call:{keys[0]}"  # not "number:…"
    assert normaliser.normalise("The answer is 3.") is None
    assert normaliser.normalise('{"tool_calls": []}') is None
    assert build_normaliser("tool_call").kind == "tool_call"
    assert normaliser_spec(normaliser) == "tool_call"
    registry = NormaliserRegistry({"tool_select": "tool_call"})
    scorer = AgreementScorer(registry)
    row = scorer.features(
        "tool_select", message_text(one), [message_text(two), message_text(other)]
    )
    assert row[1] == 0.5  # one of the two opinions makes the same calls


def test_agent_steps_read_tool_calls_and_json_unless_told_otherwise() -> None:
    registry = NormaliserRegistry()
    one = '{"order": "55120", "product": "running shoes"}'
    other = '{"product": "kettle", "order": "55120"}'
    # auto settles on the last number: both extractions would read alike
    assert AutoNormaliser().normalise(one) == AutoNormaliser().normalise(other) == "number:55120"
    extraction = registry.for_step("extraction")
    assert extraction.kind == "json" and extraction.normalise(one) != extraction.normalise(other)
    assert registry.for_step("tool_selection").kind == "tool_call"
    assert isinstance(registry.for_step("intent_classification"), AutoNormaliser)
    told = NormaliserRegistry({"extraction": "text"})
    assert isinstance(told.for_step("extraction"), TextNormaliser)  # the caller's kind wins
    assert NormaliserRegistry.from_dict(registry.to_dict()).for_step("extraction").kind == "json"
    assert registry.to_dict()["steps"] == {}  # saved routers record only what they were told
