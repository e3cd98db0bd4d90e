"""MLflow tracking and Model Registry plumbing: log a router as a pyfunc, register, alias it.

MLflow 3: the tracking store is a database (``sqlite:///mlflow.db``, relative to the current
directory as MLflow reads it) or a tracking server (``http(s)://…``); artifacts go under the
experiment's artifact location (``./mlruns`` by default for a database store; a server's own
artifact store, ``mlflow-artifacts:/``, for a server); registry stages are deprecated, so
production is the alias ``@champion``.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from datetime import UTC, datetime
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities import Run
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.models.model import ModelInfo

from router.errors import ConfigurationError, RouterLoadError
from router.pyfunc import ARTIFACT_KEY, model_code_path, router_signature
from router.registry import ModelRef, alias_version, open_router_folder, registry_client
from router.settings import RouterSettings

if TYPE_CHECKING:
    from router.model import CascadeModel

logger = logging.getLogger(__name__)

MODEL_NAME = "router"  # the logged model's name inside its run ("runs:/<id>/router")


def _has_scheme(location: str) -> bool:
    return "://" in location or location.startswith(("file:", "mlflow-artifacts:"))


def artifact_uri(location: str | Path) -> str:
    """An artifact location as a URI: local paths become absolute ``file://`` URIs."""
    text = str(location)
    if _has_scheme(text):
        return text  # s3://..., file:///..., mlflow-artifacts:/...
    return Path(text).expanduser().resolve().as_uri()


def is_tracking_server(tracking_uri: str) -> bool:
    """Whether ``tracking_uri`` names an MLflow tracking server (HTTP) rather than a database."""
    return tracking_uri.startswith(("http://", "https://"))


def experiment_artifact_location(settings: RouterSettings) -> str | None:
    """The artifact root a new experiment gets; None: the tracking server's own store.

    Against a tracking server, a local folder (the ``./mlruns`` default) would put every logged
    router on the disk of the process that trained it, where no replica on another host can
    read it: the server's artifact store (``mlflow-artifacts:/``, proxied by the server) is used
    instead.  A location with a scheme (``s3://…``, ``gs://…``) is always honoured.
    """
    location = str(settings.artifact_location)
    if is_tracking_server(settings.tracking_uri) and not _has_scheme(location):
        return None
    return artifact_uri(location)


def open_tracking(settings: RouterSettings | None = None) -> MlflowClient:
    """Point MLflow at ``settings.tracking_uri`` and make ``settings.experiment`` the active one.

    The experiment is created with :func:`experiment_artifact_location` as its artifact root:
    ``settings.artifact_location`` made absolute for a database store (``./mlruns``), the
    server's own artifact store for a tracking server.  An existing experiment keeps the
    artifact root it was created with.  Credentials for a server come from MLflow's own
    environment variables (``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD`` or
    ``MLFLOW_TRACKING_TOKEN``), never from the settings.
    """
    settings = settings or RouterSettings()
    # the fluent API (start_run, log_model) reads the global tracking URI; everything else
    # goes through the client made for this URI
    mlflow.set_tracking_uri(settings.tracking_uri)
    client = registry_client(settings.tracking_uri)
    location = experiment_artifact_location(settings)
    try:
        experiment = client.get_experiment_by_name(settings.experiment)
        if experiment is None:
            try:
                experiment_id = client.create_experiment(
                    settings.experiment, artifact_location=location
                )
            except MlflowException:
                # another process created it in between
                experiment = client.get_experiment_by_name(settings.experiment)
                if experiment is None:
                    raise
                experiment_id = experiment.experiment_id
        else:
            experiment_id = experiment.experiment_id
            if experiment.lifecycle_stage == "deleted":
                client.restore_experiment(experiment_id)
            kept = experiment.artifact_location
            if is_tracking_server(settings.tracking_uri) and kept.startswith("file:"):
                logger.warning(
                    "experiment %r stores artifacts at %s, on one machine's disk: replicas "
                    "elsewhere cannot load its routers; use a new experiment (CASCADE_EXPERIMENT)",
                    settings.experiment,
                    kept,
                )
            elif location is not None and kept.rstrip("/") != location.rstrip("/"):
                logger.info(
                    "experiment %r keeps its artifact location %s (settings: %s)",
                    settings.experiment,
                    experiment.artifact_location,
                    location,
                )
        mlflow.set_experiment(experiment_id=experiment_id)
    except MlflowException as exc:
        raise ConfigurationError(
            f"cannot open MLflow tracking at {settings.tracking_uri!r}: "
            f"{exc.message.splitlines()[0]} (use a database store, e.g. sqlite:///mlflow.db)"
        ) from exc
    return client


