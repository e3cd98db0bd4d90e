"""Print the Markdown tables of benchmarks/results/router_core.json (pasted in the READMEs);
with ``--sidecar``, those of results/sidecar.json."""

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


SIDECAR = RESULTS.parent / "sidecar.json"


def _errors(*counts: dict[str, int] | int) -> str:
    """Failed requests by status (``2 × 503``); 0 when none.  (Older results hold a count.)"""
    total: dict[str, int] = {}
    for c in counts:
        for status, n in (c if isinstance(c, dict) else {"failed": c} if c else {}).items():
            total[status] = total.get(status, 0) + n
    return ", ".join(f"{n} × {status}" for status, n in sorted(total.items())) or "0"


EMBEDDER_ORDER = ("bundled", "minilm", "onnx", "onnx-int8", "static")


def sidecar_tables(results: dict[str, Any]) -> str:
    """/v1/route throughput and latency per embedder, the sidecar's memory, chat overhead."""
    route = results.get("route", {})
    kinds = [k for k in EMBEDDER_ORDER if k in route]
    out = [
        "| embedder | clients | short: decisions/s, p50 / p99 ms | long: decisions/s, p50 / p99 ms "
        "| errors |",
        "| --- | ---: | --- | --- | ---: |",
    ]
    for kind in kinds:
        loops = route[kind]["closed_loop"]
        for short, long in zip(loops["short"], loops["long"], strict=True):
            out.append(
                f"| {route[kind]['embedder']} | {short['clients']} | "
                f"{short['decisions_per_s']:,.0f}, {short['p50_ms']:.1f} / {short['p99_ms']:.1f} | "
                f"{long['decisions_per_s']:,.0f}, {long['p50_ms']:.1f} / {long['p99_ms']:.1f} | "
                f"{_errors(short['errors'], long['errors'])} |"
            )
    out += [
        "",
        "| embedder | long inputs at 10 / 25 / 50 per s: p50 / p99 ms | sidecar RSS MiB (peak) |",
        "| --- | --- | ---: |",
    ]
    for kind in kinds:
        rates = " · ".join(
            f"{r['p50_ms']:.1f} / {r['p99_ms']:.1f}"
            + (f" ({_errors(r['errors'])})" if r["errors"] else "")
            for r in route[kind]["open_loop"]["long"]
        )
        memory = route[kind].get("sidecar_memory", {})
        out.append(
            f"| {route[kind]['embedder']} | {rates} | {memory.get('rss_mib', '—')} "
            f"({memory.get('peak_rss_mib', '—')}) |"
        )
    overhead = results.get("overhead", {})
    if overhead:
        out += [
            "",
            "| router embedder | direct p50 / p99 ms | through the sidecar p50 / p99 ms "
            "| overhead p50 / p99 ms |",
            "| --- | --- | --- | --- |",
        ]
        for kind in [k for k in EMBEDDER_ORDER if k in overhead]:
            o = overhead[kind]
            out.append(
                f"| {o['embedder']} | {o['direct_p50_ms']:.1f} / {o['direct_p99_ms']:.1f} | "
                f"{o['sidecar_p50_ms']:.1f} / {o['sidecar_p99_ms']:.1f} | "
                f"{o['overhead_p50_ms']:.1f} / {o['overhead_p99_ms']:.1f} |"
            )
    return "\n".join(out)


def main() -> None:
    import sys

    if "--sidecar" in sys.argv[1:]:
        print(sidecar_tables(json.loads(SIDECAR.read_text())))
        return
    results = json.loads(RESULTS.read_text())
    print(quality_table(results), "", target_table(results), "", sep="\n")
    if "overhead" in results:
        print(overhead_table(results))


if __name__ == "__main__":
    main()
