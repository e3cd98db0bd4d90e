"""Synthetic outcome tables whose prompts embed to given vectors, for fast model tests."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from router.data import OutcomeTable


class LookupEmbedder:
    """Gives each text the vector it was given: synthetic embeddings through the real API."""

    def __init__(self, vectors: dict[str, np.ndarray]) -> None:
        self.vectors = vectors

    @property
    def name(self) -> str:
        return "lookup:test"

    @property
    def dim(self) -> int:
        return len(next(iter(self.vectors.values())))

    def encode(self, texts: Sequence[str], *, progress: bool = False) -> np.ndarray:
        return np.vstack([self.vectors[t] for t in texts]).astype(np.float32)

    def reference(self) -> dict[str, Any]:
        return {"kind": "lookup"}


def synthetic_table(
    emb: np.ndarray, scores: np.ndarray, answers: Sequence[str | None] | None = None
) -> tuple[OutcomeTable, LookupEmbedder]:
    """A two-tier table whose prompt j embeds to ``emb[j]``; the first tier's recorded
    ``answers`` (default: none recorded) embed to the prompt's vector reversed."""
    n = len(emb)
    prompts = [f"prompt {j}" for j in range(n)]
    first: list[str | None] = list(answers) if answers is not None else [None] * n
    table = OutcomeTable(
        tiers=("small", "large"),
        prompt_ids=np.array([f"p{j:05d}" for j in range(n)], dtype=object),
        prompts=prompts,
        steps=np.full(n, "qa", dtype=object),
        splits=np.full(n, None, dtype=object),
        scores=scores.astype(np.float64),
        costs=np.tile([0.001, 0.01], (n, 1)),
        responses=[first, [None] * n],
        output_tokens=np.ones((n, 2), dtype=np.int64),
    )
    vectors = dict(zip(prompts, emb, strict=True))
    vectors |= {str(a): emb[j][::-1] for j, a in enumerate(first) if a is not None}
    return table, LookupEmbedder(vectors)
