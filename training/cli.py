"""`cascade-router`: train, evaluate and route from the command line.

Exit codes: 0 success; 1 unexpected failure; 2 bad input (data, arguments, configuration);
3 a model backend failed or was unreachable; 4 a router could not be loaded.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from router.errors import CascadeRouterError, ConfigurationError

app = typer.Typer(
    name="cascade-router",
    help="A learned cascade router for LLM agent pipelines: train, evaluate, route.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)
out = Console()

F = TypeVar("F", bound=Callable[..., Any])

DataOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--data",
        "-d",
        help="bundled dataset (mmlu_pro, gsm8k, routerbench) or a "
        ".parquet/.csv/.jsonl file in the outcome schema; repeatable",
    ),
]
TiersOpt = Annotated[
    str | None,
    typer.Option(
        "--tiers",
        "-t",
        help="comma-separated models, cheapest first "
        "(default: llama-3.1-8b-instruct,gpt-4o-2024-05-13)",
    ),
]
TargetOpt = Annotated[
    str, typer.Option("--target", help="quality=0.95 | share=0.2 | cost=0.002 (USD per request)")
]
SampleOpt = Annotated[int | None, typer.Option("--sample", help="use N prompts (seeded sample)")]
SourceSplitOpt = Annotated[bool, typer.Option(help="use the data's own train/test split")]
AnswerAwareOpt = Annotated[bool, typer.Option(help="learn the answer-aware models")]
OutputDirOpt = Annotated[
    Path, typer.Option(help="where the plot, the report and the trained router (router/) go")
]
BootstrapOpt = Annotated[int, typer.Option(help="bootstrap resamples for intervals")]
PeerOpt = Annotated[
    list[str] | None,
    typer.Option("--peer", help="cheap model asked for second opinions at the first tier"),
]
SamplesOpt = Annotated[
    int,
    typer.Option(
        "--samples",
        min=0,
        max=16,
        help="K extra samples of the first tier as second opinions (recorded data needs rows "
        "of <first tier>#s1..#sK, e.g. from cascade-router record)",
    ),
]
SampleTemperatureOpt = Annotated[
    float,
    typer.Option("--sample-temperature", help="temperature the extra samples are drawn at"),
]
AnswerKindOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--answer-kind",
        help="STEP=KIND, how a step's answers compare: choice, number, label:a,b, json, text, auto",
    ),
]


def handle_errors(fn: F) -> F:
    """Turn package errors into one clear line and a documented exit code."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except CascadeRouterError as exc:
            console.print(f"[bold red]error:[/] {exc}", highlight=False)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            console.print("[yellow]interrupted[/]")
            raise typer.Exit(130) from None
        except typer.Exit:
            raise
        except Exception as exc:
            if os.environ.get("CASCADE_DEBUG"):
                raise
            console.print(
                f"[bold red]internal error:[/] {type(exc).__name__}: {exc}\n"
                "(set CASCADE_DEBUG=1 to see the traceback)",
                highlight=False,
            )
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


def _settings() -> Any:
    from router.settings import RouterSettings

    return RouterSettings()


def _config(
    data: list[str] | None, tiers: str | None, target: str, sample: int | None, **kw: Any
) -> Any:
    from router.policy import Target
    from training.pipeline import DEFAULT_TIERS, TrainConfig

    tier_list = [t.strip() for t in tiers.split(",") if t.strip()] if tiers else list(DEFAULT_TIERS)
    if len(tier_list) < 2:
        raise ConfigurationError("--tiers needs at least two models, cheapest first")
    parsed = Target.parse(target)
    assert parsed is not None
    if sample is not None and sample < 100:
        raise ConfigurationError("--sample must be at least 100 prompts")
    kinds = kw.pop("answer_kinds", None) or []
    kw["answer_kinds"] = dict(_step_kind(k) for k in kinds)
    kw["peers"] = list(kw.pop("peers", None) or [])
    return TrainConfig(
        data=data or ["mmlu_pro"], tiers=tier_list, target=parsed, sample=sample, **kw
    )


def _step_kind(text: str) -> tuple[str, str]:
    step, sep, kind = text.partition("=")
    if not sep or not step.strip() or not kind.strip():
        raise ConfigurationError(f"--answer-kind {text!r}: use STEP=KIND, e.g. math=number")
    return step.strip(), kind.strip()


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
        f"policy at target {p['target']} (fitted on the calibration split, measured on test): "
        f"quality ratio {_fmt(p['quality_ratio'], pct=True)}, frontier share "
        f"{_fmt(p['frontier_share'], pct=True)}, "
        f"skipped small calls {_fmt(p['skip_share'], pct=True)}, "
        f"cost saved {_fmt(p['cost_saved'], pct=True)} vs always-frontier",
    ]
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


