"""CascadeModel: the learned part of a router (acceptance models per tier + the policy).

``fit(table, embedder)`` learns from recorded outcomes (an :class:`~router.data.OutcomeTable`):

* for every tier ``t``, a pre-answer model ``P(t accepted | input)``;
* for every tier ``i`` below the top whose answers are recorded (and not all empty), two
  answer-aware models ``P(i accepted | input, i's answer)`` and ``P(i+1 accepted | input, i's
  answer)``, whose difference is the expected gain of escalating;
* per opinion source (``peers``: cheap models asked for a second opinion at the first tier;
  ``samples``: extra samples of the first tier's own model, :mod:`router.opinions`), two more
  answer-aware models that also see how the first answer agrees with the opinions
  (:mod:`router.answers.normalise`), trained on the opinions recorded for the same prompts;
* with ``pre_ensemble`` (the default), a logistic regression and a nearest-neighbour vote on
  the input embeddings beside the pre-answer boosters; which of them to average (kNN alone
  included), kNN's k and the regression's C are chosen out of fold (:mod:`router.model.members`);
* the weight of the pre-answer probabilities in the answer-aware ones (``post_blend_``: 0
  trusts the answer-aware models alone, 1 ignores them), chosen out of fold;
* the :class:`~router.policy.CascadePolicy` certified for a target on the out-of-fold outcomes
  of every training row (``oof_``; Learn-then-Test: a target it cannot certify raises
  :class:`~router.errors.TargetNotCertifiableError`).

Every acceptance model is cross-fitted (:meth:`AcceptanceModel.fit_folds`): ``folds`` boosters,
each early-stopped inside its fold's training part, score the rows they did not see; each
fold's scores are calibrated by a map fitted on the other folds' scores (a map fitted on a row's
own score would carry its label back); the served calibrator is fitted on every out-of-fold
score and the final booster is refit on every row.
With fewer than ``capacity_cv_below`` training prompts each booster's capacity is chosen by the
same cross-validation (:data:`~router.model.crossfit.CAPACITY_GRID`).

The estimator follows scikit-learn's contract: ``__init__`` stores its arguments as given,
``fit`` validates them and sets the learned state (names ending in ``_``), ``get_params`` /
``set_params`` / ``sklearn.base.clone`` work.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from router.answers.normalise import NormaliserRegistry
from router.embedders import Embedder
from router.errors import ConfigurationError, NotFittedError
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
from router.model.crossfit import (
    CAPACITY_GRID,
    CrossFit,
    choose_post_blend,
    cross_fit,
    router_score,
)
from router.model.folds import Folds
from router.model.members import PreAnswerMembers, cross_fit_members
from router.model.oof import OutOfFold
from router.model.params import EstimatorParams
from router.model.table_features import OpinionInputs, TableFeatures
from router.opinions import OpinionSource, check_samples, sample_model_names
from router.opinions.agreement import N_AGREEMENT, AgreementScorer
from router.policy import CascadePolicy, CascadeSignals, Target

if TYPE_CHECKING:
    from router.data import OutcomeTable

#: Models are cross-fitted with at least this many training prompts.
MIN_TRAINING_PROMPTS = 50


class CascadeModel(EstimatorParams):
    """Acceptance models for an ordered tier list (cheapest first) and the fitted policy.

    Parameters (stored as given; checked by :meth:`fit`):

    * ``tiers``: model names, cheapest first; ``target``: a :class:`Target` or its text
      (``"quality=0.95"``; None: 95% of the top tier's quality);
    * ``folds``: K of the K-fold cross-fitting; ``capacity_cv_below``: below this many training
      prompts the boosters' capacity is chosen by the same cross-validation;
    * ``answer_option_text`` (the default): the answer embedding reads a multiple-choice answer
      followed by the text of the option it picks, found in the step input's last option list;
      routers saved by versions before it (formats 1-4) read the bare answer.

    Learned state: ``tiers_``, ``target_``, ``steps_``, ``pre_models_``, ``post_models_``,
    ``opinion_models_``, ``scorer_``, ``pre_members_``, ``post_blend_``, ``tier_weights_``,
    ``mean_output_tokens_``, ``policy_``, ``cv_results_`` (what each choice scored out of
    fold), ``answer_validity_``, ``embedder_ref_``, ``embedder_name_`` and, after ``fit`` only
    (not saved), ``oof_``: the out-of-fold outcomes the policy was fitted on (:class:`OutOfFold`).
    """

    # learned state (set by fit or load)
    tiers_: tuple[str, ...]
    target_: Target
    steps_: StepVocabulary
    embedder_ref_: dict[str, Any]
    embedder_name_: str
    pre_models_: list[AcceptanceModel]
    post_models_: dict[int, tuple[AcceptanceModel, AcceptanceModel]]
    opinion_models_: dict[str, tuple[AcceptanceModel, AcceptanceModel]]
    scorer_: AgreementScorer
    pre_members_: PreAnswerMembers
    post_blend_: float
    tier_weights_: np.ndarray
    mean_output_tokens_: list[float]
    policy_: CascadePolicy
    cv_results_: dict[str, Any]
    oof_: OutOfFold
    #: whether the answer-aware models read the validator's verdict (trained on data recording it)
    answer_validity_: bool

    def __init__(
        self,
        tiers: Sequence[str],
        target: Target | str | None = None,
        answer_aware: bool = True,
        folds: int = 5,
        skip_tolerance: float | None = 0.1,
        min_step_samples: int = 200,
        acceptance_params: Mapping[str, Any] | None = None,
        input_window_chars: int = 480,
        seed: int = 0,
        peers: Mapping[int, str | Sequence[str]] | None = None,
        answer_kinds: Mapping[str, Any] | None = None,
        pre_ensemble: bool = True,
        samples: int = 0,
        sample_temperature: float = 0.7,
        answer_option_text: bool = True,
        capacity_cv_below: int = 5000,
    ) -> None:
        self.tiers = tiers
        self.target = target
        self.answer_aware = answer_aware
        self.folds = folds
        self.skip_tolerance = skip_tolerance
        self.min_step_samples = min_step_samples
        self.acceptance_params = acceptance_params
        self.input_window_chars = input_window_chars
        self.seed = seed
        self.peers = peers
        self.answer_kinds = answer_kinds
        self.pre_ensemble = pre_ensemble
        self.samples = samples
        self.sample_temperature = sample_temperature
        self.answer_option_text = answer_option_text
        self.capacity_cv_below = capacity_cv_below

    # ------------------------------------------------------------------ parameters
    def validate_params(self) -> None:
        """Check the parameters and set what ``fit`` derives from them."""
        tiers = tuple(str(t) for t in self.tiers)
        if len(tiers) < 2 or len(set(tiers)) != len(tiers):
            raise ConfigurationError("a cascade needs two or more distinct tiers, cheapest first")
        check_samples(self.samples, self.sample_temperature)
        if self.samples and not self.answer_aware:
            raise ConfigurationError(
                "second opinions need an answer-aware model (answer_aware=True)"
            )
        _check_peers(self.peers, tiers, self.answer_aware)
        NormaliserRegistry(dict(self.answer_kinds or {}))  # an unknown kind fails here
        if not isinstance(self.folds, int) or self.folds < 2:
            raise ConfigurationError(f"folds must be an integer >= 2, got {self.folds!r}")
        if self.input_window_chars < 0:
            raise ConfigurationError("input_window_chars must be >= 0")
        self.tiers_ = tiers
        self.target_ = _parse_target(self.target)

    @property
    def peer_models(self) -> tuple[str, ...]:
        """The peers asked for second opinions at the first tier (empty: none)."""
        peers = _check_peers(self.peers, tuple(self.tiers), self.answer_aware)
        return tuple(peers.get(0, ()))

    @property
    def opinion_sources(self) -> tuple[OpinionSource, ...]:
        """The sources of second opinions, in the policy's order: peers, then self-samples."""
        out = []
        if self.peer_models:
            out.append(OpinionSource("peers", self.peer_models))
        if self.samples:
            names = sample_model_names(str(self.tiers[0]), self.samples)
            out.append(OpinionSource("samples", names, float(self.sample_temperature)))
        return tuple(out)

    def opinion_source(self, name: str) -> OpinionSource:
        """The source called ``name`` ("peers" or "samples")."""
        for source in self.opinion_sources:
            if source.name == name:
                return source
        have = ", ".join(s.name for s in self.opinion_sources) or "none"
        raise ConfigurationError(f"this router has no opinion source {name!r} (it has: {have})")

    def normaliser_registry(self) -> NormaliserRegistry:
        return NormaliserRegistry(dict(self.answer_kinds or {}))

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
        must be in the table).

        The step column is encoded with the fitted step vocabulary; before ``fit`` it is left
        unknown (NaN) and ``fit`` encodes it (:meth:`TableFeatures.encoded`): featurizing never
        fits anything.
        """
        steps = np.asarray(table.steps, dtype=object).astype(str)
        emb = self.embed_inputs(embedder, table.prompts, progress=progress)
        codes = self.steps_.encode(steps) if self._fitted() else np.full(len(steps), np.nan)
        inputs = input_features(emb, table.prompts, codes)
        per_tier: dict[int, np.ndarray] = {}
        if answers and self.answer_aware:
            # a fitted model reads what it was trained with; before fit, what the data records
            reads_validity = self.answer_validity_ if self._fitted() else records_validity(table)
            for i in range(len(self.tiers) - 1):
                responses = table.responses[i]
                if not has_answers(responses):
                    continue
                windows = self.answer_windows(responses, table.prompts)
                a_emb = embedder.encode(windows, progress=progress)
                validity = None
                if reads_validity:
                    validity = np.full(len(table), np.nan)
                    if table.validity is not None:
                        validity = table.validity[:, i]
                extra = answer_extra_features(responses, validity=validity)
                per_tier[i] = answer_features(inputs, a_emb, extra)
        by_source: dict[str, OpinionInputs] = {}
        if answers and opinions and self.answer_aware:
            for source in self.opinion_sources:
                by_source[source.name] = self._opinion_inputs(table, source, embedder, progress)
        return TableFeatures(inputs, per_tier, by_source, steps)

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
        # which rows compare as free text depends on the answer kinds only, not on fitting
        scorer = AgreementScorer(self.normaliser_registry())
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

    def opinion_matrix(self, answer_matrix: np.ndarray, inputs: OpinionInputs) -> np.ndarray:
        """Opinion-aware features: the first tier's answer features, then the agreement ones."""
        self._check_fitted_scorer()
        agreement = np.vstack(
            [
                self.scorer_.features(
                    inputs.steps[j], inputs.first[j], inputs.opinions[j], inputs.embeddings.get(j)
                )
                for j in range(len(inputs.first))
            ]
        )
        return np.hstack([answer_matrix, agreement])

    # ------------------------------------------------------------------ fitting
    def fit(
        self,
        table: OutcomeTable,
        embedder: Embedder,
        progress: bool = False,
        features: TableFeatures | None = None,
    ) -> CascadeModel:
        """Cross-fit every acceptance model, make every choice out of fold and fit the policy
        for the target on the out-of-fold outcomes of every training row."""
        self.validate_params()
        if tuple(table.tiers) != self.tiers_:
            raise ConfigurationError(f"table tiers {table.tiers} differ from {self.tiers_}")
        if len(table) < MIN_TRAINING_PROMPTS:
            raise ConfigurationError(
                f"too few prompts to train a router: {len(table)} (< {MIN_TRAINING_PROMPTS})"
            )
        self.__dict__.pop("policy_", None)  # a refit whose target is refused serves nothing old
        self.embedder_ref_ = embedder.reference()
        self.embedder_name_ = embedder.name
        self.steps_ = StepVocabulary.fit(table.steps)
        self.answer_validity_ = self.answer_aware and records_validity(table)
        feats = features if features is not None else self.featurize(table, embedder, progress)
        if len(feats.inputs) != len(table):
            raise ConfigurationError("features and table differ in their number of prompts")
        feats = feats.encoded(self.steps_)
        n_tiers = len(self.tiers_)
        labels = [table.labels(t) for t in range(n_tiers)]
        folds = Folds.make(table.prompt_ids, 2 * labels[0] + labels[-1], self.folds, self.seed)
        params = {"seed": self.seed, **dict(self.acceptance_params or {})}
        grid = CAPACITY_GRID if len(table) < self.capacity_cv_below else ({},)
        record: dict[str, Any] = {"folds": self.folds, "capacity_grid": list(grid)}

        self.scorer_ = AgreementScorer(self.normaliser_registry())
        opinion_X: dict[str, np.ndarray] = {}
        if feats.opinions and 0 in feats.answers:
            first_source = next(iter(feats.opinions.values()))
            self.scorer_ = self._fit_scorer(first_source, labels[0])
            opinion_X = {
                name: self.opinion_matrix(feats.answers[0], inputs)
                for name, inputs in feats.opinions.items()
            }
        from tqdm.auto import tqdm

        n_models = n_tiers + 2 * len(feats.answers) + 2 * len(opinion_X)
        with tqdm(total=n_models, desc="acceptance models", disable=not progress) as bar:

            def fit_one(X: np.ndarray, y: np.ndarray) -> CrossFit:
                result = cross_fit(params, X, y, folds, grid)
                bar.update(1)
                return result

            pre = [fit_one(feats.inputs, labels[t]) for t in range(n_tiers)]
            post = {
                i: (fit_one(X, labels[i]), fit_one(X, labels[i + 1]))
                for i, X in sorted(feats.answers.items())
            }
            opinion = {
                name: (fit_one(X, labels[0]), fit_one(X, labels[1]))
                for name, X in opinion_X.items()
            }
        self.pre_models_ = [r.model for r in pre]
        self.post_models_ = {i: (a.model, b.model) for i, (a, b) in post.items()}
        self.opinion_models_ = {name: (a.model, b.model) for name, (a, b) in opinion.items()}
        record["models"] = {
            "pre": [r.record() for r in pre],
            "post": {str(i): [a.record(), b.record()] for i, (a, b) in post.items()},
            "opinion": {n: [a.record(), b.record()] for n, (a, b) in opinion.items()},
        }

        pre_oof = np.column_stack([r.oof for r in pre])
        self.pre_members_ = PreAnswerMembers()
        if self.pre_ensemble:
            Y = np.column_stack(labels)
            embeddings, score = feats.inputs[:, N_INPUT_EXTRA:], router_score(table.scores)
            members = cross_fit_members(embeddings, Y, folds, pre_oof, score, seed=self.seed)
            choice = members.choose(embeddings, Y, score, seed=self.seed)
            self.pre_members_, pre_oof = choice.members, choice.oof
            record["pre_members"] = {
                "chosen": list(choice.members.members),
                "oof_apgr": choice.scores,
                "knn_k": choice.cross_fit.knn_k,
                "knn_oof_apgr": {str(k): v for k, v in choice.cross_fit.knn_scores.items()},
                "linear_C": choice.cross_fit.linear_C,
                "linear_oof_apgr": {f"{c:g}": v for c, v in choice.cross_fit.linear_scores.items()},
            }

        mean_cost = table.costs.mean(axis=0)
        self.tier_weights_ = np.array(
            [
                mean_cost[i + 1] / mean_cost[-1] if mean_cost[-1] > 0 else 1.0
                for i in range(n_tiers - 1)
            ]
        )
        post_self = {i: a.oof for i, (a, _) in post.items()}
        post_next = {i: b.oof for i, (_, b) in post.items()}
        self.post_blend_ = 0.0
        if post:
            self.post_blend_, record["post_blend_oof_apgr"] = choose_post_blend(
                pre_oof, post_self, post_next, table.scores, table.costs
            )
        record["post_blend"] = self.post_blend_
        self.cv_results_ = record

        n = len(table)
        oof_self = np.full((n, n_tiers - 1), np.nan)
        oof_next = np.full((n, n_tiers - 1), np.nan)
        for i in post:
            oof_self[:, i] = _blend(post_self[i], pre_oof[:, i], self.post_blend_)
            oof_next[:, i] = _blend(post_next[i], pre_oof[:, i + 1], self.post_blend_)
        op_self = op_next = None
        names = [s.name for s in self.opinion_sources]
        if names and all(name in opinion for name in names):
            op_self = np.column_stack([opinion[name][0].oof for name in names])
            op_next = np.column_stack([opinion[name][1].oof for name in names])
        self.oof_ = OutOfFold(
            CascadeSignals(pre_oof, oof_self, oof_next, op_self, op_next),
            np.asarray(table.scores, dtype=np.float64),
            np.asarray(table.costs, dtype=np.float64),
            np.asarray(table.steps, dtype=object).astype(str),
            self.opinion_costs(table),
            np.asarray(table.prompt_ids),
            folds.fold,
        )
        self.mean_output_tokens_ = table.output_tokens.mean(axis=0).tolist()
        # last: a refused target leaves every other learned part in place for fit_policy
        self.policy_ = self._fit_policy(self.oof_, self.target_)
        return self

    def fit_policy(self) -> CascadeModel:
        """Refit only the policy, for the current ``target`` parameter, on the out-of-fold
        outcomes the last :meth:`fit` kept: seconds where ``fit`` takes minutes.  The way on
        after a target was refused: ``model.set_params(target="quality=0.9").fit_policy()``."""
        if not hasattr(self, "oof_"):
            raise NotFittedError(
                "fit_policy needs the out-of-fold outcomes of a fit in this process "
                "(a loaded model does not keep them): call fit() first"
            )
        target = _parse_target(self.target)
        self.policy_ = self._fit_policy(self.oof_, target)  # a refusal changes nothing
        self.target_ = target
        return self

    def _fit_policy(self, oof: OutOfFold, target: Target) -> CascadePolicy:
        """The policy for ``target``, fitted on the out-of-fold outcomes of every training row."""
        return CascadePolicy(
            tiers=self.tiers_,
            tier_weights=self.tier_weights_,
            skip_tolerance=self.skip_tolerance,
            min_step_samples=self.min_step_samples,
            target=target,
            seed=self.seed,
        ).fit(*oof.fit_args())

    def _fit_scorer(self, inputs: OpinionInputs, first_correct: np.ndarray) -> AgreementScorer:
        """The agreement scorer, its free-text threshold (one number) learned on every row."""
        scorer = AgreementScorer(self.normaliser_registry())
        rows = sorted(inputs.embeddings)
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

    # ------------------------------------------------------------------ prediction
    def _fitted(self) -> bool:
        return hasattr(self, "policy_")

    def _check_fitted(self) -> None:
        if not self._fitted():
            raise NotFittedError("CascadeModel is not fitted: call fit() or load() first")

    def _check_fitted_scorer(self) -> None:
        if not hasattr(self, "scorer_"):
            raise NotFittedError("CascadeModel is not fitted: call fit() or load() first")

    def signals_from_features(self, feats: TableFeatures) -> CascadeSignals:
        """Probabilities of every model for every row (NaN post columns where no answer model)."""
        self._check_fitted()
        feats = feats.encoded(self.steps_)
        n = len(feats.inputs)
        pre = self._pre(feats.inputs)
        post_self = np.full((n, len(self.tiers) - 1), np.nan)
        post_next = np.full((n, len(self.tiers) - 1), np.nan)
        w = self.post_blend_
        for i, (m_self, m_next) in self.post_models_.items():
            if i in feats.answers:
                post_self[:, i] = _blend(m_self.predict_accept(feats.answers[i]), pre[:, i], w)
                post_next[:, i] = _blend(m_next.predict_accept(feats.answers[i]), pre[:, i + 1], w)
        op_self = op_next = None
        names = [s.name for s in self.opinion_sources]
        if (
            names
            and all(n in self.opinion_models_ and n in feats.opinions for n in names)
            and 0 in feats.answers
        ):
            selfs, nexts = [], []
            for name in names:
                X = self.opinion_matrix(feats.answers[0], feats.opinions[name])
                selfs.append(self.opinion_models_[name][0].predict_accept(X))
                nexts.append(self.opinion_models_[name][1].predict_accept(X))
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
        members = self.pre_members_
        if members.uses_boosters:
            lgbm = np.column_stack([m.predict_accept(X_inputs) for m in self.pre_models_])
        else:  # the boosters are not averaged in: no need to run them
            lgbm = np.zeros((len(X_inputs), len(self.pre_models_)))
        return members.average(lgbm, X_inputs[:, N_INPUT_EXTRA:])

    def _validity(self, n: int, validity: Sequence[float] | None) -> np.ndarray | None:
        """The validity feature for ``n`` answers, for a model trained with it (else None)."""
        if not self.answer_validity_:
            return None
        return np.full(n, np.nan) if validity is None else np.asarray(validity, dtype=float)

    def post_probabilities(
        self,
        tier: int,
        X_inputs: np.ndarray,
        answer_embeddings: np.ndarray,
        answers: Sequence[str | None],
        logprobs: Sequence[Sequence[float] | None] | None = None,
        validity: Sequence[float] | None = None,
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """P(tier accepted | input, answer) and P(next tier accepted | ...); None if no model.

        ``validity``: the validator's verdict per answer (1, 0, NaN), read by models trained
        with it (:attr:`answer_validity_`) and ignored by the others."""
        self._check_fitted()
        if tier not in self.post_models_:
            return None
        w = self.post_blend_
        if w >= 1.0:  # the answer-aware models are not used
            pre = self._pre(X_inputs)
            return pre[:, tier].copy(), pre[:, tier + 1].copy()
        extra = answer_extra_features(answers, logprobs, self._validity(len(answers), validity))
        X = answer_features(X_inputs, answer_embeddings, extra)
        m_self, m_next = self.post_models_[tier]
        p_self, p_next = m_self.predict_accept(X), m_next.predict_accept(X)
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
        validity: Sequence[float] | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """P(first tier accepted | input, answer, opinions), P(next tier accepted | …) and the
        share of opinions agreeing with the answer.

        ``opinions[j]`` are the opinions of ``source`` (by default the first source) on row
        ``j``: the peers' answers in :attr:`peer_models` order, or the extra samples.
        None when the model has no opinion models.
        """
        self._check_fitted()
        sources = self.opinion_sources
        if not sources or not self.opinion_models_:
            return None
        chosen = self.opinion_source(source) if source is not None else sources[0]
        if len(opinions) != len(answers) or any(len(o) != chosen.size for o in opinions):
            what = (
                f"{chosen.size} samples"
                if chosen.is_samples
                else f"one answer per peer ({', '.join(chosen.models)})"
            )
            raise ConfigurationError(f"give {what} for every request")
        embeddings: dict[int, np.ndarray] = {}
        for j, (first, others) in enumerate(zip(answers, opinions, strict=True)):
            if self.scorer_.needs_embeddings(steps[j], [first, *others]):
                peer_emb = embedder.encode([answer_window(o) for o in others])
                embeddings[j] = np.vstack([answer_embeddings[j : j + 1], peer_emb])
        inputs = OpinionInputs(
            [str(s) for s in steps], list(answers), [list(o) for o in opinions], embeddings
        )
        extra = answer_extra_features(answers, logprobs, self._validity(len(answers), validity))
        X = answer_features(X_inputs, answer_embeddings, extra)
        X = self.opinion_matrix(X, inputs)
        m_self, m_next = self.opinion_models_[chosen.name]
        return m_self.predict_accept(X), m_next.predict_accept(X), X[:, -N_AGREEMENT + 1]

    # ------------------------------------------------------------------ persistence
    def save(self, directory: str | Path) -> Path:
        """Write the model as JSON + LightGBM text + npz arrays (no pickle)."""
        from router.model.persistence import save_model

        self._check_fitted()
        return save_model(self, Path(directory))

    @classmethod
    def load(cls, directory: str | Path, num_threads: int = 1) -> CascadeModel:
        """Read a model written by :meth:`save` (any readable format)."""
        from router.model.persistence import load_model

        return load_model(cls, Path(directory), num_threads)


def records_validity(table: OutcomeTable) -> bool:
    """Whether recorded outcomes hold the validator's verdict on some answer below the top."""
    validity = table.validity
    return validity is not None and bool(np.isfinite(validity[:, :-1]).any())


def has_answers(responses: Sequence[str | None]) -> bool:
    """Whether any recorded answer says something (all None or all blank: none recorded)."""
    return any(r is not None and str(r).strip() for r in responses)


def _parse_target(target: Target | str | None) -> Target:
    """The ``target`` parameter as a :class:`Target` (default: 95% of the top tier's quality)."""
    return Target.parse(target) or Target(quality_ratio=0.95)


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
