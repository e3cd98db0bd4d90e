"""The router that ships inside the package (``router/resources/router``): how it is built.

One recipe, used by ``scripts/build_default_router.py`` (the only way the shipped router is
made) and by the test that fails when the shipped router falls behind what ``train`` writes:
the bundled MMLU-Pro outcomes, llama-3.1-8b-instruct → gpt-4o-2024-05-13, the training
pipeline's defaults (seeded 80/20 split, 95% of frontier quality), and the static embedder.

Why the static embedder: the sidecar serves the bundled router when nothing is registered, and
with MiniLM in torch it decided ≈ 16 MMLU-Pro-length inputs per second at 16 clients; the
static table decides > 1,000 per second at the same routing quality on MMLU-Pro (cascade APGR
0.606 against MiniLM's 0.597, ``benchmarks/README.md``, "Embedders").  Its artefact (a 47 MB
token table) is not in the repository, which must stay under 40 MB: it is built offline from
the packaged MiniLM the first time the router is loaded, the same bytes on every machine
(:mod:`router.embedders.build`), so the sha256 the router records matches.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from router.embedders.build import ensure_static
from router.registry import bundled_router_path
from router.settings import RouterSettings
from training.pipeline import TrainConfig, TrainingResult, train_and_evaluate

BUNDLED_DATA = ("mmlu_pro",)
BUNDLED_EMBEDDER = "static"

__all__ = ["BUNDLED_DATA", "BUNDLED_EMBEDDER", "build_default_router", "default_router_config"]


def default_router_config(output_dir: Path, sample: int | None = None) -> TrainConfig:
    """The training configuration of the shipped router (``sample``: a seeded subset, for
    tests that only need its layout)."""
    return TrainConfig(
        data=BUNDLED_DATA,
        sample=sample,
        register=False,
        baselines=False,
        bootstrap=0,
        output_dir=output_dir,
    )


def build_default_router(
    out: Path | None = None,
    settings: RouterSettings | None = None,
    sample: int | None = None,
    log: Callable[[str], None] = print,
) -> TrainingResult:
    """Train the shipped router with the current training code and write it to ``out``
    (default: ``router/resources/router``, replaced)."""
    settings = (settings or RouterSettings()).model_copy(update={"embedder": BUNDLED_EMBEDDER})
    ensure_static(settings.cache_dir, progress=settings.progress)
    target = Path(out) if out is not None else bundled_router_path()
    with tempfile.TemporaryDirectory(prefix="cascade-default-router-") as work:
        config = default_router_config(Path(work), sample)
        result = train_and_evaluate(config, settings, log=log)
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(result.model_dir, target)
    result.model_dir = target
    return result
