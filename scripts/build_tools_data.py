"""Build the bundled ``tools`` dataset from a ``scripts/record_tools.sh`` recording.

Keeps the BFCL questions every model answered, writes their rows (one per question and model,
the validator's verdicts and the step kind included) to ``router/resources/data/tools.parquet``
and, beside it, ``tools_bfcl.jsonl.gz``: per question the request that was sent and, per model,
BFCL's verdict (the checker's error type and message) and the validator's reason.

    python scripts/build_tools_data.py RECORDING_DIR [--models smollm2-135m-instruct,gemma-3-270m]
"""

from __future__ import annotations

import argparse
import gzip
import json
from pathlib import Path

import pandas as pd

from router.data import bundled_data_dir, load_outcomes, write_outcomes
from training.record import grades_path

MODELS = ("smollm2-135m-instruct", "gemma-3-270m")


def build(recording: Path, models: tuple[str, ...], out_dir: Path) -> tuple[Path, Path]:
    """Write the dataset and its companion file; return their paths."""
    frame = load_outcomes([recording / f"{m}.parquet" for m in models])
    counts = frame.groupby("prompt_id")["model"].nunique()
    kept = set(counts[counts == len(models)].index)
    frame = frame[frame["prompt_id"].isin(kept)]
    frame = frame.sort_values(["prompt_id", "model"], kind="stable").reset_index(drop=True)
    data_path = write_outcomes(frame, out_dir / "tools.parquet")

    questions: dict[str, dict] = {}
    for model in models:
        for line in grades_path(recording / f"{model}.parquet").read_text().splitlines():
            entry = json.loads(line)
            if entry["id"] not in kept:
                continue
            question = questions.setdefault(
                entry["id"],
                {"prompt_id": entry["id"], "category": entry["category"], "grades": {}},
            )
            question["request"] = entry["request"]
            # the last entry of a model wins: the one its parquet row was written from
            question["grades"][model] = {
                k: entry[k] for k in ("correct", "error_type", "error", "validator")
            }
    companion = out_dir / "tools_bfcl.jsonl.gz"
    with gzip.open(companion, "wt", encoding="utf-8") as fh:
        for prompt_id in sorted(questions):
            fh.write(json.dumps(questions[prompt_id], ensure_ascii=False, sort_keys=True) + "\n")
    return data_path, companion


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("recording", type=Path)
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--out-dir", type=Path, default=bundled_data_dir())
    args = ap.parse_args()
    models = tuple(m for m in args.models.split(",") if m)
    data_path, companion = build(args.recording, models, args.out_dir)
    frame = load_outcomes([data_path])
    summary = frame.groupby(["task", "model"])["score"].agg(["size", "mean"]).round(3)
    pd.set_option("display.width", 120)
    print(f"{data_path} ({data_path.stat().st_size} bytes), {companion}")
    print(summary.to_string())


if __name__ == "__main__":
    main()
