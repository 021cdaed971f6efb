"""One contract, every tier: memory, Redis (real redis-server) and the tiered cache."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from promptrelay.cache import CacheEntry, CacheTier, MemoryTier, RedisTier, TieredCache
from promptrelay.cache.topology import RedisTopology
from tests.cache.conftest import CONNECT_TIMEOUT, SOCKET_TIMEOUT, FakeClock, entry
from tests.fixtures_redis import RedisServer
from tests.fixtures_topologies import RedisClusterSet, SentinelSet


@dataclass
class Harness:
    """A tier plus the way to let time pass and buffered writes land for it."""

    tier: Any
    clock: FakeClock | None
    real_time: bool
    short_ttl: float

    async def settle(self) -> None:
        if isinstance(self.tier, RedisTier | TieredCache):
            await self.tier.flush()

    async def advance(self, seconds: float) -> None:
        if self.clock is not None:
            self.clock.advance(seconds)
        if self.real_time:
            await asyncio.sleep(seconds)


def _topology_tier(request: pytest.FixtureRequest) -> RedisTier:
    """The Redis tier on the topology the parameter names (fixtures started on demand)."""
    if request.param == "redis-cluster":
        cluster: RedisClusterSet = request.getfixturevalue("redis_cluster")
        nodes = tuple(("127.0.0.1", node.port) for node in cluster.nodes)
        return RedisTier(
            RedisTopology(
                "cluster",
                nodes=nodes,
                password=cluster.password,
                socket_timeout=SOCKET_TIMEOUT,
                connect_timeout=CONNECT_TIMEOUT,
            )
        )
    if request.param == "redis-sentinel":
        sentinel: SentinelSet = request.getfixturevalue("redis_sentinel")
        sentinels = tuple(("127.0.0.1", port) for port in sentinel.sentinel_ports)
        return RedisTier(
            RedisTopology(
                "sentinel",
                nodes=sentinels,
                master=sentinel.master_name,
                socket_timeout=SOCKET_TIMEOUT,
                connect_timeout=CONNECT_TIMEOUT,
            )
        )
    server: RedisServer = request.getfixturevalue("redis_server")  # only when needed
    return RedisTier(server.url, socket_timeout=SOCKET_TIMEOUT, connect_timeout=CONNECT_TIMEOUT)


@pytest.fixture(params=["memory", "redis", "tiered", "redis-cluster", "redis-sentinel"])
async def harness(request: pytest.FixtureRequest, clock: FakeClock) -> AsyncIterator[Harness]:
    if request.param == "memory":
        yield Harness(MemoryTier(max_bytes=1 << 20, clock=clock), clock, False, 1.0)
        return
    redis_tier = _topology_tier(request)
    if request.param != "tiered":
        await redis_tier.start()
        yield Harness(redis_tier, None, True, 0.3)
        await redis_tier.close()
        return
    cache = TieredCache(MemoryTier(max_bytes=1 << 20, clock=clock), redis_tier)
    await cache.start()
    yield Harness(cache, clock, True, 0.3)
    await cache.close()


def _conforms(memory: MemoryTier, redis: RedisTier, tiered: TieredCache) -> list[CacheTier]:
    return [memory, redis, tiered]  # mypy checks each against the protocol


async def test_is_a_cache_tier(harness: Harness) -> None:
    assert isinstance(harness.tier, CacheTier)


async def test_round_trip(harness: Harness) -> None:
    stored = entry(b'{"id": "msg_1"}', meta={"status": 200, "model": "claude"})
    await harness.tier.set("pr:t1:claude_response:aa", stored, 60)
    await harness.settle()
    got = await harness.tier.get("pr:t1:claude_response:aa")
    assert isinstance(got, CacheEntry)
    assert (got.value, got.stored_at, got.content_type) == (
        stored.value,
        stored.stored_at,
        stored.content_type,
    )
    assert dict(got.meta or {}) == {"status": 200, "model": "claude"}
    assert got.expires_at is not None
    assert got.expires_at == pytest.approx(stored.stored_at + 60, abs=2)


async def test_missing_key_is_none(harness: Harness) -> None:
    assert await harness.tier.get("pr:t1:claude_response:nothing") is None


async def test_ttl_expiry(harness: Harness) -> None:
    await harness.tier.set("pr:t1:metrics:short", entry(b"short"), harness.short_ttl)
    await harness.tier.set("pr:t1:metrics:long", entry(b"long"), 60)
    await harness.settle()
    assert await harness.tier.get("pr:t1:metrics:short") is not None
    await harness.advance(harness.short_ttl + 0.05)
    assert await harness.tier.get("pr:t1:metrics:short") is None
    long = await harness.tier.get("pr:t1:metrics:long")
    assert long is not None and long.value == b"long"


async def test_delete(harness: Harness) -> None:
    await harness.tier.set("pr:t1:claude_response:d", entry(), 60)
    await harness.settle()
    assert await harness.tier.delete("pr:t1:claude_response:d") is True
    assert await harness.tier.get("pr:t1:claude_response:d") is None
    assert await harness.tier.delete("pr:t1:claude_response:d") is False


async def test_clear_glob_counts_and_removes_exactly_the_matches(harness: Harness) -> None:
    keys = [
        "pr:tenantA:claude_response:1",
        "pr:tenantA:claude_response:2",
        "pr:tenantA:template_content:3",
        "pr:tenantAB:claude_response:4",
        "pr:tenantB:claude_response:5",
        "pr:tenantB:metrics:6",
        "other:tenantA:x",
    ]
    for key in keys:
        await harness.tier.set(key, entry(key.encode()), 60)
    await harness.settle()

    assert await harness.tier.clear("pr:tenantA:*") == 3
    for key in keys[:3]:
        assert await harness.tier.get(key) is None
    for key in keys[3:]:
        assert await harness.tier.get(key) is not None, key

    assert await harness.tier.clear("pr:tenant?:[l-z]*") == 1  # tenantB:metrics
    assert await harness.tier.get("pr:tenantB:metrics:6") is None
    assert await harness.tier.clear("pr:nobody:*") == 0
    assert await harness.tier.clear() == 3
    for key in keys:
        assert await harness.tier.get(key) is None


async def test_clear_ignores_expired_entries_in_its_count(harness: Harness) -> None:
    await harness.tier.set("pr:t1:metrics:gone", entry(), harness.short_ttl)
    await harness.tier.set("pr:t1:metrics:kept", entry(), 60)
    await harness.settle()
    await harness.advance(harness.short_ttl + 0.05)
    assert await harness.tier.clear("pr:t1:*") == 1


async def test_overwrite(harness: Harness) -> None:
    await harness.tier.set("pr:t1:claude_response:o", entry(b"first"), 60)
    await harness.settle()
    await harness.tier.set("pr:t1:claude_response:o", entry(b"second", "template_content"), 60)
    await harness.settle()
    got = await harness.tier.get("pr:t1:claude_response:o")
    assert got is not None
    assert (got.value, got.content_type) == (b"second", "template_content")


@pytest.mark.parametrize(
    "value",
    [b"", bytes(range(256)) * 8, b"\r\n*1\r\n$4\r\nPING\r\n", b"\x01\x00\x02{}", b"\xff" * 70_000],
    ids=["empty", "all-bytes", "resp-lookalike", "codec-lookalike", "large"],
)
async def test_binary_values(harness: Harness, value: bytes) -> None:
    await harness.tier.set("pr:t1:claude_response:bin", entry(value), 60)
    await harness.settle()
    got = await harness.tier.get("pr:t1:claude_response:bin")
    assert got is not None and got.value == value


async def test_stats_count_hits_and_misses(harness: Harness) -> None:
    before = harness.tier.stats()
    await harness.tier.set("pr:t1:claude_response:s", entry(), 60)
    await harness.settle()
    await harness.tier.get("pr:t1:claude_response:s")
    await harness.tier.get("pr:t1:claude_response:s")
    await harness.tier.get("pr:t1:claude_response:absent")
    after = harness.tier.stats()
    assert after["hits"] - before["hits"] == 2
    assert after["misses"] - before["misses"] == 1
