"""Does embedding a step's input without its shared template help? (benchmarks/README.md,
"Pair sweep", "What was tried and not kept")

    python benchmarks/bench_template_strip.py --datasets routerbench      # resumable
    python benchmarks/bench_template_strip.py --datasets routerbench --summary

RouterBench's multiple-choice prompts are few-shot: every ARC-Challenge prompt opens with the
same 1,653 characters of solved examples and every Winogrande prompt with the same 1,221, then
the question.  The input window the embedding reads (head and tail) spends part of itself on
that constant text.  Here each step's template (the longest prefix shared by all of the step's
training inputs, when at least ``MIN_TEMPLATE_CHARS`` long and the step has at least
``MIN_STEP_INPUTS`` training inputs) is cut from the training and the test inputs before
anything is embedded; the rest is the pair sweep unchanged (``bench_pairs.run_pair``), so the
baselines read the same stripped embeddings.  Results go to
benchmarks/results/pairs_template_stripped.json; ``--summary`` compares them pair by pair with
benchmarks/results/pairs.json (the same splits without stripping).
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.bench_pairs import RESULTS as PLAIN  # noqa: E402
from benchmarks.bench_pairs import (  # noqa: E402
    load_results,
    main_apgr,
    pair_arguments,
    selected_pairs,
    sweep,
)

if TYPE_CHECKING:
    from router.data import OutcomeTable

RESULTS = ROOT / "benchmarks" / "results" / "pairs_template_stripped.json"
MIN_TEMPLATE_CHARS = 50
MIN_STEP_INPUTS = 20


def shared_prefix(texts: list[str]) -> str:
    """The longest prefix of every text (that of the lexically first and last ones)."""
    first, last = min(texts), max(texts)
    n = next((i for i, (a, b) in enumerate(zip(first, last, strict=False)) if a != b), len(first))
    return first[:n]


def step_templates(table: OutcomeTable) -> dict[str, str]:
    """Each step's shared prefix, where it is long enough to be a template."""
    steps = np.asarray(table.steps).astype(str)
    templates = {}
    for step in np.unique(steps):
        rows = np.flatnonzero(steps == step)
        prefix = shared_prefix([table.prompts[i] for i in rows])
        if len(rows) >= MIN_STEP_INPUTS and len(prefix) >= MIN_TEMPLATE_CHARS:
            templates[str(step)] = prefix
    return templates


def without_templates(table: OutcomeTable, templates: dict[str, str]) -> OutcomeTable:
    """``table`` with each input's step template cut from its start (where it starts with it)."""
    prompts = [
        text[len(templates[step]) :]
        if step in templates and text.startswith(templates[step])
        else text
        for text, step in zip(table.prompts, np.asarray(table.steps).astype(str), strict=True)
    ]
    return replace(table, prompts=prompts)


def strip_templates(train: OutcomeTable, test: OutcomeTable) -> tuple[OutcomeTable, OutcomeTable]:
    """Both parts without the templates learned from ``train``."""
    templates = step_templates(train)
    print(f"  templates: { {s: len(t) for s, t in templates.items()} }", flush=True)
    return without_templates(train, templates), without_templates(test, templates)


def compare(stripped: dict, plain: dict) -> str:
    """Pair by pair: cascade APGR, best baseline and margin, plain → stripped."""
    rows = [
        "| pair | cascade | best baseline | margin |",
        "| --- | --- | --- | --- |",
    ]
    diffs, margins = [], []
    for name, new in stripped["pairs"].items():
        old = plain["pairs"].get(name)
        if old is None:
            continue
        main_old, main_new = main_apgr(old), main_apgr(new)
        diffs.append(main_new - main_old)
        margins.append((old["margin"]["margin"], new["margin"]["margin"]))
        rows.append(
            f"| {name} | {main_old:.3f} → {main_new:.3f} | "
            f"{old['margin']['baseline_apgr']:.3f} → {new['margin']['baseline_apgr']:.3f} | "
            f"{old['margin']['margin']:+.3f} → {new['margin']['margin']:+.3f} |"
        )
    d, m = np.array(diffs), np.array(margins)
    if not len(d):
        return "no pair measured both ways"
    se = d.std(ddof=1) / np.sqrt(len(d)) if len(d) > 1 else float("nan")
    rows.append("")
    rows.append(
        f"{len(d)} pairs: cascade APGR stripped minus plain {d.mean():+.4f} "
        f"(se {se:.4f}, higher on {(d > 0).sum()}); "
        f"margin ≥ 0 on {(m[:, 0] >= 0).sum()} → {(m[:, 1] >= 0).sum()}, "
        f"≥ −0.01 on {(m[:, 0] >= -0.01).sum()} → {(m[:, 1] >= -0.01).sum()}, "
        f"mean {m[:, 0].mean():+.4f} → {m[:, 1].mean():+.4f}"
    )
    return "\n".join(rows)


def main() -> None:
    parser = pair_arguments(__doc__.splitlines()[0], ["routerbench"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resamples", type=int, default=200)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--plain", type=Path, default=PLAIN, help="the sweep to compare with")
    parser.add_argument("--summary", action="store_true", help="print the comparison only")
    args = parser.parse_args()
    if not args.summary:
        sweep(selected_pairs(args), args, strip_templates)
    print(compare(load_results(args.out), json.loads(args.plain.read_text())))


if __name__ == "__main__":
    main()
