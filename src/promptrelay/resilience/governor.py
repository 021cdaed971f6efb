"""The governor: every upstream Messages attempt asks it first, so requests wait for the
upstream's buckets to refill instead of being sent into a 429.

    acquire(key, cost, priority)  ->  Permit     (at once, or after waiting in the lane)
        raises RateLimited at once when the lane is full or the wait would pass max_wait
    release(permit, status, headers)             the answer's headers teach the key state

One lane per upstream key (named by a hash of the key, never the key). A lane is a
priority queue: interactive requests (/v1 faces, /api/generate) ahead of batch items,
first come first served within each; only its head is considered, so nobody overtakes.
The decisions are `KeyState`'s (ratelimit.py); this module only waits: a timer for a
refill, or the next release when the concurrency limit binds.

Several processes on one Redis each take 1/N of every bucket the headers announce, N
being the processes alive (peers.py); without Redis, N = 1.
"""

from __future__ import annotations

import asyncio
import hashlib
import heapq
import itertools
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from promptrelay.errors import RateLimited
from promptrelay.resilience.peers import Peers, SoloPeers
from promptrelay.resilience.ratelimit import (
    ROOMY_SKIPS,
    Cost,
    KeyState,
    Observed,
    parse_limits,
)
from promptrelay.resilience.retry import parse_retry_after

__all__ = ["BATCH", "INTERACTIVE", "Governor", "Permit", "key_id"]

INTERACTIVE, BATCH = 0, 1


def key_id(upstream_key: str) -> str:
    """How a key is named in the governor's state, metrics and Redis: never the key."""
    return hashlib.sha256(upstream_key.encode()).hexdigest()[:16]


@dataclass(slots=True)
class Permit:
    """One attempt let go; `release` it exactly once with its answer's status."""

    governor: Governor
    lane: _Lane
    cost: Cost
    taken_at: float
    done: bool = False

    def release(self, status: int, headers: Iterable[tuple[bytes, bytes]] = ()) -> None:
        self.governor.release(self, status, headers)


@dataclass(order=True, slots=True)
class _Waiter:
    priority: int
    seq: int
    cost: Cost = field(compare=False)
    future: asyncio.Future[None] = field(compare=False)


@dataclass(slots=True)
class _Lane:
    name: str
    state: KeyState
    queue: list[_Waiter] = field(default_factory=list)
    timer: asyncio.TimerHandle | None = None
    skipped: int = 0  # answers in a row whose headers were not read (KeyState.roomy)


@dataclass(slots=True)
class GovernorStats:
    queued_total: int = 0  # waited for a refill, a pause or a free slot: 429s avoided
    waited_seconds: float = 0.0
    rejected: int = 0  # answered 429 by us at once (lane full, or too long a wait)
    upstream_429: int = 0  # came anyway
    upstream_529: int = 0


