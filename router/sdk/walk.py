"""One request's walk down the tiers, as a state machine that does no I/O, and its two executors.

:class:`CascadeWalk` says what to do next — :class:`Call` a tier (with the second opinions to
ask alongside it), :class:`Wait` before retrying the top tier, or :class:`Done` with the result
— and is told what came back (:meth:`CascadeWalk.answered`, :meth:`CascadeWalk.failed`).
:func:`run_walk` drives it with blocking calls (threads for the calls made in parallel) and
:func:`arun_walk` with asyncio, so the retry and backoff loop exists once.

The rules the walk applies are the ones every decision uses: skip and escalate
(:mod:`router.policy.rules`), the opinion source of the operating point, and the validator
(:func:`router.validation.validate_answer`): an answer below the top that does not have the
shape its request asks for escalates whatever the probabilities say (``small→invalid→…``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from router.backends import ChatBackend, ChatRequest, Completion, SamplingBackend, step_text
from router.errors import BackendError, ConfigurationError
from router.opinions import OpinionSource
from router.policy import Target, first_called, verdict
from router.sdk.results import RouteResult, TierStep, TokenUsage, cascade_path
from router.validation import NOT_CONSTRAINED, Verdict, validate_answer

if TYPE_CHECKING:
    from router.sdk.router import Router


@dataclass(frozen=True)
class Call:
    """Ask tier ``tier`` for its answer; with ``opinions``, that source's opinions in parallel."""

    tier: int
    opinions: OpinionSource | None = None


@dataclass(frozen=True)
class Wait:
    """Wait ``seconds`` before the next call (a retry of the top tier)."""

    seconds: float


@dataclass(frozen=True)
class Done:
    """The walk is over."""

    result: RouteResult


Action = Call | Wait | Done


