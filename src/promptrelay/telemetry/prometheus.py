"""Prometheus exposition (`GET /metrics`) through prometheus-client.

Every metric lives in this exporter's own `CollectorRegistry` (no module-level
metrics: two apps in one process do not collide). Counters and histograms follow the
events; gauges are set once per sampling period.

Several uvicorn workers: each worker is its own process with its own counters, and a
scrape reaches one of them. With `PROMETHEUS_MULTIPROC_DIR` set (`promptrelay serve
--workers N` sets it to a temporary directory it owns), prometheus-client keeps every
value in a memory-mapped file per process, and `/metrics` sums them over all workers.
Per-process gauges (RSS, CPU, loop lag, fds) keep a `pid` label in that mode.
"""

from __future__ import annotations

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
from promptrelay.telemetry.system import SystemSample

__all__ = ["CONTENT_TYPE_LATEST", "PrometheusExporter"]

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class PrometheusExporter:
    """Event listener + gauge setter + `render()` for the scrape."""

    def __init__(self, multiproc_dir: str | None = None) -> None:
        self.multiproc_dir = multiproc_dir
        r = self.registry = CollectorRegistry(auto_describe=False)
        self._request_children: dict[tuple[str, int, str], Any] = {}
        self._route_children: dict[str, Any] = {}
        # requests
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
        # cache
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
        # upstream
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
        # breaker, redis, batching
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
        # system
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
        self._gc_seen = (0, 0.0)

    def _gauge(
        self,
        name: str,
        documentation: str,
        mode: Literal["livesum", "liveall", "livemax", "livemin"] = "livesum",
    ) -> Gauge:
        return Gauge(name, documentation, registry=self.registry, multiprocess_mode=mode)

    # -- events ----------------------------------------------------------------------

    def __call__(self, event: Event) -> None:
        if type(event) is RequestFinished:
            self._request(event)
        elif type(event) is CacheLookup:
            self.lookups.labels("hit" if event.hit else "miss").inc()
            if event.hit:
                self.saved_seconds.inc(event.saved_ms / 1000)
                self.saved_tokens.inc(event.saved_tokens)
        elif type(event) is UpstreamFinished:
            self.upstream_duration.observe(event.seconds)
            status = str(event.status) if event.status is not None else "failed"
            self.upstream_calls.labels(status).inc()
        elif type(event) is Retried:
            self.retries.inc()
        elif type(event) is Coalesced:
            self.coalesced.inc()
        elif type(event) is BreakerMoved:
            self.breaker_moves.labels(event.new).inc()
            self.breaker_open.set(1 if event.new == "open" else 0)
        elif type(event) is RedisMoved:
            self.redis_up.set(1 if event.state == "up" else 0)
        elif type(event) is BatchFlushed:
            self.batches.inc()
            self.batched.inc(event.size)
        elif type(event) is MemoryGuardActed:
            self.guard_actions.labels(event.action).inc()

    def _request(self, event: RequestFinished) -> None:
        key = (event.route, event.status, event.cache)
        child = self._request_children.get(key)
        if child is None:
            child = self.requests.labels(event.route, str(event.status), event.cache or "none")
            self._request_children[key] = child
        child.inc()
        route = self._route_children.get(event.route)
        if route is None:
            route = self._route_children[event.route] = self.duration.labels(event.route)
        route.observe(event.seconds)
        self.added.observe(max(0.0, event.ttfb - event.upstream_seconds))
        if event.request_bytes:
            self.request_bytes.inc(event.request_bytes)
        if event.response_bytes:
            self.response_bytes.inc(event.response_bytes)

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

    # -- scrape ----------------------------------------------------------------------

    def render(self) -> bytes:
        if self.multiproc_dir is None:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        # prometheus-client's multiprocess module has no annotations
        multiprocess.MultiProcessCollector(registry, path=self.multiproc_dir)  # type: ignore[no-untyped-call]
        return generate_latest(registry)

    def close(self) -> None:
        if self.multiproc_dir is not None:
            multiprocess.mark_process_dead(os.getpid(), self.multiproc_dir)  # type: ignore[no-untyped-call]