class Governor:
    def __init__(
        self,
        *,
        initial_concurrency: int = 4,
        max_queue: int = 1000,
        max_wait: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        peers: Peers | None = None,
    ) -> None:
        self._peers: Peers = peers if peers is not None else SoloPeers()
        self._initial = initial_concurrency
        self._max_queue = max_queue
        self._max_wait = max_wait
        self._clock = clock
        self._wall = wall
        self._lanes: dict[str, _Lane] = {}
        self._seq = itertools.count()
        self.stats = GovernorStats()

    async def start(self) -> None:
        await self._peers.start()

    async def close(self) -> None:
        await self._peers.close()

    def _lane(self, upstream_key: str) -> _Lane:
        lane = self._lanes.get(upstream_key)
        if lane is None:
            state = KeyState(initial_concurrency=self._initial)
            lane = self._lanes[upstream_key] = _Lane(key_id(upstream_key), state)
        return lane

    def try_acquire(self, upstream_key: str, cost: Cost) -> Permit | None:
        """The permit at once, when nobody waits and the cost fits; else None (then
        `acquire`). Synchronous: the common case costs no coroutine."""
        lane = self._lane(upstream_key)
        now = self._clock()
        if not lane.queue and lane.state.wait(cost, now) == 0:
            lane.state.take(cost, now)
            return Permit(self, lane, cost, now)
        return None

    async def acquire(self, upstream_key: str, cost: Cost, priority: int = INTERACTIVE) -> Permit:
        lane = self._lane(upstream_key)
        now = self._clock()
        if not lane.queue and lane.state.wait(cost, now) == 0:
            lane.state.take(cost, now)
            return Permit(self, lane, cost, now)
        self._admit_to_queue(lane, cost, priority, now)
        waiter = _Waiter(
            priority, next(self._seq), cost, asyncio.get_running_loop().create_future()
        )
        heapq.heappush(lane.queue, waiter)
        self.stats.queued_total += 1
        self._pump(lane)
        try:
            await asyncio.wait_for(asyncio.shield(waiter.future), self._max_wait)
        except TimeoutError:
            self._leave(lane, waiter)
            self.stats.rejected += 1
            raise RateLimited(_WAITED, retry_after=self._max_wait) from None
        except BaseException:
            self._leave(lane, waiter)
            raise
        finally:
            self.stats.waited_seconds += self._clock() - now
        return Permit(self, lane, cost, self._clock())

    def _admit_to_queue(self, lane: _Lane, cost: Cost, priority: int, now: float) -> None:
        """Refuse at once what would only time out: a full lane, or a wait past max_wait."""
        if len(lane.queue) >= self._max_queue:
            self.stats.rejected += 1
            raise RateLimited(_FULL, retry_after=self._max_wait)
        ahead = cost
        for waiter in lane.queue:
            if waiter.priority <= priority:
                ahead = ahead.plus(waiter.cost)
        predicted = lane.state.predict(ahead, now)
        if predicted is not None and predicted > self._max_wait:
            self.stats.rejected += 1
            raise RateLimited(_TOO_LONG.format(predicted), retry_after=predicted)

    def _leave(self, lane: _Lane, waiter: _Waiter) -> None:
        if waiter.future.done() and not waiter.future.cancelled():
            # Admitted just as it gave up: the permit it took goes back unused.
            lane.state.observe(waiter.cost, Observed(0, {}), self._clock())
        elif waiter in lane.queue:
            lane.queue.remove(waiter)
            heapq.heapify(lane.queue)
        waiter.future.cancel()
        self._pump(lane)

    def _pump(self, lane: _Lane) -> None:
        """Let go every head of the lane that fits now; arm a timer for the next refill."""
        if lane.timer is not None:
            lane.timer.cancel()
            lane.timer = None
        while lane.queue:
            head = lane.queue[0]
            if head.future.done():
                heapq.heappop(lane.queue)
                continue
            now = self._clock()
            wait = lane.state.wait(head.cost, now)
            if wait is None:
                return  # the next release pumps again
            if wait > 0:
                lane.timer = asyncio.get_running_loop().call_later(wait, self._pump, lane)
                return
            heapq.heappop(lane.queue)
            lane.state.take(head.cost, now)
            head.future.set_result(None)

    def release(
        self, permit: Permit, status: int, headers: Iterable[tuple[bytes, bytes]] = ()
    ) -> None:
        """The attempt's answer arrived (status 0: it failed without one)."""
        if permit.done:
            return
        permit.done = True
        lane = permit.lane
        if status < 400 and lane.state.roomy and lane.skipped < ROOMY_SKIPS and status:
            lane.skipped += 1
            lane.state.settle(permit.cost)
            if lane.queue:
                self._pump(lane)
            return
        lane.skipped = 0
        retry_after = None
        if status == 429:
            headers = list(headers)
            self.stats.upstream_429 += 1
            retry_after = parse_retry_after(
                {k.decode("latin-1"): v.decode("latin-1") for k, v in headers}
            )
        elif status == 529:
            self.stats.upstream_529 += 1
        limits = parse_limits(headers, self._wall()) if status else {}
        share = self._peers.count()
        if share > 1 and limits:
            limits = {
                name: (limit / share, remaining / share, full_in)
                for name, (limit, remaining, full_in) in limits.items()
            }
        now = self._clock()
        answer = Observed(status, limits, retry_after, now - permit.taken_at, share > 1)
        permit.lane.state.observe(permit.cost, answer, now)
        if permit.lane.queue:
            self._pump(permit.lane)

    def snapshot(self) -> dict[str, object]:
        now = self._clock()
        keys = {}
        for lane in self._lanes.values():
            view = lane.state.snapshot(now)
            view["queued"] = len(lane.queue)
            keys[lane.name] = view
        stats = self.stats
        return {
            "keys": keys,
            "processes_sharing": self._peers.count(),
            "queued": sum(len(lane.queue) for lane in self._lanes.values()),
            "queued_total": stats.queued_total,
            "waited_seconds": round(stats.waited_seconds, 3),
            "rejected": stats.rejected,
            "upstream_429": stats.upstream_429,
            "upstream_529": stats.upstream_529,
        }


_WAITED = "rate limit: the upstream's limit did not refill within GOVERNOR_MAX_WAIT"
_FULL = "rate limit: too many requests are already waiting for the upstream's limit"
_TOO_LONG = "rate limit: the upstream's limit refills in about {:.0f} s, past GOVERNOR_MAX_WAIT"
