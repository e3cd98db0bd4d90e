"""The real packaged all-MiniLM-L6-v2 and the on-disk embedding cache."""

from __future__ import annotations

import numpy as np
import pytest

from router.embedders import (
    CachedEmbedder,
    EmbeddingCache,
    SentenceTransformerEmbedder,
    build_embedder,
    text_window,
)
from router.errors import ConfigurationError


def test_real_embeddings_are_normalised_and_semantic(embedder: CachedEmbedder) -> None:
    vecs = embedder.encode(
        [
            "What is the capital of France?",
            "Which city is France's capital?",
            "Integrate x squared from 0 to 1.",
        ]
    )
    assert vecs.shape == (3, 384) and vecs.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    assert vecs[0] @ vecs[1] > vecs[0] @ vecs[2] + 0.3


def test_cache_avoids_second_embedding(tmp_path, embedder: CachedEmbedder) -> None:
    base = embedder.embedder
    cached = CachedEmbedder(base, EmbeddingCache(tmp_path))
    texts = [f"step input number {i}" for i in range(20)]
    first = cached.encode(texts)
    assert cached.misses == 20 and cached.hits == 0
    again = CachedEmbedder(base, EmbeddingCache(tmp_path))  # a new process would see the same
    second = again.encode(texts + texts[:5])
    assert again.misses == 0 and again.hits == 25
    np.testing.assert_array_equal(second[:20], first)
    assert len(EmbeddingCache(tmp_path)) == 20


def test_cache_keys_depend_on_model_and_text() -> None:
    k = EmbeddingCache.key
    assert k("a", "x") != k("b", "x") != k("a", "y")


def test_window_keeps_head_and_tail() -> None:
    text = "HEAD" + "x" * 5000 + "TAIL"
    w = text_window(text, 100)
    assert w.startswith("HEAD") and w.endswith("TAIL") and len(w) < 110
    assert text_window("short", 100) == "short"


def test_reference_round_trip() -> None:
    e = SentenceTransformerEmbedder(max_seq_length=64)
    assert build_embedder(e.reference()).name == e.name
    with pytest.raises(ConfigurationError):
        build_embedder("nope")
