"""SharedBreakerState on Redis, through the Redis tier's health-gated `run`.

Keys (each command touches one key, so a cluster needs no hash tags):

    {prefix}:open    wall-clock `until` as text, expiring at `until` (SET ... PX)
    {prefix}:probe   this instance's random token while it holds the probe lease
                     (SET NX PX to claim; renewed and released only by compare-and-set
                     on the token, in one Lua script each)

Every command goes through `runner.run` (the cache's RedisTier): while the tier is down
nothing is sent and RedisUnavailable comes back at once, so the breaker decides locally
without waiting on Redis. RedisUnavailable becomes SharedStateError, which the breaker
treats as "unknown, decide locally".
"""

from __future__ import annotations

import math
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

from redis.asyncio import Redis

from promptrelay.errors import RedisUnavailable
from promptrelay.resilience.shared import SharedStateError

__all__ = ["RedisBreakerState", "RedisRunner"]

_T = TypeVar("_T")

# Compare-and-delete: release the probe only if this instance still holds it.
_RELEASE_IF_OWNER = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
"""

# Compare-and-extend: renew the probe lease only if this instance still holds it.
_RENEW_IF_OWNER = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""


class RedisRunner(Protocol):
    """Runs one call on a Redis client; raises RedisUnavailable instead of any failure."""

    async def run(
        self, call: Callable[[Redis], Awaitable[_T]], *, budget: float | None = None
    ) -> _T: ...


class RedisBreakerState:
    def __init__(
        self,
        redis: RedisRunner,
        key_prefix: str = "promptrelay:breaker",
        *,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._redis = redis
        self._open_key = f"{key_prefix}:open"
        self._probe_key = f"{key_prefix}:probe"
        self._token = secrets.token_hex(16)
        self._wall = wall_clock

    async def read_open_until(self) -> float | None:
        raw = await self._run(lambda r: r.get(self._open_key))
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
            await self._run(lambda r: r.set(self._open_key, repr(until), px=ttl_ms))

    async def publish_closed(self) -> None:
        await self._run(lambda r: r.delete(self._open_key))

    async def try_acquire_probe(self, ttl: float) -> bool:
        ttl_ms = _millis(ttl)
        won = await self._run(lambda r: r.set(self._probe_key, self._token, nx=True, px=ttl_ms))
        return bool(won)

    async def renew_probe(self, ttl: float) -> bool:
        ttl_ms = _millis(ttl)
        renewed = await self._run(
            lambda r: r.eval(_RENEW_IF_OWNER, 1, self._probe_key, self._token, ttl_ms)
        )
        return bool(renewed)

    async def release_probe(self) -> None:
        await self._run(lambda r: r.eval(_RELEASE_IF_OWNER, 1, self._probe_key, self._token))

    async def _run(self, command: Callable[[Redis], Any]) -> Any:
        async def call(redis: Redis) -> Any:
            # redis-py types its commands as `T | Awaitable[T]` for sync and async alike.
            return await command(redis)

        try:
            return await self._redis.run(call)
        except RedisUnavailable as exc:
            raise SharedStateError(f"redis breaker state: {exc}") from exc


def _millis(seconds: float) -> int:
    return max(1, math.ceil(seconds * 1000))
