"""training.registry + router.pyfunc against a real MLflow sqlite store (no mocks).

One tiny real router is trained once per module (400 MMLU-Pro prompts, all-MiniLM-L6-v2,
200 boosting rounds) and logged twice to a store in a temporary folder.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException

from router.data import OutcomeTable, bundled_dataset, load_table
from router.embedders import (
    CachedEmbedder,
    Embedder,
    EmbeddingCache,
    SentenceTransformerEmbedder,
)
from router.errors import RouterLoadError
from router.model import CascadeModel
from router.pyfunc import DECISION_COLUMNS, CascadeRouterPyfunc, shared_embedder
from router.sdk import Decision, Router
from router.settings import RouterSettings
from training import registry

TIERS = ["llama-3.1-8b-instruct", "gpt-4o-2024-05-13"]
NAME = "test-cascade-router"
FLOATS = [c for c in DECISION_COLUMNS if c not in ("step", "tier", "action", "opinion_source")]


@dataclass
class Fitted:
    model: CascadeModel
    embedder: Embedder
    table: OutcomeTable
    folder: Path


@dataclass
class Store:
    settings: RouterSettings
    client: mlflow.MlflowClient
    promoted: tuple[bool, bool]
    versions: tuple[str, str]


@pytest.fixture(scope="module")
def fitted(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Fitted:
    table = load_table(bundled_dataset("mmlu_pro"), TIERS).sample(400, seed=0)
    # the process-wide embedder the pyfunc model uses too: all-MiniLM is loaded once here
    embedder = shared_embedder(SentenceTransformerEmbedder().reference())
    # training vectors persist between test sessions in pytest's cache folder; the decisions
    # compared below are computed uncached (a vector depends slightly on its batch)
    cache = getattr(request.config, "cache", None)  # None under -p no:cacheprovider
    cache_dir = (
        cache.mkdir("cascade-router-embeddings") if cache else tmp_path_factory.mktemp("emb")
    )
    cached = CachedEmbedder(embedder, EmbeddingCache(cache_dir))
    # one LightGBM thread: OpenMP threads crawl on a busy machine
    model = CascadeModel(
        TIERS, acceptance_params={"n_estimators": 200, "num_threads": 1}, capacity_cv_below=0
    ).fit(table, cached)
    # not called "router": the logged artifact must still be artifacts/router
    folder = model.save(tmp_path_factory.mktemp("fitted") / "saved-model")
    return Fitted(model, embedder, table, folder)


class _BatchMemo:
    """Embeds each distinct batch once; the same batch gives the same vectors."""

    def __init__(self, inner: Embedder) -> None:
        self.inner = inner
        self.memo: dict[tuple[str, ...], np.ndarray] = {}

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def dim(self) -> int:
        return self.inner.dim

    def reference(self) -> dict[str, Any]:
        return self.inner.reference()

    def encode(self, texts: Sequence[str], *, progress: bool = False) -> np.ndarray:
        key = tuple(texts)
        if key not in self.memo:
            self.memo[key] = self.inner.encode(texts, progress=progress)
        return self.memo[key]


@pytest.fixture(scope="module")
def reference(fitted: Fitted) -> Router:
    """The fitted model in process: what every loaded copy must decide."""
    return Router(fitted.model, _BatchMemo(fitted.embedder))


def _rows(table: OutcomeTable) -> pd.DataFrame:
    """Six step inputs; rows 1, 3 and 4 carry the first tier's recorded answer."""
    idx = list(range(len(table) - 6, len(table)))
    with_answer = {1, 3, 4}
    return pd.DataFrame(
        {
            "step": [str(table.steps[i]) for i in idx],
            "input": [table.prompts[i] for i in idx],
            "answer": [
                table.responses[0][i] if k in with_answer else None for k, i in enumerate(idx)
            ],
        }
    )


def _reference(router: Router, frame: pd.DataFrame, target: str | None = None) -> list[Decision]:
    """In-process decisions, batched as the pyfunc model batches them (pre rows, then post)."""
    has = frame["answer"].notna().to_numpy()
    pre = router.decide_batch(
        frame["step"][~has].tolist(), frame["input"][~has].tolist(), target=target
    )
    post = router.decide_batch(
        frame["step"][has].tolist(),
        frame["input"][has].tolist(),
        answers=frame["answer"][has].tolist(),
        target=target,
    )
    it_pre, it_post = iter(pre), iter(post)
    return [next(it_post) if h else next(it_pre) for h in has]


def _assert_same(frame: pd.DataFrame, decisions: list[Decision]) -> None:
    assert list(frame.columns) == list(DECISION_COLUMNS)
    assert len(frame) == len(decisions)
    expected = pd.DataFrame([d.to_dict() for d in decisions])
    for column in ("step", "tier", "action"):
        assert frame[column].tolist() == expected[column].tolist(), column
    for column in FLOATS:
        # the pyfunc writes non-finite numbers as None (JSON null): compare them as NaN
        want = expected[column].to_numpy(np.float64).copy()
        want[~np.isfinite(want)] = np.nan
        np.testing.assert_allclose(
            pd.to_numeric(frame[column]).to_numpy(np.float64),
            want,
            rtol=0,
            atol=1e-9,
            err_msg=column,
        )


