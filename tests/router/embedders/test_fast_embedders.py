"""The static and ONNX embedders (real artefacts built from the packaged MiniLM), the
refusal of a router to run with another embedder or artefact, the in-memory LRU and the batch
decision call."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from router.embedders import (
    ARTEFACT_META,
    ONNX_INT8_ARTEFACT,
    STATIC_ARTEFACT,
    CachedEmbedder,
    EmbeddingCache,
    LRUEmbedder,
    OnnxEmbedder,
    StaticEmbedder,
    artefact_root,
    artefact_sha256,
    build_embedder,
)
from router.embedders.build import _build_lock, build_onnx, ensure_static
from router.errors import ConfigurationError
from router.model import CascadeModel
from router.sdk import Router
from router.settings import RouterSettings
from tests.conftest import TIERS

TEXTS = [
    "What is the capital of France?",
    "Which city is France's capital?",
    "Integrate x squared from 0 to 1.",
]
MIXED = [
    "hi",
    "Book me a table for two at 7pm tomorrow, somewhere quiet near the river if possible.",
    "Question: " + "Which of these statements about thermodynamics holds? " * 40,  # > 128 tokens
    "",
]


def _built(cache_dir: Path, kind: str) -> Path:
    """The artefact of ``kind`` in the session's cache folder, built once if missing."""
    folder = (
        artefact_root(cache_dir)
        / {
            "static": STATIC_ARTEFACT,
            "onnx": "onnx-minilm",
            "onnx-int8": ONNX_INT8_ARTEFACT,
        }[kind]
    )
    if not (folder / ARTEFACT_META).exists():
        if kind == "static":
            ensure_static(cache_dir)  # the first-use path: what loading the bundled router does
        else:
            build_onnx(cache_dir, int8=kind == "onnx-int8")
    return folder


@pytest.fixture(scope="module")
def static(cache_dir: Path) -> StaticEmbedder:
    _built(cache_dir, "static")
    embedder = build_embedder("static", cache_dir=cache_dir)
    assert isinstance(embedder, StaticEmbedder)
    return embedder


@pytest.fixture(scope="module")
def onnx(cache_dir: Path) -> OnnxEmbedder:
    _built(cache_dir, "onnx")
    embedder = build_embedder("onnx", cache_dir=cache_dir)
    assert isinstance(embedder, OnnxEmbedder)
    return embedder


@pytest.fixture(scope="module")
def onnx_int8(cache_dir: Path) -> OnnxEmbedder:
    _built(cache_dir, "onnx-int8")
    embedder = build_embedder("onnx-int8", cache_dir=cache_dir)
    assert isinstance(embedder, OnnxEmbedder)
    return embedder


# ---------------------------------------------------------------------- embedders
def test_static_embeddings_are_normalised_and_semantic(static: StaticEmbedder) -> None:
    vecs = static.encode(TEXTS)
    assert vecs.shape == (3, static.dim) and static.dim == 384 and vecs.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    assert vecs[0] @ vecs[1] > vecs[0] @ vecs[2] + 0.3
    # batch and one-at-a-time give the same vectors; an empty text is the zero vector
    one_by_one = np.vstack([static.encode([t]) for t in MIXED])
    np.testing.assert_allclose(static.encode(MIXED), one_by_one, atol=1e-6)
    assert not one_by_one[3].any()
    assert static.encode([]).shape == (0, 384)


def test_onnx_matches_minilm_torch(onnx: OnnxEmbedder, embedder: CachedEmbedder) -> None:
    """Same model, same pooling: padded batches and truncated long inputs agree with torch."""
    reference = embedder.embedder.encode(MIXED[:3] + TEXTS)
    vecs = onnx.encode(MIXED[:3] + TEXTS)
    assert vecs.shape == reference.shape == (6, 384)
    assert np.min(np.sum(vecs * reference, axis=1)) > 0.9999


