"""Feature construction: input windows, step codes, answer features."""

from __future__ import annotations

import numpy as np

from router.answers import chosen_option
from router.features import (
    StepVocabulary,
    answer_extra_features,
    answer_window,
    input_features,
    input_window,
)


def test_input_window_keeps_head_and_question_at_the_end() -> None:
    five_shot = "Example: 1+1=2. " * 100 + "Question: what is 7*6?"
    w = input_window(five_shot, 480)
    assert len(w) <= 483 and w.startswith("Example") and w.endswith("what is 7*6?")
    assert input_window("short input", 480) == "short input"


def test_answer_window_keeps_the_conclusion() -> None:
    assert answer_window("x" * 1000 + "The answer is (B).", max_chars=600).endswith("(B).")
    assert answer_window(None) == ""


FEW_SHOT = """Which way does the sun set?
A) west
B) east
Answer:
A

Which statement describes how energy can be helpful?
A) Lightning strikes a building.
B) The wind blows down a sign.
C) Electricity heats an oven.
Answer:"""


def test_chosen_option_reads_the_last_option_list() -> None:
    # the options of the question asked, not those of the few-shot examples before it
    assert chosen_option("C\n", FEW_SHOT) == "Electricity heats an oven."
    assert chosen_option("The answer is (A).", FEW_SHOT) == "Lightning strikes a building."
    mmlu_pro = "Question: x?\nOptions:\nA. there is no one.\nB. several bystanders.\n"
    assert chosen_option("so the answer is (B).", mmlu_pro) == "several bystanders."
    assert chosen_option("D", FEW_SHOT) is None  # no such option in the last list
    assert chosen_option("42", FEW_SHOT) is None  # not a choice
    assert chosen_option("B", "a prompt without options") is None
    assert chosen_option(None, FEW_SHOT) is None


def test_answer_window_adds_the_picked_option_when_given_the_input() -> None:
    assert answer_window("C\n", FEW_SHOT) == "C\nElectricity heats an oven."
    assert answer_window("C\n") == "C\n"  # without the input: the answer alone
    assert answer_window("def f(): pass", FEW_SHOT) == "def f(): pass"  # no choice in it
    long = answer_window("x" * 1000 + " answer is (C)", FEW_SHOT, max_chars=600)
    assert len(long) == 600 and long.endswith("(C)\nElectricity heats an oven.")


def test_step_vocabulary_maps_unknown_to_missing() -> None:
    vocab = StepVocabulary.fit(["math", "law", "math"])
    assert vocab.encode(["law", "math", "never-seen"]).tolist() == [0.0, 1.0, -1.0]


def test_feature_shapes() -> None:
    X = input_features(np.zeros((2, 4), dtype=np.float32), ["a", "bb cc"], np.array([0, 1]))
    assert X.shape == (2, 7) and X[1, 2] > X[0, 2]
    extra = answer_extra_features(["The answer is (C).", None], [[-0.1, -2.0], None])
    assert extra[0, 1] == 1.0 and extra[1, 1] == 0.0
    assert extra[0, 3] == np.float32(-2.0) and np.isnan(extra[1, 2])
