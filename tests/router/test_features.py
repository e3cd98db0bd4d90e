"""Feature construction: input windows, step codes, answer features."""

from __future__ import annotations

import numpy as np

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
    assert answer_window("x" * 1000 + "The answer is (B).", 600).endswith("(B).")
    assert answer_window(None) == ""


def test_step_vocabulary_maps_unknown_to_missing() -> None:
    vocab = StepVocabulary.fit(["math", "law", "math"])
    assert vocab.encode(["law", "math", "never-seen"]).tolist() == [0.0, 1.0, -1.0]


def test_feature_shapes() -> None:
    X = input_features(np.zeros((2, 4), dtype=np.float32), ["a", "bb cc"], np.array([0, 1]))
    assert X.shape == (2, 7) and X[1, 2] > X[0, 2]
    extra = answer_extra_features(["The answer is (C).", None], [[-0.1, -2.0], None])
    assert extra[0, 1] == 1.0 and extra[1, 1] == 0.0
    assert extra[0, 3] == np.float32(-2.0) and np.isnan(extra[1, 2])
