"""`cascade-router` end to end: real data, real embedder, real MLflow store, real exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from router.settings import RouterSettings
from tests.conftest import SAMPLE
from training.cli.app import app

runner = CliRunner()


@pytest.fixture(scope="module")
def env(tmp_path_factory, cache_dir: Path) -> dict[str, str]:
    root = tmp_path_factory.mktemp("cli")
    return {
        "CASCADE_TRACKING_URI": f"sqlite:///{root}/mlflow.db",
        "CASCADE_ARTIFACT_LOCATION": str(root / "mlruns"),
        "CASCADE_CACHE_DIR": str(cache_dir),
        "CASCADE_PROGRESS": "false",
        "OUT": str(root / "outputs"),
    }


def invoke(args: list[str], env: dict[str, str]):
    return runner.invoke(app, args, env=env, catch_exceptions=False)


@pytest.fixture(scope="module")
def trained(env):
    result = invoke(
        [
            "train",
            "--sample",
            str(SAMPLE),
            "--bootstrap",
            "50",
            "--output-dir",
            env["OUT"],
            "--json",
        ],
        env,
    )
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout[result.stdout.index("{") :])


def test_train_logs_registers_and_aliases(trained, env) -> None:
    assert trained["version"] == "1" and trained["run_id"]
    for key in ("apgr", "cpt50", "cpt80", "cpt95", "roc_auc", "ece", "cost_saved"):
        assert key in trained
    assert {"random", "knn", "logreg", "oracle"} <= set(trained["baselines"])
    assert trained["baselines"]["oracle"]["apgr"] > trained["baselines"]["random"]["apgr"]
    assert Path(env["OUT"], "deferral_curves.png").stat().st_size > 10_000
    # the trained router is kept next to its report, loadable as it is
    from router.model import CascadeModel

    assert CascadeModel.load(Path(env["OUT"], "router")).tiers == tuple(trained["tiers"])

    import mlflow

    client = mlflow.MlflowClient(tracking_uri=env["CASCADE_TRACKING_URI"])
    mv = client.get_model_version_by_alias("cascade-router", "champion")
    assert str(mv.version) == "1"
    run = client.get_run(trained["run_id"])
    assert run.data.params["dataset_digest"] == trained["dataset_digest"]
    assert "apgr" in run.data.metrics and "baselines.knn.apgr" in run.data.metrics
    # the certificate: in the report, the run's parameters and its metrics
    cert = trained["certification"]
    assert cert["bound"] == {"quality_ratio": 0.95} and cert["delta"] == 0.1
    assert run.data.params["certification"] == "wsr" and run.data.params["delta"] == "0.1"
    assert run.data.params["certified_bound"] == "quality_ratio=0.95"
    assert run.data.metrics["certification.bound.quality_ratio"] == 0.95
    assert "certification.realised.quality_ratio" in run.data.metrics
    assert "certification.price_of_guarantee" in run.data.metrics
    artifacts = {a.path for a in client.list_artifacts(trained["run_id"], "plots")}
    assert "plots/deferral_curves.png" in artifacts


def test_route_from_registry(trained, env) -> None:
    result = invoke(
        [
            "route",
            "--step",
            "math",
            "--input",
            "Question: What is 12 * 12?\nOptions:\nA. 144\nB. 124",
            "--decide-only",
            "--json",
        ],
        env,
    )
    assert result.exit_code == 0, result.output
    decision = json.loads(result.stdout)
    assert decision["action"] in {"call", "skip"} and 0 < decision["p_accept"] < 1


def test_route_replays_a_known_prompt(trained, env, small_table) -> None:
    prompt = small_table.prompts[3]
    result = invoke(
        ["route", "--step", str(small_table.steps[3]), "--input", prompt, "--json"], env
    )
    assert result.exit_code == 0, result.output
    routed = json.loads(result.stdout)
    assert routed["path"] in {"small→verified", "small→escalated→frontier", "skipped→frontier"}
    assert routed["answer"]


def test_evaluate_json_on_another_dataset(env) -> None:
    result = invoke(
        [
            "evaluate",
            "--data",
            "gsm8k",
            "--tiers",
            "mixtral-8x7b-instruct-v0.1,gpt-4-1106-preview",
            "--sample",
            "600",
            "--bootstrap",
            "20",
            "--output-dir",
            env["OUT"],
            "--json",
        ],
        env,
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["tiers"] == ["mixtral-8x7b-instruct-v0.1", "gpt-4-1106-preview"]
    assert report["n_test"] == 120
    for name in ("random", "knn", "logreg", "oracle"):
        assert "apgr" in report["baselines"][name]


def cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The installed entry point in a real subprocess: real exit codes, real stderr."""
    return subprocess.run(
        [sys.executable, "-m", "training.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=300,
    )


def test_bad_data_exits_2_with_file_row_column(tmp_path, env) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text(
        "prompt_id,prompt,model,score\n"
        "p1,hello,small,1\np1,hello,big,1\np2,world,small,1.5\np2,world,big,0\n"
    )
    done = cli(["evaluate", "--data", str(bad), "--tiers", "small,big"], env)
    assert done.returncode == 2
    assert "bad.csv" in done.stderr and "row 3" in done.stderr and "'score'" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout


def test_unknown_model_exits_2(env) -> None:
    done = cli(["evaluate", "--tiers", "llama-3.1-8b-instruct,gpt-5", "--sample", "200"], env)
    assert done.returncode == 2
    assert "gpt-5" in done.stderr and "Traceback" not in done.stderr


def test_an_uncertifiable_target_exits_2_naming_the_alternative(env) -> None:
    done = cli(
        [
            "evaluate",
            "--data",
            "gsm8k",
            "--tiers",
            "mixtral-8x7b-instruct-v0.1,gpt-4-1106-preview",
            "--sample",
            "600",
            "--target",
            "quality=0.99",
            "--delta",
            "0.01",
            "--output-dir",
            env["OUT"],
        ],
        env,
    )
    assert done.returncode == 2, done.stderr
    assert "quality ratio ≥ 0.99 cannot be certified with 360 outcomes at delta 0.01" in (
        " ".join(done.stderr.split())
    )
    assert "Traceback" not in done.stderr


def test_drift_flags_a_certified_target_that_no_longer_holds(trained, env, tmp_path) -> None:
    from router.feedback import FeedbackStore, RequestRecord

    url = f"sqlite:///{tmp_path / 'feedback.db'}"
    with FeedbackStore(url) as store:
        for i in range(120):  # every answer of the served version refused
            store.record_request(
                RequestRecord(
                    request_id=f"r{i}",
                    step="math",
                    input_text=f"question {i}",
                    messages=[{"role": "user", "content": f"question {i}"}],
                    target=trained["certification"]["target"],
                    router_version=trained["version"],
                    tier="llama-3.1-8b-instruct",
                    path="small→verified",
                    p_accept=0.5,
                    probabilities={},
                    answers={},
                    answer="A",
                    cost_usd=0.0001,
                    latency_s=0.1,
                )
            )
            store.add_feedback(f"r{i}", accepted=False)
    done = cli(["drift"], {**env, "CASCADE_FEEDBACK_URL": url, "COLUMNS": "200"})
    assert done.returncode == 5, done.stderr
    assert "certified targets on the labelled traffic" in done.stdout
    assert "VIOLATED" in done.stdout and "quality_ratio" in done.stdout


def test_bad_target_and_missing_router(env, tmp_path) -> None:
    assert cli(["evaluate", "--target", "speed=2"], env).returncode == 2
    done = cli(["route", "--input", "hi", "--router", str(tmp_path / "none")], env)
    assert done.returncode == 4 and "no router" in done.stderr


def test_unreachable_backend_exits_3(trained, env) -> None:
    done = cli(
        [
            "route",
            "--input",
            "What is 2+2?",
            "--step",
            "math",
            "--target",
            "share=0",
            "--backend",
            "llama-3.1-8b-instruct=http://127.0.0.1:9/v1",
            "--backend",
            "gpt-4o-2024-05-13=http://127.0.0.1:9/v1",
        ],
        env,
    )
    # the dead small tier escalates; the dead frontier is the error
    assert done.returncode == 3, done.stderr
    assert "unreachable" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize("command", ["train", "evaluate", "route", "demo"])
def test_help(command: str) -> None:
    result = runner.invoke(app, [command, "--help"])
    assert result.exit_code == 0 and "Usage" in result.output


def test_demo_main_job(tmp_path, cache_dir: Path) -> None:
    """The README's main job end to end (on the shared sample, so embeddings are cached)."""
    env = {
        "CASCADE_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db",
        "CASCADE_ARTIFACT_LOCATION": str(tmp_path / "mlruns"),
        "CASCADE_CACHE_DIR": str(cache_dir),
        "CASCADE_PROGRESS": "false",
        "CASCADE_CAPACITY_CV_BELOW": str(RouterSettings.model_fields["capacity_cv_below"].default),
    }
    result = runner.invoke(
        app, ["demo", "--sample", str(SAMPLE), "--output-dir", str(tmp_path / "out")], env=env
    )
    assert result.exit_code == 0, result.output
    out = result.output
    assert "APGR" in out and "knn" in out and "oracle" in out
    assert "→ @champion" in out
    assert (tmp_path / "out" / "deferral_curves.png").exists()
    # sample step inputs were routed through the registered champion, each decision shown
    routed = [line for line in out.splitlines() if " via " in line]
    assert len(routed) >= 2
    paths = {"small→verified", "small→escalated→frontier", "skipped→frontier"}
    assert all(any(p in line for p in paths) for line in routed)
    assert "done in" in out
