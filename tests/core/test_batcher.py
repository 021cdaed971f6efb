"""Micro-batcher: the pure window policy (fake clock, no sleeps) and the async shell."""

from __future__ import annotations

import asyncio

import pytest

from promptrelay.core.batcher import MicroBatcher, WindowPolicy
from promptrelay.core.events import BatchFlushed, Event, EventBus


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _bus() -> tuple[EventBus, list[BatchFlushed]]:
    bus, seen = EventBus(), []

    def listen(event: Event) -> None:
        if isinstance(event, BatchFlushed):
            seen.append(event)

    bus.subscribe(listen)
    return bus, seen


# -- the pure policy -----------------------------------------------------------------


def test_policy_is_due_at_max_size_or_when_the_window_ends():
    policy = WindowPolicy(max_size=10, window=0.1)
    assert not policy.due(size=9, first_at=5.0, now=5.0)
    assert policy.due(size=10, first_at=5.0, now=5.0)
    assert not policy.due(size=1, first_at=5.0, now=5.0999)
    assert policy.due(size=1, first_at=5.0, now=5.1)
    assert policy.deadline(first_at=5.0) == pytest.approx(5.1)
    assert policy.waited_ms(first_at=5.0, now=5.05) == pytest.approx(50.0)
    assert policy.waited_ms(first_at=5.0, now=4.0) == 0.0  # a clock never makes it negative


@pytest.mark.parametrize(("size", "window"), [(0, 0.1), (1, -0.1)])
def test_policy_refuses_nonsense(size, window):
    with pytest.raises(ValueError):
        WindowPolicy(max_size=size, window=window)


# -- the shell -----------------------------------------------------------------------


async def test_a_full_group_leaves_at_once_and_reports_its_wait_from_the_clock():
    clock = Clock()
    bus, flushed = _bus()
    batcher: MicroBatcher[int] = MicroBatcher(
        WindowPolicy(max_size=3, window=60.0), budget=10, events=bus, clock=clock
    )

    async def job(n: int) -> int:
        return n * 2

    first = asyncio.create_task(batcher.submit("m", lambda: job(1)))
    await asyncio.sleep(0)
    clock.now += 0.025
    second = asyncio.create_task(batcher.submit("m", lambda: job(2)))
    await asyncio.sleep(0)
    assert batcher.pending() == 2 and not flushed
    third = await batcher.submit("m", lambda: job(3))  # the third fills it: no 60 s wait
    assert (await first, await second, third) == (2, 4, 6)
    assert flushed == [BatchFlushed("m", 3, 25.0)]
    await batcher.close()


async def test_groups_are_per_model():
    bus, flushed = _bus()
    batcher: MicroBatcher[str] = MicroBatcher(
        WindowPolicy(max_size=2, window=60.0), budget=10, events=bus
    )

    async def job(text: str) -> str:
        return text

    results = list(
        await asyncio.gather(
            batcher.submit("a", lambda: job("a1")),
            batcher.submit("b", lambda: job("b1")),
            batcher.submit("a", lambda: job("a2")),
            batcher.submit("b", lambda: job("b2")),
        )
    )
    assert results == ["a1", "b1", "a2", "b2"]
    assert sorted((e.model, e.size) for e in flushed) == [("a", 2), ("b", 2)]
    await batcher.close()


async def test_a_lone_item_leaves_when_its_window_ends():
    bus, flushed = _bus()
    batcher: MicroBatcher[str] = MicroBatcher(
        WindowPolicy(max_size=10, window=0.02), budget=10, events=bus
    )

    async def job() -> str:
        return "done"

    assert await asyncio.wait_for(batcher.submit("m", job), timeout=5) == "done"
    assert [(e.model, e.size) for e in flushed] == [("m", 1)]
    assert flushed[0].waited_ms >= 15  # real loop timer; lower bound only
    await batcher.close()


async def _peak(budget: int, limit: asyncio.Semaphore | None, items: int) -> int:
    """Most jobs seen running at once when `items` jobs are released together."""
    bus, _ = _bus()
    batcher: MicroBatcher[None] = MicroBatcher(
        WindowPolicy(max_size=items, window=60.0), budget=budget, events=bus
    )
    running, peak = 0, 0
    release = asyncio.Event()

    async def job() -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await release.wait()
        running -= 1

    tasks = [asyncio.create_task(batcher.submit("m", job, limit)) for _ in range(items)]
    for _ in range(20):
        await asyncio.sleep(0)
    release.set()
    await asyncio.gather(*tasks)
    await batcher.close()
    return peak


async def test_the_shared_budget_bounds_jobs_running_at_once():
    assert await _peak(budget=4, limit=None, items=10) == 4


async def test_a_callers_own_limit_bounds_its_items_further():
    assert await _peak(budget=10, limit=asyncio.Semaphore(2), items=10) == 2


async def test_one_failing_job_fails_only_its_caller():
    bus, _ = _bus()
    batcher: MicroBatcher[int] = MicroBatcher(
        WindowPolicy(max_size=3, window=60.0), budget=3, events=bus
    )

    async def ok() -> int:
        return 1

    async def boom() -> int:
        raise LookupError("item 2")

    results = await asyncio.gather(
        batcher.submit("m", ok),
        batcher.submit("m", boom),
        batcher.submit("m", ok),
        return_exceptions=True,
    )
    assert results[0] == 1 and results[2] == 1
    assert isinstance(results[1], LookupError)
    await batcher.close()


async def test_a_caller_that_leaves_cancels_its_own_job_only():
    bus, _ = _bus()
    batcher: MicroBatcher[str] = MicroBatcher(
        WindowPolicy(max_size=2, window=60.0), budget=2, events=bus
    )
    cancelled = asyncio.Event()
    gate = asyncio.Event()

    async def slow() -> str:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return "never"

    async def waits() -> str:
        await gate.wait()
        return "kept"

    leaving = asyncio.create_task(batcher.submit("m", slow))
    staying = asyncio.create_task(batcher.submit("m", waits))
    for _ in range(5):
        await asyncio.sleep(0)
    leaving.cancel()
    await asyncio.wait_for(cancelled.wait(), timeout=5)
    gate.set()
    assert await staying == "kept"
    await batcher.close()


async def test_close_fails_items_still_in_a_window():
    bus, _ = _bus()
    batcher: MicroBatcher[int] = MicroBatcher(
        WindowPolicy(max_size=10, window=60.0), budget=2, events=bus
    )

    async def job() -> int:
        return 1

    waiting = asyncio.create_task(batcher.submit("m", job))
    await asyncio.sleep(0)
    await batcher.close()
    with pytest.raises(RuntimeError, match="closed"):
        await waiting
    with pytest.raises(RuntimeError, match="closed"):
        await batcher.submit("m", job)
