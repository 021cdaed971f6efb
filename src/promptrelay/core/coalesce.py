"""Singleflight: identical requests in flight share one upstream call or one stream.

Rules
-----

    one task per key     the first caller (leader) starts it; later callers (followers)
                         join it while it runs. Finished keys leave the map at once:
                         answering repeats afterwards is the cache's job, not ours.
    waiters are shielded one waiter's cancellation never cancels the shared work.
    last one out         the shared work is cancelled only when its last waiter has gone,
                         and its key leaves the map right then, so a newcomer starts afresh.
    failures             reach every waiter; the map drains on success, error and cancel.

Streams (`StreamFanout`) keep every item produced in one list that all subscribers read
by index: a late subscriber replays from the start, a slow one only lags behind and
never blocks the producer. The list is unbounded, which is acceptable because a stream
is one upstream answer (bounded by max_tokens) and the list is freed with the fanout.
A subscriber that `forward`s, and keeps up, is handed each item by the producer itself,
through a synchronous writer: its own task is not woken per item, only when the writer
refuses one (the client reads slowly) and at the end.

Usage::

    coalescer: Coalescer[str, Response] = Coalescer()
    response, was_follower = await coalescer.run(key, lambda: send_upstream(request))

    streams: StreamCoalescer[str, bytes] = StreamCoalescer()
    subscription, was_follower = streams.join(key, lambda: upstream_sse_chunks(request))
    async with subscription:
        async for chunk in subscription:
            await send(chunk)
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterable, Awaitable, Callable, Hashable
from functools import partial
from types import TracebackType
from typing import Generic, TypeVar

__all__ = ["Coalescer", "StreamCancelled", "StreamCoalescer", "StreamFanout", "Subscription"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
T = TypeVar("T")


class StreamCancelled(RuntimeError):
    """The shared stream's producer was cancelled from outside while subscribers read it."""


class _Call(Generic[V]):
    """The shared task and its waiters: each awaits a future of its own, resolved from
    the task's one done callback (what `asyncio.shield` would do with two callbacks and
    two closures per waiter). A cancelled waiter cancels only its own future."""

    __slots__ = ("futures", "task", "waiters")

    def __init__(self, task: asyncio.Task[V]) -> None:
        self.task = task
        self.waiters = 0
        self.futures: list[asyncio.Future[V]] = []


async def _await(awaitable: Awaitable[V]) -> V:
    return await awaitable


class Coalescer(Generic[K, V]):
    """One in-flight call per key; see the module rules."""

    def __init__(self) -> None:
        self._calls: dict[K, _Call[V]] = {}

    def in_flight(self) -> int:
        return len(self._calls)

    async def run(self, key: K, factory: Callable[[], Awaitable[V]]) -> tuple[V, bool]:
        """The shared result for `key`, and whether this caller was a follower."""
        call = self._calls.get(key)
        follower = call is not None
        if call is None:
            work = factory()
            # a coroutine becomes the task itself: no wrapper frame, no per-call name string
            coro = work if asyncio.iscoroutine(work) else _await(work)
            call = _Call(asyncio.create_task(coro, name="coalesce"))
            self._calls[key] = call
            call.task.add_done_callback(partial(self._finished, key, call))
        call.waiters += 1
        waiter: asyncio.Future[V] = asyncio.get_running_loop().create_future()
        call.futures.append(waiter)
        try:
            return await waiter, follower
        finally:
            call.waiters -= 1
            if call.waiters == 0 and not call.task.done():
                self._drop(key, call)
                call.task.cancel()

    def _finished(self, key: K, call: _Call[V], task: asyncio.Task[V]) -> None:
        self._drop(key, call)
        futures, call.futures = call.futures, []
        if task.cancelled():
            for future in futures:
                future.cancel()
            return
        error = task.exception()  # retrieved: every waiter sees it, or none was left to
        for future in futures:
            if future.done():  # its waiter was cancelled
                continue
            if error is None:
                future.set_result(task.result())
            else:
                future.set_exception(error)

    def _drop(self, key: K, call: _Call[V]) -> None:
        if self._calls.get(key) is call:
            del self._calls[key]


