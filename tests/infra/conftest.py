"""One real server of each kind for the whole session (each starts in seconds, not per test)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.services import LocalSpark, MlflowServer, PostgresServer

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A throw-away PostgreSQL cluster; give each test its own database (``create_database``)."""
    with PostgresServer() as server:
        yield server


@pytest.fixture(scope="session")
def mlflow_server() -> Iterator[MlflowServer]:
    """``mlflow server`` on a SQLite backend, serving its own artifacts."""
    with MlflowServer() as server:
        yield server


@pytest.fixture(scope="session")
def spark() -> Iterator[LocalSpark]:
    """A local[2] SparkSession (Java 17+)."""
    with LocalSpark(cores=2, pythonpath=[ROOT]) as local:
        yield local
