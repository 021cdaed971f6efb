"""Fakes for resilience tests: a clock you move by hand and an in-memory shared state."""

from __future__ import annotations

import asyncio
import itertools


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

    @property
    def probe_held(self) -> bool:
        return self.probe_owner is not None and self.probe_expires > self.clock()


class FakeSharedState:
    """SharedBreakerState in memory, with Redis's expiry semantics and a per-instance token."""

    _ids = itertools.count(1)

    def __init__(self, store: SharedStore) -> None:
        self.store = store
        self.token = next(self._ids)

    async def _io(self) -> None:
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

    async def publish_closed(self) -> None:
        await self._io()
        self.store.open_until = None

    async def try_acquire_probe(self, ttl: float) -> bool:
        await self._io()
        store = self.store
        if store.probe_owner is not None and store.probe_expires > store.clock():
            return False
        store.probe_owner = self.token
        store.probe_expires = store.clock() + ttl
        store.probe_grants += 1
        return True

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
