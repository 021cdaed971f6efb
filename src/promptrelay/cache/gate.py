"""Every call to one Redis goes through its gate: bounded in time, judged by health.

    gate = RedisGate(client, location="redis://host:6379/0", budget=0.4, max_connections=32)
    await gate.start()                                  # first PING, initial state
    value = await gate.call(lambda: client.get(key))    # FAILED on any failure
    value = await gate.run(lambda redis: redis.get(key))  # raises RedisUnavailable
    probe = asyncio.create_task(gate.probe_loop())      # brings the tier back up

Rules:

    tier down                        -> FAILED at once: no network call, no waiting
    answered                         -> the result; consecutive timeouts reset
    timed out / connection error     -> FAILED; fed to RedisHealth, which may mark it down
    queued for a connection slot
      when the tier goes down        -> FAILED at once (skipped), not a timeout each
    every slot busy the whole budget -> FAILED, counted "saturated"; health untouched
    probe (PING after the cool-off)  -> idle pooled connections are closed first, so the
                                        commands after down -> up never meet a connection
                                        the outage killed (a restart would otherwise fail
                                        the first command on each and flap the tier)

``call`` serves the cache tier itself; ``run`` is the same gate for the other components
that keep state in this Redis (the breaker's shared state, alert dedupe, the process
registry): while the tier is down they get RedisUnavailable without any network call and
use their local fallback, so a miss costs what it costs with Redis disabled.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any, TypeVar

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from promptrelay.cache._tasks import consume_outcome, stop_tasks
from promptrelay.cache.health import Backoff, RedisHealth
from promptrelay.errors import RedisUnavailable

__all__ = ["FAILED", "Failed", "RedisGate"]

_log = logging.getLogger(__name__)
_T = TypeVar("_T")

COUNTS = ("timeouts", "connection_errors", "errors", "skipped", "saturated")


class Failed(Enum):
    FAILED = "failed"


FAILED = Failed.FAILED


class _Skipped(Exception):
    """Redis was marked down while the call waited for a connection slot."""


@dataclass(slots=True)
class _Slot:
    acquired: bool = False


class RedisGate:
    """Bounded, health-gated calls on one client; see the module docstring."""

    def __init__(
        self,
        client: Redis,
        *,
        location: str,
        budget: float,
        max_connections: int,
        counts: dict[str, int],
        timeout_threshold: int = 3,
        backoff: Backoff | None = None,
        stable_after: float = 30.0,
        on_state: Callable[[str], object] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.location = location
        self.budget = budget
        self.backoff = backoff or Backoff()
        self.health = RedisHealth(
            timeout_threshold=timeout_threshold,
            backoff=self.backoff,
            stable_after=stable_after,
            clock=clock,
        )
        self.counts = counts  # the owner's stats dict; COUNTS are added to it
        for name in COUNTS:
            counts.setdefault(name, 0)
        self.last_error: str | None = None
        self.up = asyncio.Event()
        self.down = asyncio.Event()
        self._client = client
        self._slots = asyncio.Semaphore(max_connections)
        self._on_state = on_state
        self._orphans: set[asyncio.Future[Any]] = set()
        self.closed = False

    async def start(self) -> None:
        """PING once and report the initial state (down if Redis did not answer)."""
        if await self._ping():
            self.health.probe_succeeded()
        self._apply_state()

    async def close(self) -> None:
        """Stop the probe loop at its next turn and wait for abandoned calls."""
        self.closed = True
        await stop_tasks(list(self._orphans))

    async def run(
        self, call: Callable[[Redis], Awaitable[_T]], *, budget: float | None = None
    ) -> _T:
        """``call(client)`` through the gate, for components other than the cache.

        Raises RedisUnavailable at once while the tier is down, and when the call fails
        or outlives ``budget`` (default: connect + socket timeout); its outcome feeds the
        tier's health like any cache call's.
        """
        result = await self.call(lambda: call(self._client), budget=budget)
        if result is FAILED:
            raise RedisUnavailable(f"redis at {self.location} is {self.health.state}")
        return result

    async def call(
        self, call: Callable[[], Awaitable[_T]], *, budget: float | None = None, probe: bool = False
    ) -> _T | Failed:
        """Perform one bounded call; translate every Redis failure into ``FAILED``."""
        if not probe and not self.health.is_up:
            self.counts["skipped"] += 1
            return FAILED
        # A task and asyncio.wait, not asyncio.timeout: redis-py can swallow a
        # cancellation (see _tasks.py), and the caller must get its answer on time.
        slot = _Slot()
        task = asyncio.ensure_future(self._guarded(call, slot, probe))
        try:
            done, _ = await asyncio.wait((task,), timeout=budget or self.budget)
        except asyncio.CancelledError:
            self._abandon(task)
            raise
        if not done:
            self._abandon(task)
            if slot.acquired:
                self.record_failure(TimeoutError(), probe=probe)
            else:  # never reached Redis: every connection was busy the whole time
                self.counts["saturated"] += 1
            return FAILED
        try:
            result = task.result()
        except _Skipped:
            self.counts["skipped"] += 1
            return FAILED
        except (RedisError, OSError) as error:  # OSError covers TimeoutError
            self.record_failure(error, probe=probe)
            return FAILED
        except Exception:  # a bug, not an outage: still never the caller's problem
            self.counts["errors"] += 1
            _log.exception("unexpected error in a redis call")
            return FAILED
        self.health.record_success()
        return result

    async def _guarded(self, call: Callable[[], Awaitable[_T]], slot: _Slot, probe: bool) -> _T:
        """Run ``call`` holding one of ``max_connections`` slots.

        Calls queue here rather than inside redis-py's pool, so that when Redis goes
        down while they wait, they skip it instead of each waiting out a timeout.
        """
        async with self._slots:
            slot.acquired = True
            if not probe and not self.health.is_up:
                raise _Skipped
            return await call()

    def _abandon(self, task: asyncio.Future[Any]) -> None:
        """Cancel a call that ran out of time; it finishes in the background."""
        task.cancel()
        self._orphans.add(task)
        task.add_done_callback(self._orphans.discard)
        task.add_done_callback(consume_outcome)

    def record_failure(self, error: BaseException, *, probe: bool = False) -> None:
        """Count a failed call and feed it to the health state machine."""
        self.last_error = type(error).__name__
        if isinstance(error, RedisTimeoutError | TimeoutError):
            self.counts["timeouts"] += 1
            changed = not probe and self.health.record_timeout()
        elif isinstance(error, RedisConnectionError | OSError):
            self.counts["connection_errors"] += 1
            changed = not probe and self.health.record_connection_error()
        else:
            self.counts["errors"] += 1
            return
        if changed:
            self._apply_state()

    def _apply_state(self) -> None:
        state = self.health.state
        if self.health.is_up:
            self.down.clear()
            self.up.set()
            _log.info("redis cache tier %s is up", self.location)
        else:
            self.up.clear()
            self.down.set()
            _log.warning(
                "redis cache tier %s is down (%s); using memory only, next probe in %.1fs",
                self.location,
                self.last_error or "no answer",
                self.health.cool_off(),
            )
        if self._on_state is not None:
            try:
                self._on_state(state)
            except Exception:  # a listener's bug must not break the cache
                _log.exception("on_state listener failed")

    async def _ping(self) -> bool:
        return await self.call(self._client.ping, probe=True) is not FAILED

    async def probe_loop(self) -> None:
        """While down: after each cool-off, renew the pool and PING; up when it answers."""
        while not self.closed:
            await self.down.wait()
            await asyncio.sleep(self.health.cool_off())
            if self.health.is_up:
                continue
            await self._renew_pool()
            if await self._ping():
                if self.health.probe_succeeded():
                    self._apply_state()
            else:
                self.health.probe_failed()

    async def _renew_pool(self) -> None:
        """Close the idle pooled connections: after an outage they may be dead.

        Connections still in use belong to abandoned calls, which redis-py disconnects
        itself when they fail or are cancelled.
        """
        try:
            await self._client.connection_pool.disconnect(inuse_connections=False)
        except (RedisError, OSError) as error:
            _log.debug("closing stale redis connections: %s", type(error).__name__)
