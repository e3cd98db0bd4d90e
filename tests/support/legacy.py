"""Routers saved by earlier versions, and the data their recorded decisions were made on.

``tests/router/model/data/legacy/format<N>/`` holds a small router of every format an earlier
version wrote (1-5), trained and saved by that version on :func:`legacy_table` with
:class:`HashEmbedder`, and ``expected.npz``: its probabilities and its policy's decisions on
:func:`legacy_table` with ``seed=1`` as that version computed them.  ``expected_saved.npz``
holds the same for the routers saved in the repository (the bundled router and
benchmarks/results/**/router*), on :func:`router_inputs`.  Made once by
``python tests/support/legacy.py OUT REPO`` run against the earlier version's code (see there);
the test checks that today's code loads them and decides identically.  A router of the
repository that is rebuilt on purpose (``scripts/build_default_router.py``) gets its entry
recorded anew by the code that built it: ``python tests/support/legacy.py --refresh NAME``.

Only numpy and ``OutcomeTable``'s constructor are used here, so that the earlier version can
import this module too.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from router.data import OutcomeTable
from router.data.table import OpinionOutcomes

TIERS = ("small", "large")
PEER = "peer"
ANSWER_KINDS = {"qa": "choice", "math": "number"}
#: format -> the constructor arguments (beyond the tiers) that made the earlier version write it
FORMATS: dict[int, dict[str, Any]] = {
    1: {"answer_option_text": False, "pre_ensemble": False},
    2: {
        "answer_option_text": False,
        "pre_ensemble": False,
        "peers": {0: PEER},
        "answer_kinds": ANSWER_KINDS,
    },
    3: {"answer_option_text": False, "answer_kinds": ANSWER_KINDS},
    4: {
        "answer_option_text": False,
        "samples": 2,
        "pre_ensemble": False,
        "answer_kinds": ANSWER_KINDS,
    },
    5: {"answer_kinds": ANSWER_KINDS},
}


class HashEmbedder:
    """A deterministic 16-dimensional embedder: each text's vector is seeded by its hash."""

    dim = 16
    name = "hash:16"

    def encode(self, texts: Sequence[str], *, progress: bool = False) -> np.ndarray:
        rows = []
        for text in texts:
            seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
            v = np.random.default_rng(seed).normal(size=self.dim)
            rows.append(v / np.linalg.norm(v))
        return np.vstack(rows).astype(np.float32)

    def reference(self) -> dict[str, Any]:
        return {"kind": "hash"}


def legacy_table(n: int = 400, seed: int = 0, opinions: Sequence[str] = ()) -> OutcomeTable:
    """Two tiers on multiple-choice ("qa") and numeric ("math") prompts with recorded answers;
    ``opinions`` names extra models whose answers come as peers."""
    rng = np.random.default_rng(seed)
    steps = np.where(rng.uniform(size=n) < 0.5, "qa", "math").astype(object)
    prompts = [
        f"{s} question {seed}-{j}: which?\nA) one\nB) two\nC) three"
        if s == "qa"
        else f"{s} question {seed}-{j}: what is {j} + {j % 7}?"
        for j, s in enumerate(steps)
    ]
    hard = rng.uniform(size=n)
    scores = np.column_stack(
        [rng.uniform(size=n) > 0.3 + 0.5 * hard, rng.uniform(size=n) > 0.1 + 0.3 * hard]
    ).astype(float)

    def answers(correct: np.ndarray, salt: int) -> list[str | None]:
        out: list[str | None] = []
        for j, ok in enumerate(correct):
            if steps[j] == "qa":
                out.append(f"The answer is {'A' if ok else 'BC'[(j + salt) % 2]}")
            else:
                value = 2 * j + j % 7 if ok else 2 * j + salt + 1
                out.append(f"So the result is {value}")
        return out

    peer_scores = (rng.uniform(size=(n, len(opinions))) > 0.5).astype(float)
    peers = None
    if opinions:
        peers = OpinionOutcomes(
            tuple(opinions),
            peer_scores,
            np.full((n, len(opinions)), 0.0001),
            [answers(peer_scores[:, k] > 0.5, k + 2) for k in range(len(opinions))],
        )
    return OutcomeTable(
        tiers=TIERS,
        prompt_ids=np.array([f"p{seed}-{j:04d}" for j in range(n)], dtype=object),
        prompts=prompts,
        steps=steps,
        splits=np.full(n, None, dtype=object),
        scores=scores,
        costs=np.tile([0.0002, 0.004], (n, 1)) * rng.uniform(0.5, 1.5, size=(n, 1)),
        responses=[answers(scores[:, 0] > 0.5, 0), answers(scores[:, 1] > 0.5, 1)],
        output_tokens=np.full((n, 2), 20, dtype=np.int64),
        peers=peers,
    )


def opinion_models(format_version: int) -> tuple[str, ...]:
    """The peer models a legacy router of this format reads opinions from."""
    if format_version == 2:
        return (PEER,)
    if format_version == 4:
        return tuple(f"small#s{i}" for i in (1, 2))
    return ()


