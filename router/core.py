"""The SDK: :class:`Router` routes one agent step through the cascade and returns a RouteResult."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import math
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from router.backends import (
    ChatBackend,
    Completion,
    Messages,
    SamplingBackend,
    as_messages,
    input_text,
)
from router.embedders import Embedder, LRUEmbedder, build_embedder
from router.errors import BackendError, ConfigurationError, RouterLoadError
from router.model import CascadeModel
from router.opinions import OpinionSource
from router.policy import Target, escalates, skips
from router.settings import RouterSettings

ChatInput = str | Sequence[Mapping[str, Any]]
#: roles of the trail's opinion steps (asked alongside the first tier's call)
OPINION_ROLES = ("peer", "sample")
logger = logging.getLogger(__name__)


def tier_roles(n_tiers: int) -> tuple[str, ...]:
    """Readable role names: small → (medium | tier1, tier2, …) → frontier."""
    if n_tiers == 2:
        return ("small", "frontier")
    if n_tiers == 3:
        return ("small", "medium", "frontier")
    return ("small", *(f"tier{i}" for i in range(1, n_tiers - 1)), "frontier")


@dataclass(frozen=True)
class Decision:
    """The router's decision at the first tier, before (and optionally after) its answer."""

    step: str
    tier: str  # the tier to call first (the first tier not skipped)
    action: str  # "call" (tier 0), "skip" (straight to the next tier); after an answer:
    # "accept" or "escalate"
    p_accept: float  # pre-answer P(first tier accepted | input)
    p_next: float  # pre-answer P(next tier accepted | input)
    gain: float  # expected gain of escalating (post-answer when an answer was given)
    p_accept_answer: float | None = None  # P(first tier accepted | input, answer[, opinions])
    lam: float = 0.0
    skip_threshold: float = 0.0
    ask_opinion: bool = False  # the policy buys second opinions here
    opinion_source: str | None = None  # from which source: "peers" or "samples"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json_dict(self) -> dict[str, Any]:
        """:meth:`to_dict` fit for strict JSON: an infinite ``lam`` (a step whose target makes it
        escalate everything, or nothing) is the string ``"-inf"``/``"inf"``, a NaN is null."""
        return json_safe(self.to_dict())


@dataclass(frozen=True)
class TierStep:
    """What happened at one tier on the way through the cascade."""

    tier: str
    role: str
    action: str  # skipped | verified | escalated | answered | failed; opinions: agreed | disagreed
    p_accept: float | None
    p_accept_answer: float | None = None
    gain: float | None = None
    cost_usd: float = 0.0
    latency_s: float = 0.0


@dataclass(frozen=True)
class RouteResult:
    """The answer of one routed step and how it was reached."""

    answer: str
    tier: str
    role: str
    path: str
    step: str
    probabilities: dict[str, float]
    steps: tuple[TierStep, ...]
    cost_usd: float
    latency_s: float
    router_latency_s: float
    target: str
    router_version: str | None = None
    score: float | None = None  # replay only: the recorded score of the answer
    input_tokens: int = 0  # tokens of the call that answered
    output_tokens: int = 0
    answers: dict[str, str] = field(default_factory=dict)  # every tier's answer, tier -> text
    failures: dict[str, str] = field(default_factory=dict)  # tiers that failed, tier -> error
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json_dict(self) -> dict[str, Any]:
        """:meth:`to_dict` fit for strict JSON (see :meth:`Decision.to_json_dict`)."""
        return json_safe(self.to_dict())