class StreamFanout(Generic[T]):
    """One producer, any number of subscribers, each seeing the whole stream in order.

    The producer task starts with the first subscription and is cancelled when the last
    subscriber leaves before the end (the fanout is then abandoned and takes no more
    subscribers). `on_close` runs once, when the stream ends, fails or is abandoned.
    """

    def __init__(
        self,
        source: Callable[[], AsyncIterable[T]],
        *,
        on_close: Callable[[], object] | None = None,
    ) -> None:
        self._source = source
        self._on_close = on_close
        self._items: list[T] = []
        self._error: BaseException | None = None
        self._finished = False
        self._abandoned = False
        self._subscribers = 0
        # Futures of the subscribers waiting for the next item, each its own (a cancelled
        # wait cancels only its future); none is made while every reader keeps up.
        self._waiting: list[asyncio.Future[None]] = []
        self._sinks: list[Subscription[T]] = []  # caught up, handed each item as it comes
        self._task: asyncio.Task[None] | None = None

    @property
    def subscribers(self) -> int:
        return self._subscribers

    @property
    def finished(self) -> bool:
        return self._finished

    @property
    def joinable(self) -> bool:
        return not (self._finished or self._abandoned)

    def subscribe(self) -> Subscription[T]:
        """A new reader from the first item. Must be called with a running event loop."""
        if self._abandoned:
            raise RuntimeError("stream fanout was abandoned by all its subscribers")
        self._subscribers += 1
        if self._task is None:
            self._task = asyncio.create_task(self._produce(), name="stream-fanout")
        return Subscription(self)

    def _unsubscribe(self) -> None:
        self._subscribers -= 1
        if self._subscribers == 0 and not self._finished:
            self._abandoned = True
            self._close()
            if self._task is not None:
                self._task.cancel()

    async def _produce(self) -> None:
        stream = self._source()
        try:
            async for item in stream:
                self._items.append(item)
                if self._sinks:
                    self._hand(item)
                if self._waiting:
                    self._notify()
        except asyncio.CancelledError:
            if not self._abandoned:
                self._error = StreamCancelled("shared stream was cancelled")
            raise
        except Exception as exc:
            self._error = exc
        finally:
            self._finished = True
            self._notify()
            self._release(self._sinks)
            self._sinks = []
            self._close()
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()

    def _hand(self, item: T) -> None:
        refused: list[Subscription[T]] | None = None
        for subscription in self._sinks:
            try:
                taken = subscription._write(item)
            except Exception:  # raised again where this subscriber's own path writes it
                taken = False
            if taken:
                subscription._index += 1
            else:
                refused = [subscription] if refused is None else [*refused, subscription]
        if refused is not None:
            self._sinks = [s for s in self._sinks if s not in refused]
            self._release(refused)

    def _release(self, sinks: list[Subscription[T]]) -> None:
        for subscription in sinks:
            future = subscription._handed
            if future is not None and not future.done():
                future.set_result(None)

    def _notify(self) -> None:
        waiting = self._waiting
        if waiting:
            self._waiting = []
            for future in waiting:
                if not future.done():
                    future.set_result(None)

    def _close(self) -> None:
        on_close, self._on_close = self._on_close, None
        if on_close is not None:
            on_close()


def _refuse(item: object) -> bool:
    return False


class Subscription(Generic[T]):
    """An async iterator over one fanout; leave with `async with` or aclose()."""

    def __init__(self, fanout: StreamFanout[T]) -> None:
        self._fanout = fanout
        self._index = 0
        self._closed = False
        self._write: Callable[[T], bool] = _refuse  # while forwarding: its writer
        self._handed: asyncio.Future[None] | None = None  # wakes a forward: refused, or end

    def __aiter__(self) -> Subscription[T]:
        return self

    async def __anext__(self) -> T:
        fanout = self._fanout
        while not self._closed:
            if self._index < len(fanout._items):
                self._index += 1
                return fanout._items[self._index - 1]
            if fanout._finished:
                self._leave()
                if fanout._error is not None:
                    raise fanout._error
                break
            # until the next item, the end or a failure
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            fanout._waiting.append(future)
            await future
        raise StopAsyncIteration

    async def forward(self, write: Callable[[T], bool]) -> None:
        """Hand the items to `write` as they come, in order, until it refuses one (False:
        it cannot take that item now) or the stream ends; then iterating goes on from the
        refused item, or gives the end or the failure. While this subscriber keeps up, the
        producer calls `write` itself and this task sleeps until one of those."""
        fanout = self._fanout
        items = fanout._items
        while self._index < len(items):
            if not write(items[self._index]):
                return
            self._index += 1
        if self._closed or fanout._finished:
            return
        self._write = write
        self._handed = asyncio.get_running_loop().create_future()
        fanout._sinks.append(self)
        try:
            await self._handed
        finally:
            self._write, self._handed = _refuse, None
            if self in fanout._sinks:
                fanout._sinks.remove(self)

    async def aclose(self) -> None:
        self._leave()

    async def __aenter__(self) -> Subscription[T]:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._leave()

    def _leave(self) -> None:
        if not self._closed:
            self._closed = True
            self._fanout._unsubscribe()


class StreamCoalescer(Generic[K, T]):
    """Keyed registry of in-flight StreamFanouts: join the running stream or start one."""

    def __init__(self) -> None:
        self._streams: dict[K, StreamFanout[T]] = {}

    def in_flight(self) -> int:
        return len(self._streams)

    def join(self, key: K, source: Callable[[], AsyncIterable[T]]) -> tuple[Subscription[T], bool]:
        """A subscription to the stream for `key`, and whether it joined one in flight."""
        fanout = self._streams.get(key)
        if fanout is not None and fanout.joinable:
            return fanout.subscribe(), True
        fresh: StreamFanout[T] = StreamFanout(source, on_close=lambda: self._drop(key, fresh))
        self._streams[key] = fresh
        return fresh.subscribe(), False

    def _drop(self, key: K, fanout: StreamFanout[T]) -> None:
        if self._streams.get(key) is fanout:
            del self._streams[key]
