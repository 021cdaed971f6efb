"""An invalidation published while an instance was cut off is applied when it reconnects."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis

from promptrelay.cache import MemoryTier, RedisTier, TieredCache
from promptrelay.cache.topology import RedisTopology
from tests.cache.conftest import entry
from tests.fixtures_topologies import RedisClusterSet

KEY = "pr:tenant:claude_response:cleared"
KEPT = "pr:tenant:claude_response:kept"


@pytest.fixture
async def pair(redis_cluster: RedisClusterSet) -> AsyncIterator[tuple[TieredCache, TieredCache]]:
    nodes = tuple(("127.0.0.1", node.port) for node in redis_cluster.nodes)
    caches = []
    for _ in range(2):
        topology = RedisTopology("cluster", nodes=nodes, password=redis_cluster.password)
        cache = TieredCache(MemoryTier(max_bytes=1 << 20), RedisTier(topology))
        await cache.start()
        caches.append(cache)
    yield caches[0], caches[1]
    for cache in caches:
        await cache.close()


async def test_a_clear_missed_while_disconnected_is_applied_on_reconnect(
    pair: tuple[TieredCache, TieredCache], redis_cluster: RedisClusterSet
):
    a, b = pair
    assert a.redis is not None and b.redis is not None
    for cache in pair:
        assert cache.redis is not None and await cache.redis.wait_subscribed(5.0)
    await a.set(KEY, entry(b"old answer"))
    await a.set(KEPT, entry(b"kept"))
    await a.flush()
    assert await b.get(KEY) is not None and await b.get(KEPT) is not None  # now in B's memory

    cut = 0  # B's subscription only (CLIENT KILL by the id of B's named connection)
    name = f"promptrelay-subscriber-{b.redis._origin}"
    for node in redis_cluster.primaries():
        with redis.Redis(port=node.port, password=redis_cluster.password, protocol=2) as admin:
            for client in admin.client_list(_type="pubsub"):
                if client["name"] == name:
                    cut += int(admin.execute_command("CLIENT", "KILL", "ID", client["id"]))
    assert cut == 1
    assert a.redis.stats()["subscriber"] == "subscribed"
    # B resubscribes only after its back-off (0.5 s): this clear's message never reaches it.
    await a.clear(KEY)
    assert b.memory.get_now(KEY) is not None

    async def resubscribed() -> None:
        assert b.redis is not None
        while b.redis.stats()["subscriber"] != "subscribed" or b.memory.get_now(KEY):
            await asyncio.sleep(0.05)

    await asyncio.wait_for(resubscribed(), 5.0)
    assert b.redis.stats()["invalidations_received"] == 0  # the catch-up did it, not pub/sub
    assert await b.get(KEY) is None
    assert b.memory.get_now(KEPT) is not None  # only what was cleared is dropped
