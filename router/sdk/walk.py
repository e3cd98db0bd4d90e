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
import contextvars
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from router.backends import ChatRequest, Completion, SamplingBackend, step_text
from router.errors import BackendError, ConfigurationError
from router.opinions import OpinionSource
from router.policy import Target, first_called, verdict
from router.sdk.results import OPINION_ROLES, RouteResult, TierStep, TokenUsage, cascade_path
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
        self.target = Target.parse(target) or router.model.target_
        self.text = step_text(request)
        if not self.text.strip():
            raise ConfigurationError("the request holds no text for the router to read")
        self.inputs = router.input_signals([step], [self.text])
        self.pre = self.inputs.pre[0]
        self.point, self.certificate = router.certified_point(step, self.target)
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
            certificate=None if self.certificate is None else self.certificate.to_dict(),
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


@dataclass(frozen=True)
class ModelCall:
    """One call of a :class:`Call`: which backend, in which role, under which name (a tier, a
    peer, or the first tier's samples), how many answers it asks for, and what it is priced as."""

    backend: Any
    role: str
    name: str
    choices: int = 1
    priced_as: str | None = None
    source: OpinionSource | None = None  # the samples' source (their number, temperature)


def model_calls(walk: CascadeWalk, action: Call) -> list[ModelCall]:
    """The calls an action makes: the tier's answer first, then its second opinions (one per
    peer, or one that draws every sample)."""
    router = walk.router
    backends = router.require_backends()
    tier = router.tiers[action.tier]
    calls = [ModelCall(backends[action.tier], router.roles[action.tier], tier, priced_as=tier)]
    source = action.opinions
    if source is None:
        return calls
    if source.is_samples:
        sampler = backends[0]
        if not isinstance(sampler, SamplingBackend):
            raise ConfigurationError(
                f"this router asks the first tier for {source.size} extra samples, but its "
                f"backend {sampler!r} cannot sample (use an OpenAI-compatible or replay backend)"
            )
        # samples are priced as the first tier (a local server may name it otherwise)
        samples = ModelCall(sampler, "sample", tier, source.size, tier, source)
        return [*calls, samples]
    return [*calls, *(ModelCall(router.require_peer(p), "peer", p) for p in source.models)]


def _blocking(walk: CascadeWalk, call: ModelCall) -> Callable[[], Any]:
    """The blocking form of one call, inside its CLIENT span."""
    tracing, request = walk.router.tracing, walk.request

    def run() -> Any:
        with tracing.model_call(
            call.backend,
            role=call.role,
            tier=call.name,
            step=walk.step,
            request=request,
            choices=call.choices,
        ) as span:
            if call.source is not None:
                temperature = float(call.source.temperature or 0.7)
                out = call.backend.sample(request, call.choices, temperature)
            else:
                out = call.backend.complete(request)
            _record_call(walk, span, call, out)
            return out

    return run


async def _asynchronous(walk: CascadeWalk, call: ModelCall) -> Any:
    """The asyncio form of one call, inside its CLIENT span."""
    tracing, request = walk.router.tracing, walk.request
    with tracing.model_call(
        call.backend,
        role=call.role,
        tier=call.name,
        step=walk.step,
        request=request,
        choices=call.choices,
    ) as span:
        if call.source is not None:
            temperature = float(call.source.temperature or 0.7)
            out = await call.backend.asample(request, call.choices, temperature)
        else:
            out = await call.backend.acomplete(request)
        _record_call(walk, span, call, out)
        return out


def _record_call(walk: CascadeWalk, span: Any, call: ModelCall, out: Any) -> None:
    """What a model answered, on its span (nothing when tracing is off)."""
    if span is None:
        return
    answers: list[Completion] = out if isinstance(out, list) else [out]
    first = answers[0] if answers else None
    walk.router.tracing.end_model_call(
        span,
        response_model=None if first is None else (first.response_model or first.model),
        response_id=None if first is None else first.response_id,
        input_tokens=sum(a.input_tokens for a in answers),
        output_tokens=sum(a.output_tokens for a in answers),
        finish_reasons=[a.finish_reason for a in answers],
        cost_usd=sum(walk.router.price(a, call.priced_as) for a in answers),
        messages=[a.message for a in answers],
    )


