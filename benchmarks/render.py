"""Print the Markdown tables of benchmarks/results/router_core.json (pasted in the READMEs)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results" / "router_core.json"


def _n(x: Any) -> str:
    return "—" if x is None else f"{x:.3f}"


def _ci(iv: Any) -> str:
    return "" if not iv else f" [{iv[0]:.3f}, {iv[1]:.3f}]"


def quality_table(results: dict[str, Any]) -> str:
    rows = [
        "| run | test n | cascade APGR [95% CI] | router (pre) APGR [95% CI] | kNN | logreg "
        "| small-fail | random | oracle |",
        "| --- | ---: | --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results["quality"].values():
        iv, b = r.get("intervals", {}), r["baselines"]
        rows.append(
            f"| {' → '.join(r['tiers'])} ({'+'.join(r['dataset'])}) | {r['n_test']} | "
            f"{_n((r['cascade_answer_aware'] or {}).get('apgr'))}"
            f"{_ci(iv.get('cascade_answer_aware', {}).get('apgr_ci95'))} | "
            f"{_n(r['router_pre_answer']['apgr'])}"
            f"{_ci(iv.get('router_pre_answer', {}).get('apgr_ci95'))} | "
            f"{_n(b['knn']['apgr'])} | {_n(b['logreg']['apgr'])} | "
            f"{_n(b['small_fail_logreg']['apgr'])} | {_n(b['random']['apgr'])} | "
            f"{_n(b['oracle']['apgr'])} |"
        )
    return "\n".join(rows)


def target_table(results: dict[str, Any]) -> str:
    rows = [
        "| run | CPT50 / CPT80 / CPT95 (cascade) | share @95% quality [95% CI] | ROC AUC | ECE "
        "| realised quality ratio | frontier share | skipped small calls | cost saved |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results["quality"].values():
        c = r["cascade_answer_aware"] or r["router_pre_answer"]
        p = r["policy"]
        iv = r.get("intervals", {}).get("cascade_answer_aware", {})
        rows.append(
            f"| {' → '.join(r['tiers'])} | {_n(c['cpt50'])} / {_n(c['cpt80'])} / "
            f"{_n(c['cpt95'])} | {_n(c['share_at_95pct_quality'])}"
            f"{_ci(iv.get('share_at_95pct_quality_ci95'))} | {_n(r['roc_auc'])} | "
            f"{_n(r['ece'])} | {_n(p['quality_ratio'])} | {_n(p['frontier_share'])} | "
            f"{_n(p['skip_share'])} | {_n(p['cost_saved'])} |"
        )
    return "\n".join(rows)


def overhead_table(results: dict[str, Any]) -> str:
    o = results["overhead"]
    rows = ["| what (one request at a time, 1 thread) | p50 ms | p99 ms |", "| --- | ---: | ---: |"]
    for key in (
        "decision_short",
        "embedding_only_short",
        "decision_long",
        "embedding_only_long",
        "boosters_only",
    ):
        rows.append(f"| {key.replace('_', ' ')} | {o[key]['p50_ms']} | {o[key]['p99_ms']} |")
    return "\n".join(rows)


def main() -> None:
    results = json.loads(RESULTS.read_text())
    print(quality_table(results), "", target_table(results), "", sep="\n")
    if "overhead" in results:
        print(overhead_table(results))


if __name__ == "__main__":
    main()
