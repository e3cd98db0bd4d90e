"""`cascade-router simulate`: the feedback loop on real recorded traffic, end to end.

1. Split the data like ``retrain`` does: a frozen evaluation set (seeded held-out split) and a
   pool.  A *seed* router is trained on a small sample of the pool (default 500 prompts),
   registered and made ``@champion``.
2. The sidecar serves ``models:/NAME@champion`` (started here as a subprocess, or an already
   running one given by ``url``) and hot-reloads the alias.  The rest of the pool, shuffled, is
   the request stream: each prompt goes to ``POST /v1/chat/completions`` (model
   ``cascade:STEP``), and the recorded outcome of the tier that answered goes back as
   ``POST /v1/feedback``.
3. At every checkpoint (a number of feedback labels) ``retrain`` runs on everything labelled so
   far plus the seed set, completing each request's other tiers from the recorded outcomes
   (the replay data has them: see ``training/feedback_data.py``), and the gate decides.  The
   sidecar picks a promoted version up by itself.
4. The learning curve: APGR and cost saved of the serving ``@champion`` on the frozen set
   against the number of feedback labels, next to a router trained offline on every label of
   the pool — written as CSV and PNG.
"""

from __future__ import annotations

import csv
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from router.data import OutcomeTable
from router.errors import ConfigurationError
from router.feedback import FeedbackStore
from router.model import CascadeModel
from router.policy import Target
from router.registry import ModelRef
from router.settings import RouterSettings
from training.gate import GateConfig, ModelScore, score_model
from training.retrain import RetrainConfig, cached_embedder, frozen_eval_set, retrain

Log = Callable[[str], None]


@dataclass
class SimulateConfig:
    """What `cascade-router simulate` replays and when it retrains."""

    data: Sequence[str] = ("mmlu_pro",)
    tiers: Sequence[str] = ("llama-3.1-8b-instruct", "gpt-4o-2024-05-13")
    sample: int | None = None  # a seeded sample of the data (frozen set and pool drawn from it)
    seed_size: int = 500
    # a seed router of 500 prompts certifies on ~94 calibration outcomes: 0.95 cannot be
    # certified on so few, 0.9 can (retrains keep the champion's target)
    target: Target = field(default_factory=lambda: Target(quality_ratio=0.9))
    checkpoints: Sequence[int] = (500, 2000, 8000)
    n_estimators: int = 1500
    offline: bool = True  # also train the offline reference on every pool label
    url: str | None = None  # a running sidecar; default: start one
    concurrency: int = 4
    gate: GateConfig = field(default_factory=GateConfig)
    output_dir: Path = Path("outputs/simulate")


@dataclass
class CurvePoint:
    labels: int
    champion_version: str
    apgr: float | None
    cost_saved: float | None
    ece: float | None
    challenger_version: str | None = None
    challenger_apgr: float | None = None
    promoted: bool = False
    retrain_s: float | None = None