def default_pip_requirements() -> list[str]:
    """What the logged model needs: this package (installed, not shipped as code) and mlflow."""
    try:
        ours = f"cascade-router=={importlib_metadata.version('cascade-router')}"
    except importlib_metadata.PackageNotFoundError:  # pragma: no cover - always installed
        ours = "cascade-router"
    return [ours, f"mlflow=={mlflow.__version__}"]


def _run_id(run: Any) -> str | None:
    if run is None:
        return None
    if isinstance(run, str):
        return run
    info = getattr(run, "info", None)
    if info is not None:
        return str(info.run_id)
    raise ConfigurationError(f"run must be an MLflow run or a run id, got {type(run).__name__}")


def _router_metadata(model_dir: Path) -> dict[str, Any]:
    meta = json.loads((model_dir / "router.json").read_text())
    return {
        "tiers": list(meta.get("tiers", [])),
        "target": meta.get("params", {}).get("target"),
        "embedder": meta.get("embedder_name"),
        "format_version": meta.get("format_version"),
    }


def log_router(
    model_dir: str | Path,
    *,
    run: mlflow.ActiveRun | Run | str | None,
    input_example: pd.DataFrame | None,
    registered_model: str | None,
    pip_requirements: list[str] | None = None,
) -> ModelInfo:
    """Log the saved router in ``model_dir`` as the pyfunc model ``router`` of ``run``.

    With ``registered_model`` the model is also registered (a new version). ``input_example``
    (columns ``step``, ``input``, optional ``answer``) is stored with the model; MLflow checks
    it by loading the logged model and predicting once, which loads the embedder.

    Returns the :class:`~mlflow.models.model.ModelInfo`; ``registered_model_version`` holds the
    new version when registered.
    """
    folder = Path(model_dir)
    if not (folder / "router.json").exists():
        raise RouterLoadError(f"no saved router at {folder} (router.json missing)")
    with tempfile.TemporaryDirectory(prefix="cascade-router-log-") as staging:
        # MLflow stores a directory artifact under its own base name: stage the folder as
        # ``router`` so the logged model holds ``artifacts/router/router.json`` whatever
        # ``model_dir`` is called (Router.load looks there).
        staged = Path(staging) / ARTIFACT_KEY
        shutil.copytree(folder, staged)
        return _log(staged, run, input_example, registered_model, pip_requirements)


def _log(
    staged: Path,
    run: mlflow.ActiveRun | Run | str | None,
    input_example: pd.DataFrame | None,
    registered_model: str | None,
    pip_requirements: list[str] | None,
) -> ModelInfo:
    kwargs: dict[str, Any] = {
        "name": MODEL_NAME,
        # models from code: MLflow logs this file, not a pickled object
        "python_model": str(model_code_path()),
        "artifacts": {ARTIFACT_KEY: str(staged)},
        "signature": router_signature(),
        "input_example": input_example,
        "registered_model_name": registered_model,
        # explicit requirements: MLflow does not load the model in a subprocess to infer them
        "pip_requirements": pip_requirements or default_pip_requirements(),
        "metadata": {"cascade_router": _router_metadata(staged)},
    }
    run_id = _run_id(run)
    active = mlflow.active_run()
    if run_id is None or (active is not None and active.info.run_id == run_id):
        return mlflow.pyfunc.log_model(**kwargs)
    with mlflow.start_run(run_id=run_id, nested=active is not None):
        return mlflow.pyfunc.log_model(**kwargs)


def set_alias(name: str, alias: str, version: str | int, client: MlflowClient) -> None:
    """Point ``name@alias`` at ``version`` (moving the alias if another version held it)."""
    client.set_registered_model_alias(name, alias, str(version))


def current_version(name: str, alias: str, client: MlflowClient) -> str | None:
    """The version ``name@alias`` points at now, or None (no such alias or model)."""
    return alias_version(ModelRef(name, alias=alias), client)


