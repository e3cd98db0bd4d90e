"""One request's walk down the tiers: the decisions between calls; the caller does the I/O."""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from router.backends import (
    Completion,
    Messages,
    as_messages,
    input_text,
)
from router.errors import BackendError, ConfigurationError
from router.opinions import OpinionSource
from router.policy import Target, escalates, skips
from router.sdk.results import OPINION_ROLES, ChatInput, RouteResult, TierStep

if TYPE_CHECKING:
    from router.sdk.router import Router


class CascadeWalk:
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
        policy = router.model.policy_
        self.certificate = policy.certificate(step, self.target)
        self.point = (
            self.certificate.point
            if self.certificate is not None
            else policy.operating(step, self.target)
        )
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
            certificate=None if self.certificate is None else self.certificate.to_dict(),
            score=self.answer.score,
            input_tokens=self.answer.input_tokens,
            output_tokens=self.answer.output_tokens,
            answers=dict(self.answers),
            failures=dict(self.failures),
        )
