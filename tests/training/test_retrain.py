"""retrain → gate → registry on a real MLflow sqlite store and a real feedback store (SQLite)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import mlflow
import numpy as np
import pytest

from router.data import OutcomeTable
from router.errors import ConfigurationError, TargetNotCertifiableError
from router.feedback import FeedbackStore
from router.model import CascadeModel
from router.policy import Target
from router.registry import registry_client
from router.settings import RouterSettings
from tests.conftest import SAMPLE, TIERS
from training.feedback_data import replay_as_feedback
from training.gate import GateConfig
from training.registry import (
    current_version,
    list_versions,
    log_router,
    open_tracking,
    promote_version,
    rollback,
)
from training.retrain import PAUSE_ENV, RetrainConfig, retrain

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def reg(settings: RouterSettings) -> mlflow.MlflowClient:
    """The registry client of the test's tracking store."""
    return registry_client(settings.tracking_uri)


def shuffled(table: OutcomeTable, seed: int = 7) -> OutcomeTable:
    perm = np.random.default_rng(seed).permutation(len(table))
    return OutcomeTable(
        table.tiers,
        table.prompt_ids,
        table.prompts,
        table.steps,
        table.splits,
        table.scores[perm],
        table.costs,
        table.responses,
        table.output_tokens,
    )


@pytest.fixture(scope="module")
def shuffled_model(split_tables, embedder) -> CascadeModel:
    """A router trained on permuted labels: no better than random."""
    train, _ = split_tables
    return CascadeModel(
        list(TIERS),
        acceptance_params={"n_estimators": 200, "early_stopping_rounds": 30},
        capacity_cv_below=0,
    ).fit(shuffled(train), embedder)


@pytest.fixture(scope="module")
def base_file(mmlu_frame, split_tables, tmp_path_factory) -> Path:
    """The training part of the test sample as a long-schema parquet file (the base data)."""
    train, _ = split_tables
    ids = set(train.prompt_ids.tolist())
    path = tmp_path_factory.mktemp("base") / "base.parquet"
    mmlu_frame[mmlu_frame["prompt_id"].isin(ids)].to_parquet(path)
    return path


@pytest.fixture
def settings(tmp_path: Path, cache_dir: Path) -> RouterSettings:
    return RouterSettings(
        tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
        artifact_location=str(tmp_path / "mlruns"),
        cache_dir=cache_dir,
        feedback_url=f"sqlite:///{tmp_path / 'feedback.db'}",
        progress=False,
    )


def register(model: CascadeModel, settings: RouterSettings, tmp_path: Path) -> str:
    open_tracking(settings)
    folder = model.save(tmp_path / f"saved-{time.time_ns()}" / "router")
    with mlflow.start_run() as run:
        info = log_router(
            folder, run=run, input_example=None, registered_model=settings.registered_model
        )
    return str(info.registered_model_version)


def write_feedback(store: FeedbackStore, table: OutcomeTable, start: int = 0) -> int:
    """Replay ``table`` as production traffic: alternate tiers, label with the recorded score."""
    return replay_as_feedback(store, table, start=start, prefix="req", source="test")


def config(base_file: Path, **kw) -> RetrainConfig:
    defaults = {
        "base": [str(base_file)],
        "lookup": ["mmlu_pro"],
        "eval_sample": SAMPLE,
        "n_estimators": 200,
        # 300 frozen prompts, ~260 calibration prompts and 40 held-out labels: ECE, the realised
        # quality ratio and the Brier score move by several points between two fits of the same
        # data, so the guardrails get tolerances of that size here (test_gate.py checks each
        # guardrail refusing on its own); the APGR margin is the default.
        "gate": GateConfig(
            margin=0.005, ece_tolerance=0.05, target_tolerance=0.1, feedback_tolerance=0.05
        ),
    }
    defaults.update(kw)
    return RetrainConfig(**defaults)


def aliases(settings: RouterSettings) -> dict[str, str | None]:
    name = settings.registered_model
    return {
        a: current_version(name, a, reg(settings))
        for a in (settings.champion_alias, settings.previous_alias, settings.challenger_alias)
    }


