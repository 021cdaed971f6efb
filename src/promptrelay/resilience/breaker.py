"""Circuit breaker as a pure state machine: no I/O, no asyncio, time comes from `clock`.

Rules
-----

    CLOSED     every call is admitted. Each failure is remembered for `window` seconds;
               the `failure_threshold`-th remembered failure opens the circuit.
               A success does not erase remembered failures (the window does).
    OPEN       every call is refused with the seconds left until half-open (Retry-After).
               The first before_call() at or after the reset time moves to HALF_OPEN and
               is admitted as the one probe.
    HALF_OPEN  exactly one probe is in flight; every other call is refused.
                   probe success               -> CLOSED, remembered failures forgotten
                   probe failure               -> OPEN for a full reset_timeout
                   no status line and headers within probe_timeout
                                               -> treated as a probe failure
                   probe released (no outcome) -> stays HALF_OPEN; the next caller probes
    side calls before_side_call() admits only while CLOSED: a pass-through call is
               counted, but never serves as the probe.
    any state  trip(seconds) forces OPEN for at least `seconds` (another process said so);
               adopt_close() forces CLOSED (another process's probe succeeded).

Tickets
-------

Every admitted call gets a `Ticket` stamped with the current generation; every transition
starts a new generation. An outcome reported with a ticket from an older generation (or,
in HALF_OPEN, any ticket but the probe's) changes nothing: a slow success that started
before the circuit opened must not close it.

Transitions are returned to the caller and handed to every listener, in order. Listeners
are plain callables; an exception in one is logged and never reaches the request path.

Usage::

    machine = BreakerMachine(clock=time.monotonic)
    decision = machine.before_call()
    if not decision.allowed:
        raise CircuitOpen("upstream unavailable", retry_after=decision.retry_after)
    ...  # call upstream
    machine.record_failure(decision.ticket)  # or record_success / release
"""

from __future__ import annotations

import enum
import itertools
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

__all__ = [
    "BreakerMachine",
    "BreakerState",
    "BreakerTransition",
    "Decision",
    "Reason",
    "Ticket",
    "TransitionListener",
    "is_breaker_failure",
]

logger = logging.getLogger(__name__)


