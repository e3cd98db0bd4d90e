"""How the commands print a report, a routed step and a drift table (rich tables on stdout)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from training.cli.common import out


def _fmt(x: Any, pct: bool = False) -> str:
    if x is None:
        return "—"
    if isinstance(x, list):
        return "[" + ", ".join(_fmt(v) for v in x) + "]"
    return f"{100 * x:.1f}%" if pct else f"{x:.3f}"


def summary_table(report: dict[str, Any]) -> Table:
    """Router, cascade and baselines side by side."""
    table = Table(
        title=f"{' → '.join(report['tiers'])}: test split (n={report['n_test']})",
        caption="cascade: answer-aware; router (pre): before any answer; · baselines on the "
        "same split and embeddings; share@95%: frontier share at 95% of frontier quality",
    )
    for col in (
        "router",
        "APGR",
        "CPT50",
        "CPT80",
        "CPT95",
        "share@95%",
        "ROC AUC",
        "ECE",
    ):
        table.add_column(col, justify="right" if col != "router" else "left")
    opinion = report.get("second_opinion") or {}
    sources = opinion.get("sources") or {}
    rows: list[tuple[str, dict[str, Any] | None]] = [
        ("cascade + opinion (fitted band)", opinion.get("fitted_band"))
    ]
    if len(sources) > 1:
        rows += [(f"cascade + {s['label']} (always)", s.get("always")) for s in sources.values()]
    else:
        rows.append(("cascade + opinion (always)", opinion.get("always")))
    rows += [
        ("cascade", report.get("cascade_answer_aware")),
        ("router (pre)", report.get("router_pre_answer")),
    ]
    rows += [
        (f"· {k.replace('_logreg', '')}", v)
        for k, v in report.get("baselines", {}).items()
        if not k.startswith("always")
    ]
    for name, m in rows:
        if not m:
            continue
        table.add_row(
            name,
            _fmt(m.get("apgr")),
            _fmt(m.get("cpt50")),
            _fmt(m.get("cpt80")),
            _fmt(m.get("cpt95")),
            _fmt(m.get("share_at_95pct_quality")),
            _fmt(m.get("roc_auc")),
            _fmt(m.get("ece")),
        )
    return table


def policy_lines(report: dict[str, Any]) -> list[str]:
    p = report["policy"]
    lines = [
        f"always-small quality {_fmt(report['q_small'])}, "
        f"always-frontier {_fmt(report['q_frontier'])}"
        f" (${report['cost_always_frontier'] * 1000:.3f} per 1k requests)",
        f"policy at target {p['target']} (certified on the calibration split, measured on test): "
        f"quality ratio {_fmt(p['quality_ratio'], pct=True)}, frontier share "
        f"{_fmt(p['frontier_share'], pct=True)}, "
        f"skipped small calls {_fmt(p['skip_share'], pct=True)}, "
        f"cost saved {_fmt(p['cost_saved'], pct=True)} vs always-frontier",
    ]
    lines.extend(certification_lines(report.get("certification")))
    if p.get("without_opinions"):
        w = p["without_opinions"]
        shares = p.get("opinion_share_by_source") or {}
        labels = dict(zip(shares, p.get("opinion_sources", []), strict=False))
        bought = ", ".join(f"{labels.get(k, k)} {_fmt(v, pct=True)}" for k, v in shares.items())
        lines.append(
            f"second opinions bought on {_fmt(p['opinion_share'], pct=True)} of requests "
            f"({bought}; costs included); without them: "
            f"quality ratio {_fmt(w['quality_ratio'], pct=True)}, frontier share "
            f"{_fmt(w['frontier_share'], pct=True)}, cost saved {_fmt(w['cost_saved'], pct=True)}"
        )
    for name, iv in report.get("intervals", {}).items():
        if isinstance(iv, dict):
            lines.append(
                f"{name}: APGR 95% CI {_fmt(iv.get('apgr_ci95'))}, "
                f"share@95% CI {_fmt(iv.get('share_at_95pct_quality_ci95'))}"
            )
        else:
            lines.append(f"{name}: {_fmt(iv)}")
    return lines


def certification_lines(cert: dict[str, Any] | None) -> list[str]:
    """The certificate, what the test split realised, and the price of the guarantee."""
    if not cert:
        return ["policy not certified (a router saved before certification)"]
    real, today = cert["realised"], cert["uncertified"]
    held = cert.get("holds_on_test") or {}
    lines = [
        f"certified: {cert['statement']}; realised on test: quality ratio "
        f"{_fmt(real['quality_ratio'], pct=True)}, frontier share "
        f"{_fmt(real['frontier_share'], pct=True)}, ${_usd(real['cost_per_request'])} per "
        f"request ({'met' if all(held.values()) else 'MISSED'} on this split)",
        f"price of the guarantee: cost saved {_fmt(real['cost_saved'], pct=True)} certified vs "
        f"{_fmt(today['cost_saved'], pct=True)} uncertified (fitted as before: quality ratio "
        f"{_fmt(today['quality_ratio'], pct=True)}, frontier share "
        f"{_fmt(today['frontier_share'], pct=True)} on test)",
    ]
    trivial = [s for s, c in (cert.get("per_step") or {}).items() if c.get("trivial")]
    if cert.get("per_step"):
        lines.append(
            f"{len(cert['per_step'])} step(s) with their own certified point (risk split over "
            f"{cert['groups']} groups, each at {cert['level']:g})"
            + (f"; always the top tier on {', '.join(trivial)}" if trivial else "")
        )
    return lines


def _usd(x: float | None) -> str:
    return "—" if x is None else f"{x:.6f}"


def print_report(report: dict[str, Any], console: Console) -> None:
    """The summary table, then the realised target numbers and the bootstrap intervals."""
    console.print(summary_table(report))
    for line in policy_lines(report):
        console.print(line, highlight=False)


def print_route(result: Any) -> None:
    probs = ", ".join(f"{k}={v:.2f}" for k, v in result.probabilities.items())
    out.print(
        f"[bold]{result.step}[/] → [green]{result.tier}[/] ({result.role}) via {result.path}; "
        f"{probs}; ${result.cost_usd:.6f}; router {1000 * result.router_latency_s:.1f} ms",
        highlight=False,
        soft_wrap=True,
    )
    if result.certificate:
        from router.policy import Certificate

        out.print(
            f"  certified: {Certificate.from_dict(result.certificate).describe()}",
            highlight=False,
            soft_wrap=True,
        )
    answer = result.answer.strip().replace("\n", " ")
    out.print(
        f"  answer: {answer[:160]}{'…' if len(answer) > 160 else ''}",
        highlight=False,
        soft_wrap=True,
    )


def drift_table(drift: list[Any], threshold: float) -> Table:
    table = Table(title=f"calibration drift (flag above {threshold:g})")
    for col in ("step", "labels", "predicted", "observed", "gap", "flag"):
        table.add_column(col, justify="left" if col in ("step", "flag") else "right")
    for d in drift:
        table.add_row(
            d.step,
            str(d.n),
            f"{d.predicted:.3f}",
            f"{d.observed:.3f}",
            f"{d.gap:.3f}",
            "[bold red]DRIFTED[/]" if d.flagged else "ok",
        )
    return table


def certificate_table(statuses: list[Any]) -> Table:
    """Per step, target and constraint: what the certificate promises and the anytime-valid
    confidence sequence of what the labelled traffic realised."""
    table = Table(title="certified targets on the labelled traffic (anytime-valid)")
    for col in ("step", "target", "constraint", "labels", "promised", "realised", "CS", "flag"):
        table.add_column(col, justify="left" if col in ("step", "target", "flag") else "right")
    for s in statuses:
        table.add_row(
            s.step,
            s.target,
            s.constraint,
            str(s.n),
            f"{s.promised:.4g}",
            f"{s.realised:.4g}",
            f"[{s.lower:.4g}, {s.upper:.4g}]",
            "[bold red]VIOLATED[/]" if s.flagged else "ok",
        )
    return table
