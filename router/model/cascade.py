"""CascadeModel: the learned part of a router (acceptance models per tier + the policy).

``fit(table, embedder)`` learns from recorded outcomes (an :class:`~router.data.OutcomeTable`):

* for every tier ``t``, a pre-answer model ``P(t accepted | input)``;
* for every tier ``i`` below the top whose answers are recorded, two answer-aware models
  ``P(i accepted | input, i's answer)`` and ``P(i+1 accepted | input, i's answer)``, whose
  difference is the expected gain of escalating;
* per opinion source (``peers``: cheap models asked for a second opinion at the first tier;
  ``samples``: extra samples of the first tier's own model, :mod:`router.opinions`), two more
  answer-aware models that also see how the first answer agrees with the opinions
  (:mod:`router.answers.normalise`), trained on the opinions recorded for the same prompts;
* with ``pre_ensemble`` (the default), a logistic regression and a nearest-neighbour vote on
  the input embeddings beside the pre-answer boosters; the calibration split picks which of
  them to average with the boosters (:mod:`router.model.members`);
* the weight of the pre-answer probabilities in the answer-aware ones (``post_blend_``: 0
  trusts the answer-aware models alone), chosen on the calibration split by the
  one-standard-error rule;
* the :class:`~router.policy.CascadePolicy` certified for a target on a calibration split that
  neither the boosters nor their early stopping saw (Learn-then-Test: a target it cannot
  certify raises :class:`~router.errors.TargetNotCertifiableError`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from router import metrics as M
from router.answers.normalise import NormaliserRegistry
from router.embedders import Embedder
from router.errors import ConfigurationError, NotFittedError, RouterLoadError
from router.features import (
    N_INPUT_EXTRA,
    StepVocabulary,
    answer_extra_features,
    answer_features,
    answer_window,
    input_features,
    input_window,
)
from router.model.acceptance import AcceptanceModel
from router.model.members import PreAnswerMembers, fit_members
from router.model.splits import FitSplits
from router.model.table_features import OpinionInputs, TableFeatures, subset_features
from router.opinions import OpinionSource, check_samples, sample_model_names
from router.opinions.agreement import N_AGREEMENT, AgreementScorer
from router.policy import CascadePolicy, CascadeSignals, Target

if TYPE_CHECKING:
    from router.data import OutcomeTable

#: 2 adds second opinions (peers, answer kinds, opinion models); 3 adds pre-answer members
#: beside the boosters (``neighbours.npz`` holds a neighbour index); 4 adds self-samples as an
#: opinion source; 5 reads a multiple-choice answer with its picked option's text (every
#: answer-aware model trained since). A model is written in the oldest format that holds what
#: it uses, and every older format still loads.
FORMAT_VERSION = 5  # the newest
READABLE_FORMATS = tuple(range(1, FORMAT_VERSION + 1))
#: what each format added to ``router.json``: (top-level keys, keys of "params")
_KEYS_SINCE: dict[int, tuple[tuple[str, ...], tuple[str, ...]]] = {
    2: (("opinion_models", "agreement_threshold"), ("peers", "answer_kinds")),
    3: (("pre_members", "post_blend"), ("pre_ensemble",)),
    4: ((), ("samples", "sample_temperature")),
    5: ((), ("answer_option_text",)),
}
NEIGHBOURS_FILE = "neighbours.npz"
#: Candidate weights of the pre-answer probabilities in the answer-aware ones.
POST_BLEND_GRID = (0.0, 0.25, 0.5, 0.75)


class CascadeModel:
    """Acceptance models for an ordered tier list (cheapest first) and the fitted policy.

    With ``answer_option_text`` (the default) the answer embedding reads a multiple-choice
    answer followed by the text of the option it picks, found in the step input's last option
    list; routers saved by versions before it (formats 1-4) read the bare answer.
    """

    def __init__(
        self,
        tiers: Sequence[str],
        target: Target | None = None,
        answer_aware: bool = True,
        val_fraction: float = 0.15,
        cal_fraction: float = 0.25,
        skip_tolerance: float | None = 0.1,
        min_step_samples: int = 200,
        acceptance_params: dict[str, Any] | None = None,
        input_window_chars: int = 480,
        seed: int = 0,
        peers: Mapping[int, str | Sequence[str]] | None = None,
        answer_kinds: Mapping[str, Any] | None = None,
        pre_ensemble: bool = True,
        samples: int = 0,
        sample_temperature: float = 0.7,
        answer_option_text: bool = True,
    ) -> None:
        if len(tiers) < 2 or len(set(tiers)) != len(tiers):
            raise ConfigurationError("a cascade needs two or more distinct tiers, cheapest first")
        self.peers = _check_peers(peers, tuple(tiers), answer_aware)
        check_samples(samples, sample_temperature)
        if samples and not answer_aware:
            raise ConfigurationError(
                "second opinions need an answer-aware model (answer_aware=True)"
            )
        self.samples = samples
        self.sample_temperature = sample_temperature
        self.answer_kinds = dict(answer_kinds or {})
        NormaliserRegistry(self.answer_kinds)  # fail early on an unknown kind
        self.tiers = tuple(tiers)
        self.target = target or Target(quality_ratio=0.95)
        self.answer_aware = answer_aware
        self.val_fraction = val_fraction
        self.cal_fraction = cal_fraction
        self.skip_tolerance = skip_tolerance
        self.min_step_samples = min_step_samples
        self.acceptance_params = dict(acceptance_params or {})
        self.input_window_chars = input_window_chars
        self.seed = seed
        self.pre_ensemble = pre_ensemble
        self.answer_option_text = answer_option_text

    @property
    def peer_models(self) -> tuple[str, ...]:
        """The peers asked for second opinions at the first tier (empty: none)."""
        return tuple(self.peers.get(0, ()))

    @property
    def opinion_sources(self) -> tuple[OpinionSource, ...]:
        """The sources of second opinions, in the policy's order: peers, then self-samples."""
        out = []
        if self.peer_models:
            out.append(OpinionSource("peers", self.peer_models))
        if self.samples:
            names = sample_model_names(self.tiers[0], self.samples)
            out.append(OpinionSource("samples", names, float(self.sample_temperature)))
        return tuple(out)

    def opinion_source(self, name: str) -> OpinionSource:
        """The source called ``name`` ("peers" or "samples")."""
        for source in self.opinion_sources:
            if source.name == name:
                return source
        have = ", ".join(s.name for s in self.opinion_sources) or "none"
        raise ConfigurationError(f"this router has no opinion source {name!r} (it has: {have})")

    # ------------------------------------------------------------------ features
    def embed_inputs(
        self, embedder: Embedder, texts: Sequence[str], progress: bool = False
    ) -> np.ndarray:
        """Embeddings of step inputs, each read through the model's input window."""
        windows = [input_window(t, self.input_window_chars) for t in texts]
        return embedder.encode(windows, progress=progress)

    def answer_windows(self, answers: Sequence[str | None], inputs: Sequence[str]) -> list[str]:
        """What the answer embedding reads of each answer (with ``answer_option_text``, a
        multiple-choice answer's picked option, looked up in its step input, too)."""
        if not self.answer_option_text:
            return [answer_window(a) for a in answers]
        return [answer_window(a, t) for a, t in zip(answers, inputs, strict=True)]

    def featurize(
        self,
        table: OutcomeTable,
        embedder: Embedder,
        progress: bool = False,
        answers: bool = True,
        opinions: bool = True,
    ) -> TableFeatures:
        """Input features for every prompt and answer features for tiers with recorded answers
        (and, with ``opinions``, the opinion inputs of every source: their recorded answers
        must be in the table)."""
        vocab = getattr(self, "steps_", None) or StepVocabulary.fit(table.steps)
        emb = self.embed_inputs(embedder, table.prompts, progress=progress)
        inputs = input_features(emb, table.prompts, vocab.encode(table.steps))
        per_tier: dict[int, np.ndarray] = {}
        if answers and self.answer_aware:
            for i in range(len(self.tiers) - 1):
                responses = table.responses[i]
                if all(r is None for r in responses):
                    continue
                windows = self.answer_windows(responses, table.prompts)
                a_emb = embedder.encode(windows, progress=progress)
                per_tier[i] = answer_features(inputs, a_emb, answer_extra_features(responses))
        by_source: dict[str, OpinionInputs] = {}
        if answers and opinions and self.answer_aware:
            for source in self.opinion_sources:
                by_source[source.name] = self._opinion_inputs(table, source, embedder, progress)
        return TableFeatures(inputs, per_tier, by_source)

    def _opinion_inputs(
        self, table: OutcomeTable, source: OpinionSource, embedder: Embedder, progress: bool
    ) -> OpinionInputs:
        peers = table.peers
        missing = [p for p in source.models if peers is None or p not in peers.models]
        if missing or peers is None:
            what = "samples" if source.is_samples else "second opinions"
            raise ConfigurationError(
                f"this model reads {what} from {', '.join(missing)}: load the data with their "
                f"recorded answers (load_table(..., peers=[...]))"
            )
        columns = [peers.responses[peers.models.index(p)] for p in source.models]
        first = list(table.responses[0])
        steps = [str(s) for s in table.steps]
        opinions = [[c[j] for c in columns] for j in range(len(first))]
        scorer = self._scorer()
        rows = [
            j
            for j in range(len(first))
            if scorer.needs_embeddings(steps[j], [first[j], *opinions[j]])
        ]
        # the first answer read as the answer-aware model reads it (as at routing time)
        firsts = self.answer_windows([first[j] for j in rows], [table.prompts[j] for j in rows])
        texts = [
            w for k, j in enumerate(rows) for w in [firsts[k], *map(answer_window, opinions[j])]
        ]
        embeddings: dict[int, np.ndarray] = {}
        if texts:
            emb = embedder.encode(texts, progress=progress)
            width = 1 + source.size
            embeddings = {j: emb[k * width : (k + 1) * width] for k, j in enumerate(rows)}
        return OpinionInputs(steps, first, opinions, embeddings)

    def _scorer(self) -> AgreementScorer:
        scorer = getattr(self, "scorer_", None)
        return scorer or AgreementScorer(NormaliserRegistry(self.answer_kinds))

    def opinion_matrix(self, answer_matrix: np.ndarray, inputs: OpinionInputs) -> np.ndarray:
        """Opinion-aware features: the first tier's answer features, then the agreement ones."""
        scorer = self._scorer()
        agreement = np.vstack(
            [
                scorer.features(
                    inputs.steps[j], inputs.first[j], inputs.opinions[j], inputs.embeddings.get(j)
                )
                for j in range(len(inputs.first))
            ]
        )
        return np.hstack([answer_matrix, agreement])

    # ------------------------------------------------------------------ fitting
    def _new_model(self) -> AcceptanceModel:
        return AcceptanceModel(seed=self.seed, **self.acceptance_params)

    def fit(
        self,
        table: OutcomeTable,
        embedder: Embedder,
        progress: bool = False,
        features: TableFeatures | None = None,
    ) -> CascadeModel:
        """Learn every acceptance model and fit the policy for ``self.target``."""
        if tuple(table.tiers) != self.tiers:
            raise ConfigurationError(f"table tiers {table.tiers} differ from {self.tiers}")
        if len(table) < 50:
            raise ConfigurationError(f"too few prompts to train a router: {len(table)} (< 50)")
        self.embedder_ref_ = embedder.reference()
        self.embedder_name_ = embedder.name
        self.steps_ = StepVocabulary.fit(table.steps)
        feats = features or self.featurize(table, embedder, progress=progress)
        splits = FitSplits.make(table.prompt_ids, self.val_fraction, self.cal_fraction, self.seed)
        self.splits_ = splits
        labels = [table.labels(t) for t in range(len(self.tiers))]
        from tqdm.auto import tqdm

        opinion_X: dict[str, np.ndarray] = {}
        if feats.opinions and 0 in feats.answers:
            first_source = next(iter(feats.opinions.values()))
            self.scorer_ = self._fit_scorer(first_source, labels[0], splits.fit)
            opinion_X = {
                name: self.opinion_matrix(feats.answers[0], inputs)
                for name, inputs in feats.opinions.items()
            }
        n_models = len(self.tiers) + 2 * len(feats.answers) + 2 * len(opinion_X)
        n_models += int(self.pre_ensemble)
        with tqdm(total=n_models, desc="acceptance models", disable=not progress) as bar:

            def fit_one(X: np.ndarray, y: np.ndarray) -> AcceptanceModel:
                model = self._fit_one(X, y, splits)
                bar.update(1)
                return model

            self.pre_models_ = [fit_one(feats.inputs, labels[t]) for t in range(len(self.tiers))]
            self.pre_members_ = PreAnswerMembers()
            self.pre_member_scores_: dict[str, float] = {}
            if self.pre_ensemble:
                self.pre_members_, self.pre_member_scores_ = self._fit_members(
                    feats.inputs, labels, table, splits
                )
                bar.update(1)
            self.post_models_: dict[int, tuple[AcceptanceModel, AcceptanceModel]] = {}
            for i, X in feats.answers.items():
                self.post_models_[i] = (fit_one(X, labels[i]), fit_one(X, labels[i + 1]))
            self.opinion_models_: dict[str, tuple[AcceptanceModel, AcceptanceModel]] = {
                name: (fit_one(X, labels[0]), fit_one(X, labels[1]))
                for name, X in opinion_X.items()
            }
        mean_cost = table.costs[splits.fit].mean(axis=0)
        self.tier_weights_ = np.array(
            [
                mean_cost[i + 1] / mean_cost[-1] if mean_cost[-1] > 0 else 1.0
                for i in range(len(self.tiers) - 1)
            ]
        )
        cal = table.subset(splits.cal)
        self.post_blend_ = 0.0
        self.post_blend_scores_: dict[str, float] = {}
        cal_signals = self.signals_from_features(subset_features(feats, splits.cal))
        if self.post_models_:
            self.post_blend_, self.post_blend_scores_ = self._choose_post_blend(cal_signals, cal)
            cal_signals = self.signals_from_features(subset_features(feats, splits.cal))
        self.policy_ = CascadePolicy(
            tiers=self.tiers,
            tier_weights=self.tier_weights_,
            skip_tolerance=self.skip_tolerance,
            min_step_samples=self.min_step_samples,
            target=self.target,
            seed=self.seed,
        ).fit(cal_signals, cal.scores, cal.costs, cal.steps, self.opinion_costs(cal))
        self.mean_output_tokens_ = table.output_tokens[splits.fit].mean(axis=0).tolist()
        return self

    def _fit_members(
        self,
        X_inputs: np.ndarray,
        labels: list[np.ndarray],
        table: OutcomeTable,
        splits: FitSplits,
    ) -> tuple[PreAnswerMembers, dict[str, float]]:
        """Pre-answer members fitted on the fit and validation rows, chosen on the calibration
        rows by the APGR of ranking escalation (first tier → top tier) by their gain."""
        rows = np.concatenate([splits.fit, splits.val])
        emb = X_inputs[:, N_INPUT_EXTRA:]
        cal = splits.cal
        s, f = table.scores[cal, 0], table.scores[cal, -1]
        cs, cf = table.costs[cal, 0], table.costs[cal, -1]

        def calibration_apgr(p: np.ndarray) -> float:
            curve = M.deferral_curve(p[:, -1] - p[:, 0], s, f, cs, cf, cascade=False)
            return M.apgr(curve, float(s.mean()), float(f.mean()))

        cal_lgbm = np.column_stack([m.predict_accept(X_inputs[cal]) for m in self.pre_models_])
        Y = np.column_stack([y[rows] for y in labels])
        return fit_members(emb[rows], Y, emb[cal], cal_lgbm, calibration_apgr, seed=self.seed)

    def _choose_post_blend(
        self, signals: CascadeSignals, cal: OutcomeTable, resamples: int = 100
    ) -> tuple[float, dict[str, float]]:
        """The weight in :data:`POST_BLEND_GRID` for the answer-aware probabilities, chosen on
        the calibration rows by the one-standard-error rule: the most shrinkage whose APGR (of
        ranking escalation by the blended gain, averaged over the tiers with answer models) is
        within one bootstrap standard error of the best weight's.

        Where the answers say little (free-form 5-shot tasks, a few hundred prompts), the
        answer-aware boosters are noisier than the pre-answer estimate, and a calibration split
        of a few hundred prompts cannot tell close weights apart: among those it cannot, the
        rule takes the one that leans most on the pre-answer estimate."""
        gains = {
            w: {
                i: _blend(signals.post_next[:, i], signals.pre[:, i + 1], w)
                - _blend(signals.post_self[:, i], signals.pre[:, i], w)
                for i in self.post_models_
            }
            for w in POST_BLEND_GRID
        }

        def score(w: float, rows: np.ndarray | slice) -> float:
            values = []
            for i, gain in gains[w].items():
                s, f = cal.scores[rows, i], cal.scores[rows, i + 1]
                curve = M.deferral_curve(
                    gain[rows], s, f, cal.costs[rows, i], cal.costs[rows, i + 1], cascade=True
                )
                values.append(M.apgr(curve, float(s.mean()), float(f.mean())))
            return float(np.mean(values))

        full = {w: score(w, slice(None)) for w in POST_BLEND_GRID}
        best = max(POST_BLEND_GRID, key=lambda w: (full[w], -w))
        rng = np.random.default_rng(self.seed)
        draws = [rng.integers(0, len(cal), len(cal)) for _ in range(resamples)]
        chosen = best
        for w in sorted(POST_BLEND_GRID, reverse=True):  # most shrinkage first
            if w <= best:
                break
            diffs = [score(best, rows) - score(w, rows) for rows in draws]
            if full[best] - full[w] <= float(np.std(diffs, ddof=1)):
                chosen = w
                break
        return chosen, {f"{w:g}": v for w, v in full.items()} | {"best": best}

    def _fit_scorer(
        self, inputs: OpinionInputs, first_correct: np.ndarray, fit_rows: np.ndarray
    ) -> AgreementScorer:
        """The agreement scorer, its free-text threshold learned on the fit split."""
        scorer = AgreementScorer(NormaliserRegistry(self.answer_kinds))
        rows = [int(j) for j in fit_rows if int(j) in inputs.embeddings]
        if rows:
            first = np.vstack([inputs.embeddings[j][0] for j in rows])
            other = np.vstack([inputs.embeddings[j][1] for j in rows])
            scorer.fit(first, other, first_correct[rows])
        return scorer

    def opinion_costs(self, table: OutcomeTable) -> np.ndarray | None:
        """Recorded cost of this model's second opinions per prompt and source, (n, S) in
        :attr:`opinion_sources` order (None: no opinion sources)."""
        sources = self.opinion_sources
        if not sources or table.peers is None:
            return None
        columns = []
        for source in sources:
            cols = [table.peers.models.index(p) for p in source.models]
            columns.append(np.asarray(table.peers.costs[:, cols].sum(axis=1), dtype=np.float64))
        return np.column_stack(columns)

    def _fit_one(self, X: np.ndarray, y: np.ndarray, s: FitSplits) -> AcceptanceModel:
        return self._new_model().fit(
            X[s.fit], y[s.fit], eval_set=(X[s.val], y[s.val]), calibration_set=(X[s.cal], y[s.cal])
        )

    # ------------------------------------------------------------------ prediction
    def _check_fitted(self) -> None:
        if not hasattr(self, "policy_"):
            raise NotFittedError("CascadeModel is not fitted: call fit() or load() first")

    def signals_from_features(self, feats: TableFeatures) -> CascadeSignals:
        """Probabilities of every model for every row (NaN post columns where no answer model)."""
        n = len(feats.inputs)
        pre = self._pre(feats.inputs)
        post_self = np.full((n, len(self.tiers) - 1), np.nan)
        post_next = np.full((n, len(self.tiers) - 1), np.nan)
        w = getattr(self, "post_blend_", 0.0)
        for i, (m_self, m_next) in self.post_models_.items():
            if i in feats.answers:
                post_self[:, i] = _blend(m_self.predict_accept(feats.answers[i]), pre[:, i], w)
                post_next[:, i] = _blend(m_next.predict_accept(feats.answers[i]), pre[:, i + 1], w)
        op_self = op_next = None
        opinion_models = getattr(self, "opinion_models_", {})
        names = [s.name for s in self.opinion_sources]
        if (
            names
            and all(n in opinion_models and n in feats.opinions for n in names)
            and 0 in feats.answers
        ):
            selfs, nexts = [], []
            for name in names:
                X = self.opinion_matrix(feats.answers[0], feats.opinions[name])
                selfs.append(opinion_models[name][0].predict_accept(X))
                nexts.append(opinion_models[name][1].predict_accept(X))
            op_self, op_next = np.column_stack(selfs), np.column_stack(nexts)
        return CascadeSignals(pre, post_self, post_next, op_self, op_next)

    def signals(
        self, table: OutcomeTable, embedder: Embedder, progress: bool = False
    ) -> CascadeSignals:
        """Signals for recorded outcomes, the recorded answers standing in for live ones."""
        self._check_fitted()
        return self.signals_from_features(self.featurize(table, embedder, progress=progress))

    def input_matrix(
        self, texts: Sequence[str], steps: Sequence[str], embeddings: np.ndarray
    ) -> np.ndarray:
        self._check_fitted()
        return input_features(embeddings, texts, self.steps_.encode(steps))

    def pre_probabilities(self, X_inputs: np.ndarray) -> np.ndarray:
        """P(tier t accepted | input) for every tier, shape (n, T)."""
        self._check_fitted()
        return self._pre(X_inputs)

    def _pre(self, X_inputs: np.ndarray) -> np.ndarray:
        lgbm = np.column_stack([m.predict_accept(X_inputs) for m in self.pre_models_])
        members: PreAnswerMembers = getattr(self, "pre_members_", None) or PreAnswerMembers()
        return members.average(lgbm, X_inputs[:, N_INPUT_EXTRA:])

    def post_probabilities(
        self,
        tier: int,
        X_inputs: np.ndarray,
        answer_embeddings: np.ndarray,
        answers: Sequence[str | None],
        logprobs: Sequence[Sequence[float] | None] | None = None,
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """P(tier accepted | input, answer) and P(next tier accepted | ...); None if no model."""
        self._check_fitted()
        if tier not in self.post_models_:
            return None
        X = answer_features(X_inputs, answer_embeddings, answer_extra_features(answers, logprobs))
        m_self, m_next = self.post_models_[tier]
        p_self, p_next = m_self.predict_accept(X), m_next.predict_accept(X)
        w = getattr(self, "post_blend_", 0.0)
        if w > 0:
            pre = self._pre(X_inputs)
            p_self, p_next = _blend(p_self, pre[:, tier], w), _blend(p_next, pre[:, tier + 1], w)
        return p_self, p_next

    def opinion_probabilities(
        self,
        X_inputs: np.ndarray,
        answer_embeddings: np.ndarray,
        answers: Sequence[str | None],
        opinions: Sequence[Sequence[str | None]],
        steps: Sequence[str],
        embedder: Embedder,
        logprobs: Sequence[Sequence[float] | None] | None = None,
        source: str | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """P(first tier accepted | input, answer, opinions), P(next tier accepted | …) and the
        share of opinions agreeing with the answer.

        ``opinions[j]`` are the opinions of ``source`` (by default the first source) on row
        ``j``: the peers' answers in :attr:`peer_models` order, or the extra samples.
        None when the model has no opinion models.
        """
        self._check_fitted()
        sources = self.opinion_sources
        if not sources or not getattr(self, "opinion_models_", {}):
            return None
        chosen = self.opinion_source(source) if source is not None else sources[0]
        if len(opinions) != len(answers) or any(len(o) != chosen.size for o in opinions):
            what = (
                f"{chosen.size} samples"
                if chosen.is_samples
                else f"one answer per peer ({', '.join(chosen.models)})"
            )
            raise ConfigurationError(f"give {what} for every request")
        scorer = self._scorer()
        embeddings: dict[int, np.ndarray] = {}
        for j, (first, others) in enumerate(zip(answers, opinions, strict=True)):
            if scorer.needs_embeddings(steps[j], [first, *others]):
                peer_emb = embedder.encode([answer_window(o) for o in others])
                embeddings[j] = np.vstack([answer_embeddings[j : j + 1], peer_emb])
        inputs = OpinionInputs(
            [str(s) for s in steps], list(answers), [list(o) for o in opinions], embeddings
        )
        X = answer_features(X_inputs, answer_embeddings, answer_extra_features(answers, logprobs))
        X = self.opinion_matrix(X, inputs)
        m_self, m_next = self.opinion_models_[chosen.name]
        return m_self.predict_accept(X), m_next.predict_accept(X), X[:, -N_AGREEMENT + 1]

    # ------------------------------------------------------------------ persistence
    def save(self, directory: str | Path) -> Path:
        """Write the model as JSON + LightGBM text + an npz of calibration outcomes (no pickle)."""
        self._check_fitted()
        path = Path(directory)
        path.mkdir(parents=True, exist_ok=True)
        meta = {
            # the oldest format that holds what this model uses (older readers read it)
            "format_version": self._format_version(),
            "tiers": list(self.tiers),
            "params": {
                "target": str(self.target),
                "answer_aware": self.answer_aware,
                "val_fraction": self.val_fraction,
                "cal_fraction": self.cal_fraction,
                "skip_tolerance": self.skip_tolerance,
                "min_step_samples": self.min_step_samples,
                "acceptance_params": self.acceptance_params,
                "input_window_chars": self.input_window_chars,
                "seed": self.seed,
                "peers": {str(i): list(p) for i, p in self.peers.items()},
                "answer_kinds": NormaliserRegistry(self.answer_kinds).to_dict()["steps"],
                "pre_ensemble": self.pre_ensemble,
                "samples": self.samples,
                "sample_temperature": self.sample_temperature,
                "answer_option_text": self.answer_option_text,
            },
            "embedder": self.embedder_ref_,
            "embedder_name": self.embedder_name_,
            "steps": list(self.steps_.steps),
            "tier_weights": self.tier_weights_.tolist(),
            "mean_output_tokens": self.mean_output_tokens_,
            "policy": self.policy_.to_dict(),
            "pre_models": [m.to_dict() for m in self.pre_models_],
            "post_models": {
                str(i): [a.to_dict(), b.to_dict()] for i, (a, b) in self.post_models_.items()
            },
            "opinion_models": {
                # formats 2-3 key the peers' models by tier ("0"): kept for older readers
                ("0" if name == "peers" else name): [a.to_dict(), b.to_dict()]
                for name, (a, b) in getattr(self, "opinion_models_", {}).items()
            },
            "agreement_threshold": self._scorer().threshold,
            "pre_members": self.pre_members_.to_dict(),
            "post_blend": self.post_blend_,
        }
        for since, (top, params) in _KEYS_SINCE.items():
            if since > meta["format_version"]:
                for key in top:
                    meta.pop(key)
                for key in params:
                    meta["params"].pop(key)
        (path / NEIGHBOURS_FILE).unlink(missing_ok=True)
        if self.pre_members_.arrays():
            np.savez_compressed(path / NEIGHBOURS_FILE, **self.pre_members_.arrays())  # type: ignore[arg-type]
        (path / "router.json").write_text(json.dumps(meta))
        np.savez_compressed(path / "calibration.npz", **self.policy_.calibration_arrays())  # type: ignore[arg-type]
        return path

    def _format_version(self) -> int:
        """The oldest format that holds what this model uses."""
        if self.answer_aware and self.answer_option_text:
            return 5  # answers read with their picked option
        if self.samples:
            return 4
        if self.pre_members_.extra or self.post_blend_ != 0.0:
            return 3
        if self.peers or self.answer_kinds:
            return 2
        return 1

    @classmethod
    def load(cls, directory: str | Path, num_threads: int = 1) -> CascadeModel:
        """Read a model written by :meth:`save`."""
        path = Path(directory)
        meta_path = path / "router.json"
        if not meta_path.exists():
            raise RouterLoadError(f"no saved router at {path} (router.json missing)")
        try:
            meta = json.loads(meta_path.read_text())
            if meta.get("format_version") not in READABLE_FORMATS:
                raise RouterLoadError(
                    f"router at {path} has format {meta.get('format_version')}; this version "
                    f"reads formats {', '.join(map(str, READABLE_FORMATS))}: retrain it or "
                    "upgrade cascade-router"
                )
            params = dict(meta["params"])
            params["target"] = Target.parse(params["target"])
            params["peers"] = {int(i): p for i, p in params.get("peers", {}).items()}
            # formats 1-4 read a bare answer (no picked option)
            params.setdefault("answer_option_text", False)
            model = cls(tiers=meta["tiers"], **params)
            model.embedder_ref_ = meta["embedder"]
            model.embedder_name_ = meta["embedder_name"]
            model.steps_ = StepVocabulary(tuple(meta["steps"]))
            model.tier_weights_ = np.asarray(meta["tier_weights"], dtype=np.float64)
            model.mean_output_tokens_ = list(meta["mean_output_tokens"])
            model.pre_models_ = [
                AcceptanceModel.from_dict(d, num_threads) for d in meta["pre_models"]
            ]
            model.post_models_ = {
                int(i): (
                    AcceptanceModel.from_dict(a, num_threads),
                    AcceptanceModel.from_dict(b, num_threads),
                )
                for i, (a, b) in meta["post_models"].items()
            }
            model.opinion_models_ = {
                ("peers" if key == "0" else key): (
                    AcceptanceModel.from_dict(a, num_threads),
                    AcceptanceModel.from_dict(b, num_threads),
                )
                for key, (a, b) in meta.get("opinion_models", {}).items()
            }
            model.scorer_ = AgreementScorer(
                NormaliserRegistry(model.answer_kinds),
                float(meta.get("agreement_threshold", AgreementScorer.threshold)),
            )
            with np.load(path / "calibration.npz", allow_pickle=False) as arrays:
                model.policy_ = CascadePolicy.from_dict(meta["policy"], dict(arrays))
            model.pre_members_ = PreAnswerMembers()
            model.pre_member_scores_ = {}
            model.post_blend_ = float(meta.get("post_blend", 0.0))
            model.post_blend_scores_ = {}
            if not 0.0 <= model.post_blend_ <= 1.0:
                raise ValueError(f"post_blend {model.post_blend_} is outside [0, 1]")
            if "pre_members" in meta:
                neighbours = None
                if (path / NEIGHBOURS_FILE).exists():
                    with np.load(path / NEIGHBOURS_FILE, allow_pickle=False) as arrays:
                        neighbours = dict(arrays)
                model.pre_members_ = PreAnswerMembers.from_dict(meta["pre_members"], neighbours)
        except RouterLoadError:
            raise
        except (KeyError, ValueError, OSError, TypeError) as exc:
            raise RouterLoadError(f"router at {path} is damaged or incompatible: {exc}") from exc
        return model


def _blend(post: np.ndarray, pre: np.ndarray, weight: float) -> np.ndarray:
    """``(1 - weight) * post + weight * pre``: the answer-aware probability, shrunk towards the
    pre-answer one."""
    return post if weight == 0.0 else (1.0 - weight) * post + weight * pre


def _check_peers(
    peers: Mapping[int, str | Sequence[str]] | None, tiers: tuple[str, ...], answer_aware: bool
) -> dict[int, tuple[str, ...]]:
    """``{0: "phi-3-mini"}`` or ``{0: ["a", "b"]}`` as ``{0: ("a", "b")}``, checked."""
    out: dict[int, tuple[str, ...]] = {}
    for tier, names in (peers or {}).items():
        if int(tier) != 0:
            raise ConfigurationError(
                f"second opinions are asked at the first tier only (peers={{0: ...}}), not {tier}"
            )
        listed = (names,) if isinstance(names, str) else tuple(str(n) for n in names)
        if not listed or len(set(listed)) != len(listed):
            raise ConfigurationError("peers must name one or more distinct models")
        clash = sorted(set(listed) & set(tiers))
        if clash:
            raise ConfigurationError(f"peer(s) {', '.join(clash)} are tiers of this cascade")
        out[0] = listed
    if out and not answer_aware:
        raise ConfigurationError("second opinions need an answer-aware model (answer_aware=True)")
    return out
