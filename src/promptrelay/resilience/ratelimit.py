"""What the governor knows about one upstream key, and its decisions: pure, clock injected.

Rules
-----

    learn      every answer's `anthropic-ratelimit-{requests,input-tokens,output-tokens}-
               {limit,remaining,reset}` headers set that bucket's limit; its level becomes
               min(our level, remaining) (the upstream's word lowers ours at once, ours
               stays lower while our own reservations are still in flight), or remaining
               itself once nothing of ours is in flight. Shared between processes (the
               headers already divided by their number), only ever min(): another
               process's requests in flight are not in `remaining` yet, and a share
               raised to remaining / N would count them twice.
    rate       a lower bound of the refill rate: (limit - remaining - 1) / (reset - now +
               round trip), since remaining is rounded down and the header was written
               at most one round trip before we read it. A small deficit gives a loose
               bound, so it only raises the rate known for the same limit; a large one
               (or a new limit) replaces it. Until a first bound, limit / 60 (Anthropic's
               limits are per minute), and that guess never refuses anyone in advance.
    before     until the first rate-limit headers of a key, at most `initial_concurrency`
               requests are in flight; afterwards only the buckets (and AIMD) bound it.
    reserve    a request takes 1 request, its estimated input tokens and its max_tokens
               from the buckets the key has; it goes when every one of them holds enough,
               else it waits for the refill (`wait` says how long).
    429        a 429 that comes anyway pauses the whole key until its retry-after.
    roomy      while every bucket of a key is at least half full (and no cap, no pause),
               the shell may skip reading the headers of up to ROOMY_SKIPS answers in a
               row (`settle`): far from a limit nothing is decided by them, and that keeps
               the governor's cost per request small. Any error status is always read.
    529        overloaded: the concurrency cap halves (multiplicative decrease); every
               successful answer raises it by 1/cap (additive increase, about +1 per
               round trip) until it no longer binds.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import NamedTuple

__all__ = ["DIMENSIONS", "Cost", "KeyState", "Observed", "parse_limits"]

DIMENSIONS = ("requests", "input-tokens", "output-tokens")
_RATE_MARGIN = 0.95  # refill assumed a little slower than measured: rounding of the reset
_CLEAR_DEFICIT = 0.1  # of the limit: a deficit this large measures the rate well
_UNBOUNDED_CAP = 256.0  # an AIMD cap that grew past this no longer binds
_DEFAULT_PAUSE = 1.0  # a 429 without retry-after pauses the key this long


ROOMY_SKIPS = 7
_INDEX = {name: i for i, name in enumerate(DIMENSIONS)}
# Exact (lower-case) header name -> (dimension, part): one dict lookup per header.
_HEADERS = {
    f"anthropic-ratelimit-{dimension}-{part}".encode(): (dimension, part)
    for dimension in (*DIMENSIONS, "tokens")
    for part in ("limit", "remaining", "reset")
}


class Cost(NamedTuple):
    """What one request takes, in the order of DIMENSIONS."""

    requests: float = 1.0
    input_tokens: float = 0.0
    output_tokens: float = 0.0

    def of(self, dimension: str) -> float:
        return self[_INDEX[dimension]]

    def plus(self, other: Cost) -> Cost:
        return Cost(
            self.requests + other.requests,
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
        )


@dataclass(frozen=True, slots=True)
class Observed:
    """One answer: its status, its retry-after, and (limit, remaining, seconds to full)
    per dimension whose headers it carried."""

    status: int
    limits: Mapping[str, tuple[float, float, float | None]]
    retry_after: float | None = None
    round_trip: float = 0.0  # seconds since the request was let go
    shared: bool = False  # limits are this process's share of what several use


@dataclass(slots=True)
class Bucket:
    limit: float
    level: float
    at: float
    rate: float
    measured: bool = False  # rate from the headers; else the limit / 60 guess
    index: int = 0  # of its dimension in DIMENSIONS (and in a Cost)

    def refill(self, now: float) -> float:
        if now > self.at:
            self.level = min(self.limit, self.level + (now - self.at) * self.rate)
            self.at = now
        return self.level


@dataclass(slots=True)
class KeyState:
    initial_concurrency: int
    buckets: dict[str, Bucket] = field(default_factory=dict)
    outstanding: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    in_flight: int = 0
    learned: bool = False
    cap: float | None = None  # AIMD concurrency cap after a 529; None: not bounded
    paused_until: float = 0.0
    roomy: bool = False  # see "roomy" above; set by observe

    def concurrency_limit(self) -> float | None:
        if not self.learned:
            return float(self.initial_concurrency)
        return self.cap

    def predict(self, cost: Cost, now: float) -> float | None:
        """`wait`, but None unless every bucket that binds has a measured rate: only a
        prediction from measured rates may refuse a request in advance."""
        wait = self.wait(cost, now)
        if not wait:
            return wait
        for name, bucket in self.buckets.items():
            if not bucket.measured and bucket.refill(now) < cost.of(name):
                return None
        return wait

    def wait(self, cost: Cost, now: float) -> float | None:
        """Seconds until `cost` fits (0: now); None: blocked until an answer comes back
        (the concurrency limit is reached, or it can never fit while others are out)."""
        if now < self.paused_until:
            return self.paused_until - now
        limit = self.concurrency_limit()
        if limit is not None and self.in_flight >= limit:
            return None
        longest = 0.0
        for bucket in self.buckets.values():
            need = cost[bucket.index]
            level = bucket.refill(now)
            if level >= need:
                continue
            if need > bucket.limit:  # can never fit: send it once the bucket is full
                need = bucket.limit
                if level >= need:
                    continue
            if bucket.rate <= 0:
                return None
            longest = max(longest, (need - level) / bucket.rate)
        return longest

    def take(self, cost: Cost, now: float) -> None:
        self.in_flight += 1
        for bucket in self.buckets.values():
            bucket.refill(now)
            bucket.level -= cost[bucket.index]
        out = self.outstanding
        out[0] += cost[0]
        out[1] += cost[1]
        out[2] += cost[2]

    def observe(self, cost: Cost, answer: Observed, now: float) -> None:
        """An answer to a request that `take` let go (headers arrived, or it failed)."""
        self.in_flight = max(0, self.in_flight - 1)
        out = self.outstanding
        out[0] = max(0.0, out[0] - cost[0])
        out[1] = max(0.0, out[1] - cost[1])
        out[2] = max(0.0, out[2] - cost[2])
        for name, (limit, remaining, full_in) in answer.limits.items():
            rate = _rate(limit, remaining, full_in, answer.round_trip)
            self._learn(name, limit, remaining, rate, now, answer.shared)
        if answer.limits:
            self.learned = True
        self.roomy = (
            self.learned
            and self.cap is None
            and all(b.level >= 0.5 * b.limit for b in self.buckets.values())
        )
        if answer.status == 429:
            pause = answer.retry_after if answer.retry_after is not None else _DEFAULT_PAUSE
            self.paused_until = max(self.paused_until, now + pause)
        elif answer.status == 529:
            current = self.cap if self.cap is not None else float(self.in_flight + 1)
            self.cap = max(1.0, current / 2)
        elif answer.status < 400 and self.cap is not None:
            self.cap += 1.0 / self.cap
            if self.cap > _UNBOUNDED_CAP:
                self.cap = None

    def settle(self, cost: Cost) -> None:
        """A successful answer whose headers were not read (roomy): only the accounting."""
        self.in_flight = max(0, self.in_flight - 1)
        out = self.outstanding
        out[0] = max(0.0, out[0] - cost[0])
        out[1] = max(0.0, out[1] - cost[1])
        out[2] = max(0.0, out[2] - cost[2])

    def _learn(
        self,
        name: str,
        limit: float,
        remaining: float,
        rate: tuple[float, bool] | None,
        now: float,
        shared: bool,
    ) -> None:
        bucket = self.buckets.get(name)
        if bucket is None:
            others = self.outstanding[_INDEX[name]]
            level = remaining - others
            bucket = Bucket(limit, level, now, limit / 60, index=_INDEX[name])
            self.buckets[name] = bucket
        bucket.refill(now)
        if limit != bucket.limit:
            bucket.rate, bucket.measured = limit / 60, False
        if rate is not None:
            value, clear = rate
            if clear or not bucket.measured or value > bucket.rate:
                bucket.rate, bucket.measured = value, True
        bucket.limit = limit
        mine = self.outstanding[_INDEX[name]]
        resync = mine <= 0 and not shared
        bucket.level = remaining if resync else min(bucket.level, remaining)

    def snapshot(self, now: float) -> dict[str, object]:
        buckets = {
            name: {
                "limit": bucket.limit,
                "remaining": round(bucket.refill(now), 1),
                "per_second": round(bucket.rate, 3),
            }
            for name, bucket in self.buckets.items()
        }
        return {
            "learned": self.learned,
            "in_flight": self.in_flight,
            "concurrency_limit": self.concurrency_limit(),
            "paused_for_s": round(max(0.0, self.paused_until - now), 3),
            "buckets": buckets,
        }


def _rate(
    limit: float, remaining: float, full_in: float | None, round_trip: float
) -> tuple[float, bool] | None:
    """(a lower bound of the refill rate, whether the deficit was large enough to trust it
    over an earlier bound), or None when these headers say nothing about it."""
    deficit = limit - remaining - 1.0
    if full_in is None or deficit < 1.0:
        return None
    span = max(full_in, 0.0) + max(round_trip, 0.0) + 0.001
    return _RATE_MARGIN * deficit / span, deficit >= _CLEAR_DEFICIT * limit


def parse_limits(
    headers: Iterable[tuple[bytes, bytes]], wall_now: float
) -> dict[str, tuple[float, float, float | None]]:
    """(limit, remaining, seconds until full) per dimension from Anthropic's headers."""
    found: dict[str, dict[str, bytes]] = {}
    for name, value in headers:
        spec = _HEADERS.get(name)
        if spec is None:
            if name[:1] not in (b"A", b"a") or (spec := _HEADERS.get(name.lower())) is None:
                continue
        parts = found.get(spec[0])
        if parts is None:
            parts = found[spec[0]] = {}
        parts[spec[1]] = value
    if not found:
        return {}
    limits: dict[str, tuple[float, float, float | None]] = {}
    for dimension in DIMENSIONS:
        parts = found.get(dimension)
        if not parts or "limit" not in parts or "remaining" not in parts:
            continue
        try:
            limit, remaining = float(parts["limit"]), float(parts["remaining"])
        except ValueError:
            continue
        if not (math.isfinite(limit) and math.isfinite(remaining)) or limit <= 0:
            continue
        full_in = _seconds_until(parts.get("reset"), wall_now)
        limits[dimension] = (limit, max(0.0, remaining), full_in)
    return limits


def _seconds_until(reset: bytes | None, wall_now: float) -> float | None:
    if not reset:
        return None
    try:
        moment = datetime.fromisoformat(reset.decode("latin-1").replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        return None
    return moment.timestamp() - wall_now
