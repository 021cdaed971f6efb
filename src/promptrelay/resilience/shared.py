"""The async breaker: the pure machine plus an optional state shared between processes.

Every attempt is decided by the local machine alone, with no shared-state I/O: the
shared state is written only when the machine changes state, and other processes'
changes reach the machine as notices (`watch`), applied as they arrive.

Rules
-----

    notice: opened until T > now     the local machine adopts the opening (trip), so it
                                     refuses at once and goes half-open before probing.
    notice: closed                   another process's probe succeeded: the local
                                     machine closes too (adopt_close), sending no probe.
    resubscribed to notices          the shared open state is read once (the shared
                                     state's `watch` does it): a lost "opened" notice
                                     is adopted then. A lost "closed" notice costs at
                                     most this process's own probe after its reset time.
    local machine opens              publish open until now + seconds until half-open
                                     (written, then a notice to the others).
    local machine closes             publish closed (adopted closes are not republished).
    local machine admits a probe     only the process that wins try_acquire_probe sends
                                     it; a loser gives the slot back, refuses the call,
                                     and refuses locally (no shared I/O) until the
                                     winner's lease has run out, unless a notice comes.
    the probe lock is a lease        claimed and renewed for a few seconds at a time
                                     (resilience/lease.py) while the probe waits for the
                                     upstream's status line and headers, with a
                                     compare-and-set on this instance's token; a holder
                                     that dies frees it within one lease.
    our probe is judged (its head)   publish closed (success) or open (failure), then
                                     release the probe lock. The others adopt the verdict
                                     by its notice; one that missed a close confirms with
                                     a probe of its own (the lock serialises them).
    our probe has no head in time    at its head deadline the renewal stops, the probe
                                     counts as failed: publish open, release the lock.
    refused while half-open          Retry-After: when the probe will have decided, at
                                     most one lease away (not the request's own budget).
    shared state errors or hangs     ignored: the local machine decides alone. An unknown
                                     shared state never closes the circuit, it only fails
                                     to add an opening from elsewhere (the next
                                     resubscription adopts it).

Times in the shared state are wall-clock seconds (`wall_clock`, default time.time), since
monotonic clocks mean nothing across processes; processes sharing a breaker need clocks
synchronised to well under reset_timeout.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import NamedTuple, Protocol, TypeVar

from promptrelay.resilience.breaker import (
    BreakerMachine,
    BreakerState,
    BreakerTransition,
    Decision,
    Reason,
    Ticket,
)
from promptrelay.resilience.lease import ProbeLease

__all__ = [
    "CircuitBreaker",
    "PeerWatcher",
    "ProbeClaim",
    "SharedBreakerState",
    "SharedStateError",
]

logger = logging.getLogger(__name__)

_T = TypeVar("_T")


class SharedStateError(Exception):
    """The shared state could not be read or written; implementations raise this."""


class ProbeClaim(NamedTuple):
    """Outcome of claiming the probe: won, or lost with the holder's lease time left."""

    won: bool
    held_for: float = 0.0


_UNKNOWN_CLAIM = ProbeClaim(True)  # shared state unreachable: the local admission stands
_FROM_ELSEWHERE = frozenset({Reason.TRIPPED, Reason.CLOSED_ELSEWHERE})


class PeerWatcher(Protocol):
    """What the shared state tells about other processes' changes (CircuitBreaker is one)."""

    def opened_elsewhere(self, until: float) -> None: ...

    def closed_elsewhere(self) -> None: ...


