"""RedisTier.run (the gate other components use) and pool renewal, on a real redis-server."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis, RedisCluster

from promptrelay.cache import Backoff, RedisTier
from promptrelay.errors import RedisUnavailable
from tests.cache.conftest import MakeRedisTier, entry, eventually
from tests.fixtures_redis import RedisServer


async def test_run_answers_while_up_and_raises_at_once_while_down(
    redis_server: RedisServer, make_redis_tier: MakeRedisTier
) -> None:
    tier = await make_redis_tier(socket_timeout=0.5, backoff=Backoff(base=60, cap=60))

    async def set_then_get(client: Redis | RedisCluster) -> object:
        await client.set("pr:gate", b"v")
        return await client.get("pr:gate")

    assert await tier.run(set_then_get) == b"v"
    redis_server.stop_signal()
    timeouts = 0
    while tier.is_up:  # run's own timeouts feed the tier's health
        with pytest.raises(RedisUnavailable):
            await tier.run(lambda client: client.get("pr:gate"))
        timeouts += 1
    assert timeouts == 3 and tier.stats()["timeouts"] == 3
    before = tier.stats()
    for _ in range(100):
        with pytest.raises(RedisUnavailable):
            await tier.run(lambda client: client.get("pr:gate"))
    after = tier.stats()
    assert after["skipped"] - before["skipped"] == 100  # no command was sent
    assert after["timeouts"] == before["timeouts"]


async def test_run_errors_are_redis_unavailable_and_a_connection_error_marks_down(
    redis_server: RedisServer, make_redis_tier: MakeRedisTier
) -> None:
    tier = await make_redis_tier(backoff=Backoff(base=60, cap=60))
    with pytest.raises(RedisUnavailable):  # a command error: counted, not an outage
        await tier.run(lambda client: client.eval("return redis.call('NO-SUCH-COMMAND')", 0))
    assert tier.is_up and tier.stats()["errors"] == 1
    redis_server.kill()
    with pytest.raises(RedisUnavailable):
        await tier.run(lambda client: client.get("pr:gate"))
    assert not tier.is_up and tier.stats()["connection_errors"] >= 1


async def test_restart_under_load_goes_down_and_up_once_then_stays_up(
    redis_server: RedisServer, make_redis_tier: MakeRedisTier
) -> None:
    # Timeouts generous enough that a starved machine cannot mark the tier down by itself
    # (a Redis that is gone fails at once: connection refused or reset).
    tier = await make_redis_tier(socket_timeout=5.0, connect_timeout=5.0)
    await fill(tier)
    stop = asyncio.Event()

    async def worker(index: int) -> None:
        while not stop.is_set():  # 40 at once: the pool holds many connections
            await tier.get(f"pr:load:{index}")
            await asyncio.sleep(0.005)

    # Each wait is for a state, never for a throughput: a starved machine takes longer.
    workers = [asyncio.create_task(worker(index)) for index in range(40)]
    try:
        await eventually(lambda: tier.stats()["hits"] > 400, timeout=60)
        assert tier.stats()["state_changes"] == 1  # the initial "up"
        redis_server.restart()  # every pooled connection is now dead
        await eventually(lambda: tier.stats()["state_changes"] >= 3 and tier.is_up, timeout=60)
        await fill(tier)  # the restarted server is empty
        hits = tier.stats()["hits"]
        await eventually(lambda: tier.stats()["hits"] > hits + 2000, timeout=60)
        await asyncio.sleep(1.0)  # stays up: no stale connection left to fail
    finally:
        stop.set()
        await asyncio.gather(*workers)
    assert tier.is_up and tier.stats()["state_changes"] == 3


async def fill(tier: RedisTier) -> None:
    for index in range(40):
        await tier.set(f"pr:load:{index}", entry(), 60)
    await tier.flush()