def print_report(report: dict[str, Any], console: Console) -> None:
    """The summary table, then the realised target numbers and the bootstrap intervals."""
    console.print(summary_table(report))
    for line in policy_lines(report):
        console.print(line, highlight=False)


@app.command()
@handle_errors
def train(
    data: DataOpt = None,
    tiers: TiersOpt = None,
    target: TargetOpt = "quality=0.95",
    sample: SampleOpt = None,
    source_split: SourceSplitOpt = False,
    answer_aware: AnswerAwareOpt = True,
    peer: PeerOpt = None,
    samples: SamplesOpt = 0,
    sample_temperature: SampleTemperatureOpt = 0.7,
    answer_kind: AnswerKindOpt = None,
    register: Annotated[bool, typer.Option(help="register in the MLflow Model Registry")] = True,
    output_dir: OutputDirOpt = Path("outputs"),
    bootstrap: BootstrapOpt = 200,
    json_out: Annotated[bool, typer.Option("--json", help="print the report as JSON")] = False,
) -> None:
    """Train a router, evaluate it, log the run to MLflow and register it (first → @champion)."""
    from training.pipeline import log_to_mlflow, train_and_evaluate

    settings = _settings()
    config = _config(
        data,
        tiers,
        target,
        sample,
        source_split=source_split,
        answer_aware=answer_aware,
        peers=peer,
        samples=samples,
        sample_temperature=sample_temperature,
        answer_kinds=answer_kind,
        register=register,
        output_dir=output_dir,
        bootstrap=bootstrap,
    )
    result = train_and_evaluate(config, settings, log=lambda m: console.print(f"[cyan]›[/] {m}"))
    result = log_to_mlflow(
        result,
        config,
        settings,
        result.report["dataset_digest"],
        log=lambda m: console.print(f"[cyan]›[/] {m}"),
    )
    if json_out:
        print(
            json.dumps(
                result.report | {"run_id": result.run_id, "version": result.version}, indent=2
            )
        )
        return
    print_report(result.report, out)
    reg = (
        f"registered {settings.registered_model} v{result.version}"
        + (f" as @{settings.champion_alias}" if result.aliased else " (champion unchanged)")
        if result.version
        else "not registered"
    )
    out.print(f"plot: {result.plot_path}  report: {result.report_path}  {reg}", highlight=False)


@app.command()
@handle_errors
def evaluate(
    data: DataOpt = None,
    tiers: TiersOpt = None,
    target: TargetOpt = "quality=0.95",
    sample: SampleOpt = None,
    source_split: SourceSplitOpt = False,
    answer_aware: AnswerAwareOpt = True,
    peer: PeerOpt = None,
    samples: SamplesOpt = 0,
    sample_temperature: SampleTemperatureOpt = 0.7,
    answer_kind: AnswerKindOpt = None,
    output_dir: OutputDirOpt = Path("outputs"),
    bootstrap: BootstrapOpt = 200,
    json_out: Annotated[bool, typer.Option("--json", help="print everything as JSON")] = False,
) -> None:
    """Fit on a seeded split of any dataset and tier list; report curves, APGR, CPT, baselines."""
    from training.pipeline import train_and_evaluate

    settings = _settings()
    config = _config(
        data,
        tiers,
        target,
        sample,
        source_split=source_split,
        answer_aware=answer_aware,
        peers=peer,
        samples=samples,
        sample_temperature=sample_temperature,
        answer_kinds=answer_kind,
        register=False,
        output_dir=output_dir,
        bootstrap=bootstrap,
    )
    quiet = json_out
    result = train_and_evaluate(
        config,
        settings.model_copy(update={"progress": settings.progress and not quiet}),
        log=(lambda m: None) if quiet else (lambda m: console.print(f"[cyan]›[/] {m}")),
    )
    if json_out:
        print(json.dumps(result.report, indent=2))
        return
    print_report(result.report, out)
    out.print(f"plot: {result.plot_path}  report: {result.report_path}", highlight=False)