def test_onnx_int8_is_close_to_minilm(onnx_int8: OnnxEmbedder, embedder: CachedEmbedder) -> None:
    reference = embedder.embedder.encode(TEXTS)
    vecs = onnx_int8.encode(TEXTS)
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    assert np.min(np.sum(vecs * reference, axis=1)) > 0.9
    assert vecs[0] @ vecs[1] > vecs[0] @ vecs[2] + 0.3


def test_names_record_artefact_and_hash(static, onnx, onnx_int8) -> None:
    for e in (static, onnx, onnx_int8):
        ref = e.reference()
        assert ref["sha256"] == artefact_sha256(e.folder) and ref["sha256"][:12] in e.name
        assert ref["artefact"] in e.name
        assert build_embedder(ref, cache_dir=e.folder.parent.parent).name == e.name
    assert len({static.name, onnx.name, onnx_int8.name}) == 3


def test_onnx_export_is_reproducible(onnx_int8: OnnxEmbedder, tmp_path: Path) -> None:
    """A rebuild from the packaged model gives the same bytes, hence the same recorded hash."""
    again = build_onnx(tmp_path, int8=True)
    assert json.loads((again / ARTEFACT_META).read_text())["sha256"] == onnx_int8.sha256


def test_missing_artefact_names_the_build_command(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="cascade-router embedders build static"):
        build_embedder("static", cache_dir=tmp_path)
    with pytest.raises(ConfigurationError, match="embedders build onnx --int8"):
        build_embedder("onnx-int8", cache_dir=tmp_path)


def test_modified_artefact_is_refused(static: StaticEmbedder, tmp_path: Path) -> None:
    copy = artefact_root(tmp_path) / STATIC_ARTEFACT
    shutil.copytree(static.folder, copy)
    table = np.load(copy / "embeddings.npy")
    table[1000] += 0.5
    np.save(copy / "embeddings.npy", table)
    with pytest.raises(ConfigurationError, match="modified after it was built"):
        build_embedder("static", cache_dir=tmp_path)


# ---------------------------------------------------------------------- LRU
class CountingEmbedder:
    """A real embedder that counts the texts it was asked to embed (no mock: it delegates)."""

    def __init__(self, inner: StaticEmbedder) -> None:
        self.inner, self.calls, self.texts = inner, 0, 0
        self.name, self.dim = inner.name, inner.dim

    def reference(self) -> dict:
        return self.inner.reference()

    def encode(self, texts, *, progress: bool = False) -> np.ndarray:
        self.calls += 1
        self.texts += len(texts)
        return self.inner.encode(texts)


def test_lru_serves_repeats_from_memory_and_stays_bounded(static: StaticEmbedder) -> None:
    counting = CountingEmbedder(static)
    lru = LRUEmbedder(counting, maxsize=3)
    first = lru.encode(["a b", "c d", "a b"])  # a duplicate inside one call is embedded once
    assert counting.texts == 2 and counting.calls == 1 and lru.misses == 2 and lru.hits == 1
    np.testing.assert_array_equal(first, static.encode(["a b", "c d", "a b"]))
    first[0] = 0.0  # the caller's array is its own: the cached vector is untouched
    again = lru.encode(["a b"])
    assert counting.texts == 2 and lru.hits == 2
    np.testing.assert_array_equal(again[0], static.encode(["a b"])[0])
    lru.encode(["e f", "g h"])  # 4 distinct texts for 3 slots: the least recent ("c d") goes
    assert len(lru) == 3
    lru.encode(["a b", "g h"])
    assert counting.texts == 4  # "a b" had been used more recently than "c d": still here
    lru.encode(["c d"])
    assert counting.texts == 5  # "c d" had been evicted (and now "e f" is)
    lru.encode(["c d", "a b", "g h"])
    assert counting.texts == 5 and lru.hits == 7
    assert lru.encode([]).shape == (0, static.dim)
    with pytest.raises(ConfigurationError):
        LRUEmbedder(static, maxsize=0)


