"""SharedBreakerState on Redis: state written on changes, peers told by notices.

Keys (each command, Lua scripts included, touches one key, so a cluster needs no hash
tags):

    {prefix}:open    wall-clock `until` as text, expiring at `until` (SET ... PX)
    {prefix}:probe   this instance's random token while it holds the probe lease
                     (claimed by SET NX PX, which tells a loser the holder's PTTL;
                     renewed and released only by compare-and-set on the token)

Notices: every write of `{prefix}:open` (an opening, or its DEL on a close) and its
notice go out in one Lua script: the key is written, then
``{"k": "breaker", "b": prefix, "o": origin, "s": "open"|"closed", "u": until}`` is
PUBLISHed on the cache's invalidation channel. Each process's one subscription
(cache/invalidation.py) hands notices to `watch`'s watcher, skipping its own; after every
(re)subscription `resync` reads `{prefix}:open` once, so an opening whose notice was
lost while disconnected is adopted when the subscription is back. Nothing is read per
attempt: the breaker decides on its local copy.

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

import orjson
from redis.asyncio import Redis, RedisCluster

from promptrelay.errors import RedisUnavailable
from promptrelay.resilience.shared import PeerWatcher, ProbeClaim, SharedStateError

__all__ = ["NOTICE_KIND", "RedisBreakerState", "RedisNotices", "RedisRunner"]

_T = TypeVar("_T")

NOTICE_KIND = "breaker"

# Write the open state (SET PX, or DEL when ARGV[2] is 0), then publish its notice.
# KEYS: open; ARGV: until, ttl ms, channel, notice.
_WRITE_AND_NOTIFY = """
if tonumber(ARGV[2]) > 0 then
    redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
else
    redis.call('DEL', KEYS[1])
end
return redis.call('PUBLISH', ARGV[3], ARGV[4])
"""

# Claim the probe; a loser learns how long the holder's claim has left. {won, pttl ms}.
_CLAIM = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
    return {1, 0}
end
return {0, redis.call('PTTL', KEYS[1])}
"""

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
        self, call: Callable[[Redis | RedisCluster], Awaitable[_T]], *, budget: float | None = None
    ) -> _T: ...


class RedisNotices(RedisRunner, Protocol):
    """A RedisRunner that also carries change notices (the cache's RedisTier)."""

    @property
    def channel(self) -> str: ...

    def add_notice_listener(
        self,
        on_notice: Callable[[dict[str, object]], object],
        resync: Callable[[], Awaitable[object]],
    ) -> None: ...


class RedisBreakerState:
    def __init__(
        self,
        redis: RedisNotices,
        key_prefix: str = "promptrelay:breaker",
        *,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._redis = redis
        self._prefix = key_prefix
        self._open_key = f"{key_prefix}:open"
        self._probe_key = f"{key_prefix}:probe"
        self._token = secrets.token_hex(16)
        self._origin = secrets.token_hex(8)  # names our notices (the token stays private)
        self._wall = wall_clock
        self._watcher: PeerWatcher | None = None
        self.notices = 0  # other instances' notices applied
        self.resyncs = 0  # re-reads after a (re)subscription

    def watch(self, watcher: PeerWatcher) -> None:
        """Hand other instances' notices to `watcher`, and `resync` on each subscription."""
        self._watcher = watcher
        self._redis.add_notice_listener(self._notice, self.resync)

    async def resync(self) -> None:
        """Read the open state once and adopt an opening; RedisUnavailable on failure."""
        until = _parse_until(await self._redis.run(_awaiting(lambda r: r.get(self._open_key))))
        self.resyncs += 1
        if until is not None and self._watcher is not None:
            self._watcher.opened_elsewhere(until)

    async def read_open_until(self) -> float | None:
        return _parse_until(await self._run(lambda r: r.get(self._open_key)))

    async def publish_open(self, until: float) -> None:
        ttl_ms = math.ceil((until - self._wall()) * 1000)
        if ttl_ms > 0:
            await self._write_and_notify("open", until, ttl_ms)

    async def publish_closed(self) -> None:
        await self._write_and_notify("closed", None, 0)

    async def try_acquire_probe(self, ttl: float) -> ProbeClaim:
        args = (self._probe_key, self._token, _millis(ttl))
        won, left_ms = await self._run(lambda r: r.eval(_CLAIM, 1, *args))
        return ProbeClaim(bool(won), max(0, int(left_ms)) / 1000)

    async def renew_probe(self, ttl: float) -> bool:
        ttl_ms = _millis(ttl)
        renewed = await self._run(
            lambda r: r.eval(_RENEW_IF_OWNER, 1, self._probe_key, self._token, ttl_ms)
        )
        return bool(renewed)

    async def release_probe(self) -> None:
        await self._run(lambda r: r.eval(_RELEASE_IF_OWNER, 1, self._probe_key, self._token))

    # -- internals -----------------------------------------------------------------------

    async def _write_and_notify(self, state: str, until: float | None, ttl_ms: int) -> None:
        notice: dict[str, object] = {"k": NOTICE_KIND, "b": self._prefix, "o": self._origin}
        notice["s"] = state
        if until is not None:
            notice["u"] = until
        text = "" if until is None else repr(until)
        args = (self._open_key, text, ttl_ms, self._redis.channel, orjson.dumps(notice))
        await self._run(lambda r: r.eval(_WRITE_AND_NOTIFY, 1, *args))

    def _notice(self, message: dict[str, object]) -> None:
        """Apply another instance's notice about this breaker; ignore anything else."""
        watcher = self._watcher
        if watcher is None or message.get("k") != NOTICE_KIND:
            return
        if message.get("b") != self._prefix or message.get("o") == self._origin:
            return
        state, until = message.get("s"), message.get("u")
        self.notices += 1
        if state == "open" and isinstance(until, int | float) and math.isfinite(until):
            watcher.opened_elsewhere(float(until))
        elif state == "closed":
            watcher.closed_elsewhere()

    async def _run(self, command: Callable[[Redis | RedisCluster], Any]) -> Any:
        try:
            return await self._redis.run(_awaiting(command))
        except RedisUnavailable as exc:
            raise SharedStateError(f"redis breaker state: {exc}") from exc


def _awaiting(
    command: Callable[[Redis | RedisCluster], Any],
) -> Callable[[Redis | RedisCluster], Awaitable[Any]]:
    async def call(redis: Redis | RedisCluster) -> Any:
        # redis-py types its commands as `T | Awaitable[T]` for sync and async alike.
        return await command(redis)

    return call


def _parse_until(raw: object) -> float | None:
    if raw is None:
        return None
    try:
        until = float(raw.decode() if isinstance(raw, bytes) else str(raw))
    except (ValueError, UnicodeDecodeError):
        return None
    return until if math.isfinite(until) else None


def _millis(seconds: float) -> int:
    return max(1, math.ceil(seconds * 1000))