def _backends(
    router_tiers: tuple[str, ...], specs: list[str] | None, replay: list[str] | None
) -> list[Any]:
    from router.backends import OpenAIBackend, replay_backend_for
    from training.pipeline import resolve_data_paths

    chosen: dict[str, Any] = {}
    for spec in specs or []:
        model, sep, url = spec.partition("=")
        if not sep or not url:
            raise ConfigurationError(f"--backend {spec!r}: use MODEL=BASE_URL")
        if model not in router_tiers:
            raise ConfigurationError(
                f"--backend names {model!r}, not a tier of this router ({', '.join(router_tiers)})"
            )
        chosen[model] = OpenAIBackend(model=model, base_url=url, api_key_env=_key_env(model))
    paths = resolve_data_paths(replay) if replay else None
    for tier in router_tiers:
        if tier not in chosen:
            try:
                chosen[tier] = replay_backend_for(tier, paths)
            except ConfigurationError as exc:
                raise ConfigurationError(f"{exc}: pass --backend {tier}=URL") from None
    return [chosen[t] for t in router_tiers]


def _key_env(model: str) -> str:
    return "CASCADE_KEY_" + "".join(c if c.isalnum() else "_" for c in model).upper()


@app.command()
@handle_errors
def route(
    input: Annotated[
        str, typer.Option("--input", "-i", help="the step input text ('-' reads stdin)")
    ],
    step: Annotated[
        str, typer.Option("--step", "-s", help="step kind, e.g. intent or math")
    ] = "default",
    router_uri: Annotated[
        str | None,
        typer.Option(
            "--router", help="folder or MLflow URI (default models:/cascade-router@champion)"
        ),
    ] = None,
    backend: Annotated[
        list[str] | None,
        typer.Option(
            "--backend",
            help="MODEL=BASE_URL of an "
            "OpenAI-compatible server (vllm serve, llama.cpp, OpenAI); key from "
            "CASCADE_KEY_<MODEL>; repeatable",
        ),
    ] = None,
    replay: Annotated[
        list[str] | None,
        typer.Option(
            "--replay",
            help="answer the other tiers from recorded outcomes (default: the bundled data)",
        ),
    ] = None,
    target: Annotated[
        str | None, typer.Option("--target", help="override the router's target")
    ] = None,
    decide_only: Annotated[
        bool, typer.Option("--decide-only", help="print the decision, call no model")
    ] = False,
    json_out: Annotated[bool, typer.Option("--json", help="print the result as JSON")] = False,
) -> None:
    """Route one step input through the cascade and show the decision and the answer."""
    from router.core import Router

    text = sys.stdin.read() if input == "-" else input
    if not text.strip():
        raise ConfigurationError("--input is empty")
    settings = _settings()
    router = Router.load(router_uri, settings=settings)
    if decide_only:
        decision = router.decide(step, text, target=target)
        print(json.dumps(decision.to_json_dict(), indent=2) if json_out else decision)
        return
    router = router.with_backends(_backends(router.tiers, backend, replay))
    result = router.route(step, text, target=target)
    if json_out:
        print(json.dumps(result.to_json_dict(), indent=2, default=str))
        return
    print_route(result)


def print_route(result: Any) -> None:
    probs = ", ".join(f"{k}={v:.2f}" for k, v in result.probabilities.items())
    out.print(
        f"[bold]{result.step}[/] → [green]{result.tier}[/] ({result.role}) via {result.path}; "
        f"{probs}; ${result.cost_usd:.6f}; router {1000 * result.router_latency_s:.1f} ms",
        highlight=False,
        soft_wrap=True,
    )
    answer = result.answer.strip().replace("\n", " ")
    out.print(
        f"  answer: {answer[:160]}{'…' if len(answer) > 160 else ''}",
        highlight=False,
        soft_wrap=True,
    )


@app.command()
@handle_errors
def demo(
    sample: Annotated[
        int,
        typer.Option(
            "--sample",
            help="train on a seeded sample of N bundled MMLU-Pro prompts so that the job "
            "finishes in minutes from a cold embedding cache; 0 uses all 12,032",
        ),
    ] = 6000,
    output_dir: OutputDirOpt = Path("outputs"),
) -> None:
    """The main job on the embedded default: train, evaluate, register @champion, route samples."""
    from training.demo import run_demo

    run_demo(_settings(), sample=sample or None, output_dir=output_dir, console=console, out=out)


@app.command()
@handle_errors
def serve(
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="TOML or JSON settings file (see the README)"),
    ] = None,
    host: Annotated[str | None, typer.Option(help="interface to bind [127.0.0.1]")] = None,
    port: Annotated[int | None, typer.Option(help="TCP port [8000]")] = None,
    workers: Annotated[int | None, typer.Option(help="worker processes [1]")] = None,
    model_uri: Annotated[
        str | None,
        typer.Option(
            "--model-uri",
            help="router folder or MLflow URI [models:/cascade-router@champion, else bundled]",
        ),
    ] = None,
) -> None:
    """Run the OpenAI-compatible sidecar (settings: flags > CASCADE_* env > --config file)."""
    from serving.run import serve as run_server
    from serving.settings import ServiceSettings

    settings = ServiceSettings.load(
        config, host=host, port=port, workers=workers, model_uri=model_uri
    )
    run_server(settings)