@pytest.fixture(scope="module")
def store(fitted: Fitted, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    previous = mlflow.get_tracking_uri()
    root = tmp_path_factory.mktemp("mlflow")
    settings = RouterSettings(
        tracking_uri=f"sqlite:///{root}/mlflow.db",
        artifact_location=str(root / "mlruns"),
        experiment="test-registry",
        registered_model=NAME,
    )
    client = registry.open_tracking(settings)
    example = _rows(fitted.table).head(1)  # MLflow predicts on it once per log
    versions, promoted = [], []
    for _ in range(2):
        with mlflow.start_run() as run:
            info = registry.log_router(
                fitted.folder, run=run, input_example=example, registered_model=NAME
            )
        assert info.registered_model_version is not None
        versions.append(str(info.registered_model_version))
        promoted.append(
            registry.promote_first_version(NAME, info.registered_model_version, client=client)
        )
    yield Store(settings, client, (promoted[0], promoted[1]), (versions[0], versions[1]))
    mlflow.set_tracking_uri(previous)


def test_first_version_becomes_champion_and_stays(store: Store) -> None:
    assert store.versions == ("1", "2")
    assert store.promoted == (True, False)
    assert registry.current_version(NAME, "champion", store.client) == "1"
    rows = registry.list_versions(NAME, store.client)
    assert [(r["version"], r["aliases"]) for r in rows] == [(1, ["champion"]), (2, [])]
    assert all(r["run_id"] and r["created"] and r["status"] == "READY" for r in rows)
    assert rows[0]["run_id"] != rows[1]["run_id"]
    assert registry.list_versions("no-such-model", store.client) == []
    # artifacts land under the configured artifact location, not ./mlruns of the cwd
    experiment = mlflow.get_experiment_by_name("test-registry")
    assert experiment is not None
    assert experiment.artifact_location == Path(store.settings.artifact_location).as_uri()
    assert list(Path(store.settings.artifact_location).rglob("artifacts/router/router.json"))


def test_set_alias_moves_an_alias(store: Store) -> None:
    client = store.client
    registry.set_alias(NAME, "challenger", 2, client)
    assert registry.current_version(NAME, "challenger", client) == "2"
    registry.set_alias(NAME, "challenger", "1", client)
    assert registry.current_version(NAME, "challenger", client) == "1"
    assert registry.current_version(NAME, "nobody", client) is None
    assert not registry.promote_first_version(NAME, 2, client=client, alias="challenger")


_FRESH_SCRIPT = textwrap.dedent(
    """
    import sys
    import mlflow
    import pandas as pd

    uri, frame_path, out_dir = sys.argv[1:]
    model = mlflow.pyfunc.load_model(uri)
    frame = pd.read_parquet(frame_path)
    model.predict(frame).to_parquet(f"{out_dir}/default.parquet")
    model.predict(frame, params={"target": "quality=0.8"}).to_parquet(f"{out_dir}/q80.parquet")
    """
)


def test_fresh_process_load_model_matches_in_process(
    store: Store, fitted: Fitted, reference: Router, tmp_path: Path
) -> None:
    frame = _rows(fitted.table)
    frame.to_parquet(tmp_path / "frame.parquet")
    env = {**os.environ, "MLFLOW_TRACKING_URI": store.settings.tracking_uri}
    env.pop("MLFLOW_REGISTRY_URI", None)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            _FRESH_SCRIPT,
            f"models:/{NAME}@champion",
            str(tmp_path / "frame.parquet"),
            str(tmp_path),
        ],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:  # the in-process decisions while the other process starts up
        expected = _reference(reference, frame)
        expected_q80 = _reference(reference, frame, target="quality=0.8")
    finally:
        _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr[-3000:]
    default = pd.read_parquet(tmp_path / "default.parquet")
    _assert_same(default, expected)
    q80 = pd.read_parquet(tmp_path / "q80.parquet")
    _assert_same(q80, expected_q80)
    # rows with an answer get the post-answer decision, the others the pre-answer one
    has = frame["answer"].notna().to_numpy()
    for out in (default, q80):
        assert set(out["action"][has]) <= {"accept", "escalate"}
        assert set(out["action"][~has]) <= {"call", "skip"}
        assert out["p_accept_answer"][has].notna().all()
        assert out["p_accept_answer"][~has].isna().all()
        assert (out["tier"][has] == TIERS[0]).all()


