"""DecisionBatcher: concurrent decisions share batches and equal the one-at-a-time ones."""

from __future__ import annotations

import asyncio

import pytest

from router.sdk import Router
from serving.batching import DecisionBatcher


@pytest.fixture(scope="module")
def router(saved_model_dir, embedder) -> Router:
    return Router.load(saved_model_dir, embedder=embedder)


def test_concurrent_decisions_are_batched_and_exact(router: Router, split_tables) -> None:
    _, test = split_tables
    texts = [str(p) for p in test.prompts[:48]]
    steps = [str(s) for s in test.steps[:48]]
    sizes: list[int] = []

    async def run() -> list:
        batcher = DecisionBatcher(max_wait_s=0.01, max_size=16, on_batch=sizes.append)
        batcher.start()
        try:
            return await asyncio.gather(
                *(batcher.decide(router, s, t) for s, t in zip(steps, texts, strict=True))
            )
        finally:
            await batcher.stop()

    decisions = asyncio.run(run())
    alone = router.decide_batch(steps, texts)
    assert [d.p_accept for d in decisions] == pytest.approx([d.p_accept for d in alone], abs=1e-6)
    assert [d.action for d in decisions] == [d.action for d in alone]
    assert sum(sizes) == 48 and max(sizes) == 16  # batches filled up to the limit


def test_a_failing_batch_fails_its_requests_not_the_worker(router: Router) -> None:
    async def run() -> None:
        batcher = DecisionBatcher(max_wait_s=0.05)
        batcher.start()
        try:
            bad = batcher.decide(router, "math", [{"role": "user", "content": 7}])  # type: ignore[list-item]
            good = batcher.decide(router, "math", "What is 2 + 2?")
            results = await asyncio.gather(bad, good, return_exceptions=True)
            assert "messages[0].content" in str(results[0])  # the culprit fails alone
            assert results[1].action in ("call", "skip")  # type: ignore[union-attr]
            ok = await batcher.decide(router, "math", "What is 3 + 3?")  # the worker lives on
            assert ok.action in ("call", "skip")
        finally:
            await batcher.stop()

    asyncio.run(run())


def test_a_lone_request_is_decided_without_waiting(router: Router) -> None:
    async def run() -> float:
        batcher = DecisionBatcher(max_wait_s=2.0)
        batcher.start()
        try:
            await batcher.decide(router, "math", "What is 1 + 1?")  # warm
            started = asyncio.get_running_loop().time()
            with batcher.expecting() as announcement:
                await batcher.decide(router, "math", "What is 2 + 2?", announcement=announcement)
            return asyncio.get_running_loop().time() - started
        finally:
            await batcher.stop()

    assert asyncio.run(run()) < 1.0  # nobody else announced: no 2 s wait


def test_the_batch_waits_for_announced_requests_only(router: Router) -> None:
    sizes: list[int] = []

    async def run() -> None:
        batcher = DecisionBatcher(max_wait_s=2.0, on_batch=sizes.append)
        batcher.start()
        try:

            async def request(text: str, parse_s: float) -> None:
                with batcher.expecting() as announcement:
                    await asyncio.sleep(parse_s)  # reading and parsing the body
                    await batcher.decide(router, "math", text, announcement=announcement)

            await asyncio.gather(request("What is 2 + 2?", 0.0), request("What is 3 + 3?", 0.05))
            assert sizes == [2]  # the first waited for the announced second

            async def leaves_early() -> None:
                with batcher.expecting():
                    await asyncio.sleep(0.05)  # e.g. a 400 before any decision

            started = asyncio.get_running_loop().time()
            await asyncio.gather(request("What is 4 + 4?", 0.0), leaves_early())
            assert asyncio.get_running_loop().time() - started < 1.0  # its leaving ends the wait
            assert sizes == [2, 1]
        finally:
            await batcher.stop()

    asyncio.run(run())
