"""Telemetry's Redis state (process registry, alert claims) goes through the tier's gate:
shared while Redis is up, local at once (no network call) while the tier is down."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from pydantic import SecretStr

from promptrelay.cache import Backoff, RedisTier
from promptrelay.core.events import EventBus
from promptrelay.settings import Settings
from promptrelay.telemetry.service import Sources, Telemetry
from promptrelay.upstream.client import PoolStats
from tests.fixtures_redis import RedisServer


@pytest.fixture
async def tier(redis_server: RedisServer) -> AsyncIterator[RedisTier]:
    # A probe far away: only the calls in the test touch Redis while it is frozen.
    tier = RedisTier(redis_server.url, socket_timeout=0.5, backoff=Backoff(base=60, cap=60))
    await tier.start()
    yield tier
    if redis_server._stopped:
        redis_server.cont_signal()
    await tier.close()


def telemetry_on(tier: RedisTier, redis_server: RedisServer) -> Telemetry:
    settings = Settings(
        redis_enabled=True,
        redis_url=SecretStr(redis_server.url),
        telemetry_interval=60,
        alert_loop_lag_ms=60_000,  # a busy machine must not fire alerts of its own here
        alert_cpu_percent=10_000,
    )
    sources = Sources(
        pool=lambda: PoolStats(50, 0, 0, 0, 0, 0, 0),
        breaker=lambda: {"state": "closed"},
        redis_state=lambda: tier.state,
        in_flight=lambda: (0, 0),
        cache_memory=lambda: (0, 0),
        trim_memory=lambda _fraction: 0,
        redis=tier,
    )
    return Telemetry(settings, EventBus(), sources)


async def test_registry_and_claims_are_shared_while_up_and_local_while_down(
    redis_server: RedisServer, tier: RedisTier
) -> None:
    one, two = telemetry_on(tier, redis_server), telemetry_on(tier, redis_server)
    one._process_id, two._process_id = "host:1", "host:2"
    for telemetry in (one, two):
        await telemetry.start()
        await telemetry.tick()
    await asyncio.gather(*one._background, *two._background)
    assert [p["process"] for p in await one.processes()] in (
        ["host:1", "host:2"],
        ["host:2", "host:1"],
    )
    assert await one._claim("promptrelay:alerts:x", 60)
    assert not await two._claim("promptrelay:alerts:x", 60)  # delivered once

    redis_server.stop_signal()
    while tier.is_up:  # telemetry's own timeouts count toward marking it down
        await one._claim("promptrelay:alerts:y", 60)
    before, delivered = tier.stats(), one.delivery.delivered
    assert await one.processes() == []  # only this process's own view is left
    assert await two._claim("promptrelay:alerts:x", 60)  # delivered here rather than lost
    await one.tick()  # fires the "redis" alert
    await asyncio.gather(*one._background, *one.delivery._tasks)
    after = tier.stats()
    # registry read, claim, snapshot write, the alert's claim: none reached Redis
    assert after["skipped"] - before["skipped"] == 4
    assert one.delivery.delivered == delivered + 1
    assert after["timeouts"] == before["timeouts"]
    for telemetry in (one, two):
        await telemetry.close()
