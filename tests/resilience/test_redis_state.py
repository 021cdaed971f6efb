"""RedisBreakerState through a RedisTier on a real redis-server (tests/fixtures_redis.py)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest

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
