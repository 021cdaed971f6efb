"""The shared tier: Redis through redis-py asyncio, degrading to misses, never to errors.

    redis_tier = RedisTier.from_settings(settings, on_state=print)
    await redis_tier.start()        # first PING, then the background tasks
    ...
    await redis_tier.close()        # flushes what it can, stops the tasks, closes sockets

Guarantees:
- No Redis failure reaches the caller: ``get`` returns None, ``set``/``delete``/``clear``
  do nothing. Every call returns within ``connect_timeout + socket_timeout``, waiting
  for a free connection included; redis-py's own retries are off. Calls queue for one
  of ``max_connections`` slots, and those still queued when Redis is marked down skip
  it instead of each waiting out a timeout.
- Health (``cache/health.py``, performed by ``cache/gate.py``): a connection error or
  ``timeout_threshold`` timeouts in a row mark the tier down; while down no network call
  is made at all. A background probe PINGs after a growing cool-off and marks it up when
  Redis answers, after closing the pool's idle connections (an outage may have killed
  them; the first command on each would fail and flap the tier). Every state change
  (and the initial state, at ``start``) is reported to ``on_state("up"|"down")``.
- Other components that keep state in this Redis (the breaker, alert dedupe, the process
  registry) call it through ``run(call)``, the same gate: RedisUnavailable at once while
  the tier is down, their outcomes feeding its health. There is no raw client to bypass it.
- Writes are write-behind: ``set`` puts the entry into a bounded buffer (one slot per
  key, so the newest write wins) and returns; a background task writes batches through
  a pipeline with ``SET ... PX``. A full buffer drops the write and counts it. Reads see
  buffered writes, ``delete``/``clear`` cancel them and wait for an in-flight batch, so
  a write never lands after the delete that followed it.
- Values use ``cache/codec.py``; an unreadable value is a miss and is deleted.
- ``clear`` walks the keyspace with SCAN + UNLINK in batches, never KEYS.
- Credentials never leave the redis-py pool: logs, stats, repr and exceptions name
  the location only (``redis://host:port/db``, ``cluster://...``, ``sentinel://...``).
- Any topology (``cache/topology.py``): a single Redis, a Cluster or a Sentinel set.
  Every command touches one key, pipelines hold single-key commands only (a cluster
  pipeline sends each node its own), and ``clear`` SCANs every primary.
- Cross-process invalidation: ``publish_invalidation(pattern)`` and
  ``listen_invalidations(handler)`` (see ``cache/invalidation.py``); other components'
  change notices on the same channel and subscription: ``add_notice_listener``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import replace
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

from promptrelay.cache._tasks import stop_tasks
from promptrelay.cache.base import CacheEntry
from promptrelay.cache.codec import DecodeError, decode_entry, encode_entry
from promptrelay.cache.gate import FAILED, RedisGate
from promptrelay.cache.glob import glob_matcher
from promptrelay.cache.health import Backoff
from promptrelay.cache.invalidation import (
    GENERATION_KEY,
    INVALIDATION_CHANNEL,
    LOG_KEY,
    LOG_LENGTH,
    RECORD_SCRIPT,
    InvalidationListener,
    NoticeHandler,
    Notices,
    encode_message,
)
from promptrelay.cache.topology import RedisClient, RedisTopology, ScanPosition, redact_url
from promptrelay.cache.writebuffer import PendingWrite, WriteBuffer

if TYPE_CHECKING:
    from promptrelay.settings import Settings

__all__ = ["INVALIDATION_CHANNEL", "RedisTier", "redact_url"]

_log = logging.getLogger(__name__)
_KeySet = set[str]  # spelled once here: inside the classes "set" is a method
_T = TypeVar("_T")

_BOOKKEEPING = "{promptrelay:"  # hash-tagged shared state (invalidation record, telemetry)
_WRITE_BATCH = 1 << 20  # bytes per pipeline, unless one entry alone is larger
_WRITE_THROUGHPUT = 8 << 20  # bytes/s assumed when sizing a write batch's time budget
_COUNTS = (
    "hits", "misses", "sets", "writes", "write_errors", "write_dropped", "write_discarded",
    "rejected", "deletes", "decode_errors", "invalidations_published",
)  # fmt: skip


class RedisTier:
    """Redis as a cache tier. See the module docstring for the guarantees."""

    def __init__(
        self,
        url: str | RedisTopology,
        *,
        password: str | None = None,
        socket_timeout: float = 0.2,
        connect_timeout: float = 0.2,
        max_connections: int = 32,
        max_entry_bytes: int = 4 << 20,
        write_queue_max: int = 10_000,
        write_queue_max_bytes: int = 64 << 20,
        write_batch: int = 128,
        timeout_threshold: int = 3,
        backoff: Backoff | None = None,
        stable_after: float = 30.0,
        scan_count: int = 500,
        channel: str = INVALIDATION_CHANNEL,
        on_state: Callable[[str], object] | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if isinstance(url, str):
            timeouts = {"socket_timeout": socket_timeout, "connect_timeout": connect_timeout}
            url = RedisTopology.single(
                url, password=password, max_connections=max_connections, **timeouts
            )
        self._topology = url
        self.location = url.location
        self._origin = uuid.uuid4().hex
        self._client = url.client()
        self._sub_client = url.subscriber(f"promptrelay-subscriber-{self._origin}")
        self._counts = dict.fromkeys(_COUNTS, 0)  # the gate adds its own
        self._gate = RedisGate(
            self._client,
            location=self.location,
            budget=url.connect_timeout + url.socket_timeout,
            max_connections=url.max_connections,
            topology=url,
            counts=self._counts,
            timeout_threshold=timeout_threshold,
            backoff=backoff,
            stable_after=stable_after,
            on_state=on_state,
            clock=clock,
        )
        self._max_entry_bytes = max_entry_bytes
        self._write_batch = write_batch
        self._scan_count = scan_count
        self._channel = channel
        self._wall_clock = wall_clock
        self._buffer = WriteBuffer(max_items=write_queue_max, max_bytes=write_queue_max_bytes)
        self._wake = asyncio.Event()
        self._drained = asyncio.Condition()
        self._write_lock = asyncio.Lock()
        self._notices = Notices()
        self._listener = self._new_listener()
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._started = False
        self._closing = False
        self._closed = False

    def _new_listener(self) -> InvalidationListener:
        """The subscription for invalidations and notices; its handler is set later."""
        return InvalidationListener(
            partial(self._topology.pubsub, self._sub_client),
            channel=self._channel,
            origin=self._origin,
            on_failure=self._gate.record_failure,
            wait_until_up=self._gate.up.wait,
            backoff=self._gate.backoff,
            subscribe_timeout=self._topology.probe_budget,
            read_generation=self._read_generation,
            notices=self._notices,
        )

    @classmethod
    def from_settings(cls, settings: Settings, **kwargs: Any) -> RedisTier:
        """Build from ``Settings``: topology, credentials, timeouts, pool size, entry limit."""
        options: dict[str, Any] = {"max_entry_bytes": settings.cache_max_entry_bytes}
        options.update(kwargs)
        return cls(RedisTopology.from_settings(settings), **options)

    def __repr__(self) -> str:
        return f"RedisTier(location={self.location!r}, state={self.state!r})"

    @property
    def state(self) -> str:
        return self._gate.health.state

    @property
    def budget(self) -> float:
        """Seconds any one call may take (connect + socket timeout), queueing included."""
        return self._gate.budget

    async def run(
        self, call: Callable[[RedisClient], Awaitable[_T]], *, budget: float | None = None
    ) -> _T:
        """Run ``call(client)`` for another component keeping state in this Redis.

        The call goes through the tier's health (``cache/gate.py``): while the tier is
        down it raises RedisUnavailable at once, without any network call; a failure or
        a call longer than ``budget`` (default: ``budget``) raises it too, and counts
        toward marking the tier down. Use the local fallback on RedisUnavailable.
        """
        return await self._gate.run(call, budget=budget)

    @property
    def channel(self) -> str:
        """The invalidation channel, which change notices share (``add_notice_listener``)."""
        return self._channel

    @property
    def is_up(self) -> bool:
        return self._gate.health.is_up

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        """PING once, report the initial state and start the background tasks.

        Returns within one call budget whether or not Redis answers; when it does not,
        the tier starts down and the probe brings it up later by itself.
        """
        if self._started:
            return
        self._started = True
        loop = asyncio.get_running_loop()
        self._tasks["writer"] = loop.create_task(self._drain_loop(), name="redis-tier-writer")
        await self._gate.start()
        self._tasks["probe"] = loop.create_task(self._gate.probe_loop(), name="redis-tier-probe")
        self._start_listener()

    async def close(self, flush_timeout: float = 1.0) -> None:
        """Write what is buffered (bounded by ``flush_timeout``), stop tasks, close sockets."""
        if self._closing:
            return
        self._closing = True
        if self._started and self._gate.health.is_up:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(flush_timeout):
                    await self.flush()
        self._closed = True  # background loops stop at their next turn
        self._listener.stopped = True
        tasks = list(self._tasks.values())
        self._tasks.clear()
        await stop_tasks(tasks)
        await self._gate.close()
        await self._topology.close(self._client)
        await self._topology.close(self._sub_client)

    async def __aenter__(self) -> RedisTier:
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    # -- the CacheTier protocol ------------------------------------------------------

    async def get(self, key: str) -> CacheEntry | None:
        if not self._gate.health.is_up:
            self._count("skipped", "misses")
            return None
        buffered = self._buffer.lookup(key)
        if buffered is not None:
            entry = buffered.entry
            if entry is None or (entry.expires_at or 0.0) <= self._wall_clock():
                self._count("misses")
                return None
            self._count("hits")
            return entry
        raw = await self._gate.call(lambda: self._client.get(key))
        if not isinstance(raw, bytes):  # FAILED or None (no such key)
            self._count("misses")
            return None
        try:
            entry = decode_entry(raw)
        except DecodeError:
            self._count("decode_errors", "misses")
            if key not in self._buffer:  # a newer write is on its way: keep it
                self._enqueue(key, PendingWrite(None, 0, len(key)))
            return None
        self._count("hits")
        return entry

    async def set(self, key: str, entry: CacheEntry, ttl: float) -> None:
        self.set_nowait(key, entry, ttl)

    def set_nowait(self, key: str, entry: CacheEntry, ttl: float) -> bool:
        """Buffer a write; False when it was not accepted (down, too big, buffer full)."""
        self._count("sets")
        if not self._gate.health.is_up:
            self._count("write_discarded")
            return False
        if ttl <= 0 or len(entry.value) > self._max_entry_bytes:
            self._count("rejected")
            return False
        entry = replace(entry, expires_at=self._wall_clock() + ttl)
        write = PendingWrite(entry, max(1, round(ttl * 1000)), len(key) + len(entry.value) + 64)
        return self._enqueue(key, write)

    async def delete(self, key: str) -> bool:
        self._count("deletes")
        buffered = self._buffer.discard(key)
        if not self._gate.health.is_up:
            self._count("skipped")
            return buffered
        await self._barrier()
        removed = await self._gate.call(lambda: self._client.delete(key))
        return buffered or (removed is not FAILED and bool(removed))

    async def clear(self, pattern: str = "*") -> int:
        return len(await self.clear_keys(pattern))

    async def clear_keys(self, pattern: str = "*") -> _KeySet:
        """Remove every key matching the glob; return the keys that were removed."""
        removed = self._buffer.discard_matching(glob_matcher(pattern))
        if not self._gate.health.is_up:
            self._count("skipped")
            return removed
        await self._barrier()
        position: ScanPosition | None = (0, 0)
        while position is not None:
            page = await self._gate.call(partial(self._scan, position, pattern))
            if page is FAILED:
                break
            position, found = page
            # The shared bookkeeping is no cache entry: a clear of "*" must not erase it.
            keys = [key for key in found if not key.startswith(_BOOKKEEPING)]
            if keys:
                unlinked = await self._gate.call(partial(self._unlink_each, keys))
                if unlinked is FAILED:
                    break
                removed.update(key for key, count in zip(keys, unlinked, strict=True) if count)
        return removed

    def stats(self) -> dict[str, Any]:
        listener = self._listener
        subscriber = "off"
        if "listener" in self._tasks:
            subscriber = "subscribed" if listener.subscribed.is_set() else "connecting"
        return {
            "state": self._gate.health.state,
            "location": self.location,
            **self._counts,
            "write_queue": len(self._buffer),
            "write_queue_bytes": self._buffer.bytes,
            "state_changes": self._gate.health.transitions,
            "cool_off": self._gate.health.cool_off(),
            "last_error": self._gate.last_error,
            "subscriber": subscriber,
            "invalidations_received": listener.received,
        }

    async def flush(self) -> None:
        """Wait until every buffered write has been attempted (written or dropped)."""
        writer = self._tasks.get("writer")
        if writer is None or writer.done():
            return
        self._wake.set()
        async with self._drained:
            await self._drained.wait_for(lambda: self._buffer.idle)

    # -- invalidation pub/sub --------------------------------------------------------

    async def publish_invalidation(self, pattern: str) -> bool:
        """Record the clear in Redis (``cache/invalidation.py``), then tell the other
        processes' listeners to clear ``pattern``; False if not sent."""
        recorded = await self._gate.call(partial(self._record_invalidation, pattern))
        generation = recorded if isinstance(recorded, int) else None
        if generation is not None:
            self._listener.saw(generation)
        payload = encode_message(self._origin, pattern, generation)
        sent = await self._gate.call(lambda: self._client.publish(self._channel, payload))
        if sent is FAILED:
            return False
        self._count("invalidations_published")
        return True

    async def _record_invalidation(self, pattern: str) -> int:
        keys_then_args = (GENERATION_KEY, LOG_KEY, pattern, LOG_LENGTH)
        return int(await self._client.eval(RECORD_SCRIPT, 2, *keys_then_args))

    async def _read_generation(self) -> tuple[int | None, list[bytes]]:
        """The clear counter and log, read once per (re)subscription; raises on failure."""
        pipe = self._client.pipeline(transaction=False)
        pipe.get(GENERATION_KEY)
        pipe.lrange(LOG_KEY, 0, -1)
        current, log = await pipe.execute()
        return (None if current is None else int(current)), list(log)

    def listen_invalidations(
        self, handler: Callable[[str], object], *, on_gap: Callable[[], object] | None = None
    ) -> None:
        """Call ``handler(pattern)`` for every invalidation another process publishes.

        ``on_gap()`` is called when the subscription comes back after being lost (an
        invalidation may have been missed meanwhile). Starts with ``start()`` (or now,
        if already started); resubscribes by itself after Redis restarts. Call once.
        """
        if self._listener.handler is not None:
            raise RuntimeError("invalidations already have a listener")
        self._listener.handler, self._listener.on_gap = handler, on_gap
        self._start_listener()

    def add_notice_listener(
        self, on_notice: NoticeHandler, resync: Callable[[], Awaitable[object]]
    ) -> None:
        """Receive other components' change notices (``Notices`` in cache/invalidation.py)
        over the invalidation subscription, and ``await resync()`` after each
        (re)subscription. Starts the subscription, as ``listen_invalidations`` does."""
        self._notices.add(on_notice, resync)
        self._start_listener()

    async def wait_subscribed(self, timeout: float = 2.0) -> bool:
        """Wait until the invalidation subscription is active; False on timeout."""
        try:
            async with asyncio.timeout(timeout):
                await self._listener.subscribed.wait()
        except TimeoutError:
            return False
        return True

    def _start_listener(self) -> None:
        wanted = self._listener.handler is not None or bool(self._notices)
        if not wanted or not self._started or self._closing or "listener" in self._tasks:
            return
        self._tasks["listener"] = asyncio.get_running_loop().create_task(
            self._listener.run(), name="redis-tier-invalidation-listener"
        )

    # -- internals ------------------------------------------------------------------

    def _count(self, *names: str) -> None:
        for name in names:
            self._counts[name] += 1

    # -- internals: write-behind -----------------------------------------------------

    def _enqueue(self, key: str, write: PendingWrite) -> bool:
        if not self._buffer.put(key, write):
            self._count("write_dropped")
            return False
        self._wake.set()
        return True

    async def _barrier(self) -> None:
        """Wait for the write batch in flight, if any, to finish."""
        if self._buffer.inflight:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._write_budget(self._buffer.inflight)):
                    async with self._write_lock:
                        pass

    def _write_budget(self, batch: dict[str, PendingWrite]) -> float:
        return self._gate.budget + sum(write.size for write in batch.values()) / _WRITE_THROUGHPUT

    async def _drain_loop(self) -> None:
        while not self._closed:
            await self._wake.wait()
            self._wake.clear()
            while len(self._buffer):
                if not self._gate.health.is_up:
                    self._counts["write_discarded"] += self._buffer.clear()
                    break
                batch = self._buffer.take(max_items=self._write_batch, max_bytes=_WRITE_BATCH)
                try:
                    async with self._write_lock:
                        await self._write(batch)
                finally:
                    self._buffer.done()
            async with self._drained:
                self._drained.notify_all()

    async def _write(self, batch: dict[str, PendingWrite]) -> None:
        pipe = self._client.pipeline(transaction=False)
        for key, write in batch.items():
            if write.entry is None:
                # execute_command queues on every pipeline; a cluster pipeline's own
                # delete/unlink are coroutines that run at once (multi-key helpers).
                pipe.execute_command("DEL", key)
                continue
            try:
                payload = encode_entry(write.entry)
            except ValueError:
                self._count("write_errors")
                continue
            pipe.set(key, payload, px=write.ttl_ms)
        results = await self._gate.call(
            lambda: pipe.execute(raise_on_error=False), budget=self._write_budget(batch)
        )
        if results is FAILED:
            self._counts["write_errors"] += len(batch)
            return
        for result in results:
            self._count("write_errors" if isinstance(result, Exception) else "writes")

    async def _scan(
        self, position: ScanPosition, pattern: str
    ) -> tuple[ScanPosition | None, list[str]]:
        return await self._topology.scan(self._client, position, pattern, count=self._scan_count)

    async def _unlink_each(self, keys: list[str]) -> list[int]:
        """UNLINK each key in one round trip; 1 for each key that was removed."""
        pipe = self._client.pipeline(transaction=False)
        for key in keys:
            pipe.execute_command("UNLINK", key)  # queued (see _write)
        return await pipe.execute()
