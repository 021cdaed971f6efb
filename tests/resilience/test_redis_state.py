"""RedisBreakerState against a real redis-server started here (skipped if not installed)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator

import pytest
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from promptrelay.resilience.breaker import BreakerMachine, BreakerState
from promptrelay.resilience.redis_state import RedisBreakerState
from promptrelay.resilience.shared import CircuitBreaker, SharedStateError

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None, reason="no redis-server")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def redis_port() -> Iterator[int]:
    port = _free_port()
    args = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    proc = subprocess.Popen([*args, "--appendonly", "no"], stdout=subprocess.DEVNULL)
    try:
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
                break
            except OSError:
                time.sleep(0.02)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=5)


@pytest.fixture
async def client(redis_port: int) -> AsyncIterator[Redis]:
    redis = Redis(port=redis_port)
    await redis.flushdb()
    yield redis
    await redis.aclose()


async def test_open_until_round_trips_and_expires(client: Redis) -> None:
    state = RedisBreakerState(client, "t")
    assert await state.read_open_until() is None
    until = time.time() + 0.2
    await state.publish_open(until)
    assert await state.read_open_until() == pytest.approx(until)
    await state.publish_closed()
    assert await state.read_open_until() is None
    await state.publish_open(time.time() - 1)  # already over: nothing written
    assert await state.read_open_until() is None


async def test_probe_lock_is_exclusive_and_released_only_by_its_holder(client: Redis) -> None:
    a, b = RedisBreakerState(client, "t"), RedisBreakerState(client, "t")
    assert await a.try_acquire_probe(5)
    assert not await b.try_acquire_probe(5)
    await b.release_probe()  # not the holder: no effect
    assert not await b.try_acquire_probe(5)
    await a.release_probe()
    assert await b.try_acquire_probe(5)


async def test_unreachable_redis_raises_shared_state_error() -> None:
    dead = Redis(port=_free_port(), socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0))
    state = RedisBreakerState(dead, "t")
    with pytest.raises(SharedStateError):
        await state.read_open_until()
    breaker = CircuitBreaker(BreakerMachine(), state)
    assert (await breaker.before_call()).allowed
    await dead.aclose()


async def test_two_processes_share_an_opening(client: Redis) -> None:
    a = CircuitBreaker(BreakerMachine(failure_threshold=1), RedisBreakerState(client, "p"))
    b = CircuitBreaker(BreakerMachine(failure_threshold=1), RedisBreakerState(client, "p"))
    decision = await a.before_call()
    assert decision.ticket is not None
    await a.record_failure(decision.ticket)
    refused = await b.before_call()
    assert not refused.allowed
    assert 59 < refused.retry_after <= 60
    assert b.state is BreakerState.OPEN
