"""Rebuild the embedded default data (router/resources/data) from ../shared/data.

Run once by maintainers; users never need it.  Keeps what the repo carries small:
MMLU-Pro for four models with their responses, GSM8K,
and RouterBench for the three models the benchmarks use.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
OUT = ROOT / "router" / "resources" / "data"

MMLU_PRO_MODELS = [
    "phi-3-mini-4k-instruct",
    "llama-3.1-8b-instruct",
    "llama-3.1-70b-instruct",
    "gpt-4o-2024-05-13",
]
ROUTERBENCH_MODELS = ["mistral-7b-chat", "WizardLM-13B-V1.2", "gpt-4-1106-preview"]


def _write(frame: pd.DataFrame, name: str) -> None:
    frame.to_parquet(OUT / name, compression="zstd", compression_level=19, index=False)
    print(f"{name}: {len(frame)} rows, {(OUT / name).stat().st_size / 1e6:.1f} MB")


def main() -> int:
    if not SHARED.exists():
        print(f"no shared data at {SHARED}", file=sys.stderr)
        return 2
    OUT.mkdir(parents=True, exist_ok=True)
    mmlu = pd.read_parquet(SHARED / "mmlu_pro.parquet")
    mmlu = mmlu[mmlu["model"].isin(MMLU_PRO_MODELS)].copy()
    _write(mmlu, "mmlu_pro.parquet")
    _write(pd.read_parquet(SHARED / "gsm8k.parquet"), "gsm8k.parquet")
    rb = pd.read_parquet(SHARED / "routerbench.parquet")
    _write(rb[rb["model"].isin(ROUTERBENCH_MODELS)], "routerbench.parquet")
    shutil.copy(SHARED / "prices.json", ROOT / "router" / "resources" / "prices.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
