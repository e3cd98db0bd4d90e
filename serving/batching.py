"""Micro-batching of routing decisions: concurrent /v1/route requests share one embedding call.

Each request puts its input on a queue and awaits a future.  One worker task takes the first
waiting item and everything already queued, groups them by router, target and whether an
answer came with them, and runs one ``Router.decide_batch`` per group in a worker thread;
requests arriving meanwhile form the next batch, so batches grow with the load.

A request announces itself when it is admitted (:meth:`DecisionBatcher.expecting`), before its
body is read and parsed.  The worker waits, at most ``max_wait_s``, only while announced
requests have not reached the queue yet: a lone request is decided at once, and concurrent
ones are not split into batches by a few microseconds of parsing.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from router.backends import AssistantMessage, ChatInput, ChatRequest
from router.policy import Target
from router.sdk import Decision, Router


@dataclass
class _Item:
    router: Router
    step: str
    input: ChatRequest | ChatInput
    answer: str | AssistantMessage | None
    target: Target | None
    future: asyncio.Future[Decision] = field(repr=False)


class Announcement:
    """A request the batcher may wait for, until it arrives (or leaves without a decision)."""

    def __init__(self, batcher: DecisionBatcher) -> None:
        self._batcher: DecisionBatcher | None = batcher
        batcher._coming += 1

    def arrived(self) -> None:
        if self._batcher is not None:
            self._batcher._coming -= 1
            self._batcher._wake.set()
            self._batcher = None


class DecisionBatcher:
    """Gathers concurrent decision requests into micro-batches (see the module docstring)."""

    def __init__(
        self,
        max_wait_s: float = 0.002,
        max_size: int = 64,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self.max_wait_s = max_wait_s
        self.max_size = max_size
        self.on_batch = on_batch
        self._queue: asyncio.Queue[_Item] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._coming = 0  # announced requests that have not reached the queue yet
        self._wake = asyncio.Event()  # set when an item is queued or an announcement ends

    @contextlib.contextmanager
    def expecting(self) -> Iterator[Announcement]:
        """Announce a request that will call :meth:`decide` (or fail before it) in this block;
        pass the announcement to :meth:`decide`."""
        announcement = Announcement(self)
        try:
            yield announcement
        finally:
            announcement.arrived()

    def start(self) -> None:
        """Start the worker on the running event loop."""
        self._queue = asyncio.Queue()
        self._worker = asyncio.create_task(self._run(), name="decision-batcher")

    async def stop(self) -> None:
        """Stop the worker; waiting requests get a cancellation."""
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        self._worker = None

    async def decide(
        self,
        router: Router,
        step: str,
        input: ChatRequest | ChatInput,
        answer: str | AssistantMessage | None = None,
        target: Target | None = None,
        announcement: Announcement | None = None,
    ) -> Decision:
        """The decision for one input, computed in a batch with its concurrent neighbours."""
        if self._queue is None:
            raise RuntimeError("DecisionBatcher.start() was not called")
        future: asyncio.Future[Decision] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Item(router, step, input, answer, target, future))
        self._wake.set()
        if announcement is not None:
            announcement.arrived()
        return await future

    async def _gather(self) -> list[_Item]:
        assert self._queue is not None
        batch = [await self._queue.get()]
        deadline = time.perf_counter() + self.max_wait_s
        while len(batch) < self.max_size:
            while not self._queue.empty() and len(batch) < self.max_size:
                batch.append(self._queue.get_nowait())
            remaining = deadline - time.perf_counter()
            if remaining <= 0 or len(batch) >= self.max_size or self._coming <= 0:
                break
            self._wake.clear()
            if not self._queue.empty():
                continue
            try:
                await asyncio.wait_for(self._wake.wait(), remaining)
            except TimeoutError:
                break
        return batch

    async def _run(self) -> None:
        while True:
            batch = await self._gather()
            if self.on_batch is not None:
                self.on_batch(len(batch))
            groups: dict[tuple[int, str, bool], list[_Item]] = defaultdict(list)
            for item in batch:
                if not item.future.cancelled():
                    key = (id(item.router), str(item.target), item.answer is not None)
                    groups[key].append(item)
            for items in groups.values():
                await self._decide_group(items)

    @staticmethod
    async def _decide_group(items: list[_Item]) -> None:
        router = items[0].router
        with_answers = items[0].answer is not None
        try:
            decisions = await asyncio.to_thread(
                router.decide_batch,
                [i.step for i in items],
                [i.input for i in items],
                [i.answer for i in items] if with_answers else None,
                items[0].target,
            )
        except Exception as exc:
            if len(items) > 1:  # one bad input must not fail its neighbours: retry one by one
                for item in items:
                    await DecisionBatcher._decide_group([item])
                return
            if not items[0].future.done():  # handed to the waiting request, which reports it
                items[0].future.set_exception(exc)
            return
        for item, decision in zip(items, decisions, strict=True):
            if not item.future.done():
                item.future.set_result(decision)
