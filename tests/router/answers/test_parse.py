"""Final-answer parsing, checked on the bundled data's real responses."""

from __future__ import annotations

import numpy as np

from router.answers import parse_choice, parse_final_answer, parse_number


def test_patterns() -> None:
    assert parse_choice("... so the answer is (C).") == "C"
    assert parse_choice("The answer is B") == "B"
    assert parse_choice("Answer: (j)") == "J"
    assert parse_choice("I am not sure") is None
    assert parse_number("so she pays 3 + 4 = 7\n#### 7") == "7"
    assert parse_number("The answer is $1,250.00") == "1250"
    assert parse_final_answer(None) is None
    assert parse_final_answer("") is None


def test_parses_real_mmlu_pro_responses(mmlu_frame) -> None:
    rows = mmlu_frame[mmlu_frame["model"] == "llama-3.1-8b-instruct"].head(2000)
    parsed = [parse_final_answer(r) for r in rows["response"]]
    rate = np.mean([p is not None for p in parsed])
    assert rate > 0.9
    # an unparseable answer is much more often wrong: the feature carries signal
    ok = np.array([p is not None for p in parsed])
    assert rows["score"].to_numpy()[ok].mean() > rows["score"].to_numpy()[~ok].mean()


def test_parses_real_gsm8k_responses() -> None:
    from router.data import bundled_dataset, load_outcomes

    frame = load_outcomes([bundled_dataset("gsm8k")])
    rows = frame[frame["model"] == "mixtral-8x7b-instruct-v0.1"].head(500)
    rate = np.mean(
        [
            parse_number(r or "") is not None or parse_final_answer(r) is not None
            for r in rows["response"]
        ]
    )
    assert rate > 0.5
