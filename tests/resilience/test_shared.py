"""The async CircuitBreaker with an in-memory shared state standing in for Redis.

Two CircuitBreakers over one SharedStore play two promptrelay processes; the store
delivers each one's notices to the others as pub/sub would, and counts every operation.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from promptrelay.resilience.breaker import BreakerMachine, BreakerState, Ticket
from promptrelay.resilience.shared import CircuitBreaker
from tests.resilience.fakes import FakeClock, FakeSharedState, SharedStore

CLOSED, OPEN, HALF_OPEN = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN


def process(clock: FakeClock, store: SharedStore | None, **kwargs: Any) -> CircuitBreaker:
    machine = BreakerMachine(clock=clock, reset_timeout=60, probe_timeout=30)
    shared = FakeSharedState(store) if store is not None else None
    return CircuitBreaker(machine, shared, wall_clock=clock, **kwargs)


async def admit(breaker: CircuitBreaker) -> Ticket:
    decision = await breaker.before_call()
    assert decision.ticket is not None, decision
    return decision.ticket


async def trip_open(breaker: CircuitBreaker) -> None:
    for _ in range(breaker.machine.failure_threshold):
        await breaker.record_failure(await admit(breaker))
    assert breaker.state is OPEN


async def test_works_without_shared_state(clock: FakeClock) -> None:
    breaker = process(clock, None)
    await trip_open(breaker)
    refused = await breaker.before_call()
    assert refused.retry_after == pytest.approx(60)
    clock.advance(60)
    await breaker.record_success(await admit(breaker))
    assert breaker.state is CLOSED


async def test_one_process_opens_and_the_other_refuses(
    clock: FakeClock, store: SharedStore
) -> None:
    a, b = process(clock, store), process(clock, store)
    await trip_open(a)
    assert store.open_until == pytest.approx(clock.now + 60)
    clock.advance(5)
    refused = await b.before_call()
    assert not refused.allowed
    assert refused.retry_after == pytest.approx(55)
    assert b.state is OPEN  # adopted, so b also probes before trusting upstream again


async def test_only_one_process_wins_the_probe(clock: FakeClock, store: SharedStore) -> None:
    a, b = process(clock, store), process(clock, store)
    await trip_open(a)
    await b.before_call()
    clock.advance(60)
    decisions = await asyncio.gather(*(p.before_call() for p in [a, b] * 25))
    winners = [d for d in decisions if d.allowed]
    assert len(winners) == 1
    assert store.probe_grants == 1


async def test_probe_success_closes_shared_state_and_frees_the_probe(
    clock: FakeClock, store: SharedStore
) -> None:
    a, b = process(clock, store), process(clock, store)
    await trip_open(a)
    await b.before_call()
    clock.advance(60)
    probe = await admit(a)
    assert not (await b.before_call()).allowed  # a holds the probe
    await a.record_success(probe)
    assert a.state is CLOSED
    assert store.open_until is None and store.probe_owner is None
    # b confirms with its own single probe, now that nobody holds the lock.
    await b.record_success(await admit(b))
    assert b.state is CLOSED


async def test_probe_failure_reopens_everywhere_for_a_full_period(
    clock: FakeClock, store: SharedStore
) -> None:
    a, b = process(clock, store), process(clock, store)
    await trip_open(a)
    clock.advance(60)
    probe = await admit(a)
    clock.advance(3)
    await a.record_failure(probe)
    assert store.open_until == pytest.approx(clock.now + 60)
    assert store.probe_owner is None
    refused = await b.before_call()
    assert refused.retry_after == pytest.approx(60)


async def test_released_probe_lets_another_process_probe(
    clock: FakeClock, store: SharedStore
) -> None:
    a, b = process(clock, store), process(clock, store)
    await trip_open(a)
    await b.before_call()
    clock.advance(60)
    probe = await admit(a)
    await a.release(probe)  # the client went away: no verdict on upstream
    assert (await b.before_call()).allowed


async def test_shared_errors_fall_back_to_local_decisions(
    clock: FakeClock, store: SharedStore
) -> None:
    breaker = process(clock, store)
    store.broken = True
    assert (await breaker.before_call()).allowed  # closed locally
    await trip_open(breaker)  # publishing fails quietly
    assert not (await breaker.before_call()).allowed  # never closed by accident
    clock.advance(60)
    probe = await admit(breaker)  # probe lock unreachable: the local admission stands
    assert probe.probe
    await breaker.record_success(probe)
    assert breaker.state is CLOSED


def shared_of(breaker: CircuitBreaker) -> FakeSharedState:
    shared = breaker._shared
    assert isinstance(shared, FakeSharedState)
    return shared


async def test_open_shared_state_wins_over_a_closed_local_machine(
    clock: FakeClock, store: SharedStore
) -> None:
    breaker = process(clock, store)
    store.open_until = clock.now + 30  # opened while this process was not listening
    assert (await breaker.before_call()).allowed  # nothing read per attempt
    await shared_of(breaker).resync()  # what subscribing (again) does
    assert not (await breaker.before_call()).allowed
    store.broken = True  # redis gone while locally open: still open
    assert not (await breaker.before_call()).allowed


async def test_hanging_shared_state_times_out_to_local_decision(
    clock: FakeClock, store: SharedStore
) -> None:
    breaker = process(clock, store, shared_timeout=0.01)
    store.hang = True
    decision = await breaker.before_call()
    assert decision.allowed


async def test_fifty_concurrent_callers_in_one_process_get_one_probe(
    clock: FakeClock, store: SharedStore
) -> None:
    breaker = process(clock, store)
    await trip_open(breaker)
    clock.advance(60)
    decisions = await asyncio.gather(*(breaker.before_call() for _ in range(50)))
    assert sum(d.allowed for d in decisions) == 1
    assert breaker.state is HALF_OPEN


async def test_snapshot_reports_wall_clock_opened_at(clock: FakeClock) -> None:
    breaker = CircuitBreaker(BreakerMachine(clock=clock), wall_clock=lambda: clock.now + 5000)
    await trip_open(breaker)
    opened = clock.now
    clock.advance(10)
    snap = breaker.snapshot()
    assert snap["state"] == "open"
    assert snap["opened_at"] == pytest.approx(opened + 5000)
    assert snap["seconds_until_half_open"] == pytest.approx(50)


async def test_attempts_do_no_shared_io_while_the_state_is_unchanged(
    clock: FakeClock, store: SharedStore
) -> None:
    a, b = process(clock, store), process(clock, store)
    for _ in range(100):
        await a.record_success(await admit(a))
        await b.record_success(await admit(b))
    assert store.operations == 0
    await trip_open(a)
    assert store.operations == 1  # the opening: written once (and told to b)
    assert b.state is OPEN
    decisions = [await p.before_call() for p in [a, b] * 100]
    assert not any(d.allowed for d in decisions)
    assert store.operations == 1


async def test_a_closed_notice_closes_the_others_without_their_own_probe(
    clock: FakeClock, store: SharedStore
) -> None:
    a, b, c = (process(clock, store) for _ in range(3))
    await trip_open(a)
    clock.advance(60)
    probe = await admit(a)
    for other in (b, c):
        assert not (await other.before_call()).allowed  # each learns the holder's lease
    claims = store.claims
    for other in (b, c):
        assert not (await other.before_call()).allowed  # then refuses without asking
    assert store.claims == claims
    await a.record_success(probe)
    assert b.state is CLOSED and c.state is CLOSED
    assert store.probe_grants == 1  # one probe in all
    assert b.machine.generation == c.machine.generation  # each moved the same way
    assert (await b.before_call()).allowed


async def test_a_lost_opening_notice_is_adopted_by_the_next_resync(
    clock: FakeClock, store: SharedStore
) -> None:
    a, b = process(clock, store), process(clock, store)
    store.lose_notices = True  # b's subscription is cut
    await trip_open(a)
    assert b.state is CLOSED  # it did not hear
    clock.advance(10)
    await shared_of(b).resync()  # b subscribes again
    refused = await b.before_call()
    assert not refused.allowed and refused.retry_after == pytest.approx(50)


async def test_a_notice_for_a_probe_this_process_holds_frees_its_lock(
    clock: FakeClock, store: SharedStore
) -> None:
    a, b = process(clock, store), process(clock, store)
    await trip_open(a)
    clock.advance(60)
    probe = await admit(b)
    b.opened_elsewhere(clock.now + 60)  # someone else saw the upstream fail meanwhile
    assert b.state is OPEN
    await b.record_success(probe)  # too late to count
    assert b.state is OPEN and store.probe_owner is None and not b.holds_probe_lock
