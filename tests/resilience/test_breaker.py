"""The pure breaker machine on a fake clock: no sleeps, no event loop."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from promptrelay.resilience.breaker import (
    BreakerMachine,
    BreakerState,
    BreakerTransition,
    Reason,
    Ticket,
    is_breaker_failure,
)
from tests.resilience.fakes import FakeClock

CLOSED, OPEN, HALF_OPEN = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN


def make(clock: FakeClock, **kwargs: Any) -> BreakerMachine:
    return BreakerMachine(clock=clock, **kwargs)


def admit(machine: BreakerMachine) -> Ticket:
    decision = machine.before_call()
    assert decision.ticket is not None, decision
    return decision.ticket


def fail_times(machine: BreakerMachine, n: int) -> None:
    for _ in range(n):
        machine.record_failure(admit(machine))


def open_machine(clock: FakeClock, **kwargs: Any) -> BreakerMachine:
    machine = make(clock, **kwargs)
    fail_times(machine, machine.failure_threshold)
    assert machine.state is OPEN
    return machine


def test_opens_after_exactly_threshold_failures_in_window() -> None:
    clock = FakeClock()
    machine = make(clock)
    for _ in range(4):
        machine.record_failure(admit(machine))
        clock.advance(10)
    assert machine.state is CLOSED
    moved = machine.record_failure(admit(machine))
    assert machine.state is OPEN
    assert moved == (BreakerTransition(CLOSED, OPEN, clock.now, Reason.FAILURE_THRESHOLD),)


def test_failures_outside_the_window_are_forgotten() -> None:
    clock = FakeClock()
    machine = make(clock)
    fail_times(machine, 4)
    clock.advance(300)
    machine.record_failure(admit(machine))
    assert machine.state is CLOSED
    assert machine.snapshot()["failures_in_window"] == 1


def test_successes_do_not_reset_the_window_count() -> None:
    clock = FakeClock()
    machine = make(clock)
    fail_times(machine, 4)
    machine.record_success(admit(machine))
    fail_times(machine, 1)
    assert machine.state is OPEN


def test_open_refuses_with_seconds_left_until_half_open() -> None:
    clock = FakeClock()
    machine = open_machine(clock)
    clock.advance(20)
    decision = machine.before_call()
    assert not decision.allowed
    assert decision.retry_after == pytest.approx(40)
    assert machine.snapshot()["seconds_until_half_open"] == pytest.approx(40)
    clock.advance(39.5)
    assert machine.before_call().retry_after == pytest.approx(0.5)


def test_half_open_admits_exactly_one_of_fifty_callers() -> None:
    clock = FakeClock()
    machine = open_machine(clock)
    clock.advance(60)
    decisions = [machine.before_call() for _ in range(50)]
    admitted = [d for d in decisions if d.allowed]
    assert len(admitted) == 1
    assert admitted[0] is decisions[0]
    assert admitted[0].ticket is not None and admitted[0].ticket.probe
    assert machine.state is HALF_OPEN
    assert all(d.retry_after > 0 for d in decisions[1:])


def test_probe_success_closes_and_forgets_failures() -> None:
    clock = FakeClock()
    machine = open_machine(clock)
    clock.advance(60)
    probe = admit(machine)
    moved = machine.record_success(probe)
    assert [(t.old, t.new, t.reason) for t in moved] == [
        (HALF_OPEN, CLOSED, Reason.PROBE_SUCCEEDED)
    ]
    fail_times(machine, 4)
    assert machine.state is CLOSED


def test_probe_failure_reopens_for_a_full_reset_timeout() -> None:
    clock = FakeClock()
    machine = open_machine(clock)
    clock.advance(75)
    probe = admit(machine)
    clock.advance(10)
    machine.record_failure(probe)
    assert machine.state is OPEN
    assert machine.before_call().retry_after == pytest.approx(60)
    clock.advance(59.9)
    assert not machine.before_call().allowed
    clock.advance(0.1)
    assert machine.before_call().allowed


def test_silent_probe_counts_as_failure_after_probe_timeout() -> None:
    clock = FakeClock()
    machine = open_machine(clock, probe_timeout=30)
    clock.advance(60)
    probe = admit(machine)
    clock.advance(29)
    refused = machine.before_call()
    assert not refused.allowed
    assert refused.retry_after == pytest.approx(1)
    clock.advance(1)
    decision = machine.before_call()
    assert [t.reason for t in decision.transitions] == [Reason.PROBE_TIMED_OUT]
    assert decision.retry_after == pytest.approx(60)
    machine.record_success(probe)  # too late: ignored
    assert machine.state is OPEN


def test_late_outcomes_from_before_a_transition_change_nothing() -> None:
    clock = FakeClock()
    machine = make(clock)
    early = admit(machine)
    fail_times(machine, 5)
    assert machine.state is OPEN
    assert machine.record_success(early) == ()
    assert machine.state is OPEN
    clock.advance(60)
    probe = admit(machine)
    assert machine.record_success(early) == ()
    assert machine.record_failure(early) == ()
    assert machine.state is HALF_OPEN
    machine.record_success(probe)
    assert machine.state is CLOSED
    # A stale failure does not count towards the new window either.
    for _ in range(10):
        machine.record_failure(early)
    assert machine.snapshot()["failures_in_window"] == 0


def test_released_probe_frees_the_slot_for_the_next_caller() -> None:
    clock = FakeClock()
    machine = open_machine(clock)
    clock.advance(60)
    probe = admit(machine)
    assert not machine.before_call().allowed
    machine.release(probe)
    assert machine.state is HALF_OPEN
    second = admit(machine)
    machine.record_success(probe)  # the released ticket no longer speaks for the probe
    assert machine.state is HALF_OPEN
    machine.record_success(second)
    assert machine.state is CLOSED


def test_trip_opens_for_at_least_the_given_time() -> None:
    clock = FakeClock()
    machine = make(clock)
    moved = machine.trip(90)
    assert [(t.old, t.new, t.reason) for t in moved] == [(CLOSED, OPEN, Reason.TRIPPED)]
    assert machine.before_call().retry_after == pytest.approx(90)
    assert machine.trip(10) == ()
    assert machine.before_call().retry_after == pytest.approx(90)


def test_adopting_a_close_elsewhere_closes_and_forgets_our_probe() -> None:
    clock = FakeClock()
    machine = open_machine(clock)
    moved = machine.adopt_close()
    assert [(t.old, t.new, t.reason) for t in moved] == [(OPEN, CLOSED, Reason.CLOSED_ELSEWHERE)]
    assert machine.adopt_close() == ()  # already closed: nothing moves
    machine.trip(60)
    clock.advance(60)
    probe = admit(machine)
    assert probe.probe
    assert [t.new for t in machine.adopt_close()] == [CLOSED]
    assert not machine.probe_in_flight
    assert machine.record_failure(probe) == ()  # our late verdict counts for nothing
    assert machine.snapshot()["failures_in_window"] == 0


def test_transitions_reach_listeners_in_order() -> None:
    clock = FakeClock()
    seen: list[BreakerTransition] = []
    machine = BreakerMachine(clock=clock, listeners=[seen.append])
    fail_times(machine, 5)
    clock.advance(60)
    machine.record_failure(admit(machine))
    clock.advance(60)
    machine.record_success(admit(machine))
    assert [(t.old, t.new, t.reason) for t in seen] == [
        (CLOSED, OPEN, Reason.FAILURE_THRESHOLD),
        (OPEN, HALF_OPEN, Reason.RESET_ELAPSED),
        (HALF_OPEN, OPEN, Reason.PROBE_FAILED),
        (OPEN, HALF_OPEN, Reason.RESET_ELAPSED),
        (HALF_OPEN, CLOSED, Reason.PROBE_SUCCEEDED),
    ]
    assert [t.at for t in seen] == sorted(t.at for t in seen)


def test_a_failing_listener_does_not_break_the_machine(caplog: pytest.LogCaptureFixture) -> None:
    def broken(_: BreakerTransition) -> None:
        raise RuntimeError("listener bug")

    seen: list[BreakerTransition] = []
    machine = BreakerMachine(clock=FakeClock(), listeners=[broken, seen.append])
    fail_times(machine, 5)
    assert machine.state is OPEN
    assert len(seen) == 1
    assert "listener" in caplog.text


def test_snapshot_reports_health_values() -> None:
    clock = FakeClock()
    machine = make(clock)
    fail_times(machine, 2)
    assert machine.snapshot() == {
        "state": "closed",
        "failures_in_window": 2,
        "failure_threshold": 5,
        "opened_at": None,
        "seconds_until_half_open": None,
        "probe_in_flight": False,
    }
    fail_times(machine, 3)
    opened = clock.now
    clock.advance(15)
    snap = machine.snapshot()
    assert snap["state"] == "open"
    assert snap["opened_at"] == opened
    assert snap["seconds_until_half_open"] == pytest.approx(45)


@pytest.mark.parametrize(
    ("status", "timeout", "connection_error", "disconnect", "expected"),
    [
        (500, False, False, False, True),
        (502, False, False, False, True),
        (503, False, False, False, True),
        (529, False, False, False, True),
        (None, True, False, False, True),
        (None, False, True, False, True),
        (429, False, False, False, False),
        (400, False, False, False, False),
        (401, False, False, False, False),
        (404, False, False, False, False),
        (200, False, False, False, False),
        (None, False, False, True, False),
        (None, True, False, True, False),
        (503, False, False, True, False),
        (None, False, False, False, False),
    ],
)
def test_is_breaker_failure(
    status: int | None, timeout: bool, connection_error: bool, disconnect: bool, expected: bool
) -> None:
    result = is_breaker_failure(
        status, timeout=timeout, connection_error=connection_error, client_disconnect=disconnect
    )
    assert result is expected


def test_rejects_nonsense_parameters() -> None:
    with pytest.raises(ValueError):
        BreakerMachine(failure_threshold=0)
    with pytest.raises(ValueError):
        BreakerMachine(window=0)


_events = st.lists(
    st.one_of(
        st.tuples(st.just("call"), st.just(0)),
        st.tuples(st.sampled_from(["succeed", "fail", "release"]), st.integers(0, 20)),
        st.tuples(st.just("advance"), st.integers(0, 90)),
        st.tuples(st.just("trip"), st.integers(0, 90)),
    ),
    max_size=120,
)


@settings(max_examples=300, deadline=None)
@given(_events)
def test_never_more_than_one_probe_in_flight(events: list[tuple[str, int]]) -> None:
    clock = FakeClock()
    seen: list[BreakerTransition] = []
    machine = BreakerMachine(
        failure_threshold=3, window=100, reset_timeout=30, probe_timeout=20, clock=clock,
        listeners=[seen.append],
    )  # fmt: skip
    outstanding: list[Ticket] = []
    for name, arg in events:
        if name == "call":
            decision = machine.before_call()
            if decision.ticket is not None:
                outstanding.append(decision.ticket)
            else:
                assert decision.retry_after >= 0
        elif name == "advance":
            clock.advance(arg)
        elif name == "trip":
            machine.trip(arg)
        elif outstanding:
            ticket = outstanding.pop(arg % len(outstanding))
            if name == "succeed":
                machine.record_success(ticket)
            elif name == "fail":
                machine.record_failure(ticket)
            else:
                machine.release(ticket)
        live = [t for t in outstanding if t.generation == machine.generation]
        if machine.state is HALF_OPEN:
            assert len(live) <= 1
            assert all(t.probe for t in live)
            assert machine.probe_in_flight == (len(live) == 1)
        if machine.state is OPEN:
            assert live == []
    for before, after in itertools.pairwise(seen):
        assert before.new is after.old


# -- side calls (pass-through): counted, never the probe -------------------------------


def test_a_side_call_is_admitted_and_counted_while_closed() -> None:
    clock = FakeClock()
    machine = make(clock, failure_threshold=2)
    for _ in range(2):
        decision = machine.before_side_call()
        assert decision.ticket is not None and not decision.ticket.probe
        machine.record_failure(decision.ticket)
    assert machine.state is OPEN


def test_a_side_call_is_refused_while_open_with_the_wait() -> None:
    clock = FakeClock()
    machine = open_machine(clock, reset_timeout=60.0)
    clock.advance(20)
    decision = machine.before_side_call()
    assert decision.ticket is None and decision.retry_after == pytest.approx(40.0)


def test_a_side_call_never_takes_the_half_open_probe() -> None:
    clock = FakeClock()
    machine = open_machine(clock, reset_timeout=60.0, probe_timeout=10.0)
    clock.advance(60)
    refused = machine.before_side_call()
    assert refused.ticket is None and machine.state is OPEN and not machine.probe_in_flight
    probe = machine.before_call().ticket
    assert probe is not None and probe.probe and machine.state is HALF_OPEN
    while_probing = machine.before_side_call()
    assert while_probing.ticket is None and while_probing.retry_after == pytest.approx(10.0)
    machine.record_success(probe)
    assert machine.state is CLOSED and machine.before_side_call().ticket is not None
