"""Shared helpers for the cache tests: a fake clock, Redis tier factories, polling."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from redis.asyncio import Redis

from promptrelay.cache import CacheEntry, MemoryTier, RedisTier
from tests.fixtures_redis import RedisServer

# Timeouts used by every Redis tier in these tests (the settings' defaults).
SOCKET_TIMEOUT = 0.2
CONNECT_TIMEOUT = 0.2


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def entry(value: bytes = b"v", content_type: str = "claude_response", **kwargs: Any) -> CacheEntry:
    return CacheEntry(value=value, stored_at=kwargs.pop("stored_at", time.time()),
                      content_type=content_type, **kwargs)  # fmt: skip


async def eventually(
    predicate: Callable[[], bool | Awaitable[bool]], timeout: float = 5.0, interval: float = 0.01
) -> float:
    """Poll until ``predicate`` is true; return the seconds it took; fail at the deadline."""
    start = time.monotonic()
    while True:
        result = predicate()
        if not isinstance(result, bool):
            result = await result
        if result:
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def memory(clock: FakeClock) -> MemoryTier:
    return MemoryTier(max_bytes=1 << 20, max_entry_bytes=256 << 10, clock=clock)


MakeRedisTier = Callable[..., Awaitable[RedisTier]]


@pytest.fixture
async def make_redis_tier(redis_server: RedisServer) -> AsyncIterator[MakeRedisTier]:
    """Build RedisTiers on the test server (or ``url=``), started unless ``start=False``."""
    tiers: list[RedisTier] = []

    async def make(url: str | None = None, *, start: bool = True, **kwargs: Any) -> RedisTier:
        kwargs.setdefault("socket_timeout", SOCKET_TIMEOUT)
        kwargs.setdefault("connect_timeout", CONNECT_TIMEOUT)
        tier = RedisTier(url or redis_server.url, **kwargs)
        tiers.append(tier)
        if start:
            await tier.start()
        return tier

    yield make
    if redis_server.running and redis_server._stopped:
        redis_server.cont_signal()
    for tier in tiers:
        await tier.close()


@pytest.fixture
async def raw_redis(redis_server: RedisServer) -> AsyncIterator[Redis]:
    """A plain client on the test server, to look behind the tier's back."""
    client = Redis.from_url(redis_server.url)
    yield client
    await client.aclose()
