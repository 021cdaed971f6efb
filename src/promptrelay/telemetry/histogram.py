"""Bounded-memory latency percentiles and sliding-window counters.

`LatencyHistogram` keeps counts in fixed log-spaced buckets (each 5% wider than the one
before, 10 µs to ~2 h: 420 integers), so recording is O(1) and a percentile is within
~5% of the true value whatever the traffic. `WindowedHistogram` keeps a ring of such
slots and drops the oldest as time passes: "the last minute" without remembering
individual requests.

    h = LatencyHistogram()
    h.record(0.012)
    h.quantile(0.99)  # seconds
"""

from __future__ import annotations

import math
import time
from bisect import bisect_left, bisect_right
from collections.abc import Callable

__all__ = ["LatencyHistogram", "WindowedHistogram", "bucket_index", "upper_edge"]

_MIN = 1e-5  # seconds; everything faster lands in bucket 0
_GROWTH = 1.05
_BUCKETS = 420  # _MIN * 1.05**419 ~ 7,600 s
_EDGES = [_MIN * _GROWTH**index for index in range(_BUCKETS)]


def bucket_index(seconds: float) -> int:
    """The bucket `seconds` falls in: values in (upper_edge(i - 1), upper_edge(i)].

    A binary search over the precomputed edges: a third cheaper than a logarithm, and
    exact at the edges. It runs for every request, twice.
    """
    index = bisect_left(_EDGES, seconds)
    return index if index < _BUCKETS else _BUCKETS - 1


def upper_edge(index: int) -> float:
    return _EDGES[index] if 0 <= index < _BUCKETS else _MIN * _GROWTH**index


class LatencyHistogram:
    __slots__ = ("count", "counts", "max", "total")

    def __init__(self) -> None:
        self.counts = [0] * _BUCKETS
        self.count = 0
        self.total = 0.0
        self.max = 0.0

    def record(self, seconds: float) -> None:
        self.counts[bucket_index(seconds)] += 1
        self.count += 1
        self.total += seconds
        if seconds > self.max:
            self.max = seconds

    def record_at(self, index: int, seconds: float) -> None:
        """record() with the bucket already known (one search for several histograms)."""
        self.counts[index] += 1
        self.count += 1
        self.total += seconds
        if seconds > self.max:
            self.max = seconds

    def record_many(self, values: list[float]) -> None:
        """record() each value, values below 0 as 0; sorts `values` in place.

        Sorted, the values of one bucket sit together: one binary search finds the
        bucket of the first, another where the bucket ends, so the work is per bucket
        touched rather than per value, and the loops over values (sort, sum) run in C.
        """
        if not values:
            return
        values.sort()
        below = bisect_left(values, 0.0)
        if below:
            values[:below] = [0.0] * below
        counts, start, end = self.counts, 0, len(values)
        while start < end:
            index = bisect_left(_EDGES, values[start])
            if index >= _BUCKETS:
                counts[-1] += end - start
                break
            stop = bisect_right(values, _EDGES[index], start)
            counts[index] += stop - start
            start = stop
        self.count += end
        self.total += sum(values)
        if values[-1] > self.max:
            self.max = values[-1]

    def clear(self) -> None:
        self.counts = [0] * _BUCKETS
        self.count = 0
        self.total = 0.0
        self.max = 0.0

    def add(self, other: LatencyHistogram) -> None:
        for index, value in enumerate(other.counts):
            if value:
                self.counts[index] += value
        self.count += other.count
        self.total += other.total
        self.max = max(self.max, other.max)

    def quantile(self, q: float) -> float:
        """The q-quantile in seconds (upper edge of its bucket, capped at the max seen)."""
        if self.count == 0:
            return 0.0
        rank = max(1, math.ceil(q * self.count))
        seen = 0
        for index, value in enumerate(self.counts):
            seen += value
            if seen >= rank:
                return min(upper_edge(index), self.max)
        return self.max

    def summary(self) -> dict[str, float | int]:
        """Count and percentiles in milliseconds, for JSON."""
        return {
            "count": self.count,
            "mean_ms": round(self.total / self.count * 1000, 3) if self.count else 0.0,
            "p50_ms": round(self.quantile(0.50) * 1000, 3),
            "p95_ms": round(self.quantile(0.95) * 1000, 3),
            "p99_ms": round(self.quantile(0.99) * 1000, 3),
            "max_ms": round(self.max * 1000, 3),
        }


class _Ring:
    """Slot bookkeeping shared by the windowed structures: which slot is current."""

    def __init__(self, window: float, slots: int, clock: Callable[[], float]) -> None:
        if window <= 0 or slots <= 0:
            raise ValueError("window and slots must be positive")
        self.width = window / slots
        self.slots = slots
        self.clock = clock
        self.epoch = math.floor(clock() / self.width)  # index of the current slot's start

    def advance(self, now: float) -> list[int]:
        """Slots to clear because time moved on (at most all of them)."""
        epoch = math.floor(now / self.width)
        if epoch <= self.epoch:
            return []
        stale = min(epoch - self.epoch, self.slots)
        self.epoch = epoch
        return [(epoch - k) % self.slots for k in range(stale)]


class WindowedHistogram:
    """A LatencyHistogram of the last `window` seconds."""

    def __init__(
        self, window: float, slots: int = 6, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._ring = _Ring(window, slots, clock)
        self._slots = [LatencyHistogram() for _ in range(slots)]

    def record_at(self, now: float, index: int, seconds: float) -> None:
        ring = self._ring
        if now >= (ring.epoch + 1) * ring.width:
            for slot in ring.advance(now):
                self._slots[slot].clear()
        self._slots[ring.epoch % ring.slots].record_at(index, seconds)

    def record(self, now: float, seconds: float) -> None:
        self.record_at(now, bucket_index(seconds), seconds)

    def merged(self, now: float | None = None) -> LatencyHistogram:
        ring = self._ring
        for index in ring.advance(ring.clock() if now is None else now):
            self._slots[index].clear()
        merged = LatencyHistogram()
        for slot in self._slots:
            if slot.count:
                merged.add(slot)
        return merged
