"""How many promptrelay processes share the upstream keys: the governor's divisor.

Every process that shares one Redis sees the same upstream headers (the upstream counts
all of them together), so each paces itself to 1/N of every bucket and of its refill:
together they stay under the limit without a Redis round trip per request. A process
that has not heard from Redis keeps the last N it knew (its own view); one that never
had Redis is alone (N = 1).

Redis layout: one sorted set (one key: cluster-safe), member = a random process id,
score = wall-clock time of its last beat; members silent for `ttl` seconds are dropped.
Silent is judged from when this process was due to beat: after a stall of its own event
loop (a starved machine stalls every process alike) it keeps the peers that beat before
the stall, instead of dropping them and taking their share of the buckets.
Every call goes through the cache tier's gate (`RedisRunner`): none while it is down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable
from typing import Any, Protocol

from redis.asyncio import Redis, RedisCluster

from promptrelay.errors import RedisUnavailable
from promptrelay.resilience.redis_state import RedisRunner

__all__ = ["Peers", "RedisPeers", "SoloPeers"]

log = logging.getLogger("promptrelay.governor")

_KEY = "promptrelay:governor:peers"


class Peers(Protocol):
    def count(self) -> int: ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...


class SoloPeers:
    def count(self) -> int:
        return 1

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None


class RedisPeers:
    def __init__(
        self,
        redis: RedisRunner,
        *,
        every: float = 2.0,
        ttl: float = 15.0,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._redis = redis
        self._every, self._ttl, self._wall = every, ttl, wall
        self._id = secrets.token_hex(8)
        self._count = 1
        self._last: float | None = None  # wall clock of our last beat Redis answered
        self._task: asyncio.Task[None] | None = None

    def count(self) -> int:
        return self._count

    async def start(self) -> None:
        await self.beat()
        self._task = asyncio.create_task(self._loop(), name="governor-peers")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        with contextlib.suppress(RedisUnavailable):
            await self._redis.run(lambda client: client.zrem(_KEY, self._id))

    async def beat(self) -> None:
        """Say we are here and count who else is; when Redis is unavailable keep the last
        count."""
        now = self._wall()
        due = now if self._last is None else min(now, self._last + self._every)

        async def beat(client: Redis | RedisCluster) -> list[Any]:
            pipe = client.pipeline(transaction=False)
            pipe.zadd(_KEY, {self._id: now})
            pipe.zremrangebyscore(_KEY, "-inf", due - self._ttl)
            pipe.zcard(_KEY)
            pipe.expire(_KEY, int(self._ttl * 2) + 1)
            return list(await pipe.execute())

        try:
            results = await self._redis.run(beat)
        except RedisUnavailable:
            log.debug("governor peers: Redis unavailable; keeping %d", self._count)
            return
        self._last = now
        self._count = max(1, int(results[2]))

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._every)
            await self.beat()
