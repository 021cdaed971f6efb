"""Micro-batcher: batch items wait briefly per model, then leave together, paced.

    submit(model, job) -> pending group of that model
        group reaches BATCH_MAX_SIZE            -> flushed at once
        BATCH_WINDOW_MS since its first item    -> flushed by its timer
    flush -> BatchFlushed(model, size, waited_ms) -> every job of the group starts,
             each under the shared concurrency budget (and its caller's own limit)
          -> each result (or error) goes back to the caller that submitted it

Only the items of `POST /api/generate/batch` pass through here; single /api/generate and
/v1 requests never do, so nothing else waits for a window. The decision "is this group
due, and when will it be" is `WindowPolicy`, pure and clock-injected; `MicroBatcher` is
the async shell that performs it. A job is the normal path (Gateway: cache, coalescer,
breaker, retries), so identical items in flight still share one upstream call.

Cancellation: a caller that stops waiting (its client went away) cancels its own job if
it is running, or makes it skip when its group flushes; other items are not affected.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from promptrelay.core.events import BatchFlushed, EventBus

__all__ = ["MicroBatcher", "WindowPolicy"]

R = TypeVar("R")
Job = Callable[[], Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class WindowPolicy:
    """When a group is due: `max_size` items, or `window` seconds after its first item.

    Pure: the caller passes the group's size, the time its first item arrived and now.

        policy = WindowPolicy(max_size=10, window=0.1)
        policy.due(size=3, first_at=5.0, now=5.05)   # False: 50 ms left
        policy.deadline(first_at=5.0)                # 5.1: flush then at the latest
    """

    max_size: int
    window: float

    def __post_init__(self) -> None:
        if self.max_size < 1:
            raise ValueError("max_size must be at least 1")
        if self.window < 0:
            raise ValueError("window must not be negative")

    def due(self, size: int, first_at: float, now: float) -> bool:
        return size >= self.max_size or now >= self.deadline(first_at)

    def deadline(self, first_at: float) -> float:
        return first_at + self.window

    def waited_ms(self, first_at: float, now: float) -> float:
        return round(max(0.0, now - first_at) * 1000, 3)


@dataclass(slots=True)
class _Item:
    job: Job
    limit: asyncio.Semaphore | None
    future: asyncio.Future[Any]


@dataclass(slots=True)
class _Group:
    first_at: float
    items: list[_Item] = field(default_factory=list)
    timer: asyncio.TimerHandle | None = None


class MicroBatcher(Generic[R]):
    """The async shell: collects items per model, flushes groups, runs their jobs.

    `budget` bounds the jobs running at once across every group and caller (the pace a
    burst reaches the upstream with); a caller's own `limit` bounds its items further.
    """

    def __init__(
        self,
        policy: WindowPolicy,
        *,
        budget: int,
        events: EventBus,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.policy = policy
        self._budget = asyncio.Semaphore(budget)
        self._events = events
        self._clock = clock
        self._groups: dict[str, _Group] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    def pending(self) -> int:
        """Items waiting in a window (not yet flushed)."""
        return sum(len(group.items) for group in self._groups.values())

    async def submit(
        self, model: str, job: Callable[[], Awaitable[R]], limit: asyncio.Semaphore | None = None
    ) -> R:
        """Queue `job` in `model`'s group; return its result once its group has run it."""
        if self._closed:
            raise RuntimeError("the micro-batcher is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        self._add(model, _Item(job, limit, future))
        return await future

    def _add(self, model: str, item: _Item) -> None:
        now = self._clock()
        group = self._groups.get(model)
        if group is None:
            group = self._groups[model] = _Group(first_at=now)
        group.items.append(item)
        if self.policy.due(len(group.items), group.first_at, now):
            self._flush(model)
        elif group.timer is None:
            delay = max(0.0, self.policy.deadline(group.first_at) - now)
            group.timer = asyncio.get_running_loop().call_later(delay, self._flush, model)

    def _flush(self, model: str) -> None:
        group = self._groups.pop(model, None)
        if group is None:
            return
        if group.timer is not None:
            group.timer.cancel()
        waited = self.policy.waited_ms(group.first_at, self._clock())
        self._events.emit(BatchFlushed(model, len(group.items), waited))
        for item in group.items:
            if item.future.done():  # its caller already gave up
                continue
            task = asyncio.get_running_loop().create_task(self._run(item))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            item.future.add_done_callback(functools.partial(_cancel_if_abandoned, task))

    async def _run(self, item: _Item) -> None:
        try:
            async with contextlib.AsyncExitStack() as stack:
                if item.limit is not None:
                    await stack.enter_async_context(item.limit)
                await stack.enter_async_context(self._budget)
                if item.future.done():
                    return
                result = await item.job()
        except asyncio.CancelledError:
            if not item.future.done():
                item.future.cancel()
            raise
        except Exception as error:  # handed to the caller, who decides what it means
            if not item.future.done():
                item.future.set_exception(error)
            return
        if not item.future.done():
            item.future.set_result(result)

    async def close(self) -> None:
        """Fail waiting items, cancel running jobs (shutdown)."""
        self._closed = True
        for model in list(self._groups):
            group = self._groups.pop(model)
            if group.timer is not None:
                group.timer.cancel()
            for item in group.items:
                if not item.future.done():
                    item.future.set_exception(RuntimeError("the micro-batcher closed"))
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _cancel_if_abandoned(task: asyncio.Task[None], future: asyncio.Future[Any]) -> None:
    if future.cancelled() and not task.done():
        task.cancel()