def json_safe(value: Any) -> Any:
    """``value`` with every non-finite float replaced: ±inf by ``"inf"``/``"-inf"`` (as in a
    saved policy), NaN by None; dicts, lists and tuples are walked."""
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


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
    ) -> None:
        model._check_fitted()
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
        self.tiers = model.tiers
        self.roles = tier_roles(len(self.tiers))
        self.backends = self._tier_backends(backends)
        self.peer_backends = self._peer_backends(peers)
        self.prices = dict(prices) if prices is not None else _default_prices()
        self.version = version

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
    ) -> Router:
        """Load a saved router (folder or MLflow URI).

        ``None`` loads ``settings.default_router`` if set, else the registry's ``@champion``,
        else (nothing registered yet) the bundled router that ships with the package.
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
        )

    def with_backends(
        self,
        backends: Sequence[ChatBackend] | Mapping[str, ChatBackend],
        peers: Sequence[ChatBackend] | Mapping[str, ChatBackend] | None = None,
    ) -> Router:
        """The same router answering through other backends (and peers, for second opinions;
        by default the peers it has); the embedding cache is shared."""
        peers = peers if peers is not None else self.peer_backends
        return Router(self.model, self.embedder, backends, self.prices, self.version, peers)

    # ------------------------------------------------------------------ decisions
    def _input_matrix(self, steps: Sequence[str], texts: Sequence[str]) -> np.ndarray:
        emb = self.model.embed_inputs(self.embedder, texts)
        return self.model.input_matrix(texts, steps, emb)

    def decide_batch(
        self,
        steps: Sequence[str],
        inputs: Sequence[ChatInput],
        answers: Sequence[str | None] | None = None,
        target: Target | str | None = None,
        opinions: Sequence[Sequence[str | None]] | None = None,
        opinion_source: str | None = None,
    ) -> list[Decision]:
        """Decisions for many step inputs at once, calling no model.

        Without answers: whether to call the first tier or skip it (and whether to buy second
        opinions, and from which source). With the first tier's answers: whether to accept them
        or escalate; with second opinions too (``opinions[j]``: one answer per peer, or the
        extra samples, of ``opinion_source``, by default the first source), from that source's
        opinion-aware model.
        """
        if len(steps) != len(inputs) or (answers is not None and len(answers) != len(inputs)):
            raise ConfigurationError("steps, inputs and answers must have the same length")
        if opinions is not None and (answers is None or len(opinions) != len(inputs)):
            raise ConfigurationError("opinions need answers, one list of peer answers per input")
        tgt = Target.parse(target)
        texts = [input_text(i) for i in inputs]
        X = self._input_matrix(steps, texts)
        pre = self.model.pre_probabilities(X)
        post = None
        if answers is not None:
            a_emb = self.embedder.encode(self.model.answer_windows(answers, texts))
            post = self.model.post_probabilities(0, X, a_emb, answers)
            if opinions is not None:
                with_opinions = self.model.opinion_probabilities(
                    X, a_emb, answers, opinions, steps, self.embedder, source=opinion_source
                )
                if with_opinions is None:
                    raise ConfigurationError(
                        "this router was trained without second opinions (peers or samples)"
                    )
                post = with_opinions[0], with_opinions[1]
        decisions = []
        for j, step in enumerate(steps):
            point = self.model.policy_.operating(step, tgt)
            p0, p1 = float(pre[j, 0]), float(pre[j, 1])
            if answers is None:
                skip = bool(skips(p0, point.skip_thresholds[0]))
                source = None if skip else self._opinion_source(point, p0)
                decisions.append(
                    Decision(
                        str(step),
                        self.tiers[1] if skip else self.tiers[0],
                        "skip" if skip else "call",
                        p0,
                        p1,
                        p1 - p0,
                        None,
                        point.lam,
                        point.skip_thresholds[0],
                        source is not None,
                        None if source is None else source.name,
                    )
                )
            else:
                ps, pn = (float(post[0][j]), float(post[1][j])) if post else (p0, p1)
                gain = pn - ps
                escalate = escalates(gain, point.lam, self.model.tier_weights_[0])
                action = "escalate" if escalate else "accept"
                decisions.append(
                    Decision(
                        str(step),
                        self.tiers[0],
                        action,
                        p0,
                        p1,
                        gain,
                        ps,
                        point.lam,
                        point.skip_thresholds[0],
                        opinions is not None,
                        None
                        if opinions is None
                        else (opinion_source or self.model.opinion_sources[0].name),
                    )
                )
        return decisions

    def _opinion_source(self, point: Any, p_pre: float) -> OpinionSource | None:
        """The source whose opinions the operating point buys at this pre-answer probability."""
        sources = self.model.opinion_sources
        if not sources or not getattr(self.model, "opinion_models_", {}):
            return None
        index = int(point.opinion_source(p_pre))
        return sources[index] if 0 <= index < len(sources) else None

    def decide(
        self,
        step: str,
        input: ChatInput,
        answer: str | None = None,
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
    def _require_backends(self) -> list[ChatBackend]:
        if self.backends is None:
            raise ConfigurationError(
                "this router has no backends: pass backends=[...] (one per tier: "
                f"{', '.join(self.tiers)}) to Router.load or use decide() for decisions only"
            )
        return self.backends

    def _cost(self, completion: Completion, tier: str | None = None) -> float:
        """The call's cost: as recorded, else its tokens at the model's (else the tier's) price."""
        if completion.cost_usd is not None:
            return float(completion.cost_usd)
        price = self.prices.get(completion.model)
        if price is None and tier is not None:
            # an upstream serving a tier under another name (vLLM, llama.cpp) is priced as the tier
            price = self.prices.get(tier)
        price_in, price_out = price or (0.0, 0.0)
        return (completion.input_tokens * price_in + completion.output_tokens * price_out) / 1e6

    def route(
        self,
        step: str,
        input: ChatInput,
        target: Target | str | None = None,
        max_tokens: int | None = None,
        retries: int = 0,
        retry_backoff_s: float = 0.25,
    ) -> RouteResult:
        """Answer one step through the cascade (blocking).

        A tier below the top that fails (timeout, connection error, error status) is recorded
        as ``failed`` and the request escalates to the next tier.  The top tier is retried up to
        ``retries`` times with exponential backoff; then its :class:`BackendError` is raised.
        """
        backends = self._require_backends()
        runner = _Cascade(self, step, input, target)
        attempt = 0
        while (call := runner.next_call()) is not None:
            source = runner.opinion_request()
            try:
                if source is None:
                    completion = backends[call].complete(runner.messages, max_tokens=max_tokens)
                    opinions: list[Completion] = []
                else:
                    # the answer and the second opinions are asked in parallel
                    asks = self._opinion_calls(source, backends[call], runner.messages, max_tokens)
                    with ThreadPoolExecutor(max_workers=1 + len(asks)) as pool:
                        first = pool.submit(
                            backends[call].complete, runner.messages, max_tokens=max_tokens
                        )
                        futures = [pool.submit(ask) for ask in asks]
                        completion = first.result()
                        opinions = runner.usable_opinions(
                            source, [f.exception() or f.result() for f in futures]
                        )
            except BackendError as exc:
                if runner.fail(exc):
                    continue
                if attempt >= retries:
                    raise
                time.sleep(retry_backoff_s * 2**attempt)
                attempt += 1
                continue
            runner.receive(completion, opinions)
        return runner.result()

    def _require_peer(self, peer: str) -> ChatBackend:
        if self.peer_backends is None:
            raise ConfigurationError(
                f"this router asks {', '.join(self.model.peer_models)} for second opinions: "
                "pass peers=[...] backends to Router.load (or with_backends)"
            )
        return self.peer_backends[peer]

    def _sampler(self, source: OpinionSource, backend: ChatBackend) -> SamplingBackend:
        if not isinstance(backend, SamplingBackend):
            raise ConfigurationError(
                f"this router asks the first tier for {source.size} extra samples, but its "
                f"backend {backend!r} cannot sample (use an OpenAI-compatible or replay backend)"
            )
        return backend

    def _opinion_calls(
        self,
        source: OpinionSource,
        backend: ChatBackend,
        messages: Messages,
        max_tokens: int | None,
        asynchronous: bool = False,
    ) -> list[Any]:
        """The calls that fetch ``source``'s opinions: one per peer, or one that draws every
        sample (each gives a Completion or a list of them); blocking callables, or awaitables
        when ``asynchronous``."""
        if source.is_samples:
            sampler = self._sampler(source, backend)
            draw = sampler.asample if asynchronous else sampler.sample
            temperature = float(source.temperature or 0.7)
            calls: list[Any] = [functools.partial(draw, messages, source.size, temperature)]
        else:
            peers = [self._require_peer(p) for p in source.models]
            calls = [
                functools.partial(peer.acomplete if asynchronous else peer.complete, messages)
                for peer in peers
            ]
        bound = [functools.partial(call, max_tokens=max_tokens) for call in calls]
        return [call() for call in bound] if asynchronous else bound

    async def aroute(
        self,
        step: str,
        input: ChatInput,
        target: Target | str | None = None,
        max_tokens: int | None = None,
        retries: int = 0,
        retry_backoff_s: float = 0.25,
    ) -> RouteResult:
        """Answer one step through the cascade (asyncio); see :meth:`route`.

        The embeddings and boosters run in a worker thread so the event loop stays free.
        """
        backends = self._require_backends()
        runner = await asyncio.to_thread(_Cascade, self, step, input, target)
        attempt = 0
        while (call := runner.next_call()) is not None:
            # the answer and the second opinions are asked in parallel
            source = runner.opinion_request()
            asks = (
                []
                if source is None
                else self._opinion_calls(
                    source, backends[call], runner.messages, max_tokens, asynchronous=True
                )
            )
            results = await asyncio.gather(
                backends[call].acomplete(runner.messages, max_tokens=max_tokens),
                *asks,
                return_exceptions=True,
            )
            first = results[0]
            if isinstance(first, BackendError):
                if runner.fail(first):
                    continue
                if attempt >= retries:
                    raise first
                await asyncio.sleep(retry_backoff_s * 2**attempt)
                attempt += 1
                continue
            if isinstance(first, BaseException):
                raise first
            opinions = [] if source is None else runner.usable_opinions(source, list(results[1:]))
            await asyncio.to_thread(runner.receive, first, opinions)
        return runner.result()


class _Cascade:
    """One request's walk down the tiers; the I/O is done by the caller (sync or async)."""

    def __init__(self, router: Router, step: str, input: ChatInput, target: Target | str | None):
        if not isinstance(step, str) or not step.strip():
            raise ConfigurationError("step must be a non-empty string (e.g. 'intent')")
        started = time.perf_counter()
        self.router, self.step = router, step
        self.target = Target.parse(target) or router.model.target
        self.messages: Messages = as_messages(input)
        self.text = input_text(self.messages)
        self.X = router._input_matrix([step], [self.text])
        self.pre = router.model.pre_probabilities(self.X)[0]
        self.point = router.model.policy_.operating(step, self.target)
        self.source = router._opinion_source(self.point, float(self.pre[0]))
        self.tier = 0
        self.trail: list[TierStep] = []
        self.probabilities: dict[str, float] = {
            f"pre:{t}": float(p) for t, p in zip(router.tiers, self.pre, strict=True)
        }
        self.answer: Completion | None = None
        self.answers: dict[str, str] = {}
        self.failures: dict[str, str] = {}
        self.cost = 0.0
        self.router_s = time.perf_counter() - started
        self.started = started
        self._advance_skips()

    def _advance_skips(self) -> None:
        tiers, roles = self.router.tiers, self.router.roles
        while self.tier < len(tiers) - 1 and skips(
            self.pre[self.tier], self.point.skip_thresholds[self.tier]
        ):
            self.trail.append(
                TierStep(tiers[self.tier], roles[self.tier], "skipped", float(self.pre[self.tier]))
            )
            self.tier += 1

    def next_call(self) -> int | None:
        return None if self.answer is not None else self.tier

    def fail(self, exc: BaseException) -> bool:
        """Record that the current tier failed; True when a higher tier is left to ask."""
        router, i = self.router, self.tier
        if i >= len(router.tiers) - 1:
            return False
        self.failures[router.tiers[i]] = " ".join(str(exc).split()) or type(exc).__name__
        self.trail.append(TierStep(router.tiers[i], router.roles[i], "failed", float(self.pre[i])))
        self.tier += 1
        self._advance_skips()
        return True

    def opinion_request(self) -> OpinionSource | None:
        """The source of second opinions to ask alongside the next call (first tier only,
        where the operating point buys them)."""
        if self.answer is None and self.tier == 0:
            return self.source
        return None

    def usable_opinions(self, source: OpinionSource, results: Sequence[Any]) -> list[Completion]:
        """The opinions fetched (each result a Completion, a list of them, or the exception a
        call raised), or none when a call failed (the model decides without them)."""
        names = [f"{self.router.tiers[0]} samples"] if source.is_samples else list(source.models)
        failed = [r for r in results if isinstance(r, BaseException)]
        for name, r in zip(names, results, strict=False):
            if isinstance(r, BaseException):
                self.failures[name] = " ".join(str(r).split()) or type(r).__name__
        if any(not isinstance(r, BackendError) for r in failed):
            raise next(r for r in failed if not isinstance(r, BackendError))
        if failed:
            return []
        flat: list[Completion] = []
        for r in results:
            flat.extend(r if isinstance(r, list) else [r])
        if len(flat) != source.size:
            self.failures[names[0]] = f"{len(flat)} opinions returned, {source.size} asked"
            return []
        return flat

    def receive(self, completion: Completion, opinions: Sequence[Completion] = ()) -> None:
        t0 = time.perf_counter()
        router, i = self.router, self.tier
        cost = router._cost(completion, router.tiers[i])
        self.cost += cost
        self.answers[router.tiers[i]] = completion.text
        top = len(router.tiers) - 1
        if i == top:
            self.trail.append(
                TierStep(
                    router.tiers[i],
                    router.roles[i],
                    "answered",
                    float(self.pre[i]),
                    None,
                    None,
                    cost,
                    completion.latency_s,
                )
            )
            self.answer = completion
            self.router_s += time.perf_counter() - t0
            return
        a_emb = router.embedder.encode(router.model.answer_windows([completion.text], [self.text]))
        post = router.model.post_probabilities(
            i, self.X, a_emb, [completion.text], [completion.logprobs]
        )
        peer_steps: list[TierStep] = []
        source = self.source  # the only source asked: its opinions, when any came back
        if opinions and source is not None:
            with_opinions = router.model.opinion_probabilities(
                self.X,
                a_emb,
                [completion.text],
                [[o.text for o in opinions]],
                [self.step],
                router.embedder,
                [completion.logprobs],
                source=source.name,
            )
            assert with_opinions is not None
            post = with_opinions[0], with_opinions[1]
            agreement = float(with_opinions[2][0])
            self.probabilities["opinion_agreement"] = agreement
            for k, o in enumerate(opinions):
                # samples are priced as the first tier (a local server may name it otherwise)
                opinion_cost = router._cost(o, router.tiers[0] if source.is_samples else None)
                self.cost += opinion_cost
                agrees = (
                    agreement
                    if len(opinions) == 1
                    else router.model._scorer().features(self.step, completion.text, [o.text])[1]
                )
                peer_steps.append(
                    TierStep(
                        source.models[k] if source.is_samples else o.model,
                        "sample" if source.is_samples else "peer",
                        "agreed" if agrees == 1.0 else "disagreed",
                        None,
                        None,
                        None,
                        opinion_cost,
                        o.latency_s,
                    )
                )
        p_self, p_next = (
            (float(post[0][0]), float(post[1][0]))
            if post
            else (float(self.pre[i]), float(self.pre[i + 1]))
        )
        gain = p_next - p_self
        self.probabilities[f"post:{router.tiers[i]}"] = p_self
        escalate = bool(escalates(gain, self.point.lam, router.model.tier_weights_[i]))
        self.trail.append(
            TierStep(
                router.tiers[i],
                router.roles[i],
                "escalated" if escalate else "verified",
                float(self.pre[i]),
                p_self,
                gain,
                cost,
                completion.latency_s,
            )
        )
        self.trail.extend(peer_steps)
        if escalate:
            self.tier += 1
            self._advance_skips()
        else:
            self.answer = completion
        self.router_s += time.perf_counter() - t0

    def result(self) -> RouteResult:
        assert self.answer is not None
        router = self.router
        parts: list[str] = []
        for k, s in enumerate(self.trail):
            if s.action == "skipped":
                parts.append("skipped")
            elif s.action == "answered":
                parts.append(s.role)
            elif s.role not in OPINION_ROLES:
                # opinions asked alongside this tier show between its name and its verdict
                asked = itertools.takewhile(lambda t: t.role in OPINION_ROLES, self.trail[k + 1 :])
                parts += [s.role, *(t.role for t in asked), s.action]
        index = (
            router.tiers.index(self.answer.model)
            if self.answer.model in router.tiers
            else self.tier
        )
        return RouteResult(
            answer=self.answer.text,
            tier=router.tiers[index],
            role=router.roles[index],
            path="→".join(parts),
            step=self.step,
            probabilities=self.probabilities,
            steps=tuple(self.trail),
            cost_usd=self.cost,
            latency_s=time.perf_counter() - self.started,
            router_latency_s=self.router_s,
            target=str(self.target),
            router_version=router.version,
            score=self.answer.score,
            input_tokens=self.answer.input_tokens,
            output_tokens=self.answer.output_tokens,
            answers=dict(self.answers),
            failures=dict(self.failures),
        )


def _default_prices() -> dict[str, tuple[float, float]]:
    from router.data import load_prices

    return load_prices()


BUNDLED_ROUTER_VERSION = "bundled"
"""The version name reported for the router that ships inside the package."""


def bundled_router_path() -> Path:
    """The folder of the router that ships with the package (MMLU-Pro, 8B → GPT-4o)."""
    return Path(__file__).parent / "resources" / "router"


def champion_uri(settings: RouterSettings) -> str:
    """``models:/<registered model>@<champion alias>`` from the settings."""
    return f"models:/{settings.registered_model}@{settings.champion_alias}"


@contextlib.contextmanager
def open_default_router(settings: RouterSettings) -> Iterator[tuple[Path, str | None]]:
    """The registry's champion if one is registered, else the bundled router."""
    with contextlib.ExitStack() as stack:
        try:
            found = stack.enter_context(open_router_folder(champion_uri(settings), settings))
        except RouterLoadError as exc:
            logger.warning("using the bundled router: %s", exc)
            found = bundled_router_path(), BUNDLED_ROUTER_VERSION
        yield found


@contextlib.contextmanager
def open_router_folder(target: str, settings: RouterSettings) -> Iterator[tuple[Path, str | None]]:
    """A local folder holding ``router.json`` (and the registry version, if any) for a path or
    an MLflow model URI. A model downloaded from MLflow lives in a temporary folder that is
    removed on leaving the block: read what you need inside it."""
    path = Path(target)
    for candidate in (path, path / "artifacts" / "router"):
        if (candidate / "router.json").exists():
            yield candidate, None
            return
    if "://" in target or target.startswith(("models:/", "runs:/")):
        with tempfile.TemporaryDirectory(prefix="cascade-router-") as dst:
            yield _download_mlflow_router(target, settings, Path(dst))
            return
    raise RouterLoadError(
        f"no router at {target!r}: give a folder written by CascadeModel.save, an MLflow "
        "model folder, or a URI such as models:/cascade-router@champion"
    )


def _download_mlflow_router(
    uri: str, settings: RouterSettings, dst: Path
) -> tuple[Path, str | None]:
    try:
        import mlflow
        from mlflow.exceptions import MlflowException
    except ImportError as exc:  # pragma: no cover - mlflow is a dependency
        raise RouterLoadError("loading a router from a model URI needs mlflow") from exc
    version = None
    try:
        if uri.startswith("models:/"):
            client = mlflow.MlflowClient(
                tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri
            )
            rest = uri[len("models:/") :]
            if "@" in rest:
                name, alias = rest.split("@", 1)
                mv = client.get_model_version_by_alias(name, alias)
            else:
                name, _, number = rest.partition("/")
                if not number:
                    raise RouterLoadError(
                        f"{uri}: give a version or an alias (models:/NAME@champion)"
                    )
                mv = client.get_model_version(name, number)
            version = str(mv.version)
            source = client.get_model_version_download_uri(name, mv.version)
            local = Path(
                mlflow.artifacts.download_artifacts(
                    artifact_uri=source, dst_path=str(dst), tracking_uri=settings.tracking_uri
                )
            )
        else:
            local = Path(
                mlflow.artifacts.download_artifacts(
                    artifact_uri=uri, dst_path=str(dst), tracking_uri=settings.tracking_uri
                )
            )
    except MlflowException as exc:
        raise RouterLoadError(
            f"cannot load {uri} from {settings.tracking_uri}: {exc.message.splitlines()[0]}. "
            "Train and register one with `cascade-router train`."
        ) from exc
    # log_router stores the folder as artifacts/router; other loggers keep their folder's name
    candidates = [local / "artifacts" / "router", local / "router", local]
    candidates += [p.parent for p in sorted(local.glob("artifacts/*/router.json"))]
    for candidate in candidates:
        if (candidate / "router.json").exists():
            return candidate, version
    raise RouterLoadError(f"{uri} holds no cascade router (router.json missing)")


@functools.lru_cache(maxsize=4)
def _cached_default_router(target: str | None, tracking_uri: str) -> Router:
    settings = RouterSettings(tracking_uri=tracking_uri)
    router = Router.load(target, settings=settings)
    from router.backends import replay_backend_for

    try:
        # the embedded default answers from the bundled recorded outcomes
        return router.with_backends(
            [replay_backend_for(tier) for tier in router.tiers],
            [replay_backend_for(peer) for peer in router.model.peer_models] or None,
        )
    except ConfigurationError:
        return router  # decide() still works; route() says which backends are missing


def route(
    step: str, input: ChatInput, target: Target | str | None = None, max_tokens: int | None = None
) -> RouteResult:
    """Route one step with the default router (``CASCADE_DEFAULT_ROUTER`` or ``@champion``)."""
    settings = RouterSettings()
    router = _cached_default_router(settings.default_router, settings.tracking_uri)
    return router.route(step, input, target=target, max_tokens=max_tokens)


async def aroute(
    step: str, input: ChatInput, target: Target | str | None = None, max_tokens: int | None = None
) -> RouteResult:
    """Async twin of :func:`route`."""
    settings = RouterSettings()
    router = await asyncio.to_thread(
        _cached_default_router, settings.default_router, settings.tracking_uri
    )
    return await router.aroute(step, input, target=target, max_tokens=max_tokens)
