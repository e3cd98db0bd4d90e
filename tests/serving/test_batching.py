"""DecisionBatcher: concurrent decisions share batches and equal the one-at-a-time ones."""

from __future__ import annotations

import asyncio

import pytest

from router.core import Router
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
            assert "content must be a string" in str(results[0])  # the culprit fails alone
            assert results[1].action in ("call", "skip")  # type: ignore[union-attr]
            ok = await batcher.decide(router, "math", "What is 3 + 3?")  # the worker lives on
            assert ok.action in ("call", "skip")
        finally:
            await batcher.stop()

    asyncio.run(run())