class BreakerState(enum.StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class Reason(enum.StrEnum):
    """Why a transition happened; doubles as the event name in the transition table."""

    FAILURE_THRESHOLD = "failure_threshold"
    RESET_ELAPSED = "reset_timeout_elapsed"
    PROBE_SUCCEEDED = "probe_succeeded"
    PROBE_FAILED = "probe_failed"
    PROBE_TIMED_OUT = "probe_timed_out"
    TRIPPED = "tripped"
    CLOSED_ELSEWHERE = "closed_elsewhere"


_CLOSED, _OPEN, _HALF_OPEN = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN

# (state, event) -> next state. Anything absent is a bug in this module, not a caller error.
_TRANSITIONS: dict[tuple[BreakerState, Reason], BreakerState] = {
    (_CLOSED, Reason.FAILURE_THRESHOLD): _OPEN,
    (_CLOSED, Reason.TRIPPED): _OPEN,
    (_OPEN, Reason.RESET_ELAPSED): _HALF_OPEN,
    (_HALF_OPEN, Reason.PROBE_SUCCEEDED): _CLOSED,
    (_HALF_OPEN, Reason.PROBE_FAILED): _OPEN,
    (_HALF_OPEN, Reason.PROBE_TIMED_OUT): _OPEN,
    (_HALF_OPEN, Reason.TRIPPED): _OPEN,
    (_OPEN, Reason.CLOSED_ELSEWHERE): _CLOSED,
    (_HALF_OPEN, Reason.CLOSED_ELSEWHERE): _CLOSED,
}


@dataclass(frozen=True, slots=True)
class BreakerTransition:
    old: BreakerState
    new: BreakerState
    at: float
    reason: Reason


TransitionListener = Callable[[BreakerTransition], object]


@dataclass(frozen=True, slots=True)
class Ticket:
    """Proof of admission; hand it back with the call's outcome."""

    generation: int
    serial: int
    probe: bool = False


@dataclass(frozen=True, slots=True)
class Decision:
    """Answer of before_call(): a ticket when admitted, else how long to stay away."""

    ticket: Ticket | None
    retry_after: float = 0.0
    transitions: tuple[BreakerTransition, ...] = ()

    @property
    def allowed(self) -> bool:
        return self.ticket is not None


def is_breaker_failure(
    status: int | None, *, timeout: bool, connection_error: bool, client_disconnect: bool
) -> bool:
    """Does this outcome count against the upstream?

    5xx (529 included), timeouts and connection errors do; 4xx (429 included) mean the
    upstream is alive and answering, and a client that went away says nothing about it.
    """
    if client_disconnect:
        return False
    if timeout or connection_error:
        return True
    return status is not None and status >= 500


class BreakerMachine:
    """The breaker's decisions; see the module docstring for the rules."""

    def __init__(
        self,
        *,
        failure_threshold: int = 5,
        window: float = 300.0,
        reset_timeout: float = 60.0,
        probe_timeout: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        listeners: Iterable[TransitionListener] = (),
    ) -> None:
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be at least 1")
        if window <= 0 or probe_timeout <= 0 or reset_timeout < 0:
            raise ValueError("window and probe_timeout must be > 0, reset_timeout >= 0")
        self.failure_threshold = failure_threshold
        self.window = window
        self.reset_timeout = reset_timeout
        self.probe_timeout = probe_timeout
        self.listeners: list[TransitionListener] = list(listeners)
        self.clock = clock
        self._state = _CLOSED
        self._generation = 0
        self._serials = itertools.count()
        # Invariant: holds fewer than failure_threshold timestamps (reaching it opens).
        self._failures: deque[float] = deque()
        self._opened_at: float | None = None
        self._half_open_at = 0.0
        # Invariant: not None only in HALF_OPEN.
        self._probe: Ticket | None = None
        self._probe_deadline = 0.0

    @property
    def state(self) -> BreakerState:
        """The state as last moved; time-driven moves happen on the next call or tick()."""
        return self._state

    @property
    def generation(self) -> int:
        return self._generation

    @property
    def probe_in_flight(self) -> bool:
        return self._probe is not None

    @property
    def opened_at(self) -> float | None:
        """When the circuit last opened (machine clock); None while CLOSED."""
        return self._opened_at

    def probe_seconds_left(self) -> float | None:
        """While a probe is in flight, seconds until it counts as failed; else None."""
        if self._probe is None:
            return None
        return max(0.0, self._probe_deadline - self.clock())

    def seconds_until_half_open(self) -> float | None:
        """While OPEN, how long until a caller may probe; None in other states."""
        if self._state is not _OPEN:
            return None
        return max(0.0, self._half_open_at - self.clock())

    # -- the three things a call does ----------------------------------------------------

    def before_call(self) -> Decision:
        now = self.clock()
        moved = self._advance(now)
        if self._state is _OPEN and now >= self._half_open_at:
            moved.append(self._move(Reason.RESET_ELAPSED, now))
        if self._state is _CLOSED:
            return Decision(self._issue(probe=False), 0.0, tuple(moved))
        if self._state is _HALF_OPEN:
            if self._probe is None:
                self._probe = self._issue(probe=True)
                self._probe_deadline = now + self.probe_timeout
                return Decision(self._probe, 0.0, tuple(moved))
            # Upper bound: by then the probe has answered or counts as failed.
            return Decision(None, max(0.0, self._probe_deadline - now), tuple(moved))
        return Decision(None, max(0.0, self._half_open_at - now), tuple(moved))

    def before_side_call(self) -> Decision:
        """Admission for a call that must never be the half-open probe (a pass-through
        such as a Message Batch creation): admitted only while CLOSED, else refused with
        the seconds until a probe may have answered. Its outcome counts like any other."""
        now = self.clock()
        moved = self._advance(now)
        if self._state is _CLOSED:
            return Decision(self._issue(probe=False), 0.0, tuple(moved))
        if self._state is _HALF_OPEN:
            return Decision(None, max(0.0, self._probe_deadline - now), tuple(moved))
        return Decision(None, max(0.0, self._half_open_at - now), tuple(moved))

    def record_success(self, ticket: Ticket) -> tuple[BreakerTransition, ...]:
        now = self.clock()
        moved = self._advance(now)
        if self._is_current(ticket) and self._state is _HALF_OPEN:
            moved.append(self._move(Reason.PROBE_SUCCEEDED, now))
        return tuple(moved)

    def record_failure(self, ticket: Ticket) -> tuple[BreakerTransition, ...]:
        now = self.clock()
        moved = self._advance(now)
        if not self._is_current(ticket):
            return tuple(moved)
        if self._state is _HALF_OPEN:
            moved.append(self._move(Reason.PROBE_FAILED, now))
        elif self._state is _CLOSED:
            self._failures.append(now)
            self._forget_old_failures(now)
            if len(self._failures) >= self.failure_threshold:
                moved.append(self._move(Reason.FAILURE_THRESHOLD, now))
        return tuple(moved)

    def release(self, ticket: Ticket) -> None:
        """Give a ticket back without an outcome (client gone, local bug, lost probe race).

        Releasing the probe frees the half-open slot for the next caller.
        """
        if self._state is _HALF_OPEN and self._is_current(ticket):
            self._probe = None

    # -- driven from outside -------------------------------------------------------------

    def trip(self, seconds: float) -> tuple[BreakerTransition, ...]:
        """Be OPEN for at least `seconds` from now (e.g. another process opened the circuit)."""
        now = self.clock()
        moved = self._advance(now)
        until = now + max(0.0, seconds)
        if self._state is _OPEN:
            self._half_open_at = max(self._half_open_at, until)
        else:
            moved.append(self._move(Reason.TRIPPED, now))
            self._half_open_at = until
        return tuple(moved)

    def adopt_close(self) -> tuple[BreakerTransition, ...]:
        """Be CLOSED because another process's probe succeeded; no effect while CLOSED.

        A probe of our own still in flight is forgotten: its outcome changes nothing."""
        if self._state is _CLOSED:
            return ()
        return (self._move(Reason.CLOSED_ELSEWHERE, self.clock()),)

    def tick(self) -> tuple[BreakerTransition, ...]:
        """Apply moves that only time causes (a probe that never reported)."""
        return tuple(self._advance(self.clock()))

    def snapshot(self) -> dict[str, object]:
        """Plain values for /api/health. `opened_at` is in the machine's clock."""
        now = self.clock()
        horizon = now - self.window
        return {
            "state": self._state.value,
            "failures_in_window": sum(1 for t in self._failures if t > horizon),
            "failure_threshold": self.failure_threshold,
            "opened_at": self._opened_at,
            "seconds_until_half_open": self.seconds_until_half_open(),
            "probe_in_flight": self._probe is not None,
        }

    # -- internals -----------------------------------------------------------------------

    def _issue(self, *, probe: bool) -> Ticket:
        return Ticket(self._generation, next(self._serials), probe)

    def _is_current(self, ticket: Ticket) -> bool:
        if ticket.generation != self._generation:
            return False
        if self._state is _HALF_OPEN:
            return self._probe is not None and ticket.serial == self._probe.serial
        return True

    def _advance(self, now: float) -> list[BreakerTransition]:
        if self._probe is not None and now >= self._probe_deadline:
            return [self._move(Reason.PROBE_TIMED_OUT, now)]
        return []

    def _forget_old_failures(self, now: float) -> None:
        horizon = now - self.window
        while self._failures and self._failures[0] <= horizon:
            self._failures.popleft()

    def _move(self, reason: Reason, now: float) -> BreakerTransition:
        old = self._state
        new = _TRANSITIONS[(old, reason)]
        self._state = new
        self._generation += 1
        self._probe = None
        if new is _OPEN:
            self._opened_at = now
            self._half_open_at = now + self.reset_timeout
            self._failures.clear()
        elif new is _CLOSED:
            self._opened_at = None
            self._failures.clear()
        transition = BreakerTransition(old, new, now, reason)
        for listener in self.listeners:
            try:
                listener(transition)
            except Exception:
                logger.exception("breaker listener %r failed", listener)
        return transition