def test_router_load_from_registry(
    store: Store, fitted: Fitted, reference: Router, tmp_path: Path, monkeypatch
) -> None:
    import tempfile

    frame = _rows(fitted.table)
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(downloads))
    loaded = Router.load(
        f"models:/{NAME}@champion", settings=store.settings, embedder=fitted.embedder
    )
    assert list(downloads.iterdir()) == []  # the download is read and removed
    assert loaded.version == "1"
    assert loaded.tiers == tuple(TIERS)
    steps, inputs = frame["step"].tolist(), frame["input"].tolist()
    assert loaded.decide_batch(steps, inputs) == reference.decide_batch(steps, inputs)
    has = frame["answer"].notna().to_numpy()
    post = loaded.decide_batch(
        frame["step"][has].tolist(),
        frame["input"][has].tolist(),
        answers=frame["answer"][has].tolist(),
    )
    assert post == [d for d, h in zip(_reference(reference, frame), has, strict=True) if h]
    assert {d.action for d in post} <= {"accept", "escalate"}


def test_in_process_pyfunc_and_errors(store: Store, fitted: Fitted, reference: Router) -> None:
    frame = _rows(fitted.table)
    model = mlflow.pyfunc.load_model(f"models:/{NAME}/2")
    # no answer column at all: every row gets the pre-answer decision
    pre = model.predict(frame[["step", "input"]])
    _assert_same(pre, reference.decide_batch(frame["step"].tolist(), frame["input"].tolist()))
    # MLflow's schema check names the missing column ...
    with pytest.raises(MlflowException, match=r"missing inputs.*'input'"):
        model.predict(frame[["step"]])
    # ... and so does the python model itself when called directly
    direct = CascadeRouterPyfunc()
    direct.router = reference
    with pytest.raises(MlflowException, match="missing column\\(s\\) 'step'"):
        direct.predict(None, frame[["input"]])
    with pytest.raises(MlflowException, match="column 'step' is null at row 0"):
        direct.predict(None, frame.assign(step=pd.Series([None] * len(frame), dtype=object)))
    with pytest.raises(MlflowException, match="cannot read target"):
        model.predict(frame, params={"target": "fast please"})
    empty = direct.predict(None, frame.head(0))
    assert list(empty.columns) == list(DECISION_COLUMNS) and empty.empty
    # what MLflow's scoring server writes is strict JSON (no NaN / Infinity)
    mixed = model.predict(frame)
    text = json.dumps(mixed.to_dict(orient="records"), allow_nan=False)
    assert "null" in text  # rows without an answer have no answer-aware probability


def test_json_safe_replaces_non_finite_numbers() -> None:
    from router.pyfunc import json_safe

    frame = pd.DataFrame(
        [
            {
                "step": "a",
                "tier": "s",
                "action": "call",
                "p_accept": 0.5,
                "p_next": 0.6,
                "gain": 0.1,
                "p_accept_answer": float("nan"),
                "lam": float("inf"),
                "skip_threshold": -float("inf"),
                "opinion_source": "",
            },
        ],
        columns=list(DECISION_COLUMNS),
    )
    safe = json_safe(frame)
    row = safe.to_dict(orient="records")[0]
    assert row["p_accept_answer"] is None and row["lam"] is None and row["skip_threshold"] is None
    assert row["p_accept"] == 0.5
    json.dumps(row, allow_nan=False)


def test_first_version_race_agrees_on_the_lowest(store: Store, tmp_path: Path) -> None:
    """Two trainings that both find no champion point it at the same (first) version."""
    client = store.client
    name = "race-model"
    client.create_registered_model(name)
    run = client.create_run(mlflow.get_experiment_by_name("test-registry").experiment_id)
    for _ in range(2):
        client.create_model_version(name, f"runs:/{run.info.run_id}/router", run.info.run_id)
    # the second training checks first: it gives the alias to version 1, not to itself
    assert registry.promote_first_version(name, "2", client=client) is False
    assert registry.current_version(name, "champion", client) == "1"
    assert registry.promote_first_version(name, "1", client=client) is False  # already set
    assert registry.current_version(name, "champion", client) == "1"


def test_unknown_models_raise_router_load_error(store: Store, tmp_path: Path, monkeypatch) -> None:
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    for uri in (f"models:/{NAME}@nobody", "models:/no-such-model@champion", f"models:/{NAME}/9"):
        with pytest.raises(RouterLoadError):
            Router.load(uri, settings=store.settings)
    assert list(tmp_path.iterdir()) == []  # no empty download folder left behind


def test_log_router_refuses_a_folder_without_a_router(store: Store, tmp_path: Path) -> None:
    with pytest.raises(RouterLoadError, match=r"router\.json missing"):
        registry.log_router(tmp_path, run=None, input_example=None, registered_model=None)


def test_tracking_uri_is_kept_and_artifact_root_made_absolute(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a relative sqlite:///mlflow.db is left for MLflow to read against the cwd
    assert mlflow.get_tracking_uri() == store.settings.tracking_uri
    monkeypatch.chdir(tmp_path)
    assert registry.artifact_uri("./mlruns") == (tmp_path / "mlruns").as_uri()
    assert registry.artifact_uri("s3://bucket/x") == "s3://bucket/x"
