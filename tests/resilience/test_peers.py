"""RedisPeers (the governor's divisor) on a real redis-server, wall clocks injected: two
instances play two processes."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from promptrelay.cache.redis import RedisTier
from promptrelay.resilience.peers import RedisPeers
from tests.fixtures_redis import RedisServer


class Wall:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def tier(redis_server: RedisServer) -> AsyncIterator[RedisTier]:
    tier = RedisTier(redis_server.url, socket_timeout=1.0, connect_timeout=1.0)
    await tier.start()
    yield tier
    await tier.close()


async def test_a_stall_of_the_whole_machine_drops_no_peer_a_silent_one_is_dropped(
    tier: RedisTier,
) -> None:
    wall = Wall()
    one, two = (RedisPeers(tier, every=2.0, ttl=6.0, wall=wall) for _ in range(2))
    await one.beat()
    await two.beat()
    assert (one.count(), two.count()) == (1, 2)
    await one.beat()
    assert one.count() == 2

    wall.now += 10.0  # both event loops stalled past the TTL; `one` wakes first
    await one.beat()
    assert one.count() == 2  # `two` beat when `one` last did: it stalled alike
    await two.beat()
    assert two.count() == 2

    for _ in range(4):  # `two` stays silent while `one` beats on time
        wall.now += 2.0
        await one.beat()
    assert one.count() == 1
