"""`cascade-router retrain`: feedback window → challenger → gate → (maybe) a new @champion.

Order of work, chosen so that a process killed at any point before the last second leaves the
Model Registry and its aliases as they were:

1. read the champion (the parent), the feedback window and the data; split off the held-out
   slice of recent feedback; build the training table (``training.feedback_data``);
2. train the challenger, score it and the champion on the frozen evaluation set and the
   feedback slice, apply the gate (``training.gate``) — all in memory and in the MLflow run;
3. only then register the challenger as a new version, point ``@challenger`` at it and, if the
   gate passed, move ``@previous`` to the old champion and ``@champion`` to the challenger.

The run records the lineage: the feedback window, row counts by step and label, the digests
of the base data, the frozen evaluation set and the training table, and the parent version.

A window of any size is read in two passes (``training.feedback_window``): a streamed, light
first pass (ids, steps, tiers, labels, input hashes), then only the chosen rows whole.  The
feedback rows trained on are capped at ``max_feedback_rows`` by a sample stratified by step,
answering tier and label (and the held-out slice the gate scores at ``max_holdout_rows``):
measured on 1,000,000 labelled requests, the cap loses no routing quality and bounds time and
memory (``benchmarks/README.md``, "Retraining at 1,000,000 labels").  Embeddings computed by an
earlier retrain (or training run) are read back from the on-disk cache, not recomputed.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from router.data import OutcomeTable, load_prices, load_table
from router.embedders import CachedEmbedder, Embedder, EmbeddingCache, build_embedder
from router.errors import ConfigurationError, TargetNotCertifiableError
from router.feedback import FeedbackStore
from router.feedback.certified import certificate_metrics, certificate_status
from router.feedback.drift import calibration_drift, drift_metrics
from router.model import CascadeModel
from router.policy import Target
from router.settings import RouterSettings
from training.feedback_data import concat_tables, feedback_table, prompt_key, table_keys
from training.feedback_window import (
    FETCH_COLUMNS,
    key_hash,
    read_index,
    select_rows,
    stratified_sample,
)
from training.gate import GateConfig, GateDecision, ModelScore, decide, score_model
from training.pipeline import DEFAULT_TIERS, resolve_data_paths

Log = Callable[[str], None]

#: test hook: name a stage ("fit", "gate") to make retrain stop there and wait to be killed
PAUSE_ENV = "CASCADE_RETRAIN_PAUSE_AT"


@dataclass
class RetrainConfig:
    """What `cascade-router retrain` reads and how it decides (the CLI fills it)."""

    since: float | str | None = "all"  # "all", "last" (since the parent's window end), or time
    until: float | None = None  # default: now
    base: Sequence[str | Path] = ()  # base datasets trained on next to the feedback
    base_sample: int | None = None  # seeded sample of the base rows (e.g. a 500-prompt seed)
    base_tables: Sequence[OutcomeTable] = ()  # base rows already in memory (simulate's seed)
    lookup: Sequence[str | Path] = ()  # recorded outcomes completing unlabelled tiers
    impute: str = "drop"  # "drop" or "parent"
    eval_data: Sequence[str | Path] = ("mmlu_pro",)
    eval_sample: int | None = None  # draw the frozen set from a seeded sample of the eval data
    holdout_fraction: float = 0.2  # latest share of the window's labels kept for the gate
    max_feedback_rows: int | None = 100_000  # stratified cap on the feedback training rows
    max_holdout_rows: int | None = 20_000  # stratified cap on the held-out labels scored
    tiers: Sequence[str] | None = None  # default: the parent's, else the default pair
    target: Target | None = None  # default: the parent's
    n_estimators: int = 1500
    answer_aware: bool = True
    gate: GateConfig = field(default_factory=GateConfig)
    promote: bool = True  # let the gate move @champion
    shuffle_labels: bool = False  # train on permuted labels (a challenger that must fail)
    run_name: str | None = "retrain"


@dataclass
class RetrainResult:
    decision: GateDecision
    version: str | None
    parent_version: str | None
    promoted: bool
    run_id: str | None
    lineage: dict[str, Any]
    timings: dict[str, float]


def _pause(stage: str, log: Log) -> None:
    if os.environ.get(PAUSE_ENV) == stage:
        log(f"paused at {stage} ({PAUSE_ENV})")
        sys.stdout.flush()
        while True:  # pragma: no cover - killed by the test
            time.sleep(1)


def cached_embedder(reference: dict[str, Any] | str, settings: RouterSettings) -> Embedder:
    """The embedder of a saved router (or a kind), with the on-disk embedding cache."""
    built = build_embedder(reference, cache_dir=settings.cache_dir)
    return CachedEmbedder(built, EmbeddingCache(settings.cache_dir))


class TimedEmbedder:
    """An embedder that adds up the seconds spent in ``encode`` (cache reads included)."""

    def __init__(self, inner: Embedder) -> None:
        self.inner = inner
        self.seconds = 0.0
        self.texts = 0

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def dim(self) -> int:
        return self.inner.dim

    def reference(self) -> dict[str, Any]:
        return self.inner.reference()

    def encode(self, texts: Sequence[str], *, progress: bool = False) -> np.ndarray:
        start = time.perf_counter()
        try:
            return self.inner.encode(texts, progress=progress)
        finally:
            self.seconds += time.perf_counter() - start
            self.texts += len(texts)


def frozen_eval_set(config: RetrainConfig, tiers: Sequence[str], settings: RouterSettings):
    """The frozen evaluation set: a seeded held-out split of the evaluation data."""
    table = load_table(resolve_data_paths(config.eval_data), list(tiers), load_prices())
    if config.eval_sample:
        table = table.sample(config.eval_sample, settings.seed)
    return table.split_by_prompt(settings.test_size, settings.seed)


def split_recent(
    labelled: pd.DataFrame, fraction: float, exclude: set[str] | set[int]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train, held-out) labels: the held-out slice is the most recently labelled ``fraction``
    of the distinct inputs (outside the frozen set), with every label of those inputs.

    Split by input, not by label, so that traffic that repeats an input cannot put the same
    input on both sides (and so that repeated inputs do not swallow the training side).  The
    input is its ``key`` column where there is one (hashes, as in ``exclude``), else the
    prompt key of ``input_text``.
    """
    if len(labelled) < 20 or fraction <= 0:
        return labelled, labelled.iloc[:0]
    if "key" in labelled.columns:
        keys = labelled["key"]
    else:
        keys = pd.Series([prompt_key(t) for t in labelled["input_text"]], index=labelled.index)
    latest = labelled.groupby(keys)["labelled_at"].max()
    latest = latest[[k not in exclude for k in latest.index]].sort_values(kind="stable")
    n_hold = round(fraction * len(latest))
    held = set(latest.index[len(latest) - n_hold :]) if n_hold else set()
    mask = keys.isin(held).to_numpy()
    return labelled.loc[~mask], labelled.loc[mask]


