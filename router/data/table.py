"""The wide per-prompt view of outcomes: one row per prompt, one column per tier."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from router.backends.request import answer_text
from router.data.outcomes import DROPPED_PROMPTS, load_outcomes
from router.data.schema import REQUIRED_COLUMNS, VALID_COLUMN
from router.data.validation import first_index
from router.errors import ConfigurationError, DataValidationError


@dataclass(frozen=True, eq=False)
class OpinionOutcomes:
    """Recorded answers of cheap *peer* models on the same prompts: second opinions.

    Column ``k`` of ``scores``/``costs`` (and ``responses[k]``) is peer ``models[k]``.
    """

    models: tuple[str, ...]
    scores: np.ndarray
    costs: np.ndarray
    responses: list[list[str | None]]

    def subset(self, idx: np.ndarray) -> OpinionOutcomes:
        return OpinionOutcomes(
            self.models,
            self.scores[idx],
            self.costs[idx],
            [[column[i] for i in idx] for column in self.responses],
        )


@dataclass(frozen=True, eq=False)
class OutcomeTable:
    """Per-prompt outcomes for an ordered list of model tiers (cheapest first).

    Row ``i`` is one prompt; column ``t`` of ``scores``/``costs``/``output_tokens`` (and
    ``responses[t][i]``) is tier ``tiers[t]`` on that prompt.  Rows are sorted by prompt id.
    ``responses`` hold each answer's text form (a recorded tool-calling answer reads as its
    canonical calls, :func:`router.backends.request.answer_text`).  ``validity`` (None when the
    data records none) holds the validator's verdict on each answer: 1 valid, 0 refused, NaN
    where the request constrained nothing.
    """

    tiers: tuple[str, ...]
    prompt_ids: np.ndarray
    prompts: list[str]
    steps: np.ndarray
    splits: np.ndarray
    scores: np.ndarray
    costs: np.ndarray
    responses: list[list[str | None]]
    output_tokens: np.ndarray
    peers: OpinionOutcomes | None = None
    validity: np.ndarray | None = None
    #: prompts of the source data left out because a tier (or peer) had no row for them
    dropped_prompts: int = 0

    def __post_init__(self) -> None:
        n, n_tiers = len(self.prompt_ids), len(self.tiers)
        shapes_ok = (
            len(self.prompts) == n
            and len(self.steps) == n
            and len(self.splits) == n
            and self.scores.shape == (n, n_tiers)
            and self.costs.shape == (n, n_tiers)
            and self.output_tokens.shape == (n, n_tiers)
            and len(self.responses) == n_tiers
            and all(len(r) == n for r in self.responses)
            and (self.peers is None or self.peers.scores.shape == (n, len(self.peers.models)))
            and (self.validity is None or self.validity.shape == (n, n_tiers))
        )
        if not shapes_ok:
            raise ValueError(
                f"OutcomeTable fields disagree in shape (expected {n} prompts x {n_tiers} tiers)"
            )

    @classmethod
    def from_long(
        cls, frame: pd.DataFrame, tiers: Sequence[str], peers: Sequence[str] = ()
    ) -> OutcomeTable:
        """Pivot a long frame (as returned by :func:`load_outcomes`) to one row per prompt.

        Rows of models not in ``tiers`` (or ``peers``, kept as :class:`OpinionOutcomes`) are
        ignored; rows are sorted by prompt id.

        Raises:
            ConfigurationError: fewer than 2 tiers, or a tier listed twice.
            DataValidationError: a required column or a tier is missing from the frame, a
                (prompt_id, model) pair repeats, or a prompt lacks a row for some tier.
        """
        tier_list = tuple(str(t) for t in tiers)
        if len(tier_list) < 2:
            raise ConfigurationError(
                f"a cascade needs at least 2 tiers, got {len(tier_list)}: {list(tier_list)}"
            )
        if peers:
            return cls.from_long(frame, (*tier_list, *(str(p) for p in peers)))._split_peers(
                len(tier_list)
            )
        dropped = int(frame.attrs.get(DROPPED_PROMPTS, 0))
        if len(set(tier_list)) != len(tier_list):
            repeated = sorted({t for t in tier_list if tier_list.count(t) > 1})
            raise ConfigurationError(f"tier(s) listed more than once: {', '.join(repeated)}")
        for column in REQUIRED_COLUMNS:
            if column not in frame.columns:
                raise DataValidationError(f"required column {column!r} is missing", column=column)

        model_all = frame["model"].astype(str)
        present = set(pd.unique(model_all))
        absent = [t for t in tier_list if t not in present]
        if absent:
            raise DataValidationError(
                f"tier model(s) {', '.join(map(repr, absent))} not found in the data; models "
                f"present: {', '.join(sorted(present)) or 'none'}",
                column="model",
            )
        keep = model_all.isin(tier_list).to_numpy()
        sub = frame.loc[keep] if not keep.all() else frame

        tier_codes = pd.Categorical(sub["model"].astype(str), categories=tier_list).codes
        tier_codes = np.asarray(tier_codes, dtype=np.int64)
        prompt_codes, unique_ids = pd.factorize(sub["prompt_id"].astype(str), sort=True)
        prompt_codes = np.asarray(prompt_codes, dtype=np.int64)
        n, n_tiers = len(unique_ids), len(tier_list)

        flat = prompt_codes * n_tiers + tier_codes
        counts = np.bincount(flat, minlength=n * n_tiers)
        if (counts > 1).any():
            cell = first_index(counts > 1)
            raise DataValidationError(
                f"duplicate row for prompt_id {unique_ids[cell // n_tiers]!r} and model "
                f"{tier_list[cell % n_tiers]!r}",
                column="prompt_id",
            )
        if (counts == 0).any():
            cell = first_index(counts == 0)
            raise DataValidationError(
                f"prompt_id {unique_ids[cell // n_tiers]!r} has no row for model "
                f"{tier_list[cell % n_tiers]!r}",
                column="prompt_id",
            )

        scores = np.empty((n, n_tiers), dtype=np.float64)
        scores[prompt_codes, tier_codes] = pd.to_numeric(sub["score"]).to_numpy(np.float64)
        costs = np.zeros((n, n_tiers), dtype=np.float64)
        if "cost_usd" in sub.columns:
            costs[prompt_codes, tier_codes] = (
                pd.to_numeric(sub["cost_usd"]).fillna(0.0).to_numpy(np.float64)
            )
        out_tokens = np.zeros((n, n_tiers), dtype=np.int64)
        if "output_tokens" in sub.columns:
            out_tokens[prompt_codes, tier_codes] = (
                pd.to_numeric(sub["output_tokens"]).fillna(0).to_numpy(np.int64)
            )
        grid = np.full((n_tiers, n), None, dtype=object)
        if "response" in sub.columns:
            values = sub["response"].to_numpy(dtype=object).copy()
            values[pd.isna(values)] = None
            grid[tier_codes, prompt_codes] = [answer_text(v) for v in values]
        responses: list[list[str | None]] = [row.tolist() for row in grid]
        validity = None
        if VALID_COLUMN in sub.columns:
            verdicts = pd.to_numeric(sub[VALID_COLUMN], errors="coerce").to_numpy(np.float64)
            if np.isfinite(verdicts).any():
                validity = np.full((n, n_tiers), np.nan)
                validity[prompt_codes, tier_codes] = verdicts

        # Per-prompt attributes come from each prompt's first row.
        first = np.unique(prompt_codes, return_index=True)[1]

        def per_prompt(column: str, fallback: str | None) -> np.ndarray:
            if column not in sub.columns:
                return np.full(n, fallback, dtype=object)
            values = sub[column].to_numpy(dtype=object)[first].copy()
            values[pd.isna(values)] = fallback
            return values

        steps = per_prompt("task", "") if "step" not in sub.columns else per_prompt("step", "")
        return cls(
            tiers=tier_list,
            prompt_ids=np.asarray(unique_ids, dtype=object),
            prompts=[str(p) for p in sub["prompt"].to_numpy(dtype=object)[first]],
            steps=steps,
            splits=per_prompt("split", None),
            scores=scores,
            costs=costs,
            responses=responses,
            output_tokens=out_tokens,
            validity=validity,
            dropped_prompts=dropped,
        )

    def _split_peers(self, n_tiers: int) -> OutcomeTable:
        """The first ``n_tiers`` columns as tiers, the others as peers."""
        return OutcomeTable(
            tiers=self.tiers[:n_tiers],
            prompt_ids=self.prompt_ids,
            prompts=self.prompts,
            steps=self.steps,
            splits=self.splits,
            scores=self.scores[:, :n_tiers],
            costs=self.costs[:, :n_tiers],
            responses=self.responses[:n_tiers],
            output_tokens=self.output_tokens[:, :n_tiers],
            validity=None if self.validity is None else self.validity[:, :n_tiers],
            peers=OpinionOutcomes(
                self.tiers[n_tiers:],
                self.scores[:, n_tiers:],
                self.costs[:, n_tiers:],
                self.responses[n_tiers:],
            ),
            dropped_prompts=self.dropped_prompts,
        )

    def __len__(self) -> int:
        """Number of prompts."""
        return len(self.prompt_ids)

    def subset(self, index: np.ndarray) -> OutcomeTable:
        """Rows selected by an integer index array or a boolean mask of length ``len(self)``."""
        idx = np.asarray(index)
        if idx.dtype == bool:
            if idx.shape != (len(self),):
                raise ValueError(f"boolean mask has shape {idx.shape}, expected ({len(self)},)")
            idx = np.flatnonzero(idx)
        idx = idx.astype(np.int64, copy=False).reshape(-1)
        return OutcomeTable(
            tiers=self.tiers,
            prompt_ids=self.prompt_ids[idx],
            prompts=[self.prompts[i] for i in idx],
            steps=self.steps[idx],
            splits=self.splits[idx],
            scores=self.scores[idx],
            costs=self.costs[idx],
            responses=[[column[i] for i in idx] for column in self.responses],
            output_tokens=self.output_tokens[idx],
            peers=None if self.peers is None else self.peers.subset(idx),
            validity=None if self.validity is None else self.validity[idx],
            dropped_prompts=self.dropped_prompts,
        )

    def _shuffled_positions(self, seed: int) -> np.ndarray:
        """Row positions in sorted-prompt-id order, then shuffled with ``seed``."""
        order = np.argsort(self.prompt_ids.astype(str), kind="stable")
        return order[np.random.default_rng(seed).permutation(len(order))]

    def split_by_prompt(self, test_size: float, seed: int) -> tuple[OutcomeTable, OutcomeTable]:
        """Split into (train, test) by prompt id, deterministically for a given seed.

        ``test_size`` is the fraction of prompts in the test part (0 < test_size < 1); both
        parts keep at least one prompt when the table has two or more.
        """
        if not 0.0 < float(test_size) < 1.0:
            raise ConfigurationError(f"test_size must be in (0, 1), got {test_size!r}")
        n = len(self)
        n_test = round(float(test_size) * n)
        if n >= 2:
            n_test = min(max(n_test, 1), n - 1)
        shuffled = self._shuffled_positions(seed)
        test = np.sort(shuffled[:n_test])
        train = np.sort(shuffled[n_test:])
        return self.subset(train), self.subset(test)

    def source_split(self, name: str) -> OutcomeTable:
        """Rows whose source split (e.g. RouterBench's ``train``/``test``) equals ``name``.

        Raises:
            ConfigurationError: no row has that split.
        """
        mask = np.array([s == name for s in self.splits], dtype=bool)
        if not mask.any():
            available = sorted({str(s) for s in self.splits if s is not None})
            raise ConfigurationError(
                f"no prompts with split {name!r}; splits present: "
                f"{', '.join(available) or 'none (this data has no source split)'}"
            )
        return self.subset(mask)

    def sample(self, n: int, seed: int) -> OutcomeTable:
        """A deterministic random subsample of ``n`` prompts (``self`` if ``n >= len(self)``)."""
        if n < 1:
            raise ConfigurationError(f"sample size must be >= 1, got {n}")
        if n >= len(self):
            return self
        return self.subset(np.sort(self._shuffled_positions(seed)[:n]))

    def digest(self) -> str:
        """A stable sha256 hex digest of the tiers, the prompt ids and the scores."""
        h = hashlib.sha256()
        h.update("\x1f".join(self.tiers).encode("utf-8"))
        h.update(b"\x1e")
        h.update("\x1f".join(str(p) for p in self.prompt_ids).encode("utf-8"))
        h.update(b"\x1e")
        h.update(np.ascontiguousarray(self.scores, dtype="<f8").tobytes())
        return h.hexdigest()

    def labels(self, tier: int, threshold: float = 0.5) -> np.ndarray:
        """1 where tier ``tier`` scored at least ``threshold``, else 0 (int array of length n)."""
        if not -len(self.tiers) <= tier < len(self.tiers):
            raise ConfigurationError(f"tier index {tier} out of range for {len(self.tiers)} tiers")
        return (self.scores[:, tier] >= threshold).astype(np.int64)


def load_table(
    paths: str | Path | Sequence[str | Path],
    tiers: Sequence[str],
    prices: Mapping[str, tuple[float, float]] | None = None,
    peers: Sequence[str] = (),
    incomplete: Literal["error", "drop"] = "drop",
) -> OutcomeTable:
    """Load, validate and pivot outcome data for ``tiers`` (cheapest first) in one call.

    ``peers`` names cheap models whose recorded answers serve as second opinions
    (:attr:`OutcomeTable.peers`).  A prompt without a row for every tier and peer is left out
    (``incomplete="drop"``: sources often lack a few prompts for one model; the count is logged
    and kept in :attr:`OutcomeTable.dropped_prompts`) or refused (``"error"``).
    """
    tier_list = [str(t) for t in tiers]
    if len(tier_list) < 2:
        raise ConfigurationError(
            f"a cascade needs at least 2 tiers, got {len(tier_list)}: {tier_list}"
        )
    peer_list = [str(p) for p in peers]
    overlap = sorted(set(peer_list) & set(tier_list))
    if overlap:
        raise ConfigurationError(f"peer model(s) {', '.join(overlap)} are also tiers")
    frame = load_outcomes(paths, models=tier_list + peer_list, prices=prices, incomplete=incomplete)
    return OutcomeTable.from_long(frame, tier_list, peer_list)
