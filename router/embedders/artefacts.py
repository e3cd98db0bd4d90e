"""Built embedder artefacts (static table, ONNX export) in ``<cache_dir>/embedders/``."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from router.errors import ConfigurationError

#: The static table of the current recipe (float64 distillation, quantised table): a router
#: that names it gets it built on first use.  ``static-minilm`` was the float32 recipe, whose
#: bytes depended on the CPU's vector instructions; routers trained with it keep working where
#: that folder exists (it can no longer be built).
STATIC_ARTEFACT = "static-minilm-v2"
LEGACY_STATIC_ARTEFACTS = ("static-minilm",)
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
        if folder.name in LEGACY_STATIC_ARTEFACTS:
            raise ConfigurationError(
                f"no embedder artefact at {folder}: this router was trained with "
                f"{folder.name}, which this version no longer builds; retrain it with the "
                f"current static embedder ({STATIC_ARTEFACT}: `cascade-router embedders build "
                "static`) or copy that folder from where it was built"
            )
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


def load_tokenizer(path: Path) -> Any:
    """The Rust tokenizer saved beside an artefact (``tokenizer.json``)."""
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(path))
