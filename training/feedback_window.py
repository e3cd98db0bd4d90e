"""Reading a feedback window of any size: a light first pass, a bounded training set chosen by
a stratified sample, and a second pass that fetches only the chosen rows.

The store may hold millions of labelled requests; their texts (input, messages, answers) are
most of each row.  :func:`read_index` streams the window once and keeps, per labelled request,
its id, step, answering tier, label, label time, the router's predicted acceptance and a 64-bit
hash of its input key (the whitespace-normalised input): about 100 bytes instead of several
kilobytes.  The training rows are chosen on that index (:func:`select_rows`): the latest label
of each input, then at most ``max_rows`` of them by a seeded sample stratified by
(step, answering tier, label), each stratum keeping its share.  Only the chosen rows are then
read whole (:meth:`router.feedback.FeedbackStore.labelled_rows`).

The sample is stable: within a stratum the rows with the smallest seeded hash of their input
are kept, so a smaller cap chooses a subset of a larger one, and the next retrain over a grown
window keeps most of the inputs the last one chose, whose embeddings the on-disk cache holds.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

from router.feedback import FeedbackStore
from training.feedback_data import prompt_key

__all__ = [
    "FETCH_COLUMNS",
    "INDEX_COLUMNS",
    "key_hash",
    "read_index",
    "select_rows",
    "stratified_sample",
]

#: what the first pass reads (the input text only to hash it)
INDEX_COLUMNS = (
    "request_id",
    "step",
    "tier",
    "input_text",
    "accepted",
    "labelled_at",
    "p_accept",
    "probabilities",
    # the production check of a certified target reads these
    "target",
    "cost_usd",
    "score",
    "router_version",
)
#: what the second pass reads for the chosen rows (what training.feedback_data needs)
FETCH_COLUMNS = ("request_id", "step", "input_text", "tier", "answers", "accepted", "labelled_at")
STRATA = ("step", "tier", "accepted")


def key_hash(text: str) -> int:
    """A 64-bit hash of an input's join key (:func:`training.feedback_data.prompt_key`)."""
    digest = hashlib.blake2b(prompt_key(text).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little", signed=True)


def read_index(
    store: FeedbackStore,
    since: float | None = None,
    until: float | None = None,
    batch_size: int = 20_000,
) -> pd.DataFrame:
    """One light row per labelled request of the window, in label order: ``request_id``,
    ``key`` (:func:`key_hash` of the input), ``step``, ``tier``, ``accepted``, ``labelled_at``
    ``predicted`` (the router's recorded P(answering tier accepted), for drift), and what the
    check of a certified target reads: ``target``, ``cost_usd``, ``score``, ``router_version``."""
    parts = []
    for batch in store.iter_labelled(since, until, columns=INDEX_COLUMNS, batch_size=batch_size):
        predicted = [
            float(probs.get(tier, p)) if isinstance(probs, dict) else float(p)
            for probs, tier, p in zip(
                batch["probabilities"], batch["tier"], batch["p_accept"], strict=True
            )
        ]
        parts.append(
            pd.DataFrame(
                {
                    "request_id": batch["request_id"].astype(str).to_numpy(dtype=object),
                    "key": np.fromiter(
                        (key_hash(t) for t in batch["input_text"]), np.int64, len(batch)
                    ),
                    "step": batch["step"].astype(str),
                    "tier": batch["tier"].astype(str),
                    "accepted": batch["accepted"].to_numpy(bool),
                    "labelled_at": batch["labelled_at"].to_numpy(float),
                    "predicted": np.asarray(predicted, dtype=float),
                    "target": batch["target"].astype(str),
                    "cost_usd": batch["cost_usd"].to_numpy(float),
                    "score": batch["score"].to_numpy(float),
                    "router_version": batch["router_version"].astype(str),
                }
            )
        )
    if not parts:
        columns = ["request_id", "key", "step", "tier", "accepted", "labelled_at", "predicted"]
        columns += ["target", "cost_usd", "score", "router_version"]
        frame = pd.DataFrame({c: [] for c in columns})
        return frame.astype(
            {"key": np.int64, "accepted": bool, "labelled_at": float, "cost_usd": float}
        )
    frame = pd.concat(parts, ignore_index=True)
    frame["step"] = frame["step"].astype("category")
    for name in ("tier", "target", "router_version"):
        frame[name] = frame[name].astype("category")
    return frame


def _priority(keys: np.ndarray, seed: int) -> np.ndarray:
    """A seeded, well-mixed 64-bit hash of each key (splitmix64's finaliser)."""
    z = keys.astype(np.int64).view(np.uint64) + np.uint64((0x9E3779B97F4A7C15 * (seed + 1)) % 2**64)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def stratified_sample(
    frame: pd.DataFrame, n: int, seed: int, by: Sequence[str] = STRATA, key: str = "key"
) -> pd.DataFrame:
    """At most ``n`` rows of ``frame``, each stratum of ``by`` keeping its share (largest
    remainders round the quotas to exactly ``n``): in each stratum the rows whose ``key`` has
    the smallest seeded hash (all labels of one input go together).  Rows keep their order."""
    if n <= 0 or len(frame) <= n:
        return frame
    groups = frame.groupby(list(by), observed=True, sort=True).indices
    sizes = np.array([len(idx) for idx in groups.values()], dtype=float)
    exact = sizes * (n / sizes.sum())
    quota = np.floor(exact).astype(int)
    order = np.argsort(-(exact - quota), kind="stable")
    quota[order[: n - int(quota.sum())]] += 1
    priority = _priority(frame[key].to_numpy(), seed)
    chosen = [
        idx[np.argsort(priority[idx], kind="stable")[:k]]
        for idx, k in zip(groups.values(), quota, strict=True)
        if k > 0
    ]
    keep = np.sort(np.concatenate(chosen)) if chosen else np.array([], dtype=int)
    return frame.iloc[keep]


def select_rows(
    index: pd.DataFrame,
    tiers: Iterable[str],
    exclude: set[int],
    max_rows: int | None,
    seed: int,
) -> tuple[pd.DataFrame, dict[str, int]]:
    """The training rows of an index: known tiers, inputs not in ``exclude`` (key hashes), the
    latest label of each input, then a stratified sample of at most ``max_rows``.

    Returns the chosen index rows and what happened to the others (``dropped_unknown_tier``,
    ``dropped_excluded``, ``superseded_same_input``, ``capped``)."""
    counts: Counter[str] = Counter()
    known = index["tier"].astype(str).isin(list(tiers)).to_numpy()
    counts["dropped_unknown_tier"] = int((~known).sum())
    rows = index[known]
    excluded = rows["key"].isin(list(exclude)).to_numpy() if exclude else np.zeros(len(rows), bool)
    counts["dropped_excluded"] = int(excluded.sum())
    rows = rows[~excluded]
    latest = rows.sort_values("labelled_at", kind="stable").drop_duplicates("key", keep="last")
    counts["superseded_same_input"] = len(rows) - len(latest)
    chosen = stratified_sample(latest, max_rows or 0, seed)
    counts["capped"] = len(latest) - len(chosen)
    return chosen, dict(counts)