# ---------------------------------------------------------------------- routers
@pytest.fixture(scope="module")
def static_model(split_tables, static: StaticEmbedder) -> CascadeModel:
    train, _ = split_tables
    return CascadeModel(
        list(TIERS),
        acceptance_params={"n_estimators": 200, "early_stopping_rounds": 30},
        capacity_cv_below=0,
    ).fit(train, static)


def test_router_records_and_uses_its_embedder(
    static_model: CascadeModel, static: StaticEmbedder, cache_dir: Path, tmp_path: Path
) -> None:
    assert static_model.embedder_ref_["sha256"] == static.sha256
    folder = static_model.save(tmp_path / "router")
    router = Router.load(folder, settings=RouterSettings(cache_dir=cache_dir))
    assert router.embedder.name == static.name and isinstance(router.embedder, LRUEmbedder)
    assert json.loads((folder / "router.json").read_text())["embedder_name"] == static.name
    from training.registry import _router_metadata  # what the MLflow model's metadata records

    assert _router_metadata(folder)["embedder"] == static.name
    decision = router.decide("math", TEXTS[2])
    assert decision.action in {"call", "skip"} and 0 < decision.p_accept < 1


def test_every_embedder_refuses_a_router_trained_with_another(
    static_model, fitted_model, static, onnx, onnx_int8, embedder
) -> None:
    """MiniLM-torch, ONNX, ONNX-int8 and static: none runs a router trained with another."""
    for model, own in ((static_model, static), (fitted_model, embedder)):
        for other in (static, onnx, onnx_int8, embedder):
            if other is own:
                Router(model, other)
                continue
            with pytest.raises(ConfigurationError, match="trained with embedder"):
                Router(model, other)


def test_router_refuses_a_different_artefact(
    static_model: CascadeModel, static: StaticEmbedder, tmp_path: Path
) -> None:
    """Same artefact name, different table (a rebuild with other settings): load refuses."""
    folder = static_model.save(tmp_path / "router")
    other_cache = tmp_path / "other-cache"
    copy = artefact_root(other_cache) / STATIC_ARTEFACT
    shutil.copytree(static.folder, copy)
    table = np.load(copy / "embeddings.npy")
    np.save(copy / "embeddings.npy", table[:, ::-1].copy())
    meta = json.loads((copy / ARTEFACT_META).read_text())
    meta["sha256"] = artefact_sha256(copy)  # a consistent artefact, just not the trained one
    (copy / ARTEFACT_META).write_text(json.dumps(meta))
    with pytest.raises(ConfigurationError, match=r"trained with embedder artefact static-minilm"):
        Router.load(folder, settings=RouterSettings(cache_dir=other_cache))
    # a router of the float32 recipe, where its artefact is missing: that recipe no longer builds
    meta = json.loads((folder / "router.json").read_text())
    meta["embedder"]["artefact"] = "static-minilm"
    (folder / "router.json").write_text(json.dumps(meta))
    with pytest.raises(ConfigurationError, match="no longer builds"):
        Router.load(folder, settings=RouterSettings(cache_dir=tmp_path / "empty"))


