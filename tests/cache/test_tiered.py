"""TieredCache: backfill, sharing between processes, invalidation, max_age, offline."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from pydantic import SecretStr
from redis.asyncio import Redis

from promptrelay.cache import MemoryTier, RedisTier, TieredCache, TtlPolicy
from promptrelay.settings import Settings
from tests.cache.conftest import CONNECT_TIMEOUT, SOCKET_TIMEOUT, FakeClock, entry, eventually
from tests.fixtures_redis import RedisServer

KEY = "pr:t1:claude_response:k"
MakeCache = Callable[..., Awaitable[TieredCache]]


@pytest.fixture
async def make_cache(redis_server: RedisServer) -> AsyncIterator[MakeCache]:
    """TieredCaches on the test server, each a separate 'process' with its own memory."""
    caches: list[TieredCache] = []

    async def make(
        *, clock: FakeClock | None = None, redis: bool = True, **kwargs: Any
    ) -> TieredCache:
        memory = MemoryTier(max_bytes=1 << 20, clock=clock or FakeClock())
        tier = None
        if redis:
            tier = RedisTier(
                redis_server.url, socket_timeout=SOCKET_TIMEOUT, connect_timeout=CONNECT_TIMEOUT
            )
        cache = TieredCache(memory, tier, **kwargs)
        caches.append(cache)
        await cache.start()
        if tier is not None:
            assert await tier.wait_subscribed()
        return cache

    yield make
    if redis_server._stopped:
        redis_server.cont_signal()
    for cache in caches:
        await cache.close()


async def test_two_processes_share_entries(make_cache: MakeCache) -> None:
    a, b = await make_cache(), await make_cache()
    await a.set(KEY, entry(b"shared"), 60)
    await a.flush()
    got = await b.get(KEY)
    assert got is not None and got.value == b"shared"
    assert b.stats()["redis_hits"] == 1
    assert await b.get(KEY) is not None
    assert b.stats()["memory_hits"] == 1  # backfilled


async def test_backfill_keeps_the_remaining_ttl_not_a_fresh_one(make_cache: MakeCache) -> None:
    a = await make_cache()
    clock = FakeClock()
    # B's wall clock runs 6 s ahead: to B the entry has 4 of its 10 seconds left.
    b = await make_cache(clock=clock, wall_clock=lambda: time.time() + 6)
    await a.set(KEY, entry(), 10)
    await a.flush()
    assert await b.get(KEY) is not None  # from Redis, copied into B's memory
    clock.advance(3.5)
    assert b.memory.get_now(KEY) is not None
    clock.advance(1.0)
    assert b.memory.get_now(KEY) is None


async def test_clear_in_one_process_reaches_the_others_memory(make_cache: MakeCache) -> None:
    a, b = await make_cache(), await make_cache()
    other = "pr:t2:claude_response:k"
    for key in (KEY, other):
        await a.set(key, entry(), 60)
    await a.flush()
    assert await b.get(KEY) is not None and await b.get(other) is not None
    assert await a.clear("pr:t1:*") == 1
    took = await eventually(lambda: b.memory.get_now(KEY) is None, timeout=1)
    assert took < 1
    assert b.memory.get_now(other) is not None
    assert b.redis is not None and b.redis.stats()["invalidations_received"] == 1
    assert a.redis is not None and a.redis.stats()["invalidations_received"] == 0  # not its own


async def test_delete_in_one_process_reaches_the_others_memory(make_cache: MakeCache) -> None:
    a, b = await make_cache(), await make_cache()
    odd = "pr:t1:claude_response:[odd*key?]"
    for key in (KEY, odd, "pr:t1:claude_response:kk"):
        await a.set(key, entry(), 60)
    await a.flush()
    for key in (KEY, odd, "pr:t1:claude_response:kk"):
        assert await b.get(key) is not None
    assert await a.delete(KEY) is True
    assert await a.delete(odd) is True
    await eventually(lambda: b.memory.get_now(KEY) is None, timeout=1)
    await eventually(lambda: b.memory.get_now(odd) is None, timeout=1)
    assert b.memory.get_now("pr:t1:claude_response:kk") is not None  # only the exact keys


async def test_invalidation_survives_a_redis_restart(
    redis_server: RedisServer, make_cache: MakeCache
) -> None:
    a, b = await make_cache(), await make_cache(clear_memory_on_gap=True)
    assert b.redis is not None
    b.memory.set_now("pr:t1:claude_response:local", entry(), 60)
    redis_server.restart()
    await eventually(
        lambda: b.redis is not None and b.redis.stats()["subscriber"] == "subscribed"
        and b.redis.state == "up"
        and b.redis.stats()["state_changes"] >= 3,
        timeout=5,
    )  # fmt: skip
    # An invalidation may have been missed while unsubscribed: B dropped its memory.
    await eventually(lambda: b.memory.get_now("pr:t1:claude_response:local") is None, timeout=1)

    b.memory.set_now(KEY, entry(), 60)
    await eventually(lambda: a.redis is not None and a.redis.state == "up", timeout=5)
    await a.clear("pr:t1:*")
    await eventually(lambda: b.memory.get_now(KEY) is None, timeout=1)


async def test_max_age_treats_old_entries_as_misses_without_deleting(
    make_cache: MakeCache,
) -> None:
    cache = await make_cache(redis=False)
    await cache.set(KEY, entry(stored_at=time.time() - 100), 60)
    assert await cache.get(KEY, max_age=50) is None
    assert await cache.get(KEY, max_age=200) is not None
    assert await cache.get(KEY) is not None
    assert cache.stats()["stale"] == 1


async def test_max_age_finds_a_fresher_copy_in_redis(make_cache: MakeCache) -> None:
    a, b = await make_cache(), await make_cache()
    await a.set(KEY, entry(b"old", stored_at=time.time() - 100), 60, shared=False)
    await b.set(KEY, entry(b"fresh"), 60)
    await b.flush()
    got = await a.get(KEY, max_age=10)
    assert got is not None and got.value == b"fresh"
    assert a.stats()["redis_hits"] == 1


async def test_memory_only_set_stays_in_this_process(
    make_cache: MakeCache, raw_redis: Redis
) -> None:
    a, b = await make_cache(), await make_cache()
    await a.set(KEY, entry(b"offline answer"), 60, shared=False)
    await a.flush()
    assert await a.get(KEY) is not None
    assert await b.get(KEY) is None
    assert await raw_redis.exists(KEY) == 0


async def test_ttl_defaults_to_the_content_type_policy(
    make_cache: MakeCache, raw_redis: Redis
) -> None:
    cache = await make_cache(ttl_policy=TtlPolicy(default=100, by_type={"metrics": 7}))
    await cache.set("pr:t1:metrics:m", entry(content_type="metrics"))
    await cache.set("pr:t1:other:o", entry(content_type="other"))
    await cache.flush()
    assert 6_000 < await raw_redis.pttl("pr:t1:metrics:m") <= 7_000
    assert 99_000 < await raw_redis.pttl("pr:t1:other:o") <= 100_000


async def test_stats_per_tier_and_per_content_type(make_cache: MakeCache) -> None:
    cache = await make_cache()
    await cache.set(KEY, entry(), 60)
    await cache.get(KEY)
    await cache.get("pr:t1:metrics:absent")
    await cache.get("pr:t1:metrics:absent2")
    stats = cache.stats()
    assert stats["by_content_type"] == {
        "claude_response": {"hits": 1, "misses": 0},
        "metrics": {"hits": 0, "misses": 2},
    }
    assert (stats["hits"], stats["misses"], stats["memory_hits"]) == (1, 2, 1)
    assert stats["memory"]["entries"] == 1
    assert stats["redis"]["state"] == "up"


async def test_redis_down_degrades_to_memory_only(
    redis_server: RedisServer, make_cache: MakeCache
) -> None:
    cache = await make_cache()
    redis_server.kill()
    await cache.set(KEY, entry(b"still here"), 60)
    got = await cache.get(KEY)
    assert got is not None and got.value == b"still here"
    assert await cache.get("pr:t1:claude_response:absent") is None
    assert await cache.delete(KEY) is True
    assert await cache.clear() == 0
    assert cache.redis is not None
    await eventually(lambda: cache.redis is not None and cache.redis.state == "down", timeout=2)


async def test_from_settings(redis_server: RedisServer) -> None:
    settings = Settings(
        redis_enabled=True,
        redis_url=SecretStr(redis_server.url),
        memory_cache_max_bytes=1 << 20,
        cache_ttl_claude_response=42,
    )
    states: list[str] = []
    async with TieredCache.from_settings(settings, on_state=states.append) as cache:
        assert cache.redis is not None and states == ["up"]
        assert cache.memory.max_bytes == 1 << 20
        assert cache.ttl_policy.ttl_for("claude_response") == 42
    async with TieredCache.from_settings(Settings()) as memory_only:
        assert memory_only.redis is None
        assert memory_only.stats()["redis"] is None
