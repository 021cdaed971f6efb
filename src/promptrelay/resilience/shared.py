"""The async breaker: the pure machine plus an optional state shared between processes.

Rules
-----

    shared says open until T > now   refuse at once; the local machine adopts the opening
                                     (trip) so it, too, goes half-open before probing.
    local machine opens              publish open until now + seconds until half-open.
    local machine admits a probe     only the process that wins try_acquire_probe sends
                                     it; a loser gives the slot back and refuses the call.
    our probe succeeds               publish closed, then release the probe lock. Other
                                     processes still half-open then confirm with one probe
                                     each, one at a time (the lock serialises them).
    our probe fails / times out      publish open (above), then release the probe lock.
    shared state errors or hangs     ignored: the local machine decides alone. An unknown
                                     shared state never closes the circuit, it only fails
                                     to add an opening from elsewhere.

Times in the shared state are wall-clock seconds (`wall_clock`, default time.time), since
monotonic clocks mean nothing across processes; processes sharing a breaker need clocks
synchronised to well under reset_timeout.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

from promptrelay.resilience.breaker import (
    BreakerMachine,
    BreakerState,
    BreakerTransition,
    Decision,
    Reason,
    Ticket,
)

__all__ = ["CircuitBreaker", "SharedBreakerState", "SharedStateError"]

logger = logging.getLogger(__name__)

_T = TypeVar("_T")


class SharedStateError(Exception):
    """The shared state could not be read or written; implementations raise this."""


class SharedBreakerState(Protocol):
    """What several processes share about one upstream's breaker.

    Implementations may raise anything on failure; the breaker falls back to local state.
    """

    async def read_open_until(self) -> float | None:
        """Wall-clock time until which the circuit is open, or None if nobody opened it."""
        ...

    async def publish_open(self, until: float) -> None: ...

    async def publish_closed(self) -> None: ...

    async def try_acquire_probe(self, ttl: float) -> bool:
        """Claim the one half-open probe for `ttl` seconds; False if another holds it."""
        ...

    async def release_probe(self) -> None:
        """Give up a claim made by this instance (no effect on another holder's claim)."""
        ...


class CircuitBreaker:
    """Async face of the breaker used by the retry loop: before_call / record / release.

    Usage::

        breaker = CircuitBreaker(BreakerMachine(), RedisBreakerState(redis, "pr:breaker"))
        decision = await breaker.before_call()
        if not decision.allowed:
            raise CircuitOpen("upstream unavailable", retry_after=decision.retry_after)
        ...
        await breaker.record(decision.ticket, failure=is_breaker_failure(...))
    """

    def __init__(
        self,
        machine: BreakerMachine,
        shared: SharedBreakerState | None = None,
        *,
        wall_clock: Callable[[], float] = time.time,
        shared_timeout: float = 0.5,
    ) -> None:
        self.machine = machine
        self._shared = shared
        self._wall = wall_clock
        self._shared_timeout = shared_timeout
        # The probe ticket for which this instance holds the shared probe lock.
        self._lock_holder: Ticket | None = None

    @property
    def state(self) -> BreakerState:
        return self.machine.state

    def snapshot(self) -> dict[str, object]:
        """The machine's snapshot with `opened_at` as wall-clock (unix) seconds."""
        snap = self.machine.snapshot()
        opened_at = self.machine.opened_at
        if opened_at is not None:
            snap["opened_at"] = self._wall() - (self.machine.clock() - opened_at)
        snap["shared"] = self._shared is not None
        return snap

    async def before_call(self) -> Decision:
        refused = await self._opened_elsewhere()
        if refused is not None:
            return refused
        decision = self.machine.before_call()
        await self._publish(decision.transitions)
        ticket = decision.ticket
        if ticket is None or not ticket.probe or self._shared is None:
            return decision
        # Unreachable shared state: the local machine's admission stands.
        won = await self._shared_call(
            self._shared.try_acquire_probe(self.machine.probe_timeout), True
        )
        if not won:
            self.machine.release(ticket)
            return Decision(None, self.machine.probe_timeout, decision.transitions)
        self._lock_holder = ticket
        return decision

    async def before_side_call(self) -> Decision:
        """Admission that never takes the half-open probe (BreakerMachine.before_side_call)."""
        refused = await self._opened_elsewhere()
        if refused is not None:
            return refused
        decision = self.machine.before_side_call()
        await self._publish(decision.transitions)
        return decision

    async def record(self, ticket: Ticket, *, failure: bool) -> tuple[BreakerTransition, ...]:
        if failure:
            moved = self.machine.record_failure(ticket)
        else:
            moved = self.machine.record_success(ticket)
        await self._publish(moved)
        await self._release_lock_of(ticket)
        return moved

    async def record_success(self, ticket: Ticket) -> tuple[BreakerTransition, ...]:
        return await self.record(ticket, failure=False)

    async def record_failure(self, ticket: Ticket) -> tuple[BreakerTransition, ...]:
        return await self.record(ticket, failure=True)

    async def release(self, ticket: Ticket) -> None:
        """Return a ticket without an outcome (client disconnected, local error)."""
        self.machine.release(ticket)
        await self._release_lock_of(ticket)

    # -- internals -----------------------------------------------------------------------

    async def _opened_elsewhere(self) -> Decision | None:
        """A refusal when another process holds the circuit open, else None."""
        if self._shared is None:
            return None
        until = await self._shared_call(self._shared.read_open_until(), None)
        left = None if until is None else until - self._wall()
        if left is None or left <= 0:
            return None
        moved = self.machine.trip(left)
        await self._publish(moved)
        return Decision(None, left, moved)

    async def _publish(self, moved: tuple[BreakerTransition, ...]) -> None:
        if self._shared is None or not moved:
            return
        last = moved[-1]
        if last.new is BreakerState.OPEN and last.reason is not Reason.TRIPPED:
            left = self.machine.seconds_until_half_open() or 0.0
            await self._shared_call(self._shared.publish_open(self._wall() + left), None)
        elif last.new is BreakerState.CLOSED:
            await self._shared_call(self._shared.publish_closed(), None)

    async def _release_lock_of(self, ticket: Ticket) -> None:
        holder = self._lock_holder
        if self._shared is None or holder is None or holder.serial != ticket.serial:
            return
        self._lock_holder = None
        await self._shared_call(self._shared.release_probe(), None)

    async def _shared_call(self, op: Awaitable[_T], fallback: _T) -> _T:
        try:
            async with asyncio.timeout(self._shared_timeout):
                return await op
        except Exception as exc:
            logger.debug("shared breaker state unavailable (%r); deciding locally", exc)
            return fallback