class CascadeWalk:
    """One request's walk down the tiers (see the module docstring).

    Building it reads the request (step text, embedding, pre-answer probabilities, the operating
    point for the target) and skips hopeless tiers; :meth:`next` then says what to do.  The top
    tier is retried ``retries`` times, waiting ``retry_backoff_s`` and doubling.
    """

    def __init__(
        self,
        router: Router,
        step: str,
        request: ChatRequest,
        target: Target | str | None = None,
        retries: int = 0,
        retry_backoff_s: float = 0.25,
    ) -> None:
        if not isinstance(step, str) or not step.strip():
            raise ConfigurationError("step must be a non-empty string (e.g. 'intent')")
        started = time.perf_counter()
        self.router, self.step, self.request = router, step, request
        self.retries, self.retry_backoff_s = retries, retry_backoff_s
        self.target = Target.parse(target) or router.model.target
        self.text = step_text(request)
        if not self.text.strip():
            raise ConfigurationError("the request holds no text for the router to read")
        self.inputs = router.input_signals([step], [self.text])
        self.pre = self.inputs.pre[0]
        self.point = router.operating_point(step, self.target)
        self.source = router.opinion_source_for(self.point, float(self.pre[0]))
        self.trail: list[TierStep] = []
        self.probabilities: dict[str, float] = {
            f"pre:{t}": float(p) for t, p in zip(router.tiers, self.pre, strict=True)
        }
        self.answer: Completion | None = None
        self.usage: dict[str, TokenUsage] = {}
        self.answers: dict[str, str] = {}
        self.failures: dict[str, str] = {}
        self.invalid: dict[str, str] = {}
        self.validity: dict[str, bool] = {}
        self.cost = 0.0
        self.attempt = 0
        self._wait: float | None = None
        self.started = started
        self.tier = self._skip_from(0)
        self.router_s = time.perf_counter() - started

    # ---------------------------------------------------------------- what to do next
    def next(self) -> Action:
        """The next thing to do: call a tier, wait before a retry, or stop with the result."""
        if self.answer is not None:
            return Done(self.result())
        if self._wait is not None:
            wait, self._wait = self._wait, None
            return Wait(wait)
        # second opinions are bought at the first tier only, where the operating point says so
        asks = self.source if self.tier == 0 else None
        return Call(self.tier, asks)

    def _skip_from(self, start: int) -> int:
        router = self.router
        tier = first_called(self.pre, self.point.skip_thresholds, start)
        for t in range(start, tier):
            p = float(self.pre[t])
            self.trail.append(TierStep(router.tiers[t], router.roles[t], "skipped", p))
        return tier

    # ---------------------------------------------------------------- what came back
    def failed(self, exc: BackendError) -> None:
        """The current tier failed: escalate from below the top; retry the top tier while
        retries are left (after a :class:`Wait`), else raise ``exc``."""
        router, i = self.router, self.tier
        if i < len(router.tiers) - 1:
            self.failures[router.tiers[i]] = " ".join(str(exc).split()) or type(exc).__name__
            p = float(self.pre[i])
            self.trail.append(TierStep(router.tiers[i], router.roles[i], "failed", p))
            self.tier = self._skip_from(i + 1)
            return
        if self.attempt >= self.retries:
            raise exc
        self._wait = self.retry_backoff_s * 2**self.attempt
        self.attempt += 1

    def answered(self, completion: Completion, opinion_results: Sequence[Any] = ()) -> None:
        """The current tier answered with ``completion``; ``opinion_results`` are what the
        opinion calls of the :class:`Call` gave (a Completion, a list of them, or the error
        each raised).  Validates the answer, reads the probabilities, and accepts or escalates.
        """
        t0 = time.perf_counter()
        router, i = self.router, self.tier
        cost = router.price(completion, router.tiers[i])
        self._spend(router.tiers[i], completion, cost)
        self.answers[router.tiers[i]] = completion.text
        checked = validate_answer(self.request, completion.message)
        if checked.valid is not None:
            self.validity[router.tiers[i]] = checked.valid
        if i == len(router.tiers) - 1:
            self.trail.append(
                TierStep(
                    router.tiers[i],
                    router.roles[i],
                    "answered",
                    float(self.pre[i]),
                    cost_usd=cost,
                    latency_s=completion.latency_s,
                )
            )
            if checked.invalid:  # nothing is left above it: returned, and said so
                self.invalid[router.tiers[i]] = str(checked.reason)
            self.answer = completion
            self.router_s += time.perf_counter() - t0
            return
        opinions = self._usable(self.source, opinion_results) if i == 0 else []
        p_self, gain, opinion_steps = self._verify(completion, checked, opinions)
        action = verdict(gain, self.point.lam, router.model.tier_weights_[i], checked.valid)
        if action == "invalid":
            self.invalid[router.tiers[i]] = str(checked.reason)
        self.trail.append(
            TierStep(
                router.tiers[i],
                router.roles[i],
                action,
                float(self.pre[i]),
                p_self,
                gain,
                cost,
                completion.latency_s,
            )
        )
        self.trail.extend(opinion_steps)
        if action == "verified":
            self.answer = completion
        else:
            self.tier = self._skip_from(i + 1)
        self.router_s += time.perf_counter() - t0

    def _verify(
        self, completion: Completion, checked: Verdict, opinions: list[Completion]
    ) -> tuple[float | None, float | None, list[TierStep]]:
        """The answer-aware probability and gain of the current tier's answer (None for an
        answer the validator refused: it escalates without them), and the opinion steps."""
        router, i, source = self.router, self.tier, self.source
        said = [o.text for o in opinions]
        p_self = gain = agreement = None
        if not checked.invalid:
            answer = router.answer_signals(
                i,
                self.inputs,
                [completion.text],
                [completion.logprobs],
                [checked.feature],
                [said] if opinions else None,
                source.name if opinions and source is not None else None,
            )
            p_self = float(answer.p_self[0])
            gain = float(answer.p_next[0]) - p_self
            self.probabilities[f"post:{router.tiers[i]}"] = p_self
            if answer.agreement is not None:
                agreement = float(answer.agreement[0])
                self.probabilities["opinion_agreement"] = agreement
        agrees = router.agreement(self.step, completion.text, said)
        if len(opinions) == 1 and agreement is not None:
            agrees = [agreement == 1.0]  # the opinion model's reading (free text: embeddings)
        opinion_steps = []
        for k, o in enumerate(opinions):
            assert source is not None
            # samples are priced as the first tier (a local server may name it otherwise)
            name = source.models[k] if source.is_samples else o.model
            price = router.price(o, router.tiers[0] if source.is_samples else None)
            self._spend(name, o, price)
            role = "sample" if source.is_samples else "peer"
            action = "agreed" if agrees[k] else "disagreed"
            opinion_steps.append(TierStep(name, role, action, None, None, None, price, o.latency_s))
        return p_self, gain, opinion_steps

    def _usable(self, source: OpinionSource | None, results: Sequence[Any]) -> list[Completion]:
        """The opinions fetched, or none when a call failed (the model decides without them)."""
        if source is None or not results:
            return []
        names = [f"{self.router.tiers[0]} samples"] if source.is_samples else list(source.models)
        failed = [r for r in results if isinstance(r, BaseException)]
        for name, r in zip(names, results, strict=False):
            if isinstance(r, BaseException):
                self.failures[name] = " ".join(str(r).split()) or type(r).__name__
        unexpected = [r for r in failed if not isinstance(r, BackendError)]
        if unexpected:
            raise unexpected[0]
        if failed:
            return []
        flat: list[Completion] = []
        for r in results:
            flat.extend(r if isinstance(r, list) else [r])
        if len(flat) != source.size:
            self.failures[names[0]] = f"{len(flat)} opinions returned, {source.size} asked"
            return []
        return flat

    def _spend(self, name: str, completion: Completion, cost: float) -> None:
        self.cost += cost
        used = TokenUsage(completion.input_tokens, completion.output_tokens, cost, 1)
        self.usage[name] = self.usage.get(name, TokenUsage()) + used

    # ---------------------------------------------------------------- the result
    def result(self) -> RouteResult:
        answer = self.answer
        if answer is None:
            raise RuntimeError("the walk has no answer yet")
        router = self.router
        index = router.tiers.index(answer.model) if answer.model in router.tiers else self.tier
        return RouteResult(
            answer=answer.text,
            tier=router.tiers[index],
            role=router.roles[index],
            path=cascade_path(self.trail),
            step=self.step,
            probabilities=self.probabilities,
            steps=tuple(self.trail),
            cost_usd=self.cost,
            latency_s=time.perf_counter() - self.started,
            router_latency_s=self.router_s,
            target=str(self.target),
            router_version=router.version,
            score=answer.score,
            input_tokens=answer.input_tokens,
            output_tokens=answer.output_tokens,
            answers=dict(self.answers),
            failures=dict(self.failures),
            message=answer.message,
            finish_reason=answer.finish_reason,
            model=answer.model,
            usage=dict(self.usage),
            logprobs=answer.choice_logprobs,
            invalid=dict(self.invalid),
            validity=dict(self.validity),
        )


