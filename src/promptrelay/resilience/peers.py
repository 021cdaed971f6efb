"""How many promptrelay processes share the upstream keys: the governor's divisor.

Every process that shares one Redis sees the same upstream headers (the upstream counts
all of them together), so each paces itself to 1/N of every bucket and of its refill:
together they stay under the limit without a Redis round trip per request. A process
that has not heard from Redis keeps the last N it knew (its own view); one that never
had Redis is alone (N = 1).

Redis layout: one sorted set (one key: cluster-safe), member = a random process id,
score = wall-clock time of its last beat; members silent for `ttl` seconds are dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable
from typing import Any, Protocol

from redis.exceptions import RedisError

__all__ = ["Peers", "RedisPeers", "SoloPeers"]

log = logging.getLogger("promptrelay.governor")

_KEY = "promptrelay:governor:peers"
_BUDGET = 0.5  # seconds for one beat


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
        client: Callable[[], Any],
        is_up: Callable[[], bool],
        *,
        every: float = 2.0,
        ttl: float = 6.0,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._client = client
        self._is_up = is_up
        self._every, self._ttl, self._wall = every, ttl, wall
        self._id = secrets.token_hex(8)
        self._count = 1
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
        if self._is_up():
            with contextlib.suppress(RedisError, OSError, TimeoutError):
                await asyncio.wait_for(self._client().zrem(_KEY, self._id), _BUDGET)

    async def beat(self) -> None:
        """Say we are here and count who else is; on any failure keep the last count."""
        if not self._is_up():
            return
        now = self._wall()
        try:
            pipe = self._client().pipeline(transaction=False)
            pipe.zadd(_KEY, {self._id: now})
            pipe.zremrangebyscore(_KEY, "-inf", now - self._ttl)
            pipe.zcard(_KEY)
            pipe.expire(_KEY, int(self._ttl * 2) + 1)
            results = await asyncio.wait_for(pipe.execute(), _BUDGET)
        except (RedisError, OSError, TimeoutError) as error:
            log.debug(
                "governor peers: beat failed (%s); keeping %d", type(error).__name__, self._count
            )
            return
        self._count = max(1, int(results[2]))

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._every)
            await self.beat()