class SharedBreakerState(Protocol):
    """What several processes share about one upstream's breaker.

    Implementations may raise anything on failure; the breaker falls back to local state.
    """

    def watch(self, watcher: PeerWatcher) -> None:
        """From now on, tell `watcher` of the other processes' openings and closes, and of
        the shared opening (if any) each time the notices (re)connect."""
        ...

    async def publish_open(self, until: float) -> None:
        """Record open until `until` (wall clock) and tell the other processes."""
        ...

    async def publish_closed(self) -> None: ...

    async def try_acquire_probe(self, ttl: float) -> ProbeClaim:
        """Claim the one half-open probe for `ttl` seconds; lost if another holds it."""
        ...

    async def renew_probe(self, ttl: float) -> bool:
        """Extend this instance's claim to `ttl` seconds from now; False if it is not ours."""
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
        await breaker.close()  # at shutdown: stops a probe lease's renewal
    """

    def __init__(
        self,
        machine: BreakerMachine,
        shared: SharedBreakerState | None = None,
        *,
        lease: ProbeLease | None = None,
        wall_clock: Callable[[], float] = time.time,
        shared_timeout: float = 0.5,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        self.machine = machine
        self.lease = lease or ProbeLease()
        self._shared = shared
        self._wall = wall_clock
        self._shared_timeout = shared_timeout
        self._sleep = sleep
        # The probe ticket for which this instance holds the shared probe lock, and the
        # task renewing that lock's lease.
        self._lock_holder: Ticket | None = None
        self._renewal: asyncio.Task[None] | None = None
        # Wall-clock time until which another process holds the probe lease, as its
        # claim told us: till then a probe admitted here is refused without asking.
        self._peer_probe_until = 0.0
        if shared is not None:
            shared.watch(self)

    @property
    def state(self) -> BreakerState:
        return self.machine.state

    @property
    def holds_probe_lock(self) -> bool:
        return self._lock_holder is not None

    def snapshot(self) -> dict[str, object]:
        """The machine's snapshot with `opened_at` as wall-clock (unix) seconds."""
        snap = self.machine.snapshot()
        opened_at = self.machine.opened_at
        if opened_at is not None:
            snap["opened_at"] = self._wall() - (self.machine.clock() - opened_at)
        snap["shared"] = self._shared is not None
        return snap

    async def before_call(self) -> Decision:
        decision = self.machine.before_call()
        if decision.transitions:  # the common case: nothing moved, no coroutine to await
            await self._publish(decision.transitions)
        ticket = decision.ticket
        if ticket is None:
            if self.machine.state is not BreakerState.HALF_OPEN:
                return decision
            # A probe of our own is in flight: it decides by its head deadline at the latest.
            wait = self.lease.retry_after(self.machine.probe_seconds_left())
            return replace(decision, retry_after=wait)
        if not ticket.probe or self._shared is None:
            return decision
        held_for = await self._probe_held_elsewhere()
        if held_for is not None:
            self.machine.release(ticket)
            return Decision(None, self.lease.retry_after(held_for), decision.transitions)
        self._lock_holder = ticket
        self._renewal = asyncio.ensure_future(self._hold_lease(ticket))
        return decision

    async def before_side_call(self) -> Decision:
        """Admission that never takes the half-open probe (BreakerMachine.before_side_call)."""
        decision = self.machine.before_side_call()
        await self._publish(decision.transitions)
        return decision

    async def record(self, ticket: Ticket, *, failure: bool) -> tuple[BreakerTransition, ...]:
        held = self._take_lock(ticket)
        if failure:
            moved = self.machine.record_failure(ticket)
        else:
            moved = self.machine.record_success(ticket)
        if moved:
            await self._publish(moved)
        if held:
            await self._release_probe()
        return moved

    async def record_success(self, ticket: Ticket) -> tuple[BreakerTransition, ...]:
        return await self.record(ticket, failure=False)

    async def record_failure(self, ticket: Ticket) -> tuple[BreakerTransition, ...]:
        return await self.record(ticket, failure=True)

    async def release(self, ticket: Ticket) -> None:
        """Return a ticket without an outcome (client disconnected, local error)."""
        held = self._take_lock(ticket)
        self.machine.release(ticket)
        if held:
            await self._release_probe()

    async def close(self) -> None:
        """Stop renewing a probe lease and release the lock, if this instance holds it."""
        holder = self._lock_holder
        if holder is not None and self._take_lock(holder):
            await self._release_probe()

    # -- internals -----------------------------------------------------------------------

    # -- notices from the shared state (PeerWatcher) -----------------------------------

    def opened_elsewhere(self, until: float) -> None:
        """Another process opened the circuit until `until` (wall clock): adopt it."""
        self._peer_probe_until = 0.0
        left = until - self._wall()
        if left > 0:
            self.machine.trip(left)

    def closed_elsewhere(self) -> None:
        """Another process's probe succeeded: close without a probe of our own."""
        self._peer_probe_until = 0.0
        self.machine.adopt_close()

    async def _probe_held_elsewhere(self) -> float | None:
        """Claim the shared probe lock: None when ours, else seconds another holds it.

        After a lost claim, asks nothing until the holder's lease has run out."""
        assert self._shared is not None
        held_for = self._peer_probe_until - self._wall()
        if held_for > 0:
            return held_for
        ttl = self.lease.ttl(self.machine.probe_seconds_left()) or self.lease.duration
        claim = await self._shared_call(self._shared.try_acquire_probe(ttl), _UNKNOWN_CLAIM)
        if claim.won:
            return None
        self._peer_probe_until = self._wall() + claim.held_for
        return claim.held_for

    async def _publish(self, moved: tuple[BreakerTransition, ...]) -> None:
        if self._shared is None or not moved:
            return
        last = moved[-1]
        if last.reason in _FROM_ELSEWHERE:
            return  # another process published it
        if last.new is BreakerState.OPEN:
            left = self.machine.seconds_until_half_open() or 0.0
            await self._shared_call(self._shared.publish_open(self._wall() + left), None)
        elif last.new is BreakerState.CLOSED:
            await self._shared_call(self._shared.publish_closed(), None)

    async def _hold_lease(self, ticket: Ticket) -> None:
        """Renew the probe lock while our probe waits for its head; judge it at the deadline.

        Ends by itself once the probe is no longer in flight (judged, or past its head
        deadline: then it counts as failed and is published so), releasing the lock, or
        when the lock turns out not to be ours; record/release cancel it.
        """
        assert self._shared is not None
        while (wait := self.lease.renew_in(self.machine.probe_seconds_left())) is not None:
            await self._sleep(wait)
            moved = self.machine.tick()  # a probe past its head deadline: failed
            if moved:
                held = self._take_lock(ticket)
                await self._publish(moved)
                if held:
                    await self._release_probe()
                return
            ttl = self.lease.ttl(self.machine.probe_seconds_left())
            if ttl is None:
                break
            # Unreachable shared state: keep the claim (nobody else can take it either).
            if not await self._shared_call(self._shared.renew_probe(ttl), True):
                logger.warning("the shared probe lock lapsed while our probe ran")
                self._take_lock(ticket)  # not ours any more: never delete another's claim
                return
        if self._take_lock(ticket):
            await self._release_probe()

    def _take_lock(self, ticket: Ticket) -> bool:
        """Stop holding the probe lock for `ticket`; True if we held it (then release it).

        Synchronous, so that no renewal can run between a verdict and its release.
        """
        holder = self._lock_holder
        if self._shared is None or holder is None or holder.serial != ticket.serial:
            return False
        self._lock_holder = None
        renewal, self._renewal = self._renewal, None
        if renewal is not None and renewal is not asyncio.current_task():
            # A renewal already sent is harmless: it extends only our own token, which
            # the release then deletes (or finds gone).
            renewal.cancel()
        return True

    async def _release_probe(self) -> None:
        assert self._shared is not None
        await self._shared_call(self._shared.release_probe(), None)

    async def _shared_call(self, op: Awaitable[_T], fallback: _T) -> _T:
        try:
            async with asyncio.timeout(self._shared_timeout):
                return await op
        except Exception as exc:
            logger.debug("shared breaker state unavailable (%r); deciding locally", exc)
            return fallback
