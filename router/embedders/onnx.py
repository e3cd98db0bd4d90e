"""MiniLM exported to ONNX (optionally int8-quantised), run by onnxruntime."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from router.embedders.artefacts import load_tokenizer, read_artefact
from router.embedders.base import text_window


class OnnxEmbedder:
    """all-MiniLM-L6-v2 exported to ONNX (pooling and normalisation inside), on onnxruntime.

    ``folder`` holds ``model.onnx``, ``tokenizer.json`` and ``artefact.json`` as written by
    :func:`router.embedders.build.build_onnx`; ``threads=0`` lets onnxruntime choose.
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
                tokenizer = load_tokenizer(self.folder / "tokenizer.json")
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
