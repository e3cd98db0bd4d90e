"""The SDK: :class:`Router` routes one agent step through the cascade and returns a RouteResult."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from router.answers.normalise import NormaliserRegistry
from router.backends import (
    AssistantMessage,
    ChatBackend,
    ChatInput,
    ChatRequest,
    Completion,
    ResponseFormat,
    Tool,
    as_request,
    message_text,
    recorded_message,
    step_text,
)
from router.embedders import Embedder, LRUEmbedder, build_embedder
from router.errors import ConfigurationError, NotFittedError
from router.model import CascadeModel
from router.opinions import AgreementScorer, OpinionSource
from router.policy import Operating, Target, first_called, verdict
from router.policy.certify import Certificate
from router.registry import open_default_router, open_router_folder
from router.sdk.results import Decision, RouteResult, TierStep, cascade_path, tier_roles
from router.sdk.walk import CascadeWalk, arun_walk, finished, run_walk, started
from router.settings import RouterSettings
from router.tracing import Tracing
from router.validation import validate_answer

if TYPE_CHECKING:
    from opentelemetry.trace import TracerProvider


class Router:
    """A fitted cascade model, its embedder and one backend per tier.

    ``Router.load(uri_or_path)`` reads a router from a folder, an MLflow model URI
    (``models:/cascade-router@champion``, ``runs:/…``) or, with no argument, the default.
    """

    def __init__(
        self,
        model: CascadeModel,
        embedder: Embedder | None = None,
        backends: Sequence[ChatBackend] | Mapping[str, ChatBackend] | None = None,
        prices: Mapping[str, tuple[float, float]] | None = None,
        version: str | None = None,
        peers: Sequence[ChatBackend] | Mapping[str, ChatBackend] | None = None,
        lru_size: int = 4096,
        tracer_provider: TracerProvider | Tracing | None = None,
    ) -> None:
        if not hasattr(model, "policy_"):
            raise NotFittedError("CascadeModel is not fitted: call fit() or load() first")
        self.model = model
        embedder = embedder or build_embedder(model.embedder_ref_)
        if lru_size > 0 and not isinstance(embedder, LRUEmbedder):
            embedder = LRUEmbedder(embedder, lru_size)  # identical inputs: served from memory
        self.embedder: Embedder = embedder
        if self.embedder.name != model.embedder_name_:
            raise ConfigurationError(
                f"this router was trained with embedder {model.embedder_name_!r}; "
                f"it cannot run with {self.embedder.name!r}"
            )
        self.tiers = model.tiers_
        self.roles = tier_roles(len(self.tiers))
        self.backends = self._tier_backends(backends)
        self.peer_backends = self._peer_backends(peers)
        self.prices = dict(prices) if prices is not None else _default_prices()
        self.version = version
        #: where the spans of route()/aroute() go (off without a provider, global or given)
        self.tracing = (
            tracer_provider if isinstance(tracer_provider, Tracing) else Tracing(tracer_provider)
        )
        # equal normal forms of the step's answer kind: no embeddings, so no learned threshold
        self._agreement = AgreementScorer(NormaliserRegistry(model.answer_kinds))

    def _tier_backends(
        self, backends: Sequence[ChatBackend] | Mapping[str, ChatBackend] | None
    ) -> list[ChatBackend] | None:
        if backends is None:
            return None
        if isinstance(backends, Mapping):
            missing = [t for t in self.tiers if t not in backends]
            if missing:
                raise ConfigurationError(f"no backend for tier(s) {', '.join(missing)}")
            return [backends[t] for t in self.tiers]
        if len(backends) != len(self.tiers):
            raise ConfigurationError(
                f"{len(backends)} backends for {len(self.tiers)} tiers ({', '.join(self.tiers)})"
            )
        return list(backends)

    def _peer_backends(
        self, peers: Sequence[ChatBackend] | Mapping[str, ChatBackend] | None
    ) -> dict[str, ChatBackend] | None:
        if peers is None:
            return None
        given = dict(peers) if isinstance(peers, Mapping) else {b.model: b for b in peers}
        missing = [p for p in self.model.peer_models if p not in given]
        if missing:
            raise ConfigurationError(f"no backend for peer(s) {', '.join(missing)}")
        return {p: given[p] for p in self.model.peer_models}

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(
        cls,
        uri_or_path: str | Path | None = None,
        *,
        backends: Sequence[ChatBackend] | Mapping[str, ChatBackend] | None = None,
        settings: RouterSettings | None = None,
        embedder: Embedder | None = None,
        peers: Sequence[ChatBackend] | Mapping[str, ChatBackend] | None = None,
        tracer_provider: TracerProvider | Tracing | None = None,
    ) -> Router:
        """Load a saved router (folder or MLflow URI).

        ``None`` loads ``settings.default_router`` if set, else the registry's ``@champion``,
        else (nothing registered yet) the bundled router that ships with the package.
        ``tracer_provider``: where :meth:`route` and :meth:`aroute` send their spans (see
        :mod:`router.tracing`); without one, the process's global provider, if it set one.
        """
        settings = settings or RouterSettings()
        target = uri_or_path or settings.default_router
        opened = (
            open_default_router(settings)
            if target is None
            else open_router_folder(str(target), settings)
        )
        with opened as (folder, version):
            model = CascadeModel.load(folder, num_threads=1)
        embedder = embedder or build_embedder(
            model.embedder_ref_, cache_dir=settings.cache_dir, threads=settings.embed_threads
        )
        return cls(
            model,
            embedder=embedder,
            backends=backends,
            version=version,
            peers=peers,
            lru_size=settings.embed_lru_size,
            tracer_provider=tracer_provider,
        )

    def with_backends(
        self,
        backends: Sequence[ChatBackend] | Mapping[str, ChatBackend],
        peers: Sequence[ChatBackend] | Mapping[str, ChatBackend] | None = None,
    ) -> Router:
        """The same router answering through other backends (and peers, for second opinions;
        by default the peers it has); the embedding cache is shared."""
        peers = peers if peers is not None else self.peer_backends
        return Router(
            self.model,
            self.embedder,
            backends,
            self.prices,
            self.version,
            peers,
            tracer_provider=self.tracing,
        )

    # ------------------------------------------------------------------ what the model reads
    @property
    def step_kinds(self) -> tuple[str, ...]:
        """The step kinds the router was trained on (others use its global operating point)."""
        return tuple(self.model.steps_.steps)

    def input_signals(self, steps: Sequence[str], texts: Sequence[str]) -> InputSignals:
        """The input features and pre-answer probabilities of step texts (one row each)."""
        emb = self.model.embed_inputs(self.embedder, texts)
        features = self.model.input_matrix(texts, steps, emb)
        return InputSignals(
            list(steps), list(texts), features, self.model.pre_probabilities(features)
        )

    def answer_signals(
        self,
        tier: int,
        inputs: InputSignals,
        answers: Sequence[str | None],
        logprobs: Sequence[Sequence[float] | None] | None = None,
        validity: Sequence[float] | None = None,
        opinions: Sequence[Sequence[str | None]] | None = None,
        source: str | None = None,
    ) -> AnswerSignals:
        """P(tier accepted | input, answer) and P(next tier accepted | …) for each row, from the
        answer-aware model (the pre-answer probabilities where the router has none); with
        ``opinions`` (of ``source``, by default the first), from that source's opinion-aware
        model, with the share of opinions agreeing with each answer.  ``validity``: the
        validator's verdict per answer (1, 0, NaN), read by routers trained with it.

        Raises:
            ConfigurationError: opinions given to a router trained without them.
        """
        model, texts = self.model, inputs.texts
        a_emb = self.embedder.encode(model.answer_windows(answers, texts))
        post = model.post_probabilities(tier, inputs.features, a_emb, answers, logprobs, validity)
        agreement = None
        if opinions is not None:
            with_opinions = model.opinion_probabilities(
                inputs.features,
                a_emb,
                answers,
                opinions,
                inputs.steps,
                self.embedder,
                logprobs,
                source=source,
                validity=validity,
            )
            if with_opinions is None:
                raise ConfigurationError(
                    "this router was trained without second opinions (peers or samples)"
                )
            post = with_opinions[0], with_opinions[1]
            agreement = np.asarray(with_opinions[2], dtype=np.float64)
        if post is None:
            return AnswerSignals(inputs.pre[:, tier], inputs.pre[:, tier + 1], agreement)
        return AnswerSignals(
            np.asarray(post[0], dtype=np.float64), np.asarray(post[1], dtype=np.float64), agreement
        )

    def operating_point(self, step: str, target: Target | None = None) -> Operating:
        """The fitted operating point for a step kind and target (None: the router's own)."""
        return self.model.policy_.operating(step, target)

    def certified_point(
        self, step: str, target: Target | None = None
    ) -> tuple[Operating, Certificate | None]:
        """The operating point for a step kind and target with its certificate (None for a
        router saved before certification, which runs its uncertified point)."""
        cert = self.model.policy_.certificate(step, target)
        if cert is None:
            return self.operating_point(step, target), None
        return cert.point, cert

    def opinion_source_for(self, point: Operating, p_pre: float) -> OpinionSource | None:
        """The source whose opinions the operating point buys at this pre-answer probability."""
        sources = self.model.opinion_sources
        if not sources or not getattr(self.model, "opinion_models_", {}):
            return None
        index = int(point.opinion_source(p_pre))
        return sources[index] if 0 <= index < len(sources) else None

    def agreement(self, step: str, answer: str, opinions: Sequence[str]) -> list[bool]:
        """Per opinion, whether it says what ``answer`` says (equal normal forms of the step's
        answer kind: a choice, a number, a label, JSON, a tool call)."""
        return [bool(self._agreement.features(step, answer, [o])[1] == 1.0) for o in opinions]

    def price(self, completion: Completion, tier: str | None = None) -> float:
        """The call's cost: as recorded, else its tokens at the model's (else the tier's) price."""
        if completion.cost_usd is not None:
            return float(completion.cost_usd)
        price = self.prices.get(completion.model)
        if price is None and tier is not None:
            # an upstream serving a tier under another name (vLLM, llama.cpp) is priced as the tier
            price = self.prices.get(tier)
        price_in, price_out = price or (0.0, 0.0)
        return (completion.input_tokens * price_in + completion.output_tokens * price_out) / 1e6

    # ------------------------------------------------------------------ decisions
    def decide_batch(
        self,
        steps: Sequence[str],
        inputs: Sequence[ChatInput | ChatRequest],
        answers: Sequence[str | AssistantMessage | None] | None = None,
        target: Target | str | None = None,
        opinions: Sequence[Sequence[str | None]] | None = None,
        opinion_source: str | None = None,
    ) -> list[Decision]:
        """Decisions for many step inputs at once, calling no model.

        Without answers: whether to call the first tier or skip it (and whether to buy second
        opinions, and from which source). With the first tier's answers (text, or the
        :class:`AssistantMessage` for an answer that calls tools): whether to accept them or
        escalate; an answer that does not have the shape its request asks for escalates (the
        validator stage). With second opinions too (``opinions[j]``: one answer per peer, or the
        extra samples, of ``opinion_source``, by default the first source), from that source's
        opinion-aware model.  The rules are the walk's (:mod:`router.sdk.walk`).
        """
        if len(steps) != len(inputs) or (answers is not None and len(answers) != len(inputs)):
            raise ConfigurationError("steps, inputs and answers must have the same length")
        if opinions is not None and (answers is None or len(opinions) != len(inputs)):
            raise ConfigurationError("opinions need answers, one list of peer answers per input")
        tgt = Target.parse(target)
        requests = [as_request(i) for i in inputs]
        signals = self.input_signals([str(s) for s in steps], [step_text(r) for r in requests])
        verdicts = None
        answer = None
        if answers is not None:
            messages = [as_message(a) for a in answers]
            verdicts = [validate_answer(r, m) for r, m in zip(requests, messages, strict=True)]
            answer = self.answer_signals(
                0,
                signals,
                [message_text(m) for m in messages],
                validity=[v.feature for v in verdicts],
                opinions=opinions,
                source=opinion_source,
            )
        source_name = None
        if opinions is not None:
            source_name = opinion_source or self.model.opinion_sources[0].name
        decisions = []
        for j, step in enumerate(steps):
            point, cert = self.certified_point(str(step), tgt)
            certificate = None if cert is None else cert.to_dict()
            p0, p1 = float(signals.pre[j, 0]), float(signals.pre[j, 1])
            trail: list[TierStep] = []
            if answer is None or verdicts is None:
                first = first_called(signals.pre[j], point.skip_thresholds)
                for t in range(first):
                    trail.append(TierStep(self.tiers[t], self.roles[t], "skipped", p0))
                source = self.opinion_source_for(point, p0) if first == 0 else None
                decisions.append(
                    Decision(
                        str(step),
                        self.tiers[first],
                        "skip" if first > 0 else "call",
                        p0,
                        p1,
                        p1 - p0,
                        None,
                        point.lam,
                        point.skip_thresholds[0],
                        source is not None,
                        None if source is None else source.name,
                        cascade_path(trail, self.roles[first]),
                        certificate=certificate,
                    )
                )
                continue
            ps, pn = float(answer.p_self[j]), float(answer.p_next[j])
            gain = pn - ps
            checked = verdicts[j]
            action = verdict(gain, point.lam, self.model.tier_weights_[0], checked.valid)
            trail.append(TierStep(self.tiers[0], self.roles[0], action, p0, ps, gain))
            if opinions is not None:
                role = "sample" if source_name == "samples" else "peer"
                trail += [TierStep(str(k), role, "asked", None) for k in range(len(opinions[j]))]
            decisions.append(
                Decision(
                    str(step),
                    self.tiers[0],
                    "accept" if action == "verified" else "escalate",
                    p0,
                    p1,
                    gain,
                    ps,
                    point.lam,
                    point.skip_thresholds[0],
                    opinions is not None,
                    source_name,
                    cascade_path(trail, None if action == "verified" else self.roles[1]),
                    checked.valid,
                    checked.reason,
                    certificate=certificate,
                )
            )
        return decisions

    def decide(
        self,
        step: str,
        input: ChatInput | ChatRequest,
        answer: str | AssistantMessage | None = None,
        target: Target | str | None = None,
        opinions: Sequence[str | None] | None = None,
        opinion_source: str | None = None,
    ) -> Decision:
        """The decision for one step input (see :meth:`decide_batch`); ``opinions``: the
        peers' answers, one per peer, or the extra samples (``opinion_source="samples"``)."""
        return self.decide_batch(
            [step],
            [input],
            None if answer is None else [answer],
            target,
            None if opinions is None else [opinions],
            opinion_source,
        )[0]

    # ------------------------------------------------------------------ routing
    def require_backends(self) -> list[ChatBackend]:
        """The tiers' backends (raises ConfigurationError when the router has none)."""
        if self.backends is None:
            raise ConfigurationError(
                "this router has no backends: pass backends=[...] (one per tier: "
                f"{', '.join(self.tiers)}) to Router.load or use decide() for decisions only"
            )
        return self.backends

    def require_peer(self, peer: str) -> ChatBackend:
        """The backend of a peer asked for second opinions (ConfigurationError: none given)."""
        if self.peer_backends is None:
            raise ConfigurationError(
                f"this router asks {', '.join(self.model.peer_models)} for second opinions: "
                "pass peers=[...] backends to Router.load (or with_backends)"
            )
        return self.peer_backends[peer]

    def walk(
        self,
        step: str,
        input: ChatInput | ChatRequest,
        *,
        tools: Sequence[Tool | Mapping[str, Any]] | None = None,
        response_format: ResponseFormat | Mapping[str, Any] | None = None,
        target: Target | str | None = None,
        retries: int = 0,
        retry_backoff_s: float = 0.25,
        **params: Any,
    ) -> CascadeWalk:
        """The walk of one step through the cascade, to drive with any executor (see
        :mod:`router.sdk.walk`); :meth:`route` and :meth:`aroute` drive it for you."""
        self.require_backends()
        request = as_request(input, tools=tools, response_format=response_format, **params)
        return CascadeWalk(self, step, request, target, retries, retry_backoff_s)

    def route(
        self,
        step: str,
        input: ChatInput | ChatRequest,
        *,
        tools: Sequence[Tool | Mapping[str, Any]] | None = None,
        response_format: ResponseFormat | Mapping[str, Any] | None = None,
        target: Target | str | None = None,
        retries: int = 0,
        retry_backoff_s: float = 0.25,
        **params: Any,
    ) -> RouteResult:
        """Answer one step through the cascade (blocking).

        ``input`` is a prompt, a list of chat messages in OpenAI's shape (assistant tool calls
        and ``tool`` results included) or a :class:`ChatRequest`; ``tools``,
        ``response_format`` and ``params`` (any other request field: ``tool_choice``,
        ``temperature``, ``max_tokens``, ``seed``, …) are set on it, and the whole request goes
        to every tier called.  The result carries the answering model's message.

        An answer below the top that does not have the shape the request asks for (a tool call
        that names no offered tool or whose arguments do not fit its schema, JSON that does not
        fit the response format) escalates whatever the probabilities say.  A tier below the top
        that fails (timeout, connection error, error status) is recorded as ``failed`` and the
        request escalates to the next tier.  The top tier is retried up to ``retries`` times
        with exponential backoff; then its :class:`BackendError` is raised.

        Raises:
            ConfigurationError: the input, a request field or the target is invalid.
        """
        tracing = self.tracing
        with tracing.route_span(step, _target_name(target)) as span:
            with tracing.decision_span(step, "pre") as decide:
                walk = self.walk(
                    step,
                    input,
                    tools=tools,
                    response_format=response_format,
                    target=target,
                    retries=retries,
                    retry_backoff_s=retry_backoff_s,
                    **params,
                )
                started(walk, decide)
            result = run_walk(walk)
            finished(walk, span, result)
        return result

    async def aroute(
        self,
        step: str,
        input: ChatInput | ChatRequest,
        *,
        tools: Sequence[Tool | Mapping[str, Any]] | None = None,
        response_format: ResponseFormat | Mapping[str, Any] | None = None,
        target: Target | str | None = None,
        retries: int = 0,
        retry_backoff_s: float = 0.25,
        **params: Any,
    ) -> RouteResult:
        """Answer one step through the cascade (asyncio); see :meth:`route`.

        The embeddings and boosters run in a worker thread so the event loop stays free.
        """
        tracing = self.tracing
        with tracing.route_span(step, _target_name(target)) as span:
            with tracing.decision_span(step, "pre") as decide:
                walk = await asyncio.to_thread(
                    functools.partial(
                        self.walk,
                        step,
                        input,
                        tools=tools,
                        response_format=response_format,
                        target=target,
                        retries=retries,
                        retry_backoff_s=retry_backoff_s,
                        **params,
                    )
                )
                started(walk, decide)
            result = await arun_walk(walk)
            finished(walk, span, result)
        return result


@dataclass(frozen=True)
class InputSignals:
    """What the router read of some step inputs: their step kinds, step texts, input features
    and pre-answer probabilities (one row each, one column per tier)."""

    steps: list[str]
    texts: list[str]
    features: np.ndarray
    pre: np.ndarray


@dataclass(frozen=True)
class AnswerSignals:
    """Answer-aware probabilities of some answers: P(this tier accepted), P(next tier accepted)
    and, with second opinions, the share of opinions agreeing with each answer."""

    p_self: np.ndarray
    p_next: np.ndarray
    agreement: np.ndarray | None = None


def as_message(answer: str | AssistantMessage | None) -> AssistantMessage:
    """An answer as a message: a message as it is, a recorded response (plain text, or the JSON
    of a message that calls tools) read back, None as an empty answer."""
    if isinstance(answer, AssistantMessage):
        return answer
    return recorded_message(answer)


def _target_name(target: Target | str | None) -> str | None:
    return None if target is None else str(target)


def _default_prices() -> dict[str, tuple[float, float]]:
    from router.data import load_prices

    return load_prices()