# ------------------------------------------------------------------ executors


def opinion_calls(
    router: Router, source: OpinionSource, request: ChatRequest, asynchronous: bool = False
) -> list[Any]:
    """The calls that fetch ``source``'s opinions: one per peer, or one that draws every sample
    (each gives a Completion or a list of them); blocking callables, or coroutines when
    ``asynchronous``."""
    backends = router.require_backends()
    if source.is_samples:
        sampler = backends[0]
        if not isinstance(sampler, SamplingBackend):
            raise ConfigurationError(
                f"this router asks the first tier for {source.size} extra samples, but its "
                f"backend {sampler!r} cannot sample (use an OpenAI-compatible or replay backend)"
            )
        temperature = float(source.temperature or 0.7)
        if asynchronous:
            return [sampler.asample(request, source.size, temperature)]
        return [lambda: sampler.sample(request, source.size, temperature)]
    peers: list[ChatBackend] = [router.require_peer(p) for p in source.models]
    if asynchronous:
        return [peer.acomplete(request) for peer in peers]
    return [(lambda peer=peer: peer.complete(request)) for peer in peers]


def run_walk(walk: CascadeWalk) -> RouteResult:
    """Drive ``walk`` with blocking calls; a tier's answer and its opinions run in parallel."""
    backends = walk.router.require_backends()
    while True:
        action = walk.next()
        if isinstance(action, Done):
            return action.result
        if isinstance(action, Wait):
            time.sleep(action.seconds)
            continue
        backend = backends[action.tier]
        try:
            if action.opinions is None:
                completion, results = backend.complete(walk.request), []
            else:
                calls = opinion_calls(walk.router, action.opinions, walk.request)
                with ThreadPoolExecutor(max_workers=1 + len(calls)) as pool:
                    first = pool.submit(backend.complete, walk.request)
                    futures = [pool.submit(call) for call in calls]
                    completion = first.result()
                    results = [f.exception() or f.result() for f in futures]
        except BackendError as exc:
            walk.failed(exc)
            continue
        walk.answered(completion, results)


async def arun_walk(walk: CascadeWalk) -> RouteResult:
    """Drive ``walk`` with asyncio; the embeddings and boosters run in a worker thread so the
    event loop stays free."""
    backends = walk.router.require_backends()
    while True:
        action = walk.next()
        if isinstance(action, Done):
            return action.result
        if isinstance(action, Wait):
            await asyncio.sleep(action.seconds)
            continue
        calls = (
            []
            if action.opinions is None
            else opinion_calls(walk.router, action.opinions, walk.request, asynchronous=True)
        )
        gathered = await asyncio.gather(
            backends[action.tier].acomplete(walk.request), *calls, return_exceptions=True
        )
        first = gathered[0]
        if isinstance(first, BackendError):
            walk.failed(first)
            continue
        if isinstance(first, BaseException):
            raise first
        await asyncio.to_thread(walk.answered, first, list(gathered[1:]))


__all__ = [
    "NOT_CONSTRAINED",
    "Action",
    "Call",
    "CascadeWalk",
    "Done",
    "Wait",
    "arun_walk",
    "opinion_calls",
    "run_walk",
]
