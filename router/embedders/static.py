"""A static token table distilled from MiniLM, read with the Rust tokenizer and numpy."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from router.embedders.artefacts import load_tokenizer, read_artefact
from router.embedders.base import text_window


class StaticEmbedder:
    """Mean of per-token vectors distilled from MiniLM: a table lookup, no neural network.

    ``folder`` holds ``embeddings.npy`` (vocabulary × dim, float32), ``tokenizer.json`` and
    ``artefact.json`` as written by :func:`router.embedders.build.build_static`.
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
        self.tokenizer_ = load_tokenizer(self.folder / "tokenizer.json")
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
