"""AlertDelivery's claims on a real redis-server: two deliveries play two processes."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from promptrelay.telemetry.alerts import Notice
from promptrelay.telemetry.delivery import AlertDelivery
from tests.fixtures_redis import RedisServer


@pytest.fixture
async def client(redis_server: RedisServer) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_server.url)
    yield client
    await client.aclose()


def _notice(kind: str, severity: str) -> Notice:
    return Notice(kind, "loop_lag", severity, "event loop was blocked", 400.0, 100.0, at=0.0)


async def test_one_alert_is_delivered_once_whatever_severity_each_process_measured(
    client: Redis,
) -> None:
    async def claim(key: str, seconds: float) -> bool:
        return bool(await client.set(key, "p", nx=True, ex=round(seconds)))

    one, two = (AlertDelivery(None, cooldown=60, claim=claim) for _ in range(2))
    assert await one.deliver(_notice("firing", "medium"))
    assert not await two.deliver(_notice("firing", "high"))  # 1.2 s where one saw 0.4 s
    assert await one.deliver(_notice("escalated", "high"))
    assert not await two.deliver(_notice("escalated", "high"))
    assert await two.deliver(_notice("escalated", "critical"))  # each step once
    assert await two.deliver(_notice("resolved", "critical"))
    assert not await one.deliver(_notice("resolved", "high"))
    assert (one.delivered, two.delivered) == (2, 2)