def promote_first_version(
    name: str, version: str | int, *, client: MlflowClient, alias: str = "champion"
) -> bool:
    """Give ``alias`` to the model's first version if no version holds it; True when that is
    ``version``.

    A later training never replaces the champion by itself: moving it is a deliberate
    :func:`set_alias` (or the gate of ``cascade-router retrain``).  Race-free without a lock:
    two trainings that both find no champion both point it at the lowest registered version
    (which exists before either checks, since versions are numbered in registration order),
    so they agree on the result instead of the last writer winning.
    """
    if current_version(name, alias, client) is not None:
        return False
    versions = [int(v["version"]) for v in list_versions(name, client)]
    first = min(versions) if versions else int(version)
    set_alias(name, alias, first, client)
    current = current_version(name, alias, client)
    return current is not None and int(current) == int(version)


def promote_version(
    name: str,
    version: str | int,
    *,
    champion_alias: str = "champion",
    previous_alias: str = "previous",
    client: MlflowClient,
) -> tuple[str | None, str]:
    """Move ``@champion`` to ``version``; the old champion keeps ``@previous``.

    Returns ``(old champion or None, new champion)``.  ``@previous`` moves first, so a process
    killed in between leaves the champion where it was.

    Raises:
        ConfigurationError: no such version of the registered model.
    """
    try:
        client.get_model_version(name, str(version))
    except MlflowException as exc:
        raise ConfigurationError(
            f"model {name!r} has no version {version}: see `cascade-router versions`"
        ) from exc
    old = current_version(name, champion_alias, client)
    if old is not None and str(old) != str(version):
        set_alias(name, previous_alias, old, client)
    set_alias(name, champion_alias, version, client)
    return old, str(version)


def rollback(
    name: str,
    *,
    champion_alias: str = "champion",
    previous_alias: str = "previous",
    client: MlflowClient,
) -> tuple[str, str]:
    """Swap ``@champion`` and ``@previous``: the previous champion serves again.

    The demoted version keeps ``@previous``, so a second rollback undoes the first.
    Returns ``(demoted version, restored version)``.

    Raises:
        ConfigurationError: there is no ``@previous`` (or no ``@champion``) to roll back to.
    """
    previous = current_version(name, previous_alias, client)
    current = current_version(name, champion_alias, client)
    if previous is None or current is None:
        raise ConfigurationError(
            f"nothing to roll back to: model {name!r} has no @{previous_alias}"
            if previous is None
            else f"model {name!r} has no @{champion_alias}"
        )
    set_alias(name, champion_alias, previous, client)
    set_alias(name, previous_alias, current, client)
    return current, previous


def load_version(
    name: str, version: str | int, settings: RouterSettings, num_threads: int = 1
) -> CascadeModel:
    """The registered version ``version`` of ``name``, read into memory (its download is
    removed afterwards)."""
    from router.model import CascadeModel

    with open_router_folder(ModelRef(name, version=str(version)).uri, settings) as (folder, _):
        return CascadeModel.load(folder, num_threads=num_threads)


def list_versions(name: str, client: MlflowClient) -> list[dict[str, Any]]:
    """Every version of the registered model ``name``, oldest first; [] if it does not exist.

    Each item: ``version`` (int), ``aliases`` (list), ``run_id``, ``created`` (UTC ISO time),
    ``status``, ``source`` and ``description``.
    """
    try:
        registered = client.get_registered_model(name)
    except MlflowException:
        return []
    by_version: dict[str, list[str]] = {}
    for alias, version in (registered.aliases or {}).items():
        by_version.setdefault(str(version), []).append(alias)
    quoted = name.replace("'", "\\'")
    found: list[ModelVersion] = []
    page_token = None
    while True:
        page = client.search_model_versions(f"name = '{quoted}'", page_token=page_token)
        found.extend(page)
        page_token = page.token
        if not page_token:
            break
    rows = []
    for mv in sorted(found, key=lambda v: int(v.version)):
        created = (
            datetime.fromtimestamp(mv.creation_timestamp / 1000, tz=UTC).isoformat()
            if mv.creation_timestamp
            else None
        )
        rows.append(
            {
                "version": int(mv.version),
                "aliases": sorted(by_version.get(str(mv.version), [])),
                "run_id": mv.run_id,
                "created": created,
                "status": mv.status,
                "source": mv.source,
                "description": mv.description or "",
            }
        )
    return rows
