"""Fakes for resilience tests: a clock you move by hand and an in-memory shared state."""

from __future__ import annotations

import asyncio
import itertools

from promptrelay.resilience.shared import PeerWatcher, ProbeClaim


class FakeClock:
    def __init__(self, start: float = 1_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class SharedStore:
    """What Redis would hold for one breaker: shared by every FakeSharedState ("process")."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.open_until: float | None = None
        self.probe_owner: int | None = None
        self.probe_expires = 0.0
        self.broken = False  # every operation raises
        self.hang = False  # every operation waits forever
        self.probe_grants = 0
        self.renewals = 0
        self.operations = 0  # every call that would be a Redis round trip
        self.claims = 0  # try_acquire_probe calls, won or lost
        self.lose_notices = False  # notices go nowhere (a subscription that was cut)
        self.members: list[FakeSharedState] = []

    def notify(self, sender: FakeSharedState, until: float | None) -> None:
        """Deliver a notice to every other member's watcher, as pub/sub would."""
        if self.lose_notices:
            return
        for member in self.members:
            if member is sender or member.watcher is None:
                continue
            if until is None:
                member.watcher.closed_elsewhere()
            else:
                member.watcher.opened_elsewhere(until)

    @property
    def probe_held(self) -> bool:
        return self.probe_owner is not None and self.probe_expires > self.clock()


class FakeSharedState:
    """SharedBreakerState in memory, with Redis's expiry semantics and a per-instance token."""

    _ids = itertools.count(1)

    def __init__(self, store: SharedStore) -> None:
        self.store = store
        self.token = next(self._ids)
        self.watcher: PeerWatcher | None = None
        store.members.append(self)

    def watch(self, watcher: PeerWatcher) -> None:
        self.watcher = watcher

    async def resync(self) -> None:
        """What a (re)subscription does: read the open state once and adopt it."""
        until = await self.read_open_until()
        if until is not None and self.watcher is not None:
            self.watcher.opened_elsewhere(until)

    async def _io(self) -> None:
        self.store.operations += 1
        await asyncio.sleep(0)  # let other tasks interleave, as a network round trip would
        if self.store.hang:
            await asyncio.Event().wait()
        if self.store.broken:
            raise ConnectionError("shared state unreachable")

    async def read_open_until(self) -> float | None:
        await self._io()
        until = self.store.open_until
        if until is not None and until <= self.store.clock():
            self.store.open_until = None  # expired, like SET ... PX
            return None
        return until

    async def publish_open(self, until: float) -> None:
        await self._io()
        self.store.open_until = until
        self.store.notify(self, until)

    async def publish_closed(self) -> None:
        await self._io()
        self.store.open_until = None
        self.store.notify(self, None)

    async def try_acquire_probe(self, ttl: float) -> ProbeClaim:
        await self._io()
        store = self.store
        store.claims += 1
        if store.probe_owner is not None and store.probe_expires > store.clock():
            return ProbeClaim(False, store.probe_expires - store.clock())
        store.probe_owner = self.token
        store.probe_expires = store.clock() + ttl
        store.probe_grants += 1
        return ProbeClaim(True)

    async def renew_probe(self, ttl: float) -> bool:
        await self._io()
        store = self.store
        if store.probe_owner != self.token or store.probe_expires <= store.clock():
            return False
        store.probe_expires = store.clock() + ttl
        store.renewals += 1
        return True

    async def release_probe(self) -> None:
        await self._io()
        if self.store.probe_owner == self.token:
            self.store.probe_owner = None
