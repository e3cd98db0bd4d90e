"""The one interface every embedder satisfies, and the input window it reads."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into L2-normalised float32 vectors."""

    @property
    def name(self) -> str:
        """Stable identity: two embedders with the same name give the same vectors."""
        ...

    @property
    def dim(self) -> int: ...

    def encode(self, texts: Sequence[str], *, progress: bool = False) -> np.ndarray:
        """Embed ``texts``; returns an array of shape ``(len(texts), dim)``."""
        ...

    def reference(self) -> dict[str, Any]:
        """What a saved router records to build the same embedder again."""
        ...


def text_window(text: str, max_chars: int) -> str:
    """Keep the head and the tail of a long text (questions lead, few-shot prompts end on it)."""
    if len(text) <= max_chars:
        return text
    half = max_chars // 2
    return text[:half] + " … " + text[-half:]