def test_gate_refuses_shuffled_challenger(
    fitted_model, split_tables, base_file, settings, tmp_path
) -> None:
    champion = register(fitted_model, settings, tmp_path)
    promote_version(settings.registered_model, champion, client=reg(settings))
    with FeedbackStore.from_settings(settings) as store:
        write_feedback(store, split_tables[0].subset(np.arange(200)))
        # the shuffled challenger's ~220 calibration outcomes certify a quality ratio of 0.9
        # (not 0.95: that refusal is the next test), so the gate is what refuses it here
        shuffled_run = config(base_file, shuffle_labels=True, target=Target(quality_ratio=0.9))
        result = retrain(shuffled_run, settings, store, log=print)
    assert not result.promoted and not result.decision.promote
    first = result.decision.checks[0]
    assert first.name == "frozen apgr" and not first.passed
    assert first.challenger < first.champion
    assert aliases(settings) == {
        "champion": champion,
        "previous": None,
        "challenger": result.version,
    }
    # the run holds the lineage and the decision
    run = mlflow.MlflowClient(settings.tracking_uri).get_run(result.run_id)
    assert run.data.params["parent_version"] == champion
    assert run.data.params["shuffle_labels"] == "True"
    assert run.data.metrics["lineage.feedback_labelled"] == 200
    assert run.data.metrics["gate.promote"] == 0.0
    assert "gate.champion.frozen.apgr" in run.data.metrics
    assert result.lineage["feedback_counts"]["completed_from_lookup"] == 160
    assert sum(result.lineage["feedback_by_step_label"].values()) == 160
    assert len(result.lineage["frozen_eval_digest"]) == 64


def test_a_challenger_that_cannot_certify_the_target_is_refused(
    fitted_model, split_tables, base_file, settings, tmp_path
) -> None:
    champion = register(fitted_model, settings, tmp_path)
    promote_version(settings.registered_model, champion, client=reg(settings))
    with FeedbackStore.from_settings(settings) as store:
        write_feedback(store, split_tables[0].subset(np.arange(200)))
        # labels shuffled and a strict target: only always-frontier (and quality ratios well
        # below 0.99, reached by mixing at random) can be certified on these outcomes
        strict = Target.parse("quality=0.99,delta=0.01")
        with pytest.raises(TargetNotCertifiableError, match="certifiable: quality="):
            retrain(
                config(base_file, shuffle_labels=True, target=strict), settings, store, log=print
            )
    assert aliases(settings) == {"champion": champion, "previous": None, "challenger": None}
    runs = mlflow.MlflowClient(settings.tracking_uri).search_runs(
        [mlflow.get_experiment_by_name(settings.experiment).experiment_id],
        filter_string="tags.gate_decision = 'not_certifiable'",
    )
    assert len(runs) == 1 and "cannot be certified" in runs[0].data.tags["not_certifiable"]


def test_gate_promotes_better_challenger_then_rollback(
    shuffled_model, split_tables, base_file, settings, tmp_path
) -> None:
    weak = register(shuffled_model, settings, tmp_path)
    promote_version(settings.registered_model, weak, client=reg(settings))
    with FeedbackStore.from_settings(settings) as store:
        write_feedback(store, split_tables[0].subset(np.arange(200)))
        result = retrain(config(base_file), settings, store, log=print)
    assert result.promoted, result.decision.report()
    assert aliases(settings) == {
        "champion": result.version,
        "previous": weak,
        "challenger": result.version,
    }
    demoted, restored = rollback(settings.registered_model, client=reg(settings))
    assert (demoted, restored) == (result.version, weak)
    assert current_version(settings.registered_model, "champion", reg(settings)) == weak
    assert current_version(settings.registered_model, "previous", reg(settings)) == result.version
    rollback(settings.registered_model, client=reg(settings))  # undo
    assert current_version(settings.registered_model, "champion", reg(settings)) == result.version


