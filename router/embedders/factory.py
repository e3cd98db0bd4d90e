"""Building the embedder a router was trained with from its recorded reference."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from router.embedders.artefacts import (
    ONNX_ARTEFACT,
    ONNX_INT8_ARTEFACT,
    STATIC_ARTEFACT,
    artefact_root,
)
from router.embedders.base import Embedder
from router.embedders.minilm import SentenceTransformerEmbedder
from router.embedders.onnx import OnnxEmbedder
from router.embedders.static import StaticEmbedder
from router.errors import ConfigurationError

EMBEDDER_KINDS = ("minilm", "static", "onnx", "onnx-int8")


def build_embedder(
    reference: dict[str, Any] | str = "minilm",
    *,
    cache_dir: str | Path | None = None,
    **overrides: Any,
) -> Embedder:
    """Build an embedder from a saved reference or a kind name (see ``EMBEDDER_KINDS``).

    ``cache_dir`` is where built artefacts are looked up (default: ``RouterSettings().cache_dir``).
    Overrides that a kind does not use (``max_seq_length`` for ``static``) are ignored.  A saved
    reference to the current static artefact that is missing from ``cache_dir`` gets it built
    there first (once; its sha256 is then checked against the reference's).
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
        if kind == StaticEmbedder.kind and ref.get("sha256") and folder.name == STATIC_ARTEFACT:
            from router.embedders.build import ensure_static

            ensure_static(cache_dir)
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
