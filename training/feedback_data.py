"""Labelled production requests → training rows for the router (OutcomeTable-compatible).

A feedback label says whether the *returned* answer was accepted, so one labelled request
gives one label, for the tier that answered (``tier``): ``prompt = input_text``,
``model = tier``, ``score = accepted``, ``response = answers[tier]``.

**Selection bias.**  The router decides which tier answers, so labels are not missing at
random: requests the router escalated carry a frontier label only (the small model's answer,
if it was produced, is never judged), and requests the small model answered carry a small-tier
label only, mostly on inputs the router already believed easy.  Trained on those labels alone,
the small-tier model would only ever see the inputs it was trusted with and could never learn
that it is wrong where it was never tried.  This module handles it in three ways:

1. *Completion from recorded outcomes* (``lookup``): a request whose input is found in a table
   of recorded outcomes (the base datasets, or the replay data ``simulate`` streams) gets the
   other tiers' recorded scores; the production label overrides the recorded score of the tier
   that answered.
2. *Imputation from the parent router* (``impute="parent"``): a tier still unlabelled gets the
   parent version's calibrated pre-answer probability as a soft score.  That is self-training:
   it adds no new information about that tier and keeps the parent's beliefs where feedback is
   silent, so it is off unless asked for; ``impute="drop"`` (default) drops incomplete rows
   and counts them in the lineage.
3. The base datasets (every tier labelled on every prompt) can be trained on next to the
   feedback, and the promotion gate always scores on a frozen, fully labelled evaluation set,
   so a challenger that learnt the bias cannot reach ``@champion``.

Rows whose input is in the frozen evaluation set are dropped (never trained on).  One input
labelled several times keeps its latest label.
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from router.backends import estimate_tokens, normalise_text
from router.data import OutcomeTable
from router.errors import ConfigurationError
from router.feedback import FeedbackStore, RequestRecord

__all__ = ["FeedbackRows", "concat_tables", "feedback_table", "prompt_key", "table_keys"]

#: fills the missing tiers of incomplete rows: (texts, steps) -> P(tier accepted), shape (n, T)
Imputer = Callable[[list[str], list[str]], np.ndarray]


def prompt_key(text: str) -> str:
    """The join key of an input: its whitespace-normalised text."""
    return normalise_text(text)


def table_keys(table: OutcomeTable) -> list[str]:
    return [prompt_key(p) for p in table.prompts]


@dataclass
class FeedbackRows:
    """Training rows built from feedback, and what happened to every labelled request."""

    table: OutcomeTable | None
    counts: dict[str, int] = field(default_factory=dict)
    by_step_label: dict[str, int] = field(default_factory=dict)


def _feedback_id(key: str) -> str:
    return "feedback/" + hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]


def feedback_table(
    labelled: pd.DataFrame,
    tiers: Sequence[str],
    *,
    lookup: OutcomeTable | None = None,
    exclude: set[str] | None = None,
    impute: str = "drop",
    imputer: Imputer | None = None,
    prices: Mapping[str, tuple[float, float]] | None = None,
    mean_output_tokens: Sequence[float] | None = None,
) -> FeedbackRows:
    """Turn :meth:`~router.feedback.FeedbackStore.labelled` rows into an :class:`OutcomeTable`.

    Args:
        labelled: labelled requests (one row per request id).
        tiers: the cascade's tiers, cheapest first.
        lookup: recorded outcomes that complete the unlabelled tiers of known inputs.
        exclude: prompt keys never to train on (the frozen evaluation set).
        impute: ``"drop"`` drops rows with an unlabelled tier; ``"parent"`` fills them with
            ``imputer``'s probabilities.
        prices, mean_output_tokens: estimate the cost of a tier without a recorded cost.

    Raises:
        ConfigurationError: an unknown ``impute`` mode, or ``"parent"`` without an imputer.
    """
    if impute not in ("drop", "parent"):
        raise ConfigurationError(f"impute must be 'drop' or 'parent', got {impute!r}")
    if impute == "parent" and imputer is None:
        raise ConfigurationError("impute='parent' needs a parent router (no @champion found)")
    tier_list = list(tiers)
    n_tiers = len(tier_list)
    counts: Counter[str] = Counter()
    by_step_label: Counter[str] = Counter()
    counts["labelled"] = len(labelled)
    exclude = exclude or set()
    lookup_index: dict[str, int] = {}
    if lookup is not None:
        if list(lookup.tiers) != tier_list:
            raise ConfigurationError(f"lookup tiers {lookup.tiers} differ from {tier_list}")
        for i, key in enumerate(table_keys(lookup)):
            lookup_index.setdefault(key, i)

    # latest label per input
    latest: dict[str, Any] = {}
    for row in labelled.sort_values("labelled_at", kind="stable").itertuples(index=False):
        key = prompt_key(str(row.input_text))
        if row.tier not in tier_list:
            counts["dropped_unknown_tier"] += 1
            continue
        if key in exclude:
            counts["dropped_excluded"] += 1
            continue
        if key in latest:
            counts["superseded_same_input"] += 1
        latest[key] = row
        verdict = "accepted" if row.accepted else "rejected"
        by_step_label[f"{row.step!s}/{row.tier!s}/{verdict}"] += 1

    keys = list(latest)
    n = len(keys)
    scores = np.full((n, n_tiers), np.nan)
    costs = np.full((n, n_tiers), np.nan)
    out_tokens = np.zeros((n, n_tiers), dtype=np.int64)
    responses: list[list[str | None]] = [[None] * n for _ in range(n_tiers)]
    prompts, steps = [], []
    for i, key in enumerate(keys):
        row = latest[key]
        prompts.append(str(row.input_text))
        steps.append(str(row.step))
        j = lookup_index.get(key)
        if j is not None:
            counts["completed_from_lookup"] += 1
            assert lookup is not None
            scores[i] = lookup.scores[j]
            costs[i] = lookup.costs[j]
            out_tokens[i] = lookup.output_tokens[j]
            for t in range(n_tiers):
                responses[t][i] = lookup.responses[t][j]
        t_ret = tier_list.index(row.tier)
        scores[i, t_ret] = 1.0 if row.accepted else 0.0
        answers = row.answers if isinstance(row.answers, dict) else {}
        for t, tier in enumerate(tier_list):
            if tier in answers and answers[tier] is not None:
                responses[t][i] = str(answers[tier])

    missing = np.isnan(scores)
    incomplete = missing.any(axis=1)
    counts["incomplete"] = int(incomplete.sum())
    if incomplete.any() and impute == "parent":
        assert imputer is not None
        rows = np.flatnonzero(incomplete)
        probs = np.asarray(imputer([prompts[i] for i in rows], [steps[i] for i in rows]))
        block = scores[rows]
        block[np.isnan(block)] = probs[np.isnan(block)]
        scores[rows] = block
        counts["imputed_from_parent"] = len(rows)
        keep = np.ones(n, dtype=bool)
    else:
        keep = ~incomplete
        counts["dropped_incomplete"] = int(incomplete.sum())
    # costs without a recorded value: estimated from prices and token counts
    if np.isnan(costs).any():
        for i, t in zip(*np.nonzero(np.isnan(costs)), strict=True):
            price = (prices or {}).get(tier_list[t], (0.0, 0.0))
            out_t = float(mean_output_tokens[t]) if mean_output_tokens is not None else 200.0
            costs[i, t] = (estimate_tokens(prompts[i]) * price[0] + out_t * price[1]) / 1e6
    idx = np.flatnonzero(keep)
    counts["training_rows"] = len(idx)
    if len(idx) == 0:
        return FeedbackRows(None, dict(counts), dict(by_step_label))
    table = OutcomeTable(
        tiers=tuple(tier_list),
        prompt_ids=np.asarray([_feedback_id(keys[i]) for i in idx], dtype=object),
        prompts=[prompts[i] for i in idx],
        steps=np.asarray([steps[i] for i in idx], dtype=object),
        splits=np.full(len(idx), "feedback", dtype=object),
        scores=scores[idx],
        costs=costs[idx],
        responses=[[col[i] for i in idx] for col in responses],
        output_tokens=out_tokens[idx],
    )
    return FeedbackRows(table, dict(counts), dict(by_step_label))


def concat_tables(tables: Sequence[OutcomeTable]) -> OutcomeTable:
    """Rows of several tables with the same tiers; a later table's input replaces an earlier one.

    Rows are re-sorted by prompt id (as :meth:`OutcomeTable.from_long` does).
    """
    tables = [t for t in tables if t is not None and len(t) > 0]
    if not tables:
        raise ConfigurationError("no training rows: give feedback labels or base data")
    tiers = tables[0].tiers
    for t in tables[1:]:
        if t.tiers != tiers:
            raise ConfigurationError(f"tables disagree on tiers: {t.tiers} vs {tiers}")
    seen: set[str] = set()
    parts: list[tuple[OutcomeTable, np.ndarray]] = []
    for table in reversed(tables):
        keys = table_keys(table)
        keep = np.array([k not in seen for k in keys], dtype=bool)
        seen.update(keys)
        parts.append((table, np.flatnonzero(keep)))
    parts.reverse()
    subsets = [t.subset(i) for t, i in parts]
    prompt_ids = np.concatenate([s.prompt_ids for s in subsets]).astype(object)
    order = np.argsort(prompt_ids.astype(str), kind="stable")
    merged = OutcomeTable(
        tiers=tiers,
        prompt_ids=prompt_ids,
        prompts=[p for s in subsets for p in s.prompts],
        steps=np.concatenate([s.steps for s in subsets]).astype(object),
        splits=np.concatenate([s.splits for s in subsets]).astype(object),
        scores=np.concatenate([s.scores for s in subsets]),
        costs=np.concatenate([s.costs for s in subsets]),
        responses=[[r for s in subsets for r in s.responses[t]] for t in range(len(tiers))],
        output_tokens=np.concatenate([s.output_tokens for s in subsets]),
    )
    return merged.subset(order)


def replay_as_feedback(
    store: FeedbackStore,
    table: OutcomeTable,
    rows: int | None = None,
    *,
    start: int = 0,
    prefix: str = "replay",
    source: str = "replay",
    vary: bool = False,
    batch_size: int = 500,
    skip: int = 0,
) -> int:
    """Write recorded outcomes into ``store`` as answered, labelled production requests (for
    tests, benchmarks and demos of the feedback loop); returns how many were written.

    Request ``k`` (of ``rows``, default one per prompt) answers prompt ``i = k mod n`` on tier
    ``(start + i + k // n) mod 2`` with that tier's recorded answer, and is labelled accepted
    where its recorded score is at least 0.5.  ``vary`` makes every request's input distinct,
    as repeated production traffic is (the prompt, then a line ``(ticket k)``).  Written
    ``batch_size`` requests per transaction; ``skip`` leaves out the first requests (a fill
    resumed where it stopped).
    """
    from router.feedback import FeedbackRecord

    n = len(table)
    total = n if rows is None else int(rows)
    for first in range(skip, total, batch_size):
        records, labels = [], []
        for k in range(first, min(first + batch_size, total)):
            i, lap = k % n, k // n
            tier_index = (start + i + lap) % 2
            tier = table.tiers[tier_index]
            answer = table.responses[tier_index][i] or ""
            request_id = f"{prefix}-{table.prompt_ids[i]}" + (f"-{lap}" if lap else "")
            text = f"{table.prompts[i]}\n\n(ticket {k:07d})" if vary else table.prompts[i]
            records.append(
                RequestRecord(
                    request_id=request_id,
                    step=str(table.steps[i]),
                    input_text=text,
                    messages=[{"role": "user", "content": text}],
                    target="quality_ratio=0.95",
                    router_version="1",
                    tier=tier,
                    path="verified" if tier_index == 0 else "escalated",
                    p_accept=0.5,
                    probabilities={t: 0.5 for t in table.tiers},
                    answers={tier: answer},
                    answer=answer,
                    cost_usd=float(table.costs[i, tier_index]),
                    latency_s=0.1,
                )
            )
            accepted = bool(table.scores[i, tier_index] >= 0.5)
            labels.append(FeedbackRecord(request_id, accepted, None, source, time.time()))
        store.record_requests(records)
        store.add_feedback_batch(labels)
    return total - skip