def test_rollback_without_previous_is_a_clear_error(fitted_model, settings, tmp_path) -> None:
    version = register(fitted_model, settings, tmp_path)
    promote_version(settings.registered_model, version, client=reg(settings))
    with pytest.raises(ConfigurationError, match="previous"):
        rollback(settings.registered_model, client=reg(settings))
    with pytest.raises(ConfigurationError, match="no version 99"):
        promote_version(settings.registered_model, 99, client=reg(settings))


def test_retrain_reads_store_written_concurrently(
    fitted_model, split_tables, base_file, settings, tmp_path
) -> None:
    champion = register(fitted_model, settings, tmp_path)
    promote_version(settings.registered_model, champion, client=reg(settings))
    train, _ = split_tables
    store = FeedbackStore.from_settings(settings)
    write_feedback(store, train.subset(np.arange(100)))
    stop = threading.Event()
    written = [100]

    def sidecar() -> None:  # another writer (its own store object, as a second process would)
        other = FeedbackStore.from_settings(settings)
        i = 100
        while not stop.is_set() and i < len(train):
            written[0] += write_feedback(other, train.subset(np.arange(i, i + 5)), start=i)
            i += 5
        other.close()

    thread = threading.Thread(target=sidecar)
    thread.start()
    try:
        result = retrain(config(base_file, promote=False), settings, store, log=print)
    finally:
        stop.set()
        thread.join()
    until = result.lineage["feedback_until"]
    in_window = len(store.labelled(until=until))
    after = len(store.labelled(since=until))
    assert result.lineage["feedback_labelled"] == in_window
    assert in_window + after == written[0] == store.counts()["labelled"]
    assert written[0] > 100  # the writer did write while retrain ran
    store.close()
    assert (
        current_version(settings.registered_model, "champion", reg(settings)) == champion
    )  # --no-promote


def test_killed_retrain_leaves_registry_unchanged(
    fitted_model, split_tables, base_file, settings, tmp_path
) -> None:
    champion = register(fitted_model, settings, tmp_path)
    promote_version(settings.registered_model, champion, client=reg(settings))
    with FeedbackStore.from_settings(settings) as store:
        write_feedback(store, split_tables[0].subset(np.arange(100)))
    before_versions = list_versions(settings.registered_model, reg(settings))
    before_aliases = aliases(settings)
    env = dict(os.environ)
    env.update(
        {
            "CASCADE_TRACKING_URI": settings.tracking_uri,
            "CASCADE_ARTIFACT_LOCATION": settings.artifact_location,
            "CASCADE_FEEDBACK_URL": settings.feedback_url,
            "CASCADE_CACHE_DIR": str(settings.cache_dir),
            "CASCADE_PROGRESS": "false",
            PAUSE_ENV: "gate",  # after training and scoring, right before the registry writes
        }
    )
    cmd = [sys.executable, "-m", "training.cli", "retrain", "--base", str(base_file)]
    cmd += ["--lookup", "mmlu_pro", "--eval-sample", str(SAMPLE), "--n-estimators", "200"]
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    seen = []
    assert proc.stdout is not None
    deadline = time.time() + 300
    for line in proc.stdout:
        seen.append(line)
        if "paused at gate" in line or time.time() > deadline:
            break
    assert any("paused at gate" in line for line in seen), "".join(seen)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert list_versions(settings.registered_model, reg(settings)) == before_versions
    assert aliases(settings) == before_aliases


