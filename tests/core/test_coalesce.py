"""Singleflight for calls (Coalescer) and for streams (StreamFanout, StreamCoalescer)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from promptrelay.core.coalesce import (
    Coalescer,
    StreamCancelled,
    StreamCoalescer,
    StreamFanout,
    Subscription,
)


class Upstream:
    """A factory whose calls block until released; counts calls and cancellations."""

    def __init__(self) -> None:
        self.calls = 0
        self.cancelled = 0
        self.release = asyncio.Event()
        self.error: Exception | None = None

    async def __call__(self) -> str:
        self.calls += 1
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        if self.error is not None:
            raise self.error
        return f"answer {self.calls}"


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_hundred_identical_calls_share_one_factory_call() -> None:
    coalescer: Coalescer[str, str] = Coalescer()
    upstream = Upstream()
    tasks = [asyncio.create_task(coalescer.run("k", upstream)) for _ in range(100)]
    await settle()
    assert coalescer.in_flight() == 1
    upstream.release.set()
    results = await asyncio.gather(*tasks)
    assert upstream.calls == 1
    assert {value for value, _ in results} == {"answer 1"}
    assert [follower for _, follower in results].count(False) == 1
    assert coalescer.in_flight() == 0


async def test_different_keys_do_not_share() -> None:
    coalescer: Coalescer[str, str] = Coalescer()
    upstream = Upstream()
    upstream.release.set()
    results = await asyncio.gather(coalescer.run("a", upstream), coalescer.run("b", upstream))
    assert upstream.calls == 2
    assert [follower for _, follower in results] == [False, False]


async def test_cancelling_99_waiters_leaves_the_last_its_answer() -> None:
    coalescer: Coalescer[str, str] = Coalescer()
    upstream = Upstream()
    tasks = [asyncio.create_task(coalescer.run("k", upstream)) for _ in range(100)]
    await settle()
    for task in tasks[:99]:  # the leader among them
        task.cancel()
    await settle()
    assert upstream.cancelled == 0
    upstream.release.set()
    assert await tasks[99] == ("answer 1", True)
    assert all(task.cancelled() for task in tasks[:99])
    assert coalescer.in_flight() == 0


async def test_cancelling_every_waiter_cancels_the_shared_call() -> None:
    coalescer: Coalescer[str, str] = Coalescer()
    upstream = Upstream()
    tasks = [asyncio.create_task(coalescer.run("k", upstream)) for _ in range(100)]
    await settle()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert coalescer.in_flight() == 0  # gone at once: a newcomer starts afresh
    await settle()
    assert upstream.cancelled == 1
    fresh = Upstream()
    fresh.release.set()
    assert await coalescer.run("k", fresh) == ("answer 1", False)


async def test_a_failure_reaches_every_waiter_and_drains_the_map() -> None:
    coalescer: Coalescer[str, str] = Coalescer()
    upstream = Upstream()
    upstream.error = RuntimeError("upstream exploded")
    tasks = [asyncio.create_task(coalescer.run("k", upstream)) for _ in range(100)]
    await settle()
    upstream.release.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(r is upstream.error for r in results)
    assert upstream.calls == 1
    assert coalescer.in_flight() == 0


# -- streams -----------------------------------------------------------------------------


class Producer:
    """A source releasing one chunk per `step()`, optionally failing at the end."""

    def __init__(self, chunks: list[bytes], error: Exception | None = None) -> None:
        self.chunks = chunks
        self.error = error
        self.started = 0
        self.cancelled = False
        self.closed = False
        self._gate: asyncio.Queue[None] = asyncio.Queue()

    def step(self, n: int = 1) -> None:
        for _ in range(n):
            self._gate.put_nowait(None)

    def finish(self) -> None:
        self.step(len(self.chunks) + 1)

    async def __aiter(self) -> AsyncIterator[bytes]:
        try:
            for chunk in self.chunks:
                await self._gate.get()
                yield chunk
            await self._gate.get()
            if self.error is not None:
                raise self.error
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        finally:
            self.closed = True

    def __call__(self) -> AsyncIterator[bytes]:
        self.started += 1
        return self.__aiter()


async def drain(subscription: Subscription[bytes]) -> list[bytes]:
    async with subscription:
        return [chunk async for chunk in subscription]


CHUNKS = [b"event: a\n\n", b"event: b\n\n", b"event: c\n\n", b"event: d\n\n"]


async def test_late_follower_gets_the_full_sequence() -> None:
    producer = Producer(CHUNKS)
    fanout = StreamFanout(producer)
    leader = fanout.subscribe()
    producer.step(2)
    assert [await anext(leader), await anext(leader)] == CHUNKS[:2]
    late = asyncio.create_task(drain(fanout.subscribe()))
    producer.finish()
    assert [*CHUNKS[:2], *[chunk async for chunk in leader]] == CHUNKS
    assert await late == CHUNKS


async def test_slow_follower_does_not_hold_up_the_producer() -> None:
    producer = Producer(CHUNKS)
    fanout = StreamFanout(producer)
    idle = fanout.subscribe()  # never reads until the end
    producer.finish()
    await settle()
    assert fanout.finished
    assert await drain(idle) == CHUNKS


async def test_error_reaches_every_subscriber_after_the_items() -> None:
    producer = Producer(CHUNKS[:2], error=ConnectionResetError("upstream reset"))
    fanout = StreamFanout(producer)
    subscriptions = [fanout.subscribe() for _ in range(5)]
    producer.finish()
    for subscription in subscriptions:
        seen: list[bytes] = []
        with pytest.raises(ConnectionResetError):
            async with subscription:
                async for chunk in subscription:
                    seen.append(chunk)
        assert seen == CHUNKS[:2]


async def test_producer_is_cancelled_only_when_every_subscriber_has_gone() -> None:
    producer = Producer(CHUNKS)
    closed: list[bool] = []
    fanout = StreamFanout(producer, on_close=lambda: closed.append(True))
    first, second = fanout.subscribe(), fanout.subscribe()
    producer.step()
    assert await anext(first) == CHUNKS[0]
    await first.aclose()
    await settle()
    assert not producer.cancelled
    await second.aclose()
    await settle()
    assert producer.cancelled and producer.closed
    assert closed == [True]
    with pytest.raises(RuntimeError):
        fanout.subscribe()


async def test_a_waiting_subscriber_cancelled_inside_async_with_leaves() -> None:
    producer = Producer(CHUNKS)
    fanout = StreamFanout(producer)
    reader = asyncio.create_task(drain(fanout.subscribe()))
    await settle()
    reader.cancel()
    await asyncio.gather(reader, return_exceptions=True)
    await settle()
    assert fanout.subscribers == 0
    assert producer.cancelled


async def test_outside_cancellation_of_the_producer_is_an_error_not_an_end() -> None:
    producer = Producer(CHUNKS)
    fanout = StreamFanout(producer)
    subscription = fanout.subscribe()
    await settle()
    task = fanout._task
    assert task is not None
    task.cancel()
    with pytest.raises(StreamCancelled):
        await drain(subscription)


async def test_twenty_identical_streams_share_one_producer() -> None:
    streams: StreamCoalescer[str, bytes] = StreamCoalescer()
    producer = Producer(CHUNKS)
    joined = [streams.join("k", producer) for _ in range(20)]
    assert [follower for _, follower in joined] == [False] + [True] * 19
    assert streams.in_flight() == 1
    readers = [asyncio.create_task(drain(sub)) for sub, _ in joined]
    producer.finish()
    assert await asyncio.gather(*readers) == [CHUNKS] * 20
    assert producer.started == 1
    assert streams.in_flight() == 0


async def test_a_finished_or_abandoned_stream_is_not_joined() -> None:
    streams: StreamCoalescer[str, bytes] = StreamCoalescer()
    first = Producer(CHUNKS)
    sub, _ = streams.join("k", first)
    first.finish()
    assert await drain(sub) == CHUNKS
    second = Producer(CHUNKS)
    sub, follower = streams.join("k", second)
    assert not follower
    await sub.aclose()
    assert streams.in_flight() == 0
    third = Producer(CHUNKS)
    sub, follower = streams.join("k", third)
    assert not follower and streams.in_flight() == 1
    third.finish()
    assert await drain(sub) == CHUNKS
    # The second was abandoned before its producer task ever ran.
    assert [p.started for p in (first, second, third)] == [1, 0, 1]
