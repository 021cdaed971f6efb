"""The probe lease: pure decisions, then the breaker holding it, on a fake clock.

Two CircuitBreakers over one SharedStore play two processes. Each breaker's renewal
sleeps on a ManualSleep: its time passes only when the test says so (`elapse`), and a
process whose sleeper is never woken behaves as one that died mid-probe.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from promptrelay.resilience.breaker import BreakerMachine, BreakerState, Reason, Ticket
from promptrelay.resilience.lease import ProbeLease
from promptrelay.resilience.shared import CircuitBreaker
from tests.resilience.fakes import FakeClock, FakeSharedState, SharedStore

CLOSED, OPEN, HALF_OPEN = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN
LEASE = 5.0
PROBE_TIMEOUT = 30.0
RESET = 60.0

# -- the pure decisions ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("left", "ttl", "renew_in"),
    [
        (None, None, None),  # no probe in flight
        (0.0, None, None),  # the head deadline has come: let the lock lapse
        (-1.0, None, None),
        (30.0, 5.0, 5.0 / 3),  # a full lease, renewed every third of it
        (4.0, 4.0, 5.0 / 3),  # the lease never outlasts the head deadline
        (1.0, 1.0, 1.0),  # the last wait ends at the deadline
    ],
)
def test_ttl_and_renewal_follow_the_head_deadline(
    left: float | None, ttl: float | None, renew_in: float | None
) -> None:
    lease = ProbeLease(LEASE)
    assert lease.ttl(left) == ttl
    assert lease.renew_in(left) == (None if renew_in is None else pytest.approx(renew_in))


@pytest.mark.parametrize(
    ("left", "expected"),
    [(None, 5.0), (30.0, 5.0), (3.0, 3.0), (0.0, 0.0), (-2.0, 0.0)],
)
def test_retry_after_while_half_open_is_bounded_by_the_lease(
    left: float | None, expected: float
) -> None:
    assert ProbeLease(LEASE).retry_after(left) == expected


def test_a_lease_must_last() -> None:
    with pytest.raises(ValueError):
        ProbeLease(0)


# -- the breaker holding the lease -------------------------------------------------------


class ManualSleep:
    """A sleep whose time passes when the test calls `elapse` (moving the fake clock)."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.waits: list[float] = []
        self._pending: tuple[float, asyncio.Future[None]] | None = None

    async def __call__(self, seconds: float) -> None:
        future = asyncio.get_running_loop().create_future()
        self._pending = (seconds, future)
        self.waits.append(seconds)
        await future

    @property
    def sleeping(self) -> bool:
        return self._pending is not None and not self._pending[1].done()

    async def elapse(self) -> float:
        """Let the pending sleep end (the clock moves by its length); return that length."""
        await settle()
        assert self._pending is not None and not self._pending[1].done(), "nobody sleeps"
        seconds, future = self._pending
        self.clock.advance(seconds)
        future.set_result(None)
        await settle()
        return seconds


async def settle() -> None:
    """Let every ready task run to its next real wait (the fake state's I/O yields once)."""
    for _ in range(10):
        await asyncio.sleep(0)


def process(clock: FakeClock, store: SharedStore, **kwargs: Any) -> CircuitBreaker:
    machine = BreakerMachine(
        clock=clock, failure_threshold=1, reset_timeout=RESET, probe_timeout=PROBE_TIMEOUT
    )
    return CircuitBreaker(
        machine,
        FakeSharedState(store),
        lease=ProbeLease(LEASE),
        wall_clock=clock,
        sleep=ManualSleep(clock),
        **kwargs,
    )


def sleeper(breaker: CircuitBreaker) -> ManualSleep:
    sleep = breaker._sleep
    assert isinstance(sleep, ManualSleep)
    return sleep


async def probe_in(a: CircuitBreaker, b: CircuitBreaker, clock: FakeClock) -> Ticket:
    """Open the circuit through `a`, let `b` adopt it, and have `a` win the probe."""
    decision = await a.before_call()
    assert decision.ticket is not None
    await a.record_failure(decision.ticket)
    assert not (await b.before_call()).allowed
    clock.advance(RESET)
    decision = await a.before_call()
    assert decision.ticket is not None and decision.ticket.probe
    await settle()
    return decision.ticket