def test_cli_promote_rollback_versions(fitted_model, settings, tmp_path, monkeypatch) -> None:
    import json

    from typer.testing import CliRunner

    from training.cli.app import app

    for key, value in {
        "CASCADE_TRACKING_URI": settings.tracking_uri,
        "CASCADE_ARTIFACT_LOCATION": settings.artifact_location,
        "CASCADE_FEEDBACK_URL": settings.feedback_url,
        "CASCADE_PROGRESS": "false",
    }.items():
        monkeypatch.setenv(key, value)
    runner = CliRunner()
    v1 = register(fitted_model, settings, tmp_path)
    v2 = register(fitted_model, settings, tmp_path)
    result = runner.invoke(app, ["rollback"])
    assert result.exit_code == 2 and "error" in result.output
    assert runner.invoke(app, ["promote", v1]).exit_code == 0
    result = runner.invoke(app, ["promote", v2])
    assert result.exit_code == 0, result.output
    assert aliases(settings)["champion"] == v2 and aliases(settings)["previous"] == v1
    assert runner.invoke(app, ["promote", "42"]).exit_code == 2
    result = runner.invoke(app, ["versions", "--json"])
    assert result.exit_code == 0, result.output
    listed = json.loads(result.stdout)
    assert [v["aliases"] for v in listed["versions"]] == [["previous"], ["champion"]]
    assert runner.invoke(app, ["rollback"]).exit_code == 0
    assert aliases(settings)["champion"] == v1
    table = runner.invoke(app, ["versions"])
    assert table.exit_code == 0 and "@champion" in table.stdout


def test_cli_retrain_and_since_last(
    fitted_model, split_tables, base_file, settings, tmp_path, monkeypatch
) -> None:
    import json

    from typer.testing import CliRunner

    from training.cli.app import app

    for key, value in {
        "CASCADE_TRACKING_URI": settings.tracking_uri,
        "CASCADE_ARTIFACT_LOCATION": settings.artifact_location,
        "CASCADE_FEEDBACK_URL": settings.feedback_url,
        "CASCADE_CACHE_DIR": str(settings.cache_dir),
        "CASCADE_PROGRESS": "false",
    }.items():
        monkeypatch.setenv(key, value)
    champion = register(fitted_model, settings, tmp_path)
    promote_version(settings.registered_model, champion, client=reg(settings))
    with FeedbackStore.from_settings(settings) as store:
        write_feedback(store, split_tables[0].subset(np.arange(100)))
    common = ["--base", str(base_file), "--lookup", "mmlu_pro", "--eval-sample", str(SAMPLE)]
    common += ["--n-estimators", "100", "--no-promote"]
    runner = CliRunner()
    first = runner.invoke(app, ["retrain", *common, "--json-out", str(tmp_path / "r1.json")])
    assert first.exit_code == 0, first.output
    summary = json.loads(first.stdout.strip().splitlines()[-1])
    assert summary["version"] == "2" and summary["promoted"] is False
    lineage = json.loads((tmp_path / "r1.json").read_text())
    assert lineage["lineage"]["feedback_labelled"] == 100
    assert "gate: " in first.output  # the readable report
    # --since last: the window starts where the parent's ended (the parent here is the
    # champion, version 1, which was not a retrain: so everything is read)
    second = runner.invoke(app, ["retrain", *common, "--since", "last"])
    assert second.exit_code == 0, second.output
    bad = runner.invoke(app, ["retrain", "--since", "yesterday"])
    assert bad.exit_code == 2 and "--since" in bad.output
    assert current_version(settings.registered_model, "champion", reg(settings)) == champion


def test_a_champion_that_buys_second_opinions_is_retrained_without_them(
    split_tables, base_file, settings, tmp_path, embedder
) -> None:
    """Feedback records no opinions: the gate scores both models on their answer-aware stage
    (the frozen set has no peer answers either) and the run says what is dropped."""
    from router.data import bundled_dataset, load_table

    peer = "phi-3-mini-4k-instruct"
    table = load_table([bundled_dataset("mmlu_pro")], TIERS, peers=[peer]).sample(600, seed=3)
    with_peer = CascadeModel(
        list(TIERS),
        target=Target(quality_ratio=0.9),  # what ~110 calibration outcomes certify
        peers={0: peer},
        acceptance_params={"n_estimators": 100, "early_stopping_rounds": 20},
        capacity_cv_below=0,
    ).fit(table, embedder)
    champion = register(with_peer, settings, tmp_path)
    promote_version(settings.registered_model, champion, client=reg(settings))
    logged: list[str] = []
    with FeedbackStore.from_settings(settings) as store:
        write_feedback(store, split_tables[0].subset(np.arange(200)))
        result = retrain(config(base_file), settings, store, log=logged.append)
    assert any(f"buys second opinions (peers({peer}))" in m for m in logged), logged
    scored = result.decision.champion
    assert scored is not None and scored.frozen["apgr"] is not None
    assert result.decision.challenger.frozen["apgr"] is not None


