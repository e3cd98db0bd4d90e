"""Rebuild the router that ships in the package (router/resources/router) from the current code.

The one way the shipped router is made (training/default_router.py holds the recipe): run it
whenever the model format, the features or the bundled data change; a test fails until then.

    CASCADE_CACHE_DIR=.cascade-cache python scripts/build_default_router.py
    python tests/support/legacy.py --refresh router/resources/router   # its recorded decisions

Builds the static embedder's artefact into the cache folder first if it is missing (a few
minutes, offline), trains on all bundled MMLU-Pro outcomes (llama-3.1-8b-instruct →
gpt-4o-2024-05-13) and prints the held-out APGR and the router's size.
"""

from __future__ import annotations

import json
import sys

from router.settings import RouterSettings
from training.default_router import build_default_router


def main() -> int:
    result = build_default_router(settings=RouterSettings(), log=print)
    size = sum(p.stat().st_size for p in result.model_dir.rglob("*") if p.is_file())
    meta = json.loads((result.model_dir / "router.json").read_text())
    print(
        f"wrote {result.model_dir} ({size / 1e6:.1f} MB, format {meta['format_version']}, "
        f"embedder {meta['embedder_name']}); held-out APGR {result.report.get('apgr')}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
