"""Train → evaluate → log to MLflow → register: what `cascade-router train` runs."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from router.data import OutcomeTable, bundled_dataset, load_prices, load_table
from router.embedders import CachedEmbedder, Embedder, EmbeddingCache, build_embedder
from router.errors import ConfigurationError
from router.model import CascadeModel, TableFeatures
from router.opinions import sample_model_names
from router.policy import Target
from router.settings import RouterSettings

Log = Callable[[str], None]

DEFAULT_TIERS = ("llama-3.1-8b-instruct", "gpt-4o-2024-05-13")


@dataclass
class TrainConfig:
    """What to train on and how (the CLI fills it)."""

    data: Sequence[str | Path] = ("mmlu_pro",)
    tiers: Sequence[str] = DEFAULT_TIERS
    target: Target = field(default_factory=lambda: Target(quality_ratio=0.95))
    sample: int | None = None
    source_split: bool = False
    answer_aware: bool = True
    peers: Sequence[str] = ()  # cheap models asked for second opinions at the first tier
    samples: int = 0  # extra samples of the first tier as second opinions (recorded: <model>#s<i>)
    sample_temperature: float = 0.7
    answer_kinds: dict[str, str] = field(default_factory=dict)  # step -> normaliser kind
    n_estimators: int = 1500
    bootstrap: int = 200
    baselines: bool = True
    register: bool = True
    output_dir: Path = Path("outputs")
    run_name: str | None = None


@dataclass
class TrainingResult:
    model: CascadeModel
    report: dict[str, Any]
    model_dir: Path
    plot_path: Path
    report_path: Path
    run_id: str | None = None
    version: str | None = None
    aliased: bool = False
    timings: dict[str, float] = field(default_factory=dict)
    test: OutcomeTable | None = None
    test_features: TableFeatures | None = None


def resolve_data_paths(data: Sequence[str | Path]) -> list[Path]:
    """Bundled dataset names (``mmlu_pro``, ``gsm8k``, ``routerbench``, ``tools``, …) or file
    paths."""
    paths = []
    for item in data:
        p = Path(item)
        paths.append(p if p.suffix or p.exists() else bundled_dataset(str(item)))
    return paths


def make_embedder(settings: RouterSettings) -> Embedder:
    base = build_embedder(
        settings.embedder,
        max_seq_length=settings.embed_max_seq_length,
        max_chars=settings.embed_max_chars,
        batch_size=settings.embed_batch_size,
        threads=settings.embed_threads,
        cache_dir=settings.cache_dir,
    )
    return CachedEmbedder(base, EmbeddingCache(settings.cache_dir))


def split_table(
    table: OutcomeTable, config: TrainConfig, settings: RouterSettings
) -> tuple[OutcomeTable, OutcomeTable]:
    if config.source_split:
        train, test = table.source_split("train"), table.source_split("test")
        if len(train) == 0 or len(test) == 0:
            raise ConfigurationError(
                "--source-split needs a 'split' column with train and test rows"
            )
        return train, test
    return table.split_by_prompt(settings.test_size, settings.seed)


def train_and_evaluate(
    config: TrainConfig, settings: RouterSettings, log: Log = print
) -> TrainingResult:
    """Fit a router on a seeded split, evaluate it on the held-out part, save it to a folder."""
    from training.evaluate import evaluate, plot_curves

    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    paths = resolve_data_paths(config.data)
    prices = load_prices(settings.prices_path)
    sample_names = list(sample_model_names(str(config.tiers[0]), config.samples))
    table = load_table(
        paths, list(config.tiers), prices=prices, peers=[*config.peers, *sample_names]
    )
    if config.sample:
        table = table.sample(config.sample, settings.seed)
    train, test = split_table(table, config, settings)
    timings["load_s"] = time.perf_counter() - t0
    log(
        f"data: {len(table)} prompts from {', '.join(p.name for p in paths)}; "
        f"train {len(train)}, test {len(test)}; tiers {' → '.join(config.tiers)}"
        + (f"; peers {', '.join(config.peers)}" if config.peers else "")
        + (f"; {config.samples} extra samples of the first tier" if config.samples else "")
        + (
            f"; left out {table.dropped_prompts} prompt(s) without a row for every model"
            if table.dropped_prompts
            else ""
        )
    )

    embedder = make_embedder(settings)
    model = CascadeModel(
        tiers=list(config.tiers),
        target=config.target,
        answer_aware=config.answer_aware,
        acceptance_params={"n_estimators": config.n_estimators},
        seed=settings.seed,
        capacity_cv_below=settings.capacity_cv_below,
        peers={0: list(config.peers)} if config.peers else None,
        answer_kinds=config.answer_kinds,
        samples=config.samples,
        sample_temperature=config.sample_temperature,
    )
    t = time.perf_counter()
    log("embedding train and test inputs and answers (cached on disk)")
    train_feats = model.featurize(train, embedder, progress=settings.progress)
    timings["embed_train_s"] = time.perf_counter() - t
    t = time.perf_counter()
    log(
        "fitting acceptance models (cross-fitted LightGBM, out-of-fold choices and "
        "calibration) and the policy"
    )
    model.fit(train, embedder, features=train_feats, progress=settings.progress)
    timings["fit_s"] = time.perf_counter() - t
    t = time.perf_counter()
    test_feats = model.featurize(test, embedder, progress=settings.progress)
    timings["embed_test_s"] = time.perf_counter() - t
    t = time.perf_counter()
    log("evaluating against baselines on the test split")
    report, curves = evaluate(
        model,
        train,
        test,
        train_feats,
        test_feats,
        config.target,
        settings.seed,
        config.bootstrap,
        config.baselines,
    )
    timings["evaluate_s"] = time.perf_counter() - t
    report["dataset"] = [p.name for p in paths]
    report["dataset_digest"] = table.digest()
    # every choice the model made out of fold, with what each candidate scored
    report["model_choices"] = model.cv_results_
    report["timings"] = timings
    if isinstance(embedder, CachedEmbedder):
        report["embedding_cache"] = {"hits": embedder.hits, "misses": embedder.misses}

    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    model_dir = model.save(out / "router")
    title = f"{' → '.join(config.tiers)} on {', '.join(p.stem for p in paths)} (test n={len(test)})"
    plot_path = plot_curves(curves, out / "deferral_curves.png", title)
    report_path = out / "report.json"
    report_path.write_text(json.dumps(report, indent=2))
    return TrainingResult(
        model,
        report,
        model_dir,
        plot_path,
        report_path,
        timings=timings,
        test=test,
        test_features=test_feats,
    )


def flatten_metrics(report: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """Numeric leaves of the report as MLflow metric names (``baselines.knn.apgr``); characters
    MLflow refuses in a name (``lgbm+knn``) become ``_``."""
    flat: dict[str, float] = {}
    for key, value in report.items():
        name = re.sub(r"[^\w\-. /]", "_", f"{prefix}{key}")
        if isinstance(value, dict):
            flat.update(flatten_metrics(value, f"{name}."))
        elif isinstance(value, bool):
            continue
        elif isinstance(value, int | float):
            flat[name] = float(value)
        elif (
            isinstance(value, list) and len(value) == 2 and all(isinstance(v, float) for v in value)
        ):
            flat[f"{name}.low"], flat[f"{name}.high"] = float(value[0]), float(value[1])
    return flat


def log_to_mlflow(
    result: TrainingResult,
    config: TrainConfig,
    settings: RouterSettings,
    table_digest: str,
    log: Log = print,
) -> TrainingResult:
    """Log params, metrics, plot, report and the pyfunc router; register it; alias the first."""
    import mlflow
    import pandas as pd

    from training.registry import log_router, open_tracking, promote_first_version

    client = open_tracking(settings)
    with mlflow.start_run(run_name=config.run_name) as run:
        mlflow.log_params(
            {
                "tiers": " > ".join(config.tiers),
                "data": ",".join(str(d) for d in config.data),
                "target": str(config.target),
                "sample": config.sample or "all",
                "answer_aware": config.answer_aware,
                "peers": ",".join(config.peers) or "none",
                "samples": config.samples,
                "n_estimators": config.n_estimators,
                "seed": settings.seed,
                "test_size": settings.test_size,
                "embedder": result.model.embedder_name_,
                "pre_answer_members": "+".join(result.model.pre_members_.members),
                "dataset_digest": table_digest,
            }
        )
        mlflow.log_param("post_blend", result.model.post_blend_)
        cert = result.report.get("certification")
        mlflow.log_params(
            {
                "certification": cert["method"] if cert else "none",
                "delta": cert["delta"] if cert else "none",
                "certified_bound": ",".join(f"{k}={v:g}" for k, v in cert["bound"].items())
                if cert
                else "none",
            }
        )
        mlflow.set_tags({"dataset_digest": table_digest, "component": "cascade-router"})
        mlflow.log_metrics(flatten_metrics(result.report))
        mlflow.log_artifact(str(result.plot_path), "plots")
        mlflow.log_artifact(str(result.report_path), "evaluation")
        example = pd.DataFrame(
            {
                "step": ["default"],
                "input": ["Question: What is 2 + 2?\nOptions:\nA. 3\nB. 4\nC. 5"],
            }
        )
        info = log_router(
            result.model_dir,
            run=run,
            input_example=example,
            registered_model=settings.registered_model if config.register else None,
        )
        result.run_id = run.info.run_id
        version = getattr(info, "registered_model_version", None)
        if config.register and version is not None:
            result.version = str(version)
            result.aliased = promote_first_version(
                settings.registered_model,
                result.version,
                client=client,
                alias=settings.champion_alias,
            )
    log(f"MLflow run {result.run_id} logged to {settings.tracking_uri}")
    return result
