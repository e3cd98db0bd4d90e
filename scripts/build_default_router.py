"""Rebuild the embedded default router (router/resources/router) from the bundled data.

Run by maintainers when the model format or the bundled data change; users never need it.
The sidecar and the SDK fall back to this router when no ``@champion`` is registered.
Trains on the bundled MMLU-Pro outcomes, llama-3.1-8b-instruct → gpt-4o-2024-05-13, with the
default settings (seeded 80/20 split; the held-out figures are printed).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from router.settings import RouterSettings
from training.pipeline import TrainConfig, train_and_evaluate

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "router" / "resources" / "router"


def main() -> int:
    config = TrainConfig(data=("mmlu_pro",), register=False, baselines=False, bootstrap=0)
    result = train_and_evaluate(config, RouterSettings(), log=print)
    if OUT.exists():
        shutil.rmtree(OUT)
    shutil.copytree(result.model_dir, OUT)
    size = sum(p.stat().st_size for p in OUT.rglob("*") if p.is_file())
    report = result.report
    print(f"wrote {OUT} ({size / 1e6:.1f} MB); held-out APGR {report.get('apgr')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
