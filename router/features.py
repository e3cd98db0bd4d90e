"""Feature matrices of the acceptance models: input embedding, cheap features, answer features."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from router.answers import chosen_option, parse_final_answer

N_INPUT_EXTRA = 3  # step code, log chars, log words
N_ANSWER_EXTRA = 5  # log chars, parsed, logprob mean, logprob min, answer ends cleanly
#: With the validator's verdict, one more answer feature: 1 valid, 0 refused, NaN (missing)
#: where the request constrained nothing.  Only models trained with it read it.
N_VALIDITY = 1


@dataclass(frozen=True)
class StepVocabulary:
    """Maps step kinds to integer codes; unknown steps map to -1 (LightGBM: missing)."""

    steps: tuple[str, ...]

    @classmethod
    def fit(cls, steps: Sequence[str] | np.ndarray, min_count: int = 1) -> StepVocabulary:
        values, counts = np.unique(np.asarray(steps, dtype=object).astype(str), return_counts=True)
        return cls(tuple(str(v) for v, c in zip(values, counts, strict=True) if c >= min_count))

    def encode(self, steps: Sequence[str] | np.ndarray) -> np.ndarray:
        index = {s: i for i, s in enumerate(self.steps)}
        return np.array([index.get(str(s), -1) for s in steps], dtype=np.float32)


def input_features(
    embeddings: np.ndarray, texts: Sequence[str], step_codes: np.ndarray
) -> np.ndarray:
    """Pre-answer features: ``[step code, log chars, log words, embedding...]``."""
    n = len(texts)
    extra = np.empty((n, N_INPUT_EXTRA), dtype=np.float32)
    extra[:, 0] = step_codes
    extra[:, 1] = [math.log1p(len(t)) for t in texts]
    extra[:, 2] = [math.log1p(len(t.split())) for t in texts]
    return np.hstack([extra, embeddings.astype(np.float32)])


def answer_extra_features(
    answers: Sequence[str | None],
    logprobs: Sequence[Sequence[float] | None] | None = None,
    validity: Sequence[float] | np.ndarray | None = None,
) -> np.ndarray:
    """Cheap signals from an answer: length, whether a final answer parses, token log-probs;
    with ``validity`` (the validator's verdict per answer, NaN where unconstrained), that too."""
    n = len(answers)
    width = N_ANSWER_EXTRA + (N_VALIDITY if validity is not None else 0)
    out = np.full((n, width), np.nan, dtype=np.float32)
    if validity is not None:
        out[:, N_ANSWER_EXTRA] = np.asarray(validity, dtype=np.float32)
    for i, answer in enumerate(answers):
        text = answer or ""
        out[i, 0] = math.log1p(len(text))
        out[i, 1] = 1.0 if parse_final_answer(text) is not None else 0.0
        out[i, 4] = 1.0 if text.rstrip().endswith((".", ")", "]", "}")) else 0.0
        lp = logprobs[i] if logprobs is not None else None
        if lp:
            arr = np.asarray(lp, dtype=np.float64)
            out[i, 2] = float(arr.mean())
            out[i, 3] = float(arr.min())
    return out


def input_window(text: str, max_chars: int = 480, head_fraction: float = 1 / 3) -> str:
    """The part of a step input that the input embedding reads: its head and its tail.

    A 128-token encoder reads about 500 characters. Questions usually lead and few-shot or
    chat inputs end on what is asked, so a long input keeps its first third and its end.
    """
    if len(text) <= max_chars:
        return text
    head = int(max_chars * head_fraction)
    return text[:head] + " … " + text[-(max_chars - head) :]


def answer_window(answer: str | None, prompt: str | None = None, *, max_chars: int = 600) -> str:
    """The part of an answer that the answer embedding reads: its end, where it concludes.

    With the step input, a multiple-choice answer also reads the text of the option it picks
    (a bare letter says nothing on its own).
    """
    text = answer or ""
    option = chosen_option(text, prompt) if prompt else None
    if option:
        text = f"{text.strip()}\n{option}"
    return text[-max_chars:] if len(text) > max_chars else text


def answer_features(
    input_matrix: np.ndarray, answer_embeddings: np.ndarray, answer_extra: np.ndarray
) -> np.ndarray:
    """Answer-aware features: the input features, then answer extras, then answer embedding."""
    return np.hstack([input_matrix, answer_extra, answer_embeddings.astype(np.float32)])