def _resolve_since(
    since: float | str | None, parent_params: dict[str, str], client: Any
) -> float | None:
    if since is None or since == "all":
        return None
    if since == "last":
        value = parent_params.get("feedback_until")
        return float(value) if value not in (None, "", "None") else None
    try:
        return float(since)
    except (TypeError, ValueError):
        raise ConfigurationError(
            f"--since must be 'all', 'last' or a Unix time, got {since!r}"
        ) from None


def retrain(
    config: RetrainConfig,
    settings: RouterSettings,
    store: FeedbackStore,
    log: Log = print,
) -> RetrainResult:
    """Train a challenger on feedback, gate it against the champion, register it (module doc)."""
    import mlflow

    from training.registry import (
        current_version,
        load_version,
        log_router,
        open_tracking,
        promote_version,
        set_alias,
    )

    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    client = open_tracking(settings)
    name = settings.registered_model
    until = float(config.until) if config.until is not None else time.time()

    # --- the parent (current champion) ---------------------------------------------------
    parent_version = current_version(name, settings.champion_alias, client)
    parent: CascadeModel | None = None
    parent_params: dict[str, str] = {}
    if parent_version is not None:
        parent = load_version(name, parent_version, settings)
        run_id = client.get_model_version(name, parent_version).run_id
        if run_id:
            parent_params = dict(client.get_run(run_id).data.params)
        log(f"parent: {name} version {parent_version} (@{settings.champion_alias})")
    else:
        log(f"no @{settings.champion_alias} yet: the challenger faces a random router")
    tiers = list(config.tiers or (parent.tiers if parent else DEFAULT_TIERS))
    target = config.target or (parent.target_ if parent else Target(quality_ratio=0.95))
    if parent is not None and list(parent.tiers) != tiers:
        raise ConfigurationError(f"tiers {tiers} differ from the champion's {list(parent.tiers)}")
    since = _resolve_since(config.since, parent_params, client)
    if parent is not None and parent.opinion_sources:
        # feedback records no second opinions: the challenger learns without them
        labels = ", ".join(source.label() for source in parent.opinion_sources)
        log(
            f"warning: the champion buys second opinions ({labels}); the feedback store "
            "records none, so the challenger is trained without that stage"
        )

    # --- data ----------------------------------------------------------------------------
    _, frozen = frozen_eval_set(config, tiers, settings)
    exclude = set(table_keys(frozen))
    frozen_hashes = {key_hash(k) for k in exclude}
    t = time.perf_counter()
    index = read_index(store, since=since, until=until)  # light: no texts kept
    timings["read_s"] = time.perf_counter() - t
    train_index, holdout_index = split_recent(index, config.holdout_fraction, frozen_hashes)
    # never train on the frozen set nor on the inputs of the held-out feedback slice
    holdout_hashes = set(holdout_index["key"].tolist())
    exclude_hashes = frozen_hashes | holdout_hashes
    chosen, index_counts = select_rows(
        train_index, tiers, exclude_hashes, config.max_feedback_rows, settings.seed
    )
    scored_holdout = stratified_sample(holdout_index, config.max_holdout_rows or 0, settings.seed)
    t = time.perf_counter()
    fetched = store.labelled_rows(
        [*chosen["request_id"], *scored_holdout["request_id"]], columns=FETCH_COLUMNS
    )
    timings["fetch_s"] = time.perf_counter() - t
    in_train = fetched["request_id"].isin(set(chosen["request_id"])).to_numpy()
    train_fb, holdout = fetched[in_train], fetched[~in_train]
    prices = load_prices(settings.prices_path)
    lookup = load_table(resolve_data_paths(config.lookup), tiers, prices) if config.lookup else None
    embedder = TimedEmbedder(
        cached_embedder(parent.embedder_ref_ if parent else settings.embedder, settings)
    )
    imputer = None
    if config.impute == "parent" and parent is not None:
        model = parent

        def imputer(texts: list[str], steps: list[str]) -> np.ndarray:
            emb = model.embed_inputs(embedder, texts)
            return model.pre_probabilities(model.input_matrix(texts, steps, emb))

    mean_out = parent.mean_output_tokens_ if parent is not None else None
    fb_rows = feedback_table(
        train_fb,
        tiers,
        lookup=lookup,
        exclude=exclude,
        impute=config.impute,
        imputer=imputer,
        prices=prices,
        mean_output_tokens=mean_out,
    )
    # what the first pass dropped or left out, next to what feedback_table did with the rest
    fb_rows.counts.update(
        {k: v + fb_rows.counts.get(k, 0) for k, v in index_counts.items()}
        | {"labelled": len(train_index)}
    )
    tables: list[OutcomeTable] = []
    base_digest = None
    if config.base:
        base = load_table(resolve_data_paths(config.base), tiers, prices)
        keep = np.array([key_hash(k) not in exclude_hashes for k in base.prompts], dtype=bool)
        base = base.subset(keep)
        if config.base_sample:
            base = base.sample(config.base_sample, settings.seed)
        base_digest = base.digest()
        tables.append(base)
    for extra in config.base_tables:
        keep = np.array([key_hash(k) not in exclude_hashes for k in extra.prompts], dtype=bool)
        tables.append(extra.subset(keep))
    if config.base_tables:
        digests = [t.digest() for t in tables]
        base_digest = digests[0] if len(digests) == 1 else ",".join(digests)
    if fb_rows.table is not None:
        tables.append(fb_rows.table)
    if not tables or sum(len(t) for t in tables) < 50:
        have = sum(len(t) for t in tables)
        raise ConfigurationError(
            f"too few training rows: {have} (need 50). Feedback: {fb_rows.counts}. Give base "
            "data (--base), recorded outcomes to complete labels (--lookup), or --impute parent"
        )
    train = concat_tables(tables)
    if config.shuffle_labels:
        perm = np.random.default_rng(settings.seed + 1).permutation(len(train))
        train = dataclasses.replace(train, scores=train.scores[perm])
    holdout_rows = feedback_table(holdout, tiers, lookup=lookup, exclude=exclude, prices=prices)
    holdout_labels = (
        [str(t) for t in holdout["input_text"]],
        [str(s) for s in holdout["step"]],
        [str(t) for t in holdout["tier"]],
        holdout["accepted"].to_numpy(dtype=float),
    )
    holdout_labels_in_tiers = [t in tiers for t in holdout_labels[2]]
    holdout_labels = (
        [x for x, k in zip(holdout_labels[0], holdout_labels_in_tiers, strict=True) if k],
        [x for x, k in zip(holdout_labels[1], holdout_labels_in_tiers, strict=True) if k],
        [x for x, k in zip(holdout_labels[2], holdout_labels_in_tiers, strict=True) if k],
        holdout_labels[3][np.asarray(holdout_labels_in_tiers, dtype=bool)],
    )
    drift = calibration_drift(
        index, settings.drift_window, settings.drift_threshold, settings.drift_min_labels
    )
    # whether the parent's certified targets still held on the window's labels (its own)
    certified = certificate_status(
        index,
        None if parent is None else parent.policy_,
        tiers[-1],
        version=parent_version,
        alpha=settings.certificate_alpha,
        min_labels=settings.drift_min_labels,
    )
    lineage: dict[str, Any] = {
        "parent_version": parent_version,
        "feedback_since": since,
        "feedback_until": until,
        "feedback_labelled": len(index),
        "feedback_train": len(train_index),
        "feedback_holdout": len(holdout_index),
        "feedback_holdout_scored": len(holdout),
        "max_feedback_rows": config.max_feedback_rows,
        "max_holdout_rows": config.max_holdout_rows,
        "feedback_counts": fb_rows.counts,
        "feedback_by_step_label": fb_rows.by_step_label,
        "holdout_complete_rows": 0 if holdout_rows.table is None else len(holdout_rows.table),
        "base": [str(b) for b in config.base],
        "base_sample": config.base_sample,
        "base_rows": sum(len(t) for t in tables)
        - (0 if fb_rows.table is None else len(fb_rows.table)),
        "base_digest": base_digest,
        "lookup": [str(b) for b in config.lookup],
        "frozen_eval": [str(d) for d in config.eval_data],
        "frozen_eval_rows": len(frozen),
        "frozen_eval_digest": frozen.digest(),
        "training_rows": len(train),
        "training_digest": train.digest(),
        "shuffle_labels": config.shuffle_labels,
        "impute": config.impute,
        "tiers": tiers,
        "target": str(target),
    }
    timings["data_s"] = time.perf_counter() - t0
    log(
        f"feedback: {len(index)} labels in the window ({len(train_index)} train, "
        f"{len(holdout_index)} held out, {len(holdout)} of them scored); "
        f"feedback rows chosen {len(chosen)} (cap {config.max_feedback_rows}); "
        f"training rows {len(train)} "
        f"(feedback {0 if fb_rows.table is None else len(fb_rows.table)}); "
        f"frozen evaluation set {len(frozen)} prompts"
    )

    open_tracking(settings)
    with mlflow.start_run(run_name=config.run_name) as run:
        mlflow.set_tags(
            {
                "component": "cascade-router",
                "kind": "retrain",
                "parent_version": str(parent_version),
                "frozen_eval_digest": lineage["frozen_eval_digest"],
                "training_digest": lineage["training_digest"],
            }
        )
        mlflow.log_params(
            {
                "parent_version": str(parent_version),
                "feedback_since": str(since),
                "feedback_until": str(until),
                "tiers": " > ".join(tiers),
                "target": str(target),
                "base": ",".join(lineage["base"]) or "none",
                "base_sample": str(config.base_sample),
                "lookup": ",".join(lineage["lookup"]) or "none",
                "impute": config.impute,
                "max_feedback_rows": str(config.max_feedback_rows),
                "max_holdout_rows": str(config.max_holdout_rows),
                "n_estimators": config.n_estimators,
                "shuffle_labels": config.shuffle_labels,
                "gate_metric": config.gate.metric,
                "gate_margin": config.gate.margin,
                "seed": settings.seed,
                "frozen_eval_digest": lineage["frozen_eval_digest"],
                "training_digest": lineage["training_digest"],
                "base_digest": str(base_digest),
            }
        )
        mlflow.log_metrics(
            {
                "lineage.feedback_labelled": len(index),
                "lineage.feedback_train": len(train_index),
                "lineage.feedback_holdout": len(holdout_index),
                "lineage.training_rows": len(train),
                "lineage.frozen_eval_rows": len(frozen),
                **{f"lineage.feedback.{k}": float(v) for k, v in fb_rows.counts.items()},
                **drift_metrics(drift),
                **certificate_metrics(certified),
            }
        )
        mlflow.log_dict(lineage, "lineage.json")

        # --- train ---------------------------------------------------------------------
        t = time.perf_counter()
        log("training the challenger")
        challenger = CascadeModel(
            tiers=tiers,
            target=target,
            answer_aware=config.answer_aware,
            acceptance_params={"n_estimators": config.n_estimators},
            seed=settings.seed,
            capacity_cv_below=settings.capacity_cv_below,
        )
        try:
            challenger.fit(train, embedder, progress=settings.progress)
        except TargetNotCertifiableError as exc:
            # refused before the gate: nothing is registered, the champion stays
            mlflow.set_tags({"gate_decision": "not_certifiable", "not_certifiable": str(exc)})
            log(f"the challenger is refused: {exc}")
            raise
        timings["fit_s"] = time.perf_counter() - t
        timings["fit_embed_s"] = embedder.seconds
        _pause("fit", log)

        # --- gate ----------------------------------------------------------------------
        t = time.perf_counter()
        log("scoring challenger and champion on the frozen set and the feedback slice")
        kwargs: dict[str, Any] = {
            "feedback_table": holdout_rows.table,
            "feedback_labels": holdout_labels,
            "min_feedback_rows": config.gate.min_feedback_rows,
            "seed": settings.seed,
        }
        c_score = score_model(challenger, embedder, frozen, target, **kwargs)
        h_score: ModelScore | None = None
        if parent is not None:
            h_score = score_model(parent, embedder, frozen, target, **kwargs)
        decision = decide(c_score, h_score, config.gate)
        timings["gate_s"] = time.perf_counter() - t
        timings["embed_s"] = embedder.seconds
        timings["embedded_texts"] = float(embedder.texts)
        mlflow.log_metrics(decision.metrics())
        mlflow.log_dict(decision.to_dict(), "gate/decision.json")
        mlflow.log_text(decision.report(), "gate/report.txt")
        mlflow.set_tag("gate_decision", "promote" if decision.promote else "keep")
        _pause("gate", log)

        # --- registry: the last, short part ---------------------------------------------
        with tempfile.TemporaryDirectory(prefix="cascade-challenger-") as tmp:
            folder = challenger.save(Path(tmp) / "router")
            example = pd.DataFrame({"step": ["default"], "input": ["What is 2 + 2?"]})
            info = log_router(folder, run=run, input_example=example, registered_model=name)
        version = str(info.registered_model_version)
        set_alias(name, settings.challenger_alias, version, client)
        promoted = False
        if decision.promote and config.promote:
            promote_version(
                name,
                version,
                champion_alias=settings.champion_alias,
                previous_alias=settings.previous_alias,
                client=client,
            )
            promoted = True
        mlflow.set_tag("registered_version", version)
        mlflow.set_tag("promoted", str(promoted))
        timings["total_s"] = time.perf_counter() - t0
        mlflow.log_metrics({f"timing.{k}": v for k, v in timings.items()})
        run_id = run.info.run_id
    client.set_model_version_tag(name, version, "gate_decision", "promote" if promoted else "keep")
    client.set_model_version_tag(name, version, "parent_version", str(parent_version))
    log(decision.report())
    log(
        f"registered {name} version {version} as @{settings.challenger_alias}; "
        + (
            f"promoted to @{settings.champion_alias}"
            + (
                f" (version {parent_version} is @{settings.previous_alias})"
                if parent_version
                else ""
            )
            if promoted
            else f"@{settings.champion_alias} stays on version {parent_version}"
        )
    )
    return RetrainResult(decision, version, parent_version, promoted, run_id, lineage, timings)


def lineage_json(result: RetrainResult) -> str:
    return json.dumps(
        {
            "version": result.version,
            "parent_version": result.parent_version,
            "promoted": result.promoted,
            "run_id": result.run_id,
            "lineage": result.lineage,
            "gate": result.decision.to_dict(),
            "timings": result.timings,
        },
        indent=2,
        default=str,
    )


__all__ = ["PAUSE_ENV", "RetrainConfig", "RetrainResult", "lineage_json", "retrain"]