async def test_live_holder_renews_its_lease_until_the_probe_is_judged(
    clock: FakeClock, store: SharedStore
) -> None:
    a, b = process(clock, store), process(clock, store)
    probe = await probe_in(a, b, clock)
    assert store.probe_expires == clock.now + LEASE
    claims = store.claims
    for renewal in range(1, 7):  # 10 s: twice the lease, the lock still held
        assert await sleeper(a).elapse() == pytest.approx(LEASE / 3)
        assert store.renewals == renewal
        assert store.probe_expires == pytest.approx(clock.now + LEASE)
        refused = await b.before_call()
        assert not refused.allowed
        # Another process probes: until its lease as b last saw it, one lease at most.
        assert 0 < refused.retry_after <= LEASE
    # b asked for the lock once per lease it saw (at 5/3 s and 5/3 + 5 s), not per call.
    assert store.claims - claims == 2
    await a.record_success(probe)
    await settle()
    assert a.state is CLOSED and not a.holds_probe_lock
    assert store.probe_owner is None and store.open_until is None
    assert not sleeper(a).sleeping  # the renewal ended with the verdict
    assert store.probe_grants == 1


async def test_a_dead_holder_frees_the_probe_within_one_lease(
    clock: FakeClock, store: SharedStore
) -> None:
    a, b = process(clock, store), process(clock, store)
    await probe_in(a, b, clock)
    # a dies: its renewal never runs again (its sleeper is never woken).
    clock.advance(LEASE - 0.1)
    assert not (await b.before_call()).allowed
    clock.advance(0.1)
    decision = await b.before_call()
    assert decision.ticket is not None and decision.ticket.probe
    assert store.probe_grants == 2
    await b.record_success(decision.ticket)
    assert b.state is CLOSED and store.probe_owner is None


async def test_a_probe_without_a_head_by_its_deadline_fails_and_frees_the_lock(
    clock: FakeClock, store: SharedStore
) -> None:
    a, b = process(clock, store), process(clock, store)
    probe = await probe_in(a, b, clock)
    deadline = clock.now + PROBE_TIMEOUT
    while sleeper(a).sleeping:
        await sleeper(a).elapse()
        assert store.probe_expires <= deadline  # the lock never outlasts the probe's time
    assert clock.now == pytest.approx(deadline)
    assert sum(sleeper(a).waits) == pytest.approx(PROBE_TIMEOUT)
    assert a.state is OPEN and not a.holds_probe_lock
    assert store.probe_owner is None
    assert store.open_until == pytest.approx(clock.now + RESET)  # every process stays away
    refused = await b.before_call()
    assert refused.retry_after == pytest.approx(RESET)
    moved = await a.record_success(probe)  # the head came after all: too late
    assert moved == () and a.state is OPEN


async def test_a_lapsed_lease_is_never_taken_back_from_its_new_holder(
    clock: FakeClock, store: SharedStore
) -> None:
    a, b = process(clock, store), process(clock, store)
    probe = await probe_in(a, b, clock)
    clock.advance(LEASE)  # a stalled past its lease (a long pause): b takes the probe
    taken = await b.before_call()
    assert taken.ticket is not None
    await sleeper(a).elapse()  # a's renewal finds the lock is not its own any more
    assert not a.holds_probe_lock and not sleeper(a).sleeping
    assert store.probe_owner == store_owner(b)
    await a.record_success(probe)
    assert store.probe_owner == store_owner(b)  # a's release did not delete b's claim
    assert store.open_until is None  # a's verdict is still shared
    await b.record_success(taken.ticket)
    assert store.probe_owner is None


async def test_a_refused_caller_hears_when_the_local_probe_decides(
    clock: FakeClock, store: SharedStore
) -> None:
    a, b = process(clock, store), process(clock, store)
    probe = await probe_in(a, b, clock)
    assert (await a.before_call()).retry_after == LEASE  # 30 s left, one lease at most
    clock.advance(PROBE_TIMEOUT - 2)
    refused = await a.before_call()
    assert not refused.allowed and refused.retry_after == pytest.approx(2)
    await a.record_success(probe)
    assert a.state is CLOSED


async def test_without_shared_state_half_open_retry_after_is_bounded_too(
    clock: FakeClock,
) -> None:
    machine = BreakerMachine(clock=clock, failure_threshold=1, probe_timeout=600)
    breaker = CircuitBreaker(machine, lease=ProbeLease(LEASE), wall_clock=clock)
    decision = await breaker.before_call()
    assert decision.ticket is not None
    await breaker.record_failure(decision.ticket)
    clock.advance(60)
    probe = await breaker.before_call()
    assert probe.ticket is not None and probe.ticket.probe
    refused = await breaker.before_call()
    assert not refused.allowed and refused.retry_after == LEASE  # not 600
    clock.advance(600)
    timed_out = await breaker.before_call()
    assert [t.reason for t in timed_out.transitions] == [Reason.PROBE_TIMED_OUT]


def store_owner(breaker: CircuitBreaker) -> int:
    shared = breaker._shared
    assert isinstance(shared, FakeSharedState)
    return shared.token