def _decided(walk: CascadeWalk, span: Any) -> None:
    """The decision just taken, on its span: the last step of a tier (not an opinion's)."""
    if span is None:
        return
    step = next(s for s in reversed(walk.trail) if s.role not in OPINION_ROLES)
    p_accept = step.p_accept_answer if step.p_accept_answer is not None else step.p_accept
    walk.router.tracing.end_decision_span(
        span,
        action=step.action,
        tier=step.tier,
        p_accept=float("nan") if p_accept is None else p_accept,
        gain=step.gain,
    )


def started(walk: CascadeWalk, span: Any) -> None:
    """The walk's first decision, on its span: call the first tier, or skip it."""
    if span is None:
        return
    router = walk.router
    walk.router.tracing.end_decision_span(
        span,
        action="call" if walk.tier == 0 else "skip",
        tier=router.tiers[0],
        p_accept=float(walk.pre[0]),
        opinion_source=walk.source.name if walk.source is not None and walk.tier == 0 else None,
        router_version=router.version,
    )


def finished(walk: CascadeWalk, span: Any, result: RouteResult) -> None:
    """Where the walk ended, on the route span."""
    if span is None:
        return
    walk.router.tracing.end_route_span(
        span,
        tier=result.tier,
        path=result.path,
        p_accept=float(walk.pre[0]),
        cost_usd=result.cost_usd,
        router_version=result.router_version,
        target=result.target,
    )


def run_walk(walk: CascadeWalk) -> RouteResult:
    """Drive ``walk`` with blocking calls; a tier's answer and its opinions run in parallel
    (each in a copy of the caller's context, so their spans and request ids follow)."""
    tracing, top = walk.router.tracing, len(walk.router.tiers) - 1
    while True:
        action = walk.next()
        if isinstance(action, Done):
            return action.result
        if isinstance(action, Wait):
            time.sleep(action.seconds)
            continue
        calls = [_blocking(walk, call) for call in model_calls(walk, action)]
        try:
            if len(calls) == 1:
                completion, results = calls[0](), []
            else:
                with ThreadPoolExecutor(max_workers=len(calls)) as pool:
                    futures = [pool.submit(contextvars.copy_context().run, c) for c in calls]
                    completion = futures[0].result()
                    results = [f.exception() or f.result() for f in futures[1:]]
        except BackendError as exc:
            walk.failed(exc)
            continue
        if action.tier < top:
            with tracing.decision_span(walk.step, "post") as span:
                walk.answered(completion, results)
                _decided(walk, span)
        else:
            walk.answered(completion, results)


async def arun_walk(walk: CascadeWalk) -> RouteResult:
    """Drive ``walk`` with asyncio; the embeddings and boosters run in a worker thread so the
    event loop stays free."""
    tracing, top = walk.router.tracing, len(walk.router.tiers) - 1
    while True:
        action = walk.next()
        if isinstance(action, Done):
            return action.result
        if isinstance(action, Wait):
            await asyncio.sleep(action.seconds)
            continue
        gathered = await asyncio.gather(
            *(_asynchronous(walk, call) for call in model_calls(walk, action)),
            return_exceptions=True,
        )
        first = gathered[0]
        if isinstance(first, BackendError):
            walk.failed(first)
            continue
        if isinstance(first, BaseException):
            raise first
        if action.tier < top:
            with tracing.decision_span(walk.step, "post") as span:
                await asyncio.to_thread(walk.answered, first, list(gathered[1:]))
                _decided(walk, span)
        else:
            await asyncio.to_thread(walk.answered, first, list(gathered[1:]))


__all__ = [
    "NOT_CONSTRAINED",
    "Action",
    "Call",
    "CascadeWalk",
    "Done",
    "ModelCall",
    "Wait",
    "arun_walk",
    "model_calls",
    "run_walk",
]