def router_inputs(n: int, width: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Synthetic feature rows for a saved router whose embedder gives ``width`` dimensions."""
    rng = np.random.default_rng(seed)
    emb = rng.normal(size=(n, width))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    answers = rng.normal(size=(n, width))
    answers /= np.linalg.norm(answers, axis=1, keepdims=True)
    extra = np.column_stack([rng.integers(-1, 3, n), rng.uniform(3, 8, n), rng.uniform(1, 6, n)])
    return {
        "inputs": np.hstack([extra, emb]).astype(np.float32),
        "answer_embeddings": answers.astype(np.float32),
        "scores": (rng.uniform(size=(n, 2)) > 0.4).astype(float),
        "costs": np.tile([0.0001, 0.003], (n, 1)),
    }


def decisions(model: Any, table: OutcomeTable, embedder: HashEmbedder) -> dict[str, np.ndarray]:
    """What a legacy router computes on ``table``: probabilities and the policy's walk."""
    signals = model.signals(table, embedder)
    costs = model.opinion_costs(table)
    out = model.policy_.run(signals, table.scores, table.costs, table.steps, None, costs)
    result = {
        "pre": signals.pre,
        "post_self": signals.post_self,
        "post_next": signals.post_next,
        "answer_tier": out.answer_tier,
        "cost": out.cost,
        "skipped": out.skipped,
    }
    if signals.op_self is not None:
        result |= {"op_self": signals.op_self, "op_next": signals.op_next}
        result |= {"asked": out.asked, "source": out.source}
    return result


def saved_decisions(model: Any, width: int) -> dict[str, np.ndarray]:
    """What a router saved in the repository computes on :func:`router_inputs`."""
    from router.policy import CascadeSignals

    data = router_inputs(60, width)
    X, a_emb = data["inputs"], data["answer_embeddings"]
    answers = [f"The answer is {'ABCD'[j % 4]}" for j in range(len(X))]
    pre = model.pre_probabilities(X)
    post = model.post_probabilities(0, X, a_emb, answers)
    post_self = np.full((len(X), 1), np.nan) if post is None else post[0][:, None]
    post_next = np.full((len(X), 1), np.nan) if post is None else post[1][:, None]
    signals = CascadeSignals(pre, post_self.copy(), post_next.copy())
    steps = np.array([model.steps_.steps[j % len(model.steps_.steps)] for j in range(len(X))])
    out = model.policy_.run(signals, data["scores"], data["costs"], steps)
    return {
        "pre": pre,
        "post_self": post_self,
        "post_next": post_next,
        "answer_tier": out.answer_tier,
        "skipped": out.skipped,
    }


SAVED_ROUTERS = (
    "router/resources/router",
    "benchmarks/results/overhead_router",
    "benchmarks/results/embedders/minilm/speed_router",
    "benchmarks/results/embedders/static/speed_router",
    "benchmarks/results/embedders/onnx/speed_router",
    "benchmarks/results/embedders/onnx-int8/speed_router",
)


def _make(out: Path, repo: Path) -> None:  # pragma: no cover - run once, against old code
    """Train and save a router of every legacy format and record its decisions (run with the
    earlier version first on PYTHONPATH)."""
    import json

    from router.model import CascadeModel

    embedder = HashEmbedder()
    for version, params in FORMATS.items():
        peers = opinion_models(version)
        train = legacy_table(400, 0, peers)
        test = legacy_table(120, 1, peers)
        model = CascadeModel(
            list(TIERS),
            acceptance_params={"n_estimators": 40, "early_stopping_rounds": 10},
            min_step_samples=60,
            **params,
        ).fit(train, embedder)
        if version in (1, 2, 4):
            model.post_blend_ = 0.0  # what a format without the blend computes
        if version == 3 and not model.pre_members_.extra and model.post_blend_ == 0.0:
            model.post_blend_ = 0.25  # format 3 is written for members or a blend
        folder = model.save(out / f"format{version}")
        written = json.loads((folder / "router.json").read_text())["format_version"]
        if written != version:
            raise SystemExit(f"wanted format {version}, the old code wrote {written}")
        np.savez_compressed(folder / "expected.npz", **decisions(model, test, embedder))
        print(f"format {version}: {folder}")
    saved = {}
    for name in SAVED_ROUTERS:
        saved |= _saved_entries(repo, name)
    np.savez_compressed(out / "expected_saved.npz", **saved)


def _saved_entries(repo: Path, name: str) -> dict[str, np.ndarray]:  # pragma: no cover
    """The ``expected_saved.npz`` entries of one saved router, as the code on the path decides."""
    from router.model import CascadeModel

    model = CascadeModel.load(repo / name)
    width = model.pre_models_[0].n_features_in_ - 3
    return {f"{name}|{k}": v for k, v in saved_decisions(model, width).items()}


def _refresh(name: str) -> None:  # pragma: no cover - run after rebuilding a saved router
    """Record anew the decisions of one router of :data:`SAVED_ROUTERS` (rebuilt on purpose)."""
    path = Path(__file__).resolve().parents[1] / "router/model/data/legacy/expected_saved.npz"
    with np.load(path, allow_pickle=False) as stored:
        arrays = {k: v for k, v in stored.items() if not k.startswith(f"{name}|")}
    arrays |= _saved_entries(Path(__file__).resolve().parents[2], name)
    np.savez_compressed(path, **arrays)


if __name__ == "__main__":  # pragma: no cover
    if sys.argv[1] == "--refresh":
        _refresh(sys.argv[2])
    else:
        _make(Path(sys.argv[1]), Path(sys.argv[2]))