def test_retrain_on_postgres_against_a_tracking_server(
    shuffled_model, split_tables, base_file, cache_dir, tracking_server, postgres_database, tmp_path
) -> None:
    """The scaled-out set-up: labels in PostgreSQL, versions and aliases on an MLflow server
    over HTTP (artifacts in its own store); retrain registers and promotes there."""
    settings = RouterSettings(
        tracking_uri=tracking_server.url,
        experiment="retrain-on-server",
        registered_model="retrain-on-server",
        cache_dir=cache_dir,
        feedback_url=postgres_database(),
        progress=False,
    )
    weak = register(shuffled_model, settings, tmp_path)
    promote_version(settings.registered_model, weak, client=reg(settings))
    with FeedbackStore.from_settings(settings) as store:
        write_feedback(store, split_tables[0].subset(np.arange(200)))
        # 160 distinct training inputs after the held-out 40: the cap keeps 120 of them
        result = retrain(config(base_file, max_feedback_rows=120), settings, store, log=print)
    assert result.promoted, result.decision.report()
    assert aliases(settings) == {
        "champion": result.version,
        "previous": weak,
        "challenger": result.version,
    }
    counts = result.lineage["feedback_counts"]
    assert counts["labelled"] == 160 and counts["capped"] == 40
    assert counts["completed_from_lookup"] == 120
    assert result.timings["read_s"] > 0 and result.timings["embed_s"] > 0
    run = reg(settings).get_run(result.run_id)
    assert run.info.artifact_uri.startswith("mlflow-artifacts:")
    assert run.data.params["parent_version"] == weak
    assert result.lineage["feedback_labelled"] == 200
    assert not (tmp_path / "mlruns").exists()


def test_retrain_if_drifted_retrains_when_a_certified_target_no_longer_holds(
    fitted_model, split_tables, base_file, settings, tmp_path, monkeypatch
) -> None:
    """Replayed feedback answers half the requests with the small tier whatever the policy
    says, so the returned answers' quality falls below what the champion's certificate
    promises: with enough labels the check flags it and --if-drifted retrains."""
    from typer.testing import CliRunner

    from training.cli.app import app

    for key, value in {
        "CASCADE_TRACKING_URI": settings.tracking_uri,
        "CASCADE_ARTIFACT_LOCATION": settings.artifact_location,
        "CASCADE_FEEDBACK_URL": settings.feedback_url,
        "CASCADE_CACHE_DIR": str(settings.cache_dir),
        "CASCADE_PROGRESS": "false",
        "COLUMNS": "200",
    }.items():
        monkeypatch.setenv(key, value)
    champion = register(fitted_model, settings, tmp_path)
    promote_version(settings.registered_model, champion, client=reg(settings))
    runner = CliRunner()
    common = ["--base", str(base_file), "--lookup", "mmlu_pro", "--eval-sample", str(SAMPLE)]
    common += ["--n-estimators", "100", "--no-promote", "--if-drifted"]
    with FeedbackStore.from_settings(settings) as store:
        write_feedback(store, split_tables[0].subset(np.arange(30)))
    quiet = runner.invoke(app, ["retrain", *common])
    assert quiet.exit_code == 0, quiet.output
    assert "every certified target holds: nothing to retrain" in quiet.output
    with FeedbackStore.from_settings(settings) as store:
        write_feedback(store, split_tables[0].subset(np.arange(30, 400)))
    flagged = runner.invoke(app, ["retrain", *common])
    assert flagged.exit_code == 0, flagged.output
    assert "VIOLATED" in flagged.output and "nothing to retrain" not in flagged.output
    summary = json.loads(flagged.stdout.strip().splitlines()[-1])
    assert summary["version"] == "2" and summary["promoted"] is False
