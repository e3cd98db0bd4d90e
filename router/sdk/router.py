"""The SDK: :class:`Router` routes one agent step through the cascade and returns a RouteResult."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from router.backends import (
    ChatBackend,
    Completion,
    Messages,
    SamplingBackend,
    input_text,
)
from router.embedders import Embedder, LRUEmbedder, build_embedder
from router.errors import BackendError, ConfigurationError
from router.model import CascadeModel
from router.opinions import OpinionSource
from router.policy import Target, escalates, skips
from router.registry import open_default_router, open_router_folder
from router.sdk.results import ChatInput, Decision, RouteResult, tier_roles
from router.sdk.walk import CascadeWalk
from router.settings import RouterSettings


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
        policy = self.model.policy_
        for j, step in enumerate(steps):
            cert = policy.certificate(step, tgt)
            point = cert.point if cert is not None else policy.operating(step, tgt)
            certificate = None if cert is None else cert.to_dict()
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
                        certificate,
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
                        certificate,
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
        runner = CascadeWalk(self, step, input, target)
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
        runner = await asyncio.to_thread(CascadeWalk, self, step, input, target)
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


def _default_prices() -> dict[str, tuple[float, float]]:
    from router.data import load_prices

    return load_prices()
