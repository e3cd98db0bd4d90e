"""An on-disk embedding cache keyed by content hash, and an in-memory LRU of recent inputs."""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from router.embedders.base import Embedder
from router.errors import ConfigurationError


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


class LRUEmbedder:
    """An embedder with a bounded in-memory LRU of vectors by text (one per Router, no globals).

    Identical inputs (retries, repeated tool prompts, the same answer checked twice) are served
    from memory; the misses of one call are embedded together in one batch.
    """

    def __init__(self, embedder: Embedder, maxsize: int = 4096) -> None:
        if maxsize < 1:
            raise ConfigurationError(f"LRU size must be at least 1, not {maxsize}")
        self.embedder = embedder
        self.maxsize = maxsize
        self.hits = 0
        self.misses = 0
        self._vectors: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return self.embedder.name

    @property
    def dim(self) -> int:
        return self.embedder.dim

    def reference(self) -> dict[str, Any]:
        return self.embedder.reference()

    def __len__(self) -> int:
        return len(self._vectors)

    def encode(self, texts: Sequence[str], *, progress: bool = False) -> np.ndarray:
        found: list[np.ndarray | None] = [None] * len(texts)
        missing: dict[str, list[int]] = {}
        with self._lock:
            for i, text in enumerate(texts):
                vec = self._vectors.get(text)
                if vec is None:
                    missing.setdefault(text, []).append(i)
                else:
                    self._vectors.move_to_end(text)
                    found[i] = vec
            self.misses += len(missing)  # a text repeated within the call is embedded once
            self.hits += len(texts) - len(missing)
        if missing:
            fresh = self.embedder.encode(list(missing), progress=progress)
            with self._lock:
                for (text, rows), vec in zip(missing.items(), fresh, strict=True):
                    vec = np.array(vec, dtype=np.float32)  # own copy: callers may not alias
                    vec.setflags(write=False)
                    for i in rows:
                        found[i] = vec
                    self._vectors[text] = vec
                    self._vectors.move_to_end(text)
                while len(self._vectors) > self.maxsize:
                    self._vectors.popitem(last=False)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.vstack(found)  # type: ignore[arg-type]