@dataclass
class SimulateResult:
    points: list[CurvePoint]
    offline: dict[str, float | None] | None
    csv_path: Path
    plot_path: Path
    requests: int
    labels: int
    tier_counts: dict[str, int]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Sidecar:
    """`cascade-router serve` in a subprocess, serving the registry's @champion."""

    def __init__(self, settings: RouterSettings, log: Log, reload_interval_s: float = 1.0):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ)
        env.update(
            {
                "CASCADE_TRACKING_URI": settings.tracking_uri,
                "CASCADE_ARTIFACT_LOCATION": settings.artifact_location,
                "CASCADE_FEEDBACK_URL": settings.feedback_url,
                "CASCADE_CACHE_DIR": str(settings.cache_dir),
                "CASCADE_REGISTERED_MODEL": settings.registered_model,
                "CASCADE_RELOAD_INTERVAL_S": str(reload_interval_s),
                "CASCADE_LOG_LEVEL": "warning",
                "CASCADE_PROGRESS": "false",
            }
        )
        uri = ModelRef.champion(settings).uri
        self.log_file = tempfile.TemporaryFile()  # noqa: SIM115 - closed in stop()
        command = [sys.executable, "-m", "training.cli", "serve", "--port", str(self.port)]
        command += ["--model-uri", uri]
        self.proc = subprocess.Popen(
            command,
            env=env,
            stdout=self.log_file,
            stderr=subprocess.STDOUT,
        )
        log(f"sidecar starting on {self.url} (serving {uri}, reload every {reload_interval_s}s)")

    def wait_ready(self, timeout_s: float = 180.0) -> None:
        import httpx

        deadline = time.time() + timeout_s
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise ConfigurationError(f"the sidecar exited early:\n{self.output()}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise ConfigurationError(f"the sidecar was not ready in {timeout_s:g}s:\n{self.output()}")

    def output(self) -> str:
        self.log_file.seek(0)
        return self.log_file.read().decode("utf-8", "replace")[-4000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log_file.close()


class Client:
    """Chat completions and feedback over HTTP, as an application would send them."""

    def __init__(self, url: str, concurrency: int) -> None:
        import httpx

        self.url = url.rstrip("/")
        self.http = httpx.Client(timeout=120, limits=httpx.Limits(max_connections=concurrency + 2))

    def ask(self, step: str, prompt: str) -> tuple[str, str, str]:
        """Returns (request id, tier that answered, router version)."""
        response = self.http.post(
            f"{self.url}/v1/chat/completions",
            json={"model": f"cascade:{step}", "messages": [{"role": "user", "content": prompt}]},
        )
        if response.status_code != 200:
            raise ConfigurationError(
                f"sidecar answered {response.status_code}: {response.text[:300]}"
            )
        h = response.headers
        return h["x-cascade-request-id"], h["x-cascade-tier"], h["x-cascade-router-version"]

    def feedback(self, request_id: str, accepted: bool, score: float) -> None:
        response = self.http.post(
            f"{self.url}/v1/feedback",
            json={
                "request_id": request_id,
                "accepted": accepted,
                "score": score,
                "source": "simulate",
            },
        )
        if response.status_code != 200:
            raise ConfigurationError(f"feedback refused ({response.status_code}): {response.text}")

    def version(self) -> str:
        response = self.http.post(
            f"{self.url}/v1/route",
            json={"messages": [{"role": "user", "content": "What is 2 + 2?"}]},
        )
        return response.headers.get("x-cascade-router-version", "")

    def close(self) -> None:
        self.http.close()


def _register(model: CascadeModel, settings: RouterSettings, run_name: str) -> str:
    import mlflow
    import pandas as pd

    from training.registry import log_router, open_tracking

    open_tracking(settings)
    with tempfile.TemporaryDirectory() as tmp, mlflow.start_run(run_name=run_name) as run:
        folder = model.save(Path(tmp) / "router")
        example = pd.DataFrame({"step": ["default"], "input": ["What is 2 + 2?"]})
        info = log_router(
            folder, run=run, input_example=example, registered_model=settings.registered_model
        )
    return str(info.registered_model_version)


def simulate(config: SimulateConfig, settings: RouterSettings, log: Log = print) -> SimulateResult:
    """Run the loop (module docstring); returns the learning curve."""
    from training.registry import current_version, open_tracking, promote_version

    checkpoints = sorted({int(c) for c in config.checkpoints})
    if not checkpoints or checkpoints[0] < 1:
        raise ConfigurationError("--checkpoints needs positive label counts")
    out_dir = Path(config.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rconfig = RetrainConfig(
        since="all",
        lookup=list(config.data),
        eval_data=list(config.data),
        eval_sample=config.sample,
        tiers=list(config.tiers),
        n_estimators=config.n_estimators,
        gate=config.gate,
    )
    pool, frozen = frozen_eval_set(rconfig, config.tiers, settings)
    n_stream = checkpoints[-1]
    if config.seed_size + n_stream > len(pool):
        raise ConfigurationError(
            f"the pool has {len(pool)} prompts: too few for a seed of {config.seed_size} and "
            f"{n_stream} feedback labels"
        )
    pool = _replayable(pool, config.data, log)
    order = np.random.default_rng(settings.seed + 11).permutation(len(pool))
    seed = pool.subset(np.sort(order[: config.seed_size]))
    stream = pool.subset(order[config.seed_size : config.seed_size + n_stream])
    embedder = cached_embedder(settings.embedder, settings)
    params = {"n_estimators": config.n_estimators}

    def fresh() -> CascadeModel:
        return CascadeModel(
            list(config.tiers),
            target=config.target,
            acceptance_params=params,
            seed=settings.seed,
            capacity_cv_below=settings.capacity_cv_below,
        )

    log(
        f"frozen evaluation set {len(frozen)} prompts; seed {len(seed)}; stream {len(stream)}; "
        f"checkpoints {checkpoints}"
    )
    offline: dict[str, float | None] | None = None
    if config.offline:
        log(f"offline reference: a router trained on all {len(pool)} pool labels")
        t = time.perf_counter()
        reference = fresh().fit(pool, embedder, progress=settings.progress)
        offline = score_model(reference, embedder, frozen, reference.target_).frozen
        offline["train_s"] = time.perf_counter() - t
        log(f"offline APGR {offline['apgr']}, cost saved {offline['cost_saved']}")

    log("training the seed router")
    seed_model = fresh().fit(seed, embedder, progress=settings.progress)
    seed_version = _register(seed_model, settings, "simulate-seed")
    registry = open_tracking(settings)
    promote_version(
        settings.registered_model,
        seed_version,
        champion_alias=settings.champion_alias,
        previous_alias=settings.previous_alias,
        client=registry,
    )
    s0 = score_model(seed_model, embedder, frozen, seed_model.target_).frozen
    points = [CurvePoint(0, seed_version, s0["apgr"], s0["cost_saved"], s0["ece"])]
    log(f"seed router: version {seed_version}, APGR {s0['apgr']}")

    sidecar = None if config.url else Sidecar(settings, log)
    tier_counts: dict[str, int] = {}
    try:
        if sidecar is not None:
            sidecar.wait_ready()
        client = Client(config.url or (sidecar.url if sidecar else ""), config.concurrency)
        tier_index = {t: i for i, t in enumerate(stream.tiers)}

        def one(i: int) -> str:
            rid, tier, _ = client.ask(str(stream.steps[i]), stream.prompts[i])
            score = float(stream.scores[i, tier_index[tier]])
            client.feedback(rid, score >= 0.5, score)
            return tier

        sent = 0
        from tqdm.auto import tqdm

        with (
            ThreadPoolExecutor(config.concurrency) as pool_exec,
            tqdm(total=n_stream, desc="requests", disable=not settings.progress) as bar,
        ):
            for checkpoint in checkpoints:
                for tier in pool_exec.map(one, range(sent, checkpoint)):
                    tier_counts[tier] = tier_counts.get(tier, 0) + 1
                    bar.update(1)
                sent = checkpoint
                log(f"{checkpoint} feedback labels: retraining")
                t = time.perf_counter()
                with FeedbackStore.from_settings(settings) as store:
                    result = retrain(
                        RetrainConfig(**{**asdict_shallow(rconfig), "base_tables": [seed]}),
                        settings,
                        store,
                        log=log,
                    )
                elapsed = time.perf_counter() - t
                d = result.decision
                serving: ModelScore = (
                    d.challenger if result.promoted else (d.champion or d.challenger)
                )
                champion = current_version(
                    settings.registered_model, settings.champion_alias, registry
                )
                points.append(
                    CurvePoint(
                        checkpoint,
                        str(champion),
                        serving.frozen.get("apgr"),
                        serving.frozen.get("cost_saved"),
                        serving.frozen.get("ece"),
                        result.version,
                        d.challenger.frozen.get("apgr"),
                        result.promoted,
                        elapsed,
                    )
                )
                if result.promoted and sidecar is not None:
                    _wait_for_version(client, str(champion), log)
        client.close()
    finally:
        if sidecar is not None:
            sidecar.stop()
    csv_path = out_dir / "learning_curve.csv"
    _write_csv(csv_path, points, offline)
    plot_path = plot_learning_curve(points, offline, out_dir / "learning_curve.png", frozen)
    return SimulateResult(points, offline, csv_path, plot_path, n_stream, n_stream, tier_counts)


def _replayable(pool: OutcomeTable, data: Sequence[str], log: Log) -> OutcomeTable:
    """The pool prompts whose recorded answer the replay backend finds for every tier.

    The replay keeps the first answer of a repeated prompt text, so the few prompts that share
    a text with another one (and a handful whose text differs between tiers' rows) are left out.
    """
    from router.backends import ReplayBackend
    from training.pipeline import resolve_data_paths

    paths = resolve_data_paths(data)
    keep = np.ones(len(pool), dtype=bool)
    for tier in pool.tiers:
        backend = ReplayBackend.from_files(paths, tier)
        for i, prompt in enumerate(pool.prompts):
            if backend.recorded_prompt_id(prompt) != str(pool.prompt_ids[i]):
                keep[i] = False
    if not keep.all():
        log(f"{int((~keep).sum())} pool prompts left out: the replay answers them differently")
    return pool.subset(keep)


def asdict_shallow(config: RetrainConfig) -> dict[str, Any]:
    return {f: getattr(config, f) for f in config.__dataclass_fields__}


def _wait_for_version(client: Client, version: str, log: Log, timeout_s: float = 60.0) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if client.version() == version:
            log(f"sidecar now serves version {version}")
            return
        time.sleep(0.5)
    log(f"warning: the sidecar did not pick version {version} up within {timeout_s:g}s")


def _write_csv(path: Path, points: list[CurvePoint], offline: dict[str, Any] | None) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(
            f, fieldnames=[*asdict(points[0]), "offline_apgr", "offline_cost_saved"]
        )
        writer.writeheader()
        for p in points:
            row = asdict(p)
            row["offline_apgr"] = None if offline is None else offline.get("apgr")
            row["offline_cost_saved"] = None if offline is None else offline.get("cost_saved")
            writer.writerow(row)


def plot_learning_curve(
    points: list[CurvePoint],
    offline: dict[str, Any] | None,
    path: Path,
    frozen: OutcomeTable,
) -> Path:
    """APGR and cost saved of the serving champion against feedback labels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    x = [p.labels for p in points]
    for ax, key, label in (
        (axes[0], "apgr", "APGR"),
        (axes[1], "cost_saved", "cost saved at the target"),
    ):
        y = [getattr(p, key) for p in points]
        ax.plot(x, y, marker="o", label="@champion (served)")
        if key == "apgr":
            ax.plot(
                [p.labels for p in points[1:]],
                [p.challenger_apgr for p in points[1:]],
                "x",
                color="grey",
                label="challenger",
            )
            ax.axhline(0.5, color="lightgrey", ls=":", label="random")
        if offline is not None and offline.get(key) is not None:
            ax.axhline(offline[key], color="k", ls="--", label="offline, all labels")
        ax.set_xscale("symlog", linthresh=max(1, min(x[1:] or [1])))
        ax.set_xlabel("feedback labels")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(
        f"feedback loop: {' → '.join(frozen.tiers)} (frozen evaluation set, n={len(frozen)})"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