@app.command()
@handle_errors
def standin(
    model: Annotated[
        str, typer.Option(help="the frontier model it stands in for")
    ] = "gpt-4o-2024-05-13",
    data: DataOpt = None,
    host: Annotated[str, typer.Option(help="interface to bind")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 8002,
    fallback_url: Annotated[
        str | None,
        typer.Option(help="OpenAI-compatible server answering prompts the data did not record"),
    ] = None,
    fallback_model: Annotated[str | None, typer.Option(help="model name at the fallback")] = None,
) -> None:
    """Serve recorded answers of a frontier model over the OpenAI API (local profile, tests)."""
    import uvicorn

    from serving.standin import create_standin_app
    from training.pipeline import resolve_data_paths

    paths = resolve_data_paths(data) if data else None
    app_ = create_standin_app(model, paths, fallback_url, fallback_model)
    uvicorn.run(app_, host=host, port=port, log_level="warning")


@app.command()
@handle_errors
def record(
    model: Annotated[
        str, typer.Option("--model", help="the name the recorded rows carry (and prices use)")
    ],
    base_url: Annotated[
        str, typer.Option(help="the model's OpenAI-compatible /v1 URL (vllm serve, llama.cpp)")
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="Parquet file to write")],
    data: DataOpt = None,
    served_model: Annotated[
        str | None, typer.Option(help="the model name the server expects (default: --model)")
    ] = None,
    samples: Annotated[
        int, typer.Option(min=0, max=16, help="extra samples per prompt (<model>#s1 …)")
    ] = 0,
    temperature: Annotated[float, typer.Option(help="temperature of the extra samples")] = 0.7,
    task: Annotated[
        list[str] | None, typer.Option("--task", help="record only prompts of this task")
    ] = None,
    limit: Annotated[
        int | None, typer.Option(min=1, help="at most N prompts (seeded sample)")
    ] = None,
    answer_kind: AnswerKindOpt = None,
    max_tokens: Annotated[int, typer.Option(min=1, help="answer length limit")] = 16,
    timeout_s: Annotated[float, typer.Option(help="per-call timeout")] = 120.0,
) -> None:
    """Record a live model's answers (and extra samples) on a dataset's prompts, graded against
    the answers the data records as correct; resumes an interrupted run."""
    from router.backends import OpenAIBackend
    from router.data import load_outcomes, load_prices
    from training.pipeline import resolve_data_paths
    from training.record import record_answers

    settings = _settings()
    prices = load_prices(settings.prices_path)
    if model not in prices:
        raise ConfigurationError(
            f"no price for {model} in {settings.prices_path or 'the bundled prices.json'}: add "
            "its USD per million input and output tokens (a self-hosted model too: the router "
            "weighs every call's cost)"
        )
    frame = load_outcomes(resolve_data_paths(data or ["routerbench"]))
    if task:
        unknown = sorted(set(task) - set(frame["task"]))
        if unknown:
            raise ConfigurationError(
                f"no prompts of task(s) {', '.join(unknown)} "
                f"(tasks there: {', '.join(sorted(set(frame['task'])))})"
            )
        frame = frame[frame["task"].isin(task)]
    backend = OpenAIBackend(
        served_model or model,
        base_url=base_url,
        timeout_s=timeout_s,
        temperature=0.0,
        max_tokens=max_tokens,
    )
    stats = record_answers(
        frame,
        backend,
        output,
        model,
        samples=samples,
        temperature=temperature,
        answer_kinds=dict(_step_kind(k) for k in answer_kind or []),
        prices=prices,
        limit=limit,
        max_tokens=max_tokens,
        progress=settings.progress,
    )
    out.print(
        f"{output}: {stats.prompts_recorded} prompts recorded now, {stats.prompts_resumed} "
        f"from an earlier run, {stats.prompts_ungraded} left out (no recorded correct answer); "
        f"accuracy {stats.accuracy:.3f}"
        + (f", samples {stats.sample_accuracy:.3f}" if samples else "")
        + f"; prompts per step {stats.per_step}",
        highlight=False,
    )


from training.lifecycle_cli import register as _register_lifecycle  # noqa: E402

_register_lifecycle(app)  # retrain, promote, rollback, versions, drift, simulate
from training.embedders_cli import embedders_app  # noqa: E402 - issue 5's sub-app

app.add_typer(embedders_app, name="embedders")


def main() -> None:
    """Entry point of the ``cascade-router`` script."""
    app()


if __name__ == "__main__":
    main()
