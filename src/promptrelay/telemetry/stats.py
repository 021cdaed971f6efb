"""Request, cache, upstream, breaker, batching and memory-guard statistics from events.

`RequestStats` is the one per-event listener. An event costs a few integer updates,
two logarithms and no allocation beyond the first request with a new (route, status,
cache) combination; percentiles, rates, dollars and the Prometheus metrics
(`PrometheusExporter.sync`) are worked out from these counts when someone asks.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any

from promptrelay.core.events import (
    BatchFlushed,
    BreakerMoved,
    CacheLookup,
    Coalesced,
    Event,
    MemoryGuardActed,
    RedisMoved,
    RequestFinished,
    Retried,
    UpstreamFinished,
)
from promptrelay.telemetry.histogram import (
    LatencyHistogram,
    WindowCounter,
    WindowedHistogram,
    bucket_index,
)
from promptrelay.telemetry.prices import PriceFn, chain_prices

__all__ = ["RequestStats"]

_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")


def _status_class(status: int) -> str:
    return _CLASSES[status // 100 - 1] if 100 <= status < 600 else "other"


class RequestStats:
    """Listener: subscribe it to the EventBus, read `snapshot()`.

    `error_window` is the sliding window of the error rate (and of the "recent"
    latencies the alert rules read); a request is an error when its status is >= 500.
    """

    def __init__(
        self,
        *,
        error_window: float = 60.0,
        price: PriceFn | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock = clock
        self._price = chain_prices(price)
        self.error_window = error_window
        self.started = clock()
        self.latency = LatencyHistogram()
        self.by_route: dict[str, LatencyHistogram] = {}
        self.by_cache: dict[str, LatencyHistogram] = {}
        self.request_counts: dict[tuple[str, int, str], int] = {}  # (route, status, cache)
        self.requests = 0
        self.errors = 0
        self.request_bytes = 0
        self.response_bytes = 0
        self.throughput = WindowCounter(300.0, 30, clock)
        self.recent_requests = WindowCounter(error_window, 6, clock)
        self.recent_errors = WindowCounter(error_window, 6, clock)
        self.recent_added = WindowedHistogram(error_window, 6, clock)
        self.recent_stream_ttfb = WindowedHistogram(error_window, 6, clock)
        self.added = LatencyHistogram()
        # cache
        self.hits = 0
        self.misses = 0
        self.saved_seconds = 0.0
        self.saved_tokens = 0
        self.saved_dollars = 0.0
        self.unpriced_hits = 0
        self.coalesced = 0
        # upstream
        self.upstream = LatencyHistogram()
        self.upstream_counts: dict[str, int] = {}  # by status, "failed": no answer
        self.upstream_attempts = 0
        self.retries = 0
        # breaker, redis, batching, memory guard
        self.breaker_moves: deque[tuple[float, str, str, str]] = deque(maxlen=50)
        self.breaker_counts: dict[str, int] = {}  # transitions by new state
        self.redis_moves = 0
        self.redis_state = ""
        self.batches = 0
        self.batched_items = 0
        self.batch_wait = LatencyHistogram()
        self.guard_actions: dict[str, int] = {}
        self.guard_freed_bytes = 0
        self.guard_collect_seconds = 0.0

    def __call__(self, event: Event) -> None:
        if type(event) is RequestFinished:
            self._request(event)
        elif type(event) is CacheLookup:
            self._lookup(event)
        elif type(event) is UpstreamFinished:
            self.upstream.record(event.seconds)
            name = str(event.status) if event.status is not None else "failed"
            self.upstream_counts[name] = self.upstream_counts.get(name, 0) + 1
            self.upstream_attempts += event.attempts
        elif type(event) is Retried:
            self.retries += 1
        elif type(event) is Coalesced:
            self.coalesced += 1
        elif type(event) is BreakerMoved:
            self.breaker_moves.append((self._clock(), event.old, event.new, event.reason))
            self.breaker_counts[event.new] = self.breaker_counts.get(event.new, 0) + 1
        elif type(event) is RedisMoved:
            self.redis_moves += 1
            self.redis_state = event.state
        elif type(event) is BatchFlushed:
            self.batches += 1
            self.batched_items += event.size
            self.batch_wait.record(event.waited_ms / 1000)
        elif type(event) is MemoryGuardActed:
            self._guard(event)

    def _request(self, event: RequestFinished) -> None:
        now = self._clock()
        seconds = event.seconds
        index = bucket_index(seconds)
        self.requests += 1
        self.latency.record_at(index, seconds)
        route = self.by_route.get(event.route)
        if route is None:
            route = self.by_route[event.route] = LatencyHistogram()
        route.record_at(index, seconds)
        if event.cache:
            by_cache = self.by_cache.get(event.cache)
            if by_cache is None:
                by_cache = self.by_cache[event.cache] = LatencyHistogram()
            by_cache.record_at(index, seconds)
        key = (event.route, event.status, event.cache)
        self.request_counts[key] = self.request_counts.get(key, 0) + 1
        self.request_bytes += event.request_bytes
        self.response_bytes += event.response_bytes
        self.throughput.add(now)
        self.recent_requests.add(now)
        if event.status >= 500:
            self.errors += 1
            self.recent_errors.add(now)
        added = event.ttfb - event.upstream_seconds
        if added < 0.0:
            added = 0.0
        index = bucket_index(added)
        self.added.record_at(index, added)
        self.recent_added.record_at(now, index, added)
        if event.stream:
            self.recent_stream_ttfb.record(now, event.ttfb)

    def _lookup(self, event: CacheLookup) -> None:
        if not event.hit:
            self.misses += 1
            return
        self.hits += 1
        self.saved_seconds += event.saved_ms / 1000
        self.saved_tokens += event.saved_tokens
        price = self._price(event.model) if event.model else None
        if price is None or not (event.saved_input_tokens or event.saved_output_tokens):
            self.unpriced_hits += 1
            return
        self.saved_dollars += (
            event.saved_input_tokens * price[0] + event.saved_output_tokens * price[1]
        ) / 1e6

    def _guard(self, event: MemoryGuardActed) -> None:
        self.guard_actions[event.action] = self.guard_actions.get(event.action, 0) + 1
        self.guard_freed_bytes += event.freed_bytes
        self.guard_collect_seconds += event.seconds

    # -- reading ---------------------------------------------------------------------

    def error_rate(self) -> tuple[float, int, int]:
        """(rate, requests, errors) over the sliding error window."""
        now = self._clock()
        requests = self.recent_requests.total(now)
        errors = self.recent_errors.total(now)
        return (errors / requests if requests else 0.0), requests, errors

    def breaker_opens(self, within: float) -> int:
        """How often the breaker opened in the last `within` seconds (flapping)."""
        since = self._clock() - within
        return sum(1 for at, _, new, _ in self.breaker_moves if new == "open" and at >= since)

    def statuses(self) -> dict[str, int]:
        """Requests by status class; 499 (the client left) on its own."""
        found: dict[str, int] = {}
        for (_, status, _), count in self.request_counts.items():
            name = _status_class(status) if status != 499 else "client_gone"
            found[name] = found.get(name, 0) + count
        return found

    def snapshot(self) -> dict[str, Any]:
        now = self._clock()
        rate, recent, recent_errors = self.error_rate()
        lookups = self.hits + self.misses
        return {
            "total": self.requests,
            "errors": self.errors,
            "statuses": self.statuses(),
            "throughput": {
                "last_1m_per_s": round(self.throughput.total(now, last=60.0) / 60.0, 3),
                "last_5m_per_s": round(self.throughput.total(now) / 300.0, 3),
            },
            "error_rate": {
                "window_s": self.error_window,
                "requests": recent,
                "errors": recent_errors,
                "rate": round(rate, 4),
            },
            "latency": self.latency.summary(),
            "by_route": {name: h.summary() for name, h in sorted(self.by_route.items())},
            "by_cache": {name: h.summary() for name, h in sorted(self.by_cache.items())},
            "added_latency": self.added.summary(),
            "recent_added_latency": self.recent_added.merged(now).summary(),
            "recent_stream_ttfb": self.recent_stream_ttfb.merged(now).summary(),
            "bytes": {"request": self.request_bytes, "response": self.response_bytes},
            "cache": {
                "hits": self.hits,
                "misses": self.misses,
                "hit_ratio": round(self.hits / lookups, 4) if lookups else 0.0,
                "coalesced": self.coalesced,
                "saved": {
                    "upstream_seconds": round(self.saved_seconds, 3),
                    "tokens": self.saved_tokens,
                    "dollars": round(self.saved_dollars, 6),
                    "unpriced_hits": self.unpriced_hits,
                },
            },
            "upstream": {
                "latency": self.upstream.summary(),
                "statuses": dict(self.upstream_counts),
                "attempts": self.upstream_attempts,
                "retries": self.retries,
            },
        }
