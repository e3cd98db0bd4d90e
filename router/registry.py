"""The MLflow Model Registry as the router sees it: model URIs, clients and loading a version.

One place owns how a registered router is named (``models:/NAME@ALIAS``, ``models:/NAME/3``),
how a registry client is made (always from an explicit tracking URI, never MLflow's global
one) and how a version becomes a local folder to load.  Training (logging, promotion) and the
sidecar (watching ``@champion``) go through it.  MLflow is imported on first use.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from router.errors import RouterLoadError
from router.settings import RouterSettings

if TYPE_CHECKING:
    from mlflow import MlflowClient

logger = logging.getLogger(__name__)

MODELS_SCHEME = "models:/"
BUNDLED_ROUTER_VERSION = "bundled"
"""The version name reported for the router that ships inside the package."""


@dataclass(frozen=True)
class ModelRef:
    """A registered router: by alias (``models:/NAME@ALIAS``) or by version (``models:/NAME/3``)."""

    name: str
    alias: str | None = None
    version: str | None = None

    def __post_init__(self) -> None:
        if not self.name or (self.alias is None) == (self.version is None):
            raise RouterLoadError(
                f"a registered router needs a name and one of an alias or a version: {self!r}"
            )

    @classmethod
    def parse(cls, uri: str) -> ModelRef:
        """``models:/NAME@ALIAS`` or ``models:/NAME/VERSION``."""
        if not uri.startswith(MODELS_SCHEME):
            raise RouterLoadError(f"{uri}: not a registry URI (models:/NAME@ALIAS)")
        rest = uri[len(MODELS_SCHEME) :]
        if "@" in rest:
            name, alias = rest.split("@", 1)
            return cls(name, alias=alias)
        name, _, version = rest.partition("/")
        if not version:
            raise RouterLoadError(f"{uri}: give a version or an alias (models:/NAME@champion)")
        return cls(name, version=version)

    @classmethod
    def champion(cls, settings: RouterSettings) -> ModelRef:
        """The production alias of the settings' registered model."""
        return cls(settings.registered_model, alias=settings.champion_alias)

    def at_version(self, version: str | int) -> ModelRef:
        """The same model, pinned to one version."""
        return ModelRef(self.name, version=str(version))

    @property
    def uri(self) -> str:
        if self.alias is not None:
            return f"{MODELS_SCHEME}{self.name}@{self.alias}"
        return f"{MODELS_SCHEME}{self.name}/{self.version}"

    def __str__(self) -> str:
        return self.uri


def is_registry_uri(uri: str | None) -> bool:
    """Whether ``uri`` names a registered model (rather than a folder or a run)."""
    return uri is not None and uri.startswith(MODELS_SCHEME)


def registry_client(tracking_uri: str) -> MlflowClient:
    """An MLflow client of the tracking store and registry at ``tracking_uri``.

    Raises:
        RouterLoadError: MLflow is not installed (the ``train`` or ``serve`` extra).
    """
    try:
        from mlflow import MlflowClient
    except ImportError as exc:
        raise RouterLoadError(
            "the MLflow registry needs mlflow: pip install 'cascade-router[serve]' (or [train])"
        ) from exc
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def alias_version(ref: ModelRef, client: MlflowClient) -> str | None:
    """The version an alias points at now, or None (no such alias or model)."""
    from mlflow.exceptions import MlflowException

    if ref.alias is None:
        return ref.version
    try:
        return str(client.get_model_version_by_alias(ref.name, ref.alias).version)
    except MlflowException:
        return None


def bundled_router_path() -> Path:
    """The folder of the router that ships with the package (MMLU-Pro, 8B → GPT-4o)."""
    return Path(__file__).parent / "resources" / "router"


@contextlib.contextmanager
def open_default_router(settings: RouterSettings) -> Iterator[tuple[Path, str | None]]:
    """The registry's champion if one is registered, else the bundled router."""
    with contextlib.ExitStack() as stack:
        try:
            found = stack.enter_context(
                open_router_folder(ModelRef.champion(settings).uri, settings)
            )
        except RouterLoadError as exc:
            logger.warning("using the bundled router: %s", exc)
            found = bundled_router_path(), BUNDLED_ROUTER_VERSION
        yield found


@contextlib.contextmanager
def open_router_folder(target: str, settings: RouterSettings) -> Iterator[tuple[Path, str | None]]:
    """A local folder holding ``router.json`` (and the registry version, if any) for a path or
    an MLflow model URI. A model downloaded from MLflow lives in a temporary folder that is
    removed on leaving the block: read what you need inside it."""
    path = Path(target)
    for candidate in (path, path / "artifacts" / "router"):
        if (candidate / "router.json").exists():
            yield candidate, None
            return
    if "://" in target or target.startswith((MODELS_SCHEME, "runs:/")):
        with tempfile.TemporaryDirectory(prefix="cascade-router-") as dst:
            yield _download_router(target, settings.tracking_uri, Path(dst))
            return
    raise RouterLoadError(
        f"no router at {target!r}: give a folder written by CascadeModel.save, an MLflow "
        "model folder, or a URI such as models:/cascade-router@champion"
    )


@contextlib.contextmanager
def open_model_folder(target: str, tracking_uri: str) -> Iterator[tuple[Path, str | None]]:
    """The MLflow model folder (``MLmodel`` at its root) and registry version of a ``models:/``
    or ``runs:/`` URI, downloaded from the registry at ``tracking_uri`` into a temporary folder
    removed on leaving the block; a local folder is given back as it is.

    Nothing here reads MLflow's process-wide tracking URI: the alias is resolved and the files
    are fetched through ``tracking_uri`` (over HTTP for a tracking server), so a process may
    talk to several registries, and ``mlflow.pyfunc.spark_udf`` can be handed a local folder.
    """
    if Path(target).is_dir():
        yield Path(target), None
        return
    with tempfile.TemporaryDirectory(prefix="cascade-router-") as dst:
        yield _download_model(target, tracking_uri, Path(dst))


def _download_model(uri: str, tracking_uri: str, dst: Path) -> tuple[Path, str | None]:
    client = registry_client(tracking_uri)
    import mlflow
    from mlflow.exceptions import MlflowException

    version = None
    try:
        source = uri
        if is_registry_uri(uri):
            ref = ModelRef.parse(uri)
            if ref.alias is not None:
                mv = client.get_model_version_by_alias(ref.name, ref.alias)
            else:
                mv = client.get_model_version(ref.name, str(ref.version))
            version = str(mv.version)
            source = client.get_model_version_download_uri(ref.name, mv.version)
        local = Path(
            mlflow.artifacts.download_artifacts(
                artifact_uri=source,
                dst_path=str(dst),
                tracking_uri=tracking_uri,
                registry_uri=tracking_uri,
            )
        )
    except MlflowException as exc:
        raise RouterLoadError(
            f"cannot load {uri} from {tracking_uri}: {exc.message.splitlines()[0]}. "
            "Train and register one with `cascade-router train`."
        ) from exc
    return local, version


def _download_router(uri: str, tracking_uri: str, dst: Path) -> tuple[Path, str | None]:
    local, version = _download_model(uri, tracking_uri, dst)
    # the logged model stores the folder as artifacts/router; other loggers keep its own name
    candidates = [local / "artifacts" / "router", local / "router", local]
    candidates += [p.parent for p in sorted(local.glob("artifacts/*/router.json"))]
    for candidate in candidates:
        if (candidate / "router.json").exists():
            return candidate, version
    raise RouterLoadError(f"{uri} holds no cascade router (router.json missing)")
