"""Prometheus exposition (`GET /metrics`) through prometheus-client.

Every metric lives in this exporter's own `CollectorRegistry` (no module-level
metrics: two apps in one process do not collide). Nothing here runs per request:
`sync(stats)` copies what `RequestStats` counted since the last sync into the
prometheus-client metrics, once per sampling period and before each scrape; gauges
are set once per sampling period. Histogram bucket bounds are edges of the stats'
log-spaced sketch (1.03 ms, 2.6 ms, ..., 60.3 s; rounded to 3 digits), so the copied
counts are exact up to that rounding.

Several uvicorn workers: each worker is its own process with its own counters, and a
scrape reaches one of them. With `PROMETHEUS_MULTIPROC_DIR` set (`promptrelay serve
--workers N` sets it to a temporary directory it owns), prometheus-client keeps every
value in a memory-mapped file per process, and `/metrics` sums them over all workers.
Per-process gauges (RSS, CPU, loop lag, fds) keep a `pid` label in that mode.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any, Literal

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

from promptrelay.telemetry.histogram import LatencyHistogram, bucket_index, upper_edge
from promptrelay.telemetry.stats import RequestStats
from promptrelay.telemetry.system import SystemSample

__all__ = ["CONTENT_TYPE_LATEST", "PrometheusExporter"]

_NICE = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
# (sketch bucket index, bound): the sketch bucket holding each nice value, and its edge
_EDGES = tuple((bucket_index(v), upper_edge(bucket_index(v))) for v in _NICE)
# shown with 3 significant digits: 1.03 ms, 2.6 ms, ... (the sketch's edges, rounded)
_LATENCY_BUCKETS = tuple(float(f"{bound:.3g}") for _, bound in _EDGES)


class PrometheusExporter:
    """`sync(stats)` + `sampled(...)` + `render()` for the scrape."""

    def __init__(self, multiproc_dir: str | None = None) -> None:
        self.multiproc_dir = multiproc_dir
        r = self.registry = CollectorRegistry(auto_describe=False)
        self._synced: dict[Any, Any] = {}  # what was copied last time, per metric child
        self._gc_seen = (0, 0.0)
        self._request_metrics(r)
        self._cache_metrics(r)
        self._upstream_metrics(r)
        self._state_metrics(r)
        self._system_metrics(r)

    def _request_metrics(self, r: CollectorRegistry) -> None:
        self.requests = Counter(
            "promptrelay_requests",
            "Requests on the proxy routes by route, status and cache result",
            ["route", "status", "cache"],
            registry=r,
        )
        self.duration = Histogram(
            "promptrelay_request_duration_seconds",
            "Whole request time, by route",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.added = Histogram(
            "promptrelay_request_added_seconds",
            "promptrelay's own time before the first byte (time to first byte minus upstream)",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.request_bytes = Counter(
            "promptrelay_request_body_bytes", "Request body bytes received", registry=r
        )
        self.response_bytes = Counter(
            "promptrelay_response_body_bytes", "Response body bytes sent", registry=r
        )
        self.in_flight = self._gauge("promptrelay_requests_in_flight", "Requests being served")
        self.in_flight_bytes = self._gauge(
            "promptrelay_requests_in_flight_bytes", "Request body bytes held by requests in flight"
        )

    def _cache_metrics(self, r: CollectorRegistry) -> None:
        self.lookups = Counter(
            "promptrelay_cache_lookups", "Cache lookups by result", ["result"], registry=r
        )
        self.saved_seconds = Counter(
            "promptrelay_cache_saved_upstream_seconds",
            "Upstream time the stored answers originally took",
            registry=r,
        )
        self.saved_tokens = Counter(
            "promptrelay_cache_saved_tokens", "Tokens the cache hits did not spend", registry=r
        )
        self.coalesced = Counter(
            "promptrelay_coalesced_requests", "Requests that joined an identical one", registry=r
        )
        self.cache_bytes = self._gauge("promptrelay_cache_memory_bytes", "Memory tier bytes")
        self.cache_entries = self._gauge("promptrelay_cache_memory_entries", "Memory tier entries")

    def _upstream_metrics(self, r: CollectorRegistry) -> None:
        self.upstream_duration = Histogram(
            "promptrelay_upstream_duration_seconds",
            "Upstream calls (retries included) until the answer or the stream's headers",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.upstream_calls = Counter(
            "promptrelay_upstream_requests",
            "Upstream calls by final status (failed: no answer)",
            ["status"],
            registry=r,
        )
        self.retries = Counter("promptrelay_upstream_retries", "Retried attempts", registry=r)
        self.pool_in_use = self._gauge(
            "promptrelay_upstream_pool_connections_in_use", "Upstream connections in use"
        )
        self.pool_waiting = self._gauge(
            "promptrelay_upstream_pool_waiting", "Requests waiting for an upstream connection"
        )

    def _state_metrics(self, r: CollectorRegistry) -> None:
        """Breaker, Redis, micro-batching."""
        self.breaker_moves = Counter(
            "promptrelay_breaker_transitions",
            "Circuit breaker transitions by new state",
            ["state"],
            registry=r,
        )
        self.breaker_open = self._gauge(
            "promptrelay_breaker_open", "1 while the upstream circuit breaker is open", "livemax"
        )
        self.redis_up = self._gauge(
            "promptrelay_redis_up", "1 when Redis is up, 0 when down or disabled", "livemin"
        )
        self.batches = Counter("promptrelay_batches", "Micro-batches flushed", registry=r)
        self.batched = Counter(
            "promptrelay_batched_requests", "Requests sent in micro-batches", registry=r
        )

    def _system_metrics(self, r: CollectorRegistry) -> None:
        self.rss = self._gauge("promptrelay_process_resident_memory_bytes", "RSS", "liveall")
        self.memory_limit = self._gauge(
            "promptrelay_memory_limit_bytes", "Memory limit the guard measures against", "livemax"
        )
        self.cpu = self._gauge(
            "promptrelay_process_cpu_usage_ratio", "CPU use as a fraction of one core", "liveall"
        )
        self.loop_lag = self._gauge(
            "promptrelay_event_loop_lag_seconds", "Worst event-loop lag in the period", "liveall"
        )
        self.fds = self._gauge("promptrelay_process_open_fds", "Open file descriptors", "liveall")
        self.heap_blocks = self._gauge(
            "promptrelay_python_heap_blocks", "Allocated Python memory blocks", "liveall"
        )
        self.gc_collections = Counter(
            "promptrelay_gc_collections", "Garbage collections", registry=r
        )
        self.gc_pause = Counter(
            "promptrelay_gc_pause_seconds", "Time stopped by the garbage collector", registry=r
        )
        self.guard_actions = Counter(
            "promptrelay_memory_guard_actions", "Memory guard actions", ["action"], registry=r
        )
        self.alert_notices = Counter(
            "promptrelay_alert_notices",
            "Alert notices by rule and kind (firing, escalated, resolved)",
            ["alert", "kind"],
            registry=r,
        )
        self._governor_metrics(r)
        self._gc_seen = (0, 0.0)

    def _governor_metrics(self, r: CollectorRegistry) -> None:
        self.governor_queued = self._gauge(
            "promptrelay_governor_queued", "Requests waiting for the upstream's rate limit"
        )
        self.governor_remaining = Gauge(
            "promptrelay_governor_remaining",
            "What the governor believes is left in each upstream bucket, by key hash",
            ["key", "dimension"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self.governor_waited = Counter(
            "promptrelay_governor_waited_requests",
            "Requests that waited for a refill instead of meeting a 429 (429s avoided)",
            registry=r,
        )
        self.governor_wait_seconds = Counter(
            "promptrelay_governor_wait_seconds", "Time requests waited in the governor", registry=r
        )
        self.governor_refused = Counter(
            "promptrelay_governor_refused_requests",
            "Requests answered 429 by the governor (lane full or wait too long)",
            registry=r,
        )
        self.governor_upstream_429 = Counter(
            "promptrelay_governor_upstream_429",
            "429s the upstream answered although the governor paced",
            registry=r,
        )

    def _gauge(
        self,
        name: str,
        documentation: str,
        mode: Literal["livesum", "liveall", "livemax", "livemin"] = "livesum",
    ) -> Gauge:
        return Gauge(name, documentation, registry=self.registry, multiprocess_mode=mode)

    # -- from the stats ---------------------------------------------------------------

    def sync(self, stats: RequestStats) -> None:
        """Copy what the stats counted since the last sync (counters only grow)."""
        stats.drain()
        for (route, status, cache), count in stats.request_counts().items():
            self._count(self.requests.labels(route, str(status), cache or "none"), count)
        for route, histogram in stats.by_route().items():
            self._histogram(self.duration.labels(route), histogram)
        self._histogram(self.added, stats.added)
        self._histogram(self.upstream_duration, stats.upstream)
        self._count(self.request_bytes, stats.request_bytes)
        self._count(self.response_bytes, stats.response_bytes)
        self._count(self.lookups.labels("hit"), stats.hits)
        self._count(self.lookups.labels("miss"), stats.misses)
        self._count(self.saved_seconds, stats.saved_seconds)
        self._count(self.saved_tokens, stats.saved_tokens)
        self._count(self.coalesced, stats.coalesced)
        for outcome, count in list(stats.upstream_counts.items()):
            self._count(self.upstream_calls.labels(outcome), count)
        self._count(self.retries, stats.retries)
        for state, count in list(stats.breaker_counts.items()):
            self._count(self.breaker_moves.labels(state), count)
        self._count(self.batches, stats.batches)
        self._count(self.batched, stats.batched_items)
        for action, count in list(stats.guard_actions.items()):
            self._count(self.guard_actions.labels(action), count)

    def _count(self, counter: Any, total: float) -> None:
        delta = total - self._synced.get(counter, 0)
        if delta > 0:
            counter.inc(delta)
            self._synced[counter] = total

    def _histogram(self, child: Any, histogram: LatencyHistogram) -> None:
        """Add the sketch's new counts to a prometheus-client histogram child.

        prometheus-client has no public "observe many"; its children keep one value
        per bucket (`_buckets`, not cumulative) and `_sum`, stable since its first
        releases, and in multiprocess mode those values are the shared files.
        """
        counts = histogram.counts
        per_bucket, previous = [], -1
        for index, _ in _EDGES:
            per_bucket.append(sum(counts[previous + 1 : index + 1]))
            previous = index
        per_bucket.append(sum(counts[previous + 1 :]))
        last_buckets, last_total = self._synced.get(child, ([0] * len(per_bucket), 0.0))
        for value, (now, before) in zip(
            child._buckets, zip(per_bucket, last_buckets, strict=True), strict=True
        ):
            if now > before:
                value.inc(now - before)
        if histogram.total > last_total:
            child._sum.inc(histogram.total - last_total)
        self._synced[child] = (per_bucket, histogram.total)

    # -- per period ------------------------------------------------------------------

    def sampled(self, system: SystemSample, gauges: dict[str, float]) -> None:
        """Set the gauges from one sampling period."""
        self.rss.set(system.rss_bytes)
        self.memory_limit.set(system.memory_limit_bytes)
        self.cpu.set(system.cpu_percent / 100)
        self.loop_lag.set(system.loop_lag_ms / 1000)
        self.fds.set(system.open_fds)
        self.heap_blocks.set(system.heap_blocks)
        collections, pause = self._gc_seen
        self.gc_collections.inc(max(0, system.gc_collections - collections))
        self.gc_pause.inc(max(0.0, system.gc_pause_seconds - pause))
        self._gc_seen = (system.gc_collections, system.gc_pause_seconds)
        self.in_flight.set(gauges.get("in_flight", 0))
        self.in_flight_bytes.set(gauges.get("in_flight_bytes", 0))
        self.cache_bytes.set(gauges.get("cache_bytes", 0))
        self.cache_entries.set(gauges.get("cache_entries", 0))
        self.pool_in_use.set(gauges.get("pool_in_use", 0))
        self.pool_waiting.set(gauges.get("pool_waiting", 0))
        self.breaker_open.set(gauges.get("breaker_open", 0))
        self.redis_up.set(gauges.get("redis_up", 0))

    def alerted(self, alert: str, kind: str) -> None:
        self.alert_notices.labels(alert, kind).inc()

    def governed(self, snapshot: dict[str, Any]) -> None:
        """Copy the governor's snapshot (resilience/governor.py) into its metrics."""
        self.governor_queued.set(snapshot.get("queued", 0))
        self._count(self.governor_waited, snapshot.get("queued_total", 0))
        self._count(self.governor_wait_seconds, snapshot.get("waited_seconds", 0.0))
        self._count(self.governor_refused, snapshot.get("rejected", 0))
        self._count(self.governor_upstream_429, snapshot.get("upstream_429", 0))
        for key, view in snapshot.get("keys", {}).items():
            for dimension, bucket in view.get("buckets", {}).items():
                self.governor_remaining.labels(key, dimension).set(bucket["remaining"])

    # -- scrape ----------------------------------------------------------------------

    async def render(self, stats: RequestStats | None = None) -> bytes:
        """The scrape's text. With several workers it reads every worker's metric files,
        which is file I/O that grows with the workers: done in a thread, off the loop."""
        if stats is not None:
            self.sync(stats)
        if self.multiproc_dir is None:
            return generate_latest(self.registry)
        return await asyncio.to_thread(self._render_workers, self.multiproc_dir)

    @staticmethod
    def _render_workers(path: str) -> bytes:
        registry = CollectorRegistry()
        # prometheus-client's multiprocess module has no annotations
        multiprocess.MultiProcessCollector(registry, path=path)  # type: ignore[no-untyped-call]
        return generate_latest(registry)

    def close(self) -> None:
        if self.multiproc_dir is not None:
            multiprocess.mark_process_dead(os.getpid(), self.multiproc_dir)  # type: ignore[no-untyped-call]
