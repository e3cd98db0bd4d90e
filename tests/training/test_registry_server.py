"""The registry as a shared service: a real ``mlflow server`` over HTTP with basic authentication,
its own artifact store, and clients that know nothing but its URL and their credentials."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest

from router.errors import ConfigurationError, RouterLoadError
from router.registry import open_router_folder, registry_client
from router.settings import RouterSettings
from tests.support.services import MlflowServer
from training.registry import (
    current_version,
    list_versions,
    log_router,
    open_tracking,
    promote_version,
    rollback,
)

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def _settings(server: MlflowServer, name: str) -> RouterSettings:
    # artifact_location keeps its local default: against a server it must be ignored
    return RouterSettings(tracking_uri=server.url, experiment=name, registered_model=name)


def _register(folder: Path, settings: RouterSettings) -> str:
    open_tracking(settings)
    with mlflow.start_run() as run:
        info = log_router(
            folder, run=run, input_example=None, registered_model=settings.registered_model
        )
    return str(info.registered_model_version)


def _load_in_fresh_process(env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """``Router.load()`` of the default champion in a process that knows only ``env``."""
    script = (
        "import json\n"
        "from router.sdk import Router\n"
        "router = Router.load()\n"
        "print(json.dumps({'version': router.version, 'tiers': list(router.tiers)}))\n"
    )
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "CASCADE_"))}
    return subprocess.run(
        [sys.executable, "-c", script],
        env={**clean, "PYTHONPATH": str(ROOT), **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_register_promote_rollback_and_load_through_the_server(
    tracking_server: MlflowServer, saved_model_dir: Path, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)  # where a client-side ./mlruns or mlflow.db would appear
    settings = _settings(tracking_server, "shared-registry")
    client = open_tracking(settings)
    experiment = client.get_experiment_by_name(settings.experiment)
    assert experiment is not None
    assert experiment.artifact_location.startswith("mlflow-artifacts:")
    v1 = _register(saved_model_dir, settings)
    v2 = _register(saved_model_dir, settings)
    # the routers went to the server's artifact store, nothing to the client's disk
    assert not (tmp_path / "mlruns").exists() and not (tmp_path / "mlflow.db").exists()
    stored = list(tracking_server.artifacts.rglob("router.json"))
    assert len([p for p in stored if "artifacts/router" in str(p)]) >= 2

    client = registry_client(settings.tracking_uri)
    name = settings.registered_model
    assert promote_version(name, v1, client=client) == (None, v1)
    assert promote_version(name, v2, client=client) == (v1, v2)
    assert [v["aliases"] for v in list_versions(name, client)] == [["previous"], ["champion"]]
    assert rollback(name, client=client) == (v2, v1)
    assert current_version(name, "champion", client) == v1
    assert current_version(name, "previous", client) == v2

    # a process with the server's URL and credentials in its environment, and no MLflow
    # configuration at all, resolves @champion and downloads the router over HTTP
    env = {
        "CASCADE_TRACKING_URI": tracking_server.url,
        "CASCADE_REGISTERED_MODEL": name,
        **tracking_server.client_env,
    }
    done = _load_in_fresh_process(env, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert loaded["version"] == v1
    assert not (tmp_path / "mlflow.db").exists()

    # wrong credentials: refused by the server, said plainly (the SDK then serves the bundled
    # router, so the check is on the registry call itself)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "not-the-password")
    with (
        pytest.raises(RouterLoadError, match="401"),
        open_router_folder(f"models:/{name}@champion", settings),
    ):
        pass


def test_credentials_never_go_in_the_tracking_uri(tracking_server: MlflowServer) -> None:
    url = tracking_server.url.replace("http://", "http://admin:secret@")
    with pytest.raises(ValueError, match="MLFLOW_TRACKING_USERNAME"):
        RouterSettings(tracking_uri=url)
    from serving.settings import ServiceSettings

    with pytest.raises(ConfigurationError, match="MLFLOW_TRACKING_PASSWORD"):
        ServiceSettings.load(tracking_uri=url)
    assert RouterSettings(tracking_uri=tracking_server.url).tracking_uri == tracking_server.url


def test_an_experiment_with_a_local_artifact_root_is_flagged(
    tracking_server: MlflowServer, tmp_path: Path, caplog
) -> None:
    """An experiment created by an old client with a file:// root keeps it (MLflow cannot move
    it), and open_tracking says that replicas elsewhere cannot read its routers."""
    name = f"local-root-{time.time_ns()}"
    client = registry_client(tracking_server.url)
    client.create_experiment(name, artifact_location=(tmp_path / "mlruns").as_uri())
    with caplog.at_level("WARNING", logger="training.registry"):
        open_tracking(_settings(tracking_server, name))
    assert "cannot load its routers" in caplog.text
