"""RedisBreakerState through a RedisTier on a real redis-server (tests/fixtures_redis.py)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from promptrelay.cache.health import Backoff
from promptrelay.cache.redis import RedisTier
from promptrelay.resilience.breaker import BreakerMachine, BreakerState
from promptrelay.resilience.redis_state import RedisBreakerState
from promptrelay.resilience.shared import CircuitBreaker, SharedStateError
from tests.fixtures_redis import RedisServer, free_port


@pytest.fixture
async def client(redis_server: RedisServer) -> AsyncIterator[RedisTier]:
    tier = RedisTier(redis_server.url, socket_timeout=1.0, connect_timeout=1.0)
    await tier.start()
    yield tier
    await tier.close()


async def test_open_until_round_trips_and_expires(client: RedisTier) -> None:
    state = RedisBreakerState(client, "t")
    assert await state.read_open_until() is None
    until = time.time() + 0.2
    await state.publish_open(until)
    assert await state.read_open_until() == pytest.approx(until)
    await state.publish_closed()
    assert await state.read_open_until() is None
    await state.publish_open(time.time() - 1)  # already over: nothing written
    assert await state.read_open_until() is None


async def test_probe_lock_is_exclusive_and_released_only_by_its_holder(client: RedisTier) -> None:
    a, b = RedisBreakerState(client, "t"), RedisBreakerState(client, "t")
    assert await a.try_acquire_probe(5)
    assert not await b.try_acquire_probe(5)
    await b.release_probe()  # not the holder: no effect
    assert not await b.try_acquire_probe(5)
    await a.release_probe()
    assert await b.try_acquire_probe(5)


async def test_unreachable_redis_raises_shared_state_error() -> None:
    dead = RedisTier(f"redis://127.0.0.1:{free_port()}/0", connect_timeout=0.2)
    await dead.start()
    state = RedisBreakerState(dead, "t")
    with pytest.raises(SharedStateError):
        await state.read_open_until()
    breaker = CircuitBreaker(BreakerMachine(), state)
    assert (await breaker.before_call()).allowed
    await dead.close()


async def test_two_processes_share_an_opening(client: RedisTier) -> None:
    a = CircuitBreaker(BreakerMachine(failure_threshold=1), RedisBreakerState(client, "p"))
    b = CircuitBreaker(BreakerMachine(failure_threshold=1), RedisBreakerState(client, "p"))
    decision = await a.before_call()
    assert decision.ticket is not None
    await a.record_failure(decision.ticket)
    refused = await b.before_call()
    assert not refused.allowed
    assert 59 < refused.retry_after <= 60
    assert b.state is BreakerState.OPEN


async def test_probe_lease_is_renewed_only_by_its_holder(client: RedisTier) -> None:
    a, b = RedisBreakerState(client, "t"), RedisBreakerState(client, "t")
    assert await a.try_acquire_probe(0.5)
    assert not await b.renew_probe(30)
    assert await a.renew_probe(30)
    ttl_ms = await client.run(lambda redis: redis.pttl("t:probe"))
    assert 29_000 < ttl_ms <= 30_000
    await a.release_probe()
    assert not await a.renew_probe(30)  # released: nothing left to renew
    assert await b.try_acquire_probe(1)


async def test_a_dead_holders_lease_lapses_by_itself(client: RedisTier) -> None:
    a, b = RedisBreakerState(client, "t"), RedisBreakerState(client, "t")
    assert await a.try_acquire_probe(0.2)
    assert not await b.try_acquire_probe(5)
    deadline = time.monotonic() + 5
    while not await b.try_acquire_probe(5):  # a never renews: it "died"
        assert time.monotonic() < deadline, "the lease never lapsed"
        await asyncio.sleep(0.05)
    assert not await a.renew_probe(5)


async def test_while_the_tier_is_down_no_command_is_sent(redis_server: RedisServer) -> None:
    # A probe far away: nothing but the calls below may touch Redis during the test.
    tier = RedisTier(redis_server.url, socket_timeout=0.5, backoff=Backoff(base=60, cap=60))
    await tier.start()
    state = RedisBreakerState(tier, "t")
    redis_server.stop_signal()
    while tier.is_up:  # timeouts mark it down
        with pytest.raises(SharedStateError):
            await state.read_open_until()
    before = tier.stats()
    for _ in range(50):
        with pytest.raises(SharedStateError):
            await state.read_open_until()
        with pytest.raises(SharedStateError):
            await state.try_acquire_probe(5)
    after = tier.stats()
    assert after["skipped"] - before["skipped"] == 100
    assert after["timeouts"] == before["timeouts"]
    breaker = CircuitBreaker(BreakerMachine(), state)
    assert (await breaker.before_call()).allowed  # decided locally
    redis_server.cont_signal()
    await tier.close()