def test_a_replica_waits_for_the_artefact_another_one_builds(
    static: StaticEmbedder, tmp_path: Path
) -> None:
    """Two processes load a static router from a cache without its artefact: the one that
    holds the build lock builds it (here: this test, which then puts the session's copy in
    place), the other waits, finds it built and loads without building again."""
    from router.registry import bundled_router_path

    cache = tmp_path / "cache"
    script = (
        "import sys\n"
        "from router.sdk import Router\n"
        "from router.settings import RouterSettings\n"
        "from router.registry import bundled_router_path\n"
        "settings = RouterSettings(cache_dir=sys.argv[1])\n"
        "router = Router.load(bundled_router_path(), settings=settings)\n"
        "print('decided', router.decide('math', 'What is 2 + 2?').tier)\n"
    )
    with _build_lock(cache, STATIC_ARTEFACT):
        waiting = subprocess.Popen(
            [sys.executable, "-c", script, str(cache)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        time.sleep(5.0)
        assert waiting.poll() is None, waiting.communicate()[0]  # blocked on the lock
        shutil.copytree(static.folder, artefact_root(cache) / STATIC_ARTEFACT)
    output, _ = waiting.communicate(timeout=300)
    assert waiting.returncode == 0, output
    assert "decided" in output and "building the static embedder artefact" not in output
    recorded = json.loads((bundled_router_path() / "router.json").read_text())["embedder"]
    assert recorded["sha256"] == static.sha256  # what this machine builds is what ships


def test_router_lru_is_per_instance(static_model: CascadeModel, static: StaticEmbedder) -> None:
    a, b = Router(static_model, static), Router(static_model, static)
    assert isinstance(a.embedder, LRUEmbedder) and a.embedder is not b.embedder
    a.decide("math", TEXTS[0])
    a.decide("math", TEXTS[0])
    assert a.embedder.hits == 1 and a.embedder.misses == 1 and len(b.embedder) == 0
    assert a.with_backends(None).embedder is a.embedder  # the same router's copies share it
    assert Router(static_model, static, lru_size=0).embedder is static


def test_decide_batch_equals_one_at_a_time(static_model, static, split_tables) -> None:
    _, test = split_tables
    router = Router(static_model, static, lru_size=0)
    steps = [str(s) for s in test.steps[:40]]
    inputs = list(test.prompts[:40])
    answers = [r or "" for r in test.responses[0][:40]]
    for target in (None, "quality=0.9", "share=0.3"):
        batch = router.decide_batch(steps, inputs, target=target)
        single = [router.decide(s, x, target=target) for s, x in zip(steps, inputs, strict=True)]
        assert [d.action for d in batch] == [d.action for d in single]
        np.testing.assert_allclose(
            [d.p_accept for d in batch], [d.p_accept for d in single], rtol=0, atol=1e-9
        )
    post = router.decide_batch(steps, inputs, answers=answers)
    single_post = [
        router.decide(s, x, answer=a) for s, x, a in zip(steps, inputs, answers, strict=True)
    ]
    assert [d.action for d in post] == [d.action for d in single_post]
    np.testing.assert_allclose(
        [d.gain for d in post], [d.gain for d in single_post], rtol=0, atol=1e-9
    )
    assert {d.action for d in post} <= {"accept", "escalate"}
    with pytest.raises(ConfigurationError, match="same length"):
        router.decide_batch(steps, inputs[:-1])


def test_training_pipeline_builds_the_configured_embedder(cache_dir: Path, static) -> None:
    from training.pipeline import make_embedder

    e = make_embedder(RouterSettings(embedder="static", cache_dir=cache_dir))
    assert isinstance(e, CachedEmbedder) and e.name == static.name
    assert isinstance(e.cache, EmbeddingCache)
    with pytest.raises(ConfigurationError, match="unknown embedder kind"):
        make_embedder(RouterSettings(embedder="word2vec", cache_dir=cache_dir))


def test_single_row_booster_path_matches_lightgbm_predict(static_model: CascadeModel) -> None:
    """One row goes through LightGBM's prepared single-row C path: same margins as predict."""
    import copy
    import pickle

    rng = np.random.default_rng(0)
    m = static_model.pre_models_[0]
    X = rng.normal(size=(50, m.n_features_in_)).astype(np.float32)
    X[:, 0] = 0  # a known step code
    batch = m.decision_function(X)
    single = np.array([m.decision_function(X[i : i + 1])[0] for i in range(len(X))])
    assert m._single_row() is not None
    np.testing.assert_allclose(single, batch, rtol=0, atol=1e-9)
    reference = m.booster_.predict(X, num_iteration=m.best_iteration_, raw_score=True)
    np.testing.assert_allclose(single, reference, rtol=0, atol=1e-9)
    clone = pickle.loads(pickle.dumps(copy.deepcopy(m)))  # the C handle is not carried over
    np.testing.assert_allclose(clone.decision_function(X[:1]), batch[:1], rtol=0, atol=1e-9)
    with pytest.raises(ConfigurationError, match="features"):
        m._single_row().predict(X[0, :-1])
