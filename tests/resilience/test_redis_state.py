"""RedisBreakerState through a RedisTier on a real redis-server (tests/fixtures_redis.py).

Two tiers on one server play two processes; Redis's own INFO commandstats counts what
the breaker sends."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import pytest
import redis

from promptrelay.cache.health import Backoff
from promptrelay.cache.redis import RedisTier
from promptrelay.errors import RedisUnavailable
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


@pytest.fixture
async def tiers(redis_server: RedisServer) -> AsyncIterator[tuple[RedisTier, RedisTier]]:
    """Two Redis tiers: the connections of two processes."""
    pair = [RedisTier(redis_server.url, socket_timeout=1.0, connect_timeout=1.0) for _ in "ab"]
    for tier in pair:
        await tier.start()
    yield pair[0], pair[1]
    for tier in pair:
        await tier.close()


def sent(server: RedisServer) -> dict[str, int]:
    """Commands the server has executed so far, by name (INFO itself left out)."""
    with redis.Redis(port=server.port, protocol=2) as admin:
        stats = admin.info("commandstats")
    calls = {name.removeprefix("cmdstat_"): int(row["calls"]) for name, row in stats.items()}
    calls.pop("info", None)
    return calls


def grown(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """The commands executed between two `sent` readings, with their counts."""
    return {name: n - before.get(name, 0) for name, n in after.items() if n != before.get(name, 0)}


async def until(check: Callable[[], bool], seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def listening(*breakers: CircuitBreaker) -> None:
    """Until each breaker listens for notices and has read the shared state once."""
    states = []
    for breaker in breakers:
        state = breaker._shared
        assert isinstance(state, RedisBreakerState)
        states.append(state)
    await until(lambda: all(state.resyncs >= 1 for state in states))


def pair_on(tiers: tuple[RedisTier, RedisTier], threshold: int) -> list[CircuitBreaker]:
    return [
        CircuitBreaker(BreakerMachine(failure_threshold=threshold), RedisBreakerState(tier, "p"))
        for tier in tiers
    ]


async def attempts(breaker: CircuitBreaker, count: int) -> int:
    """`count` attempts, each a success when admitted; how many were admitted."""
    admitted = 0
    for _ in range(count):
        decision = await breaker.before_call()
        if decision.ticket is not None:
            admitted += 1
            await breaker.record_success(decision.ticket)
    return admitted


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
    assert (await a.try_acquire_probe(5)).won
    lost = await b.try_acquire_probe(5)
    assert not lost.won and 4 < lost.held_for <= 5  # the holder's PTTL
    await b.release_probe()  # not the holder: no effect
    assert not (await b.try_acquire_probe(5)).won
    await a.release_probe()
    assert (await b.try_acquire_probe(5)).won


async def test_unreachable_redis_raises_shared_state_error() -> None:
    dead = RedisTier(f"redis://127.0.0.1:{free_port()}/0", connect_timeout=0.2)
    await dead.start()
    state = RedisBreakerState(dead, "t")
    with pytest.raises(SharedStateError):
        await state.read_open_until()
    breaker = CircuitBreaker(BreakerMachine(), state)
    assert (await breaker.before_call()).allowed
    await dead.close()


async def test_two_processes_share_an_opening_by_a_notice(
    tiers: tuple[RedisTier, RedisTier],
) -> None:
    a, b = pair_on(tiers, threshold=1)
    await listening(a, b)
    decision = await a.before_call()
    assert decision.ticket is not None
    await a.record_failure(decision.ticket)
    await until(lambda: b.state is BreakerState.OPEN)  # pushed: b has not been asked
    refused = await b.before_call()
    assert not refused.allowed
    assert 59 < refused.retry_after <= 60


async def test_attempts_send_nothing_to_redis_while_the_state_is_unchanged(
    tiers: tuple[RedisTier, RedisTier], redis_server: RedisServer
) -> None:
    a, b = pair_on(tiers, threshold=3)
    await listening(a, b)
    before = sent(redis_server)
    assert await attempts(a, 200) == 200 and await attempts(b, 200) == 200
    for _ in range(2):  # failures below the threshold are counted locally
        decision = await a.before_call()
        assert decision.ticket is not None
        await a.record_failure(decision.ticket)
    assert grown(before, sent(redis_server)) == {}  # 404 attempts, not one command
    decision = await a.before_call()
    assert decision.ticket is not None
    await a.record_failure(decision.ticket)  # the third: a opens, writes and tells b
    await until(lambda: b.state is BreakerState.OPEN)
    opened = sent(redis_server)
    assert grown(before, opened) == {"eval": 1, "set": 1, "publish": 1}
    assert await attempts(a, 200) == 0 and await attempts(b, 200) == 0
    assert grown(opened, sent(redis_server)) == {}  # 400 refusals, not one command


async def test_a_probe_success_closes_the_others_without_their_own_probe(
    tiers: tuple[RedisTier, RedisTier],
) -> None:
    machines = [BreakerMachine(failure_threshold=1, reset_timeout=0.2) for _ in tiers]
    a, b = (
        CircuitBreaker(m, RedisBreakerState(t, "p")) for m, t in zip(machines, tiers, strict=True)
    )
    await listening(a, b)
    decision = await a.before_call()
    assert decision.ticket is not None
    await a.record_failure(decision.ticket)
    await until(lambda: b.state is BreakerState.OPEN)
    await asyncio.sleep(0.25)  # past the reset timeout: both may probe now
    probe = await a.before_call()
    assert probe.ticket is not None and probe.ticket.probe
    refused = await b.before_call()  # b loses the claim: a holds the lease
    assert not refused.allowed and 0 < refused.retry_after <= a.lease.duration
    assert not (await b.before_call()).allowed  # refused locally until that lease ends
    await a.record_success(probe.ticket)
    await until(lambda: b.state is BreakerState.CLOSED)
    assert machines[1].probe_in_flight is False
    assert (await b.before_call()).allowed


async def test_an_opening_whose_notice_was_lost_is_adopted_on_resubscribing(
    tiers: tuple[RedisTier, RedisTier], redis_server: RedisServer
) -> None:
    a, b = pair_on(tiers, threshold=1)
    b_state = b._shared
    assert isinstance(b_state, RedisBreakerState)
    await listening(a, b)
    resyncs = b_state.resyncs
    name = f"promptrelay-subscriber-{tiers[1]._origin}"
    with redis.Redis(port=redis_server.port, protocol=2) as admin:
        ids = [c["id"] for c in admin.client_list(_type="pubsub") if c["name"] == name]
        assert len(ids) == 1
        assert admin.execute_command("CLIENT", "KILL", "ID", ids[0]) == 1
    # b resubscribes only after its back-off (0.5 s): this opening's notice never reaches it.
    decision = await a.before_call()
    assert decision.ticket is not None
    await a.record_failure(decision.ticket)
    assert b.state is BreakerState.CLOSED
    await until(lambda: b.state is BreakerState.OPEN)
    assert b_state.notices == 0 and b_state.resyncs == resyncs + 1  # the re-read did it
    assert not (await b.before_call()).allowed


async def test_probe_lease_is_renewed_only_by_its_holder(client: RedisTier) -> None:
    a, b = RedisBreakerState(client, "t"), RedisBreakerState(client, "t")
    assert (await a.try_acquire_probe(0.5)).won
    assert not await b.renew_probe(30)
    assert await a.renew_probe(30)
    ttl_ms = await client.run(lambda redis: redis.pttl("t:probe"))
    assert 29_000 < ttl_ms <= 30_000
    await a.release_probe()
    assert not await a.renew_probe(30)  # released: nothing left to renew
    assert (await b.try_acquire_probe(1)).won


async def test_a_dead_holders_lease_lapses_by_itself(client: RedisTier) -> None:
    a, b = RedisBreakerState(client, "t"), RedisBreakerState(client, "t")
    assert (await a.try_acquire_probe(0.2)).won
    assert not (await b.try_acquire_probe(5)).won
    deadline = time.monotonic() + 5
    while not (await b.try_acquire_probe(5)).won:  # a never renews: it "died"
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


async def test_a_failed_resync_is_retried_and_never_costs_the_subscription(
    redis_server: RedisServer,
) -> None:
    tier = RedisTier(redis_server.url, backoff=Backoff(base=0.05, cap=0.05))
    calls: list[float] = []

    async def resync() -> None:
        calls.append(time.monotonic())
        if len(calls) == 1:
            raise RedisUnavailable("the first read failed")

    tier.add_notice_listener(lambda message: None, resync)
    await tier.start()
    assert await tier.wait_subscribed(5.0)
    with redis.Redis(port=redis_server.port, protocol=2) as admin:
        subscribers = [client["id"] for client in admin.client_list(_type="pubsub")]
        await until(lambda: len(calls) >= 2)  # tried again after the back-off
        assert [client["id"] for client in admin.client_list(_type="pubsub")] == subscribers
    assert len(subscribers) == 1 and tier.stats()["subscriber"] == "subscribed"
    await asyncio.sleep(0.2)
    assert len(calls) == 2  # done once it succeeded
    await tier.close()
