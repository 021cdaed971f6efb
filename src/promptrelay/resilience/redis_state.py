"""SharedBreakerState on Redis (redis-py asyncio; single node or cluster).

Keys (each command touches one key, so a cluster needs no hash tags):

    {prefix}:open    wall-clock `until` as text, expiring at `until` (SET ... PX)
    {prefix}:probe   this instance's random token while it holds the probe (SET NX PX)

Every Redis or socket error becomes SharedStateError, which the breaker treats as
"unknown, decide locally".
"""

from __future__ import annotations

import math
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any, cast

from redis.asyncio import Redis, RedisCluster
from redis.exceptions import RedisError

from promptrelay.resilience.shared import SharedStateError

__all__ = ["RedisBreakerState"]

# Compare-and-delete: release the probe only if this instance still holds it.
_RELEASE_IF_OWNER = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
"""


class RedisBreakerState:
    def __init__(
        self,
        redis_client: Redis | RedisCluster,
        key_prefix: str = "promptrelay:breaker",
        *,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._redis = redis_client
        self._open_key = f"{key_prefix}:open"
        self._probe_key = f"{key_prefix}:probe"
        self._token = secrets.token_hex(16)
        self._wall = wall_clock

    async def read_open_until(self) -> float | None:
        raw = await self._run(self._redis.get(self._open_key))
        if raw is None:
            return None
        try:
            until = float(raw.decode() if isinstance(raw, bytes) else raw)
        except (ValueError, UnicodeDecodeError):
            return None
        return until if math.isfinite(until) else None

    async def publish_open(self, until: float) -> None:
        ttl_ms = math.ceil((until - self._wall()) * 1000)
        if ttl_ms > 0:
            await self._run(self._redis.set(self._open_key, repr(until), px=ttl_ms))

    async def publish_closed(self) -> None:
        await self._run(self._redis.delete(self._open_key))

    async def try_acquire_probe(self, ttl: float) -> bool:
        ttl_ms = max(1, math.ceil(ttl * 1000))
        won = await self._run(self._redis.set(self._probe_key, self._token, nx=True, px=ttl_ms))
        return bool(won)

    async def release_probe(self) -> None:
        await self._run(self._redis.eval(_RELEASE_IF_OWNER, 1, self._probe_key, self._token))

    async def _run(self, pending: Awaitable[Any] | Any) -> Any:
        # redis-py types its commands as `T | Awaitable[T]` for sync and async clients alike.
        try:
            return await cast(Awaitable[Any], pending)
        except (RedisError, OSError, TimeoutError) as exc:
            raise SharedStateError(f"redis breaker state: {exc!r}") from exc
